"""The errors a deployment or the ingress raises keep every field through pickling, as Ray ships them."""

import pickle

import pytest

from serve_app.errors import ModelUnavailable, Overloaded, ReplicaCrashed, RequestError

ERRORS = [
    ModelUnavailable("faq", "no artifact at /models/faq"),
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
