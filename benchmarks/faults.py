"""Replica crashes under load: kill model replicas mid-run and count the requests that failed.

    python -m benchmarks.faults [--duration 45] [--concurrency 8] \\
        [--kill FAQMatcher@10 ImageClassifier@25] [--out benchmarks/results/faults]

The fast-ingress application (benchmarks.peers.servers "serve-fast", the deployed configuration, auth on)
serves mixed traffic (80% FAQ questions, 20% images, closed loop) while replica processes are killed with
SIGKILL at the given seconds, as a crash or an OOM kill would. Ray restarts them; the ingress re-sends the
idempotent model calls that were on a dead replica. Reported: requests sent, answered, failed (any status
but 200), p99 before and after each kill, the worst latency and the time until latencies are back to normal.
"""

import argparse
import asyncio
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.load import closed_loop
from benchmarks.peers.servers import AUTH_HEADERS, PEERS, running
from benchmarks.report import publish, run_info
from benchmarks.workloads import SCENARIOS

PORT = 18600
APP = "serve_app"


def replica_pids(deployment: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"ServeReplica:{APP}:{deployment}"], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in found.stdout.split()]


async def kill_at(plan: list[tuple[str, float]], started: float, kills: list[dict]) -> None:
    for deployment, at_s in plan:
        await asyncio.sleep(max(0.0, started + at_s - time.perf_counter()))
        pids = replica_pids(deployment)
        if pids:
            os.kill(pids[0], signal.SIGKILL)
        kills.append({"deployment": deployment, "at_s": round(time.perf_counter() - started, 2), "pids": pids[:1]})


async def load_with_kills(url: str, args: argparse.Namespace, plan: list[tuple[str, float]]) -> tuple:
    calls = SCENARIOS["mixed"].calls(PEERS["serve-fast"].paths)
    kills: list[dict] = []
    started = time.perf_counter()
    killer = asyncio.create_task(kill_at(plan, started, kills))
    result = await closed_loop(url, calls, args.concurrency, args.duration, headers=AUTH_HEADERS)
    await killer
    return result, kills, started


def p99_ms(latencies: list[float]) -> float | None:
    return round(float(np.percentile(latencies, 99)) * 1000, 1) if latencies else None


# The traffic each deployment serves (workloads.mixed's labels): a kill's spike and recovery are read from
# its own requests, or the FAQ kill would be charged with the slow images of a later ResNet kill.
TRAFFIC = {"FAQMatcher": "faq", "ImageClassifier": "image"}


def analyse(result, kills: list[dict], started: float) -> dict:
    events = [(finished - started, latency, label, status) for finished, latency, label, status in result.events]
    first_kill = min((kill["at_s"] for kill in kills), default=float("inf"))
    before = [latency for finished, latency, _, _ in events if finished < first_kill]
    for kill in kills:
        label = TRAFFIC.get(kill["deployment"])
        own = [(finished, latency) for finished, latency, lab, _ in events if label in (None, lab)]
        own_before = [latency for finished, latency in own if finished < first_kill]
        normal_s = 2 * float(np.percentile(own_before, 99)) if own_before else 1.0
        after = [(finished, latency) for finished, latency in own if finished - latency >= kill["at_s"] - 5]
        touched = [(finished, latency) for finished, latency in after if finished >= kill["at_s"]]
        slow = [finished for finished, latency in touched if latency > normal_s]
        kill["worst_latency_ms"] = round(max((latency for _, latency in touched), default=0.0) * 1000, 1)
        kill["recovered_after_s"] = round(max(slow) - kill["at_s"], 2) if slow else 0.0
    failed = sum(1 for *_, status in events if status != 200)
    settled_s = max((kill["at_s"] + kill["recovered_after_s"] for kill in kills), default=0.0)
    return {
        "sent": len(events),
        "answered": len(events) - failed,
        "failed": failed,
        "failed_by_status": {str(k): v for k, v in result.summary()["errors_by_status"].items()},
        "p99_ms_before_kills": p99_ms(before),
        "p99_ms_after_recovery": p99_ms([latency for finished, latency, _, _ in events if finished > settled_s]),
        "kills": kills,
        "summary": result.summary(),
    }


def markdown(report: dict) -> str:
    lines = [
        "# Replica crashes under load",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; {report['date']}  ",
        f"Load: mixed (80% faq-single, 20% image-one), closed loop, concurrency {report['concurrency']}, "
        f"{report['duration_s']} s, fast ingress, auth on; FAQ model: {report['faq_model']}.",
        "",
        f"Requests sent {report['sent']}, answered {report['answered']}, **failed {report['failed']}** "
        f"{report['failed_by_status'] or ''}; p99 before the kills {report['p99_ms_before_kills']} ms, after "
        f"recovery {report['p99_ms_after_recovery']} ms.",
        "",
        "Spike and recovery of each kill are read from the requests of the traffic that deployment serves.",
        "",
        "| killed | at s | worst latency ms | back to normal after s |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {k['deployment']} (pid {k['pids'][0] if k['pids'] else 'none found'}) | {k['at_s']} "
        f"| {k['worst_latency_ms']} | {k['recovered_after_s']} |"
        for k in report["kills"]
    ]
    return "\n".join(lines) + "\n"


def parse_kill(text: str) -> tuple[str, float]:
    deployment, _, at_s = text.partition("@")
    return deployment, float(at_s)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=45.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kill", type=parse_kill, nargs="*", default=[("FAQMatcher", 10.0), ("ImageClassifier", 25.0)])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    calls = SCENARIOS["mixed"].calls(PEERS["serve-fast"].paths)
    probes = [calls() for _ in range(5)]
    with tempfile.TemporaryDirectory() as folder:
        # Seeded random ResNet weights unless the caller chose others: pretrained ones cannot be downloaded here.
        weights = {"SERVE_APP_IMAGES__WEIGHTS": os.environ.get("SERVE_APP_IMAGES__WEIGHTS", "random:0")}
        log = Path(folder) / "serve.log"
        server = running(PEERS["serve-fast"], ("faq", "image"), probes, PORT, log, {"cpus": 4}, weights)
        with server as url:
            result, kills, started = asyncio.run(load_with_kills(url, args, sorted(args.kill, key=lambda k: k[1])))
    report = {
        **run_info("benchmarks.faults", argv),
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "faq_model": os.environ.get("SERVE_APP_FAQ_MODEL_URI") or "embedded demo FAQ",
        **analyse(result, kills, started),
    }
    publish(report, markdown(report), args.out)
    return report


if __name__ == "__main__":
    main()
