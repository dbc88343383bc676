"""The collector of one ingress replica: records go into a bounded buffer, never waiting; a background task writes
them (in a thread) every ``flush_interval_s``, or sooner when the buffer is half full. A full buffer drops the new
record and counts it: collection never slows or fails a request. ``close`` writes what is left (graceful shutdown).

A replica killed (OOM, SIGKILL, node loss) loses what it held in memory: the buffer and a write in flight, at most
twice ``buffer_records``. The counts go to the metrics every ``REPORT_INTERVAL_S`` (not only at a flush), so that
collected - written - dropped, the records in memory (serve_app_collection_buffered_records), is current to within
Ray's export interval when a replica dies: its last value is the number of records the replica lost (as of then).

Each record gets this replica's name and a sequence number in the order it was submitted: the records of one
replica are written in that order, and a gap in the numbers is a dropped record.
"""

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from serve_app.collection.settings import CollectionSettings
from serve_app.collection.writer import RollingWriter

logger = logging.getLogger("ray.serve")

# (outcome, kind, count): outcome is collected, written, or dropped_ and why (buffer_full, write_error). A count of
# 0 is a heartbeat: nothing new, but the metrics' gauge of records in memory is set again, since Ray stops exporting
# a gauge that is not set for two export intervals (20 s).
Observer = Callable[[str, str, int], None]
# How often the counts are reported between flushes; Ray exports metrics every 10 s, so this adds little lag.
REPORT_INTERVAL_S = 1.0


def _ignore(outcome: str, kind: str, count: int) -> None:
    pass


class Collector:
    def __init__(self, settings: CollectionSettings, replica: str, observe: Observer = _ignore) -> None:
        assert settings.destination is not None  # CollectionSettings requires it when enabled
        self.settings = settings
        self.replica = replica
        self.observe = observe
        self.writer = RollingWriter(
            settings.destination, replica, settings.roll_bytes, settings.roll_age_s, settings.storage_options
        )
        self._buffer: list[dict[str, Any]] = []
        self._sequence = 0
        self._pending: Counter[tuple[str, str]] = Counter()  # (kind, outcome) not yet reported to ``observe``
        self._kinds: set[str] = set()  # every kind submitted, for the heartbeats
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task | None = None
        self._closed = False

    def sampled(self) -> bool:
        """Whether to record the next answered request (feedback is always recorded)."""
        rate = self.settings.sample_rate
        return rate >= 1.0 or random.random() < rate

    def submit(self, record: dict[str, Any]) -> bool:
        """Queue a record for writing; False when it was dropped (the buffer is full, or the collector closed)."""
        record |= {"replica": self.replica, "seq": self._sequence}
        self._sequence += 1
        # Counted here, reported to the metrics at the next report (each second): a metric update per request
        # costs throughput.
        self._pending[record["kind"], "collected"] += 1
        self._kinds.add(record["kind"])
        if self._closed or len(self._buffer) >= self.settings.buffer_records:
            self._pending[record["kind"], "dropped_buffer_full"] += 1
            return False
        self._buffer.append(record)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())
        if len(self._buffer) * 2 >= self.settings.buffer_records:
            self._wake.set()
        return True

    def report(self, heartbeat: bool = False) -> None:
        """Send the counts since the last report to the metrics; with ``heartbeat``, a 0 for a kind without any."""
        counted, self._pending = self._pending, Counter()
        if heartbeat:
            for kind in self._kinds - {kind for kind, _ in counted}:
                self.observe("collected", kind, 0)
        for (kind, outcome), count in counted.items():
            self.observe(outcome, kind, count)

    async def flush(self) -> None:
        """Write what the buffer holds now."""
        records, self._buffer = self._buffer, []
        self.report()  # before the write: its records are counted collected, then written
        if records:
            written = await asyncio.to_thread(self._write, records)
            self._observe_each("written" if written else "dropped_write_error", records)
        else:
            await asyncio.to_thread(self._roll_expired)

    async def close(self) -> None:
        """Write what is left and close the files; later records are dropped."""
        self._closed = True
        self._wake.set()
        if self._flusher is not None:
            await self._flusher  # not cancelled: a write in flight ends first, so the records stay in order
        await self.flush()
        await asyncio.to_thread(self.writer.close)

    async def _flush_periodically(self) -> None:
        loop = asyncio.get_running_loop()
        flush_at = loop.time() + self.settings.flush_interval_s
        while not self._closed:
            wait_s = min(REPORT_INTERVAL_S, max(0.0, flush_at - loop.time()))
            with contextlib.suppress(TimeoutError):  # a report or the flush interval is due
                await asyncio.wait_for(self._wake.wait(), wait_s)
            if self._wake.is_set() or loop.time() >= flush_at:
                self._wake.clear()
                await self.flush()
                flush_at = loop.time() + self.settings.flush_interval_s
            else:
                self.report(heartbeat=True)

    def _roll_expired(self) -> None:
        try:
            self.writer.roll_expired()
        except Exception:
            logger.exception("model data collection: could not close a file")

    def _write(self, records: list[dict[str, Any]]) -> bool:
        try:
            self.writer.write(records)
        except Exception:  # the destination failing must not stop collection (nor the replica)
            logger.exception("model data collection: could not write %d records", len(records))
            return False
        return True

    def _observe_each(self, outcome: str, records: list[dict[str, Any]]) -> None:
        for kind, count in Counter(record["kind"] for record in records).items():
            self.observe(outcome, kind, count)
