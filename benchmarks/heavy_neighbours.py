"""An ordinary FAQ request beside clients sending the costliest FAQ requests the limits allow.

    python -m benchmarks.heavy_neighbours [--faq-model models/faq] [--heavy-clients 2] [--duration 20] \\
        [--rounds 2] [--heavy questions|bodies] [--out benchmarks/results/heavy_neighbours]

The fast-ingress application (auth on, serve_config.yaml's defaults) runs once with large requests grouped apart
(``faq_call_grouping.large_request_chars`` as shipped) and once with every request in one group, in turns, each run
on a fresh server. In each run ``--heavy-clients`` closed loops send requests of 64 questions of 10,000 characters
of random 2-4 letter words (most words new to the word cache: the costliest text known,
benchmarks/results/worst_inputs_questions.md) while ordinary questions come from one client every 0.2 s (or, with
``--ordinary-concurrency N``, N closed loops). Reported per run: the ordinary requests' rate, latency and statuses,
the heavy requests' count, latency and statuses, and the hypervisor's steal.

With ``--heavy bodies`` the server runs as shipped and the heavy clients send, in turns, dense JSON bodies the
ingress must refuse, and a control: 140,000 unknown one-to-three letter keys (1.1 MB; each was an error of its own,
~1 s of the ingress's event loop for 242,000, before they became one), 650,000 empty lists (2 MB; 0.17 s of
json.loads), both refused before parsing by limits.max_json_structure now, and the size of the first in whitespace
around an ordinary question (the cost of any body that large), side by side.
"""

import argparse
import asyncio
import itertools
import json
import string
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from benchmarks.machine_cpu import jiffies, steal_percent, wait_until_quiet
from benchmarks.peers.servers import PEERS, running, serve_faq_model
from benchmarks.report import alternating, provenance, publish, run_info, table
from benchmarks.workloads import SCENARIOS
from serve_app.testing import AUTH_HEADERS, free_port
from serve_app.testing.worst_inputs import MAX_CHARS, ORDINARY_QUESTION, never_seen_questions

HEAVY_QUESTIONS = 64  # limits.max_questions
HEAVY_PAYLOADS = 6  # distinct heavy bodies, sent in turn (each word rarely seen again: the cache holds ~30,000)
ORDINARY_EVERY_S = 0.2
# Large requests grouped apart (as shipped), or every request in one group (no request is over 1,000,000 characters).
SETTINGS = {"large apart (large_request_chars 20000)": None, "one group (large_request_chars 1000000)": "1000000"}
UNKNOWN_KEYS = 140_000
EMPTY_LISTS = 650_000  # the densest JSON known (2 MB): 0.17 s to parse, before limits.max_json_structure
JSON_TYPE = {"content-type": "application/json"}


def unknown_keys_body() -> bytes:
    names = ("".join(chars) for size in (1, 2, 3) for chars in itertools.product(string.ascii_letters, repeat=size))
    fields = b",".join(b'"%s":0' % name.encode() for name in itertools.islice(names, UNKNOWN_KEYS))
    return b'{"question":"%s",' % ORDINARY_QUESTION.encode() + fields + b"}"


def whitespace_body(size: int) -> bytes:
    question = json.dumps({"question": ORDINARY_QUESTION}).encode()
    return question[:-1] + b" " * (size - len(question)) + b"}"


def heavy_variants(kind: str) -> list[tuple[str, str | None, list[bytes]]]:
    """(name, the server's large_request_chars or None as shipped, the heavy bodies) of each run in a round."""
    if kind == "bodies":
        unknown, lists = unknown_keys_body(), b'{"question": [' + b"[]," * EMPTY_LISTS + b"[]]}"
        return [
            (f"{UNKNOWN_KEYS:,} unknown keys ({len(unknown):,} B)", None, [unknown]),
            (f"{EMPTY_LISTS:,} empty lists ({len(lists):,} B)", None, [lists]),
            (f"whitespace ({len(unknown):,} B)", None, [whitespace_body(len(unknown))]),
        ]
    questions = [never_seen_questions(HEAVY_QUESTIONS, seed) for seed in range(HEAVY_PAYLOADS)]
    bodies = [json.dumps({"questions": batch}).encode() for batch in questions]
    return [(name, setting, bodies) for name, setting in SETTINGS.items()]


async def heavy_client(session: aiohttp.ClientSession, url: str, bodies: list[bytes], deadline: float, out: list):
    turn = 0
    while time.monotonic() < deadline:
        started = time.monotonic()
        body = bodies[turn % len(bodies)]
        async with session.post(f"{url}/faq/match", data=body, headers=JSON_TYPE) as response:
            await response.read()
            out.append((response.status, time.monotonic() - started))
        turn += 1


async def ordinary_client(
    session: aiohttp.ClientSession, url: str, deadline: float, out: list, every_s: float = ORDINARY_EVERY_S
) -> None:
    """An ordinary question every ``every_s`` (0: one after the other, a closed loop)."""
    while time.monotonic() < deadline:
        started = time.monotonic()
        async with session.post(f"{url}/faq/match", json={"question": ORDINARY_QUESTION}) as response:
            await response.read()
            out.append((response.status, time.monotonic() - started))
        await asyncio.sleep(max(0.0, every_s - (time.monotonic() - started)))


def summary(results: list[tuple[int, float]], every_status: bool = False) -> dict:
    """Count and statuses; latency of the 200s (``every_status``: of every answer, refusals included)."""
    latencies = [latency for status, latency in results if every_status or status == 200]
    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1

    def ms(q: float) -> float | None:
        return round(float(np.percentile(latencies, q)) * 1000, 1) if latencies else None

    return {"requests": len(results), "statuses": statuses, "p50_ms": ms(50), "p99_ms": ms(99), "max_ms": ms(100)}


async def measure(url: str, bodies: list[bytes], args: argparse.Namespace) -> dict:
    heavy: list = []
    ordinary: list = []
    # --ordinary-concurrency above 1: that many closed loops of ordinary questions, to see the setting's effect on
    # ordinary load alone (with --heavy-clients 0).
    closed = args.ordinary_concurrency > 1
    every_s = 0.0 if closed else ORDINARY_EVERY_S
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=args.heavy_clients + args.ordinary_concurrency)
    async with aiohttp.ClientSession(headers=AUTH_HEADERS, timeout=timeout, connector=connector) as session:
        deadline = time.monotonic() + args.duration
        before = jiffies()
        await asyncio.gather(
            *(heavy_client(session, url, bodies, deadline, heavy) for _ in range(args.heavy_clients)),
            *(ordinary_client(session, url, deadline, ordinary, every_s) for _ in range(args.ordinary_concurrency)),
        )
        steal = steal_percent(before, jiffies())
    ordinary_summary = summary(ordinary) | {"requests_per_s": round(len(ordinary) / args.duration, 1)}
    heavy_summary = summary(heavy, every_status=args.heavy == "bodies")  # those are refused by design
    return {"ordinary": ordinary_summary, "heavy": heavy_summary, "steal_percent": round(steal, 1)}


def one_run(setting: str | None, bodies: list[bytes], args: argparse.Namespace) -> dict:
    env = {"SERVE_APP_IMAGES__WEIGHTS": "random:0"}
    if setting is not None:
        env["SERVE_APP_FAQ_CALL_GROUPING__LARGE_REQUEST_CHARS"] = setting
    calls = SCENARIOS["faq-single"].calls(PEERS["serve-fast"].paths)
    with tempfile.TemporaryDirectory() as folder:
        probes = [calls() for _ in range(3)]
        with running(PEERS["serve-fast"], ("faq",), probes, free_port(), Path(folder) / "serve.log", {}, env) as url:
            wait_until_quiet()
            return asyncio.run(measure(url, bodies, args))


def ordinary_load(report: dict) -> str:
    concurrency = report.get("ordinary_concurrency", 1)
    return f"{concurrency} closed-loop clients" if concurrency > 1 else f"one client every {ORDINARY_EVERY_S} s"


def heavy_load(report: dict) -> str:
    if report.get("heavy") == "bodies":
        return "a JSON body to /faq/match of the kind each row names (the server as shipped)"
    return f"{HEAVY_QUESTIONS} questions of {MAX_CHARS:,} characters of random 2-4 letter words"


def markdown(report: dict) -> str:
    rows = []
    for run in report["runs"]:
        ordinary, heavy = run["ordinary"], run["heavy"]
        rows.append(
            [
                run["round"],
                run["setting"],
                run["steal_percent"],
                ordinary["requests"],
                ordinary.get("requests_per_s"),
                ordinary["statuses"],
                ordinary["p50_ms"],
                ordinary["p99_ms"],
                ordinary["max_ms"],
                heavy["requests"],
                heavy["statuses"],
                heavy["p50_ms"],
                heavy["max_ms"],
            ]
        )
    bodies = report.get("heavy") == "bodies"
    header = ["round", "heavy bodies" if bodies else "grouped calls", "steal %", "ordinary sent", "ordinary req/s"]
    header += ["ordinary statuses"]
    header += ["ordinary p50 ms"]
    header += ["ordinary p99 ms", "ordinary max ms", "heavy sent", "heavy statuses", "heavy p50 ms", "heavy max ms"]
    return "\n".join(
        [
            "# An ordinary FAQ request beside the costliest ones",
            "",
            *provenance(report, f"FAQ model: {report['faq_model'] or 'embedded demo FAQ'}"),
            f"{report['heavy_clients']} closed-loop clients send {heavy_load(report)} per request, while the "
            f"ordinary question `{ORDINARY_QUESTION}` comes from {ordinary_load(report)}; {report['duration_s']} s per "
            "run, each on a fresh fast-ingress server (auth on).",
            "",
            *table(header, rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faq-model", help="FAQ model directory (default: the embedded demo FAQ)")
    parser.add_argument("--heavy-clients", type=int, default=2)
    parser.add_argument(
        "--ordinary-concurrency", type=int, default=1, help="1: one question every 0.2 s; N > 1: N closed loops"
    )
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--heavy", choices=["questions", "bodies"], default="questions", help="what the heavy clients send (see above)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    serve_faq_model(args.faq_model)
    runs = []
    variants = heavy_variants(args.heavy)
    for round_ in range(args.rounds):
        for name, setting, bodies in alternating(variants, round_):
            runs.append({"round": round_, "setting": name, **one_run(setting, bodies, args)})
            print(runs[-1], flush=True)
    report = {
        **run_info("benchmarks.heavy_neighbours", argv),
        "faq_model": args.faq_model,
        "heavy_clients": args.heavy_clients,
        "heavy": args.heavy,
        "ordinary_concurrency": args.ordinary_concurrency,
        "duration_s": args.duration,
        "runs": runs,
    }
    publish(report, markdown(report), args.out)
    return report


if __name__ == "__main__":
    main()
