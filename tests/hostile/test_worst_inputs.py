"""The costliest questions we know how to build cost a bounded multiple of an ordinary one of the same length
(benchmarks/results/worst_inputs.md has the figures: ~5x at most). A step that turns quadratic, as the
reference's regular expressions were on unclosed markup, costs hundreds of times more at 10,000 characters.
In-process, on the demo model: no Ray."""

import time

import pytest

from deployments.faq.demo import demo_model
from serve_app.testing.worst_inputs import ORDINARY_TEXT, worst_questions

MAX_RATIO = 50  # generous: the machine may be busy, and a regression to quadratic time is far above it


@pytest.fixture(scope="module")
def model():
    model = demo_model().model  # shared by the session's tests: its caches are left as they were found
    yield model
    model.cache_clear()
    for view in model.views:
        view.features.warm(view.known_words)


def _cpu_s(model, question: str) -> float:
    """The least CPU time of three cold-cache runs (every word new, the costliest case)."""
    times = []
    for _ in range(3):
        model.cache_clear()
        start = time.process_time()
        model.probabilities([question])
        times.append(time.process_time() - start)
    return min(times)


def test_no_question_costs_more_than_a_bounded_multiple_of_ordinary_text(model):
    ordinary = _cpu_s(model, ORDINARY_TEXT)
    costs = {name: _cpu_s(model, text) for name, text in worst_questions().items()}
    too_slow = {name: f"{cost / ordinary:.0f}x" for name, cost in costs.items() if cost > MAX_RATIO * ordinary}
    assert not too_slow, f"ordinary 10,000 characters: {ordinary * 1000:.1f} ms; over {MAX_RATIO}x: {too_slow}"
