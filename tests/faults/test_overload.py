"""At 3x capacity the image path refuses the excess at once with 503 and loses no admitted request; it answers
normally when the load drops (benchmarks.overload; the deployed fast-ingress configuration)."""

import pytest

from benchmarks import overload

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_overload_is_shed_with_fast_503s_and_nothing_admitted_fails(deployed):
    report = overload.main(["--scenario", "image-one", "--capacity-s", "8", "--phase-s", "10", "--url", deployed])
    below, over, after = report["phases"]
    assert report["capacity_rps"] > 0
    assert all(phase["failed"] == 0 for phase in report["phases"]), report["phases"]
    assert over["refused_503"] > 0 and over["answered"] > 0
    # A refusal is decided before any work, so it comes back faster than typical admitted answers.
    assert over["p99_to_503_ms"] < over["p50_ms"]
    assert below["refused_503"] == 0 and after["refused_503"] == 0
    assert after["answered"] == after["sent"]
