"""The learning-curve benchmark ranks each held-out duplicate with models that never saw it; with 3 of 4 folds
known it reproduces the trainer's own cross-validation exactly (same folds, same models)."""

import numpy as np

from benchmarks.faq_learning_curve import FOLDS, fold_of_each_duplicate, held_out_ranks
from deployments.faq.data import load_jsonl
from deployments.faq.demo import DEMO_FAQ_PATH
from deployments.faq.training.evaluate import label_indices, ranking_metrics
from deployments.faq.training.train import train


def test_three_known_folds_give_the_trainers_cross_validation():
    dataset = load_jsonl(DEMO_FAQ_PATH)
    truth = label_indices(dataset, dataset.duplicates)
    ranks = held_out_ranks(dataset, truth, fold_of_each_duplicate(truth, seed=1), known=FOLDS - 1)
    cross_validation = train(dataset, seed=1).metrics["cross_validation"]
    assert ranking_metrics(ranks) == {key: cross_validation[key] for key in ranking_metrics(ranks)}


def test_every_duplicate_is_ranked_once_per_rotation_that_holds_it_out():
    dataset = load_jsonl(DEMO_FAQ_PATH)
    truth = label_indices(dataset, dataset.duplicates)
    fold = fold_of_each_duplicate(truth, seed=0)
    assert all(np.bincount(fold[truth == label], minlength=FOLDS).tolist() == [1] * FOLDS for label in set(truth))
    assert len(held_out_ranks(dataset, truth, fold, known=2)) == 2 * len(truth)
