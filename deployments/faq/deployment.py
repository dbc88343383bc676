"""Serve deployment of the FAQ matcher: loads the model once, scores the groups of requests the ingress sends
(serve_app.coalesce) on a thread of its own, a chunk at a time, each request within its work budget
(deployments.faq.group_scoring), and swaps in a new model version on running replicas (``user_config.model_uri``)
only after it loads and verifies."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ray import serve

from deployments.errors import ModelUnavailable, Refused, WorkBudgetExceeded
from deployments.faq.gil import set_gil_switch_interval
from deployments.faq.settings import FaqUserConfig
from deployments.transport import RUNTIME_ENV

# The model's modules (numpy, scipy, scikit-learn, numba) are imported where a replica uses them, never when this
# module is: the driver of `serve run serve_app:graph` (and the process building the app on a cluster) imports it
# only to bind the graph, and importing them there cost ~1.2 s of every start
# (benchmarks/results/startup_serve_run.md).
if TYPE_CHECKING:
    from deployments.faq.group_scoring import FaqQuery
    from deployments.faq.model import FaqModel

# What a replica imports beyond this module, in its constructor; a check that the deployment can run where it is
# deployed imports these too (serve_app.app.import_replica_modules).
REPLICA_IMPORTS = ("deployments.faq.artifact", "deployments.faq.demo", "deployments.faq.group_scoring")

logger = logging.getLogger("ray.serve")


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5, "runtime_env": RUNTIME_ENV},
    max_ongoing_requests=64,
    # Callers (the ingress) get BackPressureError -> 503 at once beyond this many queued calls.
    max_queued_requests=256,
    # The ingress sends grouped calls (serve_app.coalesce), so one outstanding call already means a busy replica.
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 1},
    user_config=FaqUserConfig().model_dump(),
)
class FAQMatcher:
    def __init__(self, model_uri: str | None = None) -> None:
        # The scoring thread hands the GIL to the event loop and Ray's threads sooner (deployments.faq.gil).
        switch_interval_s = set_gil_switch_interval()
        logger.info("FAQ replica: GIL switch interval %g s", switch_interval_s)
        self.model: FaqModel | None = None
        # The model this replica serves, or failed to load at start (None: the embedded demo), so the first
        # reconfigure does not load the same failing URI again.
        self.model_uri = model_uri
        self.configured_uri = model_uri  # the app's faq_model_uri: what an unset user_config.model_uri means
        self.version: str | None = None
        self.load_error: str | None = None
        self.update_error: str | None = None
        # Scoring runs here, one chunk of a group at a time, so the event loop stays free for health checks,
        # status calls and cancellations while a group scores, and memory holds one chunk's matrices at most.
        self.scorer = ThreadPoolExecutor(1, thread_name_prefix="faq-score")
        self.batching = {
            "batches": 0,
            "requests": 0,
            "questions": 0,
            "largest_batch": 0,
            "questions_scored": 0,  # fewer than questions when requests ran past their work budget
            "chunks": 0,
            "requests_over_budget": 0,
        }
        try:
            self.model, self.version = self._load(model_uri)
            logger.info("FAQ model %s loaded: %d originals", self.version, len(self.model.originals))
        except Exception as error:
            # Degrade narrowly: this replica stays up and explains itself; the other models keep serving. Any
            # exception: an artifact is outside data (a missing fsspec plugin raises ImportError, a malformed
            # but hash-consistent file KeyError or TypeError), and none of it may crash the replica.
            self.load_error = f"FAQ model {model_uri!r} could not be loaded: {error}"
            logger.error(self.load_error)

    @staticmethod
    def _load(model_uri: str | None) -> tuple[FaqModel, str]:
        # All a request will use, imported now: a user's first request imports nothing.
        for module in REPLICA_IMPORTS:
            importlib.import_module(module)
        from deployments.faq.artifact import load_artifact
        from deployments.faq.demo import demo_model

        if model_uri is None:
            model, version = demo_model().model, "demo"
        else:
            model, metadata = load_artifact(model_uri)
            version = metadata["version_id"]
        # One question scored before the model serves: it proves the loaded arrays score (a model that loads but
        # cannot is refused here, before any swap), and numba's compiled loops are loaded from their cache now
        # (~0.27 s: benchmarks/results/startup.md), before the replica reports ready, not on a user's request.
        model.probabilities([model.originals[0].title])
        return model, version

    async def reconfigure(self, user_config: dict) -> None:
        config = FaqUserConfig(**user_config)
        # Unset means the app's own model again (e.g. rolling back a hot update), so every replica, old or new,
        # serves the same version.
        wanted = config.model_uri if config.model_uri is not None else self.configured_uri
        # Naming a model explicitly retries it even when it is the one that failed (e.g. after fixing its files).
        if wanted != self.model_uri or (self.model is None and config.model_uri is not None):
            await self._swap_model(wanted)

    async def _swap_model(self, model_uri: str | None) -> None:
        """Load and verify off the event loop while the current model keeps answering; swap only on success.

        Never raises: a refused model must not take the replica (and the model it serves) down with it.
        """
        try:
            model, version = await asyncio.to_thread(self._load, model_uri)
        except Exception as error:  # as in __init__: whatever a refused model raises, the current one stays
            self.update_error = f"FAQ model {model_uri!r} refused: {error}; still serving {self.version or 'none'}"
            logger.error(self.update_error)
            return
        previous, self.model, self.version, self.model_uri = self.version, model, version, model_uri
        self.load_error = self.update_error = None
        logger.info("FAQ model swapped: %s -> %s (%d originals)", previous, version, len(model.originals))

    def status(self) -> dict:
        return {
            "ready": self.model is not None,
            "model_version": self.version,
            "error": self.load_error,
            "update_error": self.update_error,
            "gil_switch_interval_s": sys.getswitchinterval(),
            "batching": dict(self.batching),
        }

    async def match_many(self, queries: list[FaqQuery], budgets_s: list[float | None] | None = None) -> dict | Refused:
        """The answers to several requests' queries in one call (the ingress groups them), in order.

        ``budgets_s``: each query's remaining seconds of work (None: unbounded). A query past it gets a
        WorkBudgetExceeded in place of its results; the others are answered as usual. No model loaded: Refused, its
        ModelUnavailable (returned: see Refused).
        """
        from deployments.faq.group_scoring import GroupScoring

        # Taken once, on the loop: a hot swap while the group scores cannot mix two models in one answer.
        model, version = self.model, self.version
        if model is None:
            return Refused(ModelUnavailable("faq", self.load_error or "not loaded"))
        scoring = GroupScoring(model, queries, budgets_s)
        loop = asyncio.get_running_loop()
        # One chunk per turn on the scoring thread, whose queue is first come, first served: calls that arrive
        # meanwhile (from other ingress replicas, say) take turns with this one chunk by chunk, and a call the
        # ingress cancels stops within one chunk too.
        while (results := await loop.run_in_executor(self.scorer, scoring.step)) is None:
            pass
        stats = self.batching
        stats["batches"] += 1
        stats["requests"] += len(queries)
        stats["questions"] += sum(len(questions) for questions, _ in queries)
        stats["largest_batch"] = max(stats["largest_batch"], len(queries))
        stats["questions_scored"] += scoring.questions_scored
        stats["chunks"] += scoring.chunks
        stats["requests_over_budget"] += sum(isinstance(result, WorkBudgetExceeded) for result in results)
        return {"results": results, "model_version": version}
