"""The wait for a quiet machine that the overload benchmark does before measuring capacity."""

import os
import threading
import time

from benchmarks.machine_cpu import Jiffies, busy_percent_over, jiffies, steal_percent, wait_until_quiet, without_steal


def spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def test_a_busy_core_shows_in_the_machines_cpu_use():
    spinner = threading.Thread(target=spin, args=(1.5,))
    spinner.start()
    busy = busy_percent_over(1.0)
    spinner.join()
    # One spinning thread keeps one of the machine's cores busy.
    assert busy >= 0.8 * 100 / max(1, os.cpu_count()), busy


def test_the_wait_gives_up_at_its_timeout_on_a_machine_that_stays_busy():
    spinner = threading.Thread(target=spin, args=(4.0,))
    spinner.start()
    waited = wait_until_quiet(max_busy_percent=1, quiet_s=1, timeout_s=2)
    spinner.join()
    assert 2 <= waited < 3.5, waited


def test_the_wait_ends_once_the_machine_has_been_quiet_long_enough():
    waited = wait_until_quiet(max_busy_percent=100, quiet_s=1, timeout_s=10)
    assert 1 <= waited < 2.5, waited


def test_steal_is_the_hypervisors_share_of_the_time_between_two_readings():
    before, after = Jiffies(busy=100, steal=10, total=1000), Jiffies(busy=400, steal=70, total=1400)
    assert steal_percent(before, after) == 15.0
    now = jiffies()
    assert 0 <= now.steal <= now.busy <= now.total


def test_a_measurement_is_kept_when_steal_allows_and_taken_again_when_it_does_not():
    calls, settles = [], []

    def measure() -> int:
        calls.append(1)
        return len(calls)

    result, steal = without_steal(measure, max_steal_percent=100)
    assert (result, calls, 0 <= steal <= 100) == (1, [1], True)
    # No run can have under 0% steal: every attempt is made, each after settling, and the last result is kept.
    result, steal = without_steal(measure, max_steal_percent=-1, attempts=3, settle=lambda: settles.append(1))
    assert (result, len(calls), len(settles), steal >= 0) == (4, 4, 2, True)
