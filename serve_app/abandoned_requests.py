"""A request whose client has gone stops, even where Ray Serve does not watch it.

Ray Serve's HTTP servers watch each request for its client's disconnect and cancel it then, with the model calls
it made (their replicas stop the work too). A request that expects `100 Continue` is not watched on an ingress
replica's own server (the fast ingress): ServeControlHeaders marks it `x-request-disconnect-disabled: ?1` so that
Serve leaves its body unread until a route has checked the request (serve_app/serve_control_headers.py), and
Serve's watch would read it at once. Such a request ran to its end after its client left: 25 abandoned 8-image
uploads slowed another caller's images for ~26 s.

CancelAbandoned, the ingress's outermost middleware, watches those marked requests itself, from the moment the
route has read the whole body (nothing is left to read early then): the server's next message is the client's
disconnect (or the answer's end). A disconnect before the answer cancels the request, and the cancellation leaves
the ingress as Serve's own does, so Serve cancels the model calls the request made and counts it as cancelled.
"""

import asyncio
from contextlib import suppress

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.serve_control_headers import DISCONNECT_DISABLED


def _unwatched_by_serve(scope: Scope) -> bool:
    # Only ServeControlHeaders sets it: a client's own is dropped before the request reaches Serve.
    return any(name == DISCONNECT_DISABLED for name, _ in scope["headers"])


class CancelAbandoned:
    """Cancels a request that Serve does not watch for a disconnect when its client leaves after sending the body
    (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _unwatched_by_serve(scope):
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        answered = False

        async def watched_receive() -> Message:
            message = await receive()
            if not message.get("more_body", False):  # the body's last part, or the client gone meanwhile
                body_read.set()
            return message

        async def watched_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        async def client_gone() -> None:
            await body_read.wait()
            await receive()  # once the body is in, only the client's disconnect or the answer's end comes

        request = asyncio.ensure_future(self.app(scope, watched_receive, watched_send))
        watch = asyncio.ensure_future(client_gone())
        try:
            await asyncio.wait((request, watch), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # cancelled from outside (Serve's request timeout): its work goes with it
            request.cancel()
            watch.cancel()
            raise
        if request.done() or answered:
            watch.cancel()
            await request
            return
        request.cancel()
        with suppress(asyncio.CancelledError):
            await request
        # Out of the ingress as Serve's own cancellation leaves it: Serve then cancels the request's model calls.
        raise asyncio.CancelledError
