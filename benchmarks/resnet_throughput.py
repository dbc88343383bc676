"""ResNet-152 images/s and latency over HTTP, batching on and off, next to the bare model in the same run.

    python -m benchmarks.resnet_throughput [--weights random:0] [--duration 20] [--concurrency 1 8 32]
        [--device auto] [--cpus 2] [--replicas 1] [--batch-wait 0.1] [--out benchmarks/results/resnet_cpu]

The bare model is the limit: decode + preprocess + forward in a process of its own at its best batch size, with
the replicas' CPUs as torch threads, measured before and after the served runs (their mean is the reference).
Served runs go through the whole stack (HTTP -> proxy -> ingress -> classifier replica with @serve.batch);
"batching off" is the same replica re-tuned live to max_batch_size 1.
efficiency = served images/s / bare images/s. Writes OUT.json and OUT.md.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import ray
import torch
from ray import serve

from benchmarks.load import Call, closed_loop
from benchmarks.peers.isolation import free_port, private_fast_ingress_env
from benchmarks.peers.servers import FAST_SERVE_ENV
from benchmarks.report import publish, table
from benchmarks.workloads import images
from deployments.resnet.model import ResNetClassifier, load_resnet152
from deployments.resnet.preprocess import preprocess
from serve_app.app import build_graph
from serve_app.settings import AppArgs, BatchConfig, ImageModelSettings


def bare_model(args: argparse.Namespace, data: bytes) -> dict[int, float]:
    """Images/s of the bare model at each batch size, with the replica's torch threads."""
    torch.set_num_threads(max(1, int(args.cpus)))
    model, _ = load_resnet152(args.weights)
    settings = ImageModelSettings(device=args.device)
    classifier = ResNetClassifier(model, settings.device, settings.half_precision, settings.channels_last)
    return {b: bare_images_per_s(classifier, data, b, min(args.duration, 15.0)) for b in args.bare_batch_sizes}


def bare_images_per_s(classifier: ResNetClassifier, data: bytes, batch_size: int, seconds: float) -> float:
    classifier.probabilities(torch.stack([preprocess(data, 10**9)] * batch_size))  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        classifier.probabilities(torch.stack([preprocess(data, 10**9) for _ in range(batch_size)]))
        done += batch_size
    return done / (time.perf_counter() - started)


def bare_in_child(args: argparse.Namespace, data: bytes) -> dict[int, float]:
    # In a child process: torch's OpenMP threads keep spinning for a while after use, which would slow the
    # served runs that follow on the same cores.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        bare = pool.submit(bare_model, args, data).result()
    print(json.dumps({"bare_images_per_s": bare}), file=sys.stderr)
    return bare


def served(args: argparse.Namespace, data: bytes, batching: BatchConfig) -> list[dict]:
    app = build_graph(
        # Auth off: this measures the model path on loopback (the ingress logs that auth is off).
        AppArgs(
            images=ImageModelSettings(weights=args.weights, device=args.device, decode_threads=args.decode_threads),
            auth={"enabled": False},
            # A closed loop at fixed concurrency is not overload: no admission limit on the measured path.
            limits={"max_images_in_flight": 1024},
        ),
        {
            "ImageClassifier": {
                "user_config": batching.model_dump(),
                # The CPUs split between the replicas; Ray gives each as many OpenMP (torch) threads.
                "ray_actor_options": {"num_cpus": args.cpus / args.replicas},
                "num_replicas": args.replicas,
                "autoscaling_config": None,
            }
        },
    )
    serve.run(app, name="bench", route_prefix="/")
    url = f"http://127.0.0.1:{args.port}"
    image = Call("/images/classify", data, "image/jpeg")
    asyncio.run(closed_loop(url, lambda: image, 2, 3.0))  # warm-up
    rows = []
    for concurrency in args.concurrency:
        result = asyncio.run(closed_loop(url, lambda: image, concurrency, args.duration))
        rows.append({"batching": batching.max_batch_size > 1, **result.summary()})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def markdown(report: dict) -> str:
    bare = report["bare_images_per_s"]
    lines = [
        f"# ResNet-152 throughput ({report['device']}, weights {report['weights']})",
        "",
        f"Command: `{report['command']}`  ",
        f"Batching on: max_batch_size {report['max_batch_size']}, batch_wait_timeout_s {report['batch_wait']}; "
        "off: max_batch_size 1.  ",
        f"Machine: {report['machine']}; ingress: {report['ingress']}",
        "",
        *table(
            ["bare model batch size", "images/s before", "after", "mean"],
            (
                [b, f"{report['bare_before'][b]:.2f}", f"{report['bare_after'][b]:.2f}", f"{ips:.2f}"]
                for b, ips in bare.items()
            ),
        ),
        "",
        f"The bare model ran before and after the served runs; efficiency uses the best mean. Drift between the "
        f"two: {report['bare_drift']:.0%} (the box's own speed change during the run; a ratio is no more exact).",
        "",
        *table(
            ["batching", "concurrency", "images/s", "p50 ms", "p99 ms", "errors", "efficiency (served / best bare)"],
            (
                [
                    "on" if r["batching"] else "off",
                    r["concurrency"],
                    f"{r['items_per_s']:.2f}",
                    f"{r['p50_ms']:.0f}",
                    f"{r['p99_ms']:.0f}",
                    r["errors"],
                    f"{r['items_per_s'] / max(bare.values()):.2f}",
                ]
                for r in report["served"]
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
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument(
        "--batch-wait", type=float, default=0.1, help="batch_wait_timeout_s; ~10-30%% of one forward pass works best"
    )
    parser.add_argument("--decode-threads", type=int, default=4, help="images.decode_threads of the replica")
    parser.add_argument("--cpus", type=float, default=2, help="CPUs (and torch threads) of the classifier replicas")
    parser.add_argument("--replicas", type=int, default=1, help="classifier replicas sharing those CPUs")
    parser.add_argument(
        "--fast-ingress",
        action="store_true",
        help="HAProxy ingress + throughput-optimized Serve, as the container image and the RayService run it",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/resnet_cpu"))
    args = parser.parse_args()
    args.port = free_port()
    data = images()[0]

    bare_before = bare_in_child(args, data)

    if args.fast_ingress:
        os.environ.update(FAST_SERVE_ENV | private_fast_ingress_env())  # Ray's processes read it when they start
    ray.init(num_cpus=int(args.cpus) + 1, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        batching = BatchConfig(max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.batch_wait)
        rows = served(args, data, batching)
        rows += served(args, data, BatchConfig(max_batch_size=1, batch_wait_timeout_s=0.0))
    finally:
        serve.shutdown()
        ray.shutdown()
    bare_after = bare_in_child(args, data)
    # The box's speed drifts over minutes (shared host): the served runs are compared with the bare model's
    # mean before and after them, and the drift says how far to trust the ratio.
    bare = {size: (bare_before[size] + bare_after[size]) / 2 for size in bare_before}
    drift = abs(max(bare_before.values()) - max(bare_after.values())) / max(bare.values())

    report = {
        "command": "python -m benchmarks.resnet_throughput " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, bare model {max(1, int(args.cpus))} torch threads, {args.replicas} "
        f"classifier replica(s) of {args.cpus / args.replicas:g} CPU, torch {torch.__version__}",
        "replicas": args.replicas,
        "device": str(torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")),
        "weights": args.weights,
        "ingress": "HAProxy + throughput-optimized" if args.fast_ingress else "Serve proxy",
        "image_bytes": len(data),
        "max_batch_size": args.max_batch_size,
        "batch_wait": args.batch_wait,
        "bare_images_per_s": bare,
        "bare_before": bare_before,
        "bare_after": bare_after,
        "bare_drift": round(drift, 3),
        "served": rows,
    }
    publish(report, markdown(report), args.out)


if __name__ == "__main__":
    main()
