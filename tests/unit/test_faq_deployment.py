"""The FAQ replica's model life cycle, on the real class and models (the Serve wrapper's class, called directly:
what Serve calls at start-up and on each user_config change). A model that cannot be loaded never takes the
replica down; an unset user_config.model_uri means the app's own model again."""

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployments.faq.artifact import METADATA_FILE, save_artifact
from deployments.faq.demo import demo_model
from deployments.faq.deployment import FAQMatcher
from deployments.faq.settings import FaqUserConfig

Replica = FAQMatcher.func_or_class


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    trained = demo_model()
    out = tmp_path_factory.mktemp("artifact") / "faq"
    metadata = save_artifact(trained.model, str(out), data_sha256="abc", metrics=trained.metrics)
    return str(out), metadata["version_id"]


def reconfigure(replica, model_uri: str | None) -> None:
    asyncio.run(replica.reconfigure(FaqUserConfig(model_uri=model_uri).model_dump()))


def test_a_model_url_whose_filesystem_is_not_installed_leaves_the_replica_up_and_explaining():
    replica = Replica("gs://bucket/faq-model")  # gcsfs is not a dependency: fsspec raises ImportError
    reconfigure(replica, None)  # what Serve does right after start: no second attempt at the same model
    status = replica.status()
    assert status["ready"] is False and "gs://bucket/faq-model" in status["error"]
    assert status["update_error"] is None
    reconfigure(replica, "gs://bucket/faq-model")  # named explicitly: tried again, and refused again
    assert "gs://bucket/faq-model" in replica.status()["update_error"]


def test_a_malformed_artifact_with_consistent_hashes_is_refused_and_the_current_model_keeps_serving(artifact, tmp_path):
    source = Path(artifact[0])
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in source.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    metadata = json.loads((source / METADATA_FILE).read_text())
    del metadata["version_id"]  # the hashes still match every file; the metadata itself is incomplete
    (broken / METADATA_FILE).write_text(json.dumps(metadata))
    replica = Replica(None)
    reconfigure(replica, str(broken))
    status = replica.status()
    assert status["ready"] is True and status["model_version"] == "demo"
    assert str(broken) in status["update_error"]


def test_unsetting_the_hot_model_goes_back_to_the_apps_own_model(artifact):
    out, version = artifact
    replica = Replica(None)
    reconfigure(replica, out)
    assert replica.status()["model_version"] == version and replica.status()["update_error"] is None
    reconfigure(replica, None)
    assert replica.status()["model_version"] == "demo"


def test_a_long_group_scores_off_the_event_loop_so_status_calls_are_answered_meanwhile():
    # What Serve does on a replica: the group and the status calls are coroutines on the replica's one loop.
    replica = Replica(None)
    question = "How do I sort an array of objects by a property value and keep the order stable? " * 20
    queries = [([f"{question} {i}"] * 64, 5) for i in range(16)]  # ~1.5 s of scoring on a 2-core box

    async def scenario() -> tuple[float, list[float], dict]:
        async def status_call() -> dict:
            return replica.status()

        started = time.monotonic()
        scoring = asyncio.ensure_future(replica.match_many(queries))
        await asyncio.sleep(0.05)  # the group is scoring now
        waits = []
        while not scoring.done():
            asked = time.monotonic()
            status = await asyncio.ensure_future(status_call())
            waits.append(time.monotonic() - asked)
            await asyncio.sleep(0.01)
        answer = await scoring
        assert len(answer["results"]) == len(queries) and status["ready"] is True
        return time.monotonic() - started, waits, answer

    duration, waits, _ = asyncio.run(scenario())
    # On the loop, the group would have held every status call for its whole duration.
    assert len(waits) >= 5, f"the group took {duration:.2f} s; too short to show anything"
    assert max(waits) < duration / 4, (duration, max(waits))


def test_a_replica_has_scored_once_before_it_serves(artifact):
    # In a fresh process, as a replica starts: the scoring loops are compiled (loaded from numba's cache) by the
    # constructor, so the first user's question does not pay for it.
    script = (
        "import sys; from deployments.faq.deployment import FAQMatcher; "
        "from deployments.faq.scoring_loops import view_zscores, rerank_rows; "
        "assert not view_zscores.signatures; replica = FAQMatcher.func_or_class(sys.argv[1]); "
        "assert replica.status()['ready'], replica.status(); "
        "print(len(view_zscores.signatures), len(rerank_rows.signatures))"
    )
    result = subprocess.run([sys.executable, "-c", script, artifact[0]], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    compiled = [int(n) for n in result.stdout.split()]
    assert compiled and all(n >= 1 for n in compiled)
