import json
import subprocess
import sys

import numpy as np

from deployments.faq.artifact import load_artifact
from deployments.faq.demo import DEMO_FAQ_PATH
from serve_app.cli import main


def test_train_then_evaluate_prints_one_json_object(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["faq", "train", "--orig", str(DEMO_FAQ_PATH), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"]["cross_validation"]["n"] == 96
    assert main(["faq", "evaluate", "--model", str(out), "--orig", str(DEMO_FAQ_PATH), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"acc_at_1", "acc_at_2", "acc_at_3", "mean_rank", "n"}
    assert metrics["n"] == 96


def test_reference_cleaning_trains_a_model_that_ignores_code_blocks(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["faq", "train", "--orig", str(DEMO_FAQ_PATH), "--out", str(out), "--reference-cleaning"]) == 0
    capsys.readouterr()
    model, _ = load_artifact(str(out))
    assert model.config.keep_code_blocks is False
    plain = "How do I copy an array?"
    with_code = plain + "<pre><code>const copy = original.slice(); JSON.parse(x)</code></pre>"
    np.testing.assert_array_equal(model.scores([plain]), model.scores([with_code]))


def test_questions_only_trains_without_the_answers_words_but_still_returns_answers(tmp_path, capsys):
    default, questions_only = tmp_path / "default", tmp_path / "questions-only"
    assert main(["faq", "train", "--orig", str(DEMO_FAQ_PATH), "--out", str(default)]) == 0
    assert main(["faq", "train", "--orig", str(DEMO_FAQ_PATH), "--out", str(questions_only), "--questions-only"]) == 0
    capsys.readouterr()
    # "haystack" is in one demo answer only (haystack.includes(needle)), in no question or phrasing.
    vocabularies = {}
    for name, path in (("default", default), ("questions_only", questions_only)):
        model, _ = load_artifact(str(path))
        vocabularies[name] = model.views[0].features.word.vocabulary_
    assert "haystack" in vocabularies["default"] and "haystack" not in vocabularies["questions_only"]
    assert model.config.answers_in_text is False
    (row,) = model.probabilities(["How do I check whether a string contains a substring?"])
    assert model.match(row, 1)[0]["answer"].startswith("haystack.includes(needle)")


def test_missing_model_is_a_clear_error_not_a_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serve_app.cli",
            "faq",
            "evaluate",
            "--model",
            str(tmp_path / "none"),
            "--orig",
            str(DEMO_FAQ_PATH),
            "--dups",
            "x",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_a_token_longer_lived_than_the_ingress_accepts_is_not_minted(monkeypatch, capsys):
    monkeypatch.setenv("SERVE_APP_JWT_SECRET", "s" * 32)
    assert main(["token", "--subject", "notebook", "--ttl-s", str(10 * 365 * 86_400)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "auth.max_token_lifetime_s" in captured.err and "Traceback" not in captured.err
    assert main(["token", "--subject", "notebook", "--ttl-s", "86400"]) == 0
    assert capsys.readouterr().out.count(".") == 2  # one JWT
