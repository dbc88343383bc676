"""The FAQ replica's GIL switch interval: the default, an operator's value, and a clear error for a bad one."""

import sys

import pytest

from deployments.faq.gil import (
    DEFAULT_GIL_SWITCH_INTERVAL_S,
    GIL_SWITCH_INTERVAL_ENV,
    gil_switch_interval_s,
    set_gil_switch_interval,
)


def test_unset_means_the_default_not_pythons():
    assert gil_switch_interval_s({}) == DEFAULT_GIL_SWITCH_INTERVAL_S == 0.0005


@pytest.mark.parametrize("text, seconds", [("0.005", 0.005), ("0.001", 0.001), (" 1e-4 ", 0.0001)])
def test_an_operators_value_in_seconds_is_taken(text, seconds):
    assert gil_switch_interval_s({GIL_SWITCH_INTERVAL_ENV: text}) == seconds


@pytest.mark.parametrize("text", ["", "fast", "0", "-0.001", "5", "0.5", "nan", "inf", "1e-9"])
def test_anything_else_is_refused_naming_the_variable_and_the_range(text):
    with pytest.raises(ValueError, match=rf"{GIL_SWITCH_INTERVAL_ENV}=.*must be seconds from 1e-05 to 0.1"):
        gil_switch_interval_s({GIL_SWITCH_INTERVAL_ENV: text})


def test_setting_it_applies_the_environments_value_to_this_process(monkeypatch):
    # The replica's constructor calls this; the deployed replica's value is checked over HTTP
    # (tests/integration/test_faq_http.py). tests/unit/conftest.py restores Python's interval afterwards.
    monkeypatch.setenv(GIL_SWITCH_INTERVAL_ENV, "0.002")
    assert set_gil_switch_interval() == 0.002
    assert sys.getswitchinterval() == pytest.approx(0.002)
