"""The errors a deployment or the ingress raises keep every field through pickling, as Ray ships them, and each
answers with the HTTP status the API documents."""

import pickle

import pytest

from deployments.errors import InputTooLarge, InvalidInput, ModelUnavailable
from serve_app.errors import Overloaded, ReplicaCrashed, RequestError, status_of

ERRORS = [
    ModelUnavailable("faq", "no artifact at /models/faq"),
    InvalidInput("corrupt_image", "the image could not be decoded", "images.3"),
    InputTooLarge("image_too_large", "50000x50000 pixels is over the limit"),
    Overloaded("queue full", retry_after_s=2.5),
    ReplicaCrashed("images", 3),
    RequestError(422, "validation_error", "top_k: too large", [{"field": "top_k", "message": "too large"}]),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_fields_survive_pickling(error: Exception):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_replica_crashed_names_the_model_the_count_and_the_setting():
    message = str(ReplicaCrashed("faq", 3))
    assert message.startswith("faq: 3 model replica(s)")
    assert "limits.max_replica_deaths_per_call" in message


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InputTooLarge("image_too_large", "too many pixels").at("images.0"), 413),
        (InvalidInput("image_too_elongated", "65535x1 pixels"), 422),
        (InvalidInput("validation_error", "must not be empty", "question"), 422),
        (ModelUnavailable("images", "weights missing"), 503),
        (Overloaded("busy"), 503),
        (ReplicaCrashed("faq", 3), 500),
        (TimeoutError("slow"), 504),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_each_error_answers_with_its_documented_status(error, status):
    assert status_of(error) == status


def test_locating_an_invalid_input_keeps_its_class_kind_and_message():
    located = InputTooLarge("image_too_large", "too many pixels").at("images.2")
    assert type(located) is InputTooLarge
    assert (located.kind, located.message, located.field) == ("image_too_large", "too many pixels", "images.2")
