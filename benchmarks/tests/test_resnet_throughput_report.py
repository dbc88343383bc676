"""The ResNet benchmark's arithmetic and report, on made-up measurements (the benchmark itself takes minutes)."""

import argparse

from benchmarks.resnet_throughput import (
    bare_layouts,
    bare_summary,
    compared_round,
    efficiencies,
    markdown,
    median_efficiencies,
    rotated,
)


def test_bare_layouts_add_the_replicas_own_layout_only_when_there_are_several():
    assert bare_layouts(argparse.Namespace(cpus=2, replicas=1)) == {"one process": (1, 2)}
    assert bare_layouts(argparse.Namespace(cpus=2, replicas=2)) == {"one process": (1, 2), "as the replicas": (2, 1)}


def test_efficiency_is_taken_against_each_layouts_best_mean_before_and_after():
    before = {
        "one process": {"images_per_s": {4: 4.0, 8: 3.0}, "host_steal_percent": 1.0},
        "as the replicas": {"images_per_s": {4: 5.0, 8: 6.0}, "host_steal_percent": 0.0},
    }
    after = {
        "one process": {"images_per_s": {4: 3.0, 8: 5.0}, "host_steal_percent": 12.5},
        "as the replicas": {"images_per_s": {4: 5.0, 8: 6.0}, "host_steal_percent": 0.5},
    }
    bare = bare_summary(before, after)
    # Means 3.5 and 4.0: batch 8 is best; drift compares the best of each run (4 vs 5) with the best mean.
    assert bare["one process"] == {"mean_images_per_s": {4: 3.5, 8: 4.0}, "best_images_per_s": 4.0, "drift": 0.25}
    assert bare["as the replicas"]["best_images_per_s"] == 6.0
    row = {
        "batching": True,
        "max_batch_size": 8,
        "mode": "closed",
        "concurrency": 8,
        "items_per_s": 3.6,
        "p50_ms": 900.0,
        "p99_ms": 1500.0,
        "errors": 0,
    }
    (served,) = efficiencies([row | {"host_steal_percent": 0.5}], bare)
    assert served["efficiency"] == {"one process": 0.9, "as the replicas": 0.6}
    open_row = row | {
        "mode": "open",
        "offered_rps": 2.52,
        "fraction_of_peak": 0.7,
        "p99_ms": 700.0,
        "host_steal_percent": 0.5,
    }
    del open_row["concurrency"]
    report = {
        "device": "cpu",
        "weights": "random:0",
        "command": "python -m benchmarks.resnet_throughput --replicas 2",
        "max_batch_size": [8],
        "batch_wait": 0.1,
        "machine": "test",
        "ingress": "Serve proxy",
        "bare_layouts": {"one process": [1, 2], "as the replicas": [2, 1]},
        "rounds": [compared_round(before, after, [row | {"host_steal_percent": 0.5}, open_row])],
    }
    # The open loop's throughput is what it offered: it has a latency, not an efficiency.
    assert report["rounds"][0]["served"] == [served]
    assert report["rounds"][0]["open_loop"] == [open_row]
    text = markdown(report)
    assert "| one process: 1 x 2 thread(s) | 8 | 3.00 | 5.00 | 4.00 | 1.0 / 12.5 |" in text
    assert "| as the replicas: 2 x 1 thread(s) | 4 | 5.00 | 5.00 | 5.00 | 0.0 / 0.5 |" in text
    assert "| on, max 8 | 8 | 3.60 | 900 | 1500 | 0 | 0.5 | 0.90 | 0.60 |" in text
    assert "Drift between the two: one process: 25%, as the replicas: 0%" in text
    assert "| on, max 8 | 0.7 | 2.52 | 3.60 | 900 | 700 | 0 | 0.5 |" in text
    assert "Median" not in text  # one round: nothing to take a median of


def test_several_rounds_report_each_one_and_the_median_of_their_efficiencies():
    def bare_run(rate: float) -> dict[str, dict]:
        return {"one process": {"images_per_s": {8: rate}, "host_steal_percent": 0.0}}

    runs = [bare_run(rate) for rate in (4.0, 6.0, 4.0, 5.0)]  # bare before round 1, between rounds, after round 3
    served_rates = [4.5, 4.0, 4.5]  # against bare means 5.0, 5.0, 4.5
    rounds = [
        compared_round(
            runs[i],
            runs[i + 1],
            [{"batching": True, "max_batch_size": 8, "mode": "closed", "concurrency": 8, "items_per_s": rate}],
        )
        for i, rate in enumerate(served_rates)
    ]
    (summary,) = median_efficiencies(rounds)
    assert summary["per_round"] == [{"one process": 0.9}, {"one process": 0.8}, {"one process": 1.0}]
    assert summary["efficiency"] == {"one process": 0.9}
    served_row = {"p50_ms": 900.0, "p99_ms": 1500.0, "errors": 0, "host_steal_percent": 0.0}
    for each in rounds:
        each["served"] = [row | served_row for row in each["served"]]
    report = {
        "device": "cpu",
        "weights": "random:0",
        "command": "python -m benchmarks.resnet_throughput --rounds 3",
        "max_batch_size": [8],
        "batch_wait": 0.1,
        "machine": "test",
        "ingress": "Serve proxy",
        "bare_layouts": {"one process": [1, 2]},
        "rounds": rounds,
        "median_efficiency": [summary],
    }
    text = markdown(report)
    assert "## Round 3 of 3" in text
    assert "| one process: 1 x 2 thread(s) | 8 | 4.00 | 5.00 | 4.50 | 0.0 / 0.0 |" in text  # round 3's bare
    assert "| on, max 8 | 8 | 0.90 | 0.90 / 0.80 / 1.00 |" in text


def test_several_batch_sizes_are_served_in_turn_first_and_each_gets_its_own_median():
    assert [rotated([8, 16, 32], index) for index in range(4)] == [[8, 16, 32], [16, 32, 8], [32, 8, 16], [8, 16, 32]]
    bare = {"one process": {"images_per_s": {8: 10.0}, "host_steal_percent": 0.0}}

    def closed(max_batch_size: int, rate: float) -> dict:
        batching = max_batch_size > 1
        setting = {"batching": batching, "max_batch_size": max_batch_size, "mode": "closed", "concurrency": 32}
        return setting | {"items_per_s": rate, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0, "host_steal_percent": 0.0}

    # Each round in the order it served them (rotated), batching off last.
    rounds = [
        compared_round(bare, bare, [closed(8, 9.0), closed(16, 8.0), closed(1, 7.0)]),
        compared_round(bare, bare, [closed(16, 8.4), closed(8, 8.6), closed(1, 7.2)]),
    ]
    medians = median_efficiencies(rounds)
    assert [(m["max_batch_size"], m["efficiency"], m["per_round"]) for m in medians] == [
        (16, {"one process": 0.82}, [{"one process": 0.8}, {"one process": 0.84}]),
        (8, {"one process": 0.88}, [{"one process": 0.9}, {"one process": 0.86}]),
        (1, {"one process": 0.71}, [{"one process": 0.7}, {"one process": 0.72}]),
    ]
    report = {
        "device": "cpu",
        "weights": "random:0",
        "command": "python -m benchmarks.resnet_throughput --rounds 2 --max-batch-size 8 16",
        "max_batch_size": [8, 16],
        "batch_wait": 0.01,
        "machine": "test",
        "ingress": "Serve proxy",
        "bare_layouts": {"one process": [1, 2]},
        "rounds": rounds,
        "median_efficiency": medians,
    }
    text = markdown(report)
    assert "Batching on: max_batch_size 8, 16, batch_wait_timeout_s 0.01; off: max_batch_size 1." in text
    # Every round's table in the same order, whatever order the round served them in.
    assert text.count("| on, max 16 | 32 | 8.") == 2 and text.index("| on, max 16 | 32 | 8.40") < text.index(
        "| on, max 8 | 32 | 8.60"
    )
    assert "| on, max 8 | 32 | 0.88 | 0.90 / 0.86 |" in text
    assert "| off | 32 | 0.71 | 0.70 / 0.72 |" in text
