"""Tests of the benchmarks: their helpers and report arithmetic (milliseconds, no Ray), and the claims their
scenarios make, asserted by running them (faults, overload, redeploy: slow; the autoscaling simulation: run
apart, ``python -m pytest -m autoscaling``). They need nothing from the repository's ``tests`` package.

``deployed`` (the app as production runs it) comes from serve_app.testing.pytest_plugin, the same session
fixture tests/ uses, so one server serves both when they run together.
"""

pytest_plugins = ["serve_app.testing.pytest_plugin"]
