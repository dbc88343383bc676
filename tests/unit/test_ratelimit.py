"""Token buckets: a burst, then the sustained rate, per caller."""

import pytest

from serve_app.ratelimit import MAX_TRACKED_CALLERS, TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def test_burst_then_refusal_with_the_wait(clock):
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token at 2 per second
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)


def test_refused_requests_do_not_spend_tokens(clock):
    buckets = TokenBuckets(rate=1.0, burst=1, clock=clock)
    assert buckets.take("a") == 0.0
    for _ in range(5):
        assert buckets.take("a") > 0
    clock.now += 1.0
    assert buckets.take("a") == 0.0


def test_callers_are_independent_and_buckets_refill_to_the_burst_only(clock):
    buckets = TokenBuckets(rate=1.0, burst=2, clock=clock)
    assert buckets.take("a") == buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0
    clock.now += 1000
    assert [buckets.take("a") for _ in range(3)][-1] > 0  # refilled to 2, not to 1000


def test_memory_is_bounded(clock):
    buckets = TokenBuckets(rate=1.0, burst=1, clock=clock)
    for index in range(MAX_TRACKED_CALLERS + 10):
        buckets.take(f"caller-{index}")
    assert len(buckets._buckets) == MAX_TRACKED_CALLERS
