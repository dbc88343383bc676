"""The listwise re-ranker's pieces: candidate features, the fast scoring path, re-ordering, fitting."""

import numpy as np

from deployments.faq.rerank import (
    candidate_features,
    fit_conditional_logit,
    rerank,
    top_columns,
)


def test_top_columns_are_each_rows_best_first():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [3.0, 1.0, 2.0, 0.0]])
    assert top_columns(scores, 2).tolist() == [[1, 3], [0, 2]]
    assert top_columns(scores, 4).tolist() == [[1, 3, 2, 0], [0, 2, 1, 3]]


def test_features_are_z_scores_margins_over_the_best_other_and_log_position():
    # One question, two scorers, three originals; candidates in the order 2, 0.
    zscores = np.array([[[1.0, 0.0, 3.0], [5.0, 4.0, 2.0]]])
    features = candidate_features(zscores, np.array([[2, 0]]))
    assert features.shape == (1, 2, 5)
    # Candidate 2: scorer 0 gives 3 (best; the other candidate has 1, so margin +2), scorer 1 gives 2 (vs 5: -3).
    assert features[0, 0].tolist() == [3.0, 2.0, 2.0, -3.0, 0.0]
    assert features[0, 1].tolist() == [1.0, 5.0, -2.0, 3.0, np.log(2.0)]


def test_ties_go_to_the_lower_column_in_both_the_candidates_and_the_reranking():
    zscores = np.zeros((1, 1, 5))
    order = np.array([[1.0, 2.0, 2.0, 2.0, 0.0]])
    assert top_columns(order, 2).tolist() == [[1, 2]]
    scores = rerank(zscores, order, 2, np.array([0.0, 0.0, -1.0]), np.zeros(5))  # the second position loses log(2)
    assert np.argsort(-scores[0], kind="stable").tolist() == [1, 2, 3, 0, 4]


def test_rerank_rescores_the_candidates_and_keeps_the_rest_below_them_in_order():
    rng = np.random.default_rng(1)
    zscores = rng.normal(size=(5, 3, 30))
    order = zscores.sum(axis=1)
    weights = np.r_[-1.0, 0.5, 0.0, np.zeros(3), 0.0]  # the candidates' order changes: scorer 0 counts against
    class_bias = rng.normal(size=30)
    scores = rerank(zscores, order, 6, weights, class_bias)
    candidates = top_columns(order, 6)
    for row in range(5):
        rest = np.setdiff1d(np.arange(30), candidates[row])
        assert scores[row, candidates[row]].min() > scores[row, rest].max()
        assert (np.argsort(scores[row, rest]) == np.argsort(order[row, rest])).all()
        features = candidate_features(zscores[row : row + 1], candidates[row : row + 1])[0]
        np.testing.assert_allclose(scores[row, candidates[row]], features @ weights + class_bias[candidates[row]])


def test_the_fitted_logit_finds_the_scorer_that_points_at_the_truth():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(300, 8, 3))
    candidates = np.tile(np.arange(8), (300, 1))
    truth = rng.integers(0, 8, size=300)
    features[np.arange(300), truth, 1] += 3.0  # feature 1 marks the true candidate; 0 and 2 are noise
    weights, bias = fit_conditional_logit(features, candidates, truth, 8, l2=0.01, bias_l2=1.0)
    assert weights[1] > 5 * max(abs(weights[0]), abs(weights[2]))
    assert ((features @ weights).argmax(axis=1) == truth).mean() > 0.8
    assert np.abs(bias).max() < 0.2  # the classes are equally likely here, so their biases stay near 0


def test_the_class_bias_learns_which_original_is_picked_more_than_its_scores_say():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(600, 6, 1))
    candidates = np.array([rng.permutation(10)[:6] for _ in range(600)])
    # Class 7 is the answer whenever it is a candidate, whatever its feature says; otherwise the feature decides.
    truth = candidates[np.arange(600), features[:, :, 0].argmax(axis=1)]
    truth[(candidates == 7).any(axis=1)] = 7
    weights, bias = fit_conditional_logit(features, candidates, truth, 10, l2=0.01, bias_l2=1e-3)
    assert weights[0] > 0
    assert bias[7] > 1.0 and bias[7] == bias.max()
    # Classes never among the candidates get no gradient but the penalty's: they stay at 0.
    never = np.setdiff1d(np.arange(10), candidates)
    assert not never.size or np.allclose(bias[never], 0.0)
