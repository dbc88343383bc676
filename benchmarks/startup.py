"""How long the application takes to start: to the first answered FAQ question, to ready, and each replica's cold start.

    python -m benchmarks.startup --faq-model models/faq [--launcher server|serve-run] [--out benchmarks/results/startup]

The application is started as deployed (HAProxy + fast ingress, auth on): ``--launcher server`` through
serve_app.testing (``python -m serve_app.testing.server``, what the tests and benchmarks run; any free port),
``--launcher serve-run`` as ``make run`` runs it (``serve run --address local serve_app:graph``, port 8000, which
must be free). From the moment the process is started, it is probed every 0.1 s: the first 200 of POST /faq/match,
and the first 200 of /readyz (both models loaded). Then each replica's cold start comes from Serve's controller log:
"Starting Replica" (the controller asks Ray for the actor) to "started successfully ... after Xs", of which
"Replica constructor, reconfigure method, and initial health check took Ys"; the rest is Ray starting the worker
process and importing the deployment's code.

What each replica does at start is then timed step by step in a fresh process (``--steps``): the imports, the
FAQ artifact's load, the first scores (numba's compiled loops, caches), the demo FAQ's training (what a replica
does when no faq_model_uri is set), torch, building ResNet-152, the first forward pass.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

from ray._common.utils import get_default_ray_temp_dir  # where Ray keeps its sessions by default

from benchmarks.machine_cpu import jiffies, steal_percent
from benchmarks.report import publish, run_info, serve_background, table
from serve_app.ray_env import OWN_LOCAL_RAY, RAY_DEFAULT_BACKGROUND
from serve_app.testing import AUTH_HEADERS, app_launch, free_port
from serve_app.testing.deployed import API_KEY, fast_ingress_env
from serve_app.testing.process import SOURCE_ROOT

SERVE_RUN_PORT = 8000
PROBE_EVERY_S = 0.1
START_TIMEOUT_S = 300
# The ResNet-152 weights to serve: torchvision's IMAGENET1K_V2 needs a download this machine cannot make; seeded
# random weights cost the same compute (and no weight file read, no hash).
DEFAULT_WEIGHTS = "random:0"
QUESTION = json.dumps({"question": "How do I sort an array of objects by a property?", "top_k": 5}).encode()
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
_STARTING = re.compile(r"Starting Replica\(id='(\w+)', deployment='(\w+)'")
_STARTED = re.compile(
    r"Replica\(id='(\w+)', deployment='(\w+)'.*started successfully .* after ([\d.]+)s"
    r"(?:.*constructor, reconfigure method, and initial health check took ([\d.]+)s)?"
)


def log_time(line: str) -> float | None:
    """The timestamp of a Serve log line (local time, as Serve writes it) in seconds since the epoch."""
    match = _LOG_TIME.search(line)
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if match else None


def replica_starts(controller_log: str) -> dict[str, dict]:
    """Per replica id, from Serve's controller log: deployment, when it was asked for, when it served, the
    end-to-end start (scheduled -> serving) and the part spent in its constructor, reconfigure and first health
    check (the rest: Ray starting the worker process and importing the deployment's code)."""
    replicas: dict[str, dict] = {}
    for line in controller_log.splitlines():
        if match := _STARTING.search(line):
            replicas.setdefault(match.group(1), {"deployment": match.group(2)})["scheduled_at"] = log_time(line)
        elif match := _STARTED.search(line):
            replica = replicas.setdefault(match.group(1), {"deployment": match.group(2)})
            replica["serving_at"] = log_time(line)
            replica["start_s"] = float(match.group(3))
            if match.group(4) is not None:
                replica["constructor_s"] = float(match.group(4))
                replica["process_and_imports_s"] = round(replica["start_s"] - replica["constructor_s"], 1)
    return replicas


def _answers(url: str, body: bytes | None) -> bool:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **AUTH_HEADERS}, method="POST" if body else "GET"
    )
    try:
        with _DIRECT.open(request, timeout=5) as response:
            response.read()
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _command(launcher: str) -> tuple[list[str], dict[str, str], int]:
    if launcher == "serve-run":
        env = {"SERVE_APP_API_KEYS": API_KEY, **fast_ingress_env()}
        command = [str(Path(sys.executable).parent / "serve"), "run", "--address", OWN_LOCAL_RAY, "serve_app:graph"]
        return command, env, SERVE_RUN_PORT  # `make run`'s command
    port = free_port()
    launch = app_launch(port)
    return launch.command, launch.env, port


def measure_start(launcher: str, settings: dict[str, str], log: Path) -> dict:
    """Start the app, time the first FAQ answer and readiness, read each replica's start from the controller log."""
    command, env, port = _command(launcher)
    base = f"http://127.0.0.1:{port}"
    python_path = os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, **env, **settings}
    machine, wall_start = jiffies(), time.time()
    started = time.perf_counter()
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    marks: dict[str, float] = {}
    try:
        while len(marks) < 2:
            if process.poll() is not None or time.perf_counter() - started > START_TIMEOUT_S:
                raise RuntimeError(f"the app did not start:\n{log.read_text(errors='replace')[-3000:]}")
            if "faq_first_200_s" not in marks and _answers(f"{base}/faq/match", QUESTION):
                marks["faq_first_200_s"] = round(time.perf_counter() - started, 2)
            if "readyz_200_s" not in marks and _answers(f"{base}/readyz", None):
                marks["readyz_200_s"] = round(time.perf_counter() - started, 2)
            time.sleep(PROBE_EVERY_S)
        session = (Path(get_default_ray_temp_dir()) / "session_latest").resolve()  # the launched app's
        controller = next(iter(sorted((session / "logs" / "serve").glob("controller_*.log"))), None)
        replicas = replica_starts(controller.read_text()) if controller else {}
        for replica in replicas.values():
            for key in ("scheduled_at", "serving_at"):
                if replica.get(key) is not None:
                    replica[key.replace("_at", "_after_launch_s")] = round(replica.pop(key) - wall_start, 1)
        return {
            "launcher": launcher,
            "command": " ".join(Path(part).name if part.startswith("/") else part for part in command),
            **marks,
            "replicas": sorted(replicas.values(), key=lambda r: r.get("serving_after_launch_s") or 0),
            "steal_percent": steal_percent(machine, jiffies()),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        }
    finally:
        process.send_signal(2)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def timed_steps(faq_model: str | None, weights: str) -> list[tuple[str, float, float]]:
    """Each start-up step of the replicas, in this (fresh) process, in the order a replica meets them: its name,
    wall seconds and CPU seconds (all threads; the CPU is what a busy machine does not inflate)."""
    steps: list[tuple[str, float, float]] = []

    def step(name: str, work):
        started, cpu = time.perf_counter(), time.process_time()
        result = work()
        steps.append((name, round(time.perf_counter() - started, 3), round(time.process_time() - cpu, 3)))
        return result

    step("import ray + ray.serve (every replica's worker)", lambda: __import__("ray.serve"))
    step("import serve_app.ingress (Ingress: FastAPI, pydantic schemas)", lambda: __import__("serve_app.ingress"))
    module = step(
        "import deployments.faq.deployment (FAQMatcher's Serve shell: what the driver imports)",
        lambda: __import__("deployments.faq.deployment", fromlist=["FAQMatcher"]),
    )
    step(
        "import the FAQ model (numpy, scipy, sklearn, numba: in the replica's constructor)",
        lambda: (__import__("deployments.faq.artifact"), __import__("deployments.faq.demo")),
    )
    if faq_model:
        load = module.FAQMatcher.func_or_class._load  # the replica's own loading, without Serve
        model, _ = step(
            "load the FAQ artifact (sha256 of each file, arrays) and score one question (numba's loops from cache)",
            lambda: load(faq_model),
        )
        question = ["How do I sort an array of objects by a property?"]
        score = lambda: [model.match(p, 5) for p in model.probabilities(question)]  # noqa: E731
        step("first FAQ score of a user (warm: the load scored one)", score)
    from deployments.faq.demo import demo_model

    step("train the embedded demo FAQ (what a replica does when faq_model_uri is unset)", demo_model)
    resnet = step(
        "import deployments.resnet.deployment (ImageClassifier's Serve shell: what the driver imports)",
        lambda: __import__("deployments.resnet.deployment", fromlist=["ImageClassifier"]),
    )
    step(
        "import the ResNet model (torch, torchvision: in the replica's constructor)",
        lambda: (__import__("deployments.resnet.model"), __import__("deployments.resnet.preprocess")),
    )
    from deployments.resnet.model import ResNetClassifier, load_resnet152

    network, _ = step(f"build ResNet-152 ({weights} weights)", lambda: load_resnet152(weights))
    classifier = step("ResNetClassifier (device, eval mode)", lambda: ResNetClassifier(network))
    import torch

    batch = torch.rand(1, 3, 224, 224)
    step("first forward pass (1 image)", lambda: classifier.probabilities(batch))
    step("second forward pass (1 image, warm)", lambda: classifier.probabilities(batch))
    del resnet
    return steps


def markdown(report: dict) -> str:
    run = report["start"]
    lines = [
        "# Start-up: the application to its first answer, and each replica's cold start",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; {report['date']}; FAQ model: {report['faq_model']}; ResNet-152 weights: "
        f"{report['weights']}  ",
        f"App launched as: `{run['command']}` (HAProxy + fast ingress, auth on; Serve's background intervals: "
        f"{report.get('serve_background', serve_background(True))}); steal during the start "
        f"{run['steal_percent']}%, load average at the end {run['load_average_1m_at_end']} (2 cores, shared).",
        "",
        *table(
            ["from process start to", "seconds"],
            [["first 200 on POST /faq/match", run["faq_first_200_s"]], ["first 200 on /readyz", run["readyz_200_s"]]],
        ),
        "",
        "Each replica, from Serve's controller log (scheduled: the controller asks Ray for the actor):",
        "",
        *table(
            [
                "replica",
                "scheduled at (s after launch)",
                "serving at (s after launch)",
                "cold start (scheduled -> serving) s",
                "of which constructor + reconfigure + first health check s",
                "of which Ray worker process + imports s",
            ],
            [
                [
                    r["deployment"],
                    r.get("scheduled_after_launch_s", ""),
                    r.get("serving_after_launch_s", ""),
                    r.get("start_s", ""),
                    r.get("constructor_s", ""),
                    r.get("process_and_imports_s", ""),
                ]
                for r in run["replicas"]
            ],
        ),
    ]
    if report.get("steps"):
        lines += [
            "",
            "What a replica does at start, step by step in one fresh process with OMP_NUM_THREADS=1 as in a replica "
            "(cumulative imports: each import line is what it adds to the ones above; a replica does only its own "
            "deployment's steps):",
            "",
            *table(["step", "wall s", "CPU s (all threads)"], report["steps"]),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launcher", choices=["server", "serve-run"], default="server")
    parser.add_argument("--faq-model", help="FAQ model directory (default: the embedded demo, trained at start-up)")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="SERVE_APP_IMAGES__WEIGHTS")
    parser.add_argument("--no-steps", action="store_true", help="skip the step-by-step timing")
    parser.add_argument("--steps-only", action="store_true", help=argparse.SUPPRESS)  # the fresh process's part
    parser.add_argument(
        "--ray-default-intervals",
        action="store_true",
        help="Serve's controller loop and metrics export at Ray's default intervals instead of the project's "
        "(serve_app.ray_env.QUIET_BACKGROUND): what those cost the start",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    faq_model = str(Path(args.faq_model).resolve()) if args.faq_model else None
    if args.steps_only:
        print(json.dumps(timed_steps(faq_model, args.weights)))
        return
    settings = {"SERVE_APP_IMAGES__WEIGHTS": args.weights}
    if faq_model:
        settings["SERVE_APP_FAQ_MODEL_URI"] = faq_model
    if args.ray_default_intervals:
        settings |= RAY_DEFAULT_BACKGROUND
    with tempfile.TemporaryDirectory(prefix="startup-") as folder:
        start = measure_start(args.launcher, settings, Path(folder) / "app.log")
    print(json.dumps(start), file=sys.stderr)
    steps = []
    if not args.no_steps:
        command = [sys.executable, "-m", "benchmarks.startup", "--steps-only", "--weights", args.weights]
        command += ["--faq-model", faq_model] if faq_model else []
        # As in a replica: Ray sets OMP_NUM_THREADS to an actor's CPUs (at least 1), and on 2 busy cores more BLAS
        # threads only spin (the demo's training took 11 s of CPU instead of 3 s).
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=SOURCE_ROOT, env=env)
        steps = json.loads(done.stdout.strip().splitlines()[-1])
    report = {
        **run_info("benchmarks.startup", argv),
        "faq_model": args.faq_model or "embedded demo FAQ (trained at replica start)",
        "weights": args.weights,
        "serve_background": serve_background(args.ray_default_intervals),
        "start": start,
        "steps": steps,
    }
    publish(report, markdown(report), args.out)


if __name__ == "__main__":
    main()
