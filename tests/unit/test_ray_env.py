"""What `serve run serve_app:graph` hands the Ray processes it starts (serve_app.ray_env)."""

import json
import os
import subprocess
import sys

import pytest

from serve_app.haproxy import HAPROXY_WITH_LIMITS
from serve_app.http import PROXY_HOOK, PROXY_HOOK_ENV
from serve_app.ray_env import QUIET_BACKGROUND, RAY_DEFAULT_BACKGROUND

SHOW = "import json, os, serve_app; serve_app.graph; print(json.dumps(dict(os.environ)))"
# What a Ray process of Serve's reads from its environment as it starts.
SERVE_READS = (
    "import json; from ray.serve._private import constants as c; print(json.dumps({"
    "'RAY_SERVE_CONTROL_LOOP_INTERVAL_S': c.CONTROL_LOOP_INTERVAL_S, "
    "'RAY_SERVE_METRICS_EXPORT_INTERVAL_MS': c.RAY_SERVE_METRICS_EXPORT_INTERVAL_MS}))"
)


def serve_reads(env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", SERVE_READS], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def environment_after_graph(**settings: str) -> dict[str, str]:
    names = (PROXY_HOOK_ENV, "RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_HAPROXY_BINARY_PATH", "SERVE_APP_HAPROXY_BINARY")
    names += tuple(QUIET_BACKGROUND)
    env = {name: value for name, value in os.environ.items() if name not in names} | settings
    done = subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_serves_own_proxy_gets_the_projects_hook():
    # Without it Serve's proxy (the front door of the plain mode, HAProxy's backup in the fast one) took a client's
    # X-Request-Id as the request's id and a credential sent in a chunked body's trailers.
    environment = environment_after_graph()
    assert environment[PROXY_HOOK_ENV] == PROXY_HOOK
    assert "RAY_SERVE_HAPROXY_BINARY_PATH" not in environment  # the plain mode runs no HAProxy


def test_the_fast_ingress_runs_haproxy_through_the_wrapper():
    environment = environment_after_graph(RAY_SERVE_ENABLE_HA_PROXY="1")
    assert environment["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(HAPROXY_WITH_LIMITS)
    assert os.path.exists(environment["SERVE_APP_HAPROXY_BINARY"])


@pytest.mark.parametrize("fast_ingress", ["0", "1"])
def test_serves_background_work_runs_less_often_than_rays_defaults(fast_ingress):
    # An idle application's controller loop and metrics export took CPU from the replicas under load
    # (benchmarks/results/background_cost_idle.md).
    environment = environment_after_graph(RAY_SERVE_ENABLE_HA_PROXY=fast_ingress)
    for name, value in QUIET_BACKGROUND.items():
        assert environment[name] == value


def test_serve_reads_the_settings_and_ray_default_background_is_rays_own():
    """The names are the ones this Ray reads, and RAY_DEFAULT_BACKGROUND (what benchmarks compare against) is what
    it runs without them."""
    without = {name: value for name, value in os.environ.items() if name not in QUIET_BACKGROUND}
    as_numbers = lambda env: {name: float(value) for name, value in env.items()}  # noqa: E731
    assert as_numbers(serve_reads(without)) == as_numbers(RAY_DEFAULT_BACKGROUND)
    assert as_numbers(serve_reads(environment_after_graph())) == as_numbers(QUIET_BACKGROUND)


# Ray parses its own settings as it imports them: an operator's value is a number there.
@pytest.mark.parametrize(
    ("name", "value"),
    [
        (PROXY_HOOK_ENV, "mine"),
        ("RAY_SERVE_HAPROXY_BINARY_PATH", "mine"),
        ("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.3"),
        ("RAY_SERVE_METRICS_EXPORT_INTERVAL_MS", "300"),
    ],
)
def test_what_the_caller_set_stays(name, value):
    assert environment_after_graph(RAY_SERVE_ENABLE_HA_PROXY="1", **{name: value})[name] == value
