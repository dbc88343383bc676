"""The shape of the middlewares in front of Ray Serve's HTTP servers that change what a request says about itself."""

from starlette.types import ASGIApp, Receive, Scope, Send


class ScopeRewrite:
    """Passes each HTTP and WebSocket request on with the scope ``rewrite`` makes of it; anything else as it is."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = self.rewrite(scope)
        await self.app(scope, receive, send)

    def rewrite(self, scope: Scope) -> Scope:
        raise NotImplementedError
