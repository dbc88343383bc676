"""The FAQ replica's model life cycle, on the real class and models (the Serve wrapper's class, called directly:
what Serve calls at start-up and on each user_config change). A model that cannot be loaded never takes the
replica down; an unset user_config.model_uri means the app's own model again."""

import asyncio
import json
from pathlib import Path

import pytest

from deployments.faq.artifact import METADATA_FILE, save_artifact
from deployments.faq.demo import demo_model
from deployments.faq.deployment import FAQMatcher
from serve_app.settings import FAQ_USER_CONFIG

Replica = FAQMatcher.func_or_class


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    trained = demo_model()
    out = tmp_path_factory.mktemp("artifact") / "faq"
    metadata = save_artifact(trained.model, str(out), data_sha256="abc", metrics=trained.metrics)
    return str(out), metadata["version_id"]


def reconfigure(replica, model_uri: str | None) -> None:
    asyncio.run(replica.reconfigure(FAQ_USER_CONFIG.model_copy(update={"model_uri": model_uri}).model_dump()))


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
