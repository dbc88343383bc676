"""Image build step: every compiled loop of the FAQ scorer (scoring_loops.py) into the numba cache seed that
numba_cache.py copies into each pod's writable NUMBA_CACHE_DIR, so that no replica compiles at start-up.

    SERVE_APP_NUMBA_CACHE_SEED=/path/to/seed python -m deployments.faq.numba_seed

Apart from numba_cache.py because it trains the demo model (training/): the serving stages import the cache's
seeding, never training.
"""

import os
from pathlib import Path

from deployments.faq.numba_cache import SEED_ENV


def compile_into_seed() -> Path:
    """Compile every loop a replica calls into the seed: by training the embedded demo model (what a replica
    without a model directory does) and scoring with it."""
    seed = os.environ.get(SEED_ENV)
    if not seed:
        raise SystemExit(f"set {SEED_ENV} to the directory the image keeps the compiled loops in")
    os.environ["NUMBA_CACHE_DIR"] = seed  # read by numba when it is first imported, just below
    from deployments.faq.demo import demo_model

    demo_model().model.probabilities(["how do I compile this once?", "and these two"])
    return Path(seed)


if __name__ == "__main__":
    print(f"numba cache seeded: {compile_into_seed()}")
