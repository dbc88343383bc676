"""Model data collection: a record of each answered model request and of each piece of feedback, written off the
request path as JSON Lines files partitioned by date and model version (docs/operations.md "Model data
collection and feedback"). Off by default (``collection.enabled``)."""

from serve_app.collection.collector import Collector
from serve_app.collection.recent import FeedbackOutcome, RecentPredictions
from serve_app.collection.records import feedback_record, prediction_record
from serve_app.collection.settings import CollectionSettings, Privacy

__all__ = [
    "CollectionSettings",
    "Collector",
    "FeedbackOutcome",
    "Privacy",
    "RecentPredictions",
    "feedback_record",
    "prediction_record",
]
