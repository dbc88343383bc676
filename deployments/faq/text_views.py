"""Stages 2 and 3 per reading of the texts: cleaned questions in, that view's z-scores (and cosines to the
training documents) out. A view ("words" or "stems") is one reading of the cleaned texts, with its own
features (features.py) and scorers (scorers.py):

- words: words and operators (features.WORDS_AND_OPERATORS), character 1-4-grams, three kernel widths;
- stems: every word cut to its first ``stem_length`` letters, so "iterating" meets "iteration" and the
  character n-grams (3-6) of the stems reach across word forms; one kernel width (the other two added
  nothing there, measured, and each costs a pass over a (documents x originals) map).
The words view comes first: the first ranking and the known-phrasing check read its scores.
"""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from deployments.faq.config import FaqModelConfig
from deployments.faq.features import MAX_DISTINCT_WORDS_PER_QUESTION, TextFeatures, tokens
from deployments.faq.scorers import Stacked, fit_scorers, stacked_projection, zscores_and_cosines
from deployments.faq.scoring_loops import SCORERS_BESIDE_KERNELS
from deployments.faq.text import stem_words

WORDS = "words"
# Words whose character n-grams a loaded model computes up front (~30 us and ~1 KB each, per view): the training
# texts' most frequent ones, so a big FAQ costs at most ~1.2 s and ~40 MB more at load.
KNOWN_WORDS_KEPT = 20_000


@dataclass(frozen=True)
class ViewSpec:
    """How one view reads the cleaned texts and what it fits on them."""

    name: str
    stem_length: int  # 0: whole words
    char_ngrams: tuple[int, int]
    kernel_gammas: tuple[float, ...]
    token_pattern: str

    @property
    def n_scorers(self) -> int:
        return len(self.kernel_gammas) + SCORERS_BESIDE_KERNELS

    def texts(self, cleaned: list[str]) -> list[str]:
        return [stem_words(text, self.stem_length) for text in cleaned] if self.stem_length else cleaned

    def fit_features(self, texts: list[str], labels: np.ndarray, config: FaqModelConfig) -> TextFeatures:
        # An n-gram in every phrasing of one original must survive max_df, however small the FAQ.
        floor = int(np.bincount(labels).max()) + 1
        return TextFeatures.fit(
            texts, config.word_max_df, self.char_ngrams, config.char_max_df, self.token_pattern, floor
        )


def view_specs(config: FaqModelConfig) -> tuple[ViewSpec, ...]:
    words = ViewSpec(
        WORDS,
        0,
        (config.char_ngram_min, config.char_ngram_max),
        config.kernel_gammas,
        config.word_token_pattern,
    )
    if not config.stem_length:
        return (words,)
    stems = ViewSpec(
        "stems",
        config.stem_length,
        (config.stem_char_ngram_min, config.stem_char_ngram_max),
        (config.stem_kernel_gamma,),
        config.word_token_pattern,
    )
    return words, stems


def frequent_words(texts: list[str]) -> list[str]:
    """The texts' words, most frequent first, at most KNOWN_WORDS_KEPT: what a loaded model caches first."""
    counts = Counter(word for text in texts for word in tokens(text))
    return [word for word, _ in counts.most_common(KNOWN_WORDS_KEPT)]


# Per scorer array, its shape in terms of the kernel widths (g), documents (d), originals (c), features (f)
# and the projection's span (k): checked when a view is built, as the compiled loops do not check indices.
SHAPES = {
    "kernel_gammas": ("g",),
    "kernel_coef": ("g", "d", "c"),
    "linear_maps": ("d", "c+k"),
    "projection_offset": ("k",),
    "projection_targets": ("k", "c"),
    "nb_class_bias": ("c",),
    "class_norms": ("c",),
    "duplicate_counts": ("c",),
    "document_labels": ("d",),
    "documents_t": ("f", "d"),
    "nb_log_ratio": ("f", "c"),
}


def check_scorers(scorers: dict, spec: ViewSpec, n_features: int, n_classes: int) -> None:
    """Raise ValueError unless the arrays fit each other, the view's features and ``n_classes`` originals."""
    k = scorers["projection_offset"].shape[0]
    sizes = {"g": len(spec.kernel_gammas), "d": scorers["documents_t"].shape[1], "c": n_classes, "f": n_features}
    sizes |= {"k": k, "c+k": n_classes + k}
    for name, dimensions in SHAPES.items():
        expected = tuple(sizes[dimension] for dimension in dimensions)
        if scorers[name].shape != expected:
            raise ValueError(f"{spec.name} view: {name} has shape {scorers[name].shape}, expected {expected}")
    order, starts, classes = (scorers[f"duplicate_{name}"] for name in ("order", "starts", "classes"))
    bounds = [(order, sizes["d"]), (classes, n_classes), (starts, len(order)), (scorers["document_labels"], n_classes)]
    if len(starts) != len(classes) or any(
        len(index) and (index.min() < 0 or index.max() >= bound) for index, bound in bounds
    ):
        raise ValueError(f"{spec.name} view: an index array points outside the documents or originals")


@dataclass(eq=False)
class View:
    """One reading of the texts: its fitted features and scorers, and the words its cache starts with."""

    spec: ViewSpec
    features: TextFeatures
    scorers: dict  # fit_scorers' arrays
    known_words: list[str]
    n_classes: int
    _stacked: Stacked = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.known_words, list) or not all(isinstance(word, str) for word in self.known_words):
            raise ValueError("known_words must be a list of strings")
        check_scorers(self.scorers, self.spec, self.features.n_features, self.n_classes)
        self._stacked = stacked_projection(self.scorers)
        self.features.warm(self.known_words)

    @classmethod
    def fit(cls, spec: ViewSpec, cleaned: list[str], labels: np.ndarray, n_classes: int, config: FaqModelConfig):
        """The view fitted on the cleaned training documents, and their feature matrix."""
        texts = spec.texts(cleaned)
        features = spec.fit_features(texts, labels, config)
        documents = features.transform(texts)
        scorers = fit_scorers(documents, labels, n_classes, config, spec.kernel_gammas)
        return cls(spec, features, scorers, frequent_words(texts), n_classes), documents

    def zscores(self, cleaned: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The scorers' z-scores for cleaned questions, and each question's cosine to every training document."""
        rows = self.features.rows(self.spec.texts(cleaned), MAX_DISTINCT_WORDS_PER_QUESTION)
        return zscores_and_cosines(self.scorers, rows, self._stacked)
