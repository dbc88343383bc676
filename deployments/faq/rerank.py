"""A listwise re-ranker: a conditional logit (softmax over each question's candidates, one weight per feature).

Why listwise: what matters is which candidate beats the others for the same question, not a calibrated score
per pair, and one weight vector over a handful of features (each scorer's z-score, its margin over the best
other candidate, the candidate's position) learns that from a few hundred held-out duplicates without
overfitting. Fitting is numpy/scipy, scoring a compiled loop (kernels.py); the weights are one small array,
saved as such (no pickle).
"""

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from deployments.faq.kernels import rerank_rows


def _picked_and_margins(zscores: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(questions, candidates, scorers) z-scores of the candidates, and each one's margin over the best other."""
    # Advanced indices around a slice put their dimensions first: (questions, candidates, scorers), no transpose.
    picked = zscores[np.arange(len(candidates))[:, None], :, candidates]
    if picked.shape[1] > 1:
        # The two highest per scorer; partition (not a full sort) puts exactly them, in order, at the end.
        top_two = np.partition(picked, picked.shape[1] - 2, axis=1)[:, -2:, :]
    else:
        top_two = np.repeat(picked, 2, axis=1)
    margin = picked - np.where(picked >= top_two[:, 1:], top_two[:, :1], top_two[:, 1:])
    return picked, margin


def _log_positions(n_candidates: int) -> np.ndarray:
    return np.log1p(np.arange(n_candidates))


def candidate_features(zscores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(questions, candidates, features): each z-score, its margin over the best other candidate, log position."""
    picked, margin = _picked_and_margins(zscores, candidates)
    position = np.broadcast_to(_log_positions(candidates.shape[1])[None, :, None], (*candidates.shape, 1))
    return np.concatenate([picked, margin, position], axis=2)


def top_columns(scores: np.ndarray, n: int) -> np.ndarray:
    """Columns of each row's ``n`` highest scores, best first (ties: the lower column first, as in ``rerank``)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :n]


def rerank(zscores: np.ndarray, order: np.ndarray, n_candidates: int, weights: np.ndarray) -> np.ndarray:
    """Scores with the top ``n_candidates`` of ``order`` re-scored by ``weights`` (over ``candidate_features``),
    the rest kept below them in their order. A compiled loop: see kernels.py for why."""
    as_float = [np.ascontiguousarray(array, dtype=np.float64) for array in (zscores, order, weights)]
    return rerank_rows(as_float[0], as_float[1], n_candidates, as_float[2])


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
