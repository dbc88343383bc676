"""Ordinary FAQ requests while hostile clients hold HAProxy's connections: idle ones, or uploads stalled half-sent.

    python -m benchmarks.connection_hogs [--faq-model models/faq] [--attacks idle stalled-uploads] \\
        [--settings "limits as shipped" "no busy-address rule"] [--duration 15] [--rounds 1] \\
        [--out benchmarks/results/connection_hogs]

The fast-ingress application (auth on) runs with HAProxy's limits as shipped
(SERVE_APP_HAPROXY_MAX_CONNECTIONS_PER_CLIENT, _MAX_CONNECTIONS_PER_CLIENT_WHEN_BUSY, _MAX_UPLOADS_PER_CLIENT,
_MAX_UPLOADS) and with the connection and upload limits 0 (none), or, with ``--settings``, without the rule for a
busy HAProxy only, in turns, each run on a fresh server. The hog connects from 127.0.0.2 (and the next addresses,
where an attack uses several), the ordinary client from 127.0.0.1: client addresses on one machine. ``idle``: 4,100
TCP connections that never send a byte (Ray's HAProxy takes 4,096); ``idle-3-addresses``: 4,200 such from 3
addresses (1,400 each, under the per-client cap); ``stalled-uploads``: 66 connections, each declaring a 1 MB image
body and sending 300 KB of it, then nothing (an ingress replica takes 64 at once); ``stalled-uploads-6-addresses``:
72 such, 12 from each of 6 addresses (each under the per-client cap). Each hog connection the service closes or
answers is opened again after ``--reopen-after`` seconds, as a hostile client would; answered or not, it stays open
and silent until the service closes it. Once the hog's connections are open, an ordinary question comes every
0.2 s for ``--duration`` s. Reported per run: the ordinary requests' statuses and latency, the hog's connections
open when the ordinary load started and ended, how the service answered or closed them, and the hypervisor's
steal.
"""

import argparse
import asyncio
import resource
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from benchmarks.heavy_neighbours import ORDINARY_EVERY_S, ordinary_client, summary
from benchmarks.machine_cpu import jiffies, steal_percent, wait_until_quiet
from benchmarks.peers.servers import PEERS, running, serve_faq_model
from benchmarks.report import alternating, provenance, publish, run_info, table
from benchmarks.workloads import SCENARIOS
from serve_app.testing import AUTH_HEADERS, free_port

HOG_ADDRESS = "127.0.0.2"  # any 127/8 address is this machine's loopback; attacks from several take the next ones
ORDINARY_ADDRESS = "127.0.0.1"
NO_LIMITS = {
    "SERVE_APP_HAPROXY_MAX_CONNECTIONS_PER_CLIENT": "0",
    "SERVE_APP_HAPROXY_MAX_UPLOADS_PER_CLIENT": "0",
    "SERVE_APP_HAPROXY_MAX_UPLOADS": "0",
}
SETTINGS = {
    "limits as shipped": {},
    "no connection or upload limits": NO_LIMITS,
    # Only the rule for a busy HAProxy lifted: what several addresses' idle connections do without it.
    "no busy-address rule": {"SERVE_APP_HAPROXY_MAX_CONNECTIONS_PER_CLIENT_WHEN_BUSY": "0"},
}
DEFAULT_SETTINGS = ["limits as shipped", "no connection or upload limits"]
STALLED_UPLOAD = (
    b"POST /images/classify HTTP/1.1\r\nHost: hog\r\nAuthorization: "
    + AUTH_HEADERS["Authorization"].encode()
    + b"\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000\r\n\r\n"
    + b"\xff" * 300_000
)


@dataclass(frozen=True)
class Attack:
    connections: int
    first_bytes: bytes
    addresses: int = 1

    def address(self, connection: int) -> str:
        """The client address of the ``connection``-th connection: HOG_ADDRESS and the next ones, in turn."""
        first = HOG_ADDRESS.rpartition(".")
        return f"{first[0]}.{int(first[2]) + connection % self.addresses}"


ATTACKS = {
    "idle": Attack(4_100, b""),
    "idle-3-addresses": Attack(4_200, b"", addresses=3),
    "stalled-uploads": Attack(66, STALLED_UPLOAD),
    "stalled-uploads-6-addresses": Attack(72, STALLED_UPLOAD, addresses=6),
}


class Hog:
    """``attack.connections`` connections from the attack's addresses, each opened again ``reopen_after`` s after
    the service answered or closed it; ``open`` counts those open now, ``outcomes`` how each one ended."""

    def __init__(self, port: int, attack: Attack, reopen_after: float) -> None:
        self.port, self.attack, self.reopen_after = port, attack, reopen_after
        self.open = 0
        self.outcomes: Counter[str] = Counter()

    async def hold(self, address: str) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(ORDINARY_ADDRESS, self.port, local_addr=(address, 0))
            except OSError:
                self.outcomes["connect failed"] += 1
                await asyncio.sleep(self.reopen_after)
                continue
            self.open += 1
            try:
                writer.write(self.attack.first_bytes)
                await writer.drain()
                first = await reader.read(12)  # waits: the hog sends nothing more
                self.outcomes[f"answered {first[9:12].decode()}" if first else "closed without answer"] += 1
                while await reader.read(65536):  # answered or not, it stays silent until the service closes
                    pass
            except OSError:
                self.outcomes["reset"] += 1
            finally:
                self.open -= 1
                writer.close()
            await asyncio.sleep(self.reopen_after)


async def measure(port: int, attack: Attack, args: argparse.Namespace) -> dict:
    hog = Hog(port, attack, args.reopen_after)
    slots = [asyncio.create_task(hog.hold(attack.address(index))) for index in range(attack.connections)]
    await asyncio.sleep(args.settle)  # every connection opened and, where the service does, answered or refused
    open_at_start = hog.open
    ordinary: list = []
    connector = aiohttp.TCPConnector(local_addr=(ORDINARY_ADDRESS, 0))
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(headers=AUTH_HEADERS, timeout=timeout, connector=connector) as session:
        before = jiffies()
        await ordinary_client(session, f"http://{ORDINARY_ADDRESS}:{port}", time.monotonic() + args.duration, ordinary)
        steal = steal_percent(before, jiffies())
    open_at_end = hog.open
    for slot in slots:
        slot.cancel()
    await asyncio.gather(*slots, return_exceptions=True)
    return {
        "ordinary": summary(ordinary),
        "hog_open_at_start": open_at_start,
        "hog_open_at_end": open_at_end,
        "hog_outcomes": dict(hog.outcomes),
        "steal_percent": round(steal, 1),
    }


def one_run(attack: Attack, setting: dict[str, str], args: argparse.Namespace) -> dict:
    env = {"SERVE_APP_IMAGES__WEIGHTS": "random:0", **setting}
    calls = SCENARIOS["faq-single"].calls(PEERS["serve-fast"].paths)
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        probes = [calls() for _ in range(3)]
        with running(PEERS["serve-fast"], ("faq", "images"), probes, port, Path(folder) / "serve.log", {}, env):
            wait_until_quiet()
            return asyncio.run(measure(port, attack, args))


def markdown(report: dict) -> str:
    rows = [
        [
            run["round"],
            run["attack"],
            run["setting"],
            run["steal_percent"],
            run["ordinary"]["requests"],
            run["ordinary"]["statuses"],
            run["ordinary"]["p50_ms"],
            run["ordinary"]["max_ms"],
            run["hog_open_at_start"],
            run["hog_open_at_end"],
            run["hog_outcomes"],
        ]
        for run in report["runs"]
    ]
    header = ["round", "hog", "HAProxy", "steal %", "ordinary sent", "ordinary statuses", "ordinary p50 ms"]
    header += ["ordinary max ms", "hog open at start", "hog open at end", "hog's connections ended by the service"]
    attacks = "; ".join(
        f"`{name}`: {ATTACKS[name].connections:,} connections from {ATTACKS[name].addresses} address(es)"
        for name in report["attacks"]
    )
    return "\n".join(
        [
            "# Ordinary requests while hostile clients hold connections",
            "",
            *provenance(report, f"FAQ model: {report['faq_model'] or 'embedded demo FAQ'}"),
            f"The hog ({HOG_ADDRESS} and the next addresses) holds {attacks}, each opened again "
            f"{report['reopen_after_s']} s after the service ends it; the ordinary question comes from "
            f"{ORDINARY_ADDRESS} every {ORDINARY_EVERY_S} s for {report['duration_s']} s, {report['settle_s']} s "
            "after the hog started. Each run on a fresh fast-ingress server (auth on).",
            "",
            *table(header, rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faq-model", help="FAQ model directory (default: the embedded demo FAQ)")
    parser.add_argument("--attacks", nargs="+", choices=sorted(ATTACKS), default=sorted(ATTACKS))
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=DEFAULT_SETTINGS)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between the hog's start and the load")
    parser.add_argument("--reopen-after", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    serve_faq_model(args.faq_model)
    # The hog's connections, and the ordinary client's, in this one process.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16_384)), hard))
    runs = []
    for round_ in range(args.rounds):
        for attack in args.attacks:
            for name in alternating(args.settings, round_):
                run = {"round": round_, "attack": attack, "setting": name}
                run |= one_run(ATTACKS[attack], SETTINGS[name], args)
                runs.append(run)
                print(run, flush=True)
    report = {
        **run_info("benchmarks.connection_hogs", argv),
        "faq_model": args.faq_model,
        "attacks": args.attacks,
        "duration_s": args.duration,
        "settle_s": args.settle,
        "reopen_after_s": args.reopen_after,
        "runs": runs,
    }
    publish(report, markdown(report), args.out)
    return report


if __name__ == "__main__":
    main()
