"""azureml-inference-server-http entry script for the FAQ model, shaped like the reference's score.py.

init() loads the trained model once per worker; run() gets the raw JSON body and returns the answer.
"""

import json

from benchmarks.peers.inprocess import FaqScorer

scorer: FaqScorer | None = None


def init() -> None:
    global scorer
    scorer = FaqScorer()


def run(raw_data: str) -> dict:
    assert scorer is not None
    return scorer.answer(json.loads(raw_data))
