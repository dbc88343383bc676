"""Replica crashes under load: kill replicas mid-run and count the requests that failed.

    python -m benchmarks.faults [--duration 45] [--concurrency 8] [--load mixed [faq-single ...]] \\
        [--kill FAQMatcher@10 ImageClassifier@25 [Ingress@40 HAProxy@55]] [--ingress-replicas N] \\
        [--client aiohttp [httpx]] [--retry-on ours [ray-default]] [--client-timeout 120] [--max-steal 10] \\
        [--client-retries 0] [--front none|nginx] [--attempts 2] [--out benchmarks/results/faults]

The fast-ingress application (benchmarks.peers.servers "serve-fast", the deployed configuration, auth on)
serves traffic (closed loop; ``--load``: mixed, 80% FAQ questions and 20% images, or faq-single, or faq-batch,
or image-large: uploads over HAProxy's buffer, which HAProxy cannot send again when their ingress replica dies)
while replica processes are killed with SIGKILL at the given seconds, as a crash or an OOM kill would. Ray
restarts them; the ingress re-sends the idempotent model calls that were on a dead replica. A killed ``Ingress``
replica takes with it the requests HAProxy had sent it: HAProxy sends them again to another ingress replica only
if its ``retry-on`` says so (serve_app/haproxy.py), so a run that kills an Ingress replica has 2 of them unless
``--ingress-replicas`` says otherwise. ``HAProxy@S`` kills the HAProxy process that serves (not a replica): what it
held is lost with its TCP connections, and serve_app/bin/haproxy-with-limits starts a bridge on the same config
until Ray replaces its HAProxyManager actor (~30 s later, by its health checks), whose HAProxy takes the bridge's
listening sockets over; runs long enough show both. Each load given runs once per ``--client`` (aiohttp, or httpx,
which writes a request's body apart from its headers) and ``--retry-on`` policy, each on a fresh server, side by side:
``ours`` (serve_app.haproxy.HAPROXY_RETRY_ON) and ``ray-default`` (Ray's ``conn-failure``).
``--front nginx``: the load goes through NGINX configured from kuberay/ingress.yaml (serve_app.rehearsal.nginx_front),
which re-sends a request whose connection failed or that got HAProxy's 502, as the AKS ingress does.
``--client-retries N``: the clients send a request again (after 0.2 s, 0.4 s, ...) when its connection fails
without an answer, as docs/api.md advises: what a HAProxy death costs a client that follows that advice.
A run during which the hypervisor took more than ``--max-steal`` % of the CPU (steal, /proc/stat) is taken again
after the machine went quiet, up to ``--attempts`` runs; the steal of the run kept is reported.
Reported: requests sent, answered, failed (any status but 200; of which refused: connections nothing listened for,
never sent), p99 of answered requests before and after the kills, and for each kill the requests in flight, those
that failed, when (first and last second of each kind), the worst latency and the time until latencies are back to
normal; after a HAProxy kill, whether the HAProxy serving at the end was started after it and no bridge is left.
"""

import argparse
import asyncio
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from benchmarks.load import CallFactory, LoadResult, closed_loop, run_workers, send_with_retries
from benchmarks.machine_cpu import without_steal
from benchmarks.peers.servers import PEERS, running
from benchmarks.report import publish, run_info, table
from benchmarks.workloads import SCENARIOS
from serve_app.haproxy import HAPROXY_RETRY_ON
from serve_app.kuberay import RAYSERVICE
from serve_app.rehearsal.manifest import read_rayservice
from serve_app.rehearsal.nginx_front import nginx_front, sent_again, tries
from serve_app.rehearsal.run import generated_secret
from serve_app.testing import AUTH_HEADERS, free_port

APP = "serve_app"
HAPROXY = "HAProxy"  # --kill HAProxy@S kills the HAProxy process rather than a replica
LOADS = ("mixed", "faq-single", "faq-batch", "image-large")
# HAProxy retry policies (RAY_SERVE_HAPROXY_RETRY_ON) a run can be made with.
RETRY_ON = {"ours": HAPROXY_RETRY_ON, "ray-default": "conn-failure"}


def server_session(port: int) -> int:
    """The session of the server started on ``port`` (serve_app.testing.server): Ray's processes, replicas
    included, stay in the session its launcher started. Other servers on this shared machine (tests, colleagues)
    run applications of the same name, whose replicas must not be killed."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        ours = [b"--port", str(port).encode()]
        if b"serve_app.testing.server" in words and any(words[i : i + 2] == ours for i in range(len(words))):
            return os.getsid(int(cmdline.parent.name))
    raise RuntimeError(f"no serve_app.testing.server on port {port}")


def start_time(pid: int) -> int:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22); 0 when it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def uptime_ticks() -> int:
    """Now, in the clock of start_time."""
    return int(float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK"))


def haproxy_pids(session: int) -> list[int]:
    """The HAProxy that serves, in the server's session: the newest one Ray started (serve_app/bin/haproxy-with-limits
    runs it on ``CONFIG.limited``), not a predecessor still finishing its requests after a reload, nor a bridge."""
    found = subprocess.run(
        ["pgrep", "-s", str(session), "-f", r"haproxy .*-f \S+\.limited( |$)"],
        capture_output=True,
        text=True,
        check=False,
    )
    pids = [int(pid) for pid in found.stdout.split() if Path(f"/proc/{pid}/exe").resolve().name == "haproxy"]
    return sorted(pids, key=start_time, reverse=True)


def haproxy_at_end(session: int, kills: list[dict]) -> dict:
    """After HAProxy kills: the HAProxy that serves at the end of the run, whether it was started after the last
    kill (Ray replaced its HAProxyManager actor), and the bridges still running (serve_app/bin/haproxy-with-limits)."""
    serving = haproxy_pids(session)[:1]
    last_kill = max(kill["at_ticks"] for kill in kills if kill["deployment"] == HAPROXY)
    bridges = subprocess.run(
        ["pgrep", "-s", str(session), "-f", r"haproxy .*-f \S+\.limited\.bridge"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return {
        "serving_pid": serving[0] if serving else None,
        "started_after_the_kill": bool(serving) and start_time(serving[0]) >= last_kill,
        "bridges_running": [int(pid) for pid in bridges],
    }


def replica_pids(deployment: str, session: int) -> list[int]:
    if deployment == HAPROXY:
        return haproxy_pids(session)
    found = subprocess.run(
        ["pgrep", "-s", str(session), "-f", f"ServeReplica:{APP}:{deployment}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in found.stdout.split()]


async def kill_at(plan: list[tuple[str, float]], started: float, kills: list[dict], session: int) -> None:
    for deployment, at_s in plan:
        await asyncio.sleep(max(0.0, started + at_s - time.perf_counter()))
        pids = replica_pids(deployment, session)
        # The instant of the kill, unrounded: a request that ends a millisecond after it is charged to it.
        killed_s, at_ticks = time.perf_counter() - started, uptime_ticks()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
        kills.append({"deployment": deployment, "at_s": killed_s, "at_ticks": at_ticks, "pids": pids[:1]})


async def httpx_closed_loop(
    base_url: str,
    calls: CallFactory,
    concurrency: int,
    duration_s: float,
    timeout_s: float,
    headers: dict[str, str],
    retries: int = 0,
) -> LoadResult:
    """benchmarks.load.closed_loop with httpx, another common client. It writes a request's headers and its body
    to the socket separately (aiohttp, requests and curl write a small request at once), which decides whether
    HAProxy holds the whole request when it first forwards it, so whether it can send it again
    (serve_app/haproxy.py)."""
    result = LoadResult(mode="closed", load=concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout_s, limits=limits) as client:

        async def send(call) -> int | str:
            try:
                response = await client.request(
                    call.method, call.path, content=call.body, headers={"Content-Type": call.content_type}
                )
                return response.status_code
            except httpx.HTTPError as error:
                return type(error).__name__

        async def worker(deadline: float) -> None:
            while time.perf_counter() < deadline:
                call, started = calls(), time.perf_counter()
                status = await send_with_retries(lambda: send(call), retries, result)  # noqa: B023
                result.record(call, status, time.perf_counter() - started)

        await run_workers(worker, concurrency, duration_s, result)
    return result


CLIENTS = {"aiohttp": closed_loop, "httpx": httpx_closed_loop}
FRONTS = {"none": "", "nginx": "NGINX in front (kuberay/ingress.yaml's retries), "}


async def load_with_kills(
    url: str, calls: CallFactory, client: str, args: argparse.Namespace, plan: list[tuple[str, float]], session: int
) -> tuple:
    kills: list[dict] = []
    started = time.perf_counter()
    killer = asyncio.create_task(kill_at(plan, started, kills, session))
    result = await CLIENTS[client](
        url,
        calls,
        args.concurrency,
        args.duration,
        timeout_s=args.client_timeout,
        headers=AUTH_HEADERS,
        retries=args.client_retries,
    )
    await killer
    return result, kills, started


def p99_ms(latencies: list[float]) -> float | None:
    return round(float(np.percentile(latencies, 99)) * 1000, 1) if latencies else None


# The traffic each deployment serves (workloads.mixed's labels): a kill's spike and recovery are read from
# its own requests, or the FAQ kill would be charged with the slow images of a later ResNet kill. The Ingress
# and HAProxy serve all of it.
TRAFFIC = {"FAQMatcher": "faq", "ImageClassifier": "image"}


# A connection refused, by aiohttp and by httpx: the request never reached the server (nothing listened on the
# port), so any client can send it again; counted apart from the requests lost after they were sent.
REFUSED = {"ClientConnectorError", "ConnectError"}


def analyse(result, kills: list[dict], started: float) -> dict:
    events = [(finished - started, latency, label, status) for finished, latency, label, status in result.events]
    first_kill = min((kill["at_s"] for kill in kills), default=float("inf"))
    # Latencies of answered requests only: a refused connection fails in a millisecond.
    before = [latency for finished, latency, _, status in events if finished < first_kill and status == 200]
    # Each kill is charged with what happened until the next one.
    for kill, next_kill_s in zip(kills, [k["at_s"] for k in kills[1:]] + [float("inf")], strict=True):
        label = TRAFFIC.get(kill["deployment"])
        own = [(finished, latency) for finished, latency, lab, _ in events if label in (None, lab)]
        own_before = [latency for finished, latency in own if finished < first_kill]
        normal_s = 2 * float(np.percentile(own_before, 99)) if own_before else 1.0
        after = [(finished, latency) for finished, latency in own if finished - latency >= kill["at_s"] - 5]
        touched = [(finished, latency) for finished, latency in after if kill["at_s"] <= finished < next_kill_s]
        slow = [finished for finished, latency in touched if latency > normal_s]
        kill["worst_latency_ms"] = round(max((latency for _, latency in touched), default=0.0) * 1000, 1)
        kill["recovered_after_s"] = round(max(slow) - kill["at_s"], 2) if slow else 0.0
        # The requests the killed replica could hold: sent before the kill, answered (or failed) after it.
        kill["in_flight"] = sum(1 for finished, latency in own if finished - latency < kill["at_s"] <= finished)
        failed = Counter(
            f"{lab} {status}"
            for finished, _, lab, status in events
            if kill["at_s"] <= finished < next_kill_s
            if status != 200
        )
        kill["failed_after"] = sum(failed.values())
        kill["failed_after_by_status"] = dict(sorted(failed.items()))
        kill["refused_after"] = sum(n for key, n in failed.items() if key.partition(" ")[2] in REFUSED)
        # When each kind of failure happened, in seconds after the kill: first and last.
        windows: dict[str, list[float]] = {}
        for finished, _, _, status in events:
            if kill["at_s"] <= finished < next_kill_s and status != 200:
                window = windows.setdefault(str(status), [finished, finished])
                window[1] = finished
        kill["failure_windows_s"] = {
            status: [round(first - kill["at_s"], 2), round(last - kill["at_s"], 2)]
            for status, (first, last) in sorted(windows.items())
        }
    failed = sum(1 for *_, status in events if status != 200)
    refused = sum(1 for *_, status in events if status in REFUSED)
    settled_s = max((kill["at_s"] + kill["recovered_after_s"] for kill in kills), default=0.0)
    by_label = result.summary().get("by_label", {})
    return {
        "sent": len(events),
        "answered": len(events) - failed,
        "failed": failed,
        "refused": refused,
        "client_retries": result.retries,  # requests sent again after a connection failed without an answer
        # From the events: LoadResult.summary()'s errors_by_status keeps one label's count of a status.
        "failed_by_status": dict(Counter(str(status) for *_, status in events if status != 200)),
        "failed_by_label": {label: stats["errors_by_status"] for label, stats in by_label.items()},
        "p99_ms_before_kills": p99_ms(before),
        "p99_ms_after_recovery": p99_ms(
            [latency for finished, latency, _, status in events if finished > settled_s and status == 200]
        ),
        "kills": kills,
        "summary": result.summary(),
    }


LOAD_NAMES = {
    "mixed": "mixed (80% faq-single, 20% image-one)",
    "faq-batch": "faq-batch (16 questions a request)",
    "image-large": "image-large (one 2000x1500 JPEG a request, 0.3-0.9 MB: over HAProxy's buffer)",
}


def setting(report: dict) -> str:
    return (
        f"closed loop, concurrency {report['concurrency']}, {report['duration_s']} s, client timeout "
        f"{report['client_timeout_s']} s, client retries on a failed connection "
        f"{report.get('client_retries', 0)}, {FRONTS[report.get('front', 'none')]}fast ingress with "
        f"{report['ingress_replicas']} ingress replica(s), auth on; FAQ model: {report['faq_model']}."
    )


def kill_rows(run: dict) -> list[list[object]]:
    return [
        [
            f"{k['deployment']} (pid {k['pids'][0] if k['pids'] else 'none found'})",
            round(k["at_s"], 2),
            k["in_flight"],
            f"{k['failed_after']} {k['failed_after_by_status'] or ''}".strip(),
            k.get("refused_after", 0),
            " ".join(f"{status} {first}-{last}" for status, (first, last) in k.get("failure_windows_s", {}).items()),
            k["worst_latency_ms"],
            k["recovered_after_s"],
        ]
        for k in run["kills"]
    ]


KILL_HEADER = [
    "killed",
    "at s",
    "in flight at the kill",
    "failed after it",
    "of which refused",
    "failures between s after it",
    "worst latency ms",
    "back to normal after s",
]


def markdown(report: dict) -> str:
    lines = [
        "# Replica crashes under load",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; {report['date']}; commit {report['commit']}  ",
    ]
    runs = report.get("runs", [report])
    if len(runs) == 1:
        run = runs[0]
        lines += [
            f"Load: {LOAD_NAMES.get(run['load'], run['load'])}, client {run['client']}, {setting(report)}",
            "",
            f"HAProxy retry-on `{run['retry_on']}`; the hypervisor took {run['steal_percent']}% of the CPU (steal) "
            f"during the run (attempt {run['attempt']}).",
            "",
            f"Requests sent {run['sent']}, answered {run['answered']}, **failed {run['failed']}** "
            f"{run['failed_by_status'] or ''}, of which {run.get('refused', 0)} refused; sent again by the client "
            f"after a failed connection {run.get('client_retries', 0)}; p99 before the kills "
            f"{run['p99_ms_before_kills']} ms, after recovery {run['p99_ms_after_recovery']} ms.",
            "",
        ]
    else:
        lines += [
            f"Loads: {', '.join(LOAD_NAMES.get(load, load) for load in dict.fromkeys(r['load'] for r in runs))}; "
            f"clients: {', '.join(dict.fromkeys(r['client'] for r in runs))}; {setting(report)}",
            "",
            "The same kills once per load, client and HAProxy retry policy (RAY_SERVE_HAPROXY_RETRY_ON), each on a "
            "fresh server; steal: the share of the CPU the hypervisor took during the run.",
            "",
            *table(
                [
                    "load",
                    "client",
                    "retry-on",
                    "steal %",
                    "sent",
                    "answered",
                    "failed",
                    "of which refused",
                    "client retries",
                    "p99 before the kills ms",
                    "p99 after ms",
                ],
                [
                    [
                        run["load"],
                        run["client"],
                        f"`{run['retry_on']}` ({run['policy']})",
                        run["steal_percent"],
                        run["sent"],
                        run["answered"],
                        f"**{run['failed']}** {run['failed_by_status'] or ''}".strip(),
                        run.get("refused", 0),
                        run.get("client_retries", 0),
                        run["p99_ms_before_kills"],
                        run["p99_ms_after_recovery"],
                    ]
                    for run in runs
                ],
            ),
            "",
        ]
    lines += [
        "Spike and recovery of each kill are read from the requests of the traffic that deployment serves (all of",
        "it for the Ingress and HAProxy) until the next kill; in flight: requests sent before the kill and answered",
        "after it; failed after it: failures (by traffic and status) until the next kill; refused: of those, the",
        "connections refused (nothing listened on the port: the request was never sent, a client can send it",
        "again), which a closed-loop client spinning on them multiplies; failures between: first and last of each",
        "kind; p99: of answered requests.",
        "",
    ]
    if len(runs) == 1:
        lines += table(KILL_HEADER, kill_rows(runs[0]))
    else:
        lines += table(
            ["load", "client", "retry-on", *KILL_HEADER],
            [[run["load"], run["client"], run["policy"], *row] for run in runs for row in kill_rows(run)],
        )
    for run in runs:
        if again := run.get("front_sent_again"):
            lines += [
                "",
                f"{run['load']}, {run['client']}: NGINX sent {again['requests']} request(s) again (the statuses of "
                f"their tries: {again['tries'] or 'none'}); {again['answered']} of them answered 200.",
            ]
        if end := run.get("haproxy_at_end"):
            lines += [
                "",
                f"{run['load']}, {run['client']}: at the end HAProxy pid {end['serving_pid']} served, started "
                f"{'after' if end['started_after_the_kill'] else 'before'} the HAProxy kill (Ray replaced its "
                f"HAProxyManager actor{'' if end['started_after_the_kill'] else ': not yet'}); bridges still running: "
                f"{end['bridges_running'] or 'none'}.",
            ]
    return "\n".join(lines) + "\n"


def parse_kill(text: str) -> tuple[str, float]:
    deployment, _, at_s = text.partition("@")
    return deployment, float(at_s)


@contextmanager
def in_front(front: str, folder: Path, port: int, url: str) -> Iterator[str]:
    """The URL the load goes to: the server's own, or an NGINX configured as kuberay/ingress.yaml in front of it,
    with the server's port as the upstream of each pod of the shipped RayService (the Serve service's
    endpoints). Here one node serves them all, so a request NGINX sends again reaches the same HAProxy, where on
    a cluster another pod's HAProxy would take it to the same ingress replicas."""
    if front == "none":
        yield url
        return
    listen = f"127.0.0.1:{free_port()}"
    # One upstream per endpoint of the shipped RayService's Serve service (rehearsed: cpu x 2, gpu; not the head).
    _, rehearsed_pods = read_rayservice(RAYSERVICE, generated_secret())
    endpoints = [pod for pod in rehearsed_pods if pod.serve_endpoint]
    with nginx_front(folder, listen, [f"127.0.0.1:{port}"] * len(endpoints)):
        yield f"http://{listen}"


def run_one(args: argparse.Namespace, load: str, client: str, policy: str, plan: list[tuple[str, float]]) -> dict:
    """``load`` sent by ``client`` with the kills of ``plan``, on a fresh server whose HAProxy retries as ``policy``
    says; taken again while the hypervisor took more than args.max_steal % of the CPU."""
    calls = SCENARIOS[load].calls(PEERS["serve-fast"].paths)
    probes = [calls() for _ in range(5)]
    options = {"cpus": 4, "deployments": {"Ingress": {"num_replicas": args.ingress_replicas}}}
    attempts = 0
    with tempfile.TemporaryDirectory() as folder:
        # Seeded random ResNet weights unless the caller chose others: pretrained ones cannot be downloaded here.
        env = {
            "SERVE_APP_IMAGES__WEIGHTS": os.environ.get("SERVE_APP_IMAGES__WEIGHTS", "random:0"),
            "RAY_SERVE_HAPROXY_RETRY_ON": RETRY_ON[policy],
        }
        log = Path(folder) / "serve.log"
        port = free_port()  # not a fixed one: other servers run on this machine
        with (
            running(PEERS["serve-fast"], ("faq", "image"), probes, port, log, options, env) as url,
            in_front(args.front, Path(folder), port, url) as url,
        ):
            session = server_session(port)

            def measure() -> dict:
                nonlocal attempts
                attempts += 1
                answered_before = len(tries(Path(folder)))
                result, kills, started = asyncio.run(load_with_kills(url, calls, client, args, plan, session))
                report = analyse(result, kills, started)
                if args.front == "nginx":
                    report["front_sent_again"] = sent_again(tries(Path(folder))[answered_before:])
                if any(kill["deployment"] == HAPROXY for kill in kills):
                    report["haproxy_at_end"] = haproxy_at_end(session, kills)
                return report

            run, steal = without_steal(measure, args.max_steal, args.attempts)
    return {
        "load": load,
        "client": client,
        "policy": policy,
        "retry_on": RETRY_ON[policy],
        "steal_percent": steal,
        "attempt": attempts,
        **run,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=45.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--load", nargs="+", choices=LOADS, default=["mixed"])
    parser.add_argument("--kill", type=parse_kill, nargs="*", default=[("FAQMatcher", 10.0), ("ImageClassifier", 25.0)])
    parser.add_argument(
        "--ingress-replicas", type=int, help="default: 2 when an Ingress replica is killed, else 1 (serve_config)"
    )
    parser.add_argument("--client", nargs="+", choices=list(CLIENTS), default=["aiohttp"])
    parser.add_argument("--retry-on", nargs="+", choices=list(RETRY_ON), default=["ours"])
    parser.add_argument("--client-timeout", type=float, default=120.0, help="seconds a client waits for an answer")
    parser.add_argument(
        "--client-retries",
        type=int,
        default=0,
        help="times a client sends a request again when its connection fails without an answer (0: never)",
    )
    parser.add_argument(
        "--front",
        choices=["none", "nginx"],
        default="none",
        help="nginx: the load goes through NGINX configured as kuberay/ingress.yaml (its retries), as on AKS",
    )
    parser.add_argument("--max-steal", type=float, default=10.0, help="a run with more steal (%%) is taken again")
    parser.add_argument("--attempts", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    plan = sorted(args.kill, key=lambda k: k[1])
    if args.ingress_replicas is None:
        args.ingress_replicas = 2 if any(deployment == "Ingress" for deployment, _ in plan) else 1
    runs = [
        run_one(args, load, client, policy, plan)
        for load in args.load
        for client in args.client
        for policy in args.retry_on
    ]
    report = {
        **run_info("benchmarks.faults", argv),
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "client_timeout_s": args.client_timeout,
        "client_retries": args.client_retries,
        "front": args.front,
        "ingress_replicas": args.ingress_replicas,
        "faq_model": os.environ.get("SERVE_APP_FAQ_MODEL_URI") or "embedded demo FAQ",
        # One load and policy: its numbers at the top, as before; several: side by side.
        **(runs[0] if len(runs) == 1 else {"runs": runs}),
    }
    publish(report, markdown(report), args.out)
    return report


if __name__ == "__main__":
    main()
