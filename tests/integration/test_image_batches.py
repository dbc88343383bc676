"""Under load, the image replica's forward passes fill: the images that arrive while one runs go in the next one
together (deployments/resnet/deployment.py ``_next_batch``), a real replica called through its handle.

Ray's batcher alone forms a batch from whatever arrived within one ``batch_wait_timeout_s``, also while a forward
pass runs: this test's 16 clients then got 2.7 images per forward pass (48 in 18), with max_batch_size 8.
"""

import asyncio

import pytest
from ray import serve

from deployments.resnet.deployment import ImageClassifier
from tests.images import encode, sample_rgb
from tests.integration.conftest import IMAGE_WEIGHTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_BATCH = 8
CLIENTS = 2 * MAX_BATCH  # a batch in the model, and a batch's worth arriving meanwhile
CALLS_EACH = 3


@pytest.fixture(scope="module")
def classifier(serve_apps):
    batching = {"max_batch_size": MAX_BATCH, "batch_wait_timeout_s": 0.01}
    # No logical CPU: the session's Ray has 10 for all the apps of the integration tests, and a replica that does
    # not fit would wait for ever (its serve.run never returns).
    deployment = ImageClassifier.options(
        name="BatchedClassifier",
        num_replicas=1,
        autoscaling_config=None,
        user_config=batching,
        ray_actor_options={"num_cpus": 0},
    )
    handle = serve.run(deployment.bind({"weights": IMAGE_WEIGHTS}), name="image-batches", route_prefix=None)
    yield handle
    serve.delete("image-batches")


def test_images_arriving_during_a_forward_pass_share_the_next_one(classifier):
    image = encode(sample_rgb((500, 375)), "JPEG", quality=90)

    async def client() -> None:
        for _ in range(CALLS_EACH):
            answer = await classifier.classify.remote([image], 1)
            assert len(answer["results"]) == 1

    async def closed_loop() -> None:
        await asyncio.gather(*(client() for _ in range(CLIENTS)))

    asyncio.run(closed_loop())
    batching = classifier.status.remote().result()["batching"]
    assert batching["images"] == CLIENTS * CALLS_EACH
    # Full batches but the first and the last few (the first forms before all 16 have arrived; the clients end
    # one by one); with Ray's batcher alone, 1-2 images each.
    assert batching["images"] / batching["forward_passes"] >= 0.6 * MAX_BATCH, batching
