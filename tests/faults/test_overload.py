"""At 3x capacity the service refuses the excess at once with 503, keeps admitted requests' latency bounded and
loses none of them; it answers normally when the load drops (benchmarks.overload; the deployed fast-ingress
configuration, whose HAProxy refuses FAQ excess and whose ingress refuses image excess)."""

import pytest

from benchmarks import overload

pytestmark = [pytest.mark.slow, pytest.mark.integration]


# The FAQ's 3x (1,300-1,700 req/s here) is about what this test's single-process client can send while the
# service takes the same 2 cores; beyond ~1,500 req/s its own lag dominates every latency it measures, so the
# offered rate is capped below that and the test checks it is still at least 1.75x the capacity.
MAX_RATE = 1400
# This VM shares its host: the hypervisor has taken 40-70% of its CPU (steal) for a minute at a time, which
# halves the capacity mid-run, so half of the measured capacity is no longer below it (seen in CI: 161 refusals
# "below capacity", 504s for images). Such a run says nothing about the service: it is measured again, and
# skipped, with the reason, if the host keeps stealing.
MAX_HOST_STEAL_PERCENT = 10
ATTEMPTS = 2


def overload_report(url: str, scenario: str, capacity_s: int, phase_s: int) -> dict:
    arguments = ["--scenario", scenario, "--capacity-s", str(capacity_s), "--phase-s", str(phase_s)]
    steals = []
    for _ in range(ATTEMPTS):
        report = overload.main([*arguments, "--max-rate", str(MAX_RATE), "--url", url])
        if report["host_steal_percent"] <= MAX_HOST_STEAL_PERCENT:
            return report
        steals.append(report["host_steal_percent"])
    pytest.skip(f"the host took {steals}% of this VM's CPU (steal) during each run: overload timings mean nothing")


@pytest.mark.parametrize(("scenario", "capacity_s", "phase_s"), [("image-one", 8, 10), ("faq-single", 5, 8)])
def test_overload_is_shed_with_fast_503s_and_nothing_admitted_fails(deployed, scenario, capacity_s, phase_s):
    report = overload_report(deployed, scenario, capacity_s, phase_s)
    below, over, after = report["phases"]
    assert report["capacity_rps"] > 0
    assert over["offered_rps"] >= 1.75 * report["capacity_rps"], (report["capacity_rps"], over)
    assert all(phase["failed"] == 0 for phase in report["phases"]), report["phases"]
    assert over["refused_503"] > 0 and over["answered"] > 0, over
    # A refusal is decided before any work, so the typical one comes back faster than typical admitted answers.
    assert over["p50_to_503_ms"] < over["p50_ms"], over
    # Bounded: queueing adds a few multiples of the at-capacity p99, not the tens of seconds of an unbounded queue.
    assert over["p99_ms"] < max(3000, 4 * report["capacity_p99_ms"]), (report["capacity_p99_ms"], over)
    assert below["refused_503"] == 0 and below["answered"] == below["sent"]
    # Recovered: the overload made the FAQ deployment scale up, and the new replica's start takes CPU from
    # these 2 cores for a few seconds of the next phase, so a few requests then may still hear a 503 (HAProxy's
    # queue bound); none fails.
    assert after["answered"] >= 0.95 * after["sent"], after
