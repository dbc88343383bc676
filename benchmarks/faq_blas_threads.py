"""What numpy's default BLAS threads cost the FAQ model in a process of its own, as a FastAPI worker runs it.

    python -m benchmarks.faq_blas_threads --faq-model models/faq [--rounds 3] [--out ...]

A Ray replica runs BLAS on one thread (Ray sets OMP_NUM_THREADS from the actor's num_cpus, at least 1); a plain
process such as a uvicorn worker starts OpenBLAS with a thread per core, whose threads spin between products.
Each measurement is a fresh process that loads the model and scores the same training duplicates in chunks of
1, 4, 8, 16 and 32 questions (one chunk per call, as the FAQ replica scores a group): CPU time of all its threads
and wall time per question, with the default environment and with OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1, in
an order that alternates between rounds. A measurement during which the hypervisor took more than 10% of the CPU
is taken again.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.machine_cpu import wait_until_quiet, without_steal
from benchmarks.peers.servers import ONE_MATH_THREAD
from benchmarks.report import alternating, provenance, publish, run_info, table
from benchmarks.workloads import DUPLICATES_TSV

CHUNKS = (1, 4, 8, 16, 32)
QUESTIONS = 512
VARIANTS = {"default threads": {}, "one thread": ONE_MATH_THREAD}
PROBE = """
import json, sys, time
from pathlib import Path
from deployments.faq.artifact import load_artifact
from deployments.faq.data import read_duplicates_tsv
model, _ = load_artifact(sys.argv[1])
questions = [duplicate.text for duplicate in read_duplicates_tsv(Path(sys.argv[2]))][: int(sys.argv[3])]
model.probabilities(questions[:32])  # warm: numba's loops loaded, caches filled
result = {}
for chunk in map(int, sys.argv[4:]):
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(questions), chunk):
        model.probabilities(questions[start : start + chunk])
    result[chunk] = {
        "cpu_ms": (time.process_time() - cpu) / len(questions) * 1000,
        "wall_ms": (time.perf_counter() - wall) / len(questions) * 1000,
    }
print(json.dumps(result))
"""


def measure(model: str, questions: Path, env: dict[str, str]) -> dict[str, dict[str, float]]:
    command = [sys.executable, "-c", PROBE, model, str(questions), str(QUESTIONS), *map(str, CHUNKS)]
    # Neither variant inherits a thread count from the caller's shell: "default threads" means the libraries' own.
    inherited = {name: value for name, value in os.environ.items() if name not in ONE_MATH_THREAD}
    probe = subprocess.run(command, env=inherited | env, capture_output=True, text=True)
    if probe.returncode:
        raise RuntimeError(f"the scoring probe failed:\n{probe.stderr}")
    return json.loads(probe.stdout.splitlines()[-1])


def markdown(report: dict) -> str:
    lines = [
        "# FAQ scoring in a plain process: numpy's default BLAS threads against one",
        "",
        *provenance(report, f"FAQ model: {report['faq_model']}"),
        "",
        "Median over rounds, per question (CPU: every thread of the process); in brackets each round.",
        "",
        *table(
            ["chunk", *(f"{variant} CPU ms" for variant in VARIANTS), *(f"{variant} wall ms" for variant in VARIANTS)],
            [
                [
                    chunk,
                    *(_cell(report, variant, chunk, "cpu_ms") for variant in VARIANTS),
                    *(_cell(report, variant, chunk, "wall_ms") for variant in VARIANTS),
                ]
                for chunk in CHUNKS
            ],
        ),
        "",
        f"Steal during the measurements: at most {max(row['steal'] for row in report['rows'])}%.",
    ]
    return "\n".join(lines) + "\n"


def _cell(report: dict, variant: str, chunk: int, key: str) -> str:
    values = [row["result"][str(chunk)][key] for row in report["rows"] if row["variant"] == variant]
    return f"{statistics.median(values):.2f} ({', '.join(f'{value:.2f}' for value in values)})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faq-model", required=True, help="FAQ model directory (serve-app faq train)")
    parser.add_argument("--duplicates", type=Path, default=DUPLICATES_TSV, help="the questions: a dup-q TSV")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for round_index in range(args.rounds):
        wait_until_quiet(quiet_s=2, timeout_s=30)
        for variant in alternating(list(VARIANTS), round_index):
            result, steal = without_steal(lambda env=VARIANTS[variant]: measure(args.faq_model, args.duplicates, env))
            rows.append({"round": round_index, "variant": variant, "steal": steal, "result": result})
            print(json.dumps(rows[-1]), file=sys.stderr)
    report = {**run_info("benchmarks.faq_blas_threads", argv), "faq_model": args.faq_model, "rows": rows}
    publish(report, markdown(report), args.out)


if __name__ == "__main__":
    main()
