"""Model data collection through the real Serve application over HTTP: every answered request is one record,
in order per replica, across a redeploy (the replaced replica writes its buffer when Serve shuts it down), and
feedback joins its prediction in the report."""

import json
import time
from collections import defaultdict
from pathlib import Path

import pytest
from ray import serve

from serve_app.app import build_graph
from serve_app.report import build_report, read_records
from serve_app.settings import AppArgs
from tests.integration.conftest import BROKEN_WEIGHTS

pytestmark = pytest.mark.integration

PREFIX = "/collection"
QUESTIONS = [f"how do I sort a list of {n} dictionaries by a key" for n in range(12)]
# The images are not asked here: their deployment fails to load at once and holds no CPU.
OPTIONS = {"ImageClassifier": {"ray_actor_options": {"num_cpus": 0}}}


def deploy(destination: Path, privacy: str) -> None:
    # A long flush interval: the records of the first deployment are written only when Serve shuts it down.
    collection = {"enabled": True, "destination": str(destination), "privacy": privacy, "flush_interval_s": 600}
    args = AppArgs(images={"weights": BROKEN_WEIGHTS}, collection=collection)
    serve.run(build_graph(args, OPTIONS), name="collection", route_prefix=PREFIX)


def wait_for_records(destination: Path, count: int, timeout_s: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_records(str(destination))
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def file_order(destination: Path) -> dict[str, list[dict]]:
    """Each replica's records in the order its files were written (their numbers) and their lines."""
    by_replica: dict[str, list[tuple[str, int, dict]]] = defaultdict(list)
    for path in destination.rglob("*.jsonl"):
        for line_number, line in enumerate(path.read_text().splitlines()):
            record = json.loads(line)
            by_replica[record["replica"]].append((path.name, line_number, record))
    return {replica: [r for *_, r in sorted(rows, key=lambda row: row[:2])] for replica, rows in by_replica.items()}


@pytest.fixture(scope="module")
def collecting(serve_apps, tmp_path_factory):
    destination = tmp_path_factory.mktemp("collection")
    deploy(destination, "hashed")
    yield serve_apps, destination
    if "collection" in serve.status().applications:  # the test deletes it, unless it failed first
        serve.delete("collection")


def test_every_answer_is_one_record_in_order_across_a_redeploy(collecting):
    serve_apps, destination = collecting
    request_ids, best = [], {}
    with serve_apps.client(PREFIX) as client:
        for question in QUESTIONS[:8]:
            answer = client.post("/faq/match", json={"question": question, "top_k": 3})
            assert answer.status_code == 200, answer.text
            request_ids.append(answer.headers["x-request-id"])
            best[request_ids[-1]] = answer.json()["matches"][0]["id"]
        feedback = client.post("/feedback", json={"request_id": request_ids[0], "faq_id": best[request_ids[0]]})
        assert feedback.status_code == 202, feedback.text
        assert feedback.json() == {"request_id": request_ids[0], "outcome": "top1"}
        refused = client.post("/feedback", json={"request_id": request_ids[0], "faq_id": 1, "helpful": True})
        assert refused.status_code == 422 and refused.json()["error"]["type"] == "validation_error"

        deploy(destination, "none")  # a changed config: new ingress replicas; the old one flushes on shutdown
        for question in QUESTIONS[8:]:
            answer = client.post("/score", json={"input": question})
            assert answer.status_code == 200, answer.text
            request_ids.append(answer.headers["x-request-id"])
    serve.delete("collection")  # the new replicas flush too

    records = wait_for_records(destination, len(QUESTIONS) + 1)
    predictions = [r for r in records if r["kind"] == "prediction"]
    assert sorted(r["request_id"] for r in predictions) == sorted(request_ids)
    per_replica = file_order(destination)
    assert len(per_replica) == 2  # the replaced ingress replica and its successor
    for replica_records in per_replica.values():
        assert [r["seq"] for r in replica_records] == list(range(len(replica_records)))
    assert {r["route"] for r in predictions} == {f"{PREFIX}/faq/match", f"{PREFIX}/score"}
    assert all(r["caller"] == "key:primary" and r["status"] == 200 and r["latency_ms"] > 0 for r in predictions)
    written = "".join(p.read_text() for p in destination.rglob("*.jsonl"))  # every byte written
    assert not any(question in written for question in QUESTIONS)  # hashed, then none: never the text
    hashed = [r for r in predictions if r["route"].endswith("/faq/match")]
    assert all(set(r["inputs"][0]) == {"sha256"} for r in hashed)
    assert all(r["inputs"] == [{}] for r in predictions if r["route"].endswith("/score"))

    report = build_report(records)
    ((model, _), stats), *_ = [(key, s) for key, s in report.versions.items() if s.labelled]
    assert model == "faq" and stats.labelled == 1 and stats.top1 == [True]
