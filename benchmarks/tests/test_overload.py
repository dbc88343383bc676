"""At 3x capacity the service refuses the excess at once with 503, keeps admitted requests' latency bounded and
loses none of them; it answers normally when the load drops (benchmarks.overload; the deployed fast-ingress
configuration, whose HAProxy refuses FAQ excess and whose ingress refuses image excess)."""

import pytest

from benchmarks import overload

pytestmark = [pytest.mark.slow, pytest.mark.integration]


# The offered rate must reach 3x capacity, and one client process sharing the service's 2 cores can send at most
# ~1,200-1,500 req/s before it measures its own lag (at 1,400 req/s it used 50-78% of a core). One question per
# request no longer gets there: since the FAQ scorer was compiled its capacity is ~870 req/s here (CI, capped at
# 1,200: 1.37x). So the FAQ side is overloaded with 16-question requests (faq-batch: ~165 req/s capacity, the
# same HAProxy limits shed them); the cap stays as a guard.
MAX_RATE = 1200
# This VM shares its host: the hypervisor has taken 40-70% of its CPU (steal) for a minute at a time, which
# halves the capacity mid-run, so half of the measured capacity is no longer below it (seen in CI: 161 refusals
# "below capacity", 504s for images). A run with that much steal, or whose client was near saturation, says
# nothing about the service: it is measured again, and skipped, with the reason, if that happens again.
MAX_HOST_STEAL_PERCENT = 10
MAX_CLIENT_CPU_PERCENT = 70
ATTEMPTS = 2
MAX_REFUSED_BELOW_CAPACITY = 0.02  # share of requests at half capacity; see the test


def unmeasurable_because(report: dict) -> str | None:
    client_cpu = max(phase["client_cpu_percent"] for phase in report["phases"])
    if report["host_steal_percent"] > MAX_HOST_STEAL_PERCENT:
        return f"the host took {report['host_steal_percent']}% of this VM's CPU (steal)"
    if client_cpu > MAX_CLIENT_CPU_PERCENT:
        return f"the load client itself used {client_cpu}% of a core"
    return None


def overload_report(url: str, scenario: str, capacity_s: int, phase_s: int) -> dict:
    arguments = ["--scenario", scenario, "--capacity-s", str(capacity_s), "--phase-s", str(phase_s)]
    reasons = []
    for _ in range(ATTEMPTS):
        report = overload.main([*arguments, "--max-rate", str(MAX_RATE), "--url", url])
        if (reason := unmeasurable_because(report)) is None:
            return report
        reasons.append(reason)
    pytest.skip(f"overload timings mean nothing when {' / '.join(reasons)}")


@pytest.mark.parametrize(("scenario", "capacity_s", "phase_s"), [("image-one", 8, 10), ("faq-batch", 5, 8)])
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
    # Below capacity nearly everything is answered. Not strictly all: a stall of a second on this shared 2-core VM
    # (a burst of steal too short to move the run's average, a GC pause) outlasts HAProxy's 1 s queue timeout, and
    # the queue bound then refuses a few by design (seen in CI: 22 of 2,255 at half capacity, p99 379 ms, 0.1%
    # steal over the run). A limit refusing systematically would refuse far more than this.
    assert below["refused_503"] <= MAX_REFUSED_BELOW_CAPACITY * below["sent"], below
    assert below["answered"] + below["refused_503"] == below["sent"], below
    # Recovered: the overload made the FAQ deployment scale up, and the new replica's start takes CPU from
    # these 2 cores for a few seconds of the next phase, so a few requests then may still hear a 503 (HAProxy's
    # queue bound); none fails.
    assert after["answered"] >= 0.95 * after["sent"], after
