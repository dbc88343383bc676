"""Training, evaluation: scores and true originals in, ranking quality out (where the true original lands
among all originals), plus cross-validation and the softmax temperature's calibration."""

from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from deployments.faq.data import Duplicate, FaqDataset
from deployments.faq.training.folds import duplicate_folds

Scorer = Callable[[list[str]], np.ndarray]


def true_ranks(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1-based rank of each row's true column; tied scores share the average of their ranks."""
    true_scores = scores[np.arange(len(truth)), truth][:, None]
    higher = (scores > true_scores).sum(axis=1)
    tied_others = (scores == true_scores).sum(axis=1) - 1
    return higher + 1 + tied_others / 2


def ranking_metrics(ranks: np.ndarray) -> dict[str, float]:
    return {
        "acc_at_1": float(np.mean(ranks <= 1)),
        "acc_at_2": float(np.mean(ranks <= 2)),
        "acc_at_3": float(np.mean(ranks <= 3)),
        "mean_rank": float(np.mean(ranks)),
        "n": len(ranks),
    }


def label_indices(dataset: FaqDataset, duplicates: Sequence[Duplicate]) -> np.ndarray:
    column = {original.answer_id: index for index, original in enumerate(dataset.originals)}
    return np.array([column[duplicate.answer_id] for duplicate in duplicates], dtype=np.int64)


def evaluate(score: Scorer, dataset: FaqDataset, duplicates: Sequence[Duplicate]) -> dict[str, float]:
    """Rank every duplicate against all originals of ``dataset`` with ``score``."""
    scores = score([duplicate.text for duplicate in duplicates])
    return ranking_metrics(true_ranks(scores, label_indices(dataset, duplicates)))


def out_of_fold_scores(
    fit: Callable[[FaqDataset], Scorer], dataset: FaqDataset, folds: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores of each held-out duplicate from a model that never saw it, their true columns, and the number
    of folds used (folds.py: which duplicates are held out; none, and 0 folds, when no original has two)."""
    truth = label_indices(dataset, dataset.duplicates)
    splits = duplicate_folds(truth, folds, seed) if len(truth) else []
    scores, held_out = [], []
    for train, test in splits:
        scorer = fit(FaqDataset(dataset.originals, [dataset.duplicates[i] for i in train]))
        scores.append(scorer([dataset.duplicates[i].text for i in test]))
        held_out.append(test)
    if not splits:
        return np.zeros((0, len(dataset.originals))), truth[:0], 0
    order = np.argsort(np.concatenate(held_out))  # back in the duplicates' order
    return np.concatenate(scores)[order], truth[np.sort(np.concatenate(held_out))], len(splits)


def fit_temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """The softmax temperature that minimises the negative log-likelihood of held-out answers."""

    def nll(log_temperature: float) -> float:
        log_probabilities = log_softmax(scores / np.exp(log_temperature), axis=1)
        return float(-log_probabilities[np.arange(len(truth)), truth].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-7.0, 5.0), method="bounded").x))


def expected_calibration_error(probabilities: np.ndarray, truth: np.ndarray, bins: int = 10) -> float:
    """Gap between top-1 confidence and top-1 accuracy, averaged over confidence bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    bin_of = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = bin_of == b
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(error)
