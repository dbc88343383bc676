"""Serving stacks side by side in one run: same model, same inputs, same client, one stack at a time.

    python -m benchmarks.compare --scenario faq-single --concurrency 16 64 \\
        [--peers bare reference fastapi serve serve-fast] [--duration 20] [--rates 200 400] \\
        [--faq-model models/faq] [--out benchmarks/results/faq_single]

Each peer is started on loopback, warmed up, loaded by the closed-loop client at each concurrency (and the
open-loop client at each ``--rates`` value), then stopped before the next starts, so they never compete.
``bare`` is the model called in this process without HTTP: the limit. Every row carries its ratio to the
reference stack at the same load. Writes OUT.json, OUT.md and OUT.png (p99 latency against throughput).
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.load import Call, closed_loop, open_loop
from benchmarks.peers.servers import PEERS, SERVE_PATHS, THROUGHPUT_ENV, running, serve_faq_model
from benchmarks.report import provenance, publish, run_info
from benchmarks.workloads import SCENARIOS, Scenario
from serve_app.testing import AUTH_HEADERS

FREE_PORT = 18400
BARE_IMAGE_BATCH_SIZES = (1, 4, 8)


def _rate(run, calls, seconds: float) -> tuple[float, float]:
    """(requests/s, items/s) of ``run(call)`` back to back for ``seconds``."""
    run(calls())  # warm-up
    done = requests = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        call = calls()
        run(call)
        done, requests = done + call.items, requests + 1
    elapsed = time.perf_counter() - started
    return requests / elapsed, done / elapsed


def bare(scenario: Scenario, seconds: float) -> dict:
    """The model called in this process without HTTP: the limit a server can approach.

    FAQ: each request's questions scored as the request would have them scored. Images: the best images/s
    over forward-pass batch sizes, since batching across requests is what a server may add.
    """
    from benchmarks.peers.inprocess import FaqScorer, ImageScorer
    from benchmarks.workloads import images

    if scenario.kinds == ("faq",):
        scorer = FaqScorer()
        calls = scenario.calls(SERVE_PATHS)
        requests_per_s, items_per_s = _rate(lambda call: scorer.answer(json.loads(call.body)), calls, seconds)
        return {"peer": "bare", "mode": "in-process", "requests_per_s": requests_per_s, "items_per_s": items_per_s}
    if scenario.kinds == ("image",):
        model, photos = ImageScorer(), images()
        by_batch_size = {}
        for batch_size in BARE_IMAGE_BATCH_SIZES:
            batch = [photos[i % len(photos)] for i in range(batch_size)]
            call = Call("", b"", "", items=batch_size)
            by_batch_size[batch_size] = _rate(lambda _: model.classify(batch), lambda: call, seconds / 3)[1]  # noqa: B023
        best = max(by_batch_size.values())
        per_request = scenario.calls(SERVE_PATHS)().items
        return {
            "peer": "bare",
            "mode": "in-process",
            "requests_per_s": best / per_request,
            "items_per_s": best,
            "items_per_s_by_batch_size": by_batch_size,
        }
    return {}


def measure(args: argparse.Namespace, peer_name: str, log_dir: Path) -> list[dict]:
    peer, scenario = PEERS[peer_name], SCENARIOS[args.scenario]
    if peer.one_model_only and len(scenario.kinds) > 1:
        print(f"skipping {peer_name}: it serves one model per server", file=sys.stderr)
        return []
    calls = scenario.calls(peer.paths)
    probes = [calls() for _ in range(len(scenario.kinds) * 5)]
    options = json.loads(args.peer_options.get(peer_name, "{}")) if args.peer_options else {}
    rows = []
    log = log_dir / f"{peer_name}.log"
    with running(peer, scenario.kinds, probes, FREE_PORT, log, options, THROUGHPUT_ENV) as url:
        asyncio.run(closed_loop(url, calls, max(args.concurrency, default=8), args.warmup, headers=AUTH_HEADERS))
        loads = [(closed_loop, c) for c in args.concurrency] + [(open_loop, r) for r in args.rates]
        for generator, load in loads:
            result = asyncio.run(generator(url, calls, load, args.duration, headers=AUTH_HEADERS))
            rows.append({"peer": peer_name, **result.summary()})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's requests/s (and p99) over the reference stack's at the same mode and load."""

    def key(row: dict) -> tuple:
        return row["mode"], row.get("concurrency", row.get("offered_rps"))

    reference = {key(row): row for row in rows if row["peer"] == "reference"}
    for row in rows:
        if (base := reference.get(key(row))) and base["requests_per_s"]:
            row["rps_vs_reference"] = round(row["requests_per_s"] / base["requests_per_s"], 2)
            row["p99_vs_reference"] = round(row["p99_ms"] / base["p99_ms"], 2)
    return rows


def markdown(report: dict) -> str:
    lines = [
        f"# {report['scenario']}: {report['description']}",
        "",
        *provenance(report, f"FAQ model: {report['faq_model']}"),
        "Client: benchmarks/load.py (aiohttp, one event loop) on the same cores as the servers.",
        "",
        "| peer | load | requests/s | items/s | p50 ms | p90 ms | p99 ms | errors | client CPU % "
        "| rps vs reference | p99 vs reference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["rows"]:
        if row["mode"] == "in-process":
            lines.append(
                f"| bare (in-process limit) | - | {row['requests_per_s']:.1f} | {row['items_per_s']:.1f} "
                "| | | | | | | |"
            )
            continue
        load = f"c={row['concurrency']}" if row["mode"] == "closed" else f"{row['offered_rps']}/s offered"
        errors = ", ".join(f"{k}: {v}" for k, v in row["errors_by_status"].items()) or "0"
        lines.append(
            f"| {row['peer']} | {load} | {row['requests_per_s']:.1f} | {row['items_per_s']:.1f} "
            f"| {row['p50_ms']:.1f} | {row['p90_ms']:.1f} | {row['p99_ms']:.1f} | {errors} "
            f"| {row['client_cpu_percent']} | {row.get('rps_vs_reference', '')} | {row.get('p99_vs_reference', '')} |"
        )
    lines += ["", "Peers:", *(f"- {name}: {text}" for name, text in report["peers"].items())]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for peer in dict.fromkeys(row["peer"] for row in report["rows"] if row["mode"] == "closed"):
        points = sorted(
            (row["requests_per_s"], row["p99_ms"], row["concurrency"])
            for row in report["rows"]
            if row["peer"] == peer and row["mode"] == "closed"
        )
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=peer)
        for rps, p99, concurrency in points:
            axis.annotate(f"c{concurrency}", (rps, p99), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for row in report["rows"]:
        if row["mode"] == "in-process":
            axis.axvline(row["requests_per_s"], linestyle=":", color="grey", label="bare model (1 core)")
    axis.set_xlabel("requests/s")
    axis.set_ylabel("p99 latency (ms)")
    axis.set_yscale("log")
    axis.set_title(f"{report['scenario']}: p99 latency vs throughput")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="faq-single")
    parser.add_argument("--peers", nargs="+", choices=["bare", *PEERS], default=["bare", *PEERS])
    parser.add_argument("--concurrency", type=int, nargs="*", default=[16, 64])
    parser.add_argument("--rates", type=float, nargs="*", default=[], help="open-loop requests/s to offer")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument(
        "--peer-options",
        type=lambda text: dict(item.split("=", 1) for item in text.split(";")),
        help='per-peer JSON, e.g. \'reference={"workers": 2};serve-fast={"deployments": {...}}\'',
    )
    parser.add_argument(
        "--faq-model",
        help="FAQ model directory from `serve-app faq train` for every peer (default: $SERVE_APP_FAQ_MODEL_URI, "
        "else the embedded demo FAQ)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    serve_faq_model(args.faq_model)
    scenario = SCENARIOS[args.scenario]
    rows = []
    with tempfile.TemporaryDirectory() as log_dir:
        for peer in args.peers:
            if peer == "bare":
                # In a process of its own: torch's worker threads would otherwise stay behind and spin on the
                # cores the next peers are measured on.
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    row = pool.submit(bare, scenario, args.duration).result()
                if row:
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr)
            else:
                rows += measure(args, peer, Path(log_dir))
    report = {
        "scenario": args.scenario,
        "description": scenario.description,
        **run_info("benchmarks.compare", argv),
        "faq_model": os.environ.get("SERVE_APP_FAQ_MODEL_URI") or "embedded demo FAQ",
        "peers": {name: PEERS[name].description for name in args.peers if name in PEERS},
        "rows": with_ratios(rows),
    }
    publish(report, markdown(report), args.out)
    if args.out:
        plot(report, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
