"""Capacity planning with the reference architecture's rule: replicas = ceil(rps * latency / utilisation).

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
