"""Serving stacks measured in turns, all running at once, for ratios this host's drift cannot fake.

    python -m benchmarks.side_by_side --scenario faq-single --peers fastapi fastapi-workers serve-fast \\
        --target serve-fast --concurrency 1 16 64 --rounds 3 --duration 10 \\
        [--faq-model models/faq] [--out benchmarks/results/faq_side_by_side]

Why not benchmarks.compare (one stack after the other): this 2-core VM's speed moves 10-20% from one minute to
the next with no steal recorded, so a stack measured a few minutes after another can win or lose by that much.
Here every stack is started first; the ones not being measured are frozen (SIGSTOP on every process of theirs, so
an idle Ray cluster's background work does not tax the peer being measured), and each round visits every load,
each stack in turn at that load, in an order that alternates between rounds. A stack is thawed, warmed up at the
load, measured (again when the hypervisor stole more than 10% meanwhile), and frozen again.

Reported: each (stack, load)'s median over rounds, and each round's ratios of ``--target`` to the best other
stack at the same load, measured within the same minute: requests/s, p50 and p99.
"""

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from benchmarks.load import closed_loop
from benchmarks.machine_cpu import without_steal
from benchmarks.peers.servers import PEERS, THROUGHPUT_ENV, running, serve_faq_model
from benchmarks.report import provenance, publish, run_info, table
from benchmarks.server_processes import descendants, server_pid, stat_fields
from benchmarks.workloads import SCENARIOS
from serve_app.testing import AUTH_HEADERS

FIRST_PORT = 18500
STEAL_LIMIT_PERCENT = 10
FREEZE_TIMEOUT_S = 10


class Frozen:
    """One running stack, stopped (SIGSTOP) between its measurements."""

    def __init__(self, name: str, root: int) -> None:
        self.name = name
        self.root = root
        self.stopped: list[int] = []

    def freeze(self) -> None:
        self.stopped = descendants(self.root)
        self._signal(self.stopped, signal.SIGSTOP)
        # Signals are delivered asynchronously: a busy process may run on for a moment. Measuring the next stack
        # while this one still runs would tax it, so wait until every process shows as stopped.
        self._await(self.stopped, lambda state: state == "T")

    def thaw(self) -> None:
        # The processes stopped last time: a stopped process starts none, so the list is complete.
        pids = self.stopped
        self._signal(pids, signal.SIGCONT)
        self._await(pids, lambda state: state != "T")
        self.stopped = []

    def _await(self, pids: list[int], wanted: Callable[[str], bool], timeout_s: float = FREEZE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        pending = list(pids)
        while pending and time.monotonic() < deadline:
            pending = [pid for pid in pending if not _settled(_state(pid), wanted)]
            if pending:
                time.sleep(0.005)
        if pending:
            raise RuntimeError(f"{self.name}: processes {pending} did not change state within {timeout_s} s")

    @staticmethod
    def _signal(pids: list[int], sig: signal.Signals) -> None:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:  # a short-lived helper process that ended meanwhile
                continue


def _state(pid: int) -> str:
    try:
        return stat_fields(Path(f"/proc/{pid}/stat"))[0]
    except (OSError, IndexError):
        return "X"  # ended and reaped


def _settled(state: str, wanted: Callable[[str], bool]) -> bool:
    # A process that has ended (zombie or reaped) neither runs nor can be stopped: nothing to wait for.
    return state in ("Z", "X") or wanted(state)


def measure_turn(url: str, calls, concurrency: int, seconds: float, warmup_s: float) -> dict:
    """One stack's measurement at one load: warm-up (connections, and a thawed Ray's timers catching up), then
    the closed loop, repeated while the hypervisor steals more than STEAL_LIMIT_PERCENT."""

    def run() -> dict:
        asyncio.run(closed_loop(url, calls, concurrency, warmup_s, headers=AUTH_HEADERS))
        return asyncio.run(closed_loop(url, calls, concurrency, seconds, headers=AUTH_HEADERS)).summary()

    summary, steal = without_steal(run, STEAL_LIMIT_PERCENT)
    return {**summary, "steal_percent": steal}


def order(peers: list[str], round_index: int, load_index: int) -> list[str]:
    """Each round and load starts with a different stack: whichever goes first at a load meets a host that has
    just been idle (or busy), and that must not always be the same stack."""
    shift = (round_index + load_index) % len(peers)
    return peers[shift:] + peers[:shift]


def ratios(rows: list[dict], target: str) -> list[dict]:
    """Per round and load: the target over the best other stack (highest requests/s; lowest p50 at c=1)."""
    out = []
    keys = sorted({(row["round"], row["concurrency"]) for row in rows})
    for round_index, concurrency in keys:
        here = [row for row in rows if row["round"] == round_index and row["concurrency"] == concurrency]
        mine = next((row for row in here if row["peer"] == target), None)
        # A stack that answered nothing (its server gone: connection errors) is no bar to measure against.
        others = [row for row in here if row["peer"] != target and row["requests_per_s"] > 0]
        if mine is None or not others:
            continue
        best = (
            min(others, key=lambda row: row["p50_ms"])
            if concurrency == 1
            else max(others, key=lambda row: row["requests_per_s"])
        )
        out.append(
            {
                "round": round_index,
                "concurrency": concurrency,
                "best_peer": best["peer"],
                "rps_ratio": round(mine["requests_per_s"] / best["requests_per_s"], 3),
                "p50_ratio": round(mine["p50_ms"] / best["p50_ms"], 3),
                "p99_ratio": round(mine["p99_ms"] / best["p99_ms"], 3),
            }
        )
    return out


def medians(rows: list[dict]) -> list[dict]:
    out = []
    for peer in dict.fromkeys(row["peer"] for row in rows):
        for concurrency in sorted({row["concurrency"] for row in rows}):
            mine = [row for row in rows if row["peer"] == peer and row["concurrency"] == concurrency]
            if mine:
                out.append(
                    {
                        "peer": peer,
                        "concurrency": concurrency,
                        "rounds": len(mine),
                        **{
                            key: round(statistics.median(row[key] for row in mine), 2)
                            for key in ("requests_per_s", "p50_ms", "p99_ms", "steal_percent")
                        },
                        "errors": sum(row["errors"] for row in mine),
                    }
                )
    return out


def markdown(report: dict) -> str:
    lines = [
        f"# {report['scenario']}: stacks measured in turns, the others frozen",
        "",
        *provenance(report, f"FAQ model: {report['faq_model']}"),
        "",
        __doc__.split("\n\n", 2)[2].split("\n\nReported")[0].replace("\n", " "),
        "",
        "## Medians over rounds",
        "",
        *table(
            ["stack", "load", "rounds", "requests/s", "p50 ms", "p99 ms", "errors", "steal % (median)"],
            [
                [
                    m["peer"],
                    f"c={m['concurrency']}",
                    m["rounds"],
                    m["requests_per_s"],
                    m["p50_ms"],
                    m["p99_ms"],
                    m["errors"],
                    m["steal_percent"],
                ]
                for m in report["medians"]
            ],
        ),
        "",
        f"## {report['target']} over the best other stack, each round (same minute)",
        "",
        "Best other stack: lowest p50 at c=1, highest requests/s at higher loads.",
        "",
        *table(
            ["round", "load", "best other stack", "requests/s ratio", "p50 ratio", "p99 ratio"],
            [
                [r["round"], f"c={r['concurrency']}", r["best_peer"], r["rps_ratio"], r["p50_ratio"], r["p99_ratio"]]
                for r in report["ratios"]
            ],
        ),
        "",
        "Stacks:",
        *(f"- {name}: {text}" for name, text in report["peers"].items()),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="faq-single")
    parser.add_argument("--peers", nargs="+", choices=list(PEERS), default=["fastapi", "fastapi-workers", "serve-fast"])
    parser.add_argument(
        "--target", choices=list(PEERS), default="serve-fast", help="the stack whose ratios are reported"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measurement")
    parser.add_argument("--faq-model", help="FAQ model directory for every stack (default: the demo FAQ)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    serve_faq_model(args.faq_model)
    scenario = SCENARIOS[args.scenario]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as log_dir, ExitStack() as stack:
        stacks: dict[str, tuple[str, object, Frozen]] = {}
        for index, name in enumerate(args.peers):
            peer, port = PEERS[name], FIRST_PORT + index
            calls = scenario.calls(peer.paths)
            probes = [calls() for _ in range(len(scenario.kinds) * 5)]
            url = stack.enter_context(
                running(peer, scenario.kinds, probes, port, Path(log_dir) / f"{name}.log", None, THROUGHPUT_ENV)
            )
            frozen = Frozen(name, server_pid(peer.launch(port, scenario.kinds, {}).command))
            frozen.freeze()
            stack.callback(frozen.thaw)  # a frozen server cannot hear the signal that stops it
            stacks[name] = (url, calls, frozen)
        for round_index in range(args.rounds):
            for load_index, concurrency in enumerate(args.concurrency):
                for name in order(args.peers, round_index, load_index):
                    url, calls, frozen = stacks[name]
                    frozen.thaw()
                    try:
                        summary = measure_turn(url, calls, concurrency, args.duration, args.warmup)
                    finally:
                        frozen.freeze()
                    rows.append({"peer": name, "round": round_index, **summary})
                    print(json.dumps(rows[-1]), file=sys.stderr)
                    time.sleep(0.5)  # the frozen stack's sockets settle
    report = {
        "scenario": args.scenario,
        **run_info("benchmarks.side_by_side", argv),
        "faq_model": args.faq_model or "embedded demo FAQ",
        "target": args.target,
        "peers": {name: PEERS[name].description for name in args.peers},
        "medians": medians(rows),
        "ratios": ratios(rows, args.target),
        "rows": rows,
    }
    publish(report, markdown(report), args.out)


if __name__ == "__main__":
    main()
