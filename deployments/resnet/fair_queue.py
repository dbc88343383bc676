"""The image replica's work shared fairly between callers: a caller who has used little goes before one who has
used much, at decoding (by pixels) and at the forward passes (by images).

Why: one caller's queue of images must not become every caller's wait. Decoding costs CPU in proportion to an
image's pixels, and bytes say little about pixels: a GIF of 40 megapixels fits in 2 KB, and one request may hold
200 megapixels (``max_request_pixels``). The forward passes take images in batches of ``max_batch_size``. Taken in
arrival order, a caller keeping many such requests in flight had another caller's one small image wait behind all
of their images, at both steps (benchmarks/results/pixel_neighbours.md).

Start-time fair queuing: each piece of work is tagged with where its caller's queued work ends, counted from the
tag of the work started last, and the free slots (decode threads; places in the next batch) take the smallest tag.
A caller's own work keeps its order, a caller with nothing queued goes ahead of one with much queued, and a lone
caller still gets every slot: no capacity is held back. Who the caller is, the ingress says
(serve_app.ratelimit.caller_key: the credential's name, or the client's address).
"""

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")
# A decode job's cost beyond its pixels (the resize, crop and normalise of its output, the header parse): tiny
# images are not free, so a flood of them takes turns too.
JOB_OVERHEAD_PIXELS = 250_000
# Callers remembered at most; past it those with no work waiting or running are forgotten: their next work starts
# as a newcomer's, which gains them at most their last piece of work's cost.
MAX_TRACKED_CALLERS = 1024


class FairQueue:
    """Starts work in turns between callers by cost, at most ``slots`` pieces at once."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.running = 0
        self.waiting: list[tuple[float, int, str, asyncio.Future, Callable[[], Awaitable[Any]]]] = []
        self.queued_until: dict[str, float] = {}  # caller -> the tag where its queued work ends
        self.unfinished: dict[str, int] = {}  # caller -> pieces of its work waiting or running
        self.now = 0.0  # the tag of the work started last: a newly arrived caller starts here
        self.arrival = itertools.count()  # equal tags go in arrival order

    async def run(self, caller: str, cost: float, start: Callable[[], Awaitable[T]]) -> T:
        """What ``start()`` gives, awaited once the caller's turn comes; a wait cancelled before then never
        calls it."""
        begins = max(self.now, self.queued_until.get(caller, 0.0))
        self.queued_until[caller] = begins + cost
        self.unfinished[caller] = self.unfinished.get(caller, 0) + 1
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        heapq.heappush(self.waiting, (begins, next(self.arrival), caller, future, start))
        self._start_next()
        return await future

    def _start_next(self) -> None:
        while self.running < self.slots and self.waiting:
            begins, _, caller, future, start = heapq.heappop(self.waiting)
            if future.done():  # its request was cancelled while it waited
                self._settled(caller)
                continue
            self.now = max(self.now, begins)
            self.running += 1
            asyncio.ensure_future(start()).add_done_callback(partial(self._finished, caller, future))
        if len(self.queued_until) > MAX_TRACKED_CALLERS:
            self.queued_until = {caller: end for caller, end in self.queued_until.items() if caller in self.unfinished}

    def _settled(self, caller: str) -> None:
        self.unfinished[caller] -= 1
        if not self.unfinished[caller]:
            del self.unfinished[caller]

    def _finished(self, caller: str, future: asyncio.Future, done: asyncio.Future) -> None:
        self.running -= 1
        self._settled(caller)
        if not future.done():
            if done.cancelled():
                future.cancel()
            elif (error := done.exception()) is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result())
        self._start_next()
