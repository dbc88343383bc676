"""Question text cleaning, following the reference architecture's rules.

Stack Overflow stores questions as ``title. <html body>``. Code blocks are dropped (they are noise for
matching intent), link text is kept unless it is itself a URL, remaining tags are stripped, bare URLs are
dropped and everything is lower-cased.
"""

import html
import re

_CODE_BLOCK = re.compile(r"<pre\b[^>]*>\s*<code\b[^>]*>.*?</code>\s*</pre>", re.IGNORECASE | re.DOTALL)
_LINK = re.compile(r"<a\b[^>]*>(.*?)</a>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_URL = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def _link_text(match: re.Match[str]) -> str:
    text = match.group(1)
    return "" if _URL.fullmatch(text.strip()) else f" {text} "


def clean_text(raw: str) -> str:
    """Return the reference-style cleaned, lower-cased text of one question."""
    text = _CODE_BLOCK.sub(" ", raw)
    text = _LINK.sub(_link_text, text)
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    text = _URL.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip().lower()


def title_of(raw: str) -> str:
    """The question's title: the reference stores ``title. body`` in one field."""
    title, separator, _ = raw.partition(". <")
    return html.unescape(title if separator else raw)
