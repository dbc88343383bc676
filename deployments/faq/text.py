"""Question text cleaning, following the reference architecture's rules.

Stack Overflow stores questions as ``title. <html body>``. Code blocks are dropped (the reference found them
noise for matching intent), link text is kept unless it is itself a URL, remaining tags are stripped, bare URLs
are dropped and everything is lower-cased. The FAQ model keeps the code blocks' text instead (its
``keep_code_blocks`` setting): users paste the same API names and operators into their questions, and on the
Stack Overflow data that matched better (benchmarks/results/faq_quality.md).
"""

import html
import re

_CODE_BLOCK = re.compile(r"<pre\b[^>]*>\s*<code\b[^>]*>(.*?)</code>\s*</pre>", re.IGNORECASE | re.DOTALL)
_LINK = re.compile(r"<a\b[^>]*>(.*?)</a>", re.IGNORECASE | re.DOTALL)
# A tag starts with a letter (or "/" and one): "a <= b" or "x < y && y > z" in a typed question is not markup.
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<!--.*?-->", re.DOTALL)
_URL = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def _link_text(match: re.Match[str]) -> str:
    text = match.group(1)
    return "" if _URL.fullmatch(text.strip()) else f" {text} "


def clean_text(raw: str, keep_code_blocks: bool = False) -> str:
    """Return the reference-style cleaned, lower-cased text of one question (with its code blocks' text if asked)."""
    text = raw
    if "<" in raw or "&" in raw:  # markup to strip; a typed question rarely has any, and these passes cost
        text = _CODE_BLOCK.sub(r" \1 " if keep_code_blocks else " ", text)
        text = _LINK.sub(_link_text, text)
        text = _TAG.sub(" ", text)
        text = html.unescape(text)
    text = _URL.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip().lower()


def title_of(raw: str) -> str:
    """The question's title: the reference stores ``title. body`` in one field."""
    title, separator, _ = raw.partition(". <")
    return html.unescape(title if separator else raw)


def stem_words(text: str, length: int) -> str:
    """Each word cut to its first ``length`` characters: a crude stemmer that needs no word list
    ("iterating", "iteration", "iterate" -> "iter"); punctuation and symbols are dropped."""
    return " ".join(word[:length] for word in _WORD.findall(text))
