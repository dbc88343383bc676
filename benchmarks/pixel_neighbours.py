"""An ordinary image request beside a caller looping the costliest-to-decode requests the limits allow.

    python -m benchmarks.pixel_neighbours [--heavy-clients 8] [--duration 25] [--rounds 2] \\
        [--out benchmarks/results/pixel_neighbours]

The deployed application (HAProxy, fast ingress, auth on, random ResNet-152 weights: the same compute) runs twice
per round: with the image replica's turns (``images.fair_turns``, shipped; deployments/resnet/fair_queue.py) and
in arrival order (``false``). ``--heavy-clients`` closed loops send requests of 5 GIFs of 40 megapixels each
(``max_request_pixels``, 200 megapixels, in ~10 KB: a canvas around an 8 x 8 frame, padded to pass the
pixels-per-byte check), while one client sends an ordinary 500 x 375 JPEG every second, with a key of its own or
the heavy clients' key (with turns both; in arrival order the key makes no difference). Reported per scenario: the
ordinary requests' latency and statuses, the heavy requests', and the steal.
"""

import argparse
import asyncio
import time
from pathlib import Path

import aiohttp

from benchmarks.heavy_neighbours import summary
from benchmarks.machine_cpu import jiffies, steal_percent, wait_until_quiet
from benchmarks.report import alternating, provenance, publish, run_info, table
from deployments.resnet.preprocess import MAX_PIXELS_PER_BYTE
from deployments.resnet.settings import ImageModelSettings
from serve_app.testing.deployed import AUTH_HEADERS, OTHER_AUTH_HEADERS, TEST_SETTINGS, deployed_app
from serve_app.testing.worst_inputs import ordinary_jpeg, sparse_canvas_gif

IMAGE_PIXELS = ImageModelSettings().max_image_pixels
IMAGES_PER_REQUEST = ImageModelSettings().max_request_pixels // IMAGE_PIXELS
ORDINARY_EVERY_S = 1.0
KEYS = {"its own key": OTHER_AUTH_HEADERS, "the same key": AUTH_HEADERS}
# images.fair_turns -> the ordinary client's keys measured with it
SETTINGS = {"turns": ("true", list(KEYS)), "arrival order": ("false", ["its own key"])}


def heavy_body() -> aiohttp.FormData:
    form = aiohttp.FormData()
    gif = sparse_canvas_gif(IMAGE_PIXELS, MAX_PIXELS_PER_BYTE)
    for index in range(IMAGES_PER_REQUEST):
        form.add_field("image", gif, filename=f"{index}.gif", content_type="image/gif")
    return form


async def heavy_client(session: aiohttp.ClientSession, url: str, deadline: float, out: list) -> None:
    while time.monotonic() < deadline:
        started = time.monotonic()
        async with session.post(f"{url}/images/classify", data=heavy_body(), headers=AUTH_HEADERS) as response:
            await response.read()
            out.append((response.status, time.monotonic() - started))


async def ordinary_client(session: aiohttp.ClientSession, url: str, headers: dict, deadline: float, out: list):
    image = ordinary_jpeg()
    headers = {**headers, "content-type": "image/jpeg"}
    while time.monotonic() < deadline:
        started = time.monotonic()
        async with session.post(f"{url}/images/classify", data=image, headers=headers) as response:
            await response.read()
            out.append((response.status, time.monotonic() - started))
        await asyncio.sleep(max(0.0, ORDINARY_EVERY_S - (time.monotonic() - started)))


async def measure(url: str, ordinary_headers: dict, args: argparse.Namespace) -> dict:
    heavy: list = []
    ordinary: list = []
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        deadline = time.monotonic() + args.duration
        before = jiffies()
        await asyncio.gather(
            *(heavy_client(session, url, deadline, heavy) for _ in range(args.heavy_clients)),
            ordinary_client(session, url, ordinary_headers, deadline, ordinary),
        )
        steal = steal_percent(before, jiffies())
    return {"ordinary": summary(ordinary), "heavy": summary(heavy), "steal_percent": round(steal, 1)}


def markdown(report: dict) -> str:
    header = ["round", "image replica", "ordinary client", "steal %", "ordinary sent", "ordinary statuses"]
    header += ["ordinary p50 ms", "ordinary p99 ms", "ordinary max ms"]
    header += ["heavy sent", "heavy statuses", "heavy p50 ms", "heavy max ms"]
    rows = []
    for run in report["runs"]:
        ordinary, heavy = run["ordinary"], run["heavy"]
        ordinary_cells = [ordinary[key] for key in ("requests", "statuses", "p50_ms", "p99_ms", "max_ms")]
        heavy_cells = [heavy[key] for key in ("requests", "statuses", "p50_ms", "max_ms")]
        cells = [run["round"], run["setting"], run["key"], run["steal_percent"], *ordinary_cells, *heavy_cells]
        rows.append(cells)
    return "\n".join(
        [
            "# An ordinary image beside the costliest to decode",
            "",
            *provenance(report),
            f"{report['heavy_clients']} closed-loop clients send {IMAGES_PER_REQUEST} GIFs of {IMAGE_PIXELS:,} pixels "
            f"per request (~{report['heavy_body_bytes']:,} bytes), while one client sends a 500 x 375 JPEG every "
            f"{ORDINARY_EVERY_S:g} s with a key of its own or theirs; {report['duration_s']} s per scenario, on a "
            "deployed server (HAProxy, fast ingress, auth on) with the image replica's turns (`images.fair_turns`) "
            "and one in arrival order each round.",
            "",
            *table(header, rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heavy-clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=25.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    runs = []
    for round_ in range(args.rounds):
        for setting, (fair_turns, keys) in alternating(SETTINGS.items(), round_):
            with deployed_app({**TEST_SETTINGS, "SERVE_APP_IMAGES__FAIR_TURNS": fair_turns}) as url:
                for key in alternating(keys, round_):
                    wait_until_quiet()
                    measured = asyncio.run(measure(url, KEYS[key], args))
                    runs.append({"round": round_, "setting": setting, "key": key, **measured})
                    print(runs[-1], flush=True)
    report = {
        **run_info("benchmarks.pixel_neighbours", argv),
        "heavy_clients": args.heavy_clients,
        "heavy_body_bytes": IMAGES_PER_REQUEST * len(sparse_canvas_gif(IMAGE_PIXELS, MAX_PIXELS_PER_BYTE)),
        "duration_s": args.duration,
        "runs": runs,
    }
    publish(report, markdown(report), args.out)
    return report


if __name__ == "__main__":
    main()
