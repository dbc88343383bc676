"""Text features: word and character TF-IDF, each L2-normalised, side by side, L2-normalised again.

Fitting uses scikit-learn's vectorizers. Transforming one question with them costs ~4 ms, nearly all of it
input validation, so ``transform`` applies the same fitted analyzers, vocabularies and idf weights directly
(tests check it equals scikit-learn's output). That keeps a single question well under a millisecond.
"""

from collections import Counter

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize


class TextFeatures:
    def __init__(self, word: TfidfVectorizer, char: TfidfVectorizer) -> None:
        self.word = word
        self.char = char
        self._blocks = [
            (vectorizer.build_analyzer(), vectorizer.vocabulary_, vectorizer.idf_, offset)
            for vectorizer, offset in ((word, 0), (char, len(word.vocabulary_)))
        ]
        self.n_features = len(word.vocabulary_) + len(char.vocabulary_)
        self.char_slice = slice(len(word.vocabulary_), self.n_features)

    @classmethod
    def fit(
        cls, texts: list[str], word_max_df: float, char_ngrams: tuple[int, int], char_max_df: float
    ) -> "TextFeatures":
        word = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), max_df=word_max_df)
        char = TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=char_ngrams, max_df=char_max_df)
        word.fit(texts)
        char.fit(texts)
        return cls(word, char)

    def reference_transform(self, texts: list[str]) -> sp.csr_matrix:
        """The same features through scikit-learn's own transform (slow; for checking ``transform``)."""
        blocks = [normalize(self.word.transform(texts)), normalize(self.char.transform(texts))]
        return normalize(sp.hstack(blocks).tocsr())

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        indptr, indices, values = [0], [], []
        for text in texts:
            row_columns, row_weights = [], []
            for analyze, vocabulary, idf, offset in self._blocks:
                columns, counts = [], []
                for term, count in Counter(analyze(text)).items():
                    if (column := vocabulary.get(term)) is not None:
                        columns.append(column)
                        counts.append(count)
                if not columns:
                    continue
                columns = np.array(columns, dtype=np.int64)
                counts = np.array(counts, dtype=np.float64)
                weights = (1.0 + np.log(counts)) * idf[columns]
                row_columns.append(columns + offset)
                row_weights.append(weights / np.sqrt(weights @ weights))
            # Each non-empty block has unit norm; dividing by sqrt(blocks) makes the whole row unit norm.
            scale = 1.0 / np.sqrt(len(row_weights)) if row_weights else 1.0
            indices.extend(row_columns)
            values.extend(weights * scale for weights in row_weights)
            indptr.append(indptr[-1] + sum(len(columns) for columns in row_columns))
        if not indices:
            return sp.csr_matrix((len(texts), self.n_features))
        return sp.csr_matrix(
            (np.concatenate(values), np.concatenate(indices), np.array(indptr)), shape=(len(texts), self.n_features)
        )
