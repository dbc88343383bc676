"""azureml-inference-server-http entry script for ResNet-152, shaped like the reference's image score.py.

One request at a time per worker, its images in one forward pass: what the reference stack does.
Accepts a raw image body or multipart ``image`` fields (the reference client's form).
"""

import json
import os

from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse

from benchmarks.peers.inprocess import ImageScorer

scorer: ImageScorer | None = None


def init() -> None:
    global scorer
    scorer = ImageScorer(threads=int(os.environ.get("TORCH_THREADS", "0")) or None)


@rawhttp
def run(request) -> AMLResponse:
    assert scorer is not None
    files = request.files.getlist("image")
    images = [file.read() for file in files] if files else [request.get_data()]
    results = scorer.classify(images, int(request.args.get("top_k", 5)))
    body = results if len(images) > 1 else results[0]
    return AMLResponse(json.dumps(body), 200, {"Content-Type": "application/json"})
