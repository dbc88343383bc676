"""Overload: offer 3x what the service can do and check it sheds the excess fast and recovers.

    python -m benchmarks.overload [--scenario faq-single] [--factor 3] [--phase-s 15] \\
        [--out benchmarks/results/overload_faq]

Once this machine's CPU is quiet (nothing else loading it), the fast-ingress application (auth on, defaults of
serve_config.yaml) first gets a closed loop (CAPACITY_CONCURRENCY) to measure its capacity in requests/s; then an open
loop (requests start on schedule, whether or not earlier ones finished) offers half the capacity, then ``factor``
times it, then half again. Reported per phase: requests offered, answered 200, refused 503 (``overloaded``, with
Retry-After), anything else (a failure), p50/p99 of the answered ones, p99 of the time to a 503, and the goodput.
"""

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.load import closed_loop, open_loop
from benchmarks.machine_cpu import jiffies, steal_percent, wait_until_quiet
from benchmarks.peers.servers import PEERS, running
from benchmarks.report import publish, run_info, table
from benchmarks.workloads import SCENARIOS
from serve_app.testing import AUTH_HEADERS

PORT = 18800
# Enough to keep the path busy, within the ingress's admission limits (16 image requests in flight by default).
# A batch request holds 16 questions, so 16 of them keep 256 questions in flight: full batches on every replica.
CAPACITY_CONCURRENCY = {"faq-single": 32, "faq-batch": 16, "image-one": 8}


def percentile_ms(latencies: list[float], q: float) -> float | None:
    return round(float(np.percentile(latencies, q)) * 1000, 1) if latencies else None


def phase_report(name: str, result) -> dict:
    by_status: dict = {}
    for _, latency, _, status in result.events:
        by_status.setdefault(status, []).append(latency)
    answered, refused = by_status.get(200, []), by_status.get(503, [])
    others = {str(status): len(values) for status, values in by_status.items() if status not in (200, 503)}
    overflow = sum(n for (_, status), n in result.statuses.items() if status == "client_overflow")
    return {
        "phase": name,
        "offered_rps": round(result.load, 1),
        "sent": len(result.events),
        "answered": len(answered),
        "refused_503": len(refused),
        "failed": sum(others.values()),
        "failed_by_status": others,
        "client_overflow": overflow,
        "p50_ms": percentile_ms(answered, 50),
        "p99_ms": percentile_ms(answered, 99),
        "p50_to_503_ms": percentile_ms(refused, 50),
        "p99_to_503_ms": percentile_ms(refused, 99),
        "goodput_rps": round(len(answered) / result.seconds, 1),
        "client_cpu_percent": result.summary()["client_cpu_percent"],
    }


async def measure(url: str, args: argparse.Namespace) -> dict:
    calls = SCENARIOS[args.scenario].calls(PEERS["serve-fast"].paths)
    concurrency = CAPACITY_CONCURRENCY[args.scenario]
    # Capacity and the phase below it are only meaningful on a machine that nothing else is loading (e.g. a
    # replica an earlier run's overload added, still starting).
    waited_s = await asyncio.to_thread(wait_until_quiet)
    started = jiffies()
    capacity = await closed_loop(url, calls, concurrency, args.capacity_s, headers=AUTH_HEADERS)
    capacity_rps = capacity.summary()["requests_per_s"]
    phases = []
    for name, share in (("below capacity", 0.5), (f"{args.factor:g}x capacity", args.factor), ("after", 0.5)):
        rate = min(share * capacity_rps, args.max_rate or float("inf"))
        result = await open_loop(url, calls, rate, args.phase_s, headers=AUTH_HEADERS)
        phases.append(phase_report(name, result))
    p99_ms = round(capacity.summary()["p99_ms"], 1)
    return {
        "waited_for_quiet_s": waited_s,
        "host_steal_percent": steal_percent(started, jiffies()),
        "capacity_rps": round(capacity_rps, 1),
        "capacity_p99_ms": p99_ms,
        "phases": phases,
    }


def markdown(report: dict) -> str:
    rows = [
        [
            p["phase"],
            p["offered_rps"],
            p["sent"],
            p["answered"],
            p["refused_503"],
            f"{p['failed']} {p['failed_by_status'] or ''}".strip(),
            p["p50_ms"],
            p["p99_ms"],
            p["p50_to_503_ms"],
            p["p99_to_503_ms"],
            p["goodput_rps"],
            p["client_cpu_percent"],
        ]
        for p in report["phases"]
    ]
    header = [
        "phase",
        "offered req/s",
        "sent",
        "answered 200",
        "refused 503",
        "failed",
        "p50 ms",
        "p99 ms",
        "p50 to a 503 ms",
        "p99 to a 503 ms",
        "goodput req/s",
        "client CPU %",
    ]
    return (
        "\n".join(
            [
                f"# Overload: {report['scenario']} at {report['factor']:g}x capacity ({report['peer']})",
                "",
                f"Command: `{report['command']}`  ",
                f"Machine: {report['machine']}; {report['date']}  ",
                f"Capacity (closed loop, concurrency {report['capacity_concurrency']}, {report['capacity_s']} s): "
                f"{report['capacity_rps']} req/s, p99 {report['capacity_p99_ms']} ms (measured once this machine's "
                f"CPU was quiet, after {report.get('waited_for_quiet_s', 0)} s; the hypervisor took "
                f"{report.get('host_steal_percent', 0)}% of this VM's CPU during the run). Then open loop, "
                f"{report['phase_s']} s per phase; auth on, serve_config.yaml's limits"
                + (f"; offered rate capped at {report['max_rate']:g} req/s." if report.get("max_rate") else "."),
                "",
                *table(header, rows),
            ]
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(CAPACITY_CONCURRENCY), default="faq-single")
    parser.add_argument("--peer", choices=["serve-fast", "serve"], default="serve-fast", help="ingress mode")
    parser.add_argument("--factor", type=float, default=3.0)
    parser.add_argument("--capacity-s", type=float, default=10.0)
    parser.add_argument("--phase-s", type=float, default=15.0)
    parser.add_argument(
        "--max-rate",
        type=float,
        help="cap on the offered req/s: above ~1,500 req/s this single-process client on a 2-core box shared with "
        "the service measures its own lag more than the service",
    )
    parser.add_argument("--url", help="load a server that is already running (deployed defaults) instead")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    kinds = ("faq",) if args.scenario.startswith("faq") else ("image",)
    calls = SCENARIOS[args.scenario].calls(PEERS["serve-fast"].paths)
    weights = {"SERVE_APP_IMAGES__WEIGHTS": os.environ.get("SERVE_APP_IMAGES__WEIGHTS", "random:0")}
    if args.url:
        measured = asyncio.run(measure(args.url, args))
    else:
        with tempfile.TemporaryDirectory() as folder:
            log = Path(folder) / "serve.log"
            probes = [calls() for _ in range(3)]
            with running(PEERS[args.peer], kinds, probes, PORT, log, {"cpus": 4}, weights) as url:
                measured = asyncio.run(measure(url, args))
    report = {
        **run_info("benchmarks.overload", argv),
        "scenario": args.scenario,
        "peer": PEERS[args.peer].description,
        "factor": args.factor,
        "capacity_s": args.capacity_s,
        "capacity_concurrency": CAPACITY_CONCURRENCY[args.scenario],
        "phase_s": args.phase_s,
        "max_rate": args.max_rate,
        **measured,
    }
    publish(report, markdown(report), args.out)
    return report


if __name__ == "__main__":
    main()
