import re
import sys
import unicodedata

import pytest

from deployments.errors import InvalidInput
from serve_app.questions import IGNORABLE, INVISIBLE, check_questions
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


@pytest.mark.parametrize(
    "question",
    # Default-ignorable code points that are neither control nor format characters: each was answered with matches.
    ["\u3164" * 3, "\uffa0\u115f\u1160", "\u034f\u17b4\u17b5", "\ufe0f" * 3, "\U000e0100 \u180b", "\u3164\u200b "],
)
def test_a_question_of_default_ignorable_characters_is_empty(question):
    with pytest.raises(InvalidInput, match="must not be empty"):
        check_questions([question], Limits(), "question")


def test_the_other_ignorable_characters_are_no_letters_of_any_script():
    # What IGNORABLE adds: fillers (Lo, named FILLER), marks (Mn) and unassigned code points (Cn), never Cc or Cf
    # (INVISIBLE has those) nor a letter that words are made of.
    listed = [code for code in range(sys.maxunicode + 1) if re.fullmatch(f"[{IGNORABLE}]", chr(code))]
    categories = {unicodedata.category(chr(code)) for code in listed}
    assert categories <= {"Lo", "Mn", "Cn"}, categories
    letters = [hex(code) for code in listed if unicodedata.category(chr(code)) == "Lo"]
    assert all("FILLER" in unicodedata.name(chr(int(code, 16))) for code in letters), letters
    assert len(listed) == 4_036  # with the 138 format characters among them, the property's 4,174


@pytest.mark.parametrize("question", ["\udfff", "how \ud800 loop", "a\udc00"])
def test_a_lone_surrogate_anywhere_is_refused(question):
    with pytest.raises(InvalidInput, match="lone surrogate") as raised:
        check_questions(["fine", question], Limits())
    assert raised.value.field == "questions.1"


@pytest.mark.parametrize(
    "question",
    ["how do I loop", "\u200bx", "\u05e9\u05dc\u05d5\u05dd", "\U0001f44d", "=>", "\u2764\ufe0f", "\u1100\u1161"],
)
def test_questions_with_something_to_match_pass(question):
    check_questions([question], Limits())
