"""One client's queue of costly images is not another request's wait (deployments/resnet/fair_queue.py), against
the deployed configuration, with another API key and with the same one."""

import asyncio
import time

import httpx
import pytest

from deployments.resnet.preprocess import MAX_PIXELS_PER_BYTE
from serve_app.testing.deployed import AUTH_HEADERS, OTHER_AUTH_HEADERS
from serve_app.testing.worst_inputs import ordinary_jpeg, sparse_canvas_gif

pytestmark = [pytest.mark.slow, pytest.mark.integration]

HEAVY_REQUESTS = 6
IMAGES_PER_REQUEST = 5  # 200 megapixels: max_request_pixels


@pytest.mark.parametrize("other_headers", [OTHER_AUTH_HEADERS, AUTH_HEADERS], ids=["another key", "the same key"])
def test_a_small_image_does_not_wait_behind_another_clients_queue_of_costly_images(deployed, other_headers):
    gif = sparse_canvas_gif(40_000_000, MAX_PIXELS_PER_BYTE)  # ~2 KB that decode to 40 megapixels
    files = [("image", (f"{i}.gif", gif, "image/gif")) for i in range(IMAGES_PER_REQUEST)]

    async def scenario() -> tuple[int, float, list[float], list[int]]:
        async with httpx.AsyncClient(base_url=deployed, timeout=120) as client:

            async def heavy() -> tuple[int, float]:
                response = await client.post("/images/classify", files=files, headers=AUTH_HEADERS)
                return response.status_code, time.monotonic()

            tasks = [asyncio.create_task(heavy()) for _ in range(HEAVY_REQUESTS)]
            await asyncio.sleep(1.0)  # all of them at the replica, decoding or waiting for a batch
            started = time.monotonic()
            other = await client.post(
                "/images/classify",
                content=ordinary_jpeg(),
                headers={**other_headers, "content-type": "image/jpeg"},
            )
            answered = time.monotonic()
            heavy_answers = await asyncio.gather(*tasks)
        finished_before = [finished for _, finished in heavy_answers if finished < answered]
        return other.status_code, answered - started, finished_before, [status for status, _ in heavy_answers]

    status, waited, finished_before, heavy_statuses = asyncio.run(scenario())
    assert status == 200 and heavy_statuses == [200] * HEAVY_REQUESTS
    # In arrival order (images.fair_turns false) the small image came after all 30 costly ones: every heavy request
    # was answered before it or with it (measured: 5 of 6, 6.6-7.2 s). Taking turns, it joins the next batch
    # (measured: 0-1 of 6, 1.3-3.1 s).
    assert len(finished_before) <= HEAVY_REQUESTS // 2, f"{len(finished_before)} finished first; waited {waited:.1f} s"
