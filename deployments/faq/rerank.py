"""A listwise re-ranker: a conditional logit (softmax over each question's candidates, one weight per feature).

Why listwise: what matters is which candidate beats the others for the same question, not a calibrated score
per pair, and one weight vector over a handful of features (each scorer's z-score, its margin over the best
other candidate, the candidate's position) learns that from a few hundred held-out duplicates without
overfitting. Pure numpy/scipy, and its weights are one small array, saved as such (no pickle).
"""

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax


def candidate_features(zscores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(questions, candidates, features): each z-score, its margin over the best other candidate, log position."""
    picked = np.take_along_axis(zscores, candidates[:, None, :], axis=2).transpose(0, 2, 1)
    top_two = np.sort(picked, axis=1)[:, -2:, :] if picked.shape[1] > 1 else np.repeat(picked, 2, axis=1)
    margin = picked - np.where(picked >= top_two[:, 1:], top_two[:, :1], top_two[:, 1:])
    position = np.broadcast_to(np.log1p(np.arange(candidates.shape[1]))[None, :, None], (*candidates.shape, 1))
    return np.concatenate([picked, margin, position], axis=2)


def top_columns(scores: np.ndarray, n: int) -> np.ndarray:
    """Columns of each row's ``n`` highest scores, best first."""
    if n < scores.shape[1]:
        part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    picked = np.take_along_axis(scores, part, axis=1)
    return np.take_along_axis(part, np.argsort(-picked, axis=1, kind="stable"), axis=1)


def rerank(zscores: np.ndarray, order: np.ndarray, n_candidates: int, weights: np.ndarray) -> np.ndarray:
    """Scores with the top ``n_candidates`` of ``order`` re-scored by ``weights``, the rest kept below them."""
    n_candidates = min(n_candidates, order.shape[1])
    candidates = top_columns(order, n_candidates)
    rescored = candidate_features(zscores, candidates) @ weights
    rows = np.arange(len(order))[:, None]
    rest = order.copy()
    rest[rows, candidates] = -np.inf
    # Shift the others so the best of them sits one below the worst candidate; their order is kept.
    shift = np.minimum(rescored.min(axis=1, keepdims=True) - 1.0 - rest.max(axis=1, keepdims=True), 0.0)
    scores = order + np.where(np.isfinite(shift), shift, 0.0)
    scores[rows, candidates] = rescored
    return scores


def fit_conditional_logit(features: np.ndarray, is_true: np.ndarray, l2: float) -> np.ndarray:
    """Weights maximising the softmax likelihood of the true candidate (questions without it are left out)."""
    found = is_true.any(axis=1)
    features, truth = features[found], is_true[found].argmax(axis=1)
    flat = features.reshape(-1, features.shape[-1])
    scale = flat.std(axis=0) + 1e-9
    standard = (features - flat.mean(axis=0)) / scale
    rows = np.arange(len(truth))

    def loss(weights: np.ndarray) -> tuple[float, np.ndarray]:
        log_p = log_softmax(standard @ weights, axis=1)
        expected = np.einsum("qn,qnf->qf", np.exp(log_p), standard)
        gradient = -(standard[rows, truth] - expected).mean(axis=0) + 2 * l2 * weights
        return float(-log_p[rows, truth].mean() + l2 * weights @ weights), gradient

    return minimize(loss, np.zeros(standard.shape[-1]), jac=True, method="L-BFGS-B").x / scale
