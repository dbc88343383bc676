"""The image route over real HTTP against the real Serve application (seeded random ResNet-152 weights)."""

import asyncio
import base64
import time

import pytest
import torch
from PIL import Image, ImageOps
from ray import serve
from torchvision.models import ResNet152_Weights

from deployments.resnet.model import LABELS, random_resnet152
from deployments.resnet.settings import ImageModelSettings
from tests.images import PHOTOS, decompression_bomb, encode, photo_paths, sample_rgb, variants
from tests.integration.test_faq_http import fresh_readiness

pytestmark = pytest.mark.integration

JPEG = {"content-type": "image/jpeg"}


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Real photos when ../shared is there, else made-up ones (the equivalence test needs the real ones)."""
    paths = photo_paths()
    if paths:
        return {path.name: path.read_bytes() for path in paths}
    return {f"sample-{width}.jpg": encode(sample_rgb((width, 375)), "JPEG", quality=90) for width in (500, 375)}


@pytest.fixture(scope="module")
def reference_top5() -> dict[str, list[tuple[int, float]]]:
    """torchvision's resnet152 in this process: same seeded weights, the preset transforms, one image at a time."""
    if not photo_paths():
        pytest.skip(f"the shared photos are not at {PHOTOS}")
    model = random_resnet152(seed=0).eval()
    transform = ResNet152_Weights.IMAGENET1K_V2.transforms()
    expected = {}
    for path in photo_paths():
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        with torch.inference_mode():
            probabilities = torch.softmax(model(transform(image).unsqueeze(0)), dim=1)[0]
        scores, indices = torch.topk(probabilities, 5)
        expected[path.name] = list(zip(indices.tolist(), scores.tolist(), strict=True))
    return expected


def test_served_top5_equals_in_process_torchvision(client, reference_top5):
    for path in photo_paths():
        name, data = path.name, path.read_bytes()
        response = client.post("/images/classify", content=data, headers=JPEG)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == "resnet152-random-seed0"
        served = [(p["class_index"], p["score"]) for p in body["predictions"]]
        assert [index for index, _ in served] == [index for index, _ in reference_top5[name]], name
        for (_, score), (_, expected) in zip(served, reference_top5[name], strict=True):
            assert score == pytest.approx(expected, abs=1e-4)
        assert [p["label"] for p in body["predictions"]] == [LABELS[i] for i, _ in served]


def test_multipart_json_and_query_forms_agree(client, photos):
    data = next(iter(photos.values()))
    raw = client.post("/images/classify?top_k=3", content=data, headers=JPEG).json()
    multipart = client.post("/images/classify", files={"image": ("p.jpg", data, "image/jpeg")}, data={"top_k": "3"})
    encoded = base64.b64encode(data).decode()
    as_json = client.post("/images/classify", json={"image": encoded, "top_k": 3})
    assert len(raw["predictions"]) == 3
    assert multipart.json() == raw
    assert as_json.json() == raw


def test_several_images_answer_in_order(client, photos):
    names, datas = zip(*photos.items(), strict=True)
    singles = [client.post("/images/classify", content=d, headers=JPEG).json() for d in datas[:2]]
    files = [("image", (name, data, "image/jpeg")) for name, data in zip(names[:2], datas[:2], strict=True)]
    several = client.post("/images/classify", files=files)
    assert several.status_code == 200
    as_json = client.post("/images/classify", json={"images": [base64.b64encode(d).decode() for d in datas[:2]]})
    for answer in (several.json(), as_json.json()):
        assert [a["predictions"][0]["class_index"] for a in answer] == [
            s["predictions"][0]["class_index"] for s in singles
        ]


@pytest.mark.parametrize("name", ["png", "webp", "gif-animated", "bmp", "cmyk-jpeg", "rgba-png", "16-bit-png"])
def test_formats_over_http(client, name):
    response = client.post("/images/classify", content=variants()[name], headers={"content-type": "image/x-any"})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 5


def test_concurrent_requests_share_forward_passes(serve_apps, client, photos):
    before = fresh_readiness(client)["models"]["images"]["batching"]
    data = next(iter(photos.values()))

    async def burst() -> list[int]:
        async with serve_apps.async_client(120) as http:
            requests = [http.post("/images/classify", content=data, headers=JPEG) for _ in range(8)]
            return [response.status_code for response in await asyncio.gather(*requests)]

    assert asyncio.run(burst()) == [200] * 8
    after = fresh_readiness(client)["models"]["images"]["batching"]
    assert after["images"] - before["images"] == 8
    assert after["forward_passes"] - before["forward_passes"] < 8
    assert after["largest_batch"] > 1


def test_status_calls_are_answered_while_the_model_runs_a_batch(serve_apps, photos):
    # Decoding and forward passes run on threads of their own, so the replica's event loop answers status calls
    # (what /readyz asks) while a batch is in the model: on the loop, each would wait for the whole batch.
    images = serve.get_deployment_handle("ImageClassifier", app_name="main")
    data = next(iter(photos.values()))

    async def scenario() -> tuple[list[int], list[float], float]:
        async with serve_apps.async_client(120) as http:
            started = time.monotonic()
            requests = [http.post("/images/classify", content=data, headers=JPEG) for _ in range(8)]
            burst = asyncio.ensure_future(asyncio.gather(*requests))
            waits = []
            while not burst.done():
                asked = time.monotonic()
                await images.status.remote()
                waits.append(time.monotonic() - asked)
                await asyncio.sleep(0.05)
            return [response.status_code for response in await burst], waits, time.monotonic() - started

    statuses, waits, duration = asyncio.run(scenario())
    assert statuses == [200] * 8
    assert len(waits) >= 5, f"the burst took {duration:.2f} s; too short to show anything"
    assert max(waits) < min(1.0, duration / 3), (duration, waits)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 3]


BAD_IMAGES = [
    ("not an image", {"content": b"hello, world", "headers": JPEG}, 422, "not_an_image"),
    ("truncated jpeg", {"content": truncated(variants()["jpeg"]), "headers": JPEG}, 422, "corrupt_image"),
    ("zero bytes", {"content": b"", "headers": JPEG}, 422, "empty_image"),
    ("bad base64", {"json": {"image": "not*base64!"}}, 422, "validation_error"),
    (
        "decompression bomb",
        {"content": decompression_bomb(40_000_001), "headers": {"content-type": "image/png"}},
        413,
        "image_too_large",
    ),
    (
        "65535x1 image",
        {"content": encode(Image.new("1", (65535, 1)), "PNG", optimize=True), "headers": {"content-type": "image/png"}},
        422,
        "image_too_elongated",
    ),
    ("body over 20 MB", {"content": b"\xff" * (20 * 1024 * 1024 + 1), "headers": JPEG}, 413, "payload_too_large"),
    (
        "wrong content type",
        {"content": b"abc", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    ("no image field", {"files": {"picture": ("a.jpg", b"x", "image/jpeg")}}, 422, "validation_error"),
    (
        "image as a text field",
        {"data": {"image": "abc"}, "files": {"other": ("a", b"", "text/plain")}},
        422,
        "validation_error",
    ),
    (
        "multipart without a boundary",
        {"content": b"--xx\r\n", "headers": {"content-type": "multipart/form-data"}},
        400,
        "invalid_multipart",
    ),
    ("too many images", {"json": {"images": ["AAAA"] * 33}}, 422, "validation_error"),
    (
        "too many multipart images",
        {"files": [("image", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(33)]},
        422,
        "validation_error",
    ),
    ("top_k too large", {"json": {"image": "AAAA", "top_k": 21}}, 422, "validation_error"),
    ("top_k not a number", {"json": {"image": "AAAA", "top_k": "five"}}, 422, "validation_error"),
    *[
        (
            f"multipart top_k {value!r}",
            {"files": {"image": ("p.jpg", b"x", "image/jpeg")}, "data": {"top_k": value}},
            422,
            "validation_error",
        )
        for value in ("1_0", " 3", "+3", "\u0663")  # int() would take each
    ],
    *[
        (f"query top_k {value!r}", {"content": b"x", "headers": JPEG, "params": value}, 422, "validation_error")
        for value in ("top_k=3.0", "top_k=%2B3", "top_k=%203", "top_k=3&top_k=7")  # FastAPI's int took each
    ],
    ("both image and images", {"json": {"image": "AAAA", "images": ["AAAA"]}}, 422, "validation_error"),
    ("invalid JSON", {"content": b'{"image": ', "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
    # Decoded and classified (200) before: formats docs/api.md does not list are refused before any decoder runs.
    *[
        (f"{name} image", {"content": encode(sample_rgb(), name), "headers": JPEG}, 422, "unsupported_image_format")
        for name in ("TIFF", "PPM", "JPEG2000", "AVIF")
    ],
]


@pytest.mark.parametrize(("case", "kwargs", "status", "error_type"), BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_bad_images_get_a_json_4xx(client, case, kwargs, status, error_type):
    response = client.post("/images/classify", **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == error_type
    assert response.json()["error"]["message"]


def test_an_unsupported_format_is_named(client):
    response = client.post(
        "/images/classify", json={"images": [base64.b64encode(encode(sample_rgb(), "TIFF")).decode()]}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "unsupported_image_format"
    assert error["details"] == [
        {"field": "images.0", "message": "TIFF images are not accepted: send JPEG, PNG, WebP, GIF or BMP"}
    ]


def test_query_top_k_out_of_range_is_422_not_415(client, photos):
    response = client.post("/images/classify?top_k=abc", content=next(iter(photos.values())), headers=JPEG)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "query.top_k"


def test_one_bad_image_among_several_names_it(client, photos):
    good = base64.b64encode(next(iter(photos.values()))).decode()
    bad = base64.b64encode(b"nope").decode()
    response = client.post("/images/classify", json={"images": [good, bad]})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "images.1"


def test_replica_keeps_serving_after_bad_images(client, photos):
    for _, kwargs, _, _ in BAD_IMAGES:
        client.post("/images/classify", **kwargs)
    response = client.post("/images/classify", content=next(iter(photos.values())), headers=JPEG)
    assert response.status_code == 200


def test_unloadable_weights_fail_only_the_image_routes(serve_apps, photos):
    with serve_apps.client("/no-images") as app:
        response = app.post("/images/classify", content=next(iter(photos.values())), headers=JPEG)
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["type"] == "model_unavailable" and "/nonexistent/resnet152.pt" in error["message"]
        ready = app.get("/readyz")
        assert ready.status_code == 503
        models = ready.json()["models"]
        assert models["faq"]["ready"] is True and models["images"]["ready"] is False
        assert "could not be read" in models["images"]["error"]
        assert app.post("/faq/match", json={"question": "sort by price"}).status_code == 200


def test_a_request_over_the_pixel_budget_is_413_before_decoding(client):
    budget = ImageModelSettings().max_request_pixels
    side = 6000  # a plain 36-megapixel JPEG is a few hundred KB; enough of them pass the budget
    image = base64.b64encode(encode(Image.new("RGB", (side, side), (90, 120, 150)), "JPEG")).decode()
    count = budget // side**2 + 1
    response = client.post("/images/classify", json={"images": [image] * count})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["type"] == "request_too_large" and f"limit of {budget} pixels per request" in error["message"]
