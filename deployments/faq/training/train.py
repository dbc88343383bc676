"""Training, the whole of it: a FaqDataset in, a calibrated FaqModel and its metrics out (what `serve-app faq
train` saves). An honest quality estimate: cross-validate, calibrate, then fit on everything."""

import time
from dataclasses import dataclass, replace
from typing import Any

from scipy.special import softmax

from deployments.faq.data import FaqDataset
from deployments.faq.dense import LoadedEncoder, MemoizedEncoder
from deployments.faq.model import FaqModel, FaqModelConfig
from deployments.faq.training.evaluate import (
    expected_calibration_error,
    fit_temperature,
    out_of_fold_scores,
    ranking_metrics,
    true_ranks,
)
from deployments.faq.training.fit import fit_model


@dataclass(frozen=True)
class TrainingResult:
    model: FaqModel
    metrics: dict[str, Any]


def train(
    dataset: FaqDataset,
    config: FaqModelConfig | None = None,
    folds: int = 4,
    seed: int = 0,
    encoder: LoadedEncoder | None = None,
) -> TrainingResult:
    """Fit a calibrated model; ``metrics`` holds the cross-validated quality when the data allows it. With
    ``encoder`` (encoder.py: ``load_encoder``), the model adds its sentence embeddings' scorers (dense.py).

    The originals with at least two duplicates are cross-validated (folds.py; ``folds`` is capped at the
    fewest duplicates any of them has); with none there is nothing to hold out, the temperature stays 1 and
    no quality is claimed.
    """
    started = time.perf_counter()
    config = config or FaqModelConfig()
    metrics: dict[str, Any] = {"n_originals": len(dataset.originals), "n_duplicates": len(dataset.duplicates)}
    temperature = 1.0
    # Every fit embeds the same documents: each distinct text is encoded once (the model served keeps the
    # plain encoder).
    memoized = replace(encoder, encoder=MemoizedEncoder(encoder.encoder)) if encoder is not None else None
    scores, truth, used_folds = out_of_fold_scores(
        lambda part: fit_model(part, config, memoized).scores, dataset, folds, seed
    )
    if used_folds:
        temperature = fit_temperature(scores, truth)
        metrics["cross_validation"] = {
            "folds": used_folds,
            "seed": seed,
            **ranking_metrics(true_ranks(scores, truth)),
            "expected_calibration_error": expected_calibration_error(softmax(scores / temperature, axis=1), truth),
        }
    model = replace(fit_model(dataset, config, memoized), temperature=temperature)
    metrics["temperature"] = temperature
    if encoder is not None:
        model.dense.encoder = encoder.encoder
        metrics["encoder"] = {"reference": encoder.reference, "files_sha256": encoder.files_sha256}
    metrics["training_seconds"] = round(time.perf_counter() - started, 2)
    return TrainingResult(model=model, metrics=metrics)
