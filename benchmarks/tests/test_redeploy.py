"""Model updates and a full redeploy with `serve deploy`, under load, lose no request (benchmarks.redeploy)."""

import pytest

from benchmarks import redeploy

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_updates_and_a_full_redeploy_under_load_fail_no_request():
    # The full redeploy reloads every model; ~30 s on a quiet 2-core box, so it gets 66 s.
    report = redeploy.main(["--duration", "85", "--at", "5", "12", "19", "--concurrency", "4"])
    steps = {step["step"]: step for step in report["steps"]}
    assert list(steps) == ["hot", "tampered", "full"]
    assert report["sent"] > 50
    assert report["failed"] == 0, report["failed_by_status"]
    # Each change took effect while the load ran: the hot and the full update answer with their versions ...
    assert steps["hot"]["in_effect_after_s"] is not None
    assert steps["full"]["in_effect_after_s"] is not None
    # ... and the tampered model was refused (named by /readyz) while v2, the previous model, kept answering.
    assert steps["tampered"]["in_effect_after_s"] is not None
    after_tampered = next(p for p in report["phases"] if p["phase"] == "after tampered")
    assert after_tampered["faq_versions"] == [steps["tampered"]["expected_version"]]
    assert any("sha256 does not match" in error for error in report["update_errors"])
