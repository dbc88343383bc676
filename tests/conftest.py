"""Fixtures shared across test folders: the shared data, and the deployed configuration as a server.

``deployed`` and ``auth_headers`` come from serve_app.testing.pytest_plugin: the fast ingress (HAProxy + direct
ingress, auth on) in a process of its own, as production runs it, for hostile-input tests; what reaches a cluster
first is HAProxy and the ingress replica's uvicorn. Started once per session, on first use, and shared with the
benchmark tests (benchmarks/tests), which load the same plugin.
"""

from pathlib import Path

import pytest

pytest_plugins = ["serve_app.testing.pytest_plugin"]

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FAQ_DATA = SHARED / "data" / "stackoverflow-faq"


@pytest.fixture(scope="session")
def faq_data() -> Path:
    if not (FAQ_DATA / "orig-q.tsv").exists():
        pytest.skip(f"shared Stack Overflow data not found at {FAQ_DATA} (it sits beside the project root)")
    return FAQ_DATA
