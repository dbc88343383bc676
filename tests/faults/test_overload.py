"""At 3x capacity the service refuses the excess at once with 503, keeps admitted requests' latency bounded and
loses none of them; it answers normally when the load drops (benchmarks.overload; the deployed fast-ingress
configuration, whose HAProxy refuses FAQ excess and whose ingress refuses image excess)."""

import pytest

from benchmarks import overload

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.mark.parametrize(("scenario", "capacity_s", "phase_s"), [("image-one", 8, 10), ("faq-single", 5, 8)])
def test_overload_is_shed_with_fast_503s_and_nothing_admitted_fails(deployed, scenario, capacity_s, phase_s):
    report = overload.main(
        ["--scenario", scenario, "--capacity-s", str(capacity_s), "--phase-s", str(phase_s), "--url", deployed]
    )
    below, over, after = report["phases"]
    assert report["capacity_rps"] > 0
    assert all(phase["failed"] == 0 for phase in report["phases"]), report["phases"]
    assert over["refused_503"] > 0 and over["answered"] > 0, over
    # A refusal is decided before any work, so the typical one comes back faster than typical admitted answers.
    assert over["p50_to_503_ms"] < over["p50_ms"], over
    # Bounded: queueing adds a few multiples of the at-capacity p99, not the tens of seconds of an unbounded queue.
    assert over["p99_ms"] < max(3000, 4 * report["capacity_p99_ms"]), (report["capacity_p99_ms"], over)
    assert below["refused_503"] == 0 and after["refused_503"] == 0
    assert after["answered"] == after["sent"]
