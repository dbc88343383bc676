"""Model updates and a full redeploy under load, the way operators do them: ``serve deploy`` of a changed config.

    python -m benchmarks.redeploy [--duration 80] [--at 10 25 40] [--concurrency 6] [--out benchmarks/results/redeploy]

The fast-ingress application (auth on) is deployed declaratively from serve_config.yaml (FAQ model v1) and
serves mixed traffic (80% FAQ, 20% images, closed loop) while three changed configs are deployed:

1. ``hot``: FAQMatcher ``user_config.model_uri`` = v2, applied to the running replicas in place;
2. ``tampered``: ``user_config.model_uri`` = a copy of v3 with one byte flipped: refused, v2 keeps serving;
3. ``full``: the application's args change (``faq_model_uri`` = v3, ``model_uri`` unset, one ingress limit
   changed), so Serve replaces every replica of every deployment (a new app version).

Reported: requests sent, answered, failed (any status but 200) with their statuses, p99 per phase, the FAQ
model version the service reported over time (polled from /version) and when each change took effect.
"""

import argparse
import asyncio
import itertools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

from benchmarks.load import closed_loop
from benchmarks.peers.servers import PEERS, running
from benchmarks.report import publish, run_info, table
from benchmarks.workloads import SCENARIOS
from deployments.faq.artifact import ARRAYS_FILE, METADATA_FILE, save_artifact
from deployments.faq.data import load_jsonl
from deployments.faq.demo import DEMO_FAQ_PATH
from deployments.faq.training.train import train
from serve_app.kuberay import SERVE_CONFIG
from serve_app.testing import AUTH_HEADERS
from serve_app.testing.server import serve_deploy

PORT, DASHBOARD_PORT = 18700, 18765
STEPS = ("hot", "tampered", "full")


def make_artifacts(folder: Path) -> dict[str, str]:
    """Three versions of the demo FAQ model, and a copy of v3 with one byte of its model flipped."""
    dataset = load_jsonl(DEMO_FAQ_PATH)
    paths = {}
    for name in ("v1", "v2", "v3"):
        result = train(dataset, folds=2)
        paths[name] = str(folder / name)
        save_artifact(result.model, paths[name], data_sha256=dataset.fingerprint(), metrics=result.metrics)
    shutil.copytree(paths["v3"], folder / "tampered")
    model_file = folder / "tampered" / ARRAYS_FILE
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    paths["tampered"] = str(folder / "tampered")
    return paths


def version_of(artifact: str) -> str:
    return json.loads((Path(artifact) / METADATA_FILE).read_text())["version_id"]


def config_for(step: str, artifacts: dict[str, str]) -> dict:
    """serve_config.yaml as shipped, on loopback with seeded ResNet weights, changed as ``step`` says."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": PORT}
    (app,) = config["applications"]
    app["args"]["images"]["weights"] = os.environ.get("SERVE_APP_IMAGES__WEIGHTS", "random:0")
    app["args"]["faq_model_uri"] = artifacts["v3" if step == "full" else "v1"]
    faq = next(d for d in app["deployments"] if d["name"] == "FAQMatcher")
    faq["user_config"]["model_uri"] = {"hot": artifacts["v2"], "tampered": artifacts["tampered"]}.get(step)
    if step == "full":
        app["args"]["limits"]["max_top_k"] -= 1  # a changed ingress setting: the ingress is replaced too
    return config


def write_config(config: dict, folder: Path, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def watch_versions(url: str, stop: asyncio.Event, started: float) -> list[tuple[float, str | None, str | None]]:
    """(seconds, FAQ model version, update error) every 0.5 s, from /version and /readyz."""
    seen = []
    async with httpx.AsyncClient(base_url=url, headers=AUTH_HEADERS, timeout=10) as http:
        while not stop.is_set():
            try:
                version = (await http.get("/version")).json()["models"]["faq"]
                error = (await http.get("/readyz")).json()["models"]["faq"].get("update_error")
            except (httpx.HTTPError, KeyError, ValueError):
                version, error = None, None
            seen.append((round(time.perf_counter() - started, 2), version, error))
            await asyncio.sleep(0.5)
    return seen


async def deploy_at(plan: list[tuple[str, float, Path]], started: float, done: list[dict]) -> None:
    for step, at_s, config in plan:
        await asyncio.sleep(max(0.0, started + at_s - time.perf_counter()))
        issued = time.perf_counter() - started
        await asyncio.to_thread(serve_deploy, config, DASHBOARD_PORT)
        done.append(
            {"step": step, "at_s": round(issued, 2), "command_s": round(time.perf_counter() - started - issued, 2)}
        )


async def run_load(url: str, args: argparse.Namespace, plan: list[tuple[str, float, Path]]) -> tuple:
    calls = SCENARIOS["mixed"].calls(PEERS["serve-fast"].paths)
    stop, deployed = asyncio.Event(), []
    started = time.perf_counter()
    watcher = asyncio.create_task(watch_versions(url, stop, started))
    deployer = asyncio.create_task(deploy_at(plan, started, deployed))
    result = await closed_loop(url, calls, args.concurrency, args.duration, headers=AUTH_HEADERS)
    await deployer
    stop.set()
    return result, deployed, await watcher, started


def p99_ms(latencies: list[float]) -> float | None:
    return round(float(np.percentile(latencies, 99)) * 1000, 1) if latencies else None


def analyse(result, deployed: list[dict], versions: list, started: float, expected: dict[str, str]) -> dict:
    events = [(finished - started, latency, status) for finished, latency, _, status in result.events]
    bounds = [0.0] + [step["at_s"] for step in deployed] + [float("inf")]
    phases = []
    for index, (low, high) in enumerate(itertools.pairwise(bounds)):
        inside = [latency for finished, latency, status in events if low <= finished < high and status == 200]
        phases.append(
            {
                "phase": "before" if index == 0 else f"after {deployed[index - 1]['step']}",
                "p99_ms": p99_ms(inside),
                "faq_versions": sorted({v for at, v, _ in versions if low <= at < high and v}),
            }
        )
    for step in deployed:
        step["expected_version"] = expected[step["step"]]
        # In effect: the new version answers, or, for a refused model, /readyz names the refusal.
        if step["step"] == "tampered":
            seen = [at for at, _, error in versions if at >= step["at_s"] and error and "tampered" in error]
        else:
            seen = [at for at, version, _ in versions if at >= step["at_s"] and version == step["expected_version"]]
        step["in_effect_after_s"] = round(seen[0] - step["at_s"], 2) if seen else None
    failed = [status for _, _, status in events if status != 200]
    return {
        "sent": len(events),
        "answered": len(events) - len(failed),
        "failed": len(failed),
        "failed_by_status": {str(status): failed.count(status) for status in set(failed)},
        "steps": deployed,
        "phases": phases,
        "versions": versions,
        "update_errors": sorted({error for _, _, error in versions if error}),
        "summary": result.summary(),
    }


def markdown(report: dict) -> str:
    steps = table(
        ["deployed", "at s", "`serve deploy` took s", "FAQ version expected", "in effect after s"],
        [
            [s["step"], s["at_s"], s["command_s"], s["expected_version"], s["in_effect_after_s"]]
            for s in report["steps"]
        ],
    )
    phases = table(
        ["phase", "p99 ms", "FAQ versions answering"],
        [[p["phase"], p["p99_ms"], ", ".join(p["faq_versions"])] for p in report["phases"]],
    )
    return (
        "\n".join(
            [
                "# FAQ model updates and a full redeploy under load (`serve deploy`)",
                "",
                f"Command: `{report['command']}`  ",
                f"Machine: {report['machine']}; {report['date']}  ",
                f"Load: mixed (80% faq-single, 20% image-one), closed loop, concurrency {report['concurrency']}, "
                f"{report['duration_s']} s, fast ingress, auth on, deployed with `serve deploy` (serve_config.yaml).",
                "",
                f"Requests sent {report['sent']}, answered {report['answered']}, **failed {report['failed']}** "
                f"{report['failed_by_status'] or ''}.",
                "",
                *steps,
                "",
                *phases,
                "",
                "In effect: the expected version answers /version (for `tampered`: /readyz reports the refusal).",
                "",
                "Refusals reported by /readyz: " + ("; ".join(report["update_errors"]) or "none"),
            ]
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=80.0)
    parser.add_argument("--at", type=float, nargs=3, default=[10.0, 25.0, 40.0], help="seconds of hot, tampered, full")
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        artifacts = make_artifacts(folder)
        first = write_config(config_for("initial", artifacts), folder, "initial")
        plan = [
            (step, at_s, write_config(config_for(step, artifacts), folder, step))
            for step, at_s in zip(STEPS, args.at, strict=True)
        ]
        versions = {name: version_of(path) for name, path in artifacts.items()}
        expected = {"hot": versions["v2"], "tampered": versions["v2"], "full": versions["v3"]}
        calls = SCENARIOS["mixed"].calls(PEERS["serve-fast"].paths)
        probes = [calls() for _ in range(5)]
        options = {"cpus": 4, "config": first, "dashboard_port": DASHBOARD_PORT}
        with running(PEERS["serve-fast"], ("faq", "image"), probes, PORT, folder / "serve.log", options) as url:
            result, deployed, seen, started = asyncio.run(run_load(url, args, plan))
    report = {
        **run_info("benchmarks.redeploy", argv),
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "initial_version": versions["v1"],
        **analyse(result, deployed, seen, started, expected),
    }
    publish(report, markdown(report), args.out)
    return report


if __name__ == "__main__":
    main()
