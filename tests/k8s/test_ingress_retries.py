"""kuberay/ingress.yaml's retry annotations, run in a real NGINX (the engine of ingress-nginx) in front of two
upstreams, as the controller puts the Serve service's pods behind it: a request whose pod dies before answering
(the connection closes with no response, or HAProxy answers 502 `ingress_lost`) is sent to the other pod,
large bodies included; without the annotations NGINX answers the client 502 itself. The annotations are mapped to
the directives ingress-nginx writes for them (serve_app.rehearsal.nginx_front); the Ingress object itself needs a
cluster."""

import http.client
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from serve_app.rehearsal.nginx_front import CONTROLLER_DEFAULTS, ingress_directives, nginx_front, tries
from serve_app.testing import free_port

LARGE_BODY = b"x" * (3 * 2**20)  # over HAProxy's buffer (~256 KiB): what HAProxy cannot send again itself

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx)")


class Pod(BaseHTTPRequestHandler):
    """One upstream: reads the whole request, then answers 200, answers 502, or closes the connection with no
    response (its ingress replica died holding the request)."""

    behaviour = "answer"
    received: list[int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(len(body))
        if self.behaviour == "die":
            self.close_connection = True
            return
        status = 502 if self.behaviour == "ingress_lost" else 200
        answer = f'{{"bytes": {len(body)}}}'.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def pod(behaviour: str) -> Iterator[tuple[str, list[int]]]:
    received: list[int] = []
    handler = type(f"Pod_{behaviour}", (Pod,), {"behaviour": behaviour, "received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def front(folder: Path, upstreams: list[str], directives: list[str] | None = None) -> Iterator[int]:
    port = free_port()
    with nginx_front(folder, f"127.0.0.1:{port}", upstreams, directives):
        yield port


def post(port: int, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/faq/match", body, {"Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("failure", ["die", "ingress_lost"])
@pytest.mark.parametrize("body", [b'{"question": "how do I clone an object"}', LARGE_BODY], ids=["small", "large"])
def test_a_request_whose_pod_fails_is_sent_to_the_other_pod(tmp_path: Path, failure: str, body: bytes):
    with (
        pod(failure) as (failing, failing_saw),
        pod("answer") as (healthy, healthy_saw),
        front(tmp_path, [failing, healthy]) as port,
    ):
        answers = [post(port, body) for _ in range(4)]  # round robin: at least two start at the failing pod
    assert all(status == 200 for status, _ in answers), answers
    assert all(answer == f'{{"bytes": {len(body)}}}'.encode() for _, answer in answers)
    assert len(failing_saw) >= 2 and set(failing_saw) == {len(body)}, failing_saw
    assert len(healthy_saw) == len(answers)
    # What benchmarks.faults --front nginx reports: each request's tries, the failed ones first.
    assert sorted(len(t) for t in tries(tmp_path)) == sorted(
        [1] * (len(answers) - len(failing_saw)) + [2] * len(failing_saw)
    )
    assert all(t[-1] == "200" for t in tries(tmp_path))


def test_without_the_annotations_nginx_does_not_send_a_post_again(tmp_path: Path):
    # ingress-nginx's defaults (error timeout, 3 tries: a POST is never re-sent once sent): what they change.
    others = [d for d in ingress_directives() if not d.startswith("proxy_next_upstream")]
    with (
        pod("die") as (failing, _),
        pod("answer") as (healthy, _),
        front(tmp_path, [failing, healthy], CONTROLLER_DEFAULTS + others) as port,
    ):
        statuses = [post(port, LARGE_BODY)[0] for _ in range(4)]
    assert statuses.count(502) >= 2, statuses


def test_a_request_is_not_sent_again_without_end(tmp_path: Path):
    # Every pod failing: the tries annotation bounds the re-sends, and the client gets NGINX's 502.
    tries = next(d for d in ingress_directives() if d.startswith("proxy_next_upstream_tries "))
    with (
        pod("die") as (first, first_saw),
        pod("die") as (second, second_saw),
        front(tmp_path, [first, second]) as port,
    ):
        status, _ = post(port, b"{}")
    assert status == 502
    assert len(first_saw) + len(second_saw) == min(int(tries.split()[1].rstrip(";")), 2)
