"""The kubelet's part in the rehearsal: a pod's container started again when its main process exits
(restartPolicy Always), as it happens on Kubernetes: a worker's `ray start --block` that gives up on a GCS too busy
to register it, or the head's when its GCS exits with Redis (redis_kill.py)."""

import threading
import time
from collections.abc import Callable

# The kubelet's delays before it restarts a container that exited: none the first time, then 10 s, doubling, at
# most 300 s (kubelet's back-off; it forgets a container that ran 10 minutes).
FIRST_BACKOFF_S = 10.0
MAX_BACKOFF_S = 300.0


class Kubelet:
    """Starts a container again when its main process has exited, as the kubelet does (restartPolicy Always):
    the container's other processes end with it (``clean_up``), then ``restart`` after the back-off."""

    def __init__(self, exited: Callable[[], bool], clean_up: Callable[[], object], restart: Callable[[], None]):
        self._exited, self._clean_up, self._restart = exited, clean_up, restart
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self.began = time.monotonic()
        self.restarted_at_s: list[float] = []  # since start()
        self.error: BaseException | None = None  # what stopped it early

    def start(self) -> None:
        self.began = time.monotonic()
        self._thread.start()

    def _watch(self) -> None:
        backoff = 0.0
        try:
            while not self._stop.wait(0.5):
                if not self._exited():
                    continue
                self._clean_up()
                if self._stop.wait(backoff):
                    return
                self._restart()
                self.restarted_at_s.append(round(time.monotonic() - self.began, 1))
                backoff = min(max(backoff * 2, FIRST_BACKOFF_S), MAX_BACKOFF_S)
        except Exception as error:  # kept for the record: the scenario's checks show it
            self.error = error

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
