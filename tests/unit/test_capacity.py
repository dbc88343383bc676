import json

import pytest

from serve_app.capacity import plan
from serve_app.cli import main


def test_reference_rule():
    # 100 requests/s at 50 ms each keep 5 replicas fully busy; at 70% utilisation that is 7.14 -> 8.
    result = plan(target_rps=100, latency_s=0.05, target_utilisation=0.7)
    assert (result.replicas, result.nodes) == (8, 8)
    assert result.requests_per_s_per_replica == pytest.approx(14.0)


def test_exact_fit_does_not_round_up_and_batches_divide():
    assert plan(10, 0.5, 1.0).replicas == 5
    assert plan(1000, 0.08, 0.8, concurrency=16, replicas_per_node=2).replicas == 7
    assert plan(1000, 0.08, 0.8, concurrency=16, replicas_per_node=2).nodes == 4
    assert plan(0.1, 0.01).replicas == 1


@pytest.mark.parametrize("args", [(0, 1.0), (1, 0), (1, 1, 0), (1, 1, 1.5)])
def test_bad_inputs(args):
    with pytest.raises(ValueError):
        plan(*args)


def test_cli(capsys):
    assert main(["capacity", "--target-rps", "100", "--latency-ms", "50"]) == 0
    assert json.loads(capsys.readouterr().out) == {"replicas": 8, "nodes": 8, "requests_per_s_per_replica": 14.0}
    assert main(["capacity", "--target-rps", "-1", "--latency-ms", "50"]) == 2
