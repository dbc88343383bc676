"""The models as a user would call them in one process, without Ray: shared by every non-Serve peer.

The reference stack's score.py, the plain FastAPI app and the bare-model limit all use these, so each
peer runs exactly the same model code on exactly the same inputs as the Serve deployments.
"""

import os
from dataclasses import asdict

import torch

from deployments.faq.artifact import load_artifact
from deployments.faq.demo import demo_model
from deployments.faq.model import FaqModel
from deployments.resnet.model import ResNetClassifier, load_resnet152, top_k
from deployments.resnet.preprocess import preprocess

MAX_IMAGE_PIXELS = 40_000_000


class FaqScorer:
    """``SERVE_APP_FAQ_MODEL_URI`` names the artifact, as for the Serve application; unset: the demo FAQ."""

    def __init__(self, model_uri: str | None = None) -> None:
        model_uri = model_uri or os.environ.get("SERVE_APP_FAQ_MODEL_URI")
        if model_uri:
            self.model, metadata = load_artifact(model_uri)
            self.version = metadata["version_id"]
        else:
            self.model: FaqModel = demo_model().model
            self.version = "demo"

    def match(self, questions: list[str], top_k: int) -> list[list[dict]]:
        probabilities = self.model.probabilities(questions)
        return [self.model.match(row, top_k) for row in probabilities]

    def answer(self, body: dict) -> dict:
        """The answer of POST /faq/match for a parsed request body."""
        top_k = int(body.get("top_k", 5))
        if "question" in body:
            return {"matches": self.match([body["question"]], top_k)[0], "model_version": self.version}
        results = [{"matches": matches} for matches in self.match(body["questions"], top_k)]
        return {"results": results, "model_version": self.version}


class ImageScorer:
    """``SERVE_APP_IMAGES__WEIGHTS`` picks the weights, as for the Serve application (default random:0 here)."""

    def __init__(self, weights: str | None = None, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        model, self.version = load_resnet152(weights or os.environ.get("SERVE_APP_IMAGES__WEIGHTS", "random:0"))
        self.classifier = ResNetClassifier(model)

    def classify(self, images: list[bytes], k: int = 5) -> list[dict]:
        """One forward pass over this request's images: no batching across requests."""
        batch = torch.stack([preprocess(data, MAX_IMAGE_PIXELS) for data in images])
        rows = self.classifier.probabilities(batch)
        return [{"predictions": [asdict(p) for p in top_k(row, k)], "model_version": self.version} for row in rows]
