import json
from pathlib import Path

import pytest

from serve_app.capacity import plan, plan_from_cost_curve
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


def _point(route: str, concurrency: int, cpu_ms: float, p50_ms: float, p99_ms: float, errors: int = 0) -> dict:
    return {
        "route": route,
        "concurrency": concurrency,
        "errors": errors,
        "server_cpu_ms_per_request": cpu_ms,
        "p50_ms": p50_ms,
        "p99_ms": p99_ms,
        "idle_pss_mib": 2048.0,
        "pss_mib_per_request_in_flight": 2.0,
    }


CURVE = [
    _point("faq", 1, 8.0, 7.0, 15.0),
    _point("faq", 16, 3.5, 40.0, 80.0),
    _point("faq", 64, 2.0, 100.0, 240.0),
    _point("faq", 128, 1.0, 200.0, 400.0, errors=3),  # failed requests: not a load to plan on
    _point("image", 2, 350.0, 600.0, 900.0),
]


def test_cost_curve_takes_the_cheapest_load_within_the_latency():
    # 2000 req/s x 3.5 ms = 7 cores busy; at 70% utilisation 10 cores: two 8-core nodes.
    result = plan_from_cost_curve(CURVE, "faq", 2000, 0.7, max_p99_ms=100, cores_per_node=8)
    assert (result.concurrency, result.nodes) == (16, 2)
    assert result.cores == pytest.approx(10.0)
    # Two idle servers (2 x 2048 MiB) + 2000 req/s x 40 ms = 80 requests in flight x 2 MiB.
    assert result.memory_mib == pytest.approx(2 * 2048 + 80 * 2)
    # Without a latency bound the cheapest error-free load wins (c=64, not the failing c=128).
    assert plan_from_cost_curve(CURVE, "faq", 2000, 0.7).concurrency == 64


@pytest.mark.parametrize(
    ("route", "max_p99_ms", "message"),
    [("faq", 10, "lowest: 15 ms"), ("image", 100, "lowest: 900 ms"), ("unknown", None, "no error-free point")],
)
def test_cost_curve_refuses_what_was_not_measured(route, max_p99_ms, message):
    with pytest.raises(ValueError, match=message):
        plan_from_cost_curve(CURVE, route, 100, max_p99_ms=max_p99_ms)


def test_cli_with_the_committed_cost_curve(capsys):
    curve = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "cost_curve.json"
    assert main(["capacity", "--target-rps", "500", "--cost-curve", str(curve), "--max-p99-ms", "100"]) == 0
    answer = json.loads(capsys.readouterr().out)
    points = {p["concurrency"]: p for p in json.loads(curve.read_text())["points"] if p["route"] == "faq"}
    used = points[answer["measured_concurrency"]]
    assert used["p99_ms"] <= 100
    assert answer["cores"] == pytest.approx(500 * used["server_cpu_ms_per_request"] / 1000 / 0.7, abs=0.01)
    assert main(["capacity", "--target-rps", "500"]) == 2
    assert "--latency-ms" in capsys.readouterr().err
