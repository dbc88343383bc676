"""What Serve's background work costs the node: each process's CPU, idle or under image load, with Serve's
controller loop and metrics export at the project's intervals and at Ray's defaults, alternating.

    python -m benchmarks.background_cost [--rounds 3] [--settle 20] [--window 30] [--image-load 32]
        [--out benchmarks/results/background_cost_idle]

Each round starts the application as deployed twice (``serve-fast`` and ``serve-fast-ray-intervals`` of
benchmarks.peers: HAProxy + throughput-optimized Serve, auth on, both models, 2 Ray CPUs), in alternating order;
once both models answer and ``--settle`` seconds have passed, it reads the CPU time (every thread, /proc) of every
process below the server over ``--window`` seconds, named by what each process is (benchmarks.server_processes).
A window during which the hypervisor took over 10% of the CPU is measured again. With ``--image-load N``, N
clients post one image each in a closed loop during the settle time and the window, and the image deployment runs
two fixed replicas of one CPU (the CPU layout of ``resnet_throughput --replicas 2``, Ray given ``--cpus`` + 1
logical CPUs so that both fit beside the other deployments): on a node whose replicas keep its cores busy, every
CPU-ms of background work is taken from them, and the table shows who got the cores.
"""

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.load import closed_loop
from benchmarks.machine_cpu import without_steal
from benchmarks.peers.servers import PEERS, THROUGHPUT_ENV, running, serve_faq_model
from benchmarks.report import alternating, provenance, publish, run_info, table
from benchmarks.server_processes import cmdline, descendants, process_cpu_s, role_of, server_pid
from benchmarks.workloads import faq_single, image_one
from serve_app.ray_env import QUIET_BACKGROUND, RAY_DEFAULT_BACKGROUND
from serve_app.testing import AUTH_HEADERS, free_port

STACKS = {"project": "serve-fast", "Ray's defaults": "serve-fast-ray-intervals"}
PATHS = {"faq": "/faq/match", "image": "/images/classify"}
# Under image load: two image replicas of one CPU each, fixed (no autoscaling mid-window).
IMAGE_REPLICAS = {
    "ImageClassifier": {"num_replicas": 2, "autoscaling_config": None, "ray_actor_options": {"num_cpus": 1}}
}


def cpu_ms_per_s_by_role(root: int, window_s: float) -> tuple[dict[str, float], dict[str, int]]:
    """CPU milliseconds per second of wall time of the processes below ``root``, summed by role; and how many
    processes started and ended in the window (a started one counts whole: all its CPU falls in the window; an
    ended one's CPU in the window is lost, hence the count)."""
    pids = descendants(root)
    roles = {pid: role_of(cmdline(pid)) for pid in pids}
    before = {pid: process_cpu_s([pid]) for pid in pids}
    started = time.monotonic()
    time.sleep(window_s)
    now = descendants(root)
    elapsed = time.monotonic() - started
    new = [pid for pid in now if pid not in before]
    roles |= {pid: role_of(cmdline(pid)) for pid in new}
    after = {pid: process_cpu_s([pid]) for pid in now}
    by_role: dict[str, float] = defaultdict(float)
    for pid, cpu_s in after.items():
        by_role[roles[pid]] += max(0.0, cpu_s - before.get(pid, 0.0)) * 1000 / elapsed
    ordered = {role: round(ms, 1) for role, ms in sorted(by_role.items(), key=lambda item: -item[1])}
    return ordered, {"started": len(new), "ended": len(set(pids) - set(now))}


def ray_cpus(args: argparse.Namespace) -> float:
    """Under load, one more logical CPU than cores (as resnet_throughput gives Ray): the two image replicas' 2 CPUs
    fit beside the Ingress and the FAQMatcher (0.5 each), so both replicas run and the cores are all in use."""
    return args.cpus + 1 if args.image_load else args.cpus


def measured_stack(name: str, args: argparse.Namespace) -> dict:
    peer, port, kinds = PEERS[STACKS[name]], free_port(), ("faq", "image")
    probes = [faq_single(PATHS)(), image_one(PATHS)()]
    options: dict = {"cpus": ray_cpus(args), "deployments": IMAGE_REPLICAS if args.image_load else {}}
    command = peer.launch(port, kinds, options).command
    with (
        tempfile.TemporaryDirectory(prefix="background-cost-") as folder,
        running(peer, kinds, probes, port, Path(folder) / "server.log", options, THROUGHPUT_ENV) as url,
    ):
        root = server_pid(command)
        (by_role, processes, load), steal = without_steal(lambda: window_under_load(url, root, args))
    measured = {"stack": name, "by_role": by_role, "total": round(sum(by_role.values()), 1), "processes": processes}
    return measured | load | {"host_steal_percent": steal}


def window_under_load(url: str, root: int, args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """cpu_ms_per_s_by_role over the window after ``args.settle`` seconds, idle or with ``args.image_load`` clients
    posting images all along; and, under load, the images/s and errors of the whole load (settle time and window)."""
    if not args.image_load:
        time.sleep(args.settle)  # replicas' start-up work and the first metrics rounds over
        return *cpu_ms_per_s_by_role(root, args.window), {}
    seconds = args.settle + args.window + 2  # the load outlasts the window
    load = closed_loop(url, image_one(PATHS), args.image_load, seconds, headers=AUTH_HEADERS)
    with ThreadPoolExecutor(1) as pool:
        running_load = pool.submit(asyncio.run, load)
        time.sleep(args.settle)
        by_role, processes = cpu_ms_per_s_by_role(root, args.window)
        summary = running_load.result().summary()
    return by_role, processes, {"images_per_s": round(summary["items_per_s"], 2), "errors": summary["errors"]}


def markdown(report: dict) -> str:
    rounds, names = report["rounds"], list(STACKS)
    load = report["image_load"]
    title = f"under {load} concurrent image requests (two image replicas of 1 CPU)" if load else "idle"
    lines = [
        f"# What Serve's background work costs: the application {title}",
        "",
        *provenance(report, f"{report['cpus']:g} Ray CPUs"),
        "",
        "CPU-ms per second of wall time, every process of the server (1000 = one core busy), by role, with Serve's "
        f"background work at the project's intervals ({_settings(QUIET_BACKGROUND)}) and at Ray's defaults "
        f"({_settings(RAY_DEFAULT_BACKGROUND)}).",
        "",
    ]
    for index, round_results in enumerate(rounds, 1):
        by_stack = {m["stack"]: m for m in round_results}
        ray_defaults = by_stack[names[1]]["by_role"]
        roles = sorted({role for m in round_results for role in m["by_role"]}, key=lambda r: -ray_defaults.get(r, 0))
        rows = [[role, *(by_stack[n]["by_role"].get(role, 0.0) for n in names)] for role in roles]
        rows.append(["**total**", *(f"**{by_stack[n]['total']}**" for n in names)])
        if report["image_load"]:
            rows.append(["images/s (whole load)", *(by_stack[n]["images_per_s"] for n in names)])
            rows.append(["failed requests (whole load)", *(by_stack[n].get("errors", "not recorded") for n in names)])
        rows.append(["processes started / ended in the window", *(_processes(by_stack[n]) for n in names)])
        rows.append(["steal %", *(by_stack[n]["host_steal_percent"] for n in names)])
        lines += [f"## Round {index}", "", *table(["process", *names], rows), ""]
    totals = {n: [next(m["total"] for m in results if m["stack"] == n) for results in rounds] for n in names}
    medians = {n: statistics.median(values) for n, values in totals.items()}
    cores_ms = 1000 * report["machine_cores"]
    lines += [
        "## Summary",
        "",
        *table(
            ["setting", "total CPU-ms/s, each round", "median", "share of the machine's cores"],
            [[n, ", ".join(f"{v:g}" for v in totals[n]), medians[n], f"{medians[n] / cores_ms:.1%}"] for n in names],
        ),
        "",
    ]
    return "\n".join(lines)


def _processes(measured: dict) -> str:
    changes = measured.get("processes")
    return f"{changes['started']} / {changes['ended']}" if changes else "not recorded"


def _settings(env: dict[str, str]) -> str:
    return ", ".join(f"`{name}={value}`" for name, value in env.items())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds idle before the window")
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--image-load", type=int, default=0, help="concurrent image requests (0: idle)")
    parser.add_argument("--faq-model", help="FAQ model directory (default: the embedded demo FAQ)")
    parser.add_argument("--cpus", type=float, default=2, help="logical CPUs the server's Ray node advertises")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    serve_faq_model(args.faq_model)
    os.environ.setdefault("SERVE_APP_IMAGES__WEIGHTS", "random:0")  # the same replicas, no download
    rounds = [[measured_stack(name, args) for name in alternating(STACKS, index)] for index in range(args.rounds)]
    report = {
        **run_info("benchmarks.background_cost", argv),
        "machine_cores": os.cpu_count(),
        "cpus": ray_cpus(args),
        "settle_s": args.settle,
        "window_s": args.window,
        "image_load": args.image_load,
        "rounds": rounds,
    }
    publish(report, markdown(report), args.out)
    return report


if __name__ == "__main__":
    main()
