"""The kubelet's part in the rehearsal: a pod's container started again when its main process exits
(restartPolicy Always), as it happens on Kubernetes: a worker's `ray start --block` that gives up on a GCS too busy
to register it, or the head's when its GCS exits with Redis (redis_kill.py)."""

import time
from collections.abc import Callable

from serve_app.rehearsal.background import BackgroundWatch

# The kubelet's delays before it restarts a container that exited: none the first time, then 10 s, doubling, at
# most 300 s (kubelet's back-off; it forgets a container that ran 10 minutes).
FIRST_BACKOFF_S = 10.0
MAX_BACKOFF_S = 300.0


class Kubelet(BackgroundWatch):
    """Starts a container again when its main process has exited, as the kubelet does (restartPolicy Always):
    the container's other processes end with it (``clean_up``), then ``restart`` after the back-off."""

    def __init__(self, exited: Callable[[], bool], clean_up: Callable[[], object], restart: Callable[[], None]):
        super().__init__()
        self._exited, self._clean_up, self._restart = exited, clean_up, restart
        self.restarted_at_s: list[float] = []  # since start()

    def _watch(self) -> None:
        backoff = 0.0
        while not self._stopped.wait(0.5):
            if not self._exited():
                continue
            self._clean_up()
            if self._stopped.wait(backoff):
                return
            self._restart()
            self.restarted_at_s.append(round(time.monotonic() - self.began, 1))
            backoff = min(max(backoff * 2, FIRST_BACKOFF_S), MAX_BACKOFF_S)
