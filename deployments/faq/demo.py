"""The embedded default FAQ: JavaScript questions written for this project, so a fresh clone answers."""

from functools import cache
from pathlib import Path

from deployments.faq.data import load_jsonl
from deployments.faq.train import TrainingResult, train

DEMO_FAQ_PATH = Path(__file__).parent / "demo" / "javascript_faq.jsonl"


@cache
def demo_model() -> TrainingResult:
    """Trained in about a second at replica start-up, so the demo never goes stale against the code."""
    return train(load_jsonl(DEMO_FAQ_PATH))
