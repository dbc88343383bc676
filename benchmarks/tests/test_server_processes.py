"""benchmarks.server_processes on real processes: this one and a child it starts."""

import os
import subprocess
import sys
import time

from benchmarks.server_processes import cmdline, descendants, process_cpu_s, pss_bytes, role_of


def test_cpu_seconds_grow_with_the_work_a_process_does():
    before = process_cpu_s([os.getpid()])
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert process_cpu_s([os.getpid()]) - before >= 0.25
    assert process_cpu_s([2**22 + 1]) == 0  # no such process: counts nothing


def test_a_childs_tree_and_memory_are_found():
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(64 << 20); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while pss_bytes([child.pid]) < 64 << 20:  # its 64 MiB are private: all of them count
            assert time.monotonic() < deadline, "the child's memory never showed"
            time.sleep(0.05)
        assert child.pid in descendants(os.getpid())
        assert "time.sleep(30)" in cmdline(child.pid) and role_of(cmdline(child.pid)) == "other"
        assert pss_bytes([os.getpid(), child.pid]) > pss_bytes([child.pid])
    finally:
        child.kill()
        child.wait()
