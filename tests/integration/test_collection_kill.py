"""The loss bound of model data collection, with a real kill: an ingress replica SIGKILLed (no drain, no
``__del__``) loses exactly the records it still held in memory, no more, and the metrics it exported before
dying (serve_app_collection_buffered_records, and collected - written - dropped) say how many. What it wrote
stays: every written record is one of the answered requests, once, numbered without a gap."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import ray
from ray import serve

from serve_app.app import build_graph
from serve_app.report import read_records
from serve_app.settings import AppArgs
from tests.integration.conftest import BROKEN_WEIGHTS, ServeApps

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "collection-kill"
PREFIX = f"/{APP}"
BUFFER_RECORDS = 20  # a flush starts when the buffer is half full: at the 10th record
FLUSHED = BUFFER_RECORDS // 2
UNFLUSHED = 7  # answered after that flush: in memory when the replica is killed
# The images are not asked here: their deployment fails to load at once and holds no CPU.
OPTIONS = {"ImageClassifier": {"ray_actor_options": {"num_cpus": 0}}}
# One sample of Prometheus's text format: name{label="value",...} value
SAMPLE = re.compile(r"^(ray_serve_app_collection_[a-z_]+)\{(.*)\} (\S+)$", re.MULTILINE)
LABEL = re.compile(r'(\w+)="([^"]*)"')
EXPORT_WAIT_S = 40  # Ray exports a replica's metrics every 10 s; the collector reports its counts every 1 s


@pytest.fixture()
def collecting(serve_apps: ServeApps, tmp_path: Path):
    # No flush by time during the test: only the half-full buffer writes.
    collection = {
        "enabled": True,
        "destination": str(tmp_path),
        "buffer_records": BUFFER_RECORDS,
        "flush_interval_s": 3600,
    }
    args = AppArgs(images={"weights": BROKEN_WEIGHTS}, collection=collection)
    serve.run(build_graph(args, OPTIONS), name=APP, route_prefix=PREFIX)
    try:
        yield tmp_path
    finally:
        serve.delete(APP)


def ask(client: httpx.Client, count: int, start: int) -> list[str]:
    request_ids = []
    for number in range(start, start + count):
        answer = client.post("/faq/match", json={"question": f"how do I reverse a list of {number} strings"})
        assert answer.status_code == 200, answer.text
        request_ids.append(answer.headers["x-request-id"])
    return request_ids


def wait_until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while (value := condition()) is None:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return value


def exported(replica: str) -> dict[str, float]:
    """This replica's collection metrics as Ray's metrics agent exports them now (what Prometheus would scrape)."""
    port = ray._private.worker.global_worker.node.metrics_export_port
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    values = {"buffered": 0.0, "collected": 0.0, "written": 0.0, "dropped": 0.0}
    for name, labels_text, value in SAMPLE.findall(text):
        labels = dict(LABEL.findall(labels_text))
        if labels.get("replica") != replica:
            continue
        if name == "ray_serve_app_collection_buffered_records":
            values["buffered"] += float(value)
        elif name == "ray_serve_app_collection_records_total":
            outcome = labels["outcome"]
            values["dropped" if outcome.startswith("dropped_") else outcome] += float(value)
    return values


def ingress_pid() -> int:
    """The ingress replica's process: in this test session (Ray's processes stay in the session that started
    them), of this application only."""
    found = subprocess.run(
        ["pgrep", "-s", str(os.getsid(0)), "-f", f"ServeReplica:{APP}:Ingress"],
        capture_output=True,
        text=True,
        check=False,
    )
    (pid,) = (int(word) for word in found.stdout.split())
    return pid


def gone(pid: int) -> bool:
    """Ended: no process, or a zombie its parent (the raylet) has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_killed_replica_loses_only_its_buffer_and_the_metrics_count_it(serve_apps: ServeApps, collecting: Path):
    destination = str(collecting)
    with serve_apps.client(PREFIX) as client:
        answered = ask(client, FLUSHED, 0)
        # The half-full buffer is written at once, off the request path.
        wait_until(lambda: len(read_records(destination)) == FLUSHED or None, 30, "the half-full flush")
        answered += ask(client, UNFLUSHED, FLUSHED)
    (replica,) = {record["replica"] for record in read_records(destination)}

    # What an operator sees: the metrics, exported before the kill, and the files.
    def settled() -> dict[str, float] | None:
        values = exported(replica)
        return values if values["collected"] == len(answered) and values["written"] == FLUSHED else None

    metrics = wait_until(settled, EXPORT_WAIT_S, "the replica's exported collection metrics")
    assert metrics["buffered"] == metrics["collected"] - metrics["written"] - metrics["dropped"] == UNFLUSHED

    pid = ingress_pid()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: gone(pid) or None, 10, "the killed process to end")
    records = read_records(destination)

    written = [record["request_id"] for record in records]
    assert len(written) == len(set(written)), "a record was written twice"
    assert set(written) <= set(answered), "a record of no answered request"
    assert sorted(record["seq"] for record in records) == list(range(len(records)))  # the loss is the tail only
    lost = len(answered) - len(written)
    # The bound: no more than the buffer held, which is what the last exported gauge said.
    assert lost == metrics["buffered"] == UNFLUSHED
    print(f"answered {len(answered)}, written {len(written)}, lost {lost}, gauge before the kill {metrics['buffered']}")
