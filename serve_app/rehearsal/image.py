"""The image's build-time products, made on this machine as the Dockerfile makes them in the image's home:
the ResNet weights in $TORCH_HOME's checkpoint cache and the FAQ scorer's compiled kernels (their seed)."""

import os
import subprocess
import sys
from pathlib import Path

from serve_app.rehearsal.manifest import ImageSpec
from serve_app.rehearsal.pods import Filesystem

WEIGHTS_NAME = "IMAGENET1K_V2"
WEIGHTS_SEED = 0


def bake_weights(torch_home: Path) -> Path:
    """Seeded random weights (no internet here) under the file name torchvision's IMAGENET1K_V2 looks for, so
    the replica's real loading path (the weights enum, the checkpoint cache) finds them as in the image."""
    import torch
    from torchvision.models import ResNet152_Weights

    from deployments.resnet.model import random_resnet152

    url = ResNet152_Weights[WEIGHTS_NAME].url
    path = torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(random_resnet152(WEIGHTS_SEED).state_dict(), path)
    return path


def bake_numba_seed(image: ImageSpec, fs: Filesystem) -> None:
    """``python -m deployments.faq.numba_seed`` as the Dockerfile runs it, with the image's environment."""
    env = {key: fs.on_host(fs.in_pod(value, image)) for key, value in image.env.items()}
    subprocess.run(
        [sys.executable, "-m", "deployments.faq.numba_seed"],
        env={**os.environ, **env},
        cwd=fs.project,
        check=True,
        capture_output=True,
    )


def bake(image: ImageSpec, fs: Filesystem) -> None:
    torch_home = image.env.get("TORCH_HOME")
    if torch_home:
        bake_weights(Path(fs.on_host(torch_home)))
    if "SERVE_APP_NUMBA_CACHE_SEED" in image.env:
        bake_numba_seed(image, fs)
    # The image's home belongs to its user; the pod mounts it read-only.
    os.chmod(fs.baked_home, 0o755)
