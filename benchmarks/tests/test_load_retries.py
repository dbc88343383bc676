"""benchmarks.load.send_with_retries: what a client that follows docs/api.md "Retrying" sends again."""

import asyncio

from benchmarks.load import LoadResult, send_with_retries


def _run(statuses: list[int | str], retries: int) -> tuple[int | str, int, int]:
    """(final status, sends, retries counted) when the server answers ``statuses`` in turn."""
    answers = iter(statuses)
    sends = 0

    async def send() -> int | str:
        nonlocal sends
        sends += 1
        return next(answers)

    result = LoadResult(mode="closed", load=1)
    status = asyncio.run(send_with_retries(send, retries, result))
    return status, sends, result.retries


def test_a_connection_that_died_without_an_answer_is_sent_again():
    assert _run(["ServerDisconnectedError", 200], retries=2) == (200, 2, 1)
    assert _run(["RemoteProtocolError", "ConnectError", 200], retries=2) == (200, 3, 2)  # httpx's names


def test_retries_are_bounded_and_off_by_default():
    assert _run(["ClientOSError"] * 3, retries=2) == ("ClientOSError", 3, 2)
    assert _run(["ClientOSError", 200], retries=0) == ("ClientOSError", 1, 0)


def test_http_errors_and_timeouts_are_never_sent_again():
    for status in (503, 504, 500, 422, "TimeoutError"):
        assert _run([status, 200], retries=3) == (status, 1, 0)


def test_haproxys_502_ingress_lost_is_sent_again():
    # An upload over HAProxy's buffer whose ingress replica died: HAProxy could not send it again itself.
    assert _run([502, 200], retries=2) == (200, 2, 1)
