"""The environment ``serve run serve_app:graph`` hands to the Ray processes it starts.

``serve run`` imports the application before it starts Ray, and Ray's processes inherit this process's
environment. So what the container image sets for them (kuberay/Dockerfile) is set here too, unless the caller
set it: Serve's own proxy runs the project's hook (serve_app.http.proxy_middlewares: a client's X-Request-Id never
becomes the request's id, a chunked body's trailers never become headers) whether it is the front door (the
plain mode) or HAProxy's backup server (the fast ingress, where without it a credential sent in the trailers was
honoured); and with ``RAY_SERVE_ENABLE_HA_PROXY=1``, HAProxy runs through serve_app/bin/haproxy-with-limits.
"""

import os

from serve_app.http import PROXY_HOOK, PROXY_HOOK_ENV


def set_ray_defaults() -> None:
    """The image's settings for Ray's processes, where this environment does not set them already."""
    os.environ.setdefault(PROXY_HOOK_ENV, PROXY_HOOK)
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        from serve_app.haproxy import haproxy_with_limits_env

        for name, value in haproxy_with_limits_env().items():
            os.environ.setdefault(name, value)
