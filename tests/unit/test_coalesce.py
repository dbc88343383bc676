import asyncio
import contextvars

import pytest

from serve_app.coalesce import Coalescer


class Downstream:
    """Records each grouped call; answers after ``delay_s`` with each item doubled."""

    def __init__(self, delay_s: float = 0.01, fail_on: int | None = None) -> None:
        self.groups: list[list[int]] = []
        self.delay_s = delay_s
        self.fail_on = fail_on

    async def __call__(self, items: list[int]) -> list[int]:
        self.groups.append(items)
        await asyncio.sleep(self.delay_s)
        if self.fail_on in items:
            raise ValueError(f"cannot score {self.fail_on}")
        return [2 * item for item in items]


def test_requests_arriving_during_a_call_leave_together_and_get_their_own_results():
    async def scenario():
        downstream = Downstream()
        coalescer = Coalescer(downstream, max_group=64, max_in_flight=1)
        results = await asyncio.gather(*(coalescer.submit(i) for i in range(10)))
        return downstream.groups, results, coalescer.stats()

    groups, results, stats = asyncio.run(scenario())
    assert results == [2 * i for i in range(10)]
    assert groups == [[0], list(range(1, 10))]  # the first goes at once; the rest waited for it
    assert stats == {"groups": 2, "requests": 10, "largest_group": 9}


def test_group_size_and_calls_in_flight_are_bounded():
    async def scenario():
        downstream = Downstream()
        coalescer = Coalescer(downstream, max_group=4, max_in_flight=2)
        await asyncio.gather(*(coalescer.submit(i) for i in range(20)))
        return downstream.groups

    groups = asyncio.run(scenario())
    assert max(len(group) for group in groups) <= 4
    assert sorted(item for group in groups for item in group) == list(range(20))
    assert groups[:2] == [[0], [1]]  # two in flight at once, each sent as soon as it arrived


def test_a_failed_call_fails_only_its_group_and_later_calls_succeed():
    async def scenario():
        coalescer = Coalescer(Downstream(fail_on=3), max_group=64, max_in_flight=1)
        first = await asyncio.gather(*(coalescer.submit(i) for i in range(5)), return_exceptions=True)
        later = await coalescer.submit(7)
        return first, later

    first, later = asyncio.run(scenario())
    assert first[0] == 0
    assert all(isinstance(result, ValueError) for result in first[1:])  # 3 was in the second group, with 1..4
    assert later == 14


def test_a_wrong_number_of_results_is_an_error_for_every_caller():
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    async def scenario():
        coalescer = Coalescer(short, max_group=64, max_in_flight=1)
        return await asyncio.gather(*(coalescer.submit(i) for i in range(3)), return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(result, RuntimeError) for result in results)  # groups [0] and [1, 2], both short


def test_a_cancelled_caller_does_not_disturb_the_others():
    async def scenario():
        downstream = Downstream(delay_s=0.05)
        coalescer = Coalescer(downstream, max_group=64, max_in_flight=1)
        blocker = asyncio.create_task(coalescer.submit(0))
        await asyncio.sleep(0)
        cancelled = asyncio.create_task(coalescer.submit(1))
        kept = asyncio.create_task(coalescer.submit(2))
        await asyncio.sleep(0)
        cancelled.cancel()
        return await blocker, await kept, downstream.groups

    first, kept, groups = asyncio.run(scenario())
    assert (first, kept) == (0, 4)
    assert groups == [[0], [2]]


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        Coalescer(Downstream(), max_group=0, max_in_flight=1)
    with pytest.raises(ValueError):
        Coalescer(Downstream(), max_group=1, max_in_flight=0)


def test_the_timeout_bounds_the_wait_behind_groups_in_flight_and_a_timed_out_item_is_never_sent():
    async def scenario():
        downstream = Downstream(delay_s=0.3)
        coalescer = Coalescer(downstream, max_group=64, max_in_flight=1)
        first = asyncio.ensure_future(coalescer.submit(1, timeout_s=5))
        await asyncio.sleep(0.01)  # 1 is in flight for 0.3 s; 2 queues behind it
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError, match=r"within 0\.1 s"):
            await coalescer.submit(2, timeout_s=0.1)
        waited = asyncio.get_running_loop().time() - started
        answer = await first
        late = await coalescer.submit(3, timeout_s=5)
        return waited, answer, late, downstream.groups

    waited, answer, late, groups = asyncio.run(scenario())
    assert waited < 0.25  # not the 0.3 s the call in flight takes
    assert (answer, late) == (2, 6)
    assert groups == [[1], [3]]  # 2 left the queue when its time ran out


REQUEST = contextvars.ContextVar("request", default=None)  # as Ray Serve's request context


def test_a_group_is_sent_in_no_callers_context():
    # Ray Serve cancels the calls a cancelled request made in its context: a group sent in one caller's context
    # would be cancelled, for every caller in it, when that one's client left.
    seen: list = []

    async def downstream(items: list[int]) -> list[int]:
        seen.append(REQUEST.get())
        await asyncio.sleep(0.01)
        return items

    async def caller(coalescer: Coalescer, item: int) -> int:
        REQUEST.set(f"request {item}")
        return await coalescer.submit(item)

    async def scenario() -> list[int]:
        coalescer = Coalescer(downstream, max_group=64, max_in_flight=1)
        return await asyncio.gather(*(caller(coalescer, item) for item in range(3)))

    assert asyncio.run(scenario()) == [0, 1, 2]
    assert seen == [None, None]  # the first alone, then the two that waited, together


class Ending:
    """Answers each grouped call after ``delay_s`` with its items; records how each call ended."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.ended: list[str] = []

    async def __call__(self, items: list[int]) -> list[int]:
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.ended.append(f"cancelled {items}")
            raise
        self.ended.append(f"answered {items}")
        return items


@pytest.mark.parametrize("leaving", [(1,), (1, 2)])
def test_a_groups_call_is_cancelled_once_none_of_its_callers_waits_and_not_before(leaving):
    downstream = Ending(delay_s=0.1)

    async def scenario() -> list:
        coalescer = Coalescer(downstream, max_group=64, max_in_flight=1)
        callers = [asyncio.create_task(coalescer.submit(item)) for item in range(3)]
        await asyncio.sleep(0.15)  # 0 answered; 1 and 2 sent together at 0.1 s
        for item in leaving:
            callers[item].cancel()
        answers = await asyncio.gather(*callers, return_exceptions=True)
        await asyncio.sleep(0.1)  # past the call's end: it ended by itself, or was cancelled, before the loop closes
        return answers

    answers = asyncio.run(scenario())
    assert answers[0] == 0 and all(isinstance(answers[item], asyncio.CancelledError) for item in leaving)
    if leaving == (1,):
        assert answers[2] == 2 and downstream.ended == ["answered [0]", "answered [1, 2]"]
    else:
        assert downstream.ended == ["answered [0]", "cancelled [1, 2]"]


def test_a_lone_callers_call_is_cancelled_with_its_wait_and_a_timed_out_one_too():
    downstream = Ending(delay_s=0.2)

    async def scenario() -> None:
        coalescer = Coalescer(downstream, max_group=64, max_in_flight=2)
        alone = asyncio.create_task(coalescer.submit(0))
        await asyncio.sleep(0.05)
        alone.cancel()
        with pytest.raises(TimeoutError):
            await coalescer.submit(1, timeout_s=0.05)
        await asyncio.sleep(0.3)  # past the calls' end, before the loop closes

    asyncio.run(scenario())
    assert downstream.ended == ["cancelled [0]", "cancelled [1]"]
