"""The image replica's work shared fairly: between callers, and between one caller's requests, at decoding (by
pixels) and at the forward passes (by images).

Why: one request's queue of images must not become every other request's wait. Decoding costs CPU in proportion
to an image's pixels, and bytes say little about pixels: a GIF of 40 megapixels fits in 2 KB, and one request may
hold 200 megapixels (``max_request_pixels``). The forward passes take images in batches of ``max_batch_size``.
Taken in arrival order, a client keeping many such requests in flight had another request's one small image wait
behind all of their images, at both steps (benchmarks/results/pixel_neighbours.md).

Two levels of turns. Between callers, start-time fair queuing: each caller has a virtual start time that grows by
the cost of each piece of its work started, a caller with nothing queued starts at the time of the work started
last, and a free slot (a decode thread; a place in the next batch) goes to the caller with the earliest; this is
fair between a bounded set of callers (API keys, token subjects), not against a client inventing new identities.
Within a caller, between its requests, the piece whose request would finish it first goes first (self-clocked: a
new request starts where the piece started last ends, so a stream of small requests cannot hold back a large one's
next piece for ever, as requests are new flows without end): a small request arriving behind a large one's queue
goes next, from the same key too. A lone caller or request still gets every slot: no capacity is held back. Who
the caller is, the ingress says (serve_app.ratelimit.caller_key: the credential's name, or the client's address).
"""

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")
# A decode job's cost beyond its pixels (the resize, crop and normalise of its output, the header parse): tiny
# images are not free, so a flood of them takes turns too.
JOB_OVERHEAD_PIXELS = 250_000
# Requests of a caller remembered at most; past it those whose work has all begun by its clock are forgotten (a later
# piece of theirs would begin no later than now anyway, but for its cost).
MAX_TRACKED_REQUESTS = 1024
# Callers remembered at most; past it those with no work waiting or running are forgotten: their next work starts
# as a newcomer's, which gains them at most their last piece of work's cost.
MAX_TRACKED_CALLERS = 1024


@dataclass
class Work:
    request: Hashable
    cost: float
    begins: float  # on its caller's own clock, where its request's queued work had reached
    future: asyncio.Future
    start: Callable[[], Awaitable[Any]]


@dataclass
class Caller:
    starts_at: float  # on the queue's clock: where this caller's next piece of work starts
    now: float = 0.0  # its own clock, between its requests: where the piece it started last ends
    waiting: list[tuple[float, int, Work]] = field(default_factory=list)  # by where each piece's request would be
    queued_until: dict[Hashable, float] = field(default_factory=dict)  # request -> where its queued work ends
    running: int = 0


class FairQueue:
    """Starts work in turns between callers, then between a caller's requests, by cost; ``slots`` pieces at once."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.running = 0
        self.callers: dict[str, Caller] = {}
        self.turns: list[tuple[float, int, str]] = []  # callers with work waiting, by where their next piece starts
        self.now = 0.0  # the queue's clock: where the piece started last began
        self.arrival = itertools.count()  # ties go in arrival order

    async def run(self, caller: str, request: Hashable, cost: float, start: Callable[[], Awaitable[T]]) -> T:
        """What ``start()`` gives, awaited once its turn comes; a wait cancelled before then never calls it."""
        state = self.callers.get(caller)
        if state is None:
            state = self.callers[caller] = Caller(starts_at=self.now)
        if not state.waiting:  # back after a pause: no credit for the time it was away
            state.starts_at = max(state.starts_at, self.now)
            heapq.heappush(self.turns, (state.starts_at, next(self.arrival), caller))
        begins = max(state.now, state.queued_until.get(request, 0.0))
        state.queued_until[request] = begins + cost
        if len(state.queued_until) > MAX_TRACKED_REQUESTS:  # a caller never idle: forget requests begun by now
            state.queued_until = {r: end for r, end in state.queued_until.items() if end > state.now}
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        heapq.heappush(state.waiting, (begins + cost, next(self.arrival), Work(request, cost, begins, future, start)))
        self._start_next()
        return await future

    def _start_next(self) -> None:
        while self.running < self.slots and self.turns:
            _, _, caller = heapq.heappop(self.turns)
            state = self.callers.get(caller)
            work = self._next_of(state) if state is not None else None
            if work is None:  # only cancelled work was left
                if state is not None:
                    self._settle(caller)
                continue
            self.now = max(self.now, state.starts_at)
            state.now = max(state.now, work.begins + work.cost)
            state.starts_at += work.cost
            if state.waiting:
                heapq.heappush(self.turns, (state.starts_at, next(self.arrival), caller))
            self.running += 1
            state.running += 1
            asyncio.ensure_future(work.start()).add_done_callback(partial(self._finished, caller, work.future))

    @staticmethod
    def _next_of(state: Caller) -> Work | None:
        while state.waiting:
            work = heapq.heappop(state.waiting)[2]
            if not work.future.done():  # else its request was cancelled while it waited
                return work
        return None

    def _settle(self, caller: str) -> None:
        """A caller with nothing waiting or running: its requests are all answered; past MAX_TRACKED_CALLERS it is
        forgotten."""
        state = self.callers[caller]
        if not state.waiting and not state.running:
            state.queued_until.clear()
            if len(self.callers) > MAX_TRACKED_CALLERS:
                del self.callers[caller]

    def _finished(self, caller: str, future: asyncio.Future, done: asyncio.Future) -> None:
        self.running -= 1
        self.callers[caller].running -= 1
        self._settle(caller)
        if not future.done():
            if done.cancelled():
                future.cancel()
            elif (error := done.exception()) is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result())
        self._start_next()
