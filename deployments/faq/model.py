"""The FAQ matcher: TF-IDF features, two complementary scorers, calibrated probabilities.

Every original is a class; its training examples are its own text, its title and its known duplicates.
Two scorers see the same features: cosine similarity to each class's centroid (robust with few
examples) and a linear classifier (learns which words separate similar questions). Their per-question
z-scores are mixed, and a softmax with a temperature fitted on held-out duplicates turns the mix into
calibrated match probabilities.
"""

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC

from deployments.faq.data import FaqDataset, Original
from deployments.faq.text import clean_text


@dataclass(frozen=True)
class FaqModelConfig:
    """Hyper-parameters, chosen by cross-validation on the Stack Overflow data (benchmarks/results)."""

    word_ngram_max: int = 2
    char_ngram_min: int = 2
    char_ngram_max: int = 5
    svm_c: float = 0.5
    centroid_weight: float = 1.0
    classifier_weight: float = 1.0


def _zscore(scores: np.ndarray) -> np.ndarray:
    spread = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


@dataclass
class FaqModel:
    """A fitted matcher. ``scores`` ranks; ``probabilities`` is the calibrated version of it."""

    originals: list[Original]
    vectorizer: FeatureUnion
    centroids: sp.csr_matrix  # (originals, features), rows L2-normalised
    coef: sp.csr_matrix  # the linear classifier's weights, (originals, features)
    intercept: np.ndarray
    config: FaqModelConfig
    temperature: float = 1.0

    def __post_init__(self) -> None:
        # (features, originals) in CSR: a question's few non-zero features select a few rows to add up.
        self._centroids_t = self.centroids.T.tocsr()
        self._coef_t = self.coef.T.tocsr()

    def features(self, questions: list[str]) -> sp.csr_matrix:
        return normalize(self.vectorizer.transform([clean_text(q) for q in questions]))

    def scores(self, questions: list[str]) -> np.ndarray:
        """Uncalibrated scores, one row per question and one column per original (higher is better)."""
        features = self.features(questions)
        centroid = (features @ self._centroids_t).toarray()
        classifier = (features @ self._coef_t).toarray() + self.intercept
        weights = self.config
        return weights.centroid_weight * _zscore(centroid) + weights.classifier_weight * _zscore(classifier)

    def probabilities(self, questions: list[str]) -> np.ndarray:
        return softmax(self.scores(questions) / self.temperature, axis=1)

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

    def state(self) -> dict:
        """Everything but the originals, in types skops can store without pickle."""
        return {
            "vectorizer": self.vectorizer,
            "centroids": self.centroids,
            "coef": self.coef,
            "intercept": self.intercept,
            "config": asdict(self.config),
            "temperature": self.temperature,
        }

    @classmethod
    def from_state(cls, originals: list[Original], state: dict) -> "FaqModel":
        return cls(originals=originals, **{**state, "config": FaqModelConfig(**state["config"])})


def _training_examples(dataset: FaqDataset) -> tuple[list[str], np.ndarray]:
    column = {original.answer_id: index for index, original in enumerate(dataset.originals)}
    texts, labels = [], []
    for index, original in enumerate(dataset.originals):
        texts += [original.text, original.title]
        labels += [index, index]
    for duplicate in dataset.duplicates:
        texts.append(duplicate.text)
        labels.append(column[duplicate.answer_id])
    return [clean_text(text) for text in texts], np.array(labels)


def fit_model(dataset: FaqDataset, config: FaqModelConfig = FaqModelConfig()) -> FaqModel:
    texts, labels = _training_examples(dataset)
    vectorizer = FeatureUnion(
        [
            ("words", TfidfVectorizer(ngram_range=(1, config.word_ngram_max), sublinear_tf=True)),
            (
                "chars",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(config.char_ngram_min, config.char_ngram_max),
                    sublinear_tf=True,
                ),
            ),
        ]
    )
    features = normalize(vectorizer.fit_transform(texts))
    n_classes = len(dataset.originals)
    membership = sp.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(n_classes, len(labels)))
    centroids = normalize(membership @ features).tocsr()
    classifier = LinearSVC(C=config.svm_c).fit(features, labels)
    coef = sp.csr_matrix(classifier.coef_)
    return FaqModel(dataset.originals, vectorizer, centroids, coef, classifier.intercept_, config)
