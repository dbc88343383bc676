"""Writes records as JSON Lines through fsspec, one open file per partition, rolled by size and by age:
``<destination>/date=YYYY-MM-DD/model_version=V/<replica>-<file number>.jsonl``.

Blocking (file and network I/O): the collector calls it in a thread. A file on an object store becomes visible
when it is closed (rolled, or at shutdown); a local file grows with every flush.
"""

import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import fsspec

# A partition value is a path segment: anything else in a model version becomes "_".
UNSAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]")


def partition_value(value: str) -> str:
    return UNSAFE_SEGMENT.sub("_", value)[:100] or "_"


@dataclass
class _OpenFile:
    handle: Any
    opened_at: float
    size: int = 0


class RollingWriter:
    def __init__(
        self,
        destination: str,
        replica: str,
        roll_bytes: int,
        roll_age_s: float,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(destination, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.replica = partition_value(replica)
        self.roll_bytes = roll_bytes
        self.roll_age_s = roll_age_s
        self._files: dict[tuple[str, str], _OpenFile] = {}
        self._file_number = 0
        self._lock = threading.Lock()  # a flush and the shutdown's close may overlap

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append the records to their partitions' files, then roll what is too big or too old."""
        with self._lock:
            for record in records:
                line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
                open_file = self._file_for(record["time"][:10], partition_value(record["model_version"]))
                open_file.handle.write(line)
                open_file.size += len(line)
            for open_file in self._files.values():
                open_file.handle.flush()
            self._roll(time.monotonic())

    def roll_expired(self) -> None:
        with self._lock:
            self._roll(time.monotonic())

    def close(self) -> None:
        with self._lock:
            for partition in list(self._files):
                self._files.pop(partition).handle.close()

    def _file_for(self, date: str, model_version: str) -> _OpenFile:
        partition = (date, model_version)
        if partition not in self._files:
            directory = f"{self.root}/date={date}/model_version={model_version}"
            self.fs.makedirs(directory, exist_ok=True)
            # The number goes on across partitions and rolls, so a replica never writes a file twice.
            path = f"{directory}/{self.replica}-{self._file_number:06d}.jsonl"
            self._file_number += 1
            self._files[partition] = _OpenFile(self.fs.open(path, "wb"), time.monotonic())
        return self._files[partition]

    def _roll(self, now: float) -> None:
        for partition, open_file in list(self._files.items()):
            if open_file.size >= self.roll_bytes or now - open_file.opened_at >= self.roll_age_s:
                self._files.pop(partition).handle.close()
