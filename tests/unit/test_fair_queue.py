"""Callers take turns on the decode threads by cost (deployments/resnet/fair_queue.py), with real threads."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from deployments.resnet.fair_queue import FairQueue


class Jobs:
    """Jobs that record the order they started in and block until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = threading.Event()

    def job(self, name: str):
        def run() -> str:
            self.started.append(name)
            if not self.release.wait(10):
                raise TimeoutError(f"{name} was never released")
            return name

        return run


def on(pool: ThreadPoolExecutor, job):
    """What FairQueue starts: ``job`` on one of ``pool``'s threads."""
    return lambda: asyncio.get_running_loop().run_in_executor(pool, job)


async def until(condition, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_a_caller_arriving_behind_anothers_long_queue_goes_next():
    async def scenario() -> tuple[list[str], list[str]]:
        jobs = Jobs()
        with ThreadPoolExecutor(1) as pool:
            queue = FairQueue(1)
            heavy = [
                asyncio.create_task(queue.run("heavy", f"heavy{i}", 40e6, on(pool, jobs.job(f"heavy{i}"))))
                for i in range(6)
            ]
            await until(lambda: jobs.started == ["heavy0"])
            light = asyncio.create_task(queue.run("light", "light", 0.3e6, on(pool, jobs.job("light"))))
            await asyncio.sleep(0.05)
            jobs.release.set()
            answers = await asyncio.gather(*heavy, light)
        return jobs.started, answers

    started, answers = asyncio.run(scenario())
    # In arrival order "light" would start last, after the five heavy jobs queued before it.
    assert started == ["heavy0", "light", "heavy1", "heavy2", "heavy3", "heavy4", "heavy5"]
    assert answers == [f"heavy{i}" for i in range(6)] + ["light"]


def test_a_callers_small_request_goes_ahead_of_its_own_large_requests_queue():
    async def scenario() -> list[str]:
        jobs = Jobs()
        with ThreadPoolExecutor(1) as pool:
            queue = FairQueue(1)
            large = [
                asyncio.create_task(queue.run("key", request, 40e6, on(pool, jobs.job(f"{request}.{i}"))))
                for request in ("first", "second")
                for i in range(3)
            ]
            await until(lambda: jobs.started == ["first.0"])
            small = asyncio.create_task(queue.run("key", "small", 0.3e6, on(pool, jobs.job("small"))))
            await asyncio.sleep(0.05)
            jobs.release.set()
            await asyncio.gather(*large, small)
        return jobs.started

    # The same key, so the same caller: between its requests, the one that would finish first goes first, and the
    # two large requests take turns image by image (the second from where the first's running image ends).
    assert asyncio.run(scenario()) == ["first.0", "small", "first.1", "second.0", "first.2", "second.1", "second.2"]


def test_a_stream_of_small_requests_does_not_hold_back_a_large_requests_next_piece_for_ever():
    started: list[str] = []
    gates: dict[str, threading.Event] = {}

    def gated(name: str):
        gates[name] = threading.Event()

        def run() -> None:
            started.append(name)
            if not gates[name].wait(10):
                raise TimeoutError(name)

        return run

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            queue = FairQueue(1)
            tasks = [asyncio.create_task(queue.run("key", "large", 10, on(pool, gated("large.0"))))]
            await until(lambda: started == ["large.0"])
            tasks.append(asyncio.create_task(queue.run("key", "large", 10, on(pool, gated("large.1")))))
            for i in range(30):  # a new small request always waiting beside the large one's next piece
                tasks.append(asyncio.create_task(queue.run("key", i, 1, on(pool, gated(f"small{i}")))))
                await asyncio.sleep(0.005)
                running = started[-1]
                gates[running].set()
                await until(lambda running=running: started[-1] != running)
            for gate in gates.values():
                gate.set()
            await asyncio.gather(*tasks)

    asyncio.run(scenario())
    # Each small request starts where the piece started before it ends: after ten of them the large piece is due.
    assert started.index("large.1") <= 12, started


def test_turns_are_weighted_by_cost_and_a_callers_own_jobs_keep_their_order():
    async def scenario() -> list[str]:
        jobs = Jobs()
        jobs.release.set()
        with ThreadPoolExecutor(1) as pool:
            queue = FairQueue(1)
            blocker = Jobs()
            first = asyncio.create_task(queue.run("x", "blocker", 1, on(pool, blocker.job("blocker"))))
            await until(lambda: blocker.started)
            tasks = [queue.run("big", f"big{i}", 10, on(pool, jobs.job(f"big{i}"))) for i in range(3)]
            tasks += [queue.run("small", f"small{i}", 1, on(pool, jobs.job(f"small{i}"))) for i in range(5)]
            gathered = asyncio.gather(*tasks)
            blocker.release.set()
            await first
            await gathered
        return jobs.started

    # big's jobs start at 0, 10, 20; small's at 0, 1, 2, 3, 4: all of small's go before big's second.
    assert asyncio.run(scenario()) == ["big0", "small0", "small1", "small2", "small3", "small4", "big1", "big2"]


def test_a_lone_caller_gets_every_thread():
    async def scenario() -> int:
        jobs = Jobs()
        with ThreadPoolExecutor(3) as pool:
            queue = FairQueue(3)
            tasks = [
                asyncio.create_task(queue.run("only", f"j{i}", 40e6, on(pool, jobs.job(f"j{i}")))) for i in range(5)
            ]
            await until(lambda: len(jobs.started) >= 3)
            await asyncio.sleep(0.05)
            running_at_once = len(jobs.started)
            jobs.release.set()
            await asyncio.gather(*tasks)
        return running_at_once

    assert asyncio.run(scenario()) == 3


def test_a_cancelled_wait_never_starts_its_job_and_errors_reach_the_caller():
    async def scenario() -> list[str]:
        jobs = Jobs()
        with ThreadPoolExecutor(1) as pool:
            queue = FairQueue(1)
            running = asyncio.create_task(queue.run("a", "running", 1, on(pool, jobs.job("running"))))
            await until(lambda: jobs.started == ["running"])
            waiting = asyncio.create_task(queue.run("a", "cancelled", 1, on(pool, jobs.job("cancelled"))))
            await asyncio.sleep(0.01)
            waiting.cancel()
            jobs.release.set()
            await running

            def fail() -> None:
                raise ValueError("bad image")

            with pytest.raises(ValueError, match="bad image"):
                await queue.run("b", "fail", 1, on(pool, fail))
            assert await queue.run("b", "after", 1, on(pool, lambda: "after")) == "after"
            assert (
                queue.running == 0
                and not queue.turns
                and not any(c.waiting or c.running for c in queue.callers.values())
            )
        return jobs.started

    assert asyncio.run(scenario()) == ["running"]


def test_callers_whose_work_has_all_started_are_forgotten(monkeypatch):
    monkeypatch.setattr("deployments.resnet.fair_queue.MAX_TRACKED_CALLERS", 10)

    async def scenario() -> int:
        with ThreadPoolExecutor(2) as pool:
            queue = FairQueue(2)
            for caller in range(50):
                await queue.run(f"caller{caller}", 0, 1, on(pool, lambda: None))
            return len(queue.callers)

    assert asyncio.run(scenario()) <= 11
