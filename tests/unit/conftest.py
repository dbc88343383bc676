"""Unit tests build the FAQ replica's class directly, and its constructor sets the process-wide GIL switch interval
(deployments.faq.gil): each test gets Python's as it was and no operator override from the shell, so later tests
never run under an interval an earlier one left."""

import sys
from collections.abc import Iterator

import pytest

from deployments.faq.gil import GIL_SWITCH_INTERVAL_ENV


@pytest.fixture(autouse=True)
def python_gil_switch_interval(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(GIL_SWITCH_INTERVAL_ENV, raising=False)
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)
