import numpy as np
import pytest

from deployments.faq.training.evaluate import expected_calibration_error, fit_temperature, ranking_metrics, true_ranks


def test_ranks_count_ties_as_average():
    scores = np.array([[0.9, 0.5, 0.1], [0.5, 0.5, 0.5], [0.2, 0.7, 0.7]])
    assert true_ranks(scores, np.array([0, 1, 2])).tolist() == [1.0, 2.0, 1.5]


def test_metrics():
    metrics = ranking_metrics(np.array([1.0, 2.0, 3.0, 6.0]))
    assert metrics == {"acc_at_1": 0.25, "acc_at_2": 0.5, "acc_at_3": 0.75, "mean_rank": 3.0, "n": 4}


def test_temperature_softens_overconfident_scores():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=400)
    scores = rng.normal(size=(400, 5))
    scores[np.arange(400), truth] += 1.0  # right 55% of the time, but scaled to look certain below
    assert fit_temperature(scores * 20, truth) > 5


def test_calibration_error_of_perfect_and_overconfident_predictions():
    truth = np.array([0, 1, 0, 1])
    perfect = np.eye(2)[truth]
    assert expected_calibration_error(perfect, truth) == pytest.approx(0.0)
    always_zero = np.tile([1.0, 0.0], (4, 1))
    assert expected_calibration_error(always_zero, truth) == pytest.approx(0.5)
