"""benchmarks.background_cost: its CPU reading on real processes, and its report."""

import subprocess
import sys

from benchmarks.background_cost import STACKS, cpu_ms_per_s_by_role, markdown

SPIN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass"
SPIN_3S = SPIN.replace("+ 30", "+ 3")
# A parent that starts a spinning child 0.3 s into the measurement window.
PARENT = (
    "import subprocess, sys, time\ntime.sleep(0.3)\n"
    f"subprocess.Popen([sys.executable, '-c', {SPIN_3S!r}])\ntime.sleep(5)"
)


def test_a_busy_child_shows_about_a_core_and_a_sleeping_one_next_to_nothing():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        # Each child is a root of its own: no descendants (both are "other" to benchmarks.server_processes).
        busy, busy_processes = cpu_ms_per_s_by_role(spinner.pid, 1.0)
        idle, _ = cpu_ms_per_s_by_role(sleeper.pid, 1.0)
    finally:
        for child in (sleeper, spinner):
            child.kill()
            child.wait()
    # A core is 1000 ms/s; on a shared 2-core box the spinner gets much of one, the sleeper none.
    assert 300 <= busy["other"] <= 1100
    assert busy_processes == {"started": 0, "ended": 0}
    assert idle["other"] < 50


def test_the_report_has_each_round_and_the_median_of_the_totals():
    project, ray_defaults = STACKS

    def measured(stack: str, controller: float) -> dict:
        by_role = {"Serve controller": controller, "GCS": 15.0}
        result = {"stack": stack, "by_role": by_role, "total": controller + 15.0, "host_steal_percent": 0.1}
        return result | {"images_per_s": controller / 10, "errors": 0, "processes": {"started": 1, "ended": 0}}

    rounds = [
        [measured(project, 20.0), measured(ray_defaults, 40.0)],
        [measured(ray_defaults, 50.0), measured(project, 30.0)],
        [measured(project, 10.0), measured(ray_defaults, 45.0)],
    ]
    report = {"command": "python -m benchmarks.background_cost", "machine": "x86_64, 2 cores", "date": "today"}
    text = markdown(report | {"machine_cores": 2, "cpus": 2, "rounds": rounds, "image_load": 0})
    assert "application idle" in text and "images/s" not in text
    assert text.count("## Round") == 3
    assert "| Serve controller | 30.0 | 50.0 |" in text  # round 2: columns in STACKS order, whichever ran first
    assert f"| {project} | 35, 45, 25 | 35.0 | 1.8% |" in text
    assert f"| {ray_defaults} | 55, 65, 60 | 60.0 | 3.0% |" in text
    loaded = markdown(report | {"machine_cores": 2, "cpus": 2, "rounds": rounds, "image_load": 32})
    assert "under 32 concurrent image requests" in loaded
    assert "| images/s (whole load) | 3.0 | 5.0 |" in loaded  # round 2, in STACKS order
    assert "| failed requests (whole load) | 0 | 0 |" in loaded
    assert "| processes started / ended in the window | 1 / 0 | 1 / 0 |" in loaded


def test_a_process_started_in_the_window_counts_whole():
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        by_role, processes = cpu_ms_per_s_by_role(parent.pid, 1.5)
    finally:
        parent.kill()
        parent.wait()
    assert processes["started"] == 1
    assert by_role["other"] >= 150  # the child's spinning (0.3-1.5 s into the window) is counted
