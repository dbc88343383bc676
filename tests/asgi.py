"""An HTTP request's ASGI scope, for tests that drive an app below what an HTTP client library lets them send
(a 200 KB query string, a body that never comes, a client hanging up mid-body)."""


def http_scope(
    method: str, path: str, headers: list[tuple[bytes, bytes]], query: bytes = b"", server: str = "test"
) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": (server, 80),
    }
