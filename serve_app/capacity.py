"""Capacity planning: the reference architecture's rule, replicas = ceil(rps * latency / utilisation), and the
same from a measured cost curve (CPU-ms and memory per request at each load: ``plan_from_cost_curve``).

A replica busy ``latency_s`` per request serves 1/latency requests/s at 100% utilisation; running it at
``target_utilisation`` leaves head-room for bursts. ``concurrency`` counts requests a replica serves at once
(a batch), which divides the replicas needed.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    replicas: int
    nodes: int
    requests_per_s_per_replica: float


def plan(
    target_rps: float,
    latency_s: float,
    target_utilisation: float = 0.7,
    concurrency: int = 1,
    replicas_per_node: int = 1,
) -> Capacity:
    if target_rps <= 0 or latency_s <= 0 or concurrency < 1 or replicas_per_node < 1:
        raise ValueError("target_rps and latency_s must be positive; concurrency and replicas_per_node >= 1")
    if not 0 < target_utilisation <= 1:
        raise ValueError("target_utilisation must be in (0, 1]")
    replicas = max(1, math.ceil(target_rps * latency_s / (target_utilisation * concurrency) - 1e-9))
    per_replica = concurrency * target_utilisation / latency_s
    return Capacity(replicas, math.ceil(replicas / replicas_per_node), per_replica)


@dataclass(frozen=True)
class MeasuredCapacity:
    """Cores, nodes and memory for a load, from a measured cost curve (benchmarks/cost_curve.py)."""

    concurrency: int  # the measured load whose costs are used
    cpu_ms_per_request: float
    p99_ms: float
    cores: float  # CPU cores the target rate keeps busy, head-room included
    nodes: int
    memory_mib: float


def plan_from_cost_curve(
    points: list[dict],
    route: str,
    target_rps: float,
    target_utilisation: float = 0.7,
    max_p99_ms: float | None = None,
    cores_per_node: float = 8,
) -> MeasuredCapacity:
    """The cheapest measured load of ``route`` whose p99 is within ``max_p99_ms``, scaled to ``target_rps``.

    CPU: every process of the server was measured (Ray's own included), so cores = rps x CPU-ms per request at
    that load / utilisation. Memory: the measured server's idle footprint on each node, plus the requests in
    flight (rps x p50, Little's law) x the memory each held there.
    """
    if target_rps <= 0 or cores_per_node <= 0:
        raise ValueError("target_rps and cores_per_node must be positive")
    if not 0 < target_utilisation <= 1:
        raise ValueError("target_utilisation must be in (0, 1]")
    measured = [p for p in points if p["route"] == route and not p["errors"]]
    if not measured:
        raise ValueError(f"the cost curve has no error-free point for route {route!r}")
    fitting = [p for p in measured if max_p99_ms is None or p["p99_ms"] <= max_p99_ms]
    if not fitting:
        best = min(p["p99_ms"] for p in measured)
        raise ValueError(f"no measured load of {route!r} has p99 <= {max_p99_ms:g} ms (the lowest: {best:g} ms)")
    point = min(fitting, key=lambda p: p["server_cpu_ms_per_request"])
    cores = target_rps * point["server_cpu_ms_per_request"] / 1000 / target_utilisation
    nodes = max(1, math.ceil(cores / cores_per_node - 1e-9))
    in_flight = target_rps * point["p50_ms"] / 1000
    memory = nodes * point["idle_pss_mib"] + in_flight * point["pss_mib_per_request_in_flight"]
    return MeasuredCapacity(
        point["concurrency"], point["server_cpu_ms_per_request"], point["p99_ms"], cores, nodes, memory
    )
