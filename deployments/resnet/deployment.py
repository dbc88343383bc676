"""Serve deployment of the ResNet-152 classifier: decode on the replica, batch forward passes across requests.

Neither decoding nor the forward pass runs on the replica's event loop: decoding runs in a pool of threads, the
forward passes on one thread of their own, one batch at a time. The loop stays free to take requests, answer
health checks and status calls, and hear cancellations while the model runs.

Each request comes with the seconds of work it may still take (the ingress's ``limits.work_budget_s``), a
deadline on this replica's clock from its arrival: an image whose decoding has not started by then is not
decoded, and an image still waiting for a forward pass is left out of the batch, so a request past its budget
stops costing anything but the image being decoded or the forward pass running (WorkBudgetExceeded).
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING

from ray import serve

from deployments.errors import InvalidInput, ModelUnavailable, Refused, WorkBudgetExceeded
from deployments.resnet.fair_queue import JOB_OVERHEAD_PIXELS, FairQueue
from deployments.resnet.settings import ImageModelSettings, ImageUserConfig
from deployments.transport import RUNTIME_ENV

# torch and torchvision are imported where a replica uses them, never when this module is: the driver of
# `serve run serve_app:graph` (and the process building the app on a cluster) imports it only to bind the graph,
# and importing them there cost ~2.8 s of every start (benchmarks/results/startup_serve_run.md).
if TYPE_CHECKING:
    import torch

    from deployments.resnet.model import ResNetClassifier

# What a replica imports beyond this module, in its constructor; a check that the deployment can run where it is
# deployed imports these too (serve_app.app.import_replica_modules).
REPLICA_IMPORTS = ("deployments.resnet.model", "deployments.resnet.preprocess")

logger = logging.getLogger("ray.serve")
DEFAULT_BATCHING = ImageUserConfig()
ANONYMOUS = "anonymous"  # a caller the ingress did not name: one turn for all of them


def forward_pass(classifier: ResNetClassifier, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    import torch

    return list(classifier.probabilities(torch.stack(tensors)))


def over_budget(budget_s: float, index: int, before: str) -> WorkBudgetExceeded:
    return WorkBudgetExceeded(
        f"the request's work budget ran out ({budget_s:.3g} s were left when it reached the image model) before "
        f"this image's {before}; the request's remaining work was not done. Send fewer or smaller images, or "
        "retry when the service is less busy",
        f"images.{index}",
    )


def decode_within(deadline: float, decode: Callable[[], torch.Tensor]) -> torch.Tensor | None:
    """``decode()``, or None when the deadline passed before it could start (in the queue of the decode pool)."""
    return None if time.monotonic() >= deadline else decode()


@dataclass(frozen=True)
class ImageWork:
    """One image of a request, with what its decoding costs (pixels, from its header) and whose it is."""

    caller: str
    request: int  # its request's number on this replica
    index: int
    data: bytes
    pixels: int


@serve.deployment(
    ray_actor_options={"num_cpus": 1, "runtime_env": RUNTIME_ENV},
    # At least a few batches' worth, or batches could never fill.
    max_ongoing_requests=8 * DEFAULT_BATCHING.max_batch_size,
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
        # Callers take turns on those threads by pixels, and at places in the batches by images
        # (deployments.resnet.fair_queue): one caller's queue of images is not another's wait.
        self.decode_turns = FairQueue(self.settings.decode_threads)
        self.batch_turns = FairQueue(DEFAULT_BATCHING.max_batch_size)
        self.requests = itertools.count()
        # One batch at a time (torch uses every core for it): memory stays bounded by one batch's activations.
        self.forward_thread = ThreadPoolExecutor(1, thread_name_prefix="forward")
        # Set while no forward pass runs: images join the batcher only then (_next_batch).
        self.forward_idle = asyncio.Event()
        self.forward_idle.set()
        self.classifier: ResNetClassifier | None = None
        self.version: str | None = None
        self.load_error: str | None = None
        self.batch_config = DEFAULT_BATCHING
        self.batching = {"forward_passes": 0, "images": 0, "largest_batch": 0, "images_over_budget": 0}
        # All a request will use, imported now (preprocess alone takes ~0.25 s): a user's first request imports nothing.
        for module in REPLICA_IMPORTS:
            importlib.import_module(module)
        from deployments.resnet.model import ResNetClassifier, WeightsError, load_resnet152

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
        # One batch's worth at a time: a caller arriving while a batch runs joins the next one.
        self.batch_turns.slots = self.batch_config.max_batch_size

    def status(self) -> dict:
        import torch

        device = str(self.classifier.device) if self.classifier else None
        return {
            "ready": self.classifier is not None,
            "model_version": self.version,
            "error": self.load_error,
            "device": device,
            "torch_threads": torch.get_num_threads(),
            "batching": {**self.batching, **self.batch_config.model_dump()},
        }

    async def _preprocess(self, work: ImageWork, deadline: float, budget_s: float) -> torch.Tensor:
        from deployments.resnet.preprocess import preprocess

        settings = self.settings
        index, data = work.index, work.data
        decode = partial(preprocess, data, settings.max_image_pixels, settings.max_aspect_ratio)
        cost = work.pixels + JOB_OVERHEAD_PIXELS
        try:
            tensor = await self.decode_turns.run(
                work.caller, work.request, cost, partial(self._on_decode_thread, decode_within, deadline, decode)
            )
        except InvalidInput as error:
            raise error.at(f"images.{index}") from None
        if tensor is None:
            self.batching["images_over_budget"] += 1
            raise over_budget(budget_s, index, "decoding")
        return tensor

    def _on_decode_thread(self, job: Callable, *args: object) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(self.decode_pool, job, *args)

    async def _classify_one(
        self, work: ImageWork, tensor: torch.Tensor, deadline: float, budget_s: float
    ) -> torch.Tensor:
        batch_place = partial(self._next_batch, tensor, deadline)
        probabilities = await self.batch_turns.run(work.caller, work.request, 1, batch_place)
        if probabilities is None:
            raise over_budget(budget_s, work.index, "forward pass")
        return probabilities

    async def classify(
        self, images: list[bytes], k: int, budget_s: float | None = None, caller: str = ANONYMOUS
    ) -> dict | Refused:
        """Top-``k`` classes of each image, in order; each image joins the shared forward-pass batches.

        ``budget_s``: the seconds of work the request may still take (None: unbounded); WorkBudgetExceeded past it.
        ``caller``: who sent it (serve_app.ratelimit.caller_key); callers, then a caller's requests, take turns at
        decoding (by pixels) and at places in the batches (deployments.resnet.fair_queue).
        An image the model cannot use, or no model loaded: Refused, its InvalidInput or ModelUnavailable (returned:
        see Refused).
        """
        if self.classifier is None:
            return Refused(ModelUnavailable("images", self.load_error or "not loaded"))
        try:
            return await self._classify(images, k, budget_s, caller)
        except WorkBudgetExceeded:
            raise
        except InvalidInput as error:
            return Refused(error)

    async def _classify(self, images: list[bytes], k: int, budget_s: float | None, caller: str) -> dict:
        from deployments.resnet.model import top_k
        from deployments.resnet.preprocess import check_request_pixels

        budget_s = math.inf if budget_s is None else budget_s
        deadline = time.monotonic() + budget_s
        # Headers only: a request over the budget is refused before any image is decoded.
        check = partial(check_request_pixels, images, self.settings.max_request_pixels)
        request = next(self.requests)
        if not self.settings.fair_turns:  # one caller, one request: arrival order
            caller, request = ANONYMOUS, 0
        header_cost = JOB_OVERHEAD_PIXELS * len(images)
        pixels = await self.decode_turns.run(caller, request, header_cost, partial(self._on_decode_thread, check))
        work = [ImageWork(caller, request, i, data, pixels[i]) for i, data in enumerate(images)]
        # Every image's decoding settles before the request fails: the error named is the first image's in order
        # (not whichever thread finished first), and each skipped image is counted before the answer leaves.
        decoded = await asyncio.gather(*(self._preprocess(w, deadline, budget_s) for w in work), return_exceptions=True)
        if failed := next((result for result in decoded if isinstance(result, BaseException)), None):
            raise failed
        tensors = decoded
        probabilities = await asyncio.gather(
            *(self._classify_one(w, tensor, deadline, budget_s) for w, tensor in zip(work, tensors, strict=True))
        )
        return {
            "results": [[asdict(p) for p in top_k(row, k)] for row in probabilities],
            "model_version": self.version,
        }

    async def _next_batch(self, tensor: torch.Tensor, deadline: float) -> torch.Tensor | None:
        """The image's place in the next batch, joined once no forward pass runs.

        Ray's batcher forms a batch as soon as its first image has waited ``batch_wait_timeout_s``, also while a
        forward pass runs, and the batches it formed then wait their turn: under load every batch held the 1-4
        images that arrived within one wait, whatever ``max_batch_size`` (two 1-CPU replicas at 32 concurrent
        requests, max_batch_size 16: largest batch 3-4 over ~100 images each). Held here until the forward pass
        ends, the images that arrived meanwhile go in the next batch together: up to ``max_batch_size`` less the
        running batch's images, as batch_turns' places count those too. One flag, not a count, is enough because
        Ray runs one batch at a time (serve.batch's max_concurrent_batches, left at 1).
        """
        await self.forward_idle.wait()
        return await self._forward((tensor, deadline))

    @serve.batch(
        max_batch_size=DEFAULT_BATCHING.max_batch_size, batch_wait_timeout_s=DEFAULT_BATCHING.batch_wait_timeout_s
    )
    async def _forward(self, batch: list[tuple[torch.Tensor, float]]) -> list[torch.Tensor | None]:
        """Each image's probabilities, or None for an image whose deadline passed before its batch ran."""
        assert self.classifier is not None
        now = time.monotonic()
        live = [index for index, (_, deadline) in enumerate(batch) if deadline > now]
        results: list[torch.Tensor | None] = [None] * len(batch)
        stats = self.batching
        stats["images_over_budget"] += len(batch) - len(live)
        if not live:
            return results
        stats["forward_passes"] += 1
        stats["images"] += len(live)
        stats["largest_batch"] = max(stats["largest_batch"], len(live))
        forward = partial(forward_pass, self.classifier, [batch[index][0] for index in live])
        self.forward_idle.clear()
        try:
            probabilities = await asyncio.get_running_loop().run_in_executor(self.forward_thread, forward)
        finally:
            self.forward_idle.set()
        for index, row in zip(live, probabilities, strict=True):
            results[index] = row
        return results
