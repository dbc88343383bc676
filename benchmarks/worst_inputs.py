"""The costliest inputs within the default limits, against ordinary ones: CPU time and peak memory per request.

In-process, through the real model code (no HTTP): the FAQ model's whole scoring path (clean, features, scorers,
re-ranker) on the demo model, and image preprocessing (header checks, decode, convert, resize) as a replica
runs it, in its pool of ``decode_threads`` threads. Each image case runs in a fresh process, so its peak RSS is
its own: Pillow allocates pixels outside Python's allocator, where tracemalloc does not see them.

    python -m benchmarks.worst_inputs [--skip-images] [--skip-agreement] [--out benchmarks/results/worst_inputs.md]
"""

import argparse
import datetime
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.machine_cpu import busy_percent_over
from serve_app.testing.worst_inputs import ORDINARY_QUESTION, ORDINARY_TEXT, never_seen_questions, worst_questions

REPEATS = 5
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
POD_MEMORY_GIB = {"gpu (image replicas)": 180, "cpu (ingress, FAQ)": 26}  # kuberay/rayservice.base.yaml limits


def _cpu_s(call: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return statistics.median(times)


def _peak_bytes(call: Callable[[], object]) -> int:
    tracemalloc.start()
    call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def text_rows(max_questions: int) -> list[dict]:
    from deployments.faq.demo import demo_model

    model = demo_model().model

    def answer(questions: list[str]) -> Callable[[], object]:
        def run() -> object:
            model.cache_clear()  # every word new to the cache: the costliest case for the features
            return [model.match(p, 5) for p in model.probabilities(questions)]

        return run

    def warm(questions: list[str]) -> Callable[[], object]:
        return lambda: [model.match(p, 5) for p in model.probabilities(questions)]

    cases = {"ordinary question (warm cache)": ([ORDINARY_QUESTION], warm)}
    cases["ordinary question (cold cache)"] = ([ORDINARY_QUESTION], answer)
    cases["ordinary prose, 10,000 chars (cold)"] = ([ORDINARY_TEXT], answer)
    cases |= {name: ([text], answer) for name, text in worst_questions().items()}
    # Distinct questions: the same few repeated would find their words in the cache from the second on, which
    # understated this row fivefold (365 ms, against 2.3-3.2 s a hostile client measured through HTTP).
    cases[f"{max_questions} distinct questions of never-seen words (cold)"] = (
        never_seen_questions(max_questions),
        answer,
    )
    cases[f"{max_questions} questions of ordinary prose, 10,000 chars (cold)"] = (
        [ORDINARY_TEXT] * max_questions,
        answer,
    )
    cases[f"{max_questions} ordinary questions (warm)"] = ([ORDINARY_QUESTION] * max_questions, warm)
    rows = []
    for name, (questions, make) in cases.items():
        make(questions)()  # compile and load once
        cpu_ms, peak_kib = 1000 * _cpu_s(make(questions)), _peak_bytes(make(questions)) / 1024
        rows.append({"case": name, "chars": sum(map(len, questions)), "cpu_ms": cpu_ms, "peak_kib": peak_kib})
        print(f"{name:48s} {rows[-1]['cpu_ms']:9.2f} ms {rows[-1]['peak_kib']:9.0f} KiB", flush=True)
    model.cache_clear()
    return rows


# ---- images: each case in its own process -------------------------------------------------------------------


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def _child(paths: list[str], threads: int, no_draft: bool) -> None:
    from deployments.resnet import preprocess as module
    from deployments.resnet.settings import ImageModelSettings

    settings = ImageModelSettings()
    if no_draft:
        module._decode_reduced = lambda image: None
    images = [Path(path).read_bytes() for path in paths]
    rss_before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to now: the imports' peak is not ours
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    module.check_request_pixels(images, settings.max_request_pixels)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda data: module.preprocess(data, settings.max_image_pixels), images))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(
        json.dumps(
            {
                "rss_before_kib": rss_before,
                "rss_peak_kib": _status_kib("VmHWM"),
                "cpu_s": cpu,
                "wall_s": time.perf_counter() - start,
            }
        )
    )


def _run_child(paths: list[Path], threads: int, no_draft: bool = False) -> dict:
    command = [sys.executable, "-m", "benchmarks.worst_inputs", "--child", *map(str, paths), "--threads", str(threads)]
    output = subprocess.run(command + (["--no-draft"] if no_draft else []), check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def image_rows(workdir: Path) -> list[dict]:
    from deployments.resnet.settings import ImageModelSettings
    from serve_app.settings import Limits
    from serve_app.testing.worst_inputs import worst_images

    settings, limits = ImageModelSettings(), Limits()
    threads = settings.decode_threads
    files = {}
    for name, data in worst_images(settings.max_image_pixels, limits.max_image_body_bytes).items():
        files[name] = workdir / name
        files[name].write_bytes(data)
        print(f"made {name}: {len(data) / 1e6:.1f} MB", flush=True)
    rows = []

    def row(case: str, paths: list[Path], no_draft: bool = False) -> None:
        result = _run_child(paths, threads, no_draft)
        mib = (result["rss_peak_kib"] - result["rss_before_kib"]) / 1024
        rows.append(
            {
                "case": case,
                "images": len(paths),
                "MB": sum(p.stat().st_size for p in paths) / 1e6,
                "cpu_s": result["cpu_s"],
                "wall_s": result["wall_s"],
                "peak_rss_growth_mib": mib,
            }
        )
        print(f"{case:48s} {result['cpu_s']:7.2f} s CPU {mib:8.0f} MiB", flush=True)

    for name, path in files.items():
        row(name, [path])
    row("jpeg_rgb, full decode (before Image.draft)", [files["jpeg_rgb"]], no_draft=True)
    row(f"{limits.max_images} x ordinary", [files["ordinary_500x375.jpg"]] * limits.max_images)
    exif = "png_500x375_exif_64_kib"
    row(f"{limits.max_images} x {exif}", [files[exif]] * limits.max_images)
    worst = max(
        (r for r in rows if r["images"] == 1 and "full decode" not in r["case"]), key=lambda r: r["peak_rss_growth_mib"]
    )["case"]
    most = settings.max_request_pixels // settings.max_image_pixels
    row(f"{most} x {worst} (the request budget's most)", [files[worst]] * most)
    return rows


def draft_agreement(weights: str) -> list[dict]:
    """Top-5 classes of the shared photos, enlarged 4x and 8x, decoded at reduced size and in full."""
    import io

    import torch
    from PIL import Image

    from deployments.resnet import preprocess as module
    from deployments.resnet.model import ResNetClassifier, load_resnet152

    classifier = ResNetClassifier(load_resnet152(weights)[0], "cpu")
    reduced_decode, rows = module._decode_reduced, []
    for path in sorted(PHOTOS.glob("*.jp*g")):
        photo = Image.open(path).convert("RGB")
        for scale in (4, 8):
            buffer = io.BytesIO()
            photo.resize((photo.width * scale, photo.height * scale), Image.BICUBIC).save(buffer, "JPEG", quality=92)
            module._decode_reduced = reduced_decode
            reduced = module.preprocess(buffer.getvalue(), 10**9)
            module._decode_reduced = lambda image: None
            full = module.preprocess(buffer.getvalue(), 10**9)
            module._decode_reduced = reduced_decode
            p_reduced, p_full = classifier.probabilities(torch.stack([reduced, full]))
            top_reduced, top_full = torch.topk(p_reduced, 5).indices.tolist(), torch.topk(p_full, 5).indices.tolist()
            rows.append(
                {
                    "photo": f"{path.name} x{scale}",
                    "top5_same": top_reduced == top_full,
                    "top1": top_full[0],
                    "max_prob_diff": float((p_reduced - p_full).abs().max()),
                    "mean_tensor_diff": float((reduced - full).abs().mean()),
                }
            )
            print(rows[-1], flush=True)
    return rows


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    for row in rows:
        cells = [f"{value:.4g}" if isinstance(value, float) else str(value) for value in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/worst_inputs.md"))
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-agreement", action="store_true", help="no reduced-decode check (it needs the weights)")
    parser.add_argument("--weights", default="IMAGENET1K_V2", help="for the reduced-decode agreement check")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--no-draft", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child, args.threads, args.no_draft)
        return
    from serve_app.settings import Limits

    busy = busy_percent_over(2.0)
    print(f"other load on the machine before the run: {busy:.0f}% busy")
    texts = text_rows(Limits().max_questions)
    with tempfile.TemporaryDirectory() as workdir:
        images = [] if args.skip_images else image_rows(Path(workdir))
    agreement = [] if args.skip_images or args.skip_agreement else draft_agreement(args.weights)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = " plus uncommitted changes" if subprocess.run(["git", "diff", "--quiet"]).returncode else ""
    report = [
        "# Worst inputs within the default limits",
        "",
        f"`{' '.join(['python -m benchmarks.worst_inputs', *map(shlex.quote, sys.argv[1:])])}` on "
        f"{datetime.date.today()}, commit {commit}{dirty}; "
        f"machine {os.cpu_count()} cores, {busy:.0f}% busy before the run.",
        "",
        "## Questions (FAQ demo model, in-process, median of 5 CPU times; peak of Python allocations)",
        "",
        _table(texts),
        "",
        "## Images (preprocessing in the replica's decode threads, one process per case)",
        "",
        _table(images) if images else "(skipped)",
        "",
        f"## JPEG decoded at reduced size vs in full (weights {args.weights}, the shared photos enlarged)",
        "",
        _table(agreement) if agreement else "(skipped)",
        "",
        f"Pod memory limits (kuberay/rayservice.base.yaml): {POD_MEMORY_GIB} GiB.",
    ]
    args.out.write_text("\n".join(report) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
