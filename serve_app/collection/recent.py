"""The predictions an ingress replica answered last, so that feedback on one is counted by outcome at once
(serve_app_feedback_outcomes); the offline report joins everything from the collected files."""

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

FeedbackOutcome = Literal["top1", "top3", "miss", "helpful", "unhelpful", "unknown"]


@dataclass(frozen=True)
class RecentPrediction:
    model: str  # faq | images
    model_version: str
    ranked_ids: tuple[tuple, ...]  # per question or image, best first
    caller: str | None = None  # who was answered (serve_app.auth.Principal's name); feedback is theirs alone


class RecentPredictions:
    """A bounded map of request id to prediction; the oldest goes first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, RecentPrediction] = OrderedDict()

    def remember(self, request_id: str, prediction: RecentPrediction) -> None:
        if self.capacity == 0:
            return
        self._items[request_id] = prediction
        self._items.move_to_end(request_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, request_id: str) -> RecentPrediction | None:
        return self._items.get(request_id)


def outcome_of(prediction: RecentPrediction | None, item: int, label: dict) -> FeedbackOutcome:
    """Where the true answer ranked in the prediction, or whether it helped; unknown when it is not remembered."""
    if "helpful" in label:
        return "helpful" if label["helpful"] else "unhelpful"
    if prediction is None or item >= len(prediction.ranked_ids):
        return "unknown"
    truth = label.get("faq_id", label.get("image_class"))
    ranked = prediction.ranked_ids[item]
    if ranked[:1] == (truth,):
        return "top1"
    return "top3" if truth in ranked[:3] else "miss"
