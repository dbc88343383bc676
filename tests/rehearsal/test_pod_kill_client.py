"""The rehearsal's pod-kill clients against a real HTTP server that drops a connection without answering, as an
ingress replica dying with its pod does: the request is sent again and counted, HTTP errors are not."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serve_app.rehearsal.pod_kill import CLIENT_RETRIES, DETAIL_CHARS, Sent, _client, load_record


class Flaky(BaseHTTPRequestHandler):
    drops = 0  # connections to close without an answer before answering
    cuts = 0  # then answers to cut off in the middle of their body
    status = 200

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if Flaky.drops:
            Flaky.drops -= 1
            self.close_connection = True  # no status line: the client sees the connection end
            return
        answer = {"ok": True} if Flaky.status == 200 else {"error": "upstream_timeout", "message": "x" * 500}
        body = json.dumps(answer).encode()
        self.send_response(Flaky.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if Flaky.cuts:
            Flaky.cuts -= 1
            self.close_connection = True  # the headers and half the body, then the connection ends
            body = body[: len(body) // 2]
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _load(drops: int, status: int = 200, retries: int = CLIENT_RETRIES, cuts: int = 0) -> list[Sent]:
    Flaky.drops, Flaky.status, Flaky.cuts = drops, status, cuts
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sent: list[Sent] = []
    try:
        began = time.monotonic()
        # A deadline already near: one request, with whatever retries it needs.
        _client(f"http://127.0.0.1:{server.server_port}", "key", "faq", began + 0.01, began, sent, retries)
    finally:
        server.shutdown()
    return sent


def test_a_connection_closed_without_an_answer_is_sent_again():
    (one,) = _load(drops=2)
    assert (one.status, one.retries) == (200, 2)


def test_sending_again_is_bounded():
    (one,) = _load(drops=5)
    assert one.retries == 2 and one.status == "RemoteDisconnected"


def test_a_client_told_not_to_retry_counts_a_lost_connection_as_failed():
    first, *later = _load(drops=1, retries=0)  # failed at once: another may fit before the deadline
    assert (first.status, first.retries) == ("RemoteDisconnected", 0)
    assert all((one.status, one.retries) == (200, 0) for one in later)


def test_an_http_error_is_never_sent_again():
    sent = _load(drops=0, status=503)  # answered at once: several may fit before the deadline
    assert sent and all((one.status, one.retries) == (503, 0) for one in sent)


def test_haproxys_502_ingress_lost_is_sent_again():
    sent = _load(drops=0, status=502)
    assert sent and all((one.status, one.retries) == (502, 2) for one in sent)


def test_an_answer_cut_off_mid_body_is_a_lost_connection_not_the_end_of_the_client():
    # A pod dying while its replica writes an answer: http.client raises IncompleteRead (no OSError), which
    # once ended the client's thread and its share of the load.
    (one,) = _load(drops=0, cuts=1)
    assert (one.status, one.retries) == (200, 1)
    first, *_ = _load(drops=0, cuts=1, retries=0)
    assert (first.status, first.retries) == ("IncompleteRead", 0)


def test_the_record_says_what_failed_the_first_failures_in_a_short_detail():
    sent = _load(drops=0, status=504)
    record = load_record(sent, ["faq"], client_retries=0)
    first = record["first_failures"][0]
    assert record["failed_by_status"] == {"504": len(sent)}
    assert first["status"] == 504 and first["route"] == "faq" and first["latency_s"] >= 0
    assert first["detail"].startswith("upstream_timeout: xxx") and len(first["detail"]) == DETAIL_CHARS
    assert len(record["first_failures"]) == min(len(sent), 5)
