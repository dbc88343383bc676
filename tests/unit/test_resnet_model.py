import hashlib

import pytest
import torch

from deployments.resnet.model import LABELS, ResNetClassifier, WeightsError, load_resnet152, top_k


@pytest.fixture(scope="module")
def random_model():
    return load_resnet152("random:0")


def test_random_weights_are_seeded_and_image_dependent(random_model):
    model, version = random_model
    again, _ = load_resnet152("random:0")
    assert version == "resnet152-random-seed0"
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    classifier = ResNetClassifier(model, device="cpu")
    probabilities = classifier.probabilities(torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)))
    assert probabilities.shape == (2, 1000)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2))
    assert 0.005 < probabilities.max() < 0.99  # neither uniform nor collapsed onto one class


def test_state_dict_file_with_checksum(random_model, tmp_path):
    path = tmp_path / "resnet152.pt"
    torch.save(random_model[0].state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    model, version = load_resnet152(str(path), digest)
    assert version == f"resnet152-{digest[:12]}"
    assert torch.equal(model.fc.weight, random_model[0].fc.weight)
    with pytest.raises(WeightsError, match="does not match"):
        load_resnet152(str(path), "0" * 64)


@pytest.mark.parametrize(
    ("weights", "message"),
    [("/no/such/weights.pt", "could not be read"), ("random:abc", "integer seed")],
)
def test_unloadable_weights_explain_themselves(weights, message):
    with pytest.raises(WeightsError, match=message):
        load_resnet152(weights)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "junk.pt"
    torch.save({"not": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="not a resnet152 state_dict"):
        load_resnet152(str(path))


def test_top_k_labels():
    probabilities = torch.zeros(1000)
    probabilities[[504, 447]] = torch.tensor([0.7, 0.2])
    predictions = top_k(probabilities, 2)
    assert [(p.label, p.class_index) for p in predictions] == [(LABELS[504], 504), (LABELS[447], 447)]
    assert predictions[0].label == "coffee mug"


def test_cuda_requested_without_a_gpu_is_an_error(random_model):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(WeightsError, match="no GPU"):
        ResNetClassifier(random_model[0], device="cuda")
