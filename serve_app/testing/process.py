"""A server in a process of its own: started, waited for until it answers, then stopped with all it started."""

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import serve_app

# The folder that holds the serve_app package in use (the checkout, or site-packages): the server's processes,
# and the Ray workers they start, import this same copy.
SOURCE_ROOT = Path(serve_app.__file__).resolve().parents[1]
START_TIMEOUT_S = 300  # ResNet-152 and the FAQ model load in ~20 s on 2 quiet cores; a busy CI box needs more
PROBE_TIMEOUT_S = 30
# Probes go straight to the local server, never through an HTTP proxy named in the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Launch:
    """How to start a server: its command, the environment it needs on top of ours, its working directory."""

    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None

    def with_env(self, extra: Mapping[str, str]) -> "Launch":
        return replace(self, env=self.env | dict(extra))


class Probe(Protocol):
    """A POST that must answer 2xx before the server counts as started (benchmarks.load.Call is one)."""

    @property
    def path(self) -> str: ...

    @property
    def body(self) -> bytes: ...

    @property
    def content_type(self) -> str: ...


def probe_failure(base_url: str, probes: Sequence[Probe], headers: Mapping[str, str]) -> str | None:
    """None once every probe answers 2xx, else what the first failing one got."""
    for probe in probes:
        request = urllib.request.Request(
            base_url + probe.path,
            data=probe.body,
            headers={"Content-Type": probe.content_type, **headers},
            method="POST",
        )
        try:
            with _DIRECT.open(request, timeout=PROBE_TIMEOUT_S) as response:
                response.read()
        except urllib.error.HTTPError as error:
            return f"{probe.path} answered {error.code}: {error.read()[:500].decode(errors='replace')}"
        except OSError as error:  # refused, reset, timed out: not listening yet
            return f"{type(error).__name__}: {error}"
    return None


@contextmanager
def running(
    name: str,
    launch: Launch,
    port: int,
    probes: Sequence[Probe],
    log: Path,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> Iterator[str]:
    """Start ``launch`` (a server listening on ``port``), wait until every probe answers, yield its base URL,
    stop it. Its output goes to ``log``, whose end is in the error when it does not start."""
    python_path = os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, **launch.env}
    with log.open("wb") as output:
        process = subprocess.Popen(
            launch.command, cwd=launch.cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while failure := probe_failure(base_url, probes, headers or {}):
            # A model that cannot load answers 503 model_unavailable for good (e.g. IMAGENET1K_V2 weights
            # without internet: set SERVE_APP_IMAGES__WEIGHTS=random:0); no point waiting out the deadline.
            if "model_unavailable" in failure or process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} did not start; last probe: {failure}\nits log:\n{tail}")
            time.sleep(1)
        yield base_url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    # SIGINT lets the server shut down cleanly (serve_app.testing.server stops Ray; gunicorn and uvicorn drain);
    # then whatever is left of its process group (Ray's raylet and workers, gunicorn workers) is killed.
    process.send_signal(signal.SIGINT)
    with suppress(subprocess.TimeoutExpired):
        process.wait(90)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
