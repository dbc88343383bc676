"""`python -m serve_app.report`: feedback joined with predictions by request id, per model version."""

import json
from pathlib import Path

import pytest

from serve_app.report import build_report, expected_calibration_error, main, read_records


def prediction(request_id: str, version: str, ids: list[int], scores: list[float]) -> dict:
    return {
        "kind": "prediction",
        "request_id": request_id,
        "time": "2026-12-03T10:00:00.000+00:00",
        "model": "faq",
        "model_version": version,
        "outputs": [{"ids": ids, "scores": scores}],
    }


def feedback(request_id: str, time: str = "2026-12-03T10:01:00.000+00:00", **label) -> dict:
    return {"kind": "feedback", "request_id": request_id, "time": time, "item": 0, **label}


RECORDS = [
    prediction("a", "v1", [1, 2, 3], [0.9, 0.05, 0.05]),  # right at top 1
    prediction("b", "v1", [4, 5, 6], [0.6, 0.3, 0.1]),  # right at 2
    prediction("c", "v1", [7, 8, 9], [0.3, 0.3, 0.3]),  # wrong
    prediction("d", "v2", [1, 2, 3], [0.8, 0.1, 0.1]),  # right at top 1
    feedback("a", faq_id=1),
    feedback("b", faq_id=99),
    feedback("b", time="2026-12-03T10:02:00.000+00:00", faq_id=5),  # the later feedback wins
    feedback("c", faq_id=100),
    feedback("d", faq_id=1),
    feedback("d", helpful=True),
    feedback("gone", faq_id=1),  # its prediction was not sampled
]


def test_accuracy_and_calibration_per_model_version():
    report = build_report(RECORDS)
    v1, v2 = report.versions[("faq", "v1")], report.versions[("faq", "v2")]
    assert (v1.labelled, sum(v1.top1), sum(v1.top3), v1.predictions) == (3, 1, 2, 3)
    # Bins: 0.9 (right), 0.6 (wrong), 0.3 (wrong): each |accuracy - confidence| weighs a third.
    assert expected_calibration_error(v1) == pytest.approx((0.1 + 0.6 + 0.3) / 3)
    assert (v2.labelled, sum(v2.top1), v2.helpful) == (1, 1, 1)
    assert report.unmatched_feedback == 1


def test_the_cli_reads_the_partitions_and_draws_the_diagram(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    for index, record in enumerate(RECORDS):
        directory = tmp_path / "collected" / "date=2026-12-03" / f"model_version={record.get('model_version', 'x')}"
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / f"r-{index:06d}.jsonl").open("w") as lines:
            lines.write(json.dumps(record) + "\n")
    (directory / "torn.jsonl").write_text('{"kind": "predic')  # a file still being written
    assert len(read_records(str(tmp_path / "collected"))) == len(RECORDS)
    diagram = tmp_path / "reliability.png"
    assert main([str(tmp_path / "collected"), "--diagram", str(diagram)]) == 0
    out = capsys.readouterr().out
    assert "v1" in out and "0.333  0.667" in out and "feedback without a collected prediction: 1" in out
    assert diagram.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_empty_destination_is_an_error_through_the_cli(tmp_path, capsys):
    """A wrong destination (a typo, nothing collected yet) says so instead of printing an empty table."""
    from serve_app.cli import main as cli_main

    assert cli_main(["report", str(tmp_path), "--no-diagram"]) == 2
    assert "no collected records" in capsys.readouterr().err
    assert not list(Path(tmp_path).iterdir())
