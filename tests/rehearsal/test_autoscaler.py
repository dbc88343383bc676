"""The rehearsal's autoscaler stand-in: which replicas wait for a GPU, and when it adds a pod (no Ray here: the
whole rehearsal runs it against Ray's dashboard in tests/rehearsal/test_rehearsal.py)."""

import time

import pytest

from serve_app.rehearsal import autoscaler
from serve_app.rehearsal.autoscaler import GpuAutoscaler, gpu_deployments, unplaced_replicas


def test_gpu_deployments_are_those_whose_replicas_ask_for_a_gpu():
    config = {
        "applications": [
            {
                "deployments": [
                    {"name": "Ingress", "ray_actor_options": {"num_cpus": 1}},
                    {"name": "ImageClassifier", "ray_actor_options": {"num_cpus": 0, "num_gpus": 1}},
                    {"name": "FAQMatcher"},
                    {"name": "Zero", "ray_actor_options": {"num_gpus": 0}},
                ]
            }
        ]
    }
    assert gpu_deployments(config) == {"ImageClassifier"}


def test_only_starting_replicas_without_a_node_of_the_named_deployments_are_unplaced():
    application = {
        "deployments": {
            "ImageClassifier": {
                "replicas": [
                    {"state": "RUNNING", "node_ip": "10.0.0.5"},
                    {"state": "STARTING", "node_ip": None},  # waits for a GPU
                    {"state": "STARTING", "node_ip": "10.0.0.6"},  # placed, its constructor running
                    {"state": "STOPPING", "node_ip": ""},
                ]
            },
            "FAQMatcher": {"replicas": [{"state": "STARTING"}]},
        }
    }
    assert unplaced_replicas(application, {"ImageClassifier"}) == 1
    assert unplaced_replicas(application, {"ImageClassifier", "FAQMatcher"}) == 2
    assert unplaced_replicas({}, {"ImageClassifier"}) == 0


def _until(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def fast_polls(monkeypatch):
    monkeypatch.setattr(autoscaler, "POLL_S", 0.02)


def test_a_demand_pending_for_the_reaction_time_gets_one_pod_and_no_more_than_allowed(fast_polls):
    added: list[float] = []
    scaler = GpuAutoscaler(pending=lambda: 1, add_pod=lambda: added.append(time.monotonic()), max_pods=1, react_s=0.2)
    scaler.start()
    try:
        assert _until(lambda: added)
        assert added[0] - scaler.began >= 0.2  # not before the demand was pending that long
        time.sleep(0.5)
        assert len(added) == 1 and len(scaler.added_at_s) == 1 and scaler.error is None
    finally:
        scaler.stop()


def test_a_demand_that_goes_away_before_the_reaction_time_gets_no_pod_and_a_busy_dashboard_is_asked_again(
    fast_polls,
):
    answers = iter([1, 1, 0, OSError("dashboard restarting"), 1, 0] + [0] * 1000)

    def pending() -> int:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    added: list[int] = []
    scaler = GpuAutoscaler(pending=pending, add_pod=lambda: added.append(1), max_pods=1, react_s=0.3)
    scaler.start()
    try:
        time.sleep(0.8)
        assert added == [] and scaler.error is None
    finally:
        scaler.stop()
