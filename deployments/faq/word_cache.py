"""A least-recently-used cache of each word's character n-gram counts, bounded in bytes, not only in entries.

An entry's size depends on its word: a 10,000-character "word" (one question may be a single one) has thousands
of n-grams in the vocabulary, so a cache bounded by its number of entries alone is not bounded in memory: 100,000
such entries would be gigabytes. Words longer than ``max_word_chars`` are computed and not kept (ordinary words
are far shorter and are what a cache helps with), and the entries kept are evicted, oldest use first, past
``max_bytes``; each entry is charged its word, its arrays and a fixed overhead for the Python objects around
them (tests/unit/test_features.py measures that the charge is not below what the entries really take).
"""

import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

Counts = tuple[np.ndarray, np.ndarray]  # (columns, counts) of the terms found in the vocabulary
# Two ndarray headers, the tuple holding them, the OrderedDict's slot and link, and the size kept beside them.
ENTRY_OVERHEAD_BYTES = 2 * 112 + 56 + 48 + 104 + 72


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    currsize: int  # entries
    nbytes: int  # what the entries are charged
    max_bytes: int


def entry_bytes(word: str, counts: Counts) -> int:
    return sys.getsizeof(word) + sum(array.nbytes for array in counts) + ENTRY_OVERHEAD_BYTES


class WordCache:
    """``compute(word)``, remembered for words of at most ``max_word_chars``, within ``max_bytes`` in all."""

    def __init__(self, compute: Callable[[str], Counts], max_bytes: int, max_word_chars: int) -> None:
        self._compute = compute
        self.max_bytes = max_bytes
        self.max_word_chars = max_word_chars
        self._entries: OrderedDict[str, tuple[Counts, int]] = OrderedDict()
        self._bytes = self._hits = self._misses = 0

    def __call__(self, word: str) -> Counts:
        entry = self._entries.get(word)
        if entry is not None:
            self._hits += 1
            self._entries.move_to_end(word)
            return entry[0]
        self._misses += 1
        counts = self._compute(word)
        if len(word) <= self.max_word_chars:
            size = entry_bytes(word, counts)
            self._entries[word] = (counts, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted
        return counts

    def cache_info(self) -> CacheInfo:
        return CacheInfo(self._hits, self._misses, len(self._entries), self._bytes, self.max_bytes)

    def cache_clear(self) -> None:
        self._entries.clear()
        self._bytes = self._hits = self._misses = 0
