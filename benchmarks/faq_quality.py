"""FAQ model quality and speed on the Stack Overflow data, printed as a Markdown report.

    python -m benchmarks.faq_quality [--data ../shared/data/stackoverflow-faq] [--seeds 0 1 2 3 4]

Cross-validated ranking quality for several shuffles, training time, and in-process scoring time per
question: one question per call and 32 per call (as under Serve batching), and one per call on duplicates the
model never saw, by a freshly loaded model (its cache warmed with its training words, as every load does) next
to the same model with that cache emptied, alternating, in the same run.
"""

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from deployments.faq.data import FaqDataset, load_tsv
from deployments.faq.model import FaqModel
from deployments.faq.training.fit import fit_model
from deployments.faq.training.train import train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "stackoverflow-faq"


def scoring_ms_per_question(model, questions: list[str], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(questions), batch):
        model.probabilities(questions[start : start + batch])
    return (time.perf_counter() - started) / len(questions) * 1000


def _spread(values: list[float]) -> str:
    return f"{np.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def unseen_duplicates_split(dataset: FaqDataset) -> tuple[FaqDataset, list[str]]:
    """Training data without each original's first duplicate, and those held-out duplicates' texts."""
    seen, training, held_out = set(), [], []
    for duplicate in dataset.duplicates:
        if duplicate.answer_id in seen:
            training.append(duplicate)
        else:
            held_out.append(duplicate.text)
            seen.add(duplicate.answer_id)
    return FaqDataset(dataset.originals, training), held_out


def fresh_copy(model: FaqModel, warmed: bool) -> FaqModel:
    """The model as an artifact load gives it (a new object, its cache warmed), or with an empty cache."""
    arrays, fields = model.state()
    copy = FaqModel.from_state(model.originals, arrays, fields)
    if not warmed:
        copy.cache_clear()
    return copy


def unseen_scoring_ms(dataset: FaqDataset, rounds: int = 3) -> dict[str, float]:
    training, questions = unseen_duplicates_split(dataset)
    model = fit_model(training)
    timings: dict[str, list[float]] = {"warmed": [], "emptied": []}
    for _ in range(rounds):
        for name in timings:
            copy = fresh_copy(model, warmed=name == "warmed")
            copy.probabilities(["warm-up"])  # first-call costs (numpy, scipy) are not what is measured
            timings[name].append(scoring_ms_per_question(copy, questions, 1))
    return {name: float(np.median(values)) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    # Five: the CV estimate moves by +-0.01 Acc@1 from one shuffle of the folds to the next.
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    dataset = load_tsv(args.data / "orig-q.tsv", args.data / "dup-q-train.tsv")

    print(f"# FAQ model quality ({platform.processor() or platform.machine()}, {len(dataset.duplicates)} duplicates)\n")
    print("| CV seed | Acc@1 | Acc@2 | Acc@3 | mean rank | ECE | training s (4 CV fits + final) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for seed in args.seeds:
        result = train(dataset, seed=seed)
        cv = result.metrics["cross_validation"]
        rows.append(cv)
        print(
            f"| {seed} | {cv['acc_at_1']:.3f} | {cv['acc_at_2']:.3f} | {cv['acc_at_3']:.3f} | {cv['mean_rank']:.2f} "
            f"| {cv['expected_calibration_error']:.3f} | {result.metrics['training_seconds']:.1f} |"
        )
    means = {key: np.mean([row[key] for row in rows]) for key in ("acc_at_1", "acc_at_3", "mean_rank")}
    print(
        f"\nMean over seeds: Acc@1 {means['acc_at_1']:.3f}, Acc@3 {means['acc_at_3']:.3f}, "
        f"mean rank {means['mean_rank']:.2f}\n"
    )

    questions = [duplicate.text for duplicate in dataset.duplicates]
    model = result.model
    model.probabilities(questions[:10])  # warm-up
    print("| scoring, in-process | ms per question |")
    print("| --- | --- |")
    # Five rounds each, alternating, as this box's speed drifts by tens of percent from one minute to the next.
    rounds: dict[int, list[float]] = {1: [], 32: []}
    for _ in range(5):
        for batch, timings in rounds.items():
            timings.append(scoring_ms_per_question(model, questions, batch))
    for batch, label in ((1, "one question per call"), (32, "32 questions per call (a full Serve batch)")):
        print(f"| {label}, median of 5 (min-max) | {_spread(rounds[batch])} |")
    unseen = unseen_scoring_ms(dataset)
    print(f"| one per call, unseen duplicates, loaded model (median of 3) | {unseen['warmed']:.2f} |")
    print(f"| the same with the word cache emptied, alternating | {unseen['emptied']:.2f} |")


if __name__ == "__main__":
    main()
