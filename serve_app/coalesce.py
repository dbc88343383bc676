"""Coalesce concurrent calls into grouped downstream calls, within one event loop.

Each call across a DeploymentHandle costs the caller and the callee a fixed amount of CPU (serialisation,
routing, request bookkeeping), a few milliseconds on small machines: more than scoring one FAQ question.
Requests that arrive while earlier groups are in flight wait and leave together in the next group, so
under load the fixed cost is paid once per group; an idle service sends each request at once (no timer).

The queue of waiting calls has no bound of its own: the caller bounds the calls it makes at once (the ingress's
admission limit counts every request from its arrival).
"""

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    def __init__(
        self,
        send: Callable[[list[Item]], Awaitable[list[Result]]],
        max_group: int,
        max_in_flight: int,
    ) -> None:
        if max_group < 1 or max_in_flight < 1:
            raise ValueError("max_group and max_in_flight must be >= 1")
        self.send = send
        self.max_group = max_group
        self.max_in_flight = max_in_flight
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task] = set()
        self.groups = 0
        self.items = 0
        self.largest_group = 0

    async def submit(self, item: Item, timeout_s: float | None = None) -> Result:
        """The result of ``item``'s group.

        ``timeout_s`` bounds the whole wait, the time queued behind groups in flight included (TimeoutError
        after it; the item then leaves the queue, or its group's answer is dropped). A group's call is cancelled
        when none of its callers waits for it any more.
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
            # In a context of its own, not the one of whichever request sent it: Ray Serve cancels the calls a request
            # made in its context when that request is cancelled (its client gone), and the group is every
            # waiting request's call: it would fail the others with it.
            task = asyncio.get_running_loop().create_task(self._run(group), context=contextvars.Context())
            self._tasks.add(task)  # keep a reference: the loop holds tasks only weakly
            task.add_done_callback(self._tasks.discard)
            for _, future in group:
                future.add_done_callback(partial(_cancel_when_all_gone, group, task))

    async def _run(self, group: list[tuple[Item, asyncio.Future[Result]]]) -> None:
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
            self._in_flight -= 1
            self._dispatch()

    def stats(self) -> dict[str, int]:
        return {"groups": self.groups, "requests": self.items, "largest_group": self.largest_group}


def _cancel_when_all_gone(group: list[tuple[object, asyncio.Future]], task: asyncio.Task, _: asyncio.Future) -> None:
    """The group's call cancelled once every request in it has stopped waiting (cancelled, or timed out)."""
    if not task.done() and all(future.cancelled() for _, future in group):
        task.cancel()
