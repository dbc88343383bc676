"""The Ray autoscaler's part in the rehearsal, for the GPU worker group: a Serve replica that asks for a GPU and
that no pod can place gets one more pod of the group, as the autoscaler asks KubeRay for one (within the group's
maxReplicas) when a resource demand stays pending.

What a serveConfigV2 update needs of it: the ImageClassifier surges (``max_surge_percent``), so its replacement
waits for a GPU while the old replica keeps serving on its own, and only once the replacement runs is the old one
stopped. Without a new pod the replacement would wait for ever. Not rehearsed: removing idle pods
(``idleTimeoutSeconds``), the CPU groups, and how long a cloud takes to give a node (minutes on AKS, during
which the old replica keeps serving).
"""

import time
from collections.abc import Callable

from serve_app.rehearsal.background import BackgroundWatch

POLL_S = 1.0
# A demand pending this long gets a pod: the autoscaler's update loop runs every 5 s.
REACT_S = 5.0


def gpu_deployments(serve_config: dict) -> set[str]:
    """The deployments whose replicas ask for a GPU (``ray_actor_options.num_gpus``)."""
    return {
        deployment["name"]
        for app in serve_config.get("applications", [])
        for deployment in app.get("deployments", [])
        if (deployment.get("ray_actor_options") or {}).get("num_gpus")
    }


def unplaced_replicas(application: dict, deployments: set[str]) -> int:
    """Replicas of ``deployments`` that Serve started but no node holds yet (an actor pending its resources)."""
    return sum(
        1
        for name, deployment in application.get("deployments", {}).items()
        if name in deployments
        for replica in deployment.get("replicas", [])
        if replica.get("state") == "STARTING" and not replica.get("node_ip")
    )


class GpuAutoscaler(BackgroundWatch):
    """Adds a GPU pod (``add_pod``, at most ``max_pods`` times) when ``pending`` has said so for ``react_s``."""

    def __init__(
        self,
        pending: Callable[[], int],
        add_pod: Callable[[], None],
        max_pods: int,
        react_s: float = REACT_S,
    ) -> None:
        super().__init__()
        self._pending, self._add_pod, self._max_pods, self._react_s = pending, add_pod, max_pods, react_s
        self.added_at_s: list[float] = []  # since start()

    def _watch(self) -> None:
        pending_since: float | None = None
        while len(self.added_at_s) < self._max_pods and not self._stopped.wait(POLL_S):
            try:
                pending = self._pending()
            except (OSError, ValueError):  # the dashboard busy or restarting: ask again at the next poll
                continue
            if not pending:
                pending_since = None
                continue
            now = time.monotonic()
            pending_since = pending_since or now
            if now - pending_since >= self._react_s:
                self._add_pod()
                self.added_at_s.append(round(now - self.began, 1))
                pending_since = None
