"""Serve replicas and Ray nodes scale up under load and back down after it, on a simulated cluster.

Runs apart from the other tests (`python -m pytest -m autoscaling`): the simulation starts its own Ray
cluster and ends with `ray stop --force`, which would stop the Ray instance of the integration tests.
"""

import csv
import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.autoscaling, pytest.mark.slow]


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    out = tmp_path_factory.mktemp("autoscaling") / "timeline"
    # Concurrency 4 over target_ongoing_requests 2 wants 2 replicas, below max_replicas 3, so the capacity
    # check below compares the calculator with the autoscaler's own choice, not with the cap.
    command = [sys.executable, "-m", "benchmarks.autoscaling_sim", "--load-s", "40", "--concurrency", "4"]
    subprocess.run([*command, "--out", str(out)], check=True, timeout=600, capture_output=True)
    assert out.with_suffix(".png").stat().st_size > 0
    return out


@pytest.fixture(scope="module")
def timeline(simulation) -> list[dict]:
    with simulation.with_suffix(".csv").open() as handle:
        return [
            {**row, **{k: int(v) for k, v in row.items() if k not in ("t_s", "phase")}}
            for row in csv.DictReader(handle)
        ]


def test_load_adds_replicas_and_gpu_nodes(timeline):
    idle = [row for row in timeline if row["phase"] == "idle"]
    busy = [row for row in timeline if row["phase"] in ("load", "after")]
    assert idle and idle[0]["image_replicas"] == 1
    assert max(row["image_replicas"] for row in busy) >= 2
    assert max(row["gpu_nodes"] for row in busy) > idle[0]["gpu_nodes"]


def test_replicas_then_nodes_scale_back_down(timeline):
    peak_replicas = max(range(len(timeline)), key=lambda i: timeline[i]["image_replicas"])
    replicas_down = next(i for i in range(peak_replicas, len(timeline)) if timeline[i]["image_replicas"] == 1)
    peak_nodes = max(timeline[i]["gpu_nodes"] for i in range(len(timeline)))
    nodes_down = next(i for i in range(replicas_down, len(timeline)) if timeline[i]["gpu_nodes"] < peak_nodes)
    assert replicas_down <= nodes_down
    assert timeline[-1]["image_replicas"] == 1
    assert timeline[-1]["gpu_nodes"] == 1  # min_replicas 1 keeps one GPU node; the idle ones are gone


def test_capacity_calculator_agrees_with_the_simulation(simulation):
    check = json.loads(simulation.with_suffix(".json").read_text())
    assert check["load"]["errors"] == 0, check
    assert check["planned_replicas"] < check["autoscaling_config"]["max_replicas"], check
    assert check["planned_replicas"] == check["peak_image_replicas"], check
    # The plan counts gpu nodes that hold a replica. More may be alive for a while: CI once saw 3 gpu nodes
    # with at most 2 replicas running. A spare holds nothing and is removed when idle, which
    # test_replicas_then_nodes_scale_back_down checks.
    assert check["planned_gpu_nodes"] == check["peak_gpu_nodes_in_use"], check
