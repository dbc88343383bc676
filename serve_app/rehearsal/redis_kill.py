"""Redis's death under load, with GCS fault tolerance: kuberay/redis.yaml's pod lost (its node, an OOM kill) and
its Deployment making it again on the same volume ``REDIS_DOWN_S`` later.

What that does to the cluster (seen with Ray 2.60): the GCS exits a few seconds after its Redis connection drops
(ray-project/ray#46982), `ray start --block` with it, so the head container exits; the kubelet starts it again
(at once the first time, then after its back-off: 10 s, doubling, at most 300 s), and the new head waits for
Redis and reads the cluster's state back. Meanwhile the workers' raylets wait for the GCS
(RAY_gcs_rpc_server_reconnect_timeout_s, 600 s in the RayService) and their Serve replicas go on answering: that
is what the rehearsal checks, with the load on a worker's Serve endpoint and the head's readiness timed from
Redis's death (kill_scenario.py).
"""

import threading
import time

from serve_app.rehearsal.kubelet import Kubelet
from serve_app.rehearsal.redis_store import RedisStore

REDIS_DOWN_S = 20.0  # a Redis pod remade on its node; a volume moved to another node takes longer (the workers wait)
HEAD_EXIT_WAIT_S = 60.0  # how long the remake waits for the head container to exit and be restarted


class RedisDeath:
    """``kill`` and ``remake`` for kill_scenario.killed_under_load: Redis SIGKILLed, started again on its volume
    ``down_s`` later, and the head container that exits meanwhile restarted by ``kubelet`` (until ``stop``)."""

    def __init__(self, redis: RedisStore, kubelet: Kubelet, down_s: float = REDIS_DOWN_S) -> None:
        self.redis, self.kubelet, self.down_s = redis, kubelet, down_s
        self._redis_back = threading.Timer(down_s, self._start_redis)
        self._redis_back.daemon = True
        self.redis_back_at_s: float | None = None  # since the kill: Redis answering PING again
        self.redis_error: BaseException | None = None

    def _start_redis(self) -> None:
        try:
            self.redis.start()
            self.redis_back_at_s = round(time.monotonic() - self.kubelet.began, 1)
        except Exception as error:  # kept for the record: the scenario's checks show it
            self.redis_error = error

    def kill(self) -> int:
        self.kubelet.start()
        self.redis.kill()
        self._redis_back.start()
        return 1

    def remake(self) -> None:
        """Returns once the head container has been restarted (or after HEAD_EXIT_WAIT_S if it never exits): the
        head's readiness is probed from then on, not while the dying head still answers its probe (it is timed
        from the kill either way)."""
        deadline = time.monotonic() + HEAD_EXIT_WAIT_S
        while not self.kubelet.restarted_at_s and self.kubelet.error is None and time.monotonic() < deadline:
            time.sleep(0.5)

    def record(self) -> dict:
        return {
            "redis_down_s": self.down_s,
            "redis_answering_again_at_s": self.redis_back_at_s,
            "head_container_restarted_at_s": list(self.kubelet.restarted_at_s),
        }

    def checks(self) -> list[tuple[str, bool, str]]:
        """That the scenario happened as described: Redis back, and the head container restarted by itself."""
        redis_back = self.redis_back_at_s is not None
        restarted = bool(self.kubelet.restarted_at_s) and self.kubelet.error is None
        return [
            (
                "Redis answering again on its volume",
                redis_back,
                f"{self.redis_error!r}" if self.redis_error else "not started again",
            ),
            (
                "the head container exited with its GCS and was restarted (the kubelet stand-in)",
                restarted,
                f"{self.kubelet.error!r}" if self.kubelet.error else "the head never exited",
            ),
        ]

    def stop(self) -> None:
        """The kubelet stand-in stopped (another kill of the head must not race it); Redis's restart, if still
        waiting, cancelled: the teardown stops the store."""
        self.kubelet.stop()
        self._redis_back.cancel()
        if self._redis_back.ident is not None:
            self._redis_back.join()
