"""Stage 3, dense scorers (optional): sentence embeddings of questions in (encoder.py), (questions, scorers,
originals) z-scores out, beside the TF-IDF views' and fed to the same re-ranker; and their fitting.

The training documents are the TF-IDF views' (each original's text and title, then the duplicates) embedded
once at training. Per original, a question is scored by its cosine to the original's text, to its title, to
its nearest and to its average phrasing, to its centroid (the normalised mean of its phrasings' embeddings:
the encoder-alone baseline), and by kernel ridge over the phrasings (an exponential cosine kernel), which
weighs a phrasing by how much it says that the others of its original do not.
"""

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.linalg

DENSE_SCORERS = ("text", "title", "nearest", "mean", "centroid", "kernel")
CENTROID = DENSE_SCORERS.index("centroid")
DENSE_ARRAYS = (
    "documents",
    "document_order",
    "class_starts",
    "class_counts",
    "centroids",
    "kernel_coef",
    "kernel_gamma",
)
# The kernel ridge's width and ridge (cosine kernel exp(gamma * (cosine - 1)); measured in faq_dense.md).
KERNEL_GAMMA = 10.0
KERNEL_ALPHA = 0.3


class Encoder(Protocol):
    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray: ...


def fit_dense_scorers(
    embeddings: np.ndarray, labels: np.ndarray, n_originals: int, gamma: float, alpha: float
) -> dict[str, np.ndarray]:
    """The fitted arrays (float32 where scoring reads them). Documents 2i and 2i+1 are original i's text and
    title: every original has at least those two, so no class is empty."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    one_hot = np.eye(n_originals)[labels]
    kernel = np.exp(gamma * (embeddings @ embeddings.T - 1.0)) + alpha * np.eye(len(labels))
    kernel_coef = scipy.linalg.solve(kernel, one_hot, assume_a="pos")
    sums = one_hot.T @ embeddings
    order = np.argsort(labels, kind="stable")
    return {
        "documents": embeddings.astype(np.float32),
        "document_order": order,
        "class_starts": np.flatnonzero(np.diff(np.r_[-1, labels[order]])),
        "class_counts": np.bincount(labels, minlength=n_originals).astype(np.float32),
        "centroids": (sums / np.linalg.norm(sums, axis=1, keepdims=True).clip(1e-12)).astype(np.float32),
        "kernel_coef": kernel_coef.astype(np.float32),
        "kernel_gamma": np.asarray(gamma, dtype=np.float32),
    }


def _zscore(scores: np.ndarray) -> np.ndarray:
    return (scores - scores.mean(axis=-1, keepdims=True)) / (scores.std(axis=-1, keepdims=True) + 1e-9)


def dense_zscores(scorers: dict[str, np.ndarray], questions: np.ndarray) -> np.ndarray:
    """(questions, len(DENSE_SCORERS), originals), each scorer z-scored per question over the originals."""
    n_originals = len(scorers["centroids"])
    cosines = questions.astype(np.float32) @ scorers["documents"].T
    by_class = cosines[:, scorers["document_order"]]
    starts = scorers["class_starts"]
    raw = np.stack(
        [
            cosines[:, 0 : 2 * n_originals : 2],
            cosines[:, 1 : 2 * n_originals : 2],
            np.maximum.reduceat(by_class, starts, axis=1),
            np.add.reduceat(by_class, starts, axis=1) / scorers["class_counts"],
            questions.astype(np.float32) @ scorers["centroids"].T,
            np.exp(scorers["kernel_gamma"] * (cosines - 1.0)) @ scorers["kernel_coef"],
        ],
        axis=1,
    )
    return _zscore(raw.astype(np.float64))


class MemoizedEncoder:
    """An encoder that encodes each distinct text once: training embeds the same documents in every
    cross-validation fit, and an embedding depends on its text alone. For training only (unbounded)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.vectors: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        missing = sorted(set(texts) - self.vectors.keys())
        if missing:
            self.vectors.update(zip(missing, self.encoder.encode(missing, batch_size), strict=True))
        if not texts:
            return self.encoder.encode([])
        return np.stack([self.vectors[text] for text in texts])


@dataclass(frozen=True)
class LoadedEncoder:
    """An encoder and what it is: the reference it was loaded from and its files' sha256 (encoder.py)."""

    encoder: Encoder
    reference: str
    files_sha256: dict[str, str]


@dataclass
class DenseScorers:
    """A fitted dense part of the model: the encoder, what it is (reference and files' sha256), the arrays."""

    encoder: Encoder
    reference: str
    files_sha256: dict[str, str]
    arrays: dict[str, np.ndarray]

    def zscores(self, cleaned: list[str]) -> np.ndarray:
        return dense_zscores(self.arrays, self.encoder.encode(cleaned))
