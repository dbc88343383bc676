"""ResNet-152 images/s and latency over HTTP, batching on and off, next to the bare model in the same run.

    python -m benchmarks.resnet_throughput [--weights random:0] [--duration 20] [--concurrency 1 8 32]
        [--device auto] [--cpus 2] [--replicas 1] [--max-batch-size 16 [8 ...]] [--batch-wait 0.1] [--rounds 1]
        [--out benchmarks/results/resnet_cpu]

The bare model is the limit: decode + preprocess + forward at its best batch size, in one process with every CPU
as a torch thread, and, with several replicas, also laid out like them (one process per replica with the same
torch threads, all running at once, their images/s summed); on a GPU, --decode-threads threads decode the next
batch while the GPU runs the current one, as a replica overlaps them (on the CPU decoding in line is as fast or
faster: 5.45 / 4.47 / 4.19 images/s in line against 4.39 / 3.76 / 4.11 overlapped, alternating, 2 threads).
Measured before and after the served runs (their mean is the reference). Any measurement during which the
hypervisor took over 10% of this VM's CPU (steal, /proc/stat) is taken again, up to 3 times, after waiting for a
quiet machine; the steal of each is reported.
Served runs go through the whole stack (HTTP -> proxy -> ingress -> classifier replica with @serve.batch);
"batching off" is the same replica re-tuned live to max_batch_size 1; several --max-batch-size values are each
served in every round (their order rotated from round to round), so they are compared side by side. With batching
on, an open loop (requests on a fixed schedule) at --open-loop-fraction (0.7) of the best images/s measured gives
the latency at that steady load.
efficiency = served images/s / bare images/s. With ``--rounds N`` the served runs (each on a fresh Ray instance)
and the bare runs alternate N times, each served round compared with the bare runs just before and after it, and
the median efficiency over the rounds is reported: on a shared host the speed drifts by 10-20% within minutes,
more than the difference being measured. Writes OUT.json and OUT.md.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from statistics import median
from threading import Barrier

import ray
import torch
from ray import serve

from benchmarks.load import Call, LoadResult, closed_loop, open_loop
from benchmarks.machine_cpu import without_steal
from benchmarks.report import publish, run_info, serve_background, table
from benchmarks.workloads import images
from deployments.resnet.model import ResNetClassifier, load_resnet152
from deployments.resnet.preprocess import preprocess
from deployments.resnet.settings import ImageModelSettings, ImageUserConfig
from serve_app.app import build_graph
from serve_app.ray_env import OWN_LOCAL_RAY, QUIET_BACKGROUND, RAY_DEFAULT_BACKGROUND
from serve_app.settings import AppArgs
from serve_app.testing import free_port
from serve_app.testing.deployed import fast_ingress_env

BARRIER_TIMEOUT_S = 600  # longer than any one batch size's measurement and a model load


def bare_model(args: argparse.Namespace, data: bytes, threads: int, together: Barrier) -> dict[int, float]:
    """Images/s of one bare-model process at each batch size. ``together`` (a multiprocessing manager's Barrier
    proxy) holds the processes so that all measure each batch size over the same seconds, as replicas share
    the cores: nobody warms up or has finished while another measures."""
    torch.set_num_threads(threads)
    model, _ = load_resnet152(args.weights)
    settings = ImageModelSettings(device=args.device)
    classifier = ResNetClassifier(model, settings.device, settings.half_precision, settings.channels_last)
    rates = {}
    for batch_size in args.bare_batch_sizes:
        classifier.probabilities(torch.stack([preprocess(data, 10**9)] * batch_size))  # warm-up
        together.wait()
        # On a GPU, decoding on the CPU overlaps the forward pass, as on a replica; on the CPU both share the
        # cores, and decoding in line is the faster bare model.
        decode_threads = args.decode_threads if on_gpu(args) else 0
        rates[batch_size] = bare_images_per_s(classifier, data, batch_size, min(args.duration, 15.0), decode_threads)
        together.wait()
    return rates


def decoded_batches(data: bytes, batch_size: int, decode_threads: int = 0) -> Iterator[torch.Tensor]:
    """Endless batches of ``data`` decoded and preprocessed: in line, or, with ``decode_threads``, the next batch
    decoded by that many threads while the caller works on the current one (close the generator to stop them)."""

    def decoded_batch(decode: Callable[..., Iterable[torch.Tensor]]) -> torch.Tensor:
        return torch.stack(list(decode(lambda _: preprocess(data, 10**9), range(batch_size))))

    if not decode_threads:
        while True:
            yield decoded_batch(map)
    with ThreadPoolExecutor(decode_threads) as decoders, ThreadPoolExecutor(1) as prefetch:
        upcoming = prefetch.submit(decoded_batch, decoders.map)
        while True:
            batch, upcoming = upcoming.result(), prefetch.submit(decoded_batch, decoders.map)
            yield batch


def bare_images_per_s(
    classifier: ResNetClassifier, data: bytes, batch_size: int, seconds: float, decode_threads: int = 0
) -> float:
    """Decode + preprocess + forward, batch after batch, for ``seconds`` (decoding as ``decoded_batches``)."""
    batches = decoded_batches(data, batch_size, decode_threads)
    try:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            classifier.probabilities(next(batches))
            done += batch_size
        return done / (time.perf_counter() - started)
    finally:
        batches.close()


def bare_layouts(args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    """(processes, torch threads each): one process using every CPU, and, with several replicas, the bare model
    laid out like them (the limit of that layout: a 2-core box runs two 1-thread processes faster than one
    2-thread process, since a multi-threaded forward pass waits for its slowest thread at every layer)."""
    layouts = {"one process": (1, max(1, int(args.cpus)))}
    if args.replicas > 1:
        layouts["as the replicas"] = (args.replicas, max(1, int(args.cpus / args.replicas)))
    return layouts


def bare_in_children(args: argparse.Namespace, data: bytes, processes: int, threads: int) -> dict[int, float]:
    """Images/s of ``processes`` bare-model processes running at once, summed. In child processes: torch's
    OpenMP threads keep spinning for a while after use, which would slow the served runs that follow."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(processes, mp_context=context) as pool:
        # A process that fails (weights, memory) breaks the barrier for the others after the timeout, not never.
        together = manager.Barrier(processes, timeout=BARRIER_TIMEOUT_S)
        per_process = [pool.submit(bare_model, args, data, threads, together) for _ in range(processes)]
        rates = [future.result() for future in per_process]
    return {size: sum(rate[size] for rate in rates) for size in args.bare_batch_sizes}


def bare_measured(args: argparse.Namespace, data: bytes) -> dict[str, dict]:
    measured = {}
    for name, (processes, threads) in bare_layouts(args).items():
        rates, steal = without_steal(lambda p=processes, t=threads: bare_in_children(args, data, p, t))
        measured[name] = {"images_per_s": rates, "host_steal_percent": steal}
        print(json.dumps({"bare": name, **measured[name]}), file=sys.stderr)
    return measured


def bare_summary(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """Per layout, the mean of the runs before and after the served ones at each batch size, its best, and the
    drift between the two runs (the box's own speed change over the served runs: a ratio is no more exact)."""
    summary = {}
    for name in before:
        first, last = before[name]["images_per_s"], after[name]["images_per_s"]
        mean = {size: (first[size] + last[size]) / 2 for size in first}
        summary[name] = {
            "mean_images_per_s": mean,
            "best_images_per_s": max(mean.values()),
            "drift": round(abs(max(first.values()) - max(last.values())) / max(mean.values()), 3),
        }
    return summary


def on_gpu(args: argparse.Namespace) -> bool:
    return args.device != "cpu" and torch.cuda.is_available()


def efficiencies(rows: list[dict], bare: dict[str, dict]) -> list[dict]:
    """Each served row with its images/s over each bare layout's best mean."""
    return [
        row | {"efficiency": {name: round(row["items_per_s"] / b["best_images_per_s"], 3) for name, b in bare.items()}}
        for row in rows
    ]


def served(args: argparse.Namespace, data: bytes, batching: ImageUserConfig) -> list[dict]:
    app = build_graph(
        # Auth off: this measures the model path on loopback (the ingress logs that auth is off).
        AppArgs(
            images=ImageModelSettings(
                weights=args.weights,
                device=args.device,
                decode_threads=args.decode_threads,
                fair_turns=not args.arrival_order,
            ),
            auth={"enabled": False},
            # A closed loop at fixed concurrency is not overload: no admission limit on the measured path.
            limits={"max_images_in_flight": 1024},
        ),
        {
            "ImageClassifier": {
                "user_config": batching.model_dump(),
                # The CPUs split between the replicas; Ray gives each as many OpenMP (torch) threads.
                "ray_actor_options": {"num_cpus": args.cpus / args.replicas, "num_gpus": int(on_gpu(args))},
                "num_replicas": args.replicas,
                "autoscaling_config": None,
            }
        },
    )
    serve.run(app, name="bench", route_prefix="/")
    url = f"http://127.0.0.1:{args.port}"
    image = Call("/images/classify", data, "image/jpeg")
    asyncio.run(closed_loop(url, lambda: image, 2, 3.0))  # warm-up
    rows = [
        measured_row(batching, lambda c=concurrency: asyncio.run(closed_loop(url, lambda: image, c, args.duration)))
        for concurrency in args.concurrency
    ]
    if batching.max_batch_size > 1 and args.open_loop_fraction > 0:
        # Latency at a steady fraction of the peak just measured (the "p99 at 70% of peak load").
        rate = args.open_loop_fraction * max(row["items_per_s"] for row in rows)
        rows.append(measured_row(batching, lambda: asyncio.run(open_loop(url, lambda: image, rate, args.duration))))
        rows[-1]["fraction_of_peak"] = args.open_loop_fraction
    return rows


def measured_row(batching: ImageUserConfig, measure: Callable[[], LoadResult]) -> dict:
    result, steal = without_steal(measure)
    row = {
        "batching": batching.max_batch_size > 1,
        "max_batch_size": batching.max_batch_size,
        **result.summary(),
        "host_steal_percent": steal,
    }
    print(json.dumps(row), file=sys.stderr)
    return row


def compared_round(bare_before: dict[str, dict], bare_after: dict[str, dict], rows: list[dict]) -> dict:
    """One round: the served rows with their efficiency against the bare runs just before and after them."""
    bare = bare_summary(bare_before, bare_after)
    closed = [row for row in rows if row["mode"] == "closed"]
    return {
        "bare_before": bare_before,
        "bare_after": bare_after,
        "bare": bare,
        "served": efficiencies(closed, bare),
        "open_loop": sorted((row for row in rows if row["mode"] == "open"), key=lambda row: -row["max_batch_size"]),
    }


def median_efficiencies(rounds: list[dict]) -> list[dict]:
    """Per served setting (max_batch_size, concurrency): the median over the rounds of its efficiency against each
    bare layout, with the rounds' own figures beside it."""
    settings: dict[tuple[int, int], list[dict]] = {}
    for served_round in rounds:
        for row in sorted(served_round["served"], key=batching_order):
            settings.setdefault((row["max_batch_size"], row["concurrency"]), []).append(row["efficiency"])
    return [
        {
            "batching": max_batch_size > 1,
            "max_batch_size": max_batch_size,
            "concurrency": concurrency,
            "efficiency": {name: round(median(e[name] for e in found), 3) for name in found[0]},
            "per_round": found,
        }
        for (max_batch_size, concurrency), found in settings.items()
    ]


def batching_order(row: dict) -> tuple[int, int]:
    """Largest max_batch_size first, batching off last, then by concurrency: the same order in every round."""
    return (-row["max_batch_size"], row["concurrency"])


def batching_label(row: dict) -> str:
    return f"on, max {row['max_batch_size']}" if row["batching"] else "off"


def round_markdown(report: dict, served_round: dict) -> list[str]:
    bare, layouts = served_round["bare"], report["bare_layouts"]
    lines = [
        *table(
            ["bare model", "batch size", "images/s before", "after", "mean", "steal % before / after"],
            (
                [
                    f"{name}: {layouts[name][0]} x {layouts[name][1]} thread(s)",
                    size,
                    f"{before['images_per_s'][size]:.2f}",
                    f"{after['images_per_s'][size]:.2f}",
                    f"{mean:.2f}",
                    f"{before['host_steal_percent']} / {after['host_steal_percent']}",
                ]
                for name, summary in bare.items()
                for before, after in [(served_round["bare_before"][name], served_round["bare_after"][name])]
                for size, mean in summary["mean_images_per_s"].items()
            ),
        ),
        "",
        "The bare model ran before and after the served runs; efficiency uses its best mean. Drift between the two: "
        + ", ".join(f"{name}: {summary['drift']:.0%}" for name, summary in bare.items())
        + " (the box's own speed change during the run; a ratio is no more exact). A measurement during which the "
        "hypervisor took over 10% of the CPU (steal) is taken again, up to 3 times; the last one is kept with its "
        "steal, so a figure with more than 10% was measured on a host that never settled: do not trust it.",
        "",
        *table(
            ["batching", "concurrency", "images/s", "p50 ms", "p99 ms", "errors", "steal %"]
            + [f"efficiency vs bare {name}" for name in bare],
            (
                [
                    batching_label(r),
                    r["concurrency"],
                    f"{r['items_per_s']:.2f}",
                    f"{r['p50_ms']:.0f}",
                    f"{r['p99_ms']:.0f}",
                    r["errors"],
                    r["host_steal_percent"],
                    *(f"{r['efficiency'][name]:.2f}" for name in bare),
                ]
                for r in sorted(served_round["served"], key=batching_order)
            ),
        ),
    ]
    if served_round["open_loop"]:
        lines += [
            "",
            "Open loop (requests sent on a fixed schedule, answered or not) at a fraction of the best images/s above:",
            "",
            *table(
                ["batching", "fraction of peak", "offered/s", "images/s", "p50 ms", "p99 ms", "errors", "steal %"],
                (
                    [
                        batching_label(r),
                        r["fraction_of_peak"],
                        f"{r['offered_rps']:.2f}",
                        f"{r['items_per_s']:.2f}",
                        f"{r['p50_ms']:.0f}",
                        f"{r['p99_ms']:.0f}",
                        r["errors"],
                        r["host_steal_percent"],
                    ]
                    for r in served_round["open_loop"]
                ),
            ),
        ]
    return lines


def rotated(sizes: list[int], round_index: int) -> list[int]:
    """The --max-batch-size values in the order round ``round_index`` serves them: each measured first in turn
    (with at least as many rounds as values), so none always runs on the freshest instance."""
    shift = round_index % len(sizes)
    return sizes[shift:] + sizes[:shift]


def served_on_fresh_ray(args: argparse.Namespace, data: bytes, round_index: int) -> list[dict]:
    """Batching on at each --max-batch-size (in the order ``rotated`` gives), then off (always last), on a Ray
    instance of its own: none of its processes outlive it to slow the bare model's next run."""
    if args.fast_ingress:
        # Ray's processes read these when they start; fresh ports and files for each instance.
        os.environ.update(fast_ingress_env())
    for name, value in QUIET_BACKGROUND.items():  # as `serve run` and the image run Serve
        os.environ.setdefault(name, value)
    if args.ray_default_intervals:
        os.environ.update(RAY_DEFAULT_BACKGROUND)
    args.port = free_port()
    ray.init(
        address=OWN_LOCAL_RAY,
        num_cpus=int(args.cpus) + 1,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        rows = [
            row
            for size in rotated(args.max_batch_size, round_index)
            for row in served(args, data, ImageUserConfig(max_batch_size=size, batch_wait_timeout_s=args.batch_wait))
        ]
        return rows + served(args, data, ImageUserConfig(max_batch_size=1, batch_wait_timeout_s=0.0))
    finally:
        serve.shutdown()
        ray.shutdown()


# Of run_info: when and at which commit (its machine line is replaced by one naming the replicas' layout).
RUN_KEYS = ("date", "commit")


def markdown(report: dict) -> str:
    rounds = report["rounds"]
    lines = [
        f"# ResNet-152 throughput ({report['device']}, weights {report['weights']})",
        "",
        f"Command: `{report['command']}`  ",
        f"Batching on: max_batch_size {', '.join(map(str, report['max_batch_size']))}, batch_wait_timeout_s "
        f"{report['batch_wait']}; off: max_batch_size 1.  ",
        f"Machine: {report['machine']}; ingress: {report['ingress']}; Serve's background intervals: "
        f"{report.get('serve_background', serve_background(True))}  ",
        f"Run: {report.get('date', 'date not recorded')}; commit {report.get('commit', 'not recorded')}",
    ]
    for number, served_round in enumerate(rounds, start=1):
        lines += ["", f"## Round {number} of {len(rounds)}", ""] if len(rounds) > 1 else [""]
        lines += round_markdown(report, served_round)
    if len(rounds) > 1:
        layouts = list(report["bare_layouts"])
        lines += [
            "",
            f"## Median efficiency over the {len(rounds)} rounds",
            "",
            *table(
                ["batching", "concurrency"]
                + [f"vs bare {name} (median)" for name in layouts]
                + [f"vs bare {name}, each round" for name in layouts],
                (
                    [
                        batching_label(m),
                        m["concurrency"],
                        *(f"{m['efficiency'][name]:.2f}" for name in layouts),
                        *(" / ".join(f"{e[name]:.2f}" for e in m["per_round"]) for name in layouts),
                    ]
                    for m in report["median_efficiency"]
                ),
            ),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="random:0")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per served measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--bare-batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument(
        "--max-batch-size", type=int, nargs="+", default=[16], help="batching on at each of these, side by side"
    )
    parser.add_argument(
        "--batch-wait", type=float, default=0.1, help="batch_wait_timeout_s; ~10-30%% of one forward pass works best"
    )
    parser.add_argument(
        "--decode-threads",
        type=int,
        default=4,
        help="images.decode_threads of the replica (and of the bare model on a GPU)",
    )
    parser.add_argument("--cpus", type=float, default=2, help="CPUs (and torch threads) of the classifier replicas")
    parser.add_argument("--replicas", type=int, default=1, help="classifier replicas sharing those CPUs")
    parser.add_argument(
        "--fast-ingress",
        action="store_true",
        help="HAProxy ingress + throughput-optimized Serve, as the container image and the RayService run it",
    )
    parser.add_argument(
        "--open-loop-fraction",
        type=float,
        default=0.7,
        help="with batching on, also an open loop at this fraction of the best images/s measured (0: none)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="served and bare runs alternated this many times; the median is reported"
    )
    parser.add_argument(
        "--arrival-order",
        action="store_true",
        help="the classifier replicas in arrival order (images.fair_turns false): what the turns cost, if anything",
    )
    parser.add_argument(
        "--ray-default-intervals",
        action="store_true",
        help="Serve's controller loop and metrics export at Ray's default intervals instead of the project's "
        "(serve_app.ray_env.QUIET_BACKGROUND): what those cost the served runs",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/resnet_cpu"))
    args = parser.parse_args()
    if min(args.max_batch_size) < 2 or len(set(args.max_batch_size)) < len(args.max_batch_size):
        parser.error("--max-batch-size: distinct values of 2 or more (batching off, max_batch_size 1, runs anyway)")
    data = images()[0]

    bare_runs = [bare_measured(args, data)]
    rounds = []
    for round_index in range(args.rounds):
        rows = served_on_fresh_ray(args, data, round_index)
        bare_runs.append(bare_measured(args, data))
        rounds.append(compared_round(bare_runs[-2], bare_runs[-1], rows))

    report = {
        "command": "python -m benchmarks.resnet_throughput " + " ".join(sys.argv[1:]),
        **{key: value for key, value in run_info("benchmarks.resnet_throughput", None).items() if key in RUN_KEYS},
        "machine": f"{platform.machine()}, {args.replicas} classifier replica(s) of {args.cpus / args.replicas:g} "
        f"CPU, torch {torch.__version__}",
        "replicas": args.replicas,
        "device": "cuda" if on_gpu(args) else "cpu",
        "weights": args.weights,
        "ingress": "HAProxy + throughput-optimized" if args.fast_ingress else "Serve proxy",
        "image_bytes": len(data),
        "max_batch_size": args.max_batch_size,
        "batch_wait": args.batch_wait,
        "serve_background": serve_background(args.ray_default_intervals),
        "bare_layouts": {name: list(layout) for name, layout in bare_layouts(args).items()},
        "rounds": rounds,
        "median_efficiency": median_efficiencies(rounds),
    }
    publish(report, markdown(report), args.out)


if __name__ == "__main__":
    main()
