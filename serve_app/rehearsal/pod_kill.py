"""A worker pod killed under load, as a node failure kills it, and made again, as KubeRay makes a deleted pod again.

Every process in the pod's network namespace is SIGKILLed at once (a node that loses power or is preempted: no
graceful drain), then the pod's container is started again with the same spec right away (the operator recreates
a worker pod it finds missing). Meanwhile closed-loop clients keep calling the service (the head, or NGINX in
front of every pod), one on the image route and the rest on the FAQ route, each waiting up to
``CLIENT_TIMEOUT_S`` for its answer and sending a request again (up to ``client_retries`` times,
``CLIENT_RETRIES`` by default) when its connection fails without an answer or HAProxy answers 502, as docs/api.md
tells clients to: a request held by a process that died with the pod gets no HTTP status, and nothing
server-side can answer it. With ``client_retries`` 0 every such request counts as failed: what the deployment
alone (its other pods, NGINX in front) saves. Reported: requests sent, answered, failed (by status), those sent
again, the slowest answer, and when failures happened.
"""

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException

from serve_app.rehearsal.checks import http, jpeg_bytes

CLIENT_TIMEOUT_S = 60.0  # above the ingress's upstream_timeout_s (30 s): a request's own wait decides
DETAIL_CHARS = 160
FAILURES_LISTED = 5
CLIENT_RETRIES = 2  # docs/api.md "Retrying": once or twice, 0.2 s then 0.4 s later


@dataclass(frozen=True)
class Sent:
    route: str
    started_s: float  # since the load began
    latency_s: float
    status: int | str  # an HTTP status, or the name of the connection error
    retries: int  # times it was sent again after its connection failed without an answer
    detail: str = ""  # a failed answer's error code and message (its body's start): what failed it, for the record


def kill_pod(network_namespace: str) -> int:
    """SIGKILL every process of the pod (all of them live in its network namespace); how many there were."""
    listed = subprocess.run(["ip", "netns", "pids", network_namespace], capture_output=True, text=True, check=False)
    pids = [int(pid) for pid in listed.stdout.split()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    return len(pids)


def _error_detail(body: object) -> str:
    """A failed answer's ``error`` and ``message`` (our JSON errors, HAProxy's pages), else its start."""
    if isinstance(body, dict):
        return f"{body.get('error', '')}: {body.get('message', '')}"[:DETAIL_CHARS]
    return str(body)[:DETAIL_CHARS]


def _client(
    base_url: str, api_key: str, route: str, deadline: float, began: float, sent: list[Sent], client_retries: int
) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    if route == "image":
        path, body, headers = "/images/classify", jpeg_bytes(), {"Content-Type": "image/jpeg", **auth}
    else:
        question = json.dumps({"question": "how do I deep copy an object in javascript", "top_k": 3}).encode()
        path, body, headers = "/faq/match", question, {"Content-Type": "application/json", **auth}

    def send() -> tuple[int | str, str]:
        try:
            answer = http("POST", base_url + path, body, headers, timeout=CLIENT_TIMEOUT_S)
        except TimeoutError:  # waited the whole client timeout: not a lost connection, never sent again
            return "TimeoutError", ""
        # Refused, reset, closed without an answer or in the middle of one (IncompleteRead): no whole answer came.
        except (OSError, HTTPException) as error:
            return type(error).__name__, str(error)[:DETAIL_CHARS]
        return answer.status, "" if answer.status == 200 else _error_detail(answer.body)

    while time.monotonic() < deadline:
        started, retries = time.monotonic(), 0
        status, detail = send()
        # A lost connection, or HAProxy's 502 `ingress_lost` (docs/api.md "Retrying"), is sent again.
        while (status == 502 or (isinstance(status, str) and status != "TimeoutError")) and retries < client_retries:
            retries += 1
            time.sleep(0.2 * retries)
            status, detail = send()
        sent.append(Sent(route, started - began, time.monotonic() - started, status, retries, detail))


def under_load(
    base_url: str,
    api_key: str,
    action: Callable[[], None],
    duration_s: float,
    act_at_s: float,
    faq_clients: int = 3,
    client_retries: int = CLIENT_RETRIES,
) -> tuple[list[Sent], list[str]]:
    """(what was sent, the clients' routes): ``action`` done ``act_at_s`` into ``duration_s`` of load."""
    sent: list[Sent] = []
    began = time.monotonic()
    deadline = began + duration_s
    routes = ["image"] + ["faq"] * faq_clients
    clients = [
        threading.Thread(
            target=_client, args=(base_url, api_key, route, deadline, began, sent, client_retries), daemon=True
        )
        for route in routes
    ]
    for client in clients:
        client.start()
    time.sleep(act_at_s)
    action()
    for client in clients:
        client.join(duration_s + CLIENT_TIMEOUT_S)
    return sent, routes


def load_record(sent: list[Sent], routes: list[str], client_retries: int) -> dict:
    """Requests sent, answered, failed (by status and when), sent again, and the slowest answer by route."""
    failed = [s for s in sent if s.status != 200]
    return {
        "client_retries": client_retries,
        "sent": len(sent),
        "answered": len(sent) - len(failed),
        "failed": len(failed),
        "failed_by_status": dict(Counter(str(s.status) for s in failed)),
        "sent_again_after_a_lost_connection": sum(s.retries for s in sent),
        "answered_after_being_sent_again": sum(1 for s in sent if s.retries and s.status == 200),
        "failures_between_s": [round(min(s.started_s for s in failed), 1), round(max(s.started_s for s in failed), 1)]
        if failed
        else [],
        "slowest_s_by_route": {
            route: round(max((s.latency_s for s in sent if s.route == route and s.status == 200), default=0.0), 1)
            for route in dict.fromkeys(routes)
        },
        "answered_by_route": dict(Counter(s.route for s in sent if s.status == 200)),
        # The first few failures whole: what failed them, and after how long (a 504 at 30 s is the upstream timeout).
        "first_failures": [
            {
                "route": s.route,
                "started_s": round(s.started_s, 1),
                "latency_s": round(s.latency_s, 1),
                "status": s.status,
                "detail": s.detail,
            }
            for s in sorted(failed, key=lambda s: s.started_s)[:FAILURES_LISTED]
        ],
    }


def no_request_failed(what: str, record: dict) -> tuple[str, bool, str]:
    """The check that ``what`` under load failed no request, with what the clients saw."""
    seen = (
        f"{record['sent']} sent, {record['failed']} failed {record['failed_by_status'] or ''}, "
        f"{record['answered_after_being_sent_again']} answered after being sent again, slowest answer "
        f"{record['slowest_s_by_route']} s"
    )
    retries = record["client_retries"]
    clients = (
        f"(clients sending lost connections and 502s again, up to {retries} times)"
        if retries
        else "(clients never sending a request again)"
    )
    return f"{what}: no request failed {clients}", not record["failed"], seen


def pod_kill_under_load(
    base_url: str,
    api_key: str,
    group: str,
    kill: Callable[[], int],
    remake_pod: Callable[[], None],
    duration_s: float = 90,
    kill_at_s: float = 15,
    faq_clients: int = 3,
    client_retries: int = CLIENT_RETRIES,
) -> tuple[list[tuple[str, bool, str]], dict]:
    """(checks, record): the pod of ``group`` killed ``kill_at_s`` into ``duration_s`` of load (``kill``: its
    processes SIGKILLed, how many), then remade."""
    killed: list[int] = []

    def kill_and_remake() -> None:
        killed.append(kill())
        remake_pod()

    sent, routes = under_load(base_url, api_key, kill_and_remake, duration_s, kill_at_s, faq_clients, client_retries)
    record = {
        "pod": group,
        "killed_at_s": kill_at_s,
        "processes_killed": killed[0],
        "duration_s": duration_s,
        **load_record(sent, routes, client_retries),
    }
    what = f"pod {group} killed under load at {kill_at_s:g} s ({killed[0]} processes) and made again"
    return [no_request_failed(what, record)], record
