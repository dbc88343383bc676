"""The FAQ matcher: two views of the texts, a set of scorers each, combined by a learned two-stage re-ranker.

The views (each with its own TF-IDF features and scorers, scorers.py) read the same cleaned texts twice: as
whole words and operators, and with every word cut to its first four letters, so "iterating" meets
"iteration" and the character n-grams of the stems reach across word forms. Their 20 z-scores feed a
conditional-logit re-ranker (rerank.py) that re-orders the best 60 originals, and a second one the best 5 of
those; its features are the z-scores and each one's margin over the best other candidate, plus a bias per
original. Its weights are fitted on out-of-fold scores of the training duplicates (3 inner folds), so it
learns how the scorers behave on unseen phrasings. A softmax with a temperature fitted on held-out duplicates
turns the final scores into probabilities. What each piece adds is measured in
benchmarks/results/faq_quality.md.
"""

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.model_selection import StratifiedKFold

from deployments.faq.config import FaqModelConfig
from deployments.faq.data import FaqDataset, Original
from deployments.faq.features import TextFeatures, tokens
from deployments.faq.rerank import candidate_features, fit_conditional_logit, rerank, top_columns
from deployments.faq.scorers import (
    SCORERS_BESIDE_KERNELS,
    Stacked,
    fit_scorers,
    stacked_projection,
    zscores,
    zscores_and_cosines,
)
from deployments.faq.text import clean_text, stem_words

__all__ = ["FaqModel", "FaqModelConfig", "fit_model"]

SPARSE_PARTS = ("data", "indices", "indptr", "shape")  # how a CSR matrix is saved
# Words whose character n-grams a loaded model computes up front (~30 us and ~1 KB each): the training texts'
# most frequent ones, so a big FAQ costs at most ~0.6 s and ~20 MB more at load.
KNOWN_WORDS_KEPT = 20_000
BASE_SCORERS = (1, 4, 5)  # words view: kernel (middle width), naive Bayes, projection; their z-sum ranks first


def view_names(config: FaqModelConfig) -> tuple[str, ...]:
    return ("words", "stems") if config.stem_length else ("words",)


def view_texts(name: str, cleaned: list[str], config: FaqModelConfig) -> list[str]:
    return cleaned if name == "words" else [stem_words(text, config.stem_length) for text in cleaned]


def view_gammas(name: str, config: FaqModelConfig) -> tuple[float, ...]:
    return config.kernel_gammas if name == "words" else (config.stem_kernel_gamma,)


def fit_view_features(name: str, texts: list[str], config: FaqModelConfig) -> TextFeatures:
    if name == "words":
        char_ngrams = (config.char_ngram_min, config.char_ngram_max)
        return TextFeatures.fit(texts, config.word_max_df, char_ngrams, config.char_max_df, config.word_token_pattern)
    char_ngrams = (config.stem_char_ngram_min, config.stem_char_ngram_max)
    return TextFeatures.fit(texts, config.word_max_df, char_ngrams, config.char_max_df)


def frequent_words(texts: list[str]) -> list[str]:
    """The texts' words, most frequent first, at most KNOWN_WORDS_KEPT: what a loaded model caches first."""
    counts = Counter(word for text in texts for word in tokens(text))
    return [word for word, _ in counts.most_common(KNOWN_WORDS_KEPT)]


@dataclass(eq=False)
class View:
    """One reading of the texts: its fitted features and scorers, and the words its cache starts with."""

    name: str
    features: TextFeatures
    scorers: dict  # fit_scorers' arrays
    known_words: list[str]
    _stacked: Stacked = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.known_words, list) or not all(isinstance(word, str) for word in self.known_words):
            raise ValueError("known_words must be a list of strings")
        self._stacked = stacked_projection(self.scorers)
        self.features.warm(self.known_words)

    def zscores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The scorers' z-scores, and each question's cosine to every training document."""
        return zscores_and_cosines(self.scorers, self.features.rows(texts), self._stacked)


def known_originals(cosines: np.ndarray, document_labels: np.ndarray, threshold: float) -> np.ndarray:
    """Per question, the original one of whose known phrasings (its title, its text, a listed duplicate) the
    question repeats, at a cosine of at least ``threshold``; -1 where none."""
    nearest = cosines.argmax(axis=1)
    return np.where(cosines[np.arange(len(nearest)), nearest] >= threshold, document_labels[nearest], -1)


def default_weights(n_features: int) -> np.ndarray:
    """Without held-out duplicates to learn from: the sum of the base scorers' z-scores."""
    weights = np.zeros(n_features)
    weights[list(BASE_SCORERS)] = 1.0
    return weights


def final_scores(zscores: np.ndarray, config: FaqModelConfig, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    first = rerank(zscores, zscores[:, BASE_SCORERS].sum(axis=1), config.first_candidates, weights[0], bias[0])
    return rerank(zscores, first, config.second_candidates, weights[1], bias[1])


@dataclass
class FaqModel:
    """A fitted matcher. ``scores`` ranks the originals; ``probabilities`` is its calibrated form."""

    originals: list[Original]
    views: list[View]
    rerank_weights: np.ndarray  # (2, 2 * scorers + 1): first and second stage
    class_bias: np.ndarray  # (2, originals): first and second stage
    config: FaqModelConfig
    temperature: float = 1.0

    def scores(self, questions: list[str]) -> np.ndarray:
        """Uncalibrated scores, one row per question and one column per original (higher is better).

        The re-ranker learnt from phrasings it had not seen, and a phrasing it has seen (an original's own
        title, say) scores far outside that range, where its weights say little: such a question gets the
        original it repeats first, at least ``known_phrasing_margin`` above the best other. Unseen duplicates
        of the Stack Overflow data come no closer than a cosine of 0.7 to any training document.
        """
        cleaned = [clean_text(question, self.config.keep_code_blocks) for question in questions]
        per_view = [view.zscores(view_texts(view.name, cleaned, self.config)) for view in self.views]
        zscores = np.concatenate([view_zscores for view_zscores, _ in per_view], axis=1)
        scores = final_scores(zscores, self.config, self.rerank_weights, self.class_bias)
        words = self.views[0]
        known = known_originals(per_view[0][1], words.scorers["document_labels"], self.config.known_phrasing_cosine)
        rows = np.flatnonzero(known >= 0)
        others = scores[rows].copy()
        others[np.arange(len(rows)), known[rows]] = -np.inf
        promoted = others.max(axis=1) + self.config.known_phrasing_margin
        scores[rows, known[rows]] = np.maximum(scores[rows, known[rows]], promoted)
        return scores

    def probabilities(self, questions: list[str]) -> np.ndarray:
        # By hand: scipy's softmax checks its input for longer than one question's whole re-ranking takes.
        logits = self.scores(questions) / self.temperature
        exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exponentials / exponentials.sum(axis=1, keepdims=True)

    def cache_clear(self) -> None:
        """Forget every view's cached words (benchmarks measure what a cold cache costs)."""
        for view in self.views:
            view.features.cache_clear()

    def match(self, probabilities: np.ndarray, top_k: int) -> list[dict]:
        """The ``top_k`` best originals for one row of ``probabilities``, best first."""
        top_k = min(top_k, len(self.originals))
        best = np.argpartition(-probabilities, top_k - 1)[:top_k]
        best = best[np.argsort(-probabilities[best], kind="stable")]
        return [
            {
                "id": self.originals[i].id,
                "answer_id": self.originals[i].answer_id,
                "question": self.originals[i].title,
                "score": float(probabilities[i]),
                "url": self.originals[i].url,
                "answer": self.originals[i].answer,
            }
            for i in best
        ]

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything but the originals: plain numeric arrays (sparse matrices as their three arrays and shape),
        and JSON fields. Neither needs pickle to be read back."""
        arrays = {"rerank_weights": self.rerank_weights, "class_bias": self.class_bias}
        views = {}
        for view in self.views:
            feature_arrays, feature_fields = view.features.to_state()
            arrays |= {f"{view.name}.{name}": value for name, value in feature_arrays.items()}
            sparse = sorted(name for name, value in view.scorers.items() if sp.issparse(value))
            for name, value in view.scorers.items():
                if name in sparse:
                    for part in SPARSE_PARTS:
                        arrays[f"{view.name}.scorers.{name}.{part}"] = np.asarray(getattr(value, part))
                else:
                    arrays[f"{view.name}.scorers.{name}"] = value
            views[view.name] = {"features": feature_fields, "sparse_scorers": sparse, "known_words": view.known_words}
        fields = {"config": asdict(self.config), "temperature": self.temperature, "views": views}
        return arrays, fields

    @classmethod
    def from_state(cls, originals: list[Original], arrays: dict[str, np.ndarray], fields: dict) -> "FaqModel":
        views = []
        for name, view_fields in fields["views"].items():
            own = {key.removeprefix(f"{name}."): value for key, value in arrays.items() if key.startswith(f"{name}.")}
            scorers = {
                key.removeprefix("scorers."): value
                for key, value in own.items()
                if key.startswith("scorers.") and key.count(".") == 1
            }
            for scorer in view_fields["sparse_scorers"]:
                data, indices, indptr, shape = (own[f"scorers.{scorer}.{part}"] for part in SPARSE_PARTS)
                scorers[scorer] = sp.csr_matrix((data, indices, indptr), shape=tuple(shape))
            feature_arrays = {key: value for key, value in own.items() if not key.startswith("scorers.")}
            features = TextFeatures.from_state(feature_arrays, view_fields["features"])
            views.append(View(name, features, scorers, view_fields["known_words"]))
        return cls(
            originals=originals,
            views=views,
            rerank_weights=arrays["rerank_weights"],
            class_bias=arrays["class_bias"],
            config=FaqModelConfig(**fields["config"]),
            temperature=float(fields["temperature"]),
        )


def _training_texts(dataset: FaqDataset, config: FaqModelConfig) -> tuple[list[str], np.ndarray]:
    """Cleaned training documents (each original's text and title, then the duplicates) and their classes."""
    column = {original.answer_id: index for index, original in enumerate(dataset.originals)}
    texts, labels = [], []
    for index, original in enumerate(dataset.originals):
        texts += [original.text, original.title]
        labels += [index, index]
    for duplicate in dataset.duplicates:
        texts.append(duplicate.text)
        labels.append(column[duplicate.answer_id])
    return [clean_text(text, config.keep_code_blocks) for text in texts], np.array(labels)


def _fit_rerank(
    documents: dict[str, sp.csr_matrix], labels: np.ndarray, n_classes: int, config: FaqModelConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Both stages' weights and biases, from scores of each training duplicate by scorers fitted without it
    (a matrix of training documents per view)."""
    duplicates = np.arange(2 * n_classes, len(labels))
    total_scorers = sum(len(view_gammas(name, config)) + SCORERS_BESIDE_KERNELS for name in documents)
    n_features = 2 * total_scorers + 1
    per_class = np.bincount(labels[duplicates], minlength=n_classes)
    folds = min(config.inner_folds, per_class.min())
    if folds < 2:
        return np.stack([default_weights(n_features)] * 2), np.zeros((2, n_classes))
    held_out = np.zeros((len(duplicates), total_scorers, n_classes))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for train, test in splitter.split(duplicates, labels[duplicates]):
        keep = np.r_[np.arange(2 * n_classes), duplicates[train]]
        held_out[test] = np.concatenate(
            [
                zscores(
                    fit_scorers(view[keep], labels[keep], n_classes, config, view_gammas(name, config)),
                    view[duplicates[test]],
                )
                for name, view in documents.items()
            ],
            axis=1,
        )
    truth = labels[duplicates]
    weights, biases = [], []
    order = held_out[:, BASE_SCORERS].sum(axis=1)
    for n_candidates in (config.first_candidates, config.second_candidates):
        candidates = top_columns(order, min(n_candidates, n_classes))
        features = candidate_features(held_out, candidates)
        stage = fit_conditional_logit(features, candidates, truth, n_classes, config.rerank_l2, config.class_bias_l2)
        weights.append(stage[0])
        biases.append(stage[1])
        order = rerank(held_out, order, n_candidates, *stage)
    return np.stack(weights), np.stack(biases)


def fit_model(dataset: FaqDataset, config: FaqModelConfig | None = None) -> FaqModel:
    config = config or FaqModelConfig()
    cleaned, labels = _training_texts(dataset, config)
    n_classes = len(dataset.originals)
    views, documents = [], {}
    for name in view_names(config):
        texts = view_texts(name, cleaned, config)
        features = fit_view_features(name, texts, config)
        documents[name] = features.transform(texts)
        scorers = fit_scorers(documents[name], labels, n_classes, config, view_gammas(name, config))
        views.append(View(name, features, scorers, frequent_words(texts)))
    weights, bias = _fit_rerank(documents, labels, n_classes, config)
    return FaqModel(dataset.originals, views, weights, bias, config)
