"""The serving stacks compared, each started as its own server process on loopback, with the same models.

- ``reference``: azureml-inference-server-http (gunicorn + Flask, the server behind Azure ML online
  endpoints) running score.py entry scripts like the reference architecture's; its default of one sync
  worker, as deployed. It lives in a virtual environment of its own (``.peers/azml``, made on first use),
  because it pins pydantic and OpenTelemetry below what Ray and FastAPI need.
- ``fastapi``: one uvicorn process with the models loaded, the thing a user might write instead.
- ``fastapi-workers``: the same app under uvicorn with one worker process per core (each loads the models),
  the next thing that user would try for throughput.
- ``fastapi-workers-1thread``: the same, each worker's math libraries held to one thread (OPENBLAS_NUM_THREADS,
  OMP_NUM_THREADS = 1; torch too, for the image model), as a user who knows about thread oversubscription runs it.
  By default numpy's OpenBLAS in each worker starts a thread per core: FAQ chunks of 4-32 questions then cost
  1.8-1.9x the CPU of one thread, though one question (what a worker scores per request) costs the same
  (benchmarks/results/faq_blas_threads.md). A running FAQ replica showed no OpenBLAS thread (gdb, all threads'
  stacks, 2026-12-06): Ray sets OMP_NUM_THREADS for each worker from its num_cpus.
- ``serve-fast-gil5ms``: ``serve-fast`` with the FAQ replica's GIL switch interval at Python's default, 5 ms,
  instead of the shipped 0.5 ms (deployments.faq.deployment), to measure what that setting does.
- ``serve-fast-ray-intervals``: ``serve-fast`` with Serve's controller loop and metrics export at Ray's default
  intervals instead of the project's longer ones (serve_app.ray_env.QUIET_BACKGROUND), to measure what they save.
- ``serve``: this application on Ray Serve with the default proxy.
- ``serve-fast``: the same application with Ray's HAProxy ingress and throughput-optimized mode.
"""

import os
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load import Call
from benchmarks.workloads import Paths
from deployments.faq.gil import GIL_SWITCH_INTERVAL_ENV, PYTHON_GIL_SWITCH_INTERVAL_S
from serve_app.ray_env import RAY_DEFAULT_BACKGROUND
from serve_app.testing import AUTH_HEADERS, app_launch
from serve_app.testing.process import Launch
from serve_app.testing.process import running as running_process

REPO = Path(__file__).resolve().parents[2]
REFERENCE_APP = Path(__file__).resolve().parent / "reference"
REFERENCE_VENV = REPO / ".peers" / "azml"
REFERENCE_PACKAGE = "azureml-inference-server-http==1.5.1"
SERVE_PATHS = {"faq": "/faq/match", "image": "/images/classify"}
# Closed-loop throughput runs hold up to 64 image requests in flight on purpose: they measure the model path,
# so the ingress's image admission limit (16 in flight, sized for overload on CPU) is lifted for them.
THROUGHPUT_ENV = {"SERVE_APP_LIMITS__MAX_IMAGES_IN_FLIGHT": "1024"}
ONE_MATH_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def reference_server() -> Path:
    """The ``azmlinfsrv`` of a virtual environment beside the project's, made once (~30 s).

    Its own packages (Flask, gunicorn, its pinned pydantic) come first; numpy, scikit-learn, torch and the
    rest come from this interpreter's site-packages through a .pth file, so both stacks run the same wheels.
    """
    executable = REFERENCE_VENV / "bin" / "azmlinfsrv"
    if executable.exists():
        return executable
    subprocess.run([sys.executable, "-m", "venv", str(REFERENCE_VENV)], check=True)
    pip = [str(REFERENCE_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, REFERENCE_PACKAGE], check=True)
    purelib = subprocess.run(
        [str(REFERENCE_VENV / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "serve_app_project.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return executable


@dataclass(frozen=True)
class Peer:
    name: str
    description: str
    paths: Paths
    launch: Callable[[int, tuple[str, ...], dict], Launch]
    one_model_only: bool = False  # serves one model per server (the reference: one entry script)


def _reference(port: int, kinds: tuple[str, ...], options: dict) -> Launch:
    (kind,) = kinds
    script = "score_faq.py" if kind == "faq" else "score_images.py"
    command = [str(reference_server()), "--entry_script", script, "--port", str(port)]
    env = {"GUNICORN_CMD_ARGS": "--no-control-socket", "WORKER_COUNT": str(options.get("workers", 1))}
    return Launch(command, env, REFERENCE_APP)


def _fastapi(workers: int, env: dict[str, str] | None = None) -> Callable[[int, tuple[str, ...], dict], Launch]:
    def launch(port: int, kinds: tuple[str, ...], options: dict) -> Launch:
        command = [sys.executable, "-m", "uvicorn", "benchmarks.peers.fastapi_app:app", "--port", str(port)]
        command += ["--log-level", "warning", "--workers", str(workers)]
        return Launch(command, {"PEER_MODELS": ",".join(kinds), **(env or {})})

    return launch


def _serve(fast_ingress: bool, env: dict[str, str] | None = None) -> Callable[[int, tuple[str, ...], dict], Launch]:
    def launch(port: int, kinds: tuple[str, ...], options: dict) -> Launch:
        # options: cpus, deployments (Serve options by deployment name), config and dashboard_port (serve deploy)
        return app_launch(port, fast_ingress, **options).with_env(env or {})

    return launch


PEERS = {
    "reference": Peer(
        "reference",
        "azureml-inference-server-http 1.5.1 + score.py (gunicorn sync worker, Flask)",
        {"faq": "/score", "image": "/score"},
        _reference,
        one_model_only=True,
    ),
    "fastapi": Peer("fastapi", "FastAPI + uvicorn, one process", SERVE_PATHS, _fastapi(1)),
    "fastapi-workers": Peer(
        "fastapi-workers",
        f"FastAPI + uvicorn, {os.cpu_count()} worker processes (one per core)",
        SERVE_PATHS,
        _fastapi(os.cpu_count() or 1),
    ),
    "fastapi-workers-1thread": Peer(
        "fastapi-workers-1thread",
        f"FastAPI + uvicorn, {os.cpu_count()} worker processes, one math-library thread each",
        SERVE_PATHS,
        _fastapi(os.cpu_count() or 1, ONE_MATH_THREAD),
    ),
    "serve": Peer("serve", "Ray Serve, default proxy", SERVE_PATHS, _serve(fast_ingress=False)),
    "serve-fast": Peer(
        "serve-fast", "Ray Serve, HAProxy ingress + throughput-optimized", SERVE_PATHS, _serve(fast_ingress=True)
    ),
    "serve-fast-gil5ms": Peer(
        "serve-fast-gil5ms",
        "serve-fast, the FAQ replica's GIL switch interval at Python's default 5 ms",
        SERVE_PATHS,
        _serve(fast_ingress=True, env={GIL_SWITCH_INTERVAL_ENV: str(PYTHON_GIL_SWITCH_INTERVAL_S)}),
    ),
    "serve-fast-ray-intervals": Peer(
        "serve-fast-ray-intervals",
        "serve-fast, Serve's controller loop and metrics export at Ray's default intervals (0.1 s)",
        SERVE_PATHS,
        _serve(fast_ingress=True, env=RAY_DEFAULT_BACKGROUND),
    ),
}


def serve_faq_model(faq_model: str | None) -> None:
    """Every stack started after this loads the FAQ model ``faq_model`` (a directory from `serve-app faq train`, or
    a URL): the servers inherit SERVE_APP_FAQ_MODEL_URI. A local path is made absolute, since some stacks start in
    another working directory. None: unchanged ($SERVE_APP_FAQ_MODEL_URI, else the embedded demo FAQ)."""
    if faq_model:
        local = Path(faq_model)
        os.environ["SERVE_APP_FAQ_MODEL_URI"] = str(local.resolve()) if local.exists() else faq_model


@contextmanager
def running(
    peer: Peer,
    kinds: tuple[str, ...],
    probes: list[Call],
    port: int,
    log: Path,
    options: dict | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Start ``peer`` on ``port``, wait until every probe call answers 200, yield its base URL, stop it.

    Probes carry AUTH_HEADERS, as the benchmarks' requests do: the Serve application checks them (auth stays on,
    as deployed), the other stacks ignore them."""
    launch = peer.launch(port, kinds, options or {}).with_env(extra_env or {})
    with running_process(peer.name, launch, port, probes, log, AUTH_HEADERS) as base_url:
        yield base_url
