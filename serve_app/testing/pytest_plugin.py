"""pytest fixtures for the application as deployed. Load them from a conftest.py:

    pytest_plugins = ["serve_app.testing.pytest_plugin"]

``deployed`` is the base URL of the app as production runs it (serve_app.testing.deployed, with TEST_SETTINGS),
started once per test session on first use, however many conftest files load this plugin: what reaches a
cluster first is HAProxy and the ingress replica's uvicorn, so hostile-input and overload tests run against that.
``auth_headers`` authenticate a request to it.
"""

from collections.abc import Iterator

import pytest

from serve_app.testing.deployed import AUTH_HEADERS, TEST_SETTINGS, deployed_app


@pytest.fixture(scope="session")
def deployed() -> Iterator[str]:
    with deployed_app(TEST_SETTINGS) as url:
        yield url


@pytest.fixture(scope="session")
def auth_headers() -> dict[str, str]:
    return dict(AUTH_HEADERS)
