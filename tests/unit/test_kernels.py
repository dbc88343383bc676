"""The FAQ scorer's compiled loops against the numpy/scipy expressions they replace."""

import numpy as np
import scipy.sparse as sp

from deployments.faq.kernels import class_max, sparse_product, tfidf_weights, zscore_rows


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


def test_class_max_takes_each_class_maximum_and_leaves_classes_without_documents_at_zero():
    cosine = np.array([[0.1, 0.7, 0.3, 0.2, 0.9]], dtype=np.float32)
    # Documents 1 and 3 belong to class 2, document 4 to class 0; class 1 has none.
    got = class_max(cosine, np.array([4, 1, 3]), np.array([0, 1]), np.array([0, 2]), 3)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[0.9, 0.0, 0.7]])
    assert not class_max(cosine, np.array([], dtype=np.int64), np.array([0]), np.array([], dtype=np.int64), 3).any()


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
