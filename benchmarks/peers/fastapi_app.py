"""What a user might write instead of Ray Serve: one uvicorn process, the models loaded at start-up.

    SERVE_APP_FAQ_MODEL_URI=DIR uvicorn benchmarks.peers.fastapi_app:app --port 8001

``PEER_MODELS`` (``faq``, ``image`` or ``faq,image``) says which models to load. Model calls are plain
``def`` endpoints, which FastAPI runs in its thread pool: the straightforward way.
"""

import os

from fastapi import FastAPI, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from benchmarks.peers.inprocess import FaqScorer, ImageScorer

MODELS = set(os.environ.get("PEER_MODELS", "faq,image").split(","))
app = FastAPI(title="plain FastAPI peer")
faq = FaqScorer() if "faq" in MODELS else None
images = ImageScorer() if "image" in MODELS else None


@app.post("/faq/match")
def match(body: dict) -> dict:
    assert faq is not None
    return faq.answer(body)


@app.post("/images/classify")
async def classify(request: Request, top_k: int = 5) -> dict | list[dict]:
    assert images is not None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        files = [await f.read() for f in form.getlist("image") if isinstance(f, UploadFile)]
    else:
        files = [await request.body()]
    results = await run_in_threadpool(images.classify, files, top_k)
    return results if len(files) > 1 else results[0]
