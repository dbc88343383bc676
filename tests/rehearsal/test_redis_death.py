"""The pieces of the rehearsal's Redis death (redis_kill.py) against real processes: a real redis-server killed and
started again on its volume keeps what the GCS wrote (or the remade head would find an empty cluster), and the
kubelet stand-in restarts an exited container after its back-off, once per exit."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from serve_app.rehearsal import redis_kill
from serve_app.rehearsal.redis_kill import Kubelet, RedisDeath
from serve_app.rehearsal.redis_store import RedisStore

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (Debian)")


def _command(store: RedisStore, *words: str) -> bytes:
    """One Redis command, authenticated (RESP inline commands), its first reply line."""
    with socket.create_connection((store.host, store.port), timeout=5) as connection:
        connection.sendall(f"AUTH {store.password}\r\n{' '.join(words)}\r\n".encode())
        replies = b""
        while replies.count(b"\r\n") < 2:
            replies += connection.recv(1024)
        return replies.split(b"\r\n")[1]


@needs_redis
def test_redis_killed_and_started_again_keeps_its_data_and_password(tmp_path: Path):
    store = RedisStore("s3cret", tmp_path, host="127.0.0.1")
    try:
        assert _command(store, "SET", "gcs-table", "cluster-state") == b"+OK"
        store.kill()
        with pytest.raises(OSError):
            socket.create_connection((store.host, store.port), timeout=2)
        store.start()
        assert _command(store, "GET", "gcs-table") == b"$13"
        with socket.create_connection((store.host, store.port), timeout=5) as anonymous:
            anonymous.sendall(b"GET gcs-table\r\n")
            assert anonymous.recv(256).startswith(b"-NOAUTH")
    finally:
        store.stop()


def test_the_kubelet_restarts_an_exited_container_after_its_backoff_and_cleans_up_first(monkeypatch):
    monkeypatch.setattr(redis_kill, "RESTART_BACKOFF_S", 0.5)
    containers = [subprocess.Popen(["sleep", "0.3"])]
    events: list[str] = []

    def restart() -> None:
        events.append("restart")
        containers.append(subprocess.Popen(["sleep", "60"]))

    kubelet = Kubelet(
        exited=lambda: containers[-1].poll() is not None, clean_up=lambda: events.append("clean"), restart=restart
    )
    kubelet.start()
    try:
        deadline = time.monotonic() + 10
        while not kubelet.restarted_at_s and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # the restarted container still runs: no second restart
    finally:
        kubelet.stop()
        containers[-1].kill()
    assert events == ["clean", "restart"]
    # The container exited after ~0.3 s, was noticed within 0.5 s, then the back-off.
    assert 0.8 <= kubelet.restarted_at_s[0] <= 3, kubelet.restarted_at_s


@needs_redis
def test_a_redis_death_brings_redis_back_after_its_down_time(tmp_path: Path):
    store = RedisStore(None, tmp_path, host="127.0.0.1")
    kubelet = Kubelet(exited=lambda: False, clean_up=lambda: None, restart=lambda: None)
    death = RedisDeath(store, kubelet, down_s=1.0)
    try:
        assert death.kill() == 1
        assert store.process is not None and store.process.poll() is not None
        death.stop()  # waits for Redis to be back
        assert store.process.poll() is None and _answers_ping(store)
        assert death.record() == {"redis_down_s": 1.0, "head_container_restarted_at_s": []}
    finally:
        store.stop()


def _answers_ping(store: RedisStore) -> bool:
    with socket.create_connection((store.host, store.port), timeout=5) as connection:
        connection.sendall(b"PING\r\n")
        return connection.recv(64).startswith(b"+PONG")
