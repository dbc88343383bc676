"""KubeRay's readiness probe run on the pods that stay, as the kubelet runs it (every 5 s), while another pod is
dead: a RayService's worker pod fails its Serve endpoint after one failed probe, so a pod that stays up but fails
a probe meanwhile (its proxy waiting on a missing head, say) would leave the Serve service on a real cluster."""

import threading
from dataclasses import dataclass, field

from serve_app.rehearsal import checks, pods

PERIOD_S = 5.0  # KubeRay's readinessProbe.periodSeconds


@dataclass
class SurvivorReadiness:
    """Probes ``survivors`` (pod name -> its address) every ``PERIOD_S`` between ``start`` and ``stop``."""

    survivors: dict[str, pods.PodAddress]
    probes: dict[str, int] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, address in self.survivors.items():
                ready, seen = checks.readiness_probe(address.name)
                self.probes[name] = self.probes.get(name, 0) + 1
                if not ready:
                    self.failures.setdefault(name, []).append(seen)
            self._stop.wait(PERIOD_S)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def record(self) -> dict:
        failed = {name: len(seen) for name, seen in self.failures.items()}
        return {name: {"probes": count, "failed": failed.get(name, 0)} for name, count in self.probes.items()}

    def check(self) -> tuple[str, bool, str]:
        failed = {name: seen[0] for name, seen in self.failures.items()}
        label = "the pods that stayed passed KubeRay's readiness probe throughout (every 5 s: they stayed endpoints)"
        return label, not failed and bool(self.probes), str(failed or self.record())
