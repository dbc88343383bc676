"""Each replica's cold start, read from Serve's controller log (lines as Ray 2.60 writes them)."""

import pytest

from benchmarks.startup import log_time, replica_starts

CONTROLLER_LOG = """\
INFO 2026-12-04 08:00:36,061 controller 30746 -- Controller starting (version='2.60.0').
INFO 2026-12-04 08:00:39,519 controller 30746 -- Starting Replica(id='427yzbim', deployment='FAQMatcher', app='x').
INFO 2026-12-04 08:00:39,523 controller 30746 -- Starting Replica(id='jnsk6k80', deployment='Ingress', app='serve_app').
INFO 2026-12-04 08:00:45,814 controller 30746 -- Replica(id='jnsk6k80', deployment='Ingress', app='serve_app') \
started successfully on node '8776f4' after 6.3s (PID: 31039). Replica constructor, reconfigure method, and initial \
health check took 0.1s.
INFO 2026-12-04 08:00:53,364 controller 30746 -- Replica(id='427yzbim', deployment='FAQMatcher', app='serve_app') \
started successfully on node '8776f4' after 13.8s (PID: 30999). Replica constructor, reconfigure method, and initial \
health check took 4.2s.
"""


def test_each_replicas_start_is_read_from_the_controller_log():
    replicas = replica_starts(CONTROLLER_LOG)
    assert set(replicas) == {"427yzbim", "jnsk6k80"}
    faq = replicas["427yzbim"]
    assert faq["deployment"] == "FAQMatcher"
    assert (faq["start_s"], faq["constructor_s"], faq["process_and_imports_s"]) == (13.8, 4.2, 9.6)
    assert faq["serving_at"] - faq["scheduled_at"] == pytest.approx(13.845)
    assert replicas["jnsk6k80"]["constructor_s"] == 0.1


def test_a_replica_still_starting_has_no_serving_time():
    replicas = replica_starts(CONTROLLER_LOG.splitlines()[1])
    assert replicas == {
        "427yzbim": {"deployment": "FAQMatcher", "scheduled_at": log_time(CONTROLLER_LOG.splitlines()[1])}
    }
    assert log_time("no timestamp here") is None
