import re
import sys
import unicodedata

import pytest

from deployments.errors import InvalidInput
from serve_app.questions import INVISIBLE, check_questions
from serve_app.settings import Limits


def test_the_invisible_characters_are_unicodes_control_and_format_characters():
    listed = re.compile(f"[{INVISIBLE}]")
    wrong = [
        hex(code)
        for code in range(sys.maxunicode + 1)
        if code < 0xD800 or code > 0xDFFF  # surrogates are refused on their own
        if (unicodedata.category(chr(code)) in ("Cc", "Cf")) != bool(listed.fullmatch(chr(code)))
    ]
    assert not wrong, f"unicodedata {unicodedata.unidata_version} differs at {wrong[:10]}"


@pytest.mark.parametrize(
    "question", ["", "   ", "\u200b\u200b", "\x00", "\ufeff\u202e\t", "\U000e0041\U000e0001", "\u2028\u3000"]
)
def test_a_question_of_nothing_visible_is_empty(question):
    with pytest.raises(InvalidInput, match="must not be empty") as raised:
        check_questions([question], Limits(), "question")
    assert raised.value.field == "question"


@pytest.mark.parametrize("question", ["\udfff", "how \ud800 loop", "a\udc00"])
def test_a_lone_surrogate_anywhere_is_refused(question):
    with pytest.raises(InvalidInput, match="lone surrogate") as raised:
        check_questions(["fine", question], Limits())
    assert raised.value.field == "questions.1"


@pytest.mark.parametrize("question", ["how do I loop", "\u200bx", "\u05e9\u05dc\u05d5\u05dd", "\U0001f44d", "=>"])
def test_questions_with_something_to_match_pass(question):
    check_questions([question], Limits())
