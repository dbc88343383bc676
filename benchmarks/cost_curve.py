"""The cost curve: server CPU and memory per request from 1 to 64 concurrent requests, for both routes.

    python -m benchmarks.cost_curve [--faq-model models/faq] [--concurrency 1 2 4 8 16 32 64]
        [--faq-window 10] [--image-window 30] [--out benchmarks/results/cost_curve]

The application runs as deployed (HAProxy + throughput-optimized Serve, auth on; serve_app.testing.server on this
machine's cores). For each route (one FAQ question per request; one ~100 KB JPEG per request) and each
concurrency a closed loop runs; after a warm-up, a window in steady state is measured: the requests answered in
it, and the CPU time (every thread, /proc) of every process of the server over it, Ray's own included, so CPU ms
per request is what a node spends on one request at that load. In steady state the requests in flight at the
window's start and end carry about the same unfinished work, so that work cancels out. Memory: the server's
proportional set size (PSS: shared pages split between the processes mapping them), sampled every second of
the window; its peak, and the peak above the idle server divided by the concurrency (what each request in
flight holds). Each point is measured again, after the machine goes quiet, while the hypervisor takes more than
10% of the CPU (steal), up to 3 times. These are the numbers serve-app capacity wants (latency at a load, and
requests/s per core: 1000 / CPU ms per request).
"""

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.load import closed_loop
from benchmarks.machine_cpu import wait_until_quiet, without_steal
from benchmarks.peers.servers import PEERS, THROUGHPUT_ENV, running, serve_faq_model
from benchmarks.report import publish, run_info, table
from benchmarks.server_processes import descendants, process_cpu_s, pss_bytes, server_pid
from benchmarks.workloads import faq_single, image_one
from serve_app.testing import AUTH_HEADERS, free_port

MiB = 2**20
ROUTES = {"faq": faq_single, "image": image_one}
PATHS = {"faq": "/faq/match", "image": "/images/classify"}


class PeakMemory:
    """Samples the server's PSS every ``interval_s`` in a thread until stopped; keeps the peak."""

    def __init__(self, pids: list[int], interval_s: float = 1.0) -> None:
        self.pids, self.interval_s, self.peak = pids, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, pss_bytes(self.pids))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def _point(url: str, route: str, concurrency: int, warm_up_s: float, window_s: float, pids: list[int]) -> dict:
    loop = asyncio.create_task(
        closed_loop(url, ROUTES[route](PATHS), concurrency, warm_up_s + window_s, headers=AUTH_HEADERS)
    )
    await asyncio.sleep(warm_up_s)
    started, cpu_before = time.perf_counter(), process_cpu_s(pids)
    with PeakMemory(pids) as memory:
        await asyncio.sleep(window_s)
    ended, cpu_s = time.perf_counter(), process_cpu_s(pids) - cpu_before
    result = await loop
    in_window = [(latency, status) for done, latency, _, status in result.events if started <= done < ended]
    latencies_ms = np.array([latency for latency, status in in_window if status == 200]) * 1000
    answered = len(latencies_ms)
    return {
        "route": route,
        "concurrency": concurrency,
        "window_s": round(ended - started, 2),
        "answered": answered,
        "errors": len(in_window) - answered,
        "requests_per_s": round(answered / (ended - started), 2),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 1) if answered else None,
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 1) if answered else None,
        "server_cpu_ms_per_request": round(1000 * cpu_s / answered, 2) if answered else None,
        "server_cpu_cores": round(cpu_s / (ended - started), 2),
        "peak_pss_mib": round(memory.peak / MiB, 1),
    }


def measure_route(url: str, route: str, args: argparse.Namespace, root: int) -> list[dict]:
    window_s = args.faq_window if route == "faq" else args.image_window
    warm_up_s = args.faq_warm_up if route == "faq" else args.image_warm_up
    wait_until_quiet()
    idle_pss = pss_bytes(descendants(root))
    points = []
    for concurrency in args.concurrency:
        wait_until_quiet()
        pids = descendants(root)  # again for each point: Serve may have started replicas (autoscaling)
        point, steal = without_steal(
            lambda c=concurrency, p=pids: asyncio.run(_point(url, route, c, warm_up_s, window_s, p))
        )
        point["steal_percent"] = steal
        point["idle_pss_mib"] = round(idle_pss / MiB, 1)
        point["pss_mib_per_request_in_flight"] = round((point["peak_pss_mib"] - idle_pss / MiB) / concurrency, 2)
        print(point, flush=True)
        points.append(point)
    return points


def markdown(report: dict) -> str:
    columns = (
        "route",
        "concurrency",
        "answered",
        "errors",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "server CPU ms/request",
        "server CPU cores busy",
        "peak PSS MiB",
        "PSS above idle per request in flight MiB",
        "steal %",
    )
    keys = (
        "route",
        "concurrency",
        "answered",
        "errors",
        "requests_per_s",
        "p50_ms",
        "p99_ms",
        "server_cpu_ms_per_request",
        "server_cpu_cores",
        "peak_pss_mib",
        "pss_mib_per_request_in_flight",
        "steal_percent",
    )
    rows = [[point[key] for key in keys] for point in report["points"]]
    idle = {point["route"]: point["idle_pss_mib"] for point in report["points"]}
    lines = [
        "# The cost curve: CPU and memory per request, 1 to 64 concurrent",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; {report['date']}; commit {report['commit']}  ",
        f"FAQ model: {report['faq_model']}; ResNet-152 weights: {report['weights']}; windows: FAQ "
        f"{report['faq_window_s']:g} s, images {report['image_window_s']:g} s after warm-ups of "
        f"{report['faq_warm_up_s']:g} / {report['image_warm_up_s']:g} s  ",
        f"Server: {report['server']}; idle PSS before each route: "
        + ", ".join(f"{route} {mib} MiB" for route, mib in idle.items()),
        "",
        __doc__.split("\n\n", 2)[2].strip(),
        "",
        *table(columns, rows),
        "",
    ]
    for route in ROUTES:
        costs = [p["server_cpu_ms_per_request"] for p in report["points"] if p["route"] == route]
        costs = [cost for cost in costs if cost is not None]
        if costs:
            lines.append(
                f"{route}: server CPU per request {min(costs):.2f}-{max(costs):.2f} ms across the concurrencies "
                f"(median {statistics.median(costs):.2f} ms: ~{1000 / statistics.median(costs):.0f} requests/s "
                "per fully used core)."
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", nargs="+", choices=list(ROUTES), default=list(ROUTES))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--faq-warm-up", type=float, default=3.0)
    parser.add_argument("--faq-window", type=float, default=10.0)
    parser.add_argument("--image-warm-up", type=float, default=10.0)
    parser.add_argument("--image-window", type=float, default=30.0)
    parser.add_argument("--faq-model", help="FAQ model directory (default: the embedded demo FAQ)")
    parser.add_argument(
        "--weights", default="random:0", help="SERVE_APP_IMAGES__WEIGHTS (seeded random: the same work, no download)"
    )
    parser.add_argument("--cpus", type=float, default=2, help="logical CPUs the server's Ray node advertises")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    serve_faq_model(args.faq_model)
    os.environ["SERVE_APP_IMAGES__WEIGHTS"] = args.weights  # the server inherits it
    peer, port = PEERS["serve-fast"], free_port()
    probes = [ROUTES[route](PATHS)() for route in args.routes]
    options = {"cpus": args.cpus}
    command = peer.launch(port, tuple(args.routes), options).command
    points = []
    with (
        tempfile.TemporaryDirectory(prefix="cost-curve-") as folder,
        running(peer, tuple(args.routes), probes, port, Path(folder) / "server.log", options, THROUGHPUT_ENV) as url,
    ):
        root = server_pid(command)
        for route in args.routes:
            points += measure_route(url, route, args, root)
    report = {
        **run_info("benchmarks.cost_curve", argv),
        "server": f"{peer.description}, {args.cpus:g} Ray CPUs",
        "faq_model": args.faq_model or "embedded demo FAQ",
        "weights": args.weights,
        "faq_warm_up_s": args.faq_warm_up,
        "faq_window_s": args.faq_window,
        "image_warm_up_s": args.image_warm_up,
        "image_window_s": args.image_window,
        "points": points,
    }
    publish(report, markdown(report), args.out)
    return report


if __name__ == "__main__":
    main()
