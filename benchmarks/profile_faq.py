"""Where the CPU of one FAQ question goes at c=1 (or ``--concurrency``): the deployed stack against one uvicorn
process, split by component.

    python -m benchmarks.profile_faq --faq-model models/faq [--duration 20] [--peers serve-fast fastapi] \\
        [--concurrency 1] [--out benchmarks/results/faq_profile]

Each peer is started as benchmarks.compare starts it (serve-fast: HAProxy + fast ingress, auth on), warmed up,
then loaded with one FAQ question at a time (closed loop, c=1) twice:

1. clean: no profiler attached. The wall-clock latency, and the CPU each thread of each of the server's
   processes used (utime + stime from /proc/<pid>/task/<tid>/stat) divided by the requests answered: the
   top-level split, by process (HAProxy is C: it is measured only this way) and by thread.
2. profiled: ``py-spy record --nonblocking --threads`` (idle samples off) on every Python process of the server
   at once. Each thread's samples are grouped into components by their frames (``component_of``), and the
   thread's clean CPU per request is shared out in proportion. Threads without Python (Ray's C++ core worker,
   gRPC) keep their clean CPU under their thread name.

The idle CPU of each process (its rate over a few seconds before the load) is reported beside it: Serve's
controller, the raylet and the GCS tick whether or not requests come.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load import closed_loop
from benchmarks.machine_cpu import jiffies, steal_percent
from benchmarks.peers.servers import PEERS, THROUGHPUT_ENV, running, serve_faq_model
from benchmarks.report import provenance, publish, run_info, table
from benchmarks.server_processes import CLOCK_TICKS, cmdline, descendants, role_of, server_pid, stat_fields
from benchmarks.workloads import SCENARIOS
from serve_app.testing import AUTH_HEADERS

PORT = 18450
PY_SPY = Path(sys.executable).parent / "py-spy"
SAMPLE_RATE = 100  # per second and process; py-spy's own CPU shares the 2 cores with what it measures

# Components, first match wins. A "context" rule matches a sample when any of its frames is in one of the
# places: everything called from there belongs to it (the JSON a log formatter writes is logging). A "leaf" rule
# matches on the innermost frame from a known place: wrappers (uvicorn, Serve's replica, our ASGI middlewares)
# sit outside every request, so only the time spent in their own code is theirs.
CONTEXT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model scoring", ("deployments/faq/", "sklearn/", "scipy/", "numba/", "score_queries (deployments")),
    ("logging (Serve's access log and request log lines)", ("logging/",)),
    ("our request metrics (serve_app.metrics)", ("RequestMetrics._record (serve_app", "AppMetrics.")),
    ("Serve's own metrics / bookkeeping", ("ray/util/metrics.py", "ray/serve/metrics.py", "metrics_utils.py")),
    ("auth (serve_app.auth)", ("Authenticator.", "jwt/")),
    ("JSON encode/decode", ("json/", "orjson", "JSONResponse.render")),
    ("FastAPI body parsing + pydantic validation", ("pydantic", "fastapi/_compat", "fastapi/dependencies/")),
    (
        "Serve handle call: routing, gRPC, serialization",
        (
            "ray/serve/handle.py",
            "ray/serve/_private/router.py",
            "ray/serve/_private/request_router",
            "ray/serve/_private/replica_result.py",
            "ray/actor.py",
            "ray/_private/serialization.py",
            "cloudpickle",
            "msgpack",
            "grpc/",
        ),
    ),
)
LEAF_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("our request metrics (serve_app.metrics)", ("serve_app/metrics.py",)),
    ("auth (serve_app.auth)", ("serve_app/auth.py",)),
    ("coalescer (serve_app.coalesce)", ("serve_app/coalesce.py",)),
    ("our other middlewares + route (admission, rate limit, body limits, request ids, ingress)", ("serve_app/",)),
    ("Ray Serve's own Python (replica request path; the controller's loop)", ("ray/serve/",)),
    ("Ray core worker (Python/Cython side)", ("ray/",)),
    ("uvicorn / HTTP parsing", ("uvicorn/", "h11/", "httptools")),
    ("starlette / FastAPI routing", ("starlette/", "fastapi/", "anyio/")),
    ("event loop / thread hand-off", ("asyncio/", "uvloop", "selectors.py", "concurrent/", "threading.py", "queue.py")),
)
OTHER = "other Python"


def component_of(frames: list[str]) -> str:
    """The component a sample's frames (outermost first, py-spy's ``function (file)``) belong to."""
    for name, places in CONTEXT_RULES:
        if any(place in frame for frame in frames for place in places):
            return name
    for frame in reversed(frames):
        for name, places in LEAF_RULES:
            if any(place in frame for place in places):
                return name
    return OTHER


_THREAD = re.compile(r"^thread \((0x[0-9a-fA-F]+|\d+)\)")


def parse_raw(text: str) -> dict[int, Counter]:
    """py-spy's ``--format raw --threads`` output: thread id -> Counter of stacks (tuples of frames, outermost
    first, without the thread's own label)."""
    stacks: dict[int, Counter] = defaultdict(Counter)
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        label, *frames = stack.split(";")
        if match := _THREAD.match(label):
            stacks[int(match.group(1), 0)][tuple(frames)] += int(count)
    return dict(stacks)


# Innermost frames of a thread that waits (py-spy's own idle test misses these with --nonblocking): blocked on a
# lock or a queue, or inside the event loop's C code (uvloop's run, mostly epoll_wait) or Ray's C++ task loop.
IDLE_LEAVES = (
    "Condition.wait (threading.py)",
    "Event.wait (threading.py)",
    "Thread._wait_for_tstate_lock (threading.py)",
    "Queue.get (queue.py)",
    "_worker (concurrent/futures/thread.py)",
    "WorkerThread.run (anyio/_backends/_asyncio.py)",
    "select (selectors.py)",
    "Runner.run (asyncio/runners.py)",
    "BaseEventLoop.run_forever (asyncio/base_events.py)",
    "BaseEventLoop.run_until_complete (asyncio/base_events.py)",
    "Worker.main_loop (ray/_private/worker.py)",
    # a thread whose target is C: uvloop's run_forever in Ray's asyncio thread
    "Thread.run (threading.py)",
    "run_task_loop (ray/_raylet.pyx)",
)


def is_idle(frames: tuple[str, ...]) -> bool:
    return not frames or frames[-1] in IDLE_LEAVES


def shares(stacks: Counter, expected_samples: float = 0.0) -> dict[str, float]:
    """Share of a thread's CPU per component: its busy samples by component, over the samples it should have had
    on CPU (``expected_samples``: its CPU seconds times the sampling rate) when those are more. What the busy
    samples do not cover is native code under a waiting frame (uvloop's C loop, Ray's C++ core worker): it is
    ``UNSEEN``."""
    by_component: Counter = Counter()
    for frames, count in stacks.items():
        if not is_idle(frames):
            by_component[component_of(list(frames))] += count
    busy = sum(by_component.values())
    if not stacks:  # not a Python thread
        return {}
    total = max(busy, expected_samples)
    if not total:  # a Python thread seen only waiting: its CPU ran in native code
        return {UNSEEN: 1.0}
    if total > busy:
        by_component[UNSEEN] = total - busy
    return {name: count / total for name, count in by_component.items()}


UNSEEN = "C code under the event loop's frame (uvloop, gRPC aio: socket I/O, receiving/answering calls)"
# Threads that never run Python, by name (their comm, pool numbers dropped).
NATIVE_THREADS = {
    "event_engine": "gRPC C-core threads (Serve handle transport)",
    "haproxy": "HAProxy (C)",
    "worker.io": "Ray core worker C++ threads",
    "client.poll": "Ray core worker C++ threads",
    "gcs_client_io_s": "Ray core worker C++ threads",
}


@dataclass(frozen=True)
class ThreadCpu:
    pid: int
    tid: int
    name: str  # the thread's comm
    ms_per_request: float
    expected_samples: float = 0.0  # its CPU seconds in the profiled window times the sampling rate


def attribute(threads: Iterable[ThreadCpu], samples: dict[int, Counter]) -> dict[str, float]:
    """ms of CPU per request by component: each Python thread's CPU shared out by its py-spy samples; a thread
    without samples (C++ threads of Ray's core worker, gRPC, HAProxy) keeps its CPU under its thread name."""
    split: Counter = Counter()
    for thread in threads:
        if thread.ms_per_request <= 0:
            continue
        if thread_shares := shares(samples.get(thread.tid, Counter()), thread.expected_samples):
            for name, share in thread_shares.items():
                split[name] += thread.ms_per_request * share
        else:
            kind = _thread_kind(thread.name)
            split[NATIVE_THREADS.get(kind, f"native thread: {kind}")] += thread.ms_per_request
    return dict(split)


def top_leaves(samples: dict[int, Counter], per_component: int = 4) -> dict[str, list[tuple[str, float]]]:
    """Per component, the innermost frames that took most of a process's samples, with their share of them."""
    leaves: dict[str, Counter] = defaultdict(Counter)
    for stacks in samples.values():
        for frames, count in stacks.items():
            if not is_idle(frames):
                leaves[component_of(list(frames))][frames[-1]] += count
    total = sum(sum(counter.values()) for counter in leaves.values()) or 1
    return {
        name: [(leaf, round(count / total, 3)) for leaf, count in counter.most_common(per_component)]
        for name, counter in leaves.items()
    }


def _thread_kind(comm: str) -> str:
    # Threads numbered by their pool (grpc_global_tim, worker.io.1) are one kind.
    return re.sub(r"[\d.]+$", "", comm) or comm


def thread_ticks(pids: Iterable[int]) -> dict[tuple[int, int], tuple[str, int]]:
    """(pid, tid) -> (thread name, utime + stime in clock ticks)."""
    ticks = {}
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                fields = stat_fields(task / "stat")
                comm = (task / "comm").read_text().strip()
            except OSError:
                continue
            ticks[pid, int(task.name)] = (comm, int(fields[11]) + int(fields[12]))
    return ticks


def cpu_ms(before: dict, after: dict) -> dict[tuple[int, int], tuple[str, float]]:
    """(pid, tid) -> (name, CPU ms used between two thread_ticks readings)."""
    return {
        key: (name, 1000 * (ticks - before.get(key, (name, 0))[1]) / CLOCK_TICKS)
        for key, (name, ticks) in after.items()
    }


# --- runs ----------------------------------------------------------------------------------------------------


def _load(url: str, seconds: float, concurrency: int) -> dict:
    calls = SCENARIOS["faq-single"].calls({"faq": "/faq/match"})
    return asyncio.run(closed_loop(url, calls, concurrency, seconds, headers=AUTH_HEADERS)).summary()


def _window(url: str, pids: list[int], seconds: float, concurrency: int) -> tuple[dict, dict, dict]:
    """A closed-loop load of ``seconds``: its summary, each thread's CPU ms over it, and the machine's steal and busy %
    (all processes, this client and other users of the machine included)."""
    machine, before = jiffies(), thread_ticks(pids)
    summary = _load(url, seconds, concurrency)
    used = cpu_ms(before, thread_ticks(pids))
    after = jiffies()
    busy = round(100 * (after.busy - machine.busy) / max(1, after.total - machine.total), 1)
    return summary, used, {"steal_percent": steal_percent(machine, after), "machine_busy_percent": busy}


def _record(pids: list[int], seconds: float, folder: Path) -> list[tuple[subprocess.Popen, Path]]:
    spies = []
    for pid in pids:
        out = folder / f"{pid}.txt"
        command = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(int(seconds) + 2), "--rate"]
        command += [str(SAMPLE_RATE), "--format", "raw", "--threads", "--nonblocking", "--nolineno", "-o", str(out)]
        spies.append((subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out))
    return spies


def profile(peer_name: str, url: str, server_pid: int, seconds: float, folder: Path, concurrency: int = 1) -> dict:
    pids = [pid for pid in descendants(server_pid) if cmdline(pid)]
    roles = {pid: role_of(cmdline(pid)) for pid in pids}
    python = [pid for pid, role in roles.items() if role not in ("HAProxy", "raylet", "GCS", "other")]
    _load(url, 5, concurrency)  # warm-up: connections, caches, numba
    idle_before = thread_ticks(pids)
    time.sleep(5)
    idle = cpu_ms(idle_before, thread_ticks(pids))
    clean, used, clean_machine = _window(url, pids, seconds, concurrency)
    spies = _record(python, seconds, folder)
    time.sleep(1)  # py-spy attaches
    profiled, profiled_used, profiled_machine = _window(url, pids, seconds, concurrency)
    samples: dict[int, dict[int, Counter]] = {}
    for (spy, out), pid in zip(spies, python, strict=True):
        _, error = spy.communicate(timeout=60)
        samples[pid] = parse_raw(out.read_text()) if out.exists() else {}
        if not out.exists():
            print(f"py-spy on {roles[pid]} ({pid}) wrote nothing: {error.decode()[-300:]}", file=sys.stderr)
    requests = clean["ok"] or 1
    processes = []
    for pid in pids:
        threads = [
            ThreadCpu(pid, tid, name, ms / requests, profiled_used.get((p, tid), (name, 0.0))[1] / 1000 * SAMPLE_RATE)
            for (p, tid), (name, ms) in used.items()
            if p == pid and ms > 0
        ]
        idle_ms_per_s = sum(ms for (p, _), (_, ms) in idle.items() if p == pid) / 5
        total = sum(t.ms_per_request for t in threads)
        if not total and not idle_ms_per_s:
            continue
        processes.append(
            {
                "role": roles[pid],
                "pid": pid,
                "cpu_ms_per_request": round(total, 3),
                "idle_cpu_ms_per_s": round(idle_ms_per_s, 2),
                # what the process would have used anyway over the window, per request
                "idle_share_ms_per_request": round(idle_ms_per_s * clean["seconds"] / requests, 3),
                "threads": {
                    f"{t.name} ({t.tid})": round(t.ms_per_request, 3)
                    for t in sorted(threads, key=lambda t: -t.ms_per_request)
                },
                "components": {
                    name: round(ms, 3)
                    for name, ms in sorted(attribute(threads, samples.get(pid, {})).items(), key=lambda kv: -kv[1])
                },
                "top_leaves": top_leaves(samples.get(pid, {})),
                "py_spy_samples": sum(sum(c.values()) for c in samples.get(pid, {}).values()),
            }
        )
    processes.sort(key=lambda p: -p["cpu_ms_per_request"])
    return {
        "peer": peer_name,
        "clean": clean,
        "clean_machine": clean_machine,
        "profiled": profiled,
        "profiled_machine": profiled_machine,
        "server_cpu_ms_per_request": round(sum(p["cpu_ms_per_request"] for p in processes), 3),
        "processes": processes,
    }


def run_peer(peer_name: str, seconds: float, folder: Path, options: dict | None = None, concurrency: int = 1) -> dict:
    """Start the peer as benchmarks.compare does (with ``options``, as its --peer-options), profile it, stop it."""
    peer = PEERS[peer_name]
    calls = SCENARIOS["faq-single"].calls(peer.paths)
    probes = [calls() for _ in range(5)]
    command = peer.launch(PORT, ("faq",), options or {}).command
    with running(peer, ("faq",), probes, PORT, folder / f"{peer_name}.log", options, THROUGHPUT_ENV) as url:
        return profile(peer_name, url, server_pid(command), seconds, folder, concurrency)


PATH_ROLES = ("HAProxy", "Ingress", "FAQMatcher", "uvicorn (FastAPI peer)")
BACKGROUND = "background: Serve controller, GCS, raylet, agents, idle workers (they tick without requests too)"


def path_breakdown(run: dict) -> dict[str, dict[str, float]]:
    """Component -> {process role on the request path: ms/request}; every other process of the server in one
    BACKGROUND row."""
    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for process in run["processes"]:
        if process["role"] in PATH_ROLES:
            for name, ms in process["components"].items():
                rows[name][process["role"]] += ms
        else:
            rows[BACKGROUND]["other processes"] += process["cpu_ms_per_request"]
    return {name: dict(by_role) for name, by_role in rows.items()}


def _breakdown_table(run: dict) -> list[str]:
    rows = path_breakdown(run)
    roles = [role for role in (*PATH_ROLES, "other processes") if any(role in r for r in rows.values())]
    ordered = sorted(rows.items(), key=lambda kv: (kv[0] == BACKGROUND, -sum(kv[1].values())))
    body = [
        [name, *(f"{by_role[role]:.2f}" if role in by_role else "" for role in roles), f"{sum(by_role.values()):.2f}"]
        for name, by_role in ordered
    ]
    totals = [f"{sum(r.get(role, 0.0) for r in rows.values()):.2f}" for role in roles]
    body.append(["**total**", *totals, f"{sum(sum(r.values()) for r in rows.values()):.2f}"])
    return table(["component", *roles, "total ms/request"], body)


def markdown(report: dict) -> str:
    lines = [
        f"# FAQ, one question per request at c={report.get('concurrency', 1)}: where each request's CPU goes",
        "",
        *provenance(report, f"FAQ model: {report['faq_model']}"),
        f"Method: two c={report.get('concurrency', 1)} closed-loop windows per stack on the same running server: "
        "clean (wall-clock latency, and "
        "CPU per request of every thread of every server process from /proc), then profiled (py-spy, "
        f"{SAMPLE_RATE} Hz, --nonblocking, idle samples off); each Python thread's clean CPU is shared out by its "
        "py-spy samples. Client: benchmarks/load.py in this process, on the same 2 cores.",
        "",
        "## Wall clock and CPU per request",
        "",
        *table(
            [
                "stack",
                "requests",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "server CPU ms/request",
                "client CPU %",
                "steal %",
                "machine busy % (2 cores)",
                "p50 ms under py-spy",
            ],
            [
                [
                    run["peer"],
                    run["clean"]["ok"],
                    f"{run['clean']['p50_ms']:.2f}",
                    f"{run['clean']['p90_ms']:.2f}",
                    f"{run['clean']['p99_ms']:.2f}",
                    f"{run['server_cpu_ms_per_request']:.2f}",
                    run["clean"]["client_cpu_percent"],
                    run["clean_machine"]["steal_percent"],
                    run["clean_machine"]["machine_busy_percent"],
                    f"{run['profiled']['p50_ms']:.2f}",
                ]
                for run in report["runs"]
            ],
        ),
    ]
    for run in report["runs"]:
        lines += ["", f"## {run['peer']}: CPU ms per request by component and process", ""]
        lines += _breakdown_table(run)
    for run in report["runs"]:
        lines += ["", f"## {run['peer']}: CPU ms per request by process", ""]
        lines += table(
            ["process", "CPU ms/request", "idle CPU ms/s (before the load)", "of which idle rate, ms/request"],
            [
                [p["role"], f"{p['cpu_ms_per_request']:.3f}", p["idle_cpu_ms_per_s"], p["idle_share_ms_per_request"]]
                for p in run["processes"]
                if p["cpu_ms_per_request"] >= 0.005
            ],
        )
        lines += ["", f"## {run['peer']}: what the busiest frames are (share of the process's busy samples)", ""]
        rows = [
            [p["role"], name, "; ".join(f"{leaf} {share:.1%}" for leaf, share in leaves)]
            for p in run["processes"]
            if p["role"] in PATH_ROLES
            for name, leaves in p["top_leaves"].items()
        ]
        lines += table(["process", "component", "innermost frames"], rows)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--peers", nargs="+", choices=["serve-fast", "fastapi", "serve"], default=["serve-fast", "fastapi"]
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each window (clean, profiled)")
    parser.add_argument("--faq-model", help="FAQ model directory (default: the embedded demo FAQ)")
    parser.add_argument("--concurrency", type=int, default=1, help="closed-loop clients during each window")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--serve-options",
        type=json.loads,
        default={},
        help="the Serve peers' options (JSON), as in benchmarks.compare's --peer-options: deployments, cpus",
    )
    parser.add_argument("--raw-dir", type=Path, help="keep py-spy's raw samples (one file per process) here")
    args = parser.parse_args(argv)
    serve_faq_model(args.faq_model)
    if os.geteuid() != 0:
        print("py-spy needs to ptrace the server's processes: run as root (or with CAP_SYS_PTRACE)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="faq-profile-") as folder:
        raw = args.raw_dir or Path(folder)
        raw.mkdir(parents=True, exist_ok=True)
        runs = [
            run_peer(
                peer, args.duration, raw, args.serve_options if peer.startswith("serve") else None, args.concurrency
            )
            for peer in args.peers
        ]
    report = {
        **run_info("benchmarks.profile_faq", argv),
        "faq_model": args.faq_model or "embedded demo FAQ",
        "sample_rate_hz": SAMPLE_RATE,
        "concurrency": args.concurrency,
        "runs": runs,
    }
    publish(report, markdown(report), args.out)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # leave through the finally blocks: servers stopped
    main()
