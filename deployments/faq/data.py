"""The FAQ data, before any stage: the reference architecture's TSV files or the project's JSONL format in,
a FaqDataset out (the Originals a match returns, and the Duplicates training learns phrasings from).

The class a duplicate belongs to is its ``answer_id``: in the reference data a duplicate's AnswerId names
the original whose accepted answer also answers it, so answer ids must be unique among the originals.
"""

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deployments.faq.text import title_of

FaqId = int | str
STACK_OVERFLOW_URL = "https://stackoverflow.com/q/{id}"


class FaqDataError(ValueError):
    """The FAQ data is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Original:
    """One FAQ entry that questions are matched against."""

    id: FaqId
    answer_id: FaqId
    text: str
    title: str
    url: str | None = None
    answer: str | None = None


@dataclass(frozen=True)
class Duplicate:
    """A question phrased differently that the original with ``answer_id`` answers."""

    text: str
    answer_id: FaqId


@dataclass(frozen=True)
class FaqDataset:
    originals: list[Original]
    duplicates: list[Duplicate] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.originals:
            raise FaqDataError("the FAQ has no original questions")
        labels = [original.answer_id for original in self.originals]
        if len(set(labels)) != len(labels):
            raise FaqDataError("answer ids of the originals must be unique: they label the duplicates")
        unknown = {dup.answer_id for dup in self.duplicates} - set(labels)
        if unknown:
            raise FaqDataError(f"duplicates name answer ids that no original has: {sorted(map(str, unknown))[:5]}")

    def fingerprint(self) -> str:
        """sha256 over the content, recorded in model metadata to tie a model to its data."""
        digest = hashlib.sha256()
        for item in [*self.originals, *self.duplicates]:
            digest.update(repr(item).encode())
        return digest.hexdigest()


def _tsv_rows(path: Path, min_columns: int) -> Iterator[tuple[int, list[str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not row:
                continue
            if len(row) < min_columns:
                raise FaqDataError(f"{path}:{line_number}: expected {min_columns} tab-separated columns")
            yield line_number, row


def _parse_id(value: str, path: Path, line_number: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise FaqDataError(f"{path}:{line_number}: id {value!r} is not an integer") from None


def read_answers_tsv(path: Path) -> dict[FaqId, str]:
    """``ans.tsv``: Id, Text0 (the answer's HTML)."""
    return {_parse_id(row[0], path, n): row[1] for n, row in _tsv_rows(path, 2)}


def read_originals_tsv(path: Path, answers: dict[FaqId, str] | None = None) -> list[Original]:
    """``orig-q.tsv``: Id, AnswerId, Text0 (``title. <html body>``), CreationDate."""
    answers = answers or {}
    originals = []
    for line_number, row in _tsv_rows(path, 3):
        question_id = _parse_id(row[0], path, line_number)
        answer_id = _parse_id(row[1], path, line_number)
        originals.append(
            Original(
                id=question_id,
                answer_id=answer_id,
                text=row[2],
                title=title_of(row[2]),
                url=STACK_OVERFLOW_URL.format(id=question_id),
                answer=answers.get(answer_id),
            )
        )
    return originals


def read_duplicates_tsv(path: Path) -> list[Duplicate]:
    """``dup-q.tsv``: Id, AnswerId (the original's), Text0, CreationDate."""
    return [Duplicate(text=row[2], answer_id=_parse_id(row[1], path, n)) for n, row in _tsv_rows(path, 3)]


def load_tsv(orig: Path, dups: Path | None = None, answers: Path | None = None) -> FaqDataset:
    answer_texts = read_answers_tsv(answers) if answers else None
    duplicates = read_duplicates_tsv(dups) if dups else []
    return FaqDataset(read_originals_tsv(orig, answer_texts), duplicates)


def _jsonl_records(lines: Iterable[str], source: str) -> Iterator[tuple[int, dict]]:
    for line_number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise FaqDataError(f"{source}:{line_number}: invalid JSON: {error.msg}") from None
        if not isinstance(record, dict) or not isinstance(record.get("question"), str):
            raise FaqDataError(f"{source}:{line_number}: each line needs a string field 'question'")
        if "id" not in record:
            raise FaqDataError(f"{source}:{line_number}: each line needs an 'id'")
        yield line_number, record


def parse_jsonl(lines: Iterable[str], source: str = "<jsonl>") -> FaqDataset:
    """The project's FAQ format, one JSON object per line (documented in docs/training.md, "Data formats"):

    ``{"id": 1, "question": "...", "body": "...", "answer": "...", "answer_id": 1, "url": "...",
    "duplicates": ["another phrasing", ...]}`` where only ``id`` and ``question`` are required.
    """
    originals, duplicates = [], []
    for line_number, record in _jsonl_records(lines, source):
        answer_id = record.get("answer_id", record["id"])
        body = record.get("body") or ""
        originals.append(
            Original(
                id=record["id"],
                answer_id=answer_id,
                text=f"{record['question']}. {body}" if body else record["question"],
                title=record["question"],
                url=record.get("url"),
                answer=record.get("answer"),
            )
        )
        phrasings = record.get("duplicates", [])
        if not isinstance(phrasings, list) or not all(isinstance(text, str) for text in phrasings):
            raise FaqDataError(f"{source}:{line_number}: 'duplicates' must be a list of strings")
        duplicates.extend(Duplicate(text=text, answer_id=answer_id) for text in phrasings)
    return FaqDataset(originals, duplicates)


def load_jsonl(path: Path) -> FaqDataset:
    with path.open(encoding="utf-8") as handle:
        return parse_jsonl(handle, str(path))
