"""Run the application as deployed, in processes of its own, from your own tests and load tests.

    from serve_app.testing import AUTH_HEADERS, deployed_app

    with deployed_app({"SERVE_APP_IMAGES__WEIGHTS": "random:0"}) as url:
        httpx.post(f"{url}/faq/match", json={"question": "..."}, headers=AUTH_HEADERS)

- ``deployed``: the app as production runs it (HAProxy + fast ingress, API key on), and ``app_launch`` for
  other ingress modes, CPUs, deployment options or a ``serve deploy`` of a Serve config.
- ``process``: any server as a process of its own (``running``): started, probed until it answers, stopped
  with every process it started.
- ``ports``: free ports, and files and ports of its own for each fast-ingress server on one machine.
- ``server``: ``python -m serve_app.testing.server``, the app in a process of its own.
- ``pytest_plugin``: the session fixtures ``deployed`` and ``auth_headers``.

Tests and benchmarks import it; the serving runtime never does.
"""

from serve_app.testing.deployed import AUTH_HEADERS, app_launch, deployed_app
from serve_app.testing.ports import free_port

__all__ = ["AUTH_HEADERS", "app_launch", "deployed_app", "free_port"]
