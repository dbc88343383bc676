"""Stage 3, scorers: a view's TF-IDF rows of questions in, (questions, scorers, originals) z-scores out, and
the fitting of those scorers on the training documents (as plain arrays).

Every original is a class; its training documents are its own text, its title and its known duplicates.
- kernel ridge over the training documents with exponential cosine kernels of one or more widths: a question
  close to any one phrasing of an original scores high for it, even when the others use other words;
- linear kernel ridge, and naive Bayes (evidence from every word of every phrasing adds up);
- a supervised projection: ridge regression, in the top singular directions of the documents, from each
  document to its class centroid, so words that co-occur within a class's phrasings pull together;
- the mean and max cosine to the class's duplicates, the cosine to its title, to its text, to its centroid.
Each scorer is z-scored per question over the originals, so the re-ranker can weigh them against each other.
"""

from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from deployments.faq.config import FaqModelConfig
from deployments.faq.features import Rows
from deployments.faq.scoring_loops import sparse_product, view_zscores

# The fitted arrays kernels.view_zscores reads, in its order.
VIEW_ZSCORES_ARRAYS = (
    "kernel_gammas",
    "kernel_coef",
    "nb_class_bias",
    "linear_maps",
    "projection_offset",
    "projection_targets",
    "duplicate_order",
    "duplicate_starts",
    "duplicate_classes",
    "duplicate_counts",
    "class_norms",
)


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes)[labels]


def fit_scorers(
    documents: sp.csr_matrix, labels: np.ndarray, n_originals: int, config: FaqModelConfig, gammas: tuple[float, ...]
) -> dict:
    """The fitted scorers, as arrays, with a kernel ridge for each of the kernel widths ``gammas``. Documents 2i
    and 2i+1 are original i's text and title; the rest duplicates.

    Dense maps are stored as float32: scoring one question reads them all, so their size sets its time.
    """
    one_hot = _one_hot(labels, n_originals)
    gram = (documents @ documents.T).toarray()
    identity = np.eye(len(labels))
    kernel_coef = np.stack(
        [
            scipy.linalg.solve(np.exp(g * (gram - 1.0)) + config.kernel_ridge_alpha * identity, one_hot, assume_a="pos")
            for g in gammas
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
    # The projected documents are combinations of the (centred) class centroids, and so is the offset: all of
    # it lives in the centroids' span (at most one dimension per class), where it is kept, exactly: the map a
    # question is multiplied by shrinks from rank (500) to classes (182) columns.
    span = np.linalg.svd(centroids, full_matrices=False)[2]
    span = span[: np.linalg.matrix_rank(centroids)].T
    projection_offset = targets.mean(axis=0) - coordinates.mean(axis=0) @ ridge
    # Multinomial naive Bayes: log P(f|c) = log(count + alpha) - log(class total) = log1p(count/alpha) + bias(c),
    # so only the sparse counts are kept, never the dense (classes x features) table.
    counts = (sp.csr_matrix(one_hot).T @ documents).tocsr()  # each class's summed documents
    class_totals = np.asarray(counts.sum(axis=1)).ravel() + config.naive_bayes_alpha * documents.shape[1]
    counts.data = np.log1p(counts.data / config.naive_bayes_alpha)
    duplicate_labels = labels[2 * n_originals :]
    duplicate_order = np.argsort(duplicate_labels, kind="stable")
    return {
        "kernel_gammas": np.asarray(gammas, dtype=np.float32),
        "documents_t": documents.T.tocsr(),
        "kernel_coef": kernel_coef.astype(np.float32),
        # Everything dense and linear in the cosines, applied in one matrix product: linear kernel ridge, projection.
        "linear_maps": np.hstack([linear_coef, embed @ ridge @ span]).astype(np.float32),
        "projection_offset": (projection_offset @ span).astype(np.float32),
        "projection_targets": (span.T @ normalize(centroids).T).astype(np.float32),
        "nb_log_ratio": counts.T.tocsr(),
        "nb_class_bias": np.log(config.naive_bayes_alpha) - np.log(class_totals),
        # Norm of the sum of each class's documents: the cosine to a centroid is a sum of cosines over this.
        "class_norms": np.sqrt(np.maximum(((gram @ one_hot) * one_hot).sum(axis=0), 1e-12)).astype(np.float32),
        # The duplicates sorted by class, and where each class's run starts, for sums and maxima over a class.
        "duplicate_order": 2 * n_originals + duplicate_order,
        "duplicate_starts": np.flatnonzero(np.diff(np.r_[-1, duplicate_labels[duplicate_order]])),
        "duplicate_classes": np.unique(duplicate_labels),
        "duplicate_counts": np.bincount(duplicate_labels, minlength=n_originals).astype(np.float32),
        "document_labels": labels,
    }


class Stacked(NamedTuple):
    """A CSR matrix as bare arrays, so that its values and column indices can be narrower than scipy allows."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple[int, int]


def stacked_projection(scorers: dict) -> Stacked:
    """One sparse product with this gives both the cosines to every document and the naive Bayes sums.

    Stored as float32 values and, where the columns allow it, int16 indices: a question reads tens of
    thousands of its entries from memory, so half the bytes is a tenth less scoring time (measured).
    """
    stacked = sp.hstack([scorers["documents_t"], scorers["nb_log_ratio"]]).tocsr()
    index_type = np.int16 if stacked.shape[1] <= np.iinfo(np.int16).max else np.int32
    return Stacked(stacked.indptr, stacked.indices.astype(index_type), stacked.data.astype(np.float32), stacked.shape)


def zscores(scorers: dict, queries: sp.csr_matrix | Rows, stacked: Stacked | None = None) -> np.ndarray:
    """(questions, n_scorers, originals): each scorer's scores, z-scored per question."""
    return zscores_and_cosines(scorers, queries, stacked)[0]


def zscores_and_cosines(
    scorers: dict, queries: sp.csr_matrix | Rows, stacked: Stacked | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The z-scores, and the cosines of each question to every training document that they came from."""
    stacked = stacked if stacked is not None else stacked_projection(scorers)
    product = sparse_product(
        queries.indptr, queries.indices, queries.data, stacked.indptr, stacked.indices, stacked.data, stacked.shape[1]
    )
    row_sums = np.diff(np.r_[0.0, np.cumsum(queries.data)][queries.indptr])  # scipy's sum is slower
    return view_zscores(
        product,
        scorers["documents_t"].shape[1],
        row_sums,
        *(scorers[name] for name in VIEW_ZSCORES_ARRAYS),
    )
