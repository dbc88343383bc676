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
    scores = rerank(zscores, order, 2, np.array([0.0, 0.0, -1.0]))  # the second position loses log(2)
    assert np.argsort(-scores[0], kind="stable").tolist() == [1, 2, 3, 0, 4]


def test_rerank_rescores_the_candidates_and_keeps_the_rest_below_them_in_order():
    rng = np.random.default_rng(1)
    zscores = rng.normal(size=(5, 3, 30))
    order = zscores.sum(axis=1)
    weights = np.r_[-1.0, 0.5, 0.0, np.zeros(3), 0.0]  # the candidates' order changes: scorer 0 counts against
    scores = rerank(zscores, order, 6, weights)
    candidates = top_columns(order, 6)
    for row in range(5):
        rest = np.setdiff1d(np.arange(30), candidates[row])
        assert scores[row, candidates[row]].min() > scores[row, rest].max()
        assert (np.argsort(scores[row, rest]) == np.argsort(order[row, rest])).all()
        expected = candidate_features(zscores[row : row + 1], candidates[row : row + 1])[0] @ weights
        np.testing.assert_allclose(scores[row, candidates[row]], expected)


def test_the_fitted_logit_finds_the_scorer_that_points_at_the_truth():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(300, 8, 3))
    truth = rng.integers(0, 8, size=300)
    features[np.arange(300), truth, 1] += 3.0  # feature 1 marks the true candidate; 0 and 2 are noise
    weights = fit_conditional_logit(features, np.eye(8, dtype=bool)[truth], l2=0.01)
    assert weights[1] > 5 * max(abs(weights[0]), abs(weights[2]))
    assert ((features @ weights).argmax(axis=1) == truth).mean() > 0.8
