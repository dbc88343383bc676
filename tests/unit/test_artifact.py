import hashlib
import io
import json
from fractions import Fraction

import numpy as np
import pytest

from deployments.faq.artifact import ARRAYS_FILE, ArtifactError, load_artifact, save_artifact
from deployments.faq.demo import demo_model

QUESTIONS = ["how to deep copy", "random integer between two numbers"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    trained = demo_model()
    out = tmp_path_factory.mktemp("artifact") / "faq"
    metadata = save_artifact(trained.model, str(out), data_sha256="abc", metrics=trained.metrics)
    return out, metadata, trained.model


def test_round_trip_keeps_scores_and_metadata(artifact):
    out, metadata, model = artifact
    loaded, loaded_metadata = load_artifact(out)
    assert loaded_metadata == metadata
    assert np.allclose(loaded.probabilities(QUESTIONS), model.probabilities(QUESTIONS))
    assert loaded.originals == model.originals
    assert set(metadata["libraries"]) >= {"scikit-learn", "numpy", "python"}
    assert metadata["version_id"].startswith("faq-")
    assert metadata["metrics"]["cross_validation"]["n"] > 0


def test_fsspec_url_is_accepted(artifact):
    out, metadata, _ = artifact
    _, loaded_metadata = load_artifact(f"file://{out}")
    assert loaded_metadata["version_id"] == metadata["version_id"]


def copy_of(out, tmp_path):
    target = tmp_path / "copy"
    target.mkdir()
    for path in out.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def test_tampered_model_is_refused(artifact, tmp_path):
    target = copy_of(artifact[0], tmp_path)
    data = bytearray((target / ARRAYS_FILE).read_bytes())
    data[-100] ^= 0xFF
    (target / ARRAYS_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 does not match"):
        load_artifact(target)


def test_tampered_originals_are_refused(artifact, tmp_path):
    target = copy_of(artifact[0], tmp_path)
    with (target / "originals.jsonl").open("a") as handle:
        handle.write('{"id": 666}\n')
    with pytest.raises(ArtifactError, match=r"originals\.jsonl: sha256"):
        load_artifact(target)


def rehash(target, name: str, data: bytes) -> None:
    """Write ``data`` as ``name`` and make metadata.json vouch for it, as an attacker with write access would."""
    (target / name).write_bytes(data)
    metadata = json.loads((target / "metadata.json").read_text())
    metadata["files"][name] = hashlib.sha256(data).hexdigest()
    (target / "metadata.json").write_text(json.dumps(metadata))


def test_pickled_objects_are_refused_even_with_matching_hashes(artifact, tmp_path):
    target = copy_of(artifact[0], tmp_path)
    buffer = io.BytesIO()
    np.savez(buffer, rerank_weights=np.array([Fraction(1, 3)], dtype=object))  # would need pickle to load
    rehash(target, ARRAYS_FILE, buffer.getvalue())
    with pytest.raises(ArtifactError, match="not a plain numeric archive"):
        load_artifact(target)


def test_a_state_of_another_shape_is_refused_with_a_retrain_hint(artifact, tmp_path):
    target = copy_of(artifact[0], tmp_path)
    buffer = io.BytesIO()
    np.savez(buffer, rerank_weights=np.zeros(3))
    rehash(target, ARRAYS_FILE, buffer.getvalue())
    with pytest.raises(ArtifactError, match="retrain it"):
        load_artifact(target)


def test_an_older_format_is_refused_with_a_retrain_hint(artifact, tmp_path):
    target = copy_of(artifact[0], tmp_path)
    metadata = json.loads((target / "metadata.json").read_text())
    (target / "metadata.json").write_text(json.dumps(metadata | {"format": 2}))
    with pytest.raises(ArtifactError, match="format 2, expected 3; retrain it"):
        load_artifact(target)


def test_missing_directory_explains_itself(tmp_path):
    with pytest.raises(ArtifactError, match="missing"):
        load_artifact(tmp_path / "nothing-here")
