"""The FAQ scorer's compiled loops against the numpy/scipy expressions they replace."""

import numpy as np
import scipy.sparse as sp

from deployments.faq.config import FaqModelConfig
from deployments.faq.data import load_jsonl
from deployments.faq.demo import DEMO_FAQ_PATH
from deployments.faq.features import TextFeatures
from deployments.faq.scorers import fit_scorers, zscores_and_cosines
from deployments.faq.scoring_loops import class_sum_max, sparse_product, tfidf_weights, zscore_rows
from deployments.faq.text import clean_text


def test_sparse_product_equals_scipys():
    questions = sp.random(4, 50, density=0.2, format="lil", random_state=1)
    questions[2] = 0  # an empty question gives a zero row
    questions = questions.tocsr()
    matrix = sp.random(50, 30, density=0.1, format="csr", random_state=2)
    expected = (questions @ matrix).toarray()
    got = sparse_product(
        questions.indptr, questions.indices, questions.data, matrix.indptr, matrix.indices, matrix.data, 30
    )
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert not got[2].any()


def test_class_sum_max_takes_each_class_sum_and_maximum_and_leaves_classes_without_documents_at_zero():
    cosine = np.array([[0.1, 0.7, 0.3, 0.2, 0.9]], dtype=np.float32)
    # Documents 1 and 3 belong to class 2, document 4 to class 0; class 1 has none.
    sums, maxima = class_sum_max(cosine, np.array([4, 1, 3]), np.array([0, 1]), np.array([0, 2]), 3)
    assert sums.dtype == maxima.dtype == np.float32
    np.testing.assert_allclose(sums, [[0.9, 0.0, 0.9]])
    np.testing.assert_allclose(maxima, [[0.9, 0.0, 0.7]])
    empty = class_sum_max(cosine, np.array([], dtype=np.int64), np.array([0]), np.array([], dtype=np.int64), 3)
    assert not any(array.any() for array in empty)


def test_zscore_rows_standardises_each_scorer_and_maps_a_constant_row_to_zero():
    rng = np.random.default_rng(3)
    scores = rng.normal(2.0, 3.0, size=(2, 3, 40))
    scores[1, 2] = 5.0
    expected = (scores - scores.mean(axis=2, keepdims=True)) / np.where(
        scores.std(axis=2, keepdims=True) > 0, scores.std(axis=2, keepdims=True), 1.0
    )
    np.testing.assert_allclose(zscore_rows(scores.copy()), expected, atol=1e-12)
    assert not zscore_rows(scores.copy())[1, 2].any()


def test_tfidf_weights_merge_repeated_columns_into_unit_norm_sublinear_weights():
    idf = np.array([1.0, 2.0, 3.0, 4.0])
    columns, weights = tfidf_weights(np.array([3, 1, 3, 3], dtype=np.int32), np.array([1.0, 2.0, 1.0, 1.0]), idf)
    assert columns.tolist() == [1, 3]
    raw = np.array([(1 + np.log(2.0)) * 2.0, (1 + np.log(3.0)) * 4.0])
    np.testing.assert_allclose(weights, raw / np.linalg.norm(raw))


def test_view_zscores_equals_the_scorers_written_in_numpy():
    dataset = load_jsonl(DEMO_FAQ_PATH)
    texts = [t for o in dataset.originals for t in (clean_text(o.text), clean_text(o.title))]
    texts += [clean_text(d.text) for d in dataset.duplicates]
    column = {o.answer_id: i for i, o in enumerate(dataset.originals)}
    n = len(dataset.originals)
    labels = np.r_[np.repeat(np.arange(n), 2), [column[d.answer_id] for d in dataset.duplicates]]
    features = TextFeatures.fit(texts, 0.5, (1, 4), 0.5)
    documents = features.transform(texts)
    scorers = fit_scorers(documents, labels, n, FaqModelConfig(), (2.0, 5.0))
    queries = features.transform(["copy an object with nested arrays", "sort by price", "zzz"])
    got, cosine = zscores_and_cosines(scorers, queries)

    expected_cosine = (queries @ documents.T).toarray()
    np.testing.assert_allclose(cosine, expected_cosine, atol=1e-6)
    one_hot = np.eye(n)[labels]
    duplicates = one_hot * (np.arange(len(labels)) >= 2 * n)[:, None]
    linear = expected_cosine @ scorers["linear_maps"]
    projected = linear[:, n:] + scorers["projection_offset"]
    projected /= np.linalg.norm(projected, axis=1, keepdims=True)
    naive_bayes = (queries @ scorers["nb_log_ratio"]).toarray() + queries.sum(axis=1).A * scorers["nb_class_bias"]
    masked = np.where(duplicates.T[None] > 0, expected_cosine[:, None, :], -np.inf).max(axis=2)
    expected = [
        *(np.exp(g * (expected_cosine - 1)) @ coef for g, coef in zip((2.0, 5.0), scorers["kernel_coef"], strict=True)),
        linear[:, :n],
        naive_bayes,
        projected @ scorers["projection_targets"],
        expected_cosine @ duplicates / np.maximum(duplicates.sum(axis=0), 1),
        np.where(np.isfinite(masked), masked, 0.0),
        expected_cosine[:, 1 : 2 * n : 2],
        expected_cosine[:, 0 : 2 * n : 2],
        expected_cosine @ one_hot / np.linalg.norm(one_hot.T @ documents.toarray(), axis=1),
    ]
    stacked = np.stack(expected, axis=1)
    spread = stacked.std(axis=2, keepdims=True)
    standard = (stacked - stacked.mean(axis=2, keepdims=True)) / np.where(spread > 0, spread, 1.0)
    np.testing.assert_allclose(got, standard, atol=1e-4)
