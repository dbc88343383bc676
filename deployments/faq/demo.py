"""The embedded default model: the demo FAQ (JavaScript questions written for this project, demo/) in, a
trained model out, so that a fresh clone answers without a model directory."""

from functools import cache
from pathlib import Path

from deployments.faq.data import load_jsonl
from deployments.faq.training.train import TrainingResult, train

DEMO_FAQ_PATH = Path(__file__).parent / "demo" / "javascript_faq.jsonl"


@cache
def demo_model() -> TrainingResult:
    """Trained at replica start-up (~7 s of CPU on these cores, most of it cross-validation and the re-ranker's
    fitting), so the demo never goes stale against the code."""
    return train(load_jsonl(DEMO_FAQ_PATH))
