"""Stage 1, text: a raw question (Stack Overflow's ``title. <html body>``, or typed text) in, its cleaned,
lower-cased text out (and, for the stems view, its words cut to stems), following the reference
architecture's rules.

Stack Overflow stores questions as ``title. <html body>``. Code blocks are dropped (the reference found them
noise for matching intent), link text is kept unless it is itself a URL, remaining tags are stripped, bare URLs
are dropped and everything is lower-cased. The FAQ model keeps the code blocks' text instead (its
``keep_code_blocks`` setting): users paste the same API names and operators into their questions, and on the
Stack Overflow data that matched better (benchmarks/results/faq_quality.md).

Every step is linear in the text's length, whatever the text: questions come from anyone. The reference's
regular expressions for code blocks, links and comments (``<pre><code>(.*?)</code></pre>``, ``<a>(.*?)</a>``,
``<!--.*?-->``) rescan the rest of the text from every opening tag that is never closed: time quadratic in the
text (10,000 characters of ``<a>`` or ``<!--``: 0.15 s, 25x what 2,000 took). Here the openings are found by
small fixed patterns and each one's end is looked up among the closings, found once per text; the result is the
same text as the reference's expressions (tests/unit/test_text_linear.py compares them).
"""

import html
import re
from bisect import bisect_left
from collections.abc import Callable

_PRE_OPEN = re.compile(r"<pre\b", re.IGNORECASE)  # <pre\b[^>]*>
_CODE_OPEN = re.compile(r"\s*+<code\b", re.IGNORECASE)  # ... \s*<code\b[^>]*>, right after the pre tag
_CODE_CLOSE = re.compile(r"</code>\s*+</pre>", re.IGNORECASE)
_LINK_OPEN = re.compile(r"<a\b", re.IGNORECASE)  # <a\b[^>]*>
_LINK_CLOSE = re.compile(r"</a>", re.IGNORECASE)
# A tag starts with a letter (or "/" and one): "a <= b" or "x < y && y > z" in a typed question is not markup.
# It ends at the first "<" or ">": each attempt reads only up to the next "<", so all of them read the text once.
_TAG = re.compile(r"</?[A-Za-z][^<>]*+>")
_COMMENT_OPEN, _COMMENT_CLOSE = "<!--", "-->"
_URL = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
# html.unescape's character references. Its own replacement turns the digits of a numeric one into an int,
# which takes quadratic time in their number and raises past 4,300 digits (Python's int limit): here digits
# beyond what any code point needs are read as what they are, a number over 0x10FFFF.
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")
_MAX_DIGITS = {10: 7, 16: 6}  # 0x10FFFF has 7 decimal and 6 hexadecimal digits
_NOT_A_CODE_POINT = "\ufffd"  # html.unescape's answer for a number over 0x10FFFF


def _starts(substring: str, text: str) -> list[int]:
    """Where ``substring`` occurs in ``text``, in order (those used here cannot overlap themselves)."""
    found, position = [], text.find(substring)
    while position != -1:
        found.append(position)
        position = text.find(substring, position + len(substring))
    return found


def _first_at_or_after(positions: list[int], position: int) -> int | None:
    index = bisect_left(positions, position)
    return positions[index] if index < len(positions) else None


def _replace_elements(
    text: str, opening: re.Pattern[str], closing: re.Pattern[str], replace: Callable[[str], str], inner_tag: bool
) -> str:
    """``re.sub`` of ``<x\\b[^>]*>(.*?)CLOSING`` (case-insensitive, dot-all) with ``replace(group 1)``, in linear time.

    ``inner_tag``: the element is ``<pre\\b[^>]*>\\s*<code\\b[^>]*>`` rather than one tag.
    """
    openings = [(match.start(), match.end()) for match in opening.finditer(text)]
    if not openings:
        return text
    tag_ends = _starts(">", text)
    closings = [(match.start(), match.end()) for match in closing.finditer(text)]
    closing_starts = [start for start, _ in closings]
    pieces, done = [], 0
    for start, name_end in openings:
        if start < done:  # inside the element just replaced
            continue
        tag_end = _first_at_or_after(tag_ends, name_end)
        if tag_end is not None and inner_tag:
            inner = _CODE_OPEN.match(text, tag_end + 1)
            tag_end = _first_at_or_after(tag_ends, inner.end()) if inner else None
        if tag_end is None:
            continue
        index = bisect_left(closing_starts, tag_end + 1)
        if index == len(closings):
            continue
        content_end, end = closings[index]
        pieces += [text[done:start], replace(text[tag_end + 1 : content_end])]
        done = end
    return "".join([*pieces, text[done:]]) if pieces else text


def _strip_tags(text: str) -> str:
    """``re.sub(r"</?[A-Za-z][^<>]*>|<!--.*?-->", " ", text, flags=re.DOTALL)``, in linear time."""
    comment_ends = _starts(_COMMENT_CLOSE, text)
    pieces, done, position = [], 0, 0
    while (start := text.find("<", position)) != -1:
        position = start + 1
        tag = _TAG.match(text, start)
        if tag:
            end = tag.end()
        elif text.startswith(_COMMENT_OPEN, start):
            close = _first_at_or_after(comment_ends, start + len(_COMMENT_OPEN))
            if close is None:
                continue
            end = close + len(_COMMENT_CLOSE)
        else:
            continue
        pieces += [text[done:start], " "]
        done = position = end
    return "".join([*pieces, text[done:]]) if pieces else text


def _replace_charref(match: re.Match[str]) -> str:
    reference = match.group(1)
    if reference[0] == "#":
        base = 16 if reference[1] in "xX" else 10
        digits = reference[2 if base == 16 else 1 :].rstrip(";").lstrip("0") or "0"
        if len(digits) > _MAX_DIGITS[base]:
            return _NOT_A_CODE_POINT
        reference = ("#x" if base == 16 else "#") + digits
    return html.unescape("&" + reference)


def unescape(text: str) -> str:
    """``html.unescape``, in linear time whatever the text."""
    return _CHARREF.sub(_replace_charref, text) if "&" in text else text


def _code_text(keep: bool) -> Callable[[str], str]:
    return (lambda content: f" {content} ") if keep else (lambda _: " ")


def _link_text(text: str) -> str:
    return "" if _URL.fullmatch(text.strip()) else f" {text} "


def clean_text(raw: str, keep_code_blocks: bool = False) -> str:
    """Return the reference-style cleaned, lower-cased text of one question (with its code blocks' text if asked)."""
    text = raw
    if "<" in raw or "&" in raw:  # markup to strip; a typed question rarely has any, and these passes cost
        text = _replace_elements(text, _PRE_OPEN, _CODE_CLOSE, _code_text(keep_code_blocks), inner_tag=True)
        text = _replace_elements(text, _LINK_OPEN, _LINK_CLOSE, _link_text, inner_tag=False)
        text = _strip_tags(text)
        text = unescape(text)
    text = _URL.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip().lower()


def title_of(raw: str) -> str:
    """The question's title: the reference stores ``title. body`` in one field."""
    title, separator, _ = raw.partition(". <")
    return unescape(title if separator else raw)


def stem_words(text: str, length: int) -> str:
    """Each word cut to its first ``length`` characters: a crude stemmer that needs no word list
    ("iterating", "iteration", "iterate" -> "iter"); punctuation and symbols are dropped."""
    return " ".join(word[:length] for word in _WORD.findall(text))
