"""Fitting the FAQ model: a dataset in, a fitted (uncalibrated) FaqModel out.

Each view of the texts (text_views.py) fits its features and scorers on the cleaned training documents; the
re-ranker's weights are fitted on out-of-fold scores of the training duplicates (3 inner folds, folds.py; the
vectorizers are the final ones), so it learns how the scorers behave on phrasings they were not fitted on.
train.py wraps this with cross-validation and the softmax temperature.
"""

import numpy as np
import scipy.sparse as sp

from deployments.faq.config import FaqModelConfig
from deployments.faq.data import FaqDataset
from deployments.faq.dense import (
    KERNEL_ALPHA,
    KERNEL_GAMMA,
    DenseScorers,
    LoadedEncoder,
    dense_zscores,
    fit_dense_scorers,
)
from deployments.faq.model import BASE_SCORERS, FaqModel, first_order, n_rerank_features
from deployments.faq.rerank import candidate_features, fit_conditional_logit, rerank, top_columns
from deployments.faq.scorers import fit_scorers, zscores
from deployments.faq.text import clean_text
from deployments.faq.text_views import View, view_specs
from deployments.faq.training.folds import duplicate_folds


def default_weights(n_features: int) -> np.ndarray:
    """Without held-out duplicates to learn from: the sum of the base scorers' z-scores."""
    weights = np.zeros(n_features)
    weights[list(BASE_SCORERS)] = 1.0
    return weights


def _training_texts(dataset: FaqDataset, config: FaqModelConfig) -> tuple[list[str], np.ndarray]:
    """Cleaned training documents (each original's text, with its answer if asked, and its title, then the
    duplicates) and their classes."""
    column = {original.answer_id: index for index, original in enumerate(dataset.originals)}
    texts, labels = [], []
    for index, original in enumerate(dataset.originals):
        text = f"{original.text} {original.answer}" if config.answers_in_text and original.answer else original.text
        texts += [text, original.title]
        labels += [index, index]
    for duplicate in dataset.duplicates:
        texts.append(duplicate.text)
        labels.append(column[duplicate.answer_id])
    return [clean_text(text, config.keep_code_blocks) for text in texts], np.array(labels)


def _dense_scorers(embeddings: np.ndarray, labels: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    return fit_dense_scorers(embeddings, labels, n_classes, KERNEL_GAMMA, KERNEL_ALPHA)


def _fit_rerank(
    views: list[View],
    documents: list[sp.csr_matrix],
    labels: np.ndarray,
    config: FaqModelConfig,
    embeddings: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Both stages' weights and biases, from scores of training duplicates by scorers fitted without them
    (folds.py: which are held out; ``documents``: each view's training documents; ``embeddings``: theirs, where
    the model has dense scorers)."""
    n_classes = views[0].n_classes
    duplicates = np.arange(2 * n_classes, len(labels))
    splits = duplicate_folds(labels[duplicates], config.inner_folds, seed=0)
    dense = embeddings is not None
    if not splits:
        return np.stack([default_weights(n_rerank_features(views, dense))] * 2), np.zeros((2, n_classes))
    held_out_rows = np.concatenate([test for _, test in splits])
    held_out = np.zeros((len(duplicates), (n_rerank_features(views, dense) - 1) // 2, n_classes))
    for train, test in splits:
        keep = np.r_[np.arange(2 * n_classes), duplicates[train]]
        parts = [
            zscores(
                fit_scorers(matrix[keep], labels[keep], n_classes, config, view.spec.kernel_gammas),
                matrix[duplicates[test]],
            )
            for view, matrix in zip(views, documents, strict=True)
        ]
        if dense:
            parts.append(
                dense_zscores(_dense_scorers(embeddings[keep], labels[keep], n_classes), embeddings[duplicates[test]])
            )
        held_out[test] = np.concatenate(parts, axis=1)
    held_out, truth = held_out[np.sort(held_out_rows)], labels[duplicates][np.sort(held_out_rows)]
    weights, biases = [], []
    order = first_order(held_out, dense)
    for n_candidates in (config.first_candidates, config.second_candidates):
        candidates = top_columns(order, min(n_candidates, n_classes))
        features = candidate_features(held_out, candidates)
        stage = fit_conditional_logit(features, candidates, truth, n_classes, config.rerank_l2, config.class_bias_l2)
        weights.append(stage[0])
        biases.append(stage[1])
        order = rerank(held_out, order, n_candidates, *stage)
    return np.stack(weights), np.stack(biases)


def fit_model(
    dataset: FaqDataset, config: FaqModelConfig | None = None, encoder: LoadedEncoder | None = None
) -> FaqModel:
    """A fitted model; with ``encoder``, dense scorers (dense.py) beside the views' feed the re-ranker."""
    config = config or FaqModelConfig()
    cleaned, labels = _training_texts(dataset, config)
    fitted = [View.fit(spec, cleaned, labels, len(dataset.originals), config) for spec in view_specs(config)]
    views = [view for view, _ in fitted]
    embeddings = encoder.encoder.encode(cleaned) if encoder is not None else None
    weights, bias = _fit_rerank(views, [documents for _, documents in fitted], labels, config, embeddings)
    dense = None
    if encoder is not None:
        arrays = _dense_scorers(embeddings, labels, len(dataset.originals))
        dense = DenseScorers(encoder.encoder, encoder.reference, encoder.files_sha256, arrays)
    return FaqModel(dataset.originals, views, weights, bias, config, dense=dense)
