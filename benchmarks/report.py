"""What every benchmark writes: a Markdown table builder, and the report printed and saved as OUT.json + OUT.md."""

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Markdown table lines; cells are written with str()."""
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
    ]


def alternating(items: Iterable[T], round_index: int) -> list[T]:
    """``items`` in order in even rounds, reversed in odd ones: whichever setting goes first meets a host that has
    just been idle (or busy), and that must not always be the same one."""
    ordered = list(items)
    return ordered if round_index % 2 == 0 else ordered[::-1]


def serve_background(ray_default_intervals: bool) -> str:
    """Which intervals of Serve's background work a run used (serve_app.ray_env); runs recorded before the project
    set its own used Ray's."""
    return "Ray's defaults" if ray_default_intervals else "the project's (QUIET_BACKGROUND)"


def publish(report: dict, markdown: str, out: Path | None) -> None:
    """Print the Markdown; with ``out``, also write OUT.json (every number) and OUT.md."""
    print(markdown)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown)


def run_info(module: str, argv: list[str] | None) -> dict[str, str]:
    """How a result was produced: the exact command, the machine and the time (the head of every report)."""
    return {
        "command": f"python -m {module} " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{os.uname().machine}, {os.cpu_count()} cores",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
    }


def provenance(report: dict, *details: str) -> list[str]:
    """A report's first lines under its title: the command, then the machine, time, commit and ``details``."""
    machine = "; ".join([report["machine"], report["date"], f"commit {report.get('commit', 'not recorded')}", *details])
    return [f"Command: `{report['command']}`  ", f"Machine: {machine}  "]


def commit() -> str:
    """The commit measured (``git rev-parse --short HEAD``), marked when the working tree differs from it."""
    git = ["git", "-C", str(Path(__file__).resolve().parents[1])]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    changes = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=False)
    return (head.stdout.strip() or "unknown") + (" + uncommitted changes" if changes.stdout.strip() else "")
