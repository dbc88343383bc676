"""The checks every FAQ question passes before it is grouped and scored: present, within the limits, Unicode text.

Regular expressions, so each check is linear in the question and runs in C: a request may carry 64 questions of
10,000 characters, and the ingress checks them on its event loop.
"""

import re

from serve_app.errors import invalid
from serve_app.settings import Limits

# Unicode's control (Cc) and format (Cf) characters: zero-width spaces and joiners, direction marks, byte-order
# marks, tag characters... (unicodedata 14.0, Python 3.11; tests/unit/test_questions.py derives the same list).
INVISIBLE = (
    r"\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    r"\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3"
    r"\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
# Unicode's other Default_Ignorable_Code_Points (DerivedCoreProperties.txt, the same in Unicode 14 to 16): drawn as
# nothing, though neither control nor format characters: Hangul fillers, variation selectors, the combining
# grapheme joiner, Khmer's inherent vowels, and the code points reserved for more of them.
IGNORABLE = (
    r"\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u2065\u3164\ufe00-\ufe0f\uffa0\ufff0-\ufff8"
    r"\U000e0000\U000e0002-\U000e001f\U000e0080-\U000e0fff"
)
# A question of nothing but whitespace and invisible characters has nothing to match.
BLANK = re.compile(rf"[\s{INVISIBLE}{IGNORABLE}]*")
# A lone surrogate is not Unicode text (JSON can carry "\udfff"): encoding it to UTF-8 fails, in the dense model's
# tokenizer (its whole grouped call failed) and in data collection, so it is refused before anything uses it.
SURROGATE = re.compile(r"[\ud800-\udfff]")


def check_questions(questions: list[str], limits: Limits, single_field: str | None = None) -> None:
    """422 naming the offending field: ``single_field`` when the request sent one question under that name,
    else ``questions.N``."""
    if not questions:
        raise invalid("questions", "must contain at least one question")
    if len(questions) > limits.max_questions:
        raise invalid("questions", f"at most {limits.max_questions} questions per request, got {len(questions)}")
    for index, question in enumerate(questions):
        field = single_field or f"questions.{index}"
        if len(question) > limits.max_question_chars:
            raise invalid(field, f"longer than the limit of {limits.max_question_chars} characters")
        if BLANK.fullmatch(question):
            raise invalid(field, "must not be empty (nor only whitespace, control or invisible formatting characters)")
        if SURROGATE.search(question):
            raise invalid(field, "is not Unicode text: it holds a lone surrogate (an escape from \\ud800 to \\udfff)")
