"""How FAQ matching quality grows with the number of known duplicates per original, printed as Markdown.

    python -m benchmarks.faq_learning_curve [--data ../shared/data/stackoverflow-faq] [--seeds 0 1 2]

Cross-validation (benchmarks.faq_quality) trains on 3 of each original's 4 training duplicates, while the
shipped model trains on all 4, so CV under-estimates what the shipped model does on new duplicates. This
splits each original's duplicates into 4 folds (stratified, as CV does), trains on k of them (k = 1, 2, 3;
every rotation of the folds) and ranks the held-out ones, so the step from k to k + 1 is measured and the
step from 3 to 4 can be judged from it. With k = 3 the figures are exactly the CV ones. With one duplicate per
original there are no held-out duplicates to fit the re-ranker on, so k = 1 uses the plain z-sum of the base
scorers (what the trainer does then).
"""

import argparse
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from benchmarks.faq_quality import DEFAULT_DATA
from deployments.faq.data import FaqDataset, load_tsv
from deployments.faq.training.evaluate import label_indices, ranking_metrics, true_ranks
from deployments.faq.training.fit import fit_model

FOLDS = 4


def fold_of_each_duplicate(truth: np.ndarray, seed: int) -> np.ndarray:
    fold = np.empty(len(truth), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    for index, (_, test) in enumerate(splitter.split(np.zeros(len(truth)), truth)):
        fold[test] = index
    return fold


def held_out_ranks(dataset: FaqDataset, truth: np.ndarray, fold: np.ndarray, known: int) -> np.ndarray:
    """Ranks of held-out duplicates from models trained on ``known`` folds, over every rotation of the folds."""
    ranks = []
    for first in range(FOLDS):
        training_folds = [(first + step) % FOLDS for step in range(known)]
        trained = np.isin(fold, training_folds)
        training = [duplicate for duplicate, used in zip(dataset.duplicates, trained, strict=True) if used]
        model = fit_model(FaqDataset(dataset.originals, training))
        tested = np.flatnonzero(~trained)
        scores = model.scores([dataset.duplicates[i].text for i in tested])
        ranks.append(true_ranks(scores, truth[tested]))
    return np.concatenate(ranks)


def main(argv: list[str] | None = None) -> dict[int, list[dict]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    dataset = load_tsv(args.data / "orig-q.tsv", args.data / "dup-q-train.tsv")
    truth = label_indices(dataset, dataset.duplicates)
    by_known: dict[int, list[dict]] = {}
    print("| known duplicates per original | CV seed | Acc@1 | Acc@2 | Acc@3 | mean rank | held-out rankings |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for known in range(1, FOLDS):
        for seed in args.seeds:
            metrics = ranking_metrics(held_out_ranks(dataset, truth, fold_of_each_duplicate(truth, seed), known))
            by_known.setdefault(known, []).append(metrics)
            print(
                f"| {known} | {seed} | {metrics['acc_at_1']:.3f} | {metrics['acc_at_2']:.3f} "
                f"| {metrics['acc_at_3']:.3f} | {metrics['mean_rank']:.2f} | {metrics['n']} |"
            )
    print("\n| known duplicates per original | Acc@1 | Acc@3 | mean rank (means over seeds) |")
    print("| --- | --- | --- | --- |")
    for known, rows in by_known.items():
        means = {key: np.mean([row[key] for row in rows]) for key in ("acc_at_1", "acc_at_3", "mean_rank")}
        print(f"| {known} | {means['acc_at_1']:.3f} | {means['acc_at_3']:.3f} | {means['mean_rank']:.2f} |")
    return by_known


if __name__ == "__main__":
    main()
