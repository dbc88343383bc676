"""Serve deployment of the ResNet-152 classifier: decode on the replica, batch forward passes across requests.

Neither decoding nor the forward pass runs on the replica's event loop: decoding runs in a pool of threads, the
forward passes on one thread of their own, one batch at a time. The loop stays free to take requests, answer
health checks and status calls, and hear cancellations while the model runs.
"""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import partial

import torch
from ray import serve

from deployments.errors import InvalidInput, ModelUnavailable
from deployments.resnet.model import ResNetClassifier, WeightsError, load_resnet152, top_k
from deployments.resnet.preprocess import check_request_pixels, preprocess
from deployments.resnet.settings import ImageModelSettings, ImageUserConfig

logger = logging.getLogger("ray.serve")
DEFAULT_BATCHING = ImageUserConfig()


def forward_pass(classifier: ResNetClassifier, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(classifier.probabilities(torch.stack(tensors)))


@serve.deployment(
    ray_actor_options={"num_cpus": 1},
    # At least a few batches' worth, or batches could never fill.
    max_ongoing_requests=4 * DEFAULT_BATCHING.max_batch_size,
    # Beyond this many queued calls, callers (the ingress) get BackPressureError -> 503 at once.
    max_queued_requests=128,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 16},
    user_config=DEFAULT_BATCHING.model_dump(),
)
class ImageClassifier:
    def __init__(self, settings: dict | None = None) -> None:
        self.settings = ImageModelSettings(**(settings or {}))
        # Decoding and resizing release the GIL in PIL and torch, so threads use the replica's cores.
        self.decode_pool = ThreadPoolExecutor(self.settings.decode_threads, thread_name_prefix="decode")
        # One batch at a time (torch uses every core for it): memory stays bounded by one batch's activations.
        self.forward_thread = ThreadPoolExecutor(1, thread_name_prefix="forward")
        self.classifier: ResNetClassifier | None = None
        self.version: str | None = None
        self.load_error: str | None = None
        self.batch_config = DEFAULT_BATCHING
        self.batching = {"forward_passes": 0, "images": 0, "largest_batch": 0}
        try:
            model, self.version = load_resnet152(self.settings.weights, self.settings.weights_sha256)
            self.classifier = ResNetClassifier(
                model, self.settings.device, self.settings.half_precision, self.settings.channels_last
            )
            logger.info("ResNet-152 %s loaded on %s (%s)", self.version, self.classifier.device, self.classifier.dtype)
        except WeightsError as error:
            self.load_error = f"image model could not be loaded: {error}"
            logger.error(self.load_error)

    def reconfigure(self, user_config: dict) -> None:
        self.batch_config = ImageUserConfig(**user_config)
        self._forward.set_max_batch_size(self.batch_config.max_batch_size)
        self._forward.set_batch_wait_timeout_s(self.batch_config.batch_wait_timeout_s)

    def status(self) -> dict:
        device = str(self.classifier.device) if self.classifier else None
        return {
            "ready": self.classifier is not None,
            "model_version": self.version,
            "error": self.load_error,
            "device": device,
            "torch_threads": torch.get_num_threads(),
            "batching": {**self.batching, **self.batch_config.model_dump()},
        }

    async def _preprocess(self, index: int, data: bytes) -> torch.Tensor:
        settings = self.settings
        decode = partial(preprocess, data, settings.max_image_pixels, settings.max_aspect_ratio)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.decode_pool, decode)
        except InvalidInput as error:
            raise error.at(f"images.{index}") from None

    async def classify(self, images: list[bytes], k: int) -> dict:
        """Top-``k`` classes of each image, in order; each image joins the shared forward-pass batches."""
        if self.classifier is None:
            raise ModelUnavailable("images", self.load_error or "not loaded")
        # Headers only: a request over the budget is refused before any image is decoded.
        check = partial(check_request_pixels, images, self.settings.max_request_pixels)
        await asyncio.get_running_loop().run_in_executor(self.decode_pool, check)
        tensors = await asyncio.gather(*(self._preprocess(i, data) for i, data in enumerate(images)))
        probabilities = await asyncio.gather(*(self._forward(tensor) for tensor in tensors))
        return {
            "results": [[asdict(p) for p in top_k(row, k)] for row in probabilities],
            "model_version": self.version,
        }

    @serve.batch(
        max_batch_size=DEFAULT_BATCHING.max_batch_size, batch_wait_timeout_s=DEFAULT_BATCHING.batch_wait_timeout_s
    )
    async def _forward(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        assert self.classifier is not None
        stats = self.batching
        stats["forward_passes"] += 1
        stats["images"] += len(tensors)
        stats["largest_batch"] = max(stats["largest_batch"], len(tensors))
        forward = partial(forward_pass, self.classifier, tensors)
        return await asyncio.get_running_loop().run_in_executor(self.forward_thread, forward)
