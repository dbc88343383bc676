"""The FAQ matcher: two complementary scorers over TF-IDF features, mixed and calibrated.

Every original is a class; its training documents are its own text, its title and its known duplicates.
- A kernel ridge classifier over the training documents (exponential cosine kernel): a question close to
  any one phrasing of an original scores high for it, even when the other phrasings use other words.
- Multinomial naive Bayes over the same features: evidence from every word of every phrasing of a class
  adds up, which separates originals that share a topic.
Each scorer's scores are z-scored per question and summed; a softmax with a temperature fitted on held-out
duplicates turns the sum into calibrated probabilities. Chosen by cross-validation on the Stack Overflow
data (benchmarks/results/faq_quality.md lists what was tried).
"""

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import softmax
from sklearn.naive_bayes import MultinomialNB

from deployments.faq.data import FaqDataset, Original
from deployments.faq.features import TextFeatures
from deployments.faq.text import clean_text


@dataclass(frozen=True)
class FaqModelConfig:
    word_max_df: float = 0.3
    char_ngram_min: int = 1
    char_ngram_max: int = 4
    char_max_df: float = 0.5
    kernel_gamma: float = 5.0  # kernel = exp(gamma * (cosine - 1))
    kernel_ridge_alpha: float = 0.3
    naive_bayes_alpha: float = 0.01
    kernel_weight: float = 1.0
    naive_bayes_weight: float = 1.0


def _zscore(scores: np.ndarray) -> np.ndarray:
    spread = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


@dataclass
class FaqModel:
    """A fitted matcher. ``scores`` ranks the originals; ``probabilities`` is its calibrated form."""

    originals: list[Original]
    features: TextFeatures
    documents_t: sp.csr_matrix  # training documents' features, transposed: (features, documents)
    kernel_coef: np.ndarray  # (documents, originals)
    nb_log_ratio: sp.csr_matrix  # (features, originals): log(1 + count / alpha), zero for unseen features
    nb_class_bias: np.ndarray  # (originals,): log(alpha) - log(total count of the class)
    config: FaqModelConfig
    temperature: float = 1.0

    def __post_init__(self) -> None:
        # One sparse product gives both the cosines to every document and the naive Bayes sums.
        self._projection = sp.hstack([self.documents_t, self.nb_log_ratio]).tocsr()
        self._n_documents = self.documents_t.shape[1]

    def scores(self, questions: list[str]) -> np.ndarray:
        """Uncalibrated scores, one row per question and one column per original (higher is better)."""
        features = self.features.transform([clean_text(question) for question in questions])
        projected = (features @ self._projection).toarray()
        cosine, log_ratio = projected[:, : self._n_documents], projected[:, self._n_documents :]
        kernel = np.exp(self.config.kernel_gamma * (cosine - 1.0)) @ self.kernel_coef
        naive_bayes = log_ratio + np.asarray(features.sum(axis=1)) * self.nb_class_bias
        return self.config.kernel_weight * _zscore(kernel) + self.config.naive_bayes_weight * _zscore(naive_bayes)

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
        """Everything but the originals, in types skops stores without pickle."""
        return {
            "word_vectorizer": self.features.word,
            "char_vectorizer": self.features.char,
            "documents_t": self.documents_t,
            "kernel_coef": self.kernel_coef,
            "nb_log_ratio": self.nb_log_ratio,
            "nb_class_bias": self.nb_class_bias,
            "config": asdict(self.config),
            "temperature": self.temperature,
        }

    @classmethod
    def from_state(cls, originals: list[Original], state: dict) -> "FaqModel":
        state = dict(state)
        features = TextFeatures(state.pop("word_vectorizer"), state.pop("char_vectorizer"))
        config = FaqModelConfig(**state.pop("config"))
        return cls(originals=originals, features=features, config=config, **state)


def _training_documents(dataset: FaqDataset) -> tuple[list[str], np.ndarray]:
    column = {original.answer_id: index for index, original in enumerate(dataset.originals)}
    texts, labels = [], []
    for index, original in enumerate(dataset.originals):
        texts += [original.text, original.title]
        labels += [index, index]
    for duplicate in dataset.duplicates:
        texts.append(duplicate.text)
        labels.append(column[duplicate.answer_id])
    return [clean_text(text) for text in texts], np.array(labels)


def _naive_bayes(documents: sp.csr_matrix, labels: np.ndarray, alpha: float) -> tuple[sp.csr_matrix, np.ndarray]:
    """MultinomialNB's log-likelihoods split into a sparse part and a per-class constant.

    log P(feature | class) = log(count + alpha) - log(class total) = log(1 + count / alpha) + bias(class), so
    the dense (classes x features) table never needs to be kept.
    """
    naive_bayes = MultinomialNB(alpha=alpha).fit(documents, labels)
    counts = sp.csr_matrix(naive_bayes.feature_count_)
    log_ratio = counts.copy()
    log_ratio.data = np.log1p(log_ratio.data / alpha)
    class_totals = naive_bayes.feature_count_.sum(axis=1) + alpha * documents.shape[1]
    return log_ratio.T.tocsr(), np.log(alpha) - np.log(class_totals)


def fit_model(dataset: FaqDataset, config: FaqModelConfig | None = None) -> FaqModel:
    config = config or FaqModelConfig()
    texts, labels = _training_documents(dataset)
    features = TextFeatures.fit(
        texts, config.word_max_df, (config.char_ngram_min, config.char_ngram_max), config.char_max_df
    )
    documents = features.transform(texts)
    one_hot = np.eye(len(dataset.originals))[labels]
    gram = np.exp(config.kernel_gamma * ((documents @ documents.T).toarray() - 1.0))
    kernel_coef = np.linalg.solve(gram + config.kernel_ridge_alpha * np.eye(len(labels)), one_hot)
    nb_log_ratio, nb_class_bias = _naive_bayes(documents, labels, config.naive_bayes_alpha)
    return FaqModel(
        originals=dataset.originals,
        features=features,
        documents_t=documents.T.tocsr(),
        kernel_coef=kernel_coef,
        nb_log_ratio=nb_log_ratio,
        nb_class_bias=nb_class_bias,
        config=config,
    )
