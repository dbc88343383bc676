"""What `serve run serve_app:graph` hands the Ray processes it starts (serve_app.ray_env)."""

import json
import os
import subprocess
import sys

import pytest

from serve_app.haproxy import HAPROXY_WITH_LIMITS
from serve_app.http import PROXY_HOOK, PROXY_HOOK_ENV

SHOW = "import json, os, serve_app; serve_app.graph; print(json.dumps(dict(os.environ)))"


def environment_after_graph(**settings: str) -> dict[str, str]:
    names = (PROXY_HOOK_ENV, "RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_HAPROXY_BINARY_PATH", "SERVE_APP_HAPROXY_BINARY")
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


@pytest.mark.parametrize("name", [PROXY_HOOK_ENV, "RAY_SERVE_HAPROXY_BINARY_PATH"])
def test_what_the_caller_set_stays(name):
    assert environment_after_graph(RAY_SERVE_ENABLE_HA_PROXY="1", **{name: "mine"})[name] == "mine"
