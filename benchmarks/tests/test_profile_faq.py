"""The c=1 profile's arithmetic: py-spy's raw samples parsed, grouped into components and weighted by /proc CPU."""

import os
import threading
import time
from collections import Counter

import pytest

from benchmarks.profile_faq import (
    BACKGROUND,
    UNSEEN,
    ThreadCpu,
    attribute,
    component_of,
    cpu_ms,
    is_idle,
    parse_raw,
    path_breakdown,
    role_of,
    shares,
    thread_ticks,
)

# Lines as py-spy 0.4 writes them (record --format raw --threads --nolineno), from an Ingress replica:
# "thread (TID): NAME;outermost frame;...;innermost frame COUNT".
BOOT = "Thread._bootstrap (threading.py);Thread._bootstrap_inner (threading.py);Thread.run (threading.py)"
METRICS = (
    "RequestMetrics.__call__ (serve_app/metrics.py);RequestMetrics._record (serve_app/metrics.py);"
    "AppMetrics.observe_request (serve_app/metrics.py);Counter.inc (ray/serve/metrics.py);"
    "Metric._record (ray/util/metrics.py)"
)
RAW = "\n".join(
    [
        f"thread (28961): ray::IDLE;{BOOT} 49",
        "thread (28961): ray::IDLE;Thread.run (threading.py);UnaryUnaryCall._invoke (grpc/aio/_call.py) 27",
        f"thread (28961): ray::IDLE;Thread.run (threading.py);{METRICS} 5",
        "thread (0x1F): MainThread;Worker.main_loop (ray/_private/worker.py) 36",
        "py-spy> some status line",
    ]
)


def test_raw_samples_are_parsed_by_thread_with_frames_outermost_first():
    samples = parse_raw(RAW)
    assert set(samples) == {28961, 0x1F}
    assert sum(samples[28961].values()) == 81
    assert samples[0x1F] == Counter({("Worker.main_loop (ray/_private/worker.py)",): 36})
    frames = next(f for f in samples[28961] if len(f) == 2)
    assert frames == ("Thread.run (threading.py)", "UnaryUnaryCall._invoke (grpc/aio/_call.py)")


@pytest.mark.parametrize(
    ("frames", "component"),
    [
        # Context: what our metrics middleware's recording calls into is its cost, Ray's metrics API included.
        (
            [
                "RequestMetrics.__call__ (serve_app/metrics.py)",
                "RequestMetrics._record (serve_app/metrics.py)",
                "Metric._record (ray/util/metrics.py)",
            ],
            "our request metrics (serve_app.metrics)",
        ),
        # The same Ray metrics API called by Serve itself is Serve's.
        (
            ["DeploymentHandle.remote (ray/serve/handle.py)", "Metric._record (ray/util/metrics.py)"],
            "Serve's own metrics / bookkeeping",
        ),
        # Leaf: an outer middleware owns only its own frames; the HTTP send below it is uvicorn's.
        (
            [
                "AuthMiddleware.__call__ (serve_app/auth.py)",
                "RequestMetrics.__call__.<locals>.recording_send (serve_app/metrics.py)",
                "RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py)",
            ],
            "uvicorn / HTTP parsing",
        ),
        (
            [
                "AuthMiddleware.__call__ (serve_app/auth.py)",
                "Authenticator.caller (serve_app/auth.py)",
                "_digest (serve_app/auth.py)",
            ],
            "auth (serve_app.auth)",
        ),
        (
            [
                "Router.__call__ (starlette/routing.py)",
                "JSONResponse.render (starlette/responses.py)",
                "JSONEncoder.encode (json/encoder.py)",
            ],
            "JSON encode/decode",
        ),
        (
            ["Thread.run (threading.py)", "UnaryUnaryCall._invoke (grpc/aio/_call.py)"],
            "Serve handle call: routing, gRPC, serialization",
        ),
        (
            [
                "_worker (concurrent/futures/thread.py)",
                "score_queries (deployments/faq/deployment.py)",
                "zscores_and_cosines (deployments/faq/scorers.py)",
            ],
            "model scoring",
        ),
        (
            ["Logger.info (logging/__init__.py)", "JSONEncoder.encode (json/encoder.py)"],
            "logging (Serve's access log and request log lines)",
        ),
        (
            [
                "Replica._direct_ingress_asgi (ray/serve/_private/replica.py)",
                "Coalescer.submit (serve_app/coalesce.py)",
            ],
            "coalescer (serve_app.coalesce)",
        ),
        (["mystery (somewhere.py)"], "other Python"),
    ],
)
def test_samples_are_grouped_by_the_code_they_run(frames, component):
    assert component_of(frames) == component


def test_waiting_frames_are_idle():
    assert is_idle(("Thread._bootstrap (threading.py)", "Condition.wait (threading.py)"))
    assert is_idle(("Worker.main_loop (ray/_private/worker.py)",))
    assert not is_idle(("Thread.run (threading.py)", "UnaryUnaryCall._invoke (grpc/aio/_call.py)"))


def test_a_threads_cpu_is_shared_by_its_busy_samples_and_what_they_miss_is_unseen():
    stacks = parse_raw(RAW)[28961]  # 49 idle, 27 handle call, 5 metrics
    assert shares(stacks) == pytest.approx(
        {"Serve handle call: routing, gRPC, serialization": 27 / 32, "our request metrics (serve_app.metrics)": 5 / 32}
    )
    # The thread was on CPU for 64 samples' worth: half of it ran where py-spy saw only a waiting frame.
    assert shares(stacks, expected_samples=64) == pytest.approx(
        {
            "Serve handle call: routing, gRPC, serialization": 27 / 64,
            "our request metrics (serve_app.metrics)": 5 / 64,
            UNSEEN: 32 / 64,
        }
    )


def test_threads_without_python_keep_their_cpu_under_their_name():
    samples = parse_raw(RAW)
    threads = [
        ThreadCpu(1, 28961, "ray::IDLE", 3.2, expected_samples=32),
        ThreadCpu(1, 28977, "event_engine", 0.2),
        ThreadCpu(1, 28978, "event_engine", 0.1),
        ThreadCpu(2, 8061, "haproxy", 0.3),
        ThreadCpu(1, 0x1F, "ray::ServeRepli", 0.5),  # only idle samples: its CPU is native code
    ]
    split = attribute(threads, samples)
    assert split["Serve handle call: routing, gRPC, serialization"] == pytest.approx(3.2 * 27 / 32)
    assert split["gRPC C-core threads (Serve handle transport)"] == pytest.approx(0.3)
    assert split["HAProxy (C)"] == pytest.approx(0.3)
    assert split[UNSEEN] == pytest.approx(0.5)
    assert sum(split.values()) == pytest.approx(3.2 + 0.2 + 0.1 + 0.3 + 0.5)


def test_processes_are_named_by_their_command_line():
    assert role_of("ray::ServeReplica:serve_app:FAQMatcher") == "FAQMatcher"
    assert role_of("ray::ServeReplica:serve_app:Ingress") == "Ingress"
    assert role_of("/x/ray/core/src/ray/thirdparty/haproxy -f /tmp/haproxy.cfg") == "HAProxy"
    assert role_of("python -m uvicorn benchmarks.peers.fastapi_app:app --port 1") == "uvicorn (FastAPI peer)"
    assert role_of("ray::IDLE") == "idle Ray worker"


def test_processes_off_the_request_path_are_one_background_row():
    run = {
        "processes": [
            {"role": "Ingress", "cpu_ms_per_request": 2.0, "components": {"auth (serve_app.auth)": 0.5, "x": 1.5}},
            {"role": "FAQMatcher", "cpu_ms_per_request": 3.0, "components": {"model scoring": 3.0}},
            {"role": "Serve controller", "cpu_ms_per_request": 0.25, "components": {"y": 0.25}},
            {"role": "GCS", "cpu_ms_per_request": 0.1, "components": {}},
        ]
    }
    rows = path_breakdown(run)
    assert rows["model scoring"] == {"FAQMatcher": 3.0}
    assert rows["auth (serve_app.auth)"] == {"Ingress": 0.5}
    assert rows[BACKGROUND] == {"other processes": pytest.approx(0.35)}
    assert sum(sum(r.values()) for r in rows.values()) == pytest.approx(5.35)


def test_a_spinning_thread_shows_its_cpu_in_proc():
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])
    spinner.start()
    before = thread_ticks([os.getpid()])
    time.sleep(0.5)
    used = cpu_ms(before, thread_ticks([os.getpid()]))
    stop.set()
    spinner.join()
    spun = used[os.getpid(), spinner.native_id][1]
    assert spun >= 100, used  # of 500 ms on a shared 2-core machine
