import json
from pathlib import Path

import pytest

from deployments.faq.data import FaqDataError, load_jsonl, load_tsv, parse_jsonl
from deployments.faq.demo import DEMO_FAQ_PATH


def write(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_reference_tsv_format(tmp_path):
    orig = write(tmp_path / "orig-q.tsv", [["11", "111", 'First?. <p>body "quoted</p>', "2008-01-01"]])
    dups = write(tmp_path / "dup-q.tsv", [["90", "111", "another first", "2016-01-01"]])
    answers = write(tmp_path / "ans.tsv", [["111", "<p>the answer</p>"]])
    dataset = load_tsv(orig, dups, answers)
    (original,) = dataset.originals
    assert (original.id, original.answer_id, original.title) == (11, 111, "First?")
    assert original.url == "https://stackoverflow.com/q/11"
    assert original.answer == "<p>the answer</p>"
    assert [(d.text, d.answer_id) for d in dataset.duplicates] == [("another first", 111)]


def test_duplicate_of_unknown_original_is_rejected(tmp_path):
    orig = write(tmp_path / "orig.tsv", [["1", "2", "q. <p>x</p>", "d"]])
    dups = write(tmp_path / "dups.tsv", [["9", "3", "other", "d"]])
    with pytest.raises(FaqDataError, match="no original has"):
        load_tsv(orig, dups)


def test_bad_tsv_rows_name_file_and_line(tmp_path):
    orig = write(tmp_path / "orig.tsv", [["1", "2", "q", "d"], ["x", "3", "q", "d"]])
    with pytest.raises(FaqDataError, match=r"orig\.tsv:2: id 'x'"):
        load_tsv(orig)
    short = write(tmp_path / "short.tsv", [["1", "2"]])
    with pytest.raises(FaqDataError, match=r"short\.tsv:1: expected 3"):
        load_tsv(short)


def test_jsonl_format_defaults_answer_id_to_id():
    lines = [json.dumps({"id": "a", "question": "Q1", "answer": "A1", "duplicates": ["q one"]}), ""]
    dataset = parse_jsonl(lines)
    assert dataset.originals[0].answer_id == "a"
    assert dataset.duplicates[0].answer_id == "a"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('{"id": 1}', "'question'"),
        ('{"question": "q"}', "'id'"),
        ('{"id": 1, "question": "q", "duplicates": "x"}', "list of strings"),
    ],
)
def test_bad_jsonl_lines_are_explained(line, message):
    with pytest.raises(FaqDataError, match=message):
        parse_jsonl([line], "faq.jsonl")


def test_answer_ids_must_be_unique():
    lines = ['{"id": 1, "question": "a"}', '{"id": 2, "answer_id": 1, "question": "b"}']
    with pytest.raises(FaqDataError, match="unique"):
        parse_jsonl(lines)


def test_demo_faq_has_answers_and_several_phrasings():
    dataset = load_jsonl(DEMO_FAQ_PATH)
    assert len(dataset.originals) >= 20
    assert all(original.answer for original in dataset.originals)
    per_original = {o.answer_id: 0 for o in dataset.originals}
    for duplicate in dataset.duplicates:
        per_original[duplicate.answer_id] += 1
    assert min(per_original.values()) >= 3
