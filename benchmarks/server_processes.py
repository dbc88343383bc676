"""A running server's processes, found from /proc: the process tree below it, what each one is, what it holds.

A Ray Serve application is a dozen processes (raylet, GCS, the controller, each replica, HAProxy) below the one
that started it; a benchmark that charges CPU or memory to the server must count all of them.
"""

import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

ROLES = (
    ("Ingress", "ServeReplica:serve_app:Ingress"),
    ("FAQMatcher", "ServeReplica:serve_app:FAQMatcher"),
    ("ImageClassifier", "ServeReplica:serve_app:ImageClassifier"),
    ("Serve controller", "ServeController"),
    ("Serve proxy", "ProxyActor"),
    ("Serve HAProxy manager", "HAProxyManager"),
    ("HAProxy", "haproxy"),
    ("raylet", "raylet"),
    ("GCS", "gcs_server"),
    ("app driver", "serve_app.testing.server"),
    ("uvicorn (FastAPI peer)", "uvicorn"),
)


def role_of(cmdline: str) -> str:
    """What a server process is, from its command line (Ray names actors' processes ``ray::ClassName``)."""
    for role, marker in ROLES:
        if marker in cmdline:
            return role
    if "dashboard" in cmdline or "log_monitor" in cmdline or "runtime_env" in cmdline:
        return "Ray dashboard / agents"
    if cmdline.startswith("ray::") or "default_worker.py" in cmdline:
        return "idle Ray worker"
    return "other"


def stat_fields(path: Path) -> list[str]:
    text = path.read_text()
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 0


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (Ray's workers and HAProxy are started by the server's processes)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children[int(stat_fields(entry / "stat")[1])].append(int(entry.name))
            except (OSError, ValueError):
                continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def server_pid(command: list[str]) -> int:
    """The process started with ``command`` (serve_app.testing.process keeps its Popen to itself)."""
    wanted = " ".join(command)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and cmdline(int(entry.name)) == wanted:
            return int(entry.name)
    raise RuntimeError(f"no process runs {wanted!r}")


def pss_bytes(pids: list[int]) -> int:
    """Proportional set size of ``pids`` together: shared pages (libraries, Ray's object store mappings) are
    split between the processes that map them, so the sum is what the server holds, not a multiple of it."""
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in lines if line.startswith("Pss:")), 0)
    return total


def process_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds (user + system, every thread) the processes ``pids`` have used so far; a gone process adds 0."""
    ticks = 0
    for pid in pids:
        try:
            fields = stat_fields(Path(f"/proc/{pid}/stat"))
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLOCK_TICKS
