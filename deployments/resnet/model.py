"""ResNet-152 (ImageNet-1k): load weights from wherever they live, classify batches of tensors."""

import hashlib
import io
from dataclasses import dataclass

import fsspec
import torch
from torchvision.models import ResNet, ResNet152_Weights, resnet152

LABELS: list[str] = ResNet152_Weights.IMAGENET1K_V2.meta["categories"]
RANDOM = "random"


class WeightsError(RuntimeError):
    """The configured weights could not be loaded; the message says why and how to fix it."""


RANDOM_LOGIT_SCALE = 100.0


def random_resnet152(seed: int) -> ResNet:
    """torchvision's resnet152 with seeded random weights: same architecture and compute as the real one.

    Plain random initialisation makes activations grow through the 50 residual blocks until one class gets
    probability 1.0 for every image, and zero-initialised residual branches give ~0.001 everywhere; both
    would make equivalence tests vacuous. So residual branches start at zero and the classifier layer is
    scaled up, which gives image-dependent, spread-out probabilities (top-1 around 0.03-0.1).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = resnet152(weights=None, zero_init_residual=True)
    with torch.no_grad():
        model.fc.weight.mul_(RANDOM_LOGIT_SCALE)
    return model


def _torchvision_weights(name: str) -> ResNet:
    try:
        return resnet152(weights=ResNet152_Weights[name])
    except (OSError, RuntimeError) as error:  # URLError is an OSError: no network, proxy, full disk...
        raise WeightsError(
            f"torchvision weights {name} could not be downloaded ({error}). Fix: give the replica internet "
            "access once (they are cached under $TORCH_HOME), bake them into the container image, or set "
            "images.weights to a local path or az:// URL of the state_dict"
        ) from None


def _state_dict_weights(uri: str, sha256: str | None) -> ResNet:
    try:
        with fsspec.open(uri, "rb") as handle:
            data = handle.read()
    except (OSError, ValueError) as error:
        raise WeightsError(f"weights file {uri!r} could not be read: {error}") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise WeightsError(f"weights file {uri!r} does not match images.weights_sha256; refusing to load it")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        model = resnet152(weights=None)
        model.load_state_dict(state)
    except Exception as error:  # torch raises many types for bad files; all mean the same to the operator
        raise WeightsError(f"weights file {uri!r} is not a resnet152 state_dict: {error}") from None
    return model


def load_resnet152(weights: str, sha256: str | None = None) -> tuple[ResNet, str]:
    """The model and a version string for ``weights``: a torchvision enum name, random:SEED, or a path/URL."""
    if weights == RANDOM or weights.startswith(f"{RANDOM}:"):
        seed_text = weights.partition(":")[2] or "0"
        if not seed_text.isdigit():
            raise WeightsError(f"random weights need an integer seed, e.g. random:0, not {weights!r}")
        return random_resnet152(int(seed_text)), f"resnet152-random-seed{seed_text}"
    if weights in ResNet152_Weights.__members__:
        return _torchvision_weights(weights), f"resnet152-{weights}"
    return _state_dict_weights(weights, sha256), f"resnet152-{(sha256 or 'unverified')[:12]}"


@dataclass(frozen=True)
class Prediction:
    label: str
    class_index: int
    score: float


class ResNetClassifier:
    """Runs batches on the chosen device; fp16 and channels-last apply on CUDA only."""

    def __init__(self, model: ResNet, device: str = "auto", half: bool = True, channels_last: bool = True) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise WeightsError("images.device is cuda but this replica sees no GPU (num_gpus: 1 on the deployment?)")
        self.device = torch.device(device)
        on_gpu = self.device.type == "cuda"
        self.dtype = torch.float16 if on_gpu and half else torch.float32
        self.memory_format = torch.channels_last if on_gpu and channels_last else torch.contiguous_format
        self.model = model.eval().to(device=self.device, dtype=self.dtype, memory_format=self.memory_format)

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, 224, 224) preprocessed images -> (N, 1000) class probabilities, float32 on the CPU."""
        batch = batch.to(device=self.device, dtype=self.dtype, memory_format=self.memory_format, non_blocking=True)
        return torch.softmax(self.model(batch).float(), dim=1).cpu()


def top_k(probabilities: torch.Tensor, k: int) -> list[Prediction]:
    scores, indices = torch.topk(probabilities, k)
    return [Prediction(LABELS[i], i, s) for s, i in zip(scores.tolist(), indices.tolist(), strict=True)]
