"""A stand-in FAQ deployment whose process exits when a question contains ``CRASH_MARKER``.

No real input is known to crash a replica, so this is how a test makes replicas die under a request: the
ingress in front of it is the real one. Each replica that dies first leaves a file named after its process id
in ``deaths_dir``, so the test can count them.
"""

import asyncio
import os
from pathlib import Path

from ray import serve

CRASH_MARKER = "crash the replica"
MODEL_VERSION = "crashing-stand-in"


async def _crash_if_asked(questions: list[str], deaths_dir: str) -> None:
    if any(CRASH_MARKER in question for question in questions):
        # Part-way through the work, as a crash in the model would be: the replica has told the router it
        # accepted the request. (When a replica dies before that, Serve's router routes the request to another
        # replica itself, without the ingress seeing it, and that death would not be counted.)
        await asyncio.sleep(2.0)
        (Path(deaths_dir) / str(os.getpid())).touch()
        os._exit(1)  # as a segfault or the OOM killer would: no exception, no clean-up


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.1})
class CrashingFaq:
    def __init__(self, deaths_dir: str) -> None:
        self.deaths_dir = deaths_dir

    async def match_many(self, queries: list[tuple[list[str], int | None]], budgets_s: list[float | None]) -> dict:
        await _crash_if_asked([question for questions, _ in queries for question in questions], self.deaths_dir)
        return {"results": [[[] for _ in questions] for questions, _ in queries], "model_version": MODEL_VERSION}

    async def status(self) -> dict:
        return {"ready": True, "model_version": MODEL_VERSION, "error": None}
