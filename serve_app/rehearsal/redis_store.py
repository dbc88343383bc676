"""The Redis of kuberay/redis.yaml, for a RayService with ``gcsFaultToleranceOptions``: ``redis-server`` on the
host's end of the pods' network, which the head pod reaches as it would the serve-app-redis Service, with the
manifest's password. Its data stays in memory: the rehearsal kills pods, never Redis."""

import shutil
import socket
import subprocess
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

    def __init__(self, password: str | None, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("gcsFaultToleranceOptions needs redis-server here (Debian: redis-server)")
        port = _free_port(HOST_ADDRESS)
        self.address = f"{HOST_ADDRESS}:{port}"
        # The configuration on stdin (`redis-server -`), so that the password is on no command line.
        config = [f"bind {HOST_ADDRESS}", f"port {port}", 'save ""', "appendonly no", f"dir {workdir}"]
        config += [f"requirepass {password}"] if password else []
        with (workdir / "redis.log").open("wb") as log:
            self.process = subprocess.Popen(["redis-server", "-"], stdin=subprocess.PIPE, stdout=log, stderr=log)
        assert self.process.stdin is not None
        self.process.stdin.write(("\n".join(config) + "\n").encode())
        self.process.stdin.close()
        try:
            wait_for("Redis answering PING", lambda: self._answering(port, password), 30)
        except (TimeoutError, RuntimeError):
            self.stop()
            raise

    def _answering(self, port: int, password: str | None) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited ({self.process.returncode}): see redis.log")
        return _answers((HOST_ADDRESS, port), password)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
