"""A stand-in's background loop (the kubelet's, the autoscaler's): started with its scenario, stopped with it, an
unexpected error kept for the scenario's record rather than lost with the thread."""

import threading
import time


class BackgroundWatch:
    """Runs ``_watch`` on a daemon thread from ``start`` until it returns or ``stop`` is called (``_stopped``)."""

    def __init__(self) -> None:
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.began = time.monotonic()
        self.error: BaseException | None = None  # what stopped it early

    def start(self) -> None:
        self.began = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        try:
            self._watch()
        except Exception as error:  # kept for the record: the scenario's checks show it
            self.error = error

    def _watch(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
