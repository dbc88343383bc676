"""The FAQ matcher: eleven simple scorers over TF-IDF features, combined by a learned two-stage re-ranker.

Every original is a class; its training documents are its own text, its title and its known duplicates.
The features (word 1-2-grams and char 1-4-grams) feed eleven scorers, each good at something else
(benchmarks/results/faq_quality.md):
- kernel ridge over the training documents with exponential cosine kernels of three widths: a question
  close to any one phrasing of an original scores high for it, even when the others use other words;
- linear kernel ridge, and naive Bayes (evidence from every word of every phrasing adds up);
- a supervised projection: ridge regression, in the top singular directions of the documents, from each
  document to its class centroid, so words that co-occur within a class's phrasings pull together;
- the mean and max cosine to the class's duplicates, the cosine to its title, to its text, to its centroid.
The scores are z-scored per question. A conditional-logit re-ranker (a softmax over candidates, one weight
per feature) re-orders the best 60 originals, and a second one the best 5 of those; its features are the
z-scores and each one's margin over the best other candidate. Its weights are fitted on out-of-fold scores
of the training duplicates (3 inner folds), so it learns how the scorers behave on unseen phrasings.
A softmax with a temperature fitted on held-out duplicates turns the final scores into probabilities.
"""

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.special import softmax
from sklearn.model_selection import StratifiedKFold

from deployments.faq.data import FaqDataset, Original
from deployments.faq.features import TextFeatures, tokens
from deployments.faq.kernels import class_max, sparse_product, zscore_rows
from deployments.faq.rerank import candidate_features, fit_conditional_logit, rerank, top_columns
from deployments.faq.text import clean_text

SPARSE_PARTS = ("data", "indices", "indptr", "shape")  # how a CSR matrix is saved
N_SCORERS = 11  # 3 exponential kernels, linear kernel, naive Bayes, projection, 5 document cosines
# Words whose character n-grams a loaded model computes up front (~30 us and ~1 KB each): the training texts'
# most frequent ones, so a big FAQ costs at most ~0.6 s and ~20 MB more at load.
KNOWN_WORDS_KEPT = 20_000
BASE_SCORERS = (1, 4, 5)  # kernel (middle width), naive Bayes, projection: their z-sum is the first ranking


@dataclass(frozen=True)
class FaqModelConfig:
    word_max_df: float = 0.3
    char_ngram_min: int = 1
    char_ngram_max: int = 4
    char_max_df: float = 0.5
    # Three kernel widths, kernel = exp(gamma * (cosine - 1)); plain fields, as the config goes to JSON metadata.
    kernel_gamma_wide: float = 2.0
    kernel_gamma: float = 5.0
    kernel_gamma_narrow: float = 10.0
    kernel_ridge_alpha: float = 0.3
    linear_ridge_alpha: float = 0.1
    naive_bayes_alpha: float = 0.01
    projection_rank: int = 500
    projection_alpha: float = 0.1
    first_candidates: int = 60
    second_candidates: int = 5
    rerank_l2: float = 0.01
    inner_folds: int = 3

    @property
    def kernel_gammas(self) -> tuple[float, float, float]:
        return (self.kernel_gamma_wide, self.kernel_gamma, self.kernel_gamma_narrow)


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes)[labels]


def _normalize_rows(matrix: np.ndarray) -> np.ndarray:
    # sklearn's normalize validates its input, which costs more than the work for one question.
    norms = np.sqrt((matrix * matrix).sum(axis=1, keepdims=True))
    return matrix / np.where(norms > 0, norms, 1.0)


def _class_map(labels: np.ndarray, n_classes: int, weights: np.ndarray | None = None) -> sp.csr_matrix:
    """(documents, classes), one non-zero per row: a product with it averages over each class's documents
    (or, with ``weights``, sums them weighted per class)."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    values = 1.0 / counts[labels] if weights is None else weights[labels]
    return sp.csr_matrix((values, (np.arange(len(labels)), labels)), shape=(len(labels), n_classes))


def fit_scorers(documents: sp.csr_matrix, labels: np.ndarray, n_originals: int, config: FaqModelConfig) -> dict:
    """The fitted scorers, as arrays. Documents 2i and 2i+1 are original i's text and title; the rest duplicates.

    Dense maps are stored as float32: scoring one question reads them all, so their size sets its time.
    """
    one_hot = _one_hot(labels, n_originals)
    gram = (documents @ documents.T).toarray()
    identity = np.eye(len(labels))
    kernel_coef = np.stack(
        [
            scipy.linalg.solve(np.exp(g * (gram - 1.0)) + config.kernel_ridge_alpha * identity, one_hot, assume_a="pos")
            for g in config.kernel_gammas
        ]
    )
    # Projection: the documents' top singular directions come from the Gram matrix (Z = U sqrt(eigenvalues)).
    eigenvalues, vectors = np.linalg.eigh(gram)  # all of them: faster than LAPACK's subset driver here
    # Linear kernel ridge from the same eigenvectors: (gram + alpha I)^-1 = U diag(1 / (eigenvalues + alpha)) U'.
    linear_coef = (vectors / (eigenvalues + config.linear_ridge_alpha)) @ (vectors.T @ one_hot)
    keep = eigenvalues >= max(eigenvalues[-min(config.projection_rank, len(labels))], 1e-8)
    root = np.sqrt(eigenvalues[keep])
    embed = vectors[:, keep] / root  # cosines to the documents -> coordinates
    coordinates = vectors[:, keep] * root
    centroids = (one_hot.T @ coordinates) / np.maximum(one_hot.sum(axis=0), 1.0)[:, None]
    centred = coordinates - coordinates.mean(axis=0)
    targets = centroids[labels]
    ridge = np.linalg.solve(
        centred.T @ centred + config.projection_alpha * np.eye(len(root)), centred.T @ (targets - targets.mean(axis=0))
    )
    # Multinomial naive Bayes: log P(f|c) = log(count + alpha) - log(class total) = log1p(count/alpha) + bias(c),
    # so only the sparse counts are kept, never the dense (classes x features) table.
    counts = (_class_map(labels, n_originals, np.ones(n_originals)).T @ documents).tocsr()
    class_totals = np.asarray(counts.sum(axis=1)).ravel() + config.naive_bayes_alpha * documents.shape[1]
    counts.data = np.log1p(counts.data / config.naive_bayes_alpha)
    class_norms = np.sqrt(np.maximum(((gram @ one_hot) * one_hot).sum(axis=0), 1e-12))
    duplicate_labels = labels[2 * n_originals :]
    duplicate_order = np.argsort(duplicate_labels, kind="stable")
    duplicate_mean = _class_map(duplicate_labels, n_originals).toarray()
    linear_maps = [  # everything linear in the cosines, applied in one matrix product
        linear_coef,
        _class_map(labels, n_originals, 1.0 / class_norms).toarray(),
        np.vstack([np.zeros((2 * n_originals, n_originals)), duplicate_mean]),
        embed @ ridge,
    ]
    return {
        "documents_t": documents.T.tocsr(),
        "kernel_coef": kernel_coef.astype(np.float32),
        "linear_maps": np.hstack(linear_maps).astype(np.float32),
        "projection_offset": (targets.mean(axis=0) - coordinates.mean(axis=0) @ ridge).astype(np.float32),
        "projection_targets": _normalize_rows(centroids).T.astype(np.float32),
        "nb_log_ratio": counts.T.tocsr(),
        "nb_class_bias": np.log(config.naive_bayes_alpha) - np.log(class_totals),
        # The duplicates sorted by class, and where each class's run starts, for the max over a class.
        "duplicate_order": 2 * n_originals + duplicate_order,
        "duplicate_starts": np.r_[0, np.flatnonzero(np.diff(duplicate_labels[duplicate_order])) + 1],
        "duplicate_classes": np.unique(duplicate_labels),
    }


def stacked_projection(scorers: dict) -> sp.csr_matrix:
    """One sparse product with this gives both the cosines to every document and the naive Bayes sums."""
    return sp.hstack([scorers["documents_t"], scorers["nb_log_ratio"]]).tocsr()


def zscores(
    scorers: dict, queries: sp.csr_matrix, gammas: tuple[float, ...], stacked: sp.csr_matrix | None = None
) -> np.ndarray:
    """(questions, N_SCORERS, originals): each scorer's scores, z-scored per question."""
    n_documents, n_classes = scorers["kernel_coef"].shape[1:]
    stacked = stacked if stacked is not None else stacked_projection(scorers)
    product = sparse_product(
        queries.indptr, queries.indices, queries.data, stacked.indptr, stacked.indices, stacked.data, stacked.shape[1]
    )
    cosine, log_ratio = product[:, :n_documents].astype(np.float32), product[:, n_documents:]
    gammas_column = np.asarray(gammas, dtype=np.float32)[:, None, None]
    kernels = np.matmul(np.exp(gammas_column * (cosine - 1.0)), scorers["kernel_coef"])
    row_sums = np.diff(np.r_[0.0, np.cumsum(queries.data)][queries.indptr])[:, None]  # scipy's sum is slower
    naive_bayes = log_ratio + row_sums * scorers["nb_class_bias"]
    linear = cosine @ scorers["linear_maps"]
    projected = _normalize_rows(linear[:, 3 * n_classes :] + scorers["projection_offset"])
    order, starts, classes = (scorers[f"duplicate_{name}"] for name in ("order", "starts", "classes"))
    duplicate_max = class_max(cosine, order, starts, classes, n_classes)
    scores = [
        *kernels,
        linear[:, :n_classes],  # linear kernel ridge
        naive_bayes,
        projected @ scorers["projection_targets"],
        linear[:, 2 * n_classes : 3 * n_classes],  # mean cosine to the class's duplicates
        duplicate_max,
        cosine[:, 1 : 2 * n_classes : 2],  # titles
        cosine[:, 0 : 2 * n_classes : 2],  # texts
        linear[:, n_classes : 2 * n_classes],  # centroid
    ]
    return zscore_rows(np.stack(scores, axis=1).astype(np.float64))


def default_weights(n_features: int) -> np.ndarray:
    """Without held-out duplicates to learn from: the sum of the base scorers' z-scores."""
    weights = np.zeros(n_features)
    weights[list(BASE_SCORERS)] = 1.0
    return weights


def final_scores(zscores: np.ndarray, config: FaqModelConfig, weights: np.ndarray) -> np.ndarray:
    first = rerank(zscores, zscores[:, BASE_SCORERS].sum(axis=1), config.first_candidates, weights[0])
    return rerank(zscores, first, config.second_candidates, weights[1])


@dataclass
class FaqModel:
    """A fitted matcher. ``scores`` ranks the originals; ``probabilities`` is its calibrated form."""

    originals: list[Original]
    features: TextFeatures
    scorers: dict  # fit_scorers' arrays
    rerank_weights: np.ndarray  # (2, features): first and second stage
    config: FaqModelConfig
    temperature: float = 1.0
    # The training documents' words, whose character n-grams are cached when the model loads; a model saved
    # without them warms up with its originals' words.
    known_words: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stacked = stacked_projection(self.scorers)
        if self.known_words:
            self.features.warm(self.known_words)
        else:
            texts = [clean_text(text) for original in self.originals for text in (original.text, original.title)]
            self.features.warm(frequent_words(texts))

    def scores(self, questions: list[str]) -> np.ndarray:
        """Uncalibrated scores, one row per question and one column per original (higher is better)."""
        queries = self.features.transform([clean_text(question) for question in questions])
        return final_scores(
            zscores(self.scorers, queries, self.config.kernel_gammas, self._stacked), self.config, self.rerank_weights
        )

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

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything but the originals: plain numeric arrays (sparse matrices as their three arrays and shape),
        and JSON fields. Neither needs pickle to be read back."""
        arrays, fields = self.features.to_state()
        arrays["rerank_weights"] = self.rerank_weights
        sparse = sorted(name for name, value in self.scorers.items() if sp.issparse(value))
        for name, value in self.scorers.items():
            if name in sparse:
                for part in SPARSE_PARTS:
                    arrays[f"scorers.{name}.{part}"] = np.asarray(getattr(value, part))
            else:
                arrays[f"scorers.{name}"] = value
        fields |= {
            "config": asdict(self.config),
            "temperature": self.temperature,
            "sparse_scorers": sparse,
            "known_words": self.known_words,
        }
        return arrays, fields

    @classmethod
    def from_state(cls, originals: list[Original], arrays: dict[str, np.ndarray], fields: dict) -> "FaqModel":
        scorers = {
            name.removeprefix("scorers."): value
            for name, value in arrays.items()
            if name.startswith("scorers.") and name.count(".") == 1
        }
        for name in fields["sparse_scorers"]:
            data, indices, indptr, shape = (arrays[f"scorers.{name}.{part}"] for part in SPARSE_PARTS)
            scorers[name] = sp.csr_matrix((data, indices, indptr), shape=tuple(shape))
        return cls(
            originals=originals,
            features=TextFeatures.from_state(arrays, fields),
            scorers=scorers,
            rerank_weights=arrays["rerank_weights"],
            config=FaqModelConfig(**fields["config"]),
            temperature=float(fields["temperature"]),
            known_words=_known_words(fields.get("known_words", [])),
        )


def _known_words(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(word, str) for word in value):
        raise ValueError("known_words must be a list of strings")
    return value


def frequent_words(texts: list[str]) -> list[str]:
    """The texts' words, most frequent first, at most KNOWN_WORDS_KEPT: what a loaded model caches first."""
    counts = Counter(word for text in texts for word in tokens(text))
    return [word for word, _ in counts.most_common(KNOWN_WORDS_KEPT)]


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


def _fit_rerank_weights(
    documents: sp.csr_matrix, labels: np.ndarray, n_classes: int, config: FaqModelConfig
) -> np.ndarray:
    """Both stages' weights, from scores of each training duplicate by scorers fitted without it."""
    duplicates = np.arange(2 * n_classes, len(labels))
    n_features = 2 * N_SCORERS + 1
    per_class = np.bincount(labels[duplicates], minlength=n_classes)
    folds = min(config.inner_folds, per_class.min())
    if folds < 2:
        return np.stack([default_weights(n_features)] * 2)
    held_out = np.zeros((len(duplicates), N_SCORERS, n_classes))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for train, test in splitter.split(duplicates, labels[duplicates]):
        keep = np.r_[np.arange(2 * n_classes), duplicates[train]]
        scorers = fit_scorers(documents[keep], labels[keep], n_classes, config)
        held_out[test] = zscores(scorers, documents[duplicates[test]], config.kernel_gammas)
    truth = labels[duplicates]
    weights = []
    order = held_out[:, BASE_SCORERS].sum(axis=1)
    for n_candidates in (config.first_candidates, config.second_candidates):
        n_candidates = min(n_candidates, n_classes)
        candidates = top_columns(order, n_candidates)
        features = candidate_features(held_out, candidates)
        weights.append(fit_conditional_logit(features, candidates == truth[:, None], config.rerank_l2))
        order = rerank(held_out, order, n_candidates, weights[-1])
    return np.stack(weights)


def fit_model(dataset: FaqDataset, config: FaqModelConfig | None = None) -> FaqModel:
    config = config or FaqModelConfig()
    texts, labels = _training_documents(dataset)
    features = TextFeatures.fit(
        texts, config.word_max_df, (config.char_ngram_min, config.char_ngram_max), config.char_max_df
    )
    documents = features.transform(texts)
    n_classes = len(dataset.originals)
    return FaqModel(
        originals=dataset.originals,
        features=features,
        scorers=fit_scorers(documents, labels, n_classes, config),
        rerank_weights=_fit_rerank_weights(documents, labels, n_classes, config),
        config=config,
        known_words=frequent_words(texts),
    )
