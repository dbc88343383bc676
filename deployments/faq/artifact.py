"""Stage 6, the artifact: a fitted FaqModel in, a model directory out, and back, loaded only after every
file is verified.

Layout: ``model.npz`` (the fitted matrices and idf weights: plain numeric arrays, read with pickle off),
``model.json`` (settings, vocabularies), ``originals.jsonl`` (what a match returns) and ``metadata.json``
(versions, data hash, metrics and the sha256 of each file). Loading reads every file into memory and checks its
sha256 against the metadata before parsing it, so a tampered or truncated artifact is refused unread; and
nothing in the format can hold code (numpy refuses object arrays with ``allow_pickle=False``).
Why not skops (artifact format 1): importing it walks every scikit-learn module, torch included, for
its trusted-type list: ~4 s of CPU at every FAQ replica start, which on a small node under load is felt.
The directory may be local or any fsspec URL (``az://container/faq/v3`` with the ``azure`` extra).
"""

import hashlib
import io
import json
import platform
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from deployments.faq.data import Original
from deployments.faq.encoder import EncoderError
from deployments.faq.model import FaqModel

ARRAYS_FILE = "model.npz"
FIELDS_FILE = "model.json"
ORIGINALS_FILE = "originals.jsonl"
METADATA_FILE = "metadata.json"
ARTIFACT_FORMAT = 3  # 3: two views of the texts and per-original re-ranker biases (2: one view)


class ArtifactError(RuntimeError):
    """The artifact is missing, incomplete, tampered with or of an unknown format."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _library_versions() -> dict[str, str]:
    packages = ("scikit-learn", "numpy", "scipy")
    return {"python": platform.python_version(), **{name: version(name) for name in packages}}


def save_artifact(model: FaqModel, out_dir: str, *, data_sha256: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write the artifact (locally or to an fsspec URL) and return its metadata."""
    arrays, fields = model.state()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # uncompressed: loading is a copy, not a decompression
    contents = {
        ARRAYS_FILE: buffer.getvalue(),
        FIELDS_FILE: json.dumps(fields, ensure_ascii=False).encode(),
        ORIGINALS_FILE: "".join(json.dumps(asdict(o), ensure_ascii=False) + "\n" for o in model.originals).encode(),
    }
    metadata = {
        "format": ARTIFACT_FORMAT,
        "version_id": f"faq-{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "libraries": _library_versions(),
        "data_sha256": data_sha256,
        "n_originals": len(model.originals),
        "config": asdict(model.config),
        "metrics": metrics,
        "files": {name: _sha256(data) for name, data in contents.items()},
    }
    if model.dense is not None:  # the encoder is referenced, not copied: its files' sha256 pin it (model.json too)
        metadata["encoder"] = {"reference": model.dense.reference, "files_sha256": model.dense.files_sha256}
    contents[METADATA_FILE] = json.dumps(metadata, indent=2).encode()
    fs, root = fsspec.core.url_to_fs(out_dir)
    fs.makedirs(root, exist_ok=True)
    for name, data in contents.items():
        with fs.open(f"{root}/{name}", "wb") as handle:
            handle.write(data)
    return metadata


def _read(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    try:
        with fs.open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing: is this a model directory written by `serve-app faq train`?") from None


def load_artifact(uri: str | Path, encoder: str | None = None) -> tuple[FaqModel, dict[str, Any]]:
    """Load and verify an artifact directory; raises ArtifactError with the reason on any doubt. A model
    trained with a sentence encoder loads it from ``encoder`` (a path, fsspec URL or ``package:NAME``; by
    default the reference it was trained with) and refuses it unless its files are the ones it was trained
    with."""
    fs, root = fsspec.core.url_to_fs(str(uri))
    try:
        metadata = json.loads(_read(fs, f"{root}/{METADATA_FILE}"))
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{uri}/{METADATA_FILE} is not valid JSON: {error.msg}") from None
    if metadata.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"{uri}: artifact format {metadata.get('format')!r}, expected {ARTIFACT_FORMAT}; "
            "retrain it with `serve-app faq train`"
        )
    contents = {}
    for name in (ARRAYS_FILE, FIELDS_FILE, ORIGINALS_FILE):
        data = _read(fs, f"{root}/{name}")
        expected = metadata.get("files", {}).get(name)
        if expected is None or _sha256(data) != expected:
            raise ArtifactError(f"{uri}/{name}: sha256 does not match metadata.json; refusing to load it")
        contents[name] = data
    try:
        with np.load(io.BytesIO(contents[ARRAYS_FILE]), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as error:  # numpy's answer to an object (pickled) array, and to a damaged archive
        raise ArtifactError(f"{uri}/{ARRAYS_FILE} is not a plain numeric archive: {error}") from None
    originals = [Original(**json.loads(line)) for line in contents[ORIGINALS_FILE].decode().splitlines() if line]
    try:
        return FaqModel.from_state(originals, arrays, json.loads(contents[FIELDS_FILE]), encoder), metadata
    except EncoderError as error:
        raise ArtifactError(f"{uri}: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        # An artifact written by another version of the model code: say so instead of crashing the replica.
        raise ArtifactError(
            f"{uri}: the model state does not fit this version of serve-app ({type(error).__name__}: {error}); "
            "retrain it with `serve-app faq train`"
        ) from None
