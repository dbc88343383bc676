"""The Redis of kuberay/redis.yaml, for a RayService with ``gcsFaultToleranceOptions``: ``redis-server`` on the
host's end of the pods' network, which the head pod reaches as it would the serve-app-redis Service, with the
manifest's password, and its data in an append-only file as there (the PVC: a folder of the rehearsal's), so that
``kill`` then ``start`` is the Redis pod lost and remade on its volume."""

import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

from serve_app.rehearsal.checks import wait_for
from serve_app.rehearsal.pods import HOST_ADDRESS


def _free_port(host: str) -> int:
    """A port free on ``host`` (Redis's own 6379 may be a Ray GCS of this machine's)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _answers(address: tuple[str, int], password: str | None) -> bool:
    with socket.create_connection(address, timeout=2) as connection:
        commands = (f"AUTH {password}\r\n" if password else "") + "PING\r\n"
        connection.sendall(commands.encode())
        return b"+PONG" in connection.recv(256)


class RedisStore:
    """One redis-server process; ``address`` is what the head's RAY_REDIS_ADDRESS becomes."""

    def __init__(self, password: str | None, workdir: Path, host: str = HOST_ADDRESS) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("gcsFaultToleranceOptions needs redis-server here (Debian: redis-server)")
        self.host, self.port, self.password = host, _free_port(host), password
        self.address = f"{host}:{self.port}"
        self.workdir = workdir
        # A new cluster's volume: an earlier run's files (a kept --keep folder) would hand the new GCS its state.
        self.volume = workdir / "redis-volume"
        shutil.rmtree(self.volume, ignore_errors=True)
        self.volume.mkdir(parents=True)
        self.process: subprocess.Popen | None = None
        self._lock = threading.Lock()  # start (a timer's thread) against stop (the teardown)
        self.start()

    def start(self) -> None:
        """redis-server on the volume (the data of any earlier one read back), answering PING when this returns."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        # The configuration on stdin (`redis-server -`), so that the password is on no command line. `appendonly
        # yes` as kuberay/redis.yaml's container runs it (fsync every second); its RDB snapshots left out here,
        # as the append-only file is what a restarted Redis reads.
        config = [f"bind {self.host}", f"port {self.port}", 'save ""', "appendonly yes", f"dir {self.volume}"]
        config += [f"requirepass {self.password}"] if self.password else []
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(["redis-server", "-"], stdin=subprocess.PIPE, stdout=log, stderr=log)
        assert self.process.stdin is not None
        self.process.stdin.write(("\n".join(config) + "\n").encode())
        self.process.stdin.close()
        try:
            wait_for("Redis answering PING", self._answering, 30)
        except (TimeoutError, RuntimeError):
            self._stop()
            raise

    def _answering(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited ({self.process.returncode}): see redis.log")
        return _answers((self.host, self.port), self.password)

    def kill(self) -> None:
        """SIGKILL, as an OOM kill ends it: no shutdown save (what it wrote stays in the OS's cache: a lost node may
        lose up to its last second of writes besides, which this does not rehearse)."""
        with self._lock:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
