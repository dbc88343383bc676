"""What the FAQ scorer's numba loops save per question, against numpy written for the same steps.

    OMP_NUM_THREADS=1 python -m benchmarks.faq_numba [--data ../shared/data/stackoverflow-faq] [--rounds 7]

OMP_NUM_THREADS=1: BLAS as a FAQ replica runs it (Ray sets it to the actor's CPUs, at least 1; a replica has 0.5).

Fits the model on the Stack Overflow data, then scores the first 288 training duplicates one question per call
and in calls of 32 (a full Serve batch), alternating the compiled loops with their numpy counterparts below in
the same process, round after round, each round after the machine has been quiet for 2 s (or 30 s of waiting:
other work on these 2 cores slows both variants). A measurement during which the hypervisor took more than 10%
of the CPU (steal in /proc/stat) is measured again; each one's steal is printed. The numpy versions' scores are
compared with the compiled ones' (largest difference, and whether every question's top 10 is the same).

Then what a replica pays at start for the loops: a fresh process imports the package, loads the fitted model
from its directory and scores a question and a batch, with an empty numba cache (it compiles) and with the cache
seeded as the image seeds it (``python -m deployments.faq.numba_seed`` at build, copied to NUMBA_CACHE_DIR at
start): numba's own count of cache misses, i.e. compilations, must be 0 there.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from benchmarks.machine_cpu import wait_until_quiet, without_steal
from deployments.faq import features, rerank, scorers
from deployments.faq.artifact import save_artifact
from deployments.faq.data import FaqDataset, load_tsv
from deployments.faq.model import FaqModel
from deployments.faq.training.fit import fit_model

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "stackoverflow-faq"
QUESTIONS = 288  # nine batches of 32
TOP = 10  # the numpy versions must rank each question's best originals as the loops do
# A replica's start, as far as the loops go: import, load the model directory, answer a question and a batch.
START_PROBE = """
import json, sys, time
started = time.perf_counter()
from deployments.faq import scoring_loops
from deployments.faq.artifact import load_artifact
model, _ = load_artifact(sys.argv[1])
model.probabilities(["how do I deep copy an object?"])
model.probabilities(["how do I deep copy an object?"] * 32)
loops = [value for value in vars(scoring_loops).values() if hasattr(value, "stats")]
misses = sum(sum(loop.stats.cache_misses.values()) for loop in loops)
print(json.dumps({"seconds": round(time.perf_counter() - started, 2), "compiled": misses}))
"""


def tfidf_weights(columns: np.ndarray, counts: np.ndarray, idf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    distinct, inverse = np.unique(columns, return_inverse=True)
    weights = (1.0 + np.log(np.bincount(inverse, weights=counts, minlength=len(distinct)))) * idf[distinct]
    return distinct, weights / np.sqrt(weights @ weights) if len(distinct) else weights


def tfidf_row(word_columns, word_counts, word_idf, char_columns, char_counts, char_idf, char_offset):
    words, word_weights = tfidf_weights(word_columns, word_counts, word_idf)
    chars, char_weights = tfidf_weights(char_columns, char_counts, char_idf)
    blocks = (len(words) > 0) + (len(chars) > 0)
    scale = 1.0 / np.sqrt(blocks) if blocks else 1.0
    columns = np.concatenate((words, (chars + char_offset).astype(words.dtype)))
    return columns, np.concatenate((word_weights, char_weights)) * scale


_matrices: dict[int, sp.csr_matrix] = {}  # the stacked matrix as scipy holds it, built once per view


def sparse_product(q_indptr, q_indices, q_data, m_indptr, m_indices, m_data, n_columns):
    matrix = _matrices.get(id(m_data))
    if matrix is None:
        matrix = _matrices[id(m_data)] = sp.csr_matrix((m_data, m_indices.astype(np.int32), m_indptr))
        matrix.resize(len(m_indptr) - 1, n_columns)
    if len(q_indptr) == 2:  # one question: its rows of the matrix, weighted (a dense result, no sparse one)
        return (matrix[q_indices].T @ q_data.astype(np.float32))[None, :].astype(np.float64)
    queries = sp.csr_matrix((q_data, q_indices, q_indptr), shape=(len(q_indptr) - 1, matrix.shape[0]))
    return (queries @ matrix).toarray().astype(np.float64)


def view_zscores(
    product,
    n_documents,
    row_sums,
    kernel_gammas,
    kernel_coef,
    nb_class_bias,
    linear_maps,
    projection_offset,
    projection_targets,
    duplicate_order,
    duplicate_starts,
    duplicate_classes,
    duplicate_counts,
    class_norms,
):
    n_classes = kernel_coef.shape[2]
    cosine = product[:, :n_documents].astype(np.float32)
    kernels = [np.exp(gamma * (cosine - 1.0)) @ coef for gamma, coef in zip(kernel_gammas, kernel_coef, strict=True)]
    linear = cosine @ linear_maps
    projected = linear[:, n_classes:] + projection_offset
    norm = np.linalg.norm(projected, axis=1, keepdims=True)
    projected /= np.where(norm > 0, norm, 1.0)
    sums = np.zeros((len(cosine), n_classes), dtype=np.float32)
    maxima = np.zeros_like(sums)
    if len(duplicate_order):
        grouped = cosine[:, duplicate_order]
        sums[:, duplicate_classes] = np.add.reduceat(grouped, duplicate_starts, axis=1)
        maxima[:, duplicate_classes] = np.maximum.reduceat(grouped, duplicate_starts, axis=1)
    text, title = cosine[:, 0 : 2 * n_classes : 2], cosine[:, 1 : 2 * n_classes : 2]
    scores = np.stack(
        [
            *kernels,
            linear[:, :n_classes],
            product[:, n_documents:] + row_sums[:, None] * nb_class_bias,
            projected @ projection_targets,
            sums / np.maximum(duplicate_counts, 1.0),
            maxima,
            title,
            text,
            (text + title + sums) / class_norms,
        ],
        axis=1,
    ).astype(np.float64)
    spread = scores.std(axis=2, keepdims=True)
    return (scores - scores.mean(axis=2, keepdims=True)) / np.where(spread > 0, spread, 1.0), cosine


def rerank_rows(zscores, order, n_candidates, weights, class_bias):
    candidates = rerank.top_columns(order, min(n_candidates, order.shape[1]))
    rescored = rerank.candidate_features(zscores, candidates) @ weights + class_bias[candidates]
    rows = np.arange(len(order))[:, None]
    rest = order.copy()
    rest[rows, candidates] = -np.inf
    # The others keep their order, shifted so that the best of them sits one below the worst candidate.
    shift = np.minimum(rescored.min(axis=1, keepdims=True) - 1.0 - rest.max(axis=1, keepdims=True), 0.0)
    scores = order + np.where(np.isfinite(shift), shift, 0.0)
    scores[rows, candidates] = rescored
    return scores


NUMPY_VERSIONS = {
    features: {"tfidf_row": tfidf_row},
    scorers: {"sparse_product": sparse_product, "view_zscores": view_zscores},
    rerank: {"rerank_rows": rerank_rows},
}


@contextmanager
def numpy_loops() -> Iterator[None]:
    """The scoring path with the numpy versions in place of the compiled loops, restored afterwards."""
    compiled = {module: {name: getattr(module, name) for name in names} for module, names in NUMPY_VERSIONS.items()}
    for module, replacements in NUMPY_VERSIONS.items():
        for name, function in replacements.items():
            setattr(module, name, function)
    try:
        yield
    finally:
        for module, originals in compiled.items():
            for name, function in originals.items():
                setattr(module, name, function)


def ms_per_question(score: Callable[[list[str]], np.ndarray], questions: list[str], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(questions), batch):
        score(questions[start : start + batch])
    return (time.perf_counter() - started) / len(questions) * 1000


def measure(model: FaqModel, questions: list[str], rounds: int) -> dict[tuple[str, int], list[float]]:
    timings: dict[tuple[str, int], list[float]] = {}
    for round_number in range(rounds):
        waited = wait_until_quiet(quiet_s=2, timeout_s=30)
        print(f"round {round_number + 1}: waited {waited} s for a quiet machine")
        for variant in ("numba", "numpy"):
            for batch in (1, 32):

                def timed(variant: str = variant, batch: int = batch) -> float:
                    if variant == "numba":
                        return ms_per_question(model.probabilities, questions, batch)
                    with numpy_loops():
                        return ms_per_question(model.probabilities, questions, batch)

                milliseconds, steal = without_steal(timed)
                timings.setdefault((variant, batch), []).append(milliseconds)
                print(f"round {round_number + 1}: {variant} batch {batch}: {milliseconds:.3f} ms, steal {steal}%")
    return timings


def start_up(model_dir: str, seeded: bool) -> dict:
    """The START_PROBE in a fresh process with a new NUMBA_CACHE_DIR: empty, or seeded as in the image."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "NUMBA_CACHE_DIR": f"{scratch}/numba-cache"}
        env.pop("SERVE_APP_NUMBA_CACHE_SEED", None)
        if seeded:
            build = {**env, "SERVE_APP_NUMBA_CACHE_SEED": f"{scratch}/seed"}
            subprocess.run([sys.executable, "-m", "deployments.faq.numba_seed"], env=build, check=True)
            env["SERVE_APP_NUMBA_CACHE_SEED"] = f"{scratch}/seed"
        probe = subprocess.run([sys.executable, "-c", START_PROBE, model_dir], env=env, check=True, capture_output=True)
        return json.loads(probe.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset (BLAS uses every core)')}")
    dataset: FaqDataset = load_tsv(args.data / "orig-q.tsv", args.data / "dup-q-train.tsv")
    model = fit_model(dataset)
    questions = [duplicate.text for duplicate in dataset.duplicates[:QUESTIONS]]
    compiled = model.scores(questions)
    with numpy_loops():
        plain = model.scores(questions)
    rankings = [np.argsort(-scores, axis=1, kind="stable") for scores in (compiled, plain)]
    same_top = (rankings[0][:, :TOP] == rankings[1][:, :TOP]).all()
    differing = int((rankings[0] != rankings[1]).any(axis=1).sum())
    print(
        f"scores: largest difference {np.abs(compiled - plain).max():.2e}; same top {TOP} for every question: "
        f"{bool(same_top)}; questions whose full ranking differs somewhere: {differing} of {len(questions)}"
    )
    for batch in (1, 32):  # warm both paths (caches, BLAS threads) before timing
        ms_per_question(model.probabilities, questions, batch)
    timings = measure(model, questions, args.rounds)
    print("\n| calls of | numba ms/question, median (min-max) | numpy ms/question | numba / numpy |")
    print("| --- | --- | --- | --- |")
    for batch in (1, 32):
        fast, slow = (timings[(variant, batch)] for variant in ("numba", "numpy"))
        spread = [f"{np.median(values):.3f} ({min(values):.3f}-{max(values):.3f})" for values in (fast, slow)]
        print(f"| {batch} | {spread[0]} | {spread[1]} | {np.median(fast) / np.median(slow):.2f} |")
    with tempfile.TemporaryDirectory() as model_dir:
        save_artifact(model, model_dir, data_sha256=dataset.fingerprint(), metrics={})
        for seeded in (False, True):
            cache = "seeded as in the image" if seeded else "empty"
            print(f"start-up, numba cache {cache}: {start_up(model_dir, seeded)}")


if __name__ == "__main__":
    main()
