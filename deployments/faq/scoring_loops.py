"""Compiled loops (numba) for stages 2-4 (features, scorers, re-ranking): the steps of scoring a question
that numpy would do in many small calls. Arrays in, arrays out; no state.

Why: scoring one question is, per view, a sparse product, a matrix product per kernel width and one more, then
~30 numpy calls on arrays of a few hundred numbers (z-scores, per-class sums and maxima, re-ranking), each
costing microseconds of overhead for nanoseconds of work. Fused into loops here they cost what their
arithmetic costs; the matrix products stay BLAS calls (numba's ``np.dot``). The same functions serve training
(out-of-fold scores), batches and single questions, so there is one implementation of each step.

``cache=True`` keeps the machine code beside this file, or in NUMBA_CACHE_DIR (numba_cache.py, seeded from the
image's build: numba_seed.py): the first import on a machine compiles for ~10 s, later ones load in well under a
second (benchmarks/results/faq_numba.md: what the loops save, and that a seeded replica compiles nothing).

``nogil=True``: the loops let go of the GIL while they run, so the FAQ replica's event loop takes and answers calls
(gRPC) while its scoring thread computes a chunk. Side by side against FastAPI with 2 workers, three pairs of
runs alternating (benchmarks/results/faq_nogil.md): 8% more requests/s at c=16 and 12-16% more at c=64 (ratio to
the peer 0.94-1.17 against 0.82-0.93), and 0.2-0.7 ms more at c=1 (the thread waits to take the GIL back).
"""

import numpy as np
from numba import njit

from deployments.faq.numba_cache import seed_numba_cache

seed_numba_cache()  # before the decorators below look for cached machine code

SCORERS_BESIDE_KERNELS = 8  # view_zscores' linear kernel, naive Bayes, projection and 5 document cosines


@njit(cache=True, nogil=True)
def tfidf_weights(columns: np.ndarray, counts: np.ndarray, idf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A text's distinct columns (sorted) and their unit-norm sublinear TF-IDF weights, (1 + log count) * idf,
    from (column, count) pairs in which a column may repeat."""
    distinct = np.empty_like(columns)
    totals = np.zeros(len(columns))
    n = 0
    for k in np.argsort(columns):
        if n == 0 or distinct[n - 1] != columns[k]:
            distinct[n] = columns[k]
            n += 1
        totals[n - 1] += counts[k]
    weights = np.empty(n)
    squares = 0.0
    for k in range(n):
        weights[k] = (1.0 + np.log(totals[k])) * idf[distinct[k]]
        squares += weights[k] ** 2
    return distinct[:n], weights / np.sqrt(squares) if n else weights


@njit(cache=True, nogil=True)
def tfidf_row(
    word_columns: np.ndarray,
    word_counts: np.ndarray,
    word_idf: np.ndarray,
    char_columns: np.ndarray,
    char_counts: np.ndarray,
    char_idf: np.ndarray,
    char_offset: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One text's row: its word block and its character block (columns shifted by ``char_offset``), each of
    unit norm, side by side and scaled by 1 / sqrt(non-empty blocks) so that the row has unit norm."""
    words, word_weights = tfidf_weights(word_columns, word_counts, word_idf)
    chars, char_weights = tfidf_weights(char_columns, char_counts, char_idf)
    blocks = (len(words) > 0) + (len(chars) > 0)
    scale = 1.0 / np.sqrt(blocks) if blocks else 1.0
    columns = np.concatenate((words, (chars + char_offset).astype(words.dtype)))
    return columns, np.concatenate((word_weights, char_weights)) * scale


@njit(cache=True, nogil=True)
def sparse_product(
    q_indptr: np.ndarray,
    q_indices: np.ndarray,
    q_data: np.ndarray,
    m_indptr: np.ndarray,
    m_indices: np.ndarray,
    m_data: np.ndarray,
    n_columns: int,
) -> np.ndarray:
    """Dense (questions, n_columns) product of CSR questions with a CSR matrix: each question's non-zeros
    add their rows of the matrix into one dense row (scipy builds a sparse result first, ~3x slower here)."""
    out = np.zeros((len(q_indptr) - 1, n_columns))
    for row in range(len(q_indptr) - 1):
        for k in range(q_indptr[row], q_indptr[row + 1]):
            feature, weight = q_indices[k], q_data[k]
            for p in range(m_indptr[feature], m_indptr[feature + 1]):
                out[row, m_indices[p]] += weight * m_data[p]
    return out


@njit(cache=True, nogil=True)
def zscore_rows(scores: np.ndarray) -> np.ndarray:
    """(questions, scorers, originals) scores z-scored over the originals, in place (a constant row -> 0)."""
    n = scores.shape[2]
    for question in range(scores.shape[0]):
        for scorer in range(scores.shape[1]):
            row = scores[question, scorer]
            total = squares = 0.0
            for value in row:
                total += value
            mean = total / n
            for value in row:
                squares += (value - mean) ** 2
            spread = np.sqrt(squares / n)
            scale = 1.0 / spread if spread > 0 else 1.0
            for k in range(n):
                row[k] = (row[k] - mean) * scale
    return scores


@njit(cache=True, nogil=True)
def class_sum_max(
    cosine: np.ndarray, order: np.ndarray, starts: np.ndarray, classes: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(questions, classes) sum and maximum of the cosines over each class's documents (``order`` grouped by
    class, each group starting at ``starts``); 0 for a class without any."""
    sums = np.zeros((cosine.shape[0], n_classes), dtype=cosine.dtype)
    maxima = np.zeros((cosine.shape[0], n_classes), dtype=cosine.dtype)
    for question in range(cosine.shape[0]):
        for group in range(len(classes)):
            end = starts[group + 1] if group + 1 < len(classes) else len(order)
            total, best = 0.0, -np.inf
            for k in range(starts[group], end):
                value = cosine[question, order[k]]
                total += value
                best = max(best, value)
            sums[question, classes[group]] = total
            maxima[question, classes[group]] = best
    return sums, maxima


@njit(cache=True, nogil=True)
def rerank_rows(
    zscores: np.ndarray, order: np.ndarray, n_candidates: int, weights: np.ndarray, class_bias: np.ndarray
) -> np.ndarray:
    """Each row's top ``n_candidates`` of ``order`` (ties: the lower column first) re-scored with ``weights``
    over rerank.candidate_features plus each candidate's ``class_bias``, the other columns shifted to sit below
    the worst candidate, in their order."""
    n_questions, n_scorers, n_classes = zscores.shape
    n_candidates = min(n_candidates, n_classes)
    scores = order.copy()
    rescored = np.empty(n_candidates)
    for question in range(n_questions):
        candidates = np.argsort(-order[question], kind="mergesort")[:n_candidates]
        for j in range(n_candidates):
            rescored[j] = np.log1p(j) * weights[2 * n_scorers] + class_bias[candidates[j]]
        for scorer in range(n_scorers):
            best = second = -np.inf
            for j in range(n_candidates):
                value = zscores[question, scorer, candidates[j]]
                if value > best:
                    best, second = value, best
                elif value > second:
                    second = value
            if n_candidates == 1:
                second = best
            for j in range(n_candidates):
                value = zscores[question, scorer, candidates[j]]
                other_best = second if value >= best else best
                rescored[j] += value * weights[scorer] + (value - other_best) * weights[n_scorers + scorer]
        # The others keep their order, shifted so that the best of them sits one below the worst candidate.
        worst_candidate = np.inf
        for j in range(n_candidates):
            worst_candidate = min(worst_candidate, rescored[j])
            scores[question, candidates[j]] = -np.inf
        rest_best = scores[question].max()
        shift = min(worst_candidate - 1.0 - rest_best, 0.0) if np.isfinite(rest_best) else 0.0
        for column in range(n_classes):
            scores[question, column] += shift
        for j in range(n_candidates):
            scores[question, candidates[j]] = rescored[j]
    return scores


@njit(cache=True, nogil=True)
def view_zscores(
    product: np.ndarray,
    n_documents: int,
    row_sums: np.ndarray,
    kernel_gammas: np.ndarray,
    kernel_coef: np.ndarray,
    nb_class_bias: np.ndarray,
    linear_maps: np.ndarray,
    projection_offset: np.ndarray,
    projection_targets: np.ndarray,
    duplicate_order: np.ndarray,
    duplicate_starts: np.ndarray,
    duplicate_classes: np.ndarray,
    duplicate_counts: np.ndarray,
    class_norms: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Every scorer of scorers.py from a question's sparse product (cosines to the documents, then naive Bayes
    sums), z-scored: (questions, kernels + SCORERS_BESIDE_KERNELS, classes), and the cosines as float32. The
    matrix products are BLAS calls; everything between them, a few dozen numpy calls on short arrays, is these
    loops."""
    n_questions, n_kernels, n_classes = product.shape[0], len(kernel_gammas), kernel_coef.shape[2]
    cosine = product[:, :n_documents].astype(np.float32)
    out = np.empty((n_questions, n_kernels + SCORERS_BESIDE_KERNELS, n_classes))
    scaled = np.empty_like(cosine)
    for g in range(n_kernels):
        for question in range(n_questions):
            for document in range(n_documents):
                scaled[question, document] = np.exp(kernel_gammas[g] * (cosine[question, document] - 1.0))
        kernel = np.dot(scaled, kernel_coef[g])
        for question in range(n_questions):
            for c in range(n_classes):
                out[question, g, c] = kernel[question, c]
    linear = np.dot(cosine, linear_maps)  # linear kernel ridge, then the projection (in the centroids' span)
    sums, maxima = class_sum_max(cosine, duplicate_order, duplicate_starts, duplicate_classes, n_classes)
    for question in range(n_questions):
        projected = linear[question, n_classes:] + projection_offset
        norm = np.sqrt(np.sum(projected * projected))
        if norm > 0:
            projected /= norm
        projection = np.dot(projected, projection_targets)
        for c in range(n_classes):
            text, title = cosine[question, 2 * c], cosine[question, 2 * c + 1]
            out[question, n_kernels, c] = linear[question, c]
            out[question, n_kernels + 1, c] = product[question, n_documents + c] + row_sums[question] * nb_class_bias[c]
            out[question, n_kernels + 2, c] = projection[c]
            out[question, n_kernels + 3, c] = sums[question, c] / max(duplicate_counts[c], 1.0)  # mean over duplicates
            out[question, n_kernels + 4, c] = maxima[question, c]
            out[question, n_kernels + 5, c] = title
            out[question, n_kernels + 6, c] = text
            out[question, n_kernels + 7, c] = (text + title + sums[question, c]) / class_norms[c]  # centroid
    return zscore_rows(out), cosine
