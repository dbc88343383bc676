"""Online accuracy and calibration from the collected records: ``python -m serve_app.report DEST``.

Feedback that names the right answer (``faq_id``, ``image_class``) is joined with the prediction it is about by
request id and item; per model and model version it prints Acc@1, Acc@3 and the expected calibration error of the
top-1 probability (10 equal-width bins), with counts, and the share of ``helpful`` feedback. The latest label and
the latest helpful vote on an item win. It also draws a reliability diagram (PNG; needs matplotlib, in the
``dev`` extra).
"""

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec

ECE_BINS = 10
LABELS = ("faq_id", "image_class")


@dataclass
class VersionStats:
    """The labelled items of one model version: top-1 probability, whether top-1 and top-3 were right."""

    confidences: list[float] = field(default_factory=list)
    top1: list[bool] = field(default_factory=list)
    top3: list[bool] = field(default_factory=list)
    helpful: int = 0
    unhelpful: int = 0
    predictions: int = 0

    def add(self, ids: list, scores: list[float], truth: Any) -> None:
        self.confidences.append(float(scores[0]) if scores else 0.0)
        self.top1.append(ids[:1] == [truth])
        self.top3.append(truth in ids[:3])

    @property
    def labelled(self) -> int:
        return len(self.top1)


@dataclass
class Report:
    versions: dict[tuple[str, str], VersionStats]
    unmatched_feedback: int  # feedback whose prediction is not among the records (not sampled, dropped, elsewhere)
    foreign_feedback: int = 0  # feedback from another caller than the one answered: not counted


def read_records(destination: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every record under the destination (all partitions), in file order; a torn last line is skipped."""
    fs, root = fsspec.core.url_to_fs(destination, **(storage_options or {}))
    records = []
    for path in sorted(fs.glob(f"{root.rstrip('/')}/**/*.jsonl")):
        with fs.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a file still being written may end mid-line
    return records


def build_report(records: list[dict[str, Any]]) -> Report:
    predictions = {r["request_id"]: r for r in records if r.get("kind") == "prediction"}
    # The latest label and the latest helpful vote of each item: a caller may correct itself. Only the answered
    # caller's: anyone else holding a request id could otherwise relabel another caller's answer.
    latest: dict[tuple[str, int, bool], dict[str, Any]] = {}
    foreign = 0
    for record in sorted((r for r in records if r.get("kind") == "feedback"), key=lambda r: r["time"]):
        answered = predictions.get(record["request_id"])
        if answered is not None and answered.get("caller") != record.get("caller"):
            foreign += 1
            continue
        latest[(record["request_id"], record.get("item", 0), "helpful" in record)] = record
    versions: dict[tuple[str, str], VersionStats] = defaultdict(VersionStats)
    for prediction in predictions.values():
        versions[(prediction["model"], prediction["model_version"])].predictions += len(prediction["outputs"])
    unmatched = 0
    for (request_id, item, _), feedback in latest.items():
        prediction = predictions.get(request_id)
        if prediction is None or item >= len(prediction["outputs"]):
            unmatched += 1
            continue
        stats = versions[(prediction["model"], prediction["model_version"])]
        if "helpful" in feedback:
            stats.helpful += bool(feedback["helpful"])
            stats.unhelpful += not feedback["helpful"]
            continue
        truth = next(feedback[name] for name in LABELS if name in feedback)
        output = prediction["outputs"][item]
        stats.add(output["ids"], output["scores"], truth)
    return Report(dict(versions), unmatched, foreign)


def reliability(stats: VersionStats, bins: int = ECE_BINS) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, count) of each non-empty equal-width confidence bin."""
    grouped: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    for confidence, correct in zip(stats.confidences, stats.top1, strict=True):
        grouped[min(int(confidence * bins), bins - 1)].append((confidence, correct))
    return [
        (sum(c for c, _ in items) / len(items), sum(ok for _, ok in items) / len(items), len(items))
        for _, items in sorted(grouped.items())
    ]


def expected_calibration_error(stats: VersionStats, bins: int = ECE_BINS) -> float:
    """Sum over bins of |accuracy - mean confidence|, weighted by the bin's share of the items."""
    total = stats.labelled
    return sum(count / total * abs(accuracy - confidence) for confidence, accuracy, count in reliability(stats, bins))


def format_report(report: Report) -> str:
    header = f"{'model':<8} {'version':<28} {'predictions':>11} {'labelled':>8} {'acc@1':>6} {'acc@3':>6} {'ece':>6}"
    lines = [header + f" {'helpful':>9}"]
    for (model, version), stats in sorted(report.versions.items()):
        n = stats.labelled
        accuracy = (
            f"{sum(stats.top1) / n:>6.3f} {sum(stats.top3) / n:>6.3f} {expected_calibration_error(stats):>6.3f}"
            if n
            else f"{'-':>6} {'-':>6} {'-':>6}"
        )
        rated = stats.helpful + stats.unhelpful
        helpful = f"{stats.helpful}/{rated}" if rated else "-"
        lines.append(f"{model:<8} {version:<28} {stats.predictions:>11} {n:>8} {accuracy} {helpful:>9}")
    lines.append(f"feedback without a collected prediction: {report.unmatched_feedback}")
    lines.append(f"feedback from another caller than the one answered (not counted): {report.foreign_feedback}")
    return "\n".join(lines)


def write_reliability_diagram(report: Report, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise SystemExit("the reliability diagram needs matplotlib: pip install 'serve-app[dev]'") from None
    figure, axes = pyplot.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for (model, version), stats in sorted(report.versions.items()):
        if stats.labelled:
            points = reliability(stats)
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{model} {version}")
    axes.set(xlabel="top-1 probability (bin mean)", ylabel="top-1 accuracy", xlim=(0, 1), ylim=(0, 1))
    axes.set_title("Reliability of the online predictions")
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve-app report", description=__doc__.splitlines()[0])
    parser.add_argument("destination", help="collection.destination: a local path or fsspec URL")
    parser.add_argument(
        "--diagram", type=Path, default=Path("reliability.png"), help="reliability diagram (PNG; needs matplotlib)"
    )
    parser.add_argument("--no-diagram", action="store_true", help="print the table only")
    parser.add_argument(
        "--storage-options", type=json.loads, default={}, help="fsspec options as JSON, as collection.storage_options"
    )
    args = parser.parse_args(argv)
    records = read_records(args.destination, args.storage_options)
    if not records:
        print(f"serve-app report: error: no collected records (*.jsonl) under {args.destination}", file=sys.stderr)
        return 2
    report = build_report(records)
    print(format_report(report))
    if not args.no_diagram:
        write_reliability_diagram(report, args.diagram)
        print(f"reliability diagram: {args.diagram}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
