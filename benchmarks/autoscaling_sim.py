"""Serve and Ray autoscaling on a simulated multi-node cluster: replicas and nodes over time, under load.

    python -m benchmarks.autoscaling_sim [--load-s 60] [--concurrency 4] [--out benchmarks/results/autoscaling]

Ray's fake multi-node provider (RAY_FAKE_CLUSTER=1) starts real raylets on this machine for the node types
of the RayService: a ``cpu`` type for ingress and FAQ replicas and a ``gpu`` type advertising ``GPU: 1``
(the model runs on the CPU, but scheduling sees a GPU). The real application runs with small, fast
autoscaling settings; image load makes the ImageClassifier scale up, the Ray autoscaler adds ``gpu`` nodes to
place the new replicas, and after the load both scale back down. Writes OUT.csv and OUT.png, and OUT.json: the
load's numbers and the capacity calculator's plan from them next to the peak replicas and nodes reached.
Warning: it runs `ray stop --force`, which stops every Ray process on the machine.
"""

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import ray
from ray import serve

from benchmarks.load import Call, closed_loop
from benchmarks.workloads import images
from serve_app.app import build_graph
from serve_app.capacity import plan
from serve_app.settings import AppArgs, ImageModelSettings
from serve_app.testing import free_port

NODE_TYPES = {
    "cpu": {"resources": {"CPU": 2}, "min_workers": 1, "max_workers": 1, "node_config": {}},
    "gpu": {"resources": {"CPU": 1, "GPU": 1}, "min_workers": 0, "max_workers": 3, "node_config": {}},
}
FAST_IMAGE_AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 3,
    "target_ongoing_requests": 2,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 2,
    "upscale_delay_s": 1,
    "downscale_delay_s": 5,
}


def cluster_config(idle_timeout_s: float) -> dict:
    return {
        "cluster_name": "serve-app-sim",
        "max_workers": 4,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            **NODE_TYPES,
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "docker": {},
        "auth": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


# The `ray` CLI of this interpreter's environment, also when that environment is not activated.
RAY_CLI = str(Path(sys.executable).with_name("ray")) if Path(sys.executable).with_name("ray").exists() else "ray"


def start_cluster(config_path: Path) -> None:
    subprocess.run([RAY_CLI, "stop", "--force"], check=False, capture_output=True)
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    command = [
        RAY_CLI,
        "start",
        "--head",
        f"--autoscaling-config={config_path}",
        "--num-cpus=0",
        "--include-dashboard=false",
    ]
    subprocess.run(command, env=env, check=True, capture_output=True)


# Replicas in these states hold, or wait for, a gpu node's resources.
WANTING_A_NODE = ("STARTING", "UPDATING", "RECOVERING", "RUNNING", "PENDING_MIGRATION")


class Sample(NamedTuple):
    t_s: float
    phase: str
    image_replicas: int  # running
    image_replicas_wanted: int  # running or starting: each holds or waits for a gpu node
    gpu_nodes: int
    gpu_nodes_in_use: int  # holding a replica (CI once saw a third gpu node alive with 2 replicas)
    nodes: int


def counts() -> tuple[int, int, int, int, int]:
    """ImageClassifier replicas running, and running or starting; gpu nodes alive, and in use; nodes alive."""
    status = serve.status()
    running = wanted = 0
    for app in status.applications.values():
        deployment = app.deployments.get("ImageClassifier")
        if deployment is not None:
            running = deployment.replica_states.get("RUNNING", 0)
            wanted = sum(deployment.replica_states.get(state, 0) for state in WANTING_A_NODE)
    nodes = [node for node in ray.nodes() if node["Alive"]]
    gpu_nodes = sum(1 for node in nodes if node["Resources"].get("GPU", 0) > 0)
    return running, wanted, gpu_nodes, gpus_taken(), len(nodes)


def gpus_taken() -> int:
    """GPUs held by replicas: every gpu node has one and every replica takes one, so gpu nodes holding one.

    The total and the available GPUs are two reads; a node that joins or leaves between them would count as
    taken, so they are read again until the total stayed the same.
    """
    while True:
        total = ray.cluster_resources().get("GPU", 0)
        available = ray.available_resources().get("GPU", 0)
        if ray.cluster_resources().get("GPU", 0) == total:
            return round(total - available)


def record(timeline: list[Sample], started: float, phase: dict, stop: threading.Event) -> None:
    while not stop.is_set():
        timeline.append(Sample(round(time.monotonic() - started, 1), phase["name"], *counts()))
        stop.wait(1.0)


def run(args: argparse.Namespace) -> tuple[list[Sample], dict]:
    with tempfile.TemporaryDirectory() as folder:
        config_path = Path(folder) / "cluster.json"
        config_path.write_text(json.dumps(cluster_config(args.idle_timeout_s)))
        start_cluster(config_path)
    ray.init(address="auto", logging_level="WARNING", log_to_driver=False)
    timeline: list[Sample] = []
    stop = threading.Event()
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        options = {
            "ImageClassifier": {
                "autoscaling_config": FAST_IMAGE_AUTOSCALING,
                "ray_actor_options": {"num_cpus": 1, "num_gpus": 1},
                "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.05},
            },
            "FAQMatcher": {"autoscaling_config": None, "num_replicas": 1},
        }
        # Auth off: a loopback simulation of scaling, not of security (the ingress logs that it is off).
        app_args = AppArgs(images=ImageModelSettings(weights="random:0"), auth={"enabled": False})
        serve.run(build_graph(app_args, options), route_prefix="/")
        started, phase = time.monotonic(), {"name": "idle"}
        threading.Thread(target=record, args=(timeline, started, phase, stop), daemon=True).start()
        time.sleep(3)
        image = Call("/images/classify", images()[0], "image/jpeg")
        phase["name"] = "load"
        result = asyncio.run(closed_loop(f"http://127.0.0.1:{port}", lambda: image, args.concurrency, args.load_s))
        load = result.summary()
        phase["name"] = "after"
        deadline = time.monotonic() + args.settle_s
        while time.monotonic() < deadline:
            time.sleep(2)
            settled = timeline and timeline[-1].image_replicas <= 1 and timeline[-1].gpu_nodes <= 1
            if settled and time.monotonic() - started > 20:
                time.sleep(3)
                break
    finally:
        stop.set()
        serve.shutdown()
        ray.shutdown()
        subprocess.run([RAY_CLI, "stop", "--force"], check=False, capture_output=True)
    return timeline, load


def capacity_check(timeline: list[Sample], load: dict) -> dict:
    """The reference rule fed the measured load, next to what Serve and the Ray autoscaler actually did.

    Serve keeps ``target_ongoing_requests`` in flight per replica, so that is the rule's per-replica
    concurrency at full utilisation; one replica needs one ``gpu`` node.
    """
    capacity = plan(
        target_rps=load["requests_per_s"],
        latency_s=load["mean_ms"] / 1000,
        target_utilisation=1.0,
        concurrency=FAST_IMAGE_AUTOSCALING["target_ongoing_requests"],
    )
    planned = min(capacity.replicas, FAST_IMAGE_AUTOSCALING["max_replicas"])
    return {
        "load": load,
        "autoscaling_config": FAST_IMAGE_AUTOSCALING,
        "planned_replicas": planned,
        "planned_gpu_nodes": min(capacity.nodes, NODE_TYPES["gpu"]["max_workers"]),
        "peak_image_replicas": max(row.image_replicas for row in timeline),
        "peak_image_replicas_wanted": max(row.image_replicas_wanted for row in timeline),
        "peak_gpu_nodes": max(row.gpu_nodes for row in timeline),
        "peak_gpu_nodes_in_use": max(row.gpu_nodes_in_use for row in timeline),
    }


def write(timeline: list[Sample], check: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(Sample._fields)
        writer.writerows(timeline)
    out.with_suffix(".json").write_text(json.dumps(check, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [row.t_s for row in timeline]
    figure, axis = plt.subplots(figsize=(8, 3.5))
    axis.step(t, [row.image_replicas for row in timeline], where="post", label="ImageClassifier replicas")
    axis.step(t, [row.gpu_nodes for row in timeline], where="post", label="gpu nodes", linestyle="--")
    load = [row.t_s for row in timeline if row.phase == "load"]
    if load:
        axis.axvspan(load[0], load[-1], alpha=0.15, label="load")
    axis.set_xlabel("seconds")
    axis.set_ylabel("count")
    axis.legend(loc="upper right")
    axis.set_title("Serve replicas and Ray nodes under load (simulated cluster)")
    figure.tight_layout()
    figure.savefig(out.with_suffix(".png"), dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load-s", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--idle-timeout-s", type=float, default=10)
    parser.add_argument("--settle-s", type=float, default=120, help="longest wait for scale-down after the load")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/autoscaling"))
    args = parser.parse_args()
    timeline, load = run(args)
    check = capacity_check(timeline, load)
    write(timeline, check, args.out)
    for row in timeline:
        print(*row, sep="\t")
    print(json.dumps(check))


if __name__ == "__main__":
    main()
