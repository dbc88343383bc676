"""benchmarks.side_by_side: freezing real process trees, the turn order, the ratios, and one real run."""

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.server_processes import descendants, stat_fields
from benchmarks.side_by_side import Frozen, main, order, ratios


def _states(root: int) -> set[str]:
    return {stat_fields(Path(f"/proc/{pid}/stat"))[0] for pid in descendants(root)}


def test_freeze_stops_the_whole_tree_and_thaw_resumes_it():
    # A parent and a busy grandchild: a stack's server and, say, its Ray workers under load. A running process
    # stops a moment after SIGSTOP is sent: freeze() must wait for it (CI once read "R" right after the signal).
    spinner = "import time\nwhile True: pass"
    script = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {spinner!r}]); time.sleep(60)"
    root = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 10
        while len(descendants(root.pid)) < 2:
            assert time.monotonic() < deadline, "the grandchild never started"
            time.sleep(0.05)
        frozen = Frozen("test", root.pid)
        frozen.freeze()
        assert _states(root.pid) == {"T"} and len(frozen.stopped) == 2
        frozen.thaw()
        assert "T" not in _states(root.pid) and frozen.stopped == []
    finally:
        for pid in descendants(root.pid)[1:]:
            subprocess.run(["kill", "-9", str(pid)], check=False)
        root.kill()
        root.wait()


def test_every_stack_goes_first_as_often_as_the_others():
    peers = ["a", "b", "c"]
    firsts = Counter(order(peers, round_index, load)[0] for round_index in range(3) for load in range(3))
    assert firsts == {"a": 3, "b": 3, "c": 3}
    assert all(sorted(order(peers, r, 0)) == peers for r in range(5))


def _row(peer: str, concurrency: int, rps: float, p50: float, p99: float, round_index: int = 0) -> dict:
    return {
        "peer": peer,
        "round": round_index,
        "concurrency": concurrency,
        "requests_per_s": rps,
        "p50_ms": p50,
        "p99_ms": p99,
    }


def test_ratios_against_the_best_other_stack_of_the_same_round():
    rows = [
        _row("t", 1, 100, 8.0, 16.0),
        _row("x", 1, 300, 3.0, 6.0),
        _row("y", 1, 350, 2.0, 8.0),  # the best at c=1: lowest p50
        _row("t", 16, 400, 40.0, 80.0),
        _row("x", 16, 500, 30.0, 100.0),  # the best at c=16: most requests/s
        _row("y", 16, 200, 60.0, 70.0),
        _row("x", 16, 900, 10.0, 20.0, round_index=1),  # another round: never compared with round 0
    ]
    by_load = {r["concurrency"]: r for r in ratios(rows, "t")}
    assert by_load[1] == {
        "round": 0,
        "concurrency": 1,
        "best_peer": "y",
        "rps_ratio": 0.286,
        "p50_ratio": 4.0,
        "p99_ratio": 2.0,
    }
    assert (by_load[16]["best_peer"], by_load[16]["rps_ratio"], by_load[16]["p99_ratio"]) == ("x", 0.8, 0.8)
    assert len(ratios(rows, "t")) == 2


def test_a_stack_that_answered_nothing_is_not_the_bar_and_the_report_still_comes():
    # A peer whose server stopped listening: every request a connection error, 0 requests/s, no latencies. It
    # once ended a 15-minute run with ZeroDivisionError before the report was written.
    # At c=1 the best is the lowest p50, and a NaN compares as neither lower nor higher: listed first, the dead
    # stack was the "best" one.
    nan = float("nan")
    rows = [_row("t", 1, 100, 8.0, 16.0), _row("dead", 1, 0.0, nan, nan), _row("x", 1, 300, 4.0, 8.0)]
    assert [(r["best_peer"], r["p50_ratio"]) for r in ratios(rows, "t")] == [("x", 2.0)]
    assert ratios([_row("t", 16, 400, 40.0, 80.0), _row("dead", 16, 0.0, nan, nan)], "t") == []


@pytest.mark.slow
def test_a_real_run_of_two_stacks(tmp_path):
    out = tmp_path / "side"
    main(
        [
            "--peers",
            "fastapi",
            "fastapi-workers",
            "--target",
            "fastapi",
            "--concurrency",
            "1",
            "4",
            "--rounds",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0.5",
            "--out",
            str(out),
        ]
    )
    report = json.loads(out.with_suffix(".json").read_text())
    assert len(report["rows"]) == 2 * 2 * 2 and all(row["ok"] > 0 and not row["errors"] for row in report["rows"])
    assert {(r["round"], r["concurrency"]) for r in report["ratios"]} == {(0, 1), (0, 4), (1, 1), (1, 4)}
    assert "fastapi-workers" in out.with_suffix(".md").read_text()
