"""Serve deployment of the FAQ matcher: loads the model once, batches questions across requests, and swaps
in a new model version on running replicas (``user_config.model_uri``) only after it loads and verifies."""

import asyncio
import logging

from ray import serve

from deployments.faq.artifact import load_artifact
from deployments.faq.demo import demo_model
from deployments.faq.model import FaqModel
from serve_app.errors import ModelUnavailable
from serve_app.settings import FAQ_USER_CONFIG, FaqUserConfig

logger = logging.getLogger("ray.serve")

FaqQuery = tuple[list[str], int]


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=64,
    # Callers (the ingress) get BackPressureError -> 503 at once beyond this many queued calls.
    max_queued_requests=256,
    # The ingress sends grouped calls (serve_app.coalesce), so one outstanding call already means a busy replica.
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 1},
    user_config=FAQ_USER_CONFIG.model_dump(),
)
class FAQMatcher:
    def __init__(self, model_uri: str | None = None) -> None:
        self.model: FaqModel | None = None
        # The model this replica serves, or failed to load at start (None: the embedded demo), so the first
        # reconfigure does not load the same failing URI again.
        self.model_uri = model_uri
        self.configured_uri = model_uri  # the app's faq_model_uri: what an unset user_config.model_uri means
        self.version: str | None = None
        self.load_error: str | None = None
        self.update_error: str | None = None
        self.batch_config = FAQ_USER_CONFIG
        self.batching = {"batches": 0, "requests": 0, "questions": 0, "largest_batch": 0}
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
        if model_uri is None:
            return demo_model().model, "demo"
        model, metadata = load_artifact(model_uri)
        return model, metadata["version_id"]

    async def reconfigure(self, user_config: dict) -> None:
        config = FaqUserConfig(**user_config)
        self.batch_config = config
        self._match_batch.set_max_batch_size(config.max_batch_size)
        self._match_batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
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
            "batching": {
                **self.batching,
                **self.batch_config.model_dump(include={"max_batch_size", "batch_wait_timeout_s"}),
            },
        }

    def _require_model(self) -> FaqModel:
        if self.model is None:
            raise ModelUnavailable("faq", self.load_error or "not loaded")
        return self.model

    async def match_many(self, queries: list[FaqQuery]) -> dict:
        """Best ``top_k`` originals for each question of several requests in one call (the ingress groups
        them): one result list per query, in order.

        The group is already a batch, so it goes straight to the model instead of through ``_match_batch``.
        """
        return {"results": self._score(queries), "model_version": self.version}

    async def score_all(self, question: str) -> list[list]:
        """The reference service's answer: [Id, AnswerId, probability] of every original, best first."""
        model = self._require_model()
        (matches,) = await self._match_batch(([question], len(model.originals)))
        return [[m["id"], m["answer_id"], m["score"]] for m in matches]

    def _count_batch(self, requests: int, questions: int) -> None:
        stats = self.batching
        stats["batches"] += 1
        stats["requests"] += requests
        stats["questions"] += questions
        stats["largest_batch"] = max(stats["largest_batch"], requests)

    @serve.batch(
        max_batch_size=FAQ_USER_CONFIG.max_batch_size, batch_wait_timeout_s=FAQ_USER_CONFIG.batch_wait_timeout_s
    )
    async def _match_batch(self, queries: list[FaqQuery]) -> list[list[list[dict]]]:
        return self._score(queries)

    def _score(self, queries: list[FaqQuery]) -> list[list[list[dict]]]:
        # All questions of all queries go through the model as one sparse matrix product.
        model = self._require_model()
        questions = [question for batch, _ in queries for question in batch]
        probabilities = model.probabilities(questions)
        self._count_batch(len(queries), len(questions))
        results, row = [], 0
        for batch, top_k in queries:
            results.append([model.match(probabilities[row + i], top_k) for i in range(len(batch))])
            row += len(batch)
        return results
