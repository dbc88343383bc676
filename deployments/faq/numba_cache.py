"""Where numba keeps the FAQ scorer's compiled loops (scoring_loops.py), so that no replica compiles at
start-up.

numba stores ``@njit(cache=True)`` machine code in a directory it must be able to write to, even only to read
from it (it checks by creating a file there). A pod's root filesystem is read-only, so neither the directory
beside the sources nor one under $HOME will do. The image therefore compiles once, at build time, into a seed
directory (``SERVE_APP_NUMBA_CACHE_SEED``; ``python -m deployments.faq.numba_seed``), and each process copies
the seed into its writable ``NUMBA_CACHE_DIR`` (the RayService points it at the /tmp emptyDir) before numba
first looks there. A node with another CPU model finds no matching entry and compiles into that directory.
Without either variable numba behaves as usual (a cache beside the sources), as on a laptop.
"""

import os
import shutil
import tempfile
from pathlib import Path

SEED_ENV = "SERVE_APP_NUMBA_CACHE_SEED"


def seed_numba_cache() -> None:
    """Copy the image's compiled seed into NUMBA_CACHE_DIR unless that exists already (a process before us)."""
    seed, target = os.environ.get(SEED_ENV), os.environ.get("NUMBA_CACHE_DIR")
    if not (seed and target and Path(seed).is_dir()) or Path(target).exists():
        return
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    # Replicas of one pod start together: each copies to its own staging directory and renames it into place,
    # so a process never sees a half-copied cache; the losers of the race drop their copy.
    staging = tempfile.mkdtemp(prefix=".numba-seed-", dir=Path(target).parent)
    shutil.copytree(seed, staging, dirs_exist_ok=True)
    try:
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
