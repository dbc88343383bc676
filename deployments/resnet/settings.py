"""Settings of the image classifier: how the model loads and runs (the application's ``images`` args), and the
``user_config`` of its Serve deployment, which re-tunes running replicas without restarting them."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ImageModelSettings(BaseModel):
    """How the ResNet-152 classifier loads and runs."""

    model_config = ConfigDict(extra="forbid")

    weights: str = Field(
        "IMAGENET1K_V2",
        description="IMAGENET1K_V2 (torchvision's, downloaded once into the torch cache), a path or fsspec URL "
        "to a state_dict, or random:SEED (same architecture and compute, meaningless classes).",
    )
    weights_sha256: str | None = Field(None, description="Expected sha256 of a state_dict file; refused if it differs.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when the replica has a GPU.")
    half_precision: bool = Field(True, description="fp16 on CUDA (ignored on the CPU).")
    channels_last: bool = Field(True, description="channels-last memory format on CUDA (ignored on the CPU).")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Larger images are refused (413 image_too_large): decompression bombs."
    )
    max_request_pixels: int = Field(
        200_000_000,
        ge=1,
        description="Most pixels of all the images of one request together, read from their headers before any "
        "is decoded (413 request_too_large): decoding costs CPU time in proportion (~10 ms per million pixels of "
        "JPEG at reduced size, more for other formats), and a request of the most images each at max_image_pixels "
        "would take minutes of a replica's decode threads.",
    )
    max_aspect_ratio: float = Field(
        50.0,
        ge=1.0,
        description="Longer side over shorter side; more elongated images are refused (422 image_too_elongated). "
        "Panoramas are about 4:1 to 10:1; the resize to 232 pixels on the short side would make a 65535x1 image "
        "about 15 million pixels long.",
    )
    decode_threads: int = Field(4, ge=1, description="Threads decoding and preprocessing images on a replica.")
    fair_turns: bool = Field(
        True,
        description="Callers (API keys, token subjects), then each caller's requests, take turns at decoding (by "
        "pixels) and at places in the forward-pass batches (by images), so one client's queue of costly images is "
        "not another's wait (deployments/resnet/fair_queue.py); false: arrival order.",
    )


class ImageUserConfig(BaseModel):
    """``user_config`` of the ImageClassifier deployment: how images from concurrent requests share forward passes.

    Images cost about 100 times a question, so a wait to fill a batch costs little relative latency.
    """

    model_config = ConfigDict(extra="forbid")

    # 8, not 16: on two 1-CPU replicas 8 served more images/s in 3 of 4 side-by-side rounds
    # (benchmarks/results/resnet_cpu_goal3_sizes4.md); a GPU deployment sets its own (the overlay: 64).
    max_batch_size: int = Field(
        8,
        ge=1,
        le=4096,
        description="Most images in one forward pass; 1 turns batching off. Keep the deployment's "
        "max_ongoing_requests at least this large, or batches can never fill.",
    )
    batch_wait_timeout_s: float = Field(
        0.01,
        ge=0.0,
        le=10.0,
        description="Longest wait, after the first image of a batch is ready, for more images to join it.",
    )
