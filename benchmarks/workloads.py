"""Benchmark scenarios: the same inputs for every peer, so only the serving stack differs.

Questions are the Stack Overflow duplicates in ../shared (the demo FAQ's when absent), sent as users would
send them (title and HTML body), cycled in a fixed order; images are the shared photos as ~100 KB JPEGs.
"""

import base64
import io
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmarks.load import Call, CallFactory
from deployments.faq.data import load_jsonl, read_duplicates_tsv
from deployments.faq.demo import DEMO_FAQ_PATH

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DUPLICATES_TSV = SHARED_DATA / "stackoverflow-faq" / "dup-q-train.tsv"
ORIGINALS_TSV = SHARED_DATA / "stackoverflow-faq" / "orig-q.tsv"
PHOTOS = SHARED_DATA / "images"
TOP_K = 5
IMAGES_PER_REQUEST = 4
FAQ_BATCH = 16
MULTIPART_BOUNDARY = "serve-app-benchmark-boundary"

Paths = dict[str, str]  # "faq" / "image" -> the route a peer serves them on


def questions() -> list[str]:
    if DUPLICATES_TSV.exists():
        return [duplicate.text for duplicate in read_duplicates_tsv(DUPLICATES_TSV)]
    return [duplicate.text for duplicate in load_jsonl(DEMO_FAQ_PATH).duplicates]


# A realistic upload: 500x375 JPEG at quality 90 (~100 KB).
UPLOAD = ((500, 375), 90)
# A phone photo sent nearly whole: 2000x1500 at quality 95, 290-875 KB from the shared photos, over HAProxy's
# 256 KiB buffer (SERVE_APP_HAPROXY_BUFSIZE), so HAProxy cannot send it again itself (serve_app/haproxy.py).
LARGE_UPLOAD = ((2000, 1500), 95)


def jpeg(image: Image.Image, size: tuple[int, int] = UPLOAD[0], quality: int = UPLOAD[1]) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").resize(size).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def images(size: tuple[int, int] = UPLOAD[0], quality: int = UPLOAD[1]) -> list[bytes]:
    photos = sorted(p for p in PHOTOS.glob("*.jp*g")) if PHOTOS.exists() else []
    if photos:
        return [jpeg(Image.open(path), size, quality) for path in photos]
    return [jpeg(Image.effect_mandelbrot(size, (-2, -1, 1, 1), 50), size, quality)]


def multipart(files: list[bytes]) -> bytes:
    """A multipart/form-data body with one ``image`` field per file, as the reference client sent them."""
    parts = [
        f'--{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{i}.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + data
        + b"\r\n"
        for i, data in enumerate(files)
    ]
    return b"".join(parts) + f"--{MULTIPART_BOUNDARY}--\r\n".encode()


def _cycle(bodies: list[Call]) -> CallFactory:
    iterator = itertools.cycle(bodies)
    return lambda: next(iterator)


def faq_single(paths: Paths) -> CallFactory:
    return _cycle(
        [
            Call(paths["faq"], json.dumps({"question": q, "top_k": TOP_K}).encode(), "application/json", "faq")
            for q in questions()
        ]
    )


def faq_batch(paths: Paths) -> CallFactory:
    texts = questions()
    groups = [texts[i : i + FAQ_BATCH] for i in range(0, len(texts) - FAQ_BATCH + 1, FAQ_BATCH)]
    return _cycle(
        [
            Call(
                paths["faq"],
                json.dumps({"questions": g, "top_k": TOP_K}).encode(),
                "application/json",
                "faq",
                FAQ_BATCH,
            )
            for g in groups
        ]
    )


def image_one(paths: Paths) -> CallFactory:
    return _cycle([Call(paths["image"], data, "image/jpeg", "image") for data in images()])


def image_large(paths: Paths) -> CallFactory:
    return _cycle([Call(paths["image"], data, "image/jpeg", "image") for data in images(*LARGE_UPLOAD)])


def image_multi(paths: Paths) -> CallFactory:
    photos = images()
    body = multipart([photos[i % len(photos)] for i in range(IMAGES_PER_REQUEST)])
    content_type = f"multipart/form-data; boundary={MULTIPART_BOUNDARY}"
    return _cycle([Call(paths["image"], body, content_type, "image", IMAGES_PER_REQUEST)])


def image_base64(paths: Paths) -> CallFactory:
    photos = images()
    encoded = [base64.b64encode(photos[i % len(photos)]).decode() for i in range(IMAGES_PER_REQUEST)]
    body = json.dumps({"images": encoded, "top_k": TOP_K}).encode()
    return _cycle([Call(paths["image"], body, "application/json", "image", IMAGES_PER_REQUEST)])


def mixed(paths: Paths, faq_share: float = 0.8) -> CallFactory:
    """80% single FAQ questions, 20% single images, interleaved deterministically."""
    faq, image = faq_single(paths), image_one(paths)
    pattern = itertools.cycle([True] * round(10 * faq_share) + [False] * round(10 * (1 - faq_share)))
    return lambda: faq() if next(pattern) else image()


@dataclass(frozen=True)
class Scenario:
    calls: Callable[[Paths], CallFactory]
    kinds: tuple[str, ...]  # which models it loads: "faq", "image"
    description: str


SCENARIOS = {
    "faq-single": Scenario(faq_single, ("faq",), "one question per request, top 5"),
    "faq-batch": Scenario(faq_batch, ("faq",), f"{FAQ_BATCH} questions per request, top 5 each"),
    "image-one": Scenario(image_one, ("image",), "one JPEG per request (raw body), top 5"),
    "image-large": Scenario(image_large, ("image",), "one 2000x1500 JPEG per request (raw body, ~0.3-0.9 MB), top 5"),
    "image-multi": Scenario(image_multi, ("image",), f"{IMAGES_PER_REQUEST} JPEGs per request (multipart), top 5"),
    "image-base64": Scenario(image_base64, ("image",), f"{IMAGES_PER_REQUEST} JPEGs per request (base64 JSON)"),
    "mixed": Scenario(mixed, ("faq", "image"), "80% faq-single, 20% image-one; FAQ latency reported apart"),
}
