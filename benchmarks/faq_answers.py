"""Does reading each original's answer as part of its text help matching? Side by side, same folds.

    python -m benchmarks.faq_answers [--orig deployments/faq/demo/javascript_faq.jsonl] [--seeds 0 1 2 3 4]

For a FAQ with answers (a JSONL with "answer" fields, or reference TSVs with --dups and --answers): the
cross-validated quality of the model with ``answers_in_text`` on and off, for each CV shuffle, as a Markdown
table. The Stack Overflow data in ../shared has no answers, so this needs the demo FAQ or a user's own.
"""

import argparse
from pathlib import Path

import numpy as np

from deployments.faq.config import FaqModelConfig
from deployments.faq.data import FaqDataset, load_jsonl, load_tsv
from deployments.faq.demo import DEMO_FAQ_PATH
from deployments.faq.training.train import train

METRICS = ("acc_at_1", "acc_at_3", "mean_rank")


def load(orig: Path, dups: Path | None, answers: Path | None) -> FaqDataset:
    return load_jsonl(orig) if orig.suffix == ".jsonl" else load_tsv(orig, dups, answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orig", type=Path, default=DEMO_FAQ_PATH)
    parser.add_argument("--dups", type=Path)
    parser.add_argument("--answers", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    dataset = load(args.orig, args.dups, args.answers)
    with_answers = sum(original.answer is not None for original in dataset.originals)
    print(
        f"# {args.orig.name}: {len(dataset.originals)} originals ({with_answers} with answers), "
        f"{len(dataset.duplicates)} duplicates\n"
    )
    print("| CV seed | answers in text | Acc@1 | Acc@3 | mean rank |")
    print("| --- | --- | --- | --- | --- |")
    results: dict[bool, list[dict]] = {True: [], False: []}
    for seed in args.seeds:
        for answers_in_text in (False, True):
            cv = train(dataset, FaqModelConfig(answers_in_text=answers_in_text), seed=seed).metrics["cross_validation"]
            results[answers_in_text].append(cv)
            print(f"| {seed} | {answers_in_text} | " + " | ".join(f"{cv[key]:.3f}" for key in METRICS) + " |")
    print("\n| answers in text | " + " | ".join(f"mean {key}" for key in METRICS) + " |")
    print("| --- | --- | --- | --- |")
    for answers_in_text, rows in results.items():
        means = [f"{np.mean([row[key] for row in rows]):.3f}" for key in METRICS]
        print(f"| {answers_in_text} | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main()
