"""The pieces of the rehearsal's Redis death (redis_kill.py) against real processes: a real redis-server killed and
started again on its volume keeps what the GCS wrote (or the remade head would find an empty cluster), and the
kubelet stand-in restarts an exited container after its back-off, once per exit."""

import shutil
import socket
import subprocess
import time
from contextlib import suppress
from pathlib import Path

import pytest

from serve_app.rehearsal import kubelet as kubelet_module
from serve_app.rehearsal.kubelet import Kubelet
from serve_app.rehearsal.redis_kill import RedisDeath
from serve_app.rehearsal.redis_store import RedisStore, _answers

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (Debian)")


def _reply(store: RedisStore, *words: str) -> bytes:
    """One Redis command, authenticated (RESP inline commands): its whole reply, after AUTH's +OK."""
    with socket.create_connection((store.host, store.port), timeout=5) as connection:
        connection.sendall(f"AUTH {store.password}\r\n{' '.join(words)}\r\n".encode())
        time.sleep(0.2)
        connection.settimeout(0.5)
        replies = b""
        with suppress(TimeoutError):
            while chunk := connection.recv(1024):
                replies += chunk
    return replies.removeprefix(b"+OK\r\n")


@needs_redis
def test_redis_killed_and_started_again_keeps_its_data_and_password(tmp_path: Path):
    store = RedisStore("s3cret", tmp_path, host="127.0.0.1")
    try:
        assert _reply(store, "SET", "gcs-table", "cluster-state") == b"+OK\r\n"
        store.kill()
        with pytest.raises(OSError):
            socket.create_connection((store.host, store.port), timeout=2)
        store.start()
        assert _reply(store, "GET", "gcs-table") == b"$13\r\ncluster-state\r\n"
        with socket.create_connection((store.host, store.port), timeout=5) as anonymous:
            anonymous.sendall(b"GET gcs-table\r\n")
            assert anonymous.recv(256).startswith(b"-NOAUTH")
    finally:
        store.stop()


def test_the_kubelet_restarts_an_exited_container_at_once_then_after_its_backoff(monkeypatch):
    monkeypatch.setattr(kubelet_module, "FIRST_BACKOFF_S", 1.0)
    containers = [subprocess.Popen(["sleep", "0.2"])]
    events: list[str] = []

    def restart() -> None:
        events.append("restart")
        # The first restart exits again at once; the second keeps running.
        containers.append(subprocess.Popen(["sleep", "0.2" if len(containers) == 1 else "60"]))

    kubelet = Kubelet(
        exited=lambda: containers[-1].poll() is not None, clean_up=lambda: events.append("clean"), restart=restart
    )
    kubelet.start()
    try:
        deadline = time.monotonic() + 10
        while len(kubelet.restarted_at_s) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # the container restarted last still runs: no third restart
    finally:
        kubelet.stop()
        containers[-1].kill()
    # Each exit noticed within 0.5 s; the first restart without delay, the second after the back-off.
    assert events == ["clean", "restart", "clean", "restart"]
    first, second = kubelet.restarted_at_s
    assert first <= 1.2 and 1.0 + 0.2 <= second - first <= 2.5, kubelet.restarted_at_s


@needs_redis
def test_a_redis_death_brings_redis_back_after_its_down_time(tmp_path: Path):
    store = RedisStore(None, tmp_path, host="127.0.0.1")
    kubelet = Kubelet(exited=lambda: False, clean_up=lambda: None, restart=lambda: None)
    death = RedisDeath(store, kubelet, down_s=1.0)
    try:
        death.kill()
        assert store.process is not None and store.process.poll() is not None
        time.sleep(2.5)  # the 1 s down time, then Redis's start
        assert store.process.poll() is None and _answers((store.host, store.port), None)
        record = death.record()
        assert 1.0 <= record["redis_answering_again_at_s"] <= 2.5 and record["head_container_restarted_at_s"] == []
        # The head never exited here: the scenario's check says so.
        (_, redis_back, _), (_, restarted, seen) = death.checks()
        assert redis_back and not restarted and seen == "the head never exited"
    finally:
        death.stop()
        store.stop()
