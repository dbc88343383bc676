import numpy as np
import pytest

from deployments.faq.data import load_jsonl
from deployments.faq.demo import DEMO_FAQ_PATH, demo_model
from deployments.faq.model import FaqModel


@pytest.fixture(scope="module")
def trained():
    return demo_model()


def test_probabilities_are_a_distribution_over_originals(trained):
    probabilities = trained.model.probabilities(["copy an object with nested arrays", "?"])
    assert probabilities.shape == (2, len(trained.model.originals))
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_matches_are_best_first_and_truncated(trained):
    model = trained.model
    (row,) = model.probabilities(["put a string on the clipboard"])
    matches = model.match(row, 3)
    assert matches[0]["question"] == "How do I copy text to the clipboard?"
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)
    assert len(model.match(row, 1000)) == len(model.originals)


def test_demo_model_recognises_its_own_phrasings(trained):
    dataset = load_jsonl(DEMO_FAQ_PATH)
    probabilities = trained.model.probabilities([d.text for d in dataset.duplicates])
    columns = {o.answer_id: i for i, o in enumerate(dataset.originals)}
    truth = np.array([columns[d.answer_id] for d in dataset.duplicates])
    # Seen in training, but the re-ranker weighs scorers by how they do on unseen phrasings, so it does not
    # simply recall its training documents: 0.90 measured (the demo has 24 originals, 96 phrasings).
    assert (probabilities.argmax(axis=1) == truth).mean() > 0.85


def test_training_reports_cross_validation_and_calibration(trained):
    metrics = trained.metrics
    assert metrics["cross_validation"]["folds"] == 4
    assert metrics["cross_validation"]["n"] == metrics["n_duplicates"]
    assert 0 < metrics["temperature"] < 100
    assert trained.model.temperature == metrics["temperature"]


def test_scores_batch_equals_one_by_one(trained):
    questions = ["sort by price", "debounce typing", "date as yyyy-mm-dd"]
    together = trained.model.scores(questions)
    alone = np.vstack([trained.model.scores([q]) for q in questions])
    assert np.allclose(together, alone)


def test_a_loaded_model_starts_with_its_training_words_cached(trained):
    model = trained.model
    arrays, fields = model.state()
    assert "clipboard" in fields["known_words"]
    loaded = FaqModel.from_state(model.originals, arrays, fields)
    cached = loaded.features._word_char_counts.cache_info().currsize
    assert cached == len(fields["known_words"])
    # A model saved before known_words existed warms up with its originals' words instead, and scores the same.
    older = FaqModel.from_state(model.originals, arrays, {k: v for k, v in fields.items() if k != "known_words"})
    assert 0 < older.features._word_char_counts.cache_info().currsize < cached
    questions = ["put a string on the clipboard", "never seen wording here"]
    assert np.allclose(loaded.scores(questions), model.scores(questions))
    assert np.allclose(older.scores(questions), model.scores(questions))
    with pytest.raises(ValueError, match="known_words"):
        FaqModel.from_state(model.originals, arrays, fields | {"known_words": ["ok", 3]})
