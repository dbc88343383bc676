"""Another caller's image request while one key holds more image requests than an ingress replica has places.

    python -m benchmarks.caller_share [--greedy-clients 24] [--duration 25] [--rounds 2] \\
        [--out benchmarks/results/caller_share]

The deployed application (HAProxy, fast ingress, auth on, random ResNet-152 weights: the same compute) runs with
``limits.caller_share`` off (1, shipped) and at 0.5, in turns, each on a fresh server. ``--greedy-clients`` closed
loops of one key send an ordinary 500 x 375 JPEG each, more than the replica's ``limits.max_images_in_flight``
(16): a backend that fans out without a bound. A refused one (429, 503) is sent again after ``--refused-pause-s``,
without waiting for Retry-After (a client that does not play fair). Meanwhile a client of another key sends the
same JPEG every second. Reported per run: both clients' statuses and latency, and the steal.
"""

import argparse
import asyncio
import time
from pathlib import Path

import aiohttp

from benchmarks.heavy_neighbours import summary
from benchmarks.machine_cpu import jiffies, steal_percent, wait_until_quiet
from benchmarks.pixel_neighbours import ORDINARY_EVERY_S, ordinary_client
from benchmarks.report import alternating, provenance, publish, run_info, table
from serve_app.settings import Limits
from serve_app.testing.deployed import AUTH_HEADERS, OTHER_AUTH_HEADERS, TEST_SETTINGS, deployed_app
from serve_app.testing.worst_inputs import ordinary_jpeg

SHARES = {"off (1)": "1", "0.5": "0.5"}


async def greedy_client(session: aiohttp.ClientSession, url: str, deadline: float, pause_s: float, out: list):
    headers = {**AUTH_HEADERS, "content-type": "image/jpeg"}
    image = ordinary_jpeg()
    while time.monotonic() < deadline:
        started = time.monotonic()
        async with session.post(f"{url}/images/classify", data=image, headers=headers) as response:
            await response.read()
            out.append((response.status, time.monotonic() - started))
        if response.status != 200:
            await asyncio.sleep(pause_s)


async def measure(url: str, args: argparse.Namespace) -> dict:
    greedy: list = []
    other: list = []
    # One connection per client: aiohttp's default pool (100) would not hold them back, but be explicit.
    connector = aiohttp.TCPConnector(limit=args.greedy_clients + 1)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), connector=connector) as session:
        deadline = time.monotonic() + args.duration
        before = jiffies()
        await asyncio.gather(
            *(greedy_client(session, url, deadline, args.refused_pause_s, greedy) for _ in range(args.greedy_clients)),
            ordinary_client(session, url, OTHER_AUTH_HEADERS, deadline, other),
        )
        steal = steal_percent(before, jiffies())
    return {"other": summary(other), "greedy": summary(greedy), "steal_percent": round(steal, 1)}


def markdown(report: dict) -> str:
    header = ["round", "caller_share", "steal %", "other sent", "other statuses", "other p50 ms", "other max ms"]
    header += ["greedy sent", "greedy statuses", "greedy 200 p50 ms"]
    rows = []
    for run in report["runs"]:
        other, greedy = run["other"], run["greedy"]
        other_cells = [other[key] for key in ("requests", "statuses", "p50_ms", "max_ms")]
        greedy_cells = [greedy[key] for key in ("requests", "statuses", "p50_ms")]
        rows.append([run["round"], run["share"], run["steal_percent"], *other_cells, *greedy_cells])
    return "\n".join(
        [
            "# Another caller's image while one key holds more than the replica's places",
            "",
            *provenance(report),
            f"{report['greedy_clients']} closed-loop clients of one key send a 500 x 375 JPEG each (a refused one "
            f"again after {report['refused_pause_s']} s), against an ingress replica's "
            f"`limits.max_images_in_flight` of {report['max_images_in_flight']}; a client of another key sends the "
            f"same JPEG every {ORDINARY_EVERY_S:g} s. {report['duration_s']} s per run, each on a fresh deployed "
            "server (HAProxy, fast ingress, auth on). Latencies are of the answered (200) requests.",
            "",
            *table(header, rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--greedy-clients", type=int, default=24)
    parser.add_argument("--refused-pause-s", type=float, default=0.05)
    parser.add_argument("--duration", type=float, default=25.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    runs = []
    for round_ in range(args.rounds):
        for share, value in alternating(SHARES.items(), round_):
            with deployed_app({**TEST_SETTINGS, "SERVE_APP_LIMITS__CALLER_SHARE": value}) as url:
                wait_until_quiet()
                runs.append({"round": round_, "share": share, **asyncio.run(measure(url, args))})
                print(runs[-1], flush=True)
    report = {
        **run_info("benchmarks.caller_share", argv),
        "greedy_clients": args.greedy_clients,
        "refused_pause_s": args.refused_pause_s,
        "max_images_in_flight": Limits().max_images_in_flight,
        "duration_s": args.duration,
        "runs": runs,
    }
    publish(report, markdown(report), args.out)
    return report


if __name__ == "__main__":
    main()
