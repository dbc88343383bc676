"""Throughput and cost per request with 1, 2 and 4 replicas of a deployment, on this machine's real processes.

    python -m benchmarks.scaling [--deployment FAQMatcher] [--replicas 1 2 4] [--concurrency 64] \\
        [--duration 15] [--out benchmarks/results/scaling_faq]

Each replica count runs the fast-ingress application (benchmarks.peers.servers "serve-fast") with autoscaling
off and that many replicas, under the closed-loop client. The machine's CPU time per request (from
/proc/stat, all processes: client, HAProxy, ingress, replicas, Ray) shows the cost of each request and where
the machine saturates: once every core is busy, more replicas only add contention.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.load import closed_loop
from benchmarks.machine_cpu import jiffies
from benchmarks.peers.servers import PEERS, THROUGHPUT_ENV, running
from benchmarks.report import provenance, publish, run_info, table
from benchmarks.workloads import SCENARIOS
from serve_app.testing import AUTH_HEADERS

SCENARIO_OF = {"FAQMatcher": "faq-single", "ImageClassifier": "image-one"}
PORT = 18500


def measure(deployment: str, replicas: int, args: argparse.Namespace, log_dir: Path) -> dict:
    scenario = SCENARIOS[SCENARIO_OF[deployment]]
    calls = scenario.calls(PEERS["serve-fast"].paths)
    actor = {"num_cpus": 0.1} if deployment == "FAQMatcher" else {"num_cpus": 1}
    options = {
        "cpus": 2 + replicas,
        "deployments": {deployment: {"num_replicas": replicas, "autoscaling_config": None, "ray_actor_options": actor}},
    }
    log = log_dir / f"{deployment}-{replicas}.log"
    with running(PEERS["serve-fast"], scenario.kinds, [calls()], PORT, log, options, THROUGHPUT_ENV) as url:
        asyncio.run(closed_loop(url, calls, args.concurrency, args.warmup, headers=AUTH_HEADERS))
        before = jiffies()
        result = asyncio.run(closed_loop(url, calls, args.concurrency, args.duration, headers=AUTH_HEADERS))
        after = jiffies()
    summary = result.summary()
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    cpu_s = (after.busy - before.busy) / ticks_per_s
    return {
        "deployment": deployment,
        "replicas": replicas,
        **summary,
        "machine_cpu_percent": round(100 * (after.busy - before.busy) / max(1, after.total - before.total), 1),
        "cpu_ms_per_request": round(1000 * cpu_s / max(1, summary["ok"]), 2),
    }


def markdown(report: dict) -> str:
    lines = [
        f"# Scaling: {report['deployment']} replicas on one machine",
        "",
        *provenance(report, f"FAQ model: {report['faq_model']}"),
        "",
        *table(
            ["replicas", "requests/s", "items/s", "p50 ms", "p99 ms", "errors", "machine CPU %", "CPU ms per request"],
            (
                [
                    r["replicas"],
                    f"{r['requests_per_s']:.1f}",
                    f"{r['items_per_s']:.1f}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    r["errors"],
                    r["machine_cpu_percent"],
                    r["cpu_ms_per_request"],
                ]
                for r in report["rows"]
            ),
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployment", choices=sorted(SCENARIO_OF), default="FAQMatcher")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as log_dir:
        rows = []
        for replicas in args.replicas:
            rows.append(measure(args.deployment, replicas, args, Path(log_dir)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    report = {
        "deployment": args.deployment,
        **run_info("benchmarks.scaling", None),
        "faq_model": os.environ.get("SERVE_APP_FAQ_MODEL_URI") or "embedded demo FAQ",
        "rows": rows,
    }
    publish(report, markdown(report), args.out)


if __name__ == "__main__":
    main()
