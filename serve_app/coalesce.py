"""Coalesce concurrent calls into grouped downstream calls, within one event loop.

Each call across a DeploymentHandle costs the caller and the callee a fixed amount of CPU (serialisation,
routing, request bookkeeping), a few milliseconds on small machines: more than scoring one FAQ question.
Requests that arrive while earlier groups are in flight wait and leave together in the next group, so
under load the fixed cost is paid once per group; an idle service sends each request at once (no timer).

A group in flight for longer than ``slow_after_s`` (a large request's: 64 questions of 10,000 never-seen words take
seconds) stops holding one of the ``max_in_flight`` places, so the requests behind it leave in a new group instead
of waiting for it: without that, two clients looping such requests held an ordinary one-question request ~2.6 s.

The queue of waiting calls has no bound of its own: the caller bounds the calls it makes at once (the ingress's
admission limit counts every request from its arrival).
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    def __init__(
        self,
        send: Callable[[list[Item]], Awaitable[list[Result]]],
        max_group: int,
        max_in_flight: int,
        slow_after_s: float | None = None,
        on_slow: Callable[[], object] | None = None,
    ) -> None:
        if max_group < 1 or max_in_flight < 1:
            raise ValueError("max_group and max_in_flight must be >= 1")
        if slow_after_s is not None and slow_after_s <= 0:
            raise ValueError("slow_after_s must be > 0 (or None: a group holds its place until it is answered)")
        self.send = send
        self.max_group = max_group
        self.max_in_flight = max_in_flight
        self.slow_after_s = slow_after_s
        self.on_slow = on_slow  # called once for each group that outlives slow_after_s (a metric)
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._in_flight = 0  # groups in flight that still hold a place: not yet answered, nor slow
        self._tasks: set[asyncio.Task] = set()
        self.groups = 0
        self.items = 0
        self.largest_group = 0
        self.slow_groups = 0

    async def submit(self, item: Item, timeout_s: float | None = None) -> Result:
        """The result of ``item``'s group.

        ``timeout_s`` bounds the whole wait, the time queued behind groups in flight included (TimeoutError
        after it; the item then leaves the queue, or its group's answer is dropped).
        """
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._dispatch()
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise TimeoutError(f"no answer within {timeout_s:g} s (time waiting for the model included)") from None

    def _dispatch(self) -> None:
        while self._waiting and self._in_flight < self.max_in_flight:
            group, self._waiting = self._waiting[: self.max_group], self._waiting[self.max_group :]
            group = [(item, future) for item, future in group if not future.cancelled()]
            if not group:
                continue
            self._in_flight += 1
            self.groups += 1
            self.items += len(group)
            self.largest_group = max(self.largest_group, len(group))
            loop = asyncio.get_running_loop()
            place = _Place()
            task = loop.create_task(self._run(group, place))
            self._tasks.add(task)  # keep a reference: the loop holds tasks only weakly
            task.add_done_callback(self._tasks.discard)
            if self.slow_after_s is not None:
                place.timer = loop.call_later(self.slow_after_s, self._became_slow, place)

    def _became_slow(self, place: "_Place") -> None:
        if place.held:
            self.slow_groups += 1
            if self.on_slow is not None:
                self.on_slow()
        self._release(place)

    def _release(self, place: "_Place") -> None:
        """The group's place goes to the requests waiting (its answer is still awaited)."""
        if place.held:
            place.held = False
            if place.timer is not None:
                place.timer.cancel()
            self._in_flight -= 1
            self._dispatch()

    async def _run(self, group: list[tuple[Item, asyncio.Future[Result]]], place: "_Place") -> None:
        try:
            results = await self.send([item for item, _ in group])
            if len(results) != len(group):
                raise RuntimeError(f"grouped call returned {len(results)} results for {len(group)} items")
            for (_, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)
        except BaseException as error:  # every waiting caller must hear about the failure
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
        finally:
            self._release(place)

    def stats(self) -> dict[str, int]:
        return {
            "groups": self.groups,
            "requests": self.items,
            "largest_group": self.largest_group,
            "slow_groups": self.slow_groups,
        }


class _Place:
    """A group's hold on one of the places in flight, released when it is answered or becomes slow."""

    __slots__ = ("held", "timer")

    def __init__(self) -> None:
        self.held = True
        self.timer: asyncio.TimerHandle | None = None
