"""Stage 4, re-ranking: every scorer's z-scores in, one score per original out. A listwise re-ranker: a
conditional logit (softmax over each question's candidates, one weight per feature).

Why listwise: what matters is which candidate beats the others for the same question, not a calibrated score
per pair, and one weight vector over a handful of features (each scorer's z-score, its margin over the best
other candidate, the candidate's position) learns that from a few hundred held-out duplicates without
overfitting. Each original also gets a small, strongly regularised bias of its own: some originals draw the
scorers' attention from questions about others (long, generic texts), some are under-rated (short ones), and
how much shows in the held-out duplicates. Fitting is numpy/scipy, scoring a compiled loop
(scoring_loops.py); the weights and biases are two small arrays, saved as such (no pickle).
"""

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from deployments.faq.scoring_loops import rerank_rows


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


def rerank(
    zscores: np.ndarray, order: np.ndarray, n_candidates: int, weights: np.ndarray, class_bias: np.ndarray
) -> np.ndarray:
    """Scores with the top ``n_candidates`` of ``order`` re-scored by ``weights`` (over ``candidate_features``)
    plus their ``class_bias``, the rest kept below them in their order. A compiled loop: scoring_loops.py says
    why."""
    arrays = [np.ascontiguousarray(array, dtype=np.float64) for array in (zscores, order, weights, class_bias)]
    return rerank_rows(arrays[0], arrays[1], n_candidates, arrays[2], arrays[3])


def fit_conditional_logit(
    features: np.ndarray, candidates: np.ndarray, truth: np.ndarray, n_classes: int, l2: float, bias_l2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Feature weights and per-class biases maximising the softmax likelihood of each question's true class
    among its ``candidates`` (questions whose candidates miss it are left out). ``l2`` applies to the weights
    of the standardised features, ``bias_l2`` to the biases. A class that is never the true one here (an
    original with no held-out duplicate) keeps a bias of 0: being a wrong candidate is no evidence against it
    without a right one beside it."""
    is_true = candidates == truth[:, None]
    found = is_true.any(axis=1)
    features, candidates, truth = features[found], candidates[found], is_true[found].argmax(axis=1)
    flat = features.reshape(-1, features.shape[-1])
    scale = flat.std(axis=0) + 1e-9
    # The mean shifts every candidate of a question alike, which a softmax ignores: only the scale is undone.
    standard = (features - flat.mean(axis=0)) / scale
    rows = np.arange(len(truth))
    true_counts = np.bincount(candidates[rows, truth], minlength=n_classes)
    n_features = standard.shape[-1]

    def loss(parameters: np.ndarray) -> tuple[float, np.ndarray]:
        weights, bias = parameters[:n_features], parameters[n_features:]
        log_p = log_softmax(standard @ weights + bias[candidates], axis=1)
        p = np.exp(log_p)
        weight_gradient = -(standard[rows, truth] - np.einsum("qn,qnf->qf", p, standard)).mean(axis=0)
        bias_gradient = np.bincount(candidates.ravel(), p.ravel(), n_classes) - true_counts
        penalty = l2 * weights @ weights + bias_l2 * bias @ bias
        gradient = np.r_[weight_gradient + 2 * l2 * weights, bias_gradient / len(truth) + 2 * bias_l2 * bias]
        return float(-log_p[rows, truth].mean() + penalty), gradient

    bounds = [(None, None)] * n_features + [(None, None) if count else (0.0, 0.0) for count in true_counts]
    solution = minimize(loss, np.zeros(n_features + n_classes), jac=True, method="L-BFGS-B", bounds=bounds).x
    return solution[:n_features] / scale, solution[n_features:]
