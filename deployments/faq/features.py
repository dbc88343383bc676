"""Stage 2, features: cleaned texts in, their TF-IDF rows out (CSR arrays; one reading of the texts each,
text_views.py): word and character TF-IDF, each L2-normalised, side by side, L2-normalised again.

Fitting uses scikit-learn's vectorizers. Transforming one question with them costs ~4 ms, nearly all of it
input validation, so ``transform`` applies the same fitted analyzers, vocabularies and idf weights directly
(tests check it equals scikit-learn's output). Character n-grams (``char_wb``) never cross a word boundary,
so a question's character counts are the sum of its words' counts: those are computed once per distinct
word and kept in a cache bounded in bytes (word_cache.py), since questions reuse a small vocabulary. A
question costs well under a millisecond with its words cached and tens of microseconds more per new word, so a
model fills the cache with its training words when it loads (``warm``): a replica's first questions then cost
what later ones do.
"""

import sys
from collections import Counter
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from deployments.faq.scoring_loops import tfidf_row
from deployments.faq.word_cache import Counts, WordCache

# What differs from TfidfVectorizer's defaults in ``fit``: all a saved model needs to rebuild its vectorizers.
VECTORIZER_SETTINGS = ("analyzer", "ngram_range", "max_df", "sublinear_tf", "token_pattern")
# scikit-learn's word pattern (two or more word characters), plus runs of two or more symbols: programming
# questions are often about an operator ("=>", "||", "===", "??") that the plain pattern throws away. Sentence
# punctuation after an operator is not part of it ("is it ===?" -> "==="), unless the run is all punctuation
# ("...").
# Written so that no match attempt backtracks: the first form of it, r"...|[^\w\s]{2,}?(?=[.,;:!?]*(?:\s|$))|...",
# tried every length of a run of symbols and read the rest of the run for each, so 10,000 dots before a letter
# took a second. Here the operator is read once, up to the last symbol that is not sentence punctuation
# (at least two symbols), then the sentence punctuation after it once. Same tokens (tests/unit/test_text_linear.py).
WORDS_AND_OPERATORS = (
    r"(?u)\b\w\w+\b"
    r"|[.,;:!?]{2,}+(?=\s|$)"
    r"|(?>[^\w\s]{2}(?:[^\w\s]*[^\w\s.,;:!?])?)(?=[.,;:!?]*+(?:\s|$))"
    r"|[^\w\s]{2,}+"
)
# Token patterns earlier models were saved with, and the equivalent one they are read with (same tokens).
EQUIVALENT_TOKEN_PATTERNS = {
    r"(?u)\b\w\w+\b|[.,;:!?]{2,}(?=\s|$)|[^\w\s]{2,}?(?=[.,;:!?]*(?:\s|$))|[^\w\s]{2,}": WORDS_AND_OPERATORS,
}
# Each view's cache of words' character n-gram counts: an ordinary word's entry is ~1 KB, so this holds ~30,000
# of them, more than the training words a model starts with (text_views.KNOWN_WORDS_KEPT); longer words are
# recomputed each time (a 64-character word: ~100 microseconds).
WORD_CACHE_BYTES = 32 * 1024 * 1024
MAX_CACHED_WORD_CHARS = 64
# Distinct words of a question whose character n-grams count, per view; later ones count as words of an unknown
# script (only their padding's n-grams). A word new to the cache costs ~10 us, so 10,000 characters of distinct
# never-seen 2-4 letter words (~2,500 of them) cost 34-41 ms against 4-8 ms for prose of the same length, and 64
# such questions 1.9-2.3 s (benchmarks/results/worst_inputs_questions.md). Real questions come nowhere near it: the
# Stack Overflow originals and duplicates have 35 distinct words at the median, 147 at most. By position in the
# text, not by what the cache holds, so a question's features never depend on what was asked before it. Questions
# only (View.zscores): the FAQ's own documents are read whole when a model is trained, however long.
MAX_DISTINCT_WORDS_PER_QUESTION = 512
# scipy keeps a CSR matrix's indices as int32 when they fit and converts anything else on construction, which
# costs more than building one question's row: columns are int32 from the start (vocabularies stay far below 2**31).
COLUMN_DTYPE = np.int32


class Rows(NamedTuple):
    """Texts' features as the three arrays of a CSR matrix."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray


def tokens(text: str) -> list[str]:
    """The whitespace-separated, lower-cased words ``char_wb`` works within."""
    return text.lower().split()


def char_wb_ngrams(text: str, min_n: int, max_n: int) -> list[str]:
    """scikit-learn's ``char_wb`` n-grams of a lower-cased text, the same list in the same order: each word padded
    with a space on each side, its n-grams of every length, a word shorter than n once whole.

    Written out because a word new to the cache pays for it: through the vectorizer's analyzer (decoding and
    preprocessing checks around the same loop) a never-seen word cost ~16 us of which this leaves ~4, and a
    question of 5,000 one-character words is 5,000 new words (tests/unit/test_features.py compares the two)."""
    grams: list[str] = []
    for word in text.split():
        padded = f" {word} "
        length = len(padded)
        for n in range(min_n, max_n + 1):
            if length <= n:
                grams.append(padded)
                break
            grams.extend([padded[start : start + n] for start in range(length - n + 1)])
    return grams


def _in_vocabulary(terms: list[str], vocabulary: dict[str, int]) -> Counts:
    counts: dict[int, int] = {}
    for term in terms:
        if (column := vocabulary.get(term)) is not None:
            counts[column] = counts.get(column, 0) + 1
    return (
        np.fromiter(counts.keys(), dtype=COLUMN_DTYPE, count=len(counts)),
        np.fromiter(counts.values(), dtype=np.float64, count=len(counts)),
    )


class TextFeatures:
    def __init__(self, word: TfidfVectorizer, char: TfidfVectorizer) -> None:
        if char.analyzer != "char_wb" or not char.lowercase or char.preprocessor is not None:
            raise ValueError("the character vectorizer must be a lower-casing char_wb TfidfVectorizer")
        self.word = word
        self.char = char
        self._word_analyzer = word.build_analyzer()
        min_n, max_n = char.ngram_range
        # Per instance, so the cache goes with the model that filled it. A token is lower-cased again, exactly as
        # the vectorizer's analyzer would.
        self._word_char_counts = WordCache(
            lambda token: _in_vocabulary(char_wb_ngrams(token.lower(), min_n, max_n), char.vocabulary_),
            WORD_CACHE_BYTES,
            MAX_CACHED_WORD_CHARS,
        )
        # A word none of whose characters occurs in any character n-gram of the vocabulary (a script the FAQ never
        # uses) has no n-gram in it but the padding's: its counts are known without computing or caching it, so a
        # question of 5,000 such words neither costs 5,000 computations nor evicts the cache's real words.
        self._known_chars = frozenset(letter for gram in char.vocabulary_ for letter in gram)
        padding_unigrams = [" ", " "] if min_n == 1 else []  # char_wb's 1-grams of " word " include its two spaces
        self._unknown_word_counts = _in_vocabulary(padding_unigrams, char.vocabulary_)
        self.char_offset = len(word.vocabulary_)
        self.n_features = self.char_offset + len(char.vocabulary_)

    @classmethod
    def fit(
        cls,
        texts: list[str],
        word_max_df: float,
        char_ngrams: tuple[int, int],
        char_max_df: float,
        token_pattern: str = WORDS_AND_OPERATORS,
        max_df_floor: int = 1,
    ) -> "TextFeatures":
        """``*_max_df``: the largest share of the texts a term may appear in, but never fewer texts than
        ``max_df_floor`` (in a small FAQ a share would drop the terms one question's phrasings all share)."""
        word_max, char_max = (max(int(share * len(texts)), max_df_floor) for share in (word_max_df, char_max_df))
        word = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), max_df=word_max, token_pattern=token_pattern)
        char = TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=char_ngrams, max_df=char_max)
        word.fit(texts)
        char.fit(texts)
        return cls(word, char)

    def to_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The fitted vectorizers as arrays (idf weights) and JSON fields (settings and vocabularies)."""
        arrays, fields = {}, {}
        for name, vectorizer in (("word", self.word), ("char", self.char)):
            settings = {key: vectorizer.get_params()[key] for key in VECTORIZER_SETTINGS}
            vocabulary = {term: int(column) for term, column in vectorizer.vocabulary_.items()}
            fields[name] = {"settings": settings, "vocabulary": vocabulary}
            arrays[f"{name}_idf"] = vectorizer.idf_
        return arrays, fields

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], fields: dict) -> "TextFeatures":
        vectorizers = []
        for name in ("word", "char"):
            settings = dict(fields[name]["settings"])
            settings["ngram_range"] = tuple(settings["ngram_range"])  # JSON made it a list
            pattern = settings.get("token_pattern")
            settings["token_pattern"] = EQUIVALENT_TOKEN_PATTERNS.get(pattern, pattern)
            vectorizer = TfidfVectorizer(**settings)
            vectorizer.vocabulary_ = fields[name]["vocabulary"]
            vectorizer.idf_ = arrays[f"{name}_idf"]  # scikit-learn's setter checks it against the vocabulary
            vectorizers.append(vectorizer)
        return cls(*vectorizers)

    def reference_transform(self, texts: list[str]) -> sp.csr_matrix:
        """The same features through scikit-learn's own transform (slow; for checking ``transform``)."""
        blocks = [normalize(self.word.transform(texts)), normalize(self.char.transform(texts))]
        return normalize(sp.hstack(blocks).tocsr())

    def cache_clear(self) -> None:
        self._word_char_counts.cache_clear()

    def warm(self, words: list[str]) -> None:
        """Cache the character n-gram counts of these words (the first ones, when they are more than it holds)."""
        cache = self._word_char_counts
        for token in words:
            if cache.cache_info().nbytes >= cache.max_bytes * 0.9:
                break  # the rest would evict the most frequent words, which came first
            cache(token)

    def _word_counts(self, text: str) -> Counts:
        """Columns of the text's word 1-2-grams found in the vocabulary, once per occurrence."""
        vocabulary = self.word.vocabulary_
        columns = [column for term in self._word_analyzer(text) if (column := vocabulary.get(term)) is not None]
        return np.array(columns, dtype=COLUMN_DTYPE), np.ones(len(columns))

    def _char_counts(self, text: str, max_distinct_words: int | None) -> Counts:
        """Columns and counts of the text's character n-grams, a column once per distinct word holding it; past
        ``max_distinct_words`` distinct words, a word counts as one of a script the vocabulary lacks."""
        # char_wb pads each whitespace-separated word with one space on each side and never crosses words.
        columns, counts = [], []
        known, cache, unknown = self._known_chars, self._word_char_counts, self._unknown_word_counts
        distinct, most = 0, sys.maxsize if max_distinct_words is None else max_distinct_words
        for token, repeats in Counter(tokens(text)).items():
            if distinct == most or known.isdisjoint(token):  # tokens are lower-cased: lower() changes nothing more
                token_columns, token_counts = unknown
            else:
                distinct += 1
                token_columns, token_counts = cache(token)
            columns.append(token_columns)
            counts.append(token_counts if repeats == 1 else token_counts * repeats)
        if not columns:
            return np.empty(0, dtype=COLUMN_DTYPE), np.empty(0)
        return np.concatenate(columns), np.concatenate(counts)

    def rows(self, texts: list[str], max_distinct_words: int | None = None) -> Rows:
        """The texts' features as CSR arrays: what scoring reads (a scipy matrix costs more to build than a
        question's features). ``max_distinct_words``: as ``_char_counts``; None reads every word."""
        indptr, indices, values = [0], [], []
        for text in texts:
            char_counts = self._char_counts(text, max_distinct_words)
            columns, weights = tfidf_row(
                *self._word_counts(text), self.word.idf_, *char_counts, self.char.idf_, self.char_offset
            )
            indices.append(columns)
            values.append(weights)
            indptr.append(indptr[-1] + len(columns))
        if not texts:
            return Rows(np.zeros(1, dtype=COLUMN_DTYPE), np.empty(0, dtype=COLUMN_DTYPE), np.empty(0))
        return Rows(np.array(indptr, dtype=COLUMN_DTYPE), np.concatenate(indices), np.concatenate(values))

    def transform(self, texts: list[str], max_distinct_words: int | None = None) -> sp.csr_matrix:
        rows = self.rows(texts, max_distinct_words)
        return sp.csr_matrix((rows.data, rows.indices, rows.indptr), shape=(len(texts), self.n_features))
