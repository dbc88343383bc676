"""The optional sentence encoder (deployments/faq/encoder.py) and a model with dense scorers (dense.py), on a
tiny randomly initialised BERT written in the sentence-transformers layout: the code paths of the real
all-MiniLM-L6-v2, none of its 90 MB (benchmarks/faq_dense.py measures the real one's quality)."""

import json
import string

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
tokenizers = pytest.importorskip("tokenizers")

from deployments.faq.artifact import ArtifactError, load_artifact, save_artifact  # noqa: E402
from deployments.faq.data import load_jsonl  # noqa: E402
from deployments.faq.demo import DEMO_FAQ_PATH  # noqa: E402
from deployments.faq.dense import DENSE_SCORERS, dense_zscores, fit_dense_scorers  # noqa: E402
from deployments.faq.encoder import EncoderError, load_encoder, resolve_encoder  # noqa: E402
from deployments.faq.training.fit import fit_model  # noqa: E402

WIDTH, LAYERS, HEADS = 16, 2, 4
QUESTIONS = ["how to deep copy an object", "random integer between two numbers", "x"]


def write_tiny_bert(directory) -> None:
    """config.json, model.safetensors and tokenizer.json of a 2-layer BERT whose word pieces are single
    characters, so every text tokenizes."""
    characters = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *characters, *(f"##{c}" for c in characters)]
    tokenizer = tokenizers.Tokenizer(
        tokenizers.models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]")
    )
    tokenizer.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {"model_type": "bert", "hidden_act": "gelu", "num_hidden_layers": LAYERS, "num_attention_heads": HEADS}
    (directory / "config.json").write_text(json.dumps(config))
    generator = torch.Generator().manual_seed(0)

    def random(*shape):
        return torch.randn(*shape, generator=generator) * 0.3

    weights = {
        "embeddings.word_embeddings.weight": random(len(vocab), WIDTH),
        "embeddings.position_embeddings.weight": random(512, WIDTH),
        "embeddings.token_type_embeddings.weight": random(2, WIDTH),
    }
    norms = ["embeddings.LayerNorm"]
    for layer in range(LAYERS):
        prefix = f"encoder.layer.{layer}"
        for name, (out, inner) in {
            "attention.self.query": (WIDTH, WIDTH),
            "attention.self.key": (WIDTH, WIDTH),
            "attention.self.value": (WIDTH, WIDTH),
            "attention.output.dense": (WIDTH, WIDTH),
            "intermediate.dense": (4 * WIDTH, WIDTH),
            "output.dense": (WIDTH, 4 * WIDTH),
        }.items():
            weights[f"{prefix}.{name}.weight"] = random(out, inner)
            weights[f"{prefix}.{name}.bias"] = random(out)
        norms += [f"{prefix}.attention.output.LayerNorm", f"{prefix}.output.LayerNorm"]
    for norm in norms:
        weights[f"{norm}.weight"] = 1 + random(WIDTH)
        weights[f"{norm}.bias"] = random(WIDTH)
    safetensors_torch.save_file(weights, str(directory / "model.safetensors"))


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-bert")
    write_tiny_bert(directory)
    return directory


def test_embeddings_are_unit_vectors_and_batching_does_not_change_them(encoder_dir):
    loaded = load_encoder(str(encoder_dir))
    together = loaded.encoder.encode(QUESTIONS, batch_size=2)  # padded to the longest of each batch
    apart = np.concatenate([loaded.encoder.encode([question]) for question in QUESTIONS])
    assert together.shape == (len(QUESTIONS), WIDTH)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert np.allclose(together, apart, atol=1e-5)
    assert loaded.encoder.encode([]).shape == (0, WIDTH)
    assert set(loaded.files_sha256) == {"config.json", "model.safetensors", "tokenizer.json"}


def test_other_weights_than_expected_are_refused(encoder_dir):
    loaded = load_encoder(str(encoder_dir))
    expected = {**loaded.files_sha256, "model.safetensors": "0" * 64}
    with pytest.raises(EncoderError, match=r"model\.safetensors"):
        load_encoder(str(encoder_dir), expected_sha256=expected)


def test_missing_files_and_packages_are_named(tmp_path):
    with pytest.raises(EncoderError, match=r"config\.json"):
        resolve_encoder(str(tmp_path))
    with pytest.raises(EncoderError, match="not installed"):
        resolve_encoder("package:no_such_encoder_package")


def test_an_fsspec_url_is_copied_to_a_local_directory(encoder_dir):
    import fsspec

    memory = fsspec.filesystem("memory")
    for path in encoder_dir.iterdir():
        memory.pipe(f"/tiny-bert/{path.name}", path.read_bytes())
    loaded = load_encoder("memory://tiny-bert")
    assert loaded.files_sha256 == load_encoder(str(encoder_dir)).files_sha256


def test_dense_scorers_rank_a_known_phrasing_first():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(8, 5))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 1, 2, 2, 1, 2])  # text and title of 3 originals, then 2 duplicates
    scorers = fit_dense_scorers(embeddings, labels, 3, gamma=10.0, alpha=0.3)
    zscores = dense_zscores(scorers, embeddings[6:])
    assert zscores.shape == (2, len(DENSE_SCORERS), 3)
    assert (zscores[:, DENSE_SCORERS.index("nearest")].argmax(axis=1) == [1, 2]).all()


@pytest.fixture(scope="module")
def dense_model(encoder_dir):
    return fit_model(load_jsonl(DEMO_FAQ_PATH), encoder=load_encoder(str(encoder_dir)))


def test_a_model_with_an_encoder_round_trips_through_its_artifact(dense_model, encoder_dir, tmp_path):
    metadata = save_artifact(dense_model, str(tmp_path / "faq"), data_sha256="abc", metrics={})
    assert metadata["encoder"]["files_sha256"] == dense_model.dense.files_sha256
    loaded, _ = load_artifact(tmp_path / "faq")
    assert np.allclose(loaded.probabilities(QUESTIONS), dense_model.probabilities(QUESTIONS))
    assert loaded.dense.reference == str(encoder_dir)


def test_an_artifact_refuses_an_encoder_other_than_its_own(dense_model, tmp_path):
    save_artifact(dense_model, str(tmp_path / "faq"), data_sha256="abc", metrics={})
    other = tmp_path / "other-bert"
    other.mkdir()
    write_tiny_bert(other)
    (other / "config.json").write_text(json.dumps({**json.loads((other / "config.json").read_text()), "x": 1}))
    with pytest.raises(ArtifactError, match=r"config\.json"):
        load_artifact(tmp_path / "faq", encoder=str(other))


def test_a_model_without_an_encoder_saves_no_dense_state():
    arrays, fields = fit_model(load_jsonl(DEMO_FAQ_PATH)).state()
    assert "dense" not in fields
    assert not [key for key in arrays if key.startswith("dense.")]
