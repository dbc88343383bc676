"""Error mapping of the API's HTTP plumbing (serve_app.http) on a real Starlette app, driven at the ASGI level
for what an HTTP client library cannot do on purpose (hang up in the middle of a body)."""

import asyncio
import json

from fastapi import FastAPI, Request

from serve_app.http import install_error_handlers
from tests.asgi import http_scope


def app_reading_a_form() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/upload")
    async def upload(request: Request) -> dict:
        form = await request.form()
        return {"fields": len(form)}

    return app


def test_a_client_hanging_up_mid_upload_is_a_client_error_not_ours():
    scope = http_scope("POST", "/upload", [(b"content-type", b"multipart/form-data; boundary=xyz")], server="127.0.0.1")
    incoming = [
        {"type": "http.request", "body": b'--xyz\r\nContent-Disposition: form-data; name="image"', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app_reading_a_form()(scope, receive, send))
    assert sent[0]["status"] == 400
    body = json.loads(b"".join(message.get("body", b"") for message in sent[1:]))
    assert body["error"]["type"] == "client_disconnected"
