"""Pods on this machine: each Ray group's container in a network namespace of its own (its own IP, so every
node's Serve proxy can bind port 8000 as in the cluster) and a private mount namespace with the container's
filesystem: the root read-only, fresh tmpfs for each emptyDir volume, the image's home baked beforehand, and the
process dropped to the container's uid/gid. Needs root and a kernel that allows namespaces (``preflight``)."""

import base64
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from serve_app.rehearsal.manifest import IMAGE_HOME, ImageSpec, PodSpec, Volume

BRIDGE = "sa-rehearse"
SUBNET = "10.213.7"  # the pods' private /24 on the bridge; the host side is .1
HOST_ADDRESS = f"{SUBNET}.1"
POD_PREFIX = "sa-pod"
STAGING_CANDIDATES = ("/mnt", "/media", "/srv", "/opt")


class PodsUnavailable(RuntimeError):
    """This machine cannot run pods (not root, or the kernel refuses namespaces): the rehearsal is skipped."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass(frozen=True)
class PodAddress:
    name: str
    ip: str


class PodNetwork:
    """One veth pair per pod into a bridge, like a node's pod network. The bridge lives in a namespace of its
    own ("switch"), whose empty firewall forwards between pods whatever the host's rules say; the host reaches
    the pods through one more veth pair into the bridge."""

    switch = f"{POD_PREFIX}-switch"

    def __init__(self, count: int) -> None:
        self.pods = [PodAddress(f"{POD_PREFIX}{i}", f"{SUBNET}.{i + 2}") for i in range(count)]

    def up(self) -> None:
        self.down()  # leftovers of an interrupted run
        in_switch = ("netns", "exec", self.switch, "ip")
        _ip("netns", "add", self.switch)
        _ip(*in_switch, "link", "add", BRIDGE, "type", "bridge")
        _ip(*in_switch, "link", "set", BRIDGE, "up")
        ends = [("sa-host", "sa-host-br", None, HOST_ADDRESS)]
        ends += [(f"sa-eth{i}", f"sa-veth{i}", pod.name, pod.ip) for i, pod in enumerate(self.pods)]
        for inner, outer, namespace, address in ends:
            _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            _ip("link", "set", outer, "netns", self.switch)
            _ip(*in_switch, "link", "set", outer, "master", BRIDGE, "up")
            where = ("netns", "exec", namespace, "ip") if namespace else ()
            if namespace:
                _ip("netns", "add", namespace)
                _ip("link", "set", inner, "netns", namespace)
                _ip(*where, "link", "set", "lo", "up")
            _ip(*where, "addr", "add", f"{address}/24", "dev", inner)
            _ip(*where, "link", "set", inner, "up")
            if namespace:
                # As a pod has: Ray finds its node IP from the default route (without one it binds 127.0.0.1).
                _ip(*where, "route", "add", "default", "via", HOST_ADDRESS)

    def down(self) -> None:
        """Kill whatever still runs in the pods' namespaces, then remove them with their links."""
        existing = _ip("netns", "list", check=False).stdout.split()
        for name in [pod.name for pod in self.pods] + [self.switch]:
            if name not in existing:
                continue
            for pid in _ip("netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", name, check=False)
        _ip("link", "del", "sa-host", check=False)


@dataclass(frozen=True)
class Filesystem:
    """What the container image holds, found on this machine: the project (the image's WORKDIR), the Python
    environment it runs with, and a directory prepared like the image's home (weights, compiled caches)."""

    project: Path
    baked_home: Path

    def kept_paths(self) -> list[tuple[str, str]]:
        """(host path, path in the pod) bound read-only into every pod."""
        python = {str(Path(sys.prefix).resolve()), str(Path(sys.base_prefix).resolve())}
        paths = [(str(self.project.resolve()), str(self.project.resolve()))]
        paths += [(p, p) for p in sorted(python) if not p.startswith(str(self.project.resolve()) + "/")]
        return [*paths, (str(self.baked_home.resolve()), IMAGE_HOME)]

    def workdir(self, image: ImageSpec, pod: PodSpec) -> str:
        return self.in_pod(pod.working_dir or image.workdir, image)

    def in_pod(self, value: str, image: ImageSpec) -> str:
        """The image's WORKDIR holds the project: paths under it name the checkout here."""
        if value == image.workdir or value.startswith(image.workdir + "/"):
            return str(self.project.resolve()) + value[len(image.workdir) :]
        return value

    def on_host(self, value: str) -> str:
        """A path under the image's home, as the build step on this machine writes it."""
        if value == IMAGE_HOME or value.startswith(IMAGE_HOME + "/"):
            return str(self.baked_home.resolve()) + value[len(IMAGE_HOME) :]
        return value


def _is_under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _blocked_ancestors(paths: list[str], uid: int | None, gid: int | None) -> list[str]:
    """Directories on the way to ``paths`` that the pod's user may not traverse (e.g. /root at mode 700)."""
    blocked = set()
    for path in paths:
        for parent in list(reversed(Path(path).parents))[1:]:
            if not parent.exists():
                break  # the rest is made inside a tmpfs
            st = parent.stat()
            if st.st_uid == uid:
                continue
            bit = 0o010 if st.st_gid == gid else 0o001
            if not st.st_mode & bit:
                blocked.add(str(parent))
                break
    return sorted(blocked)


def _missing_ancestor(path: str) -> str | None:
    """The deepest existing directory above ``path`` when ``path`` does not exist here (a tmpfs goes there)."""
    if Path(path).exists():
        return None
    parent = Path(path).parent
    while not parent.exists():
        parent = parent.parent
    return str(parent)


def _tmpfs(target: str, mode: str, volume: Volume | None = None) -> str:
    size = f",size={volume.size_bytes}" if volume and volume.size_bytes else ""
    return f"mount -t tmpfs -o mode={mode}{size} tmpfs {shlex.quote(target)}"


def conditions_script(pod: PodSpec, image: ImageSpec, fs: Filesystem) -> str:
    """The root-side bash script that builds the container's filesystem in a fresh mount namespace, then execs
    its arguments as the container's user."""
    kept = fs.kept_paths()
    pod_paths = [target for _, target in kept]
    volume_paths = [v.mount_path for v in pod.volumes]
    # A volume whose mount point this host lacks (a secret volume's /var/run/secrets/...) gets it made inside a
    # tmpfs too, as the kubelet makes it in the container, never on this machine's own filesystem.
    overlays = sorted(
        set(_blocked_ancestors(pod_paths, pod.uid, pod.gid))
        | {a for a in (_missing_ancestor(p) for p in [*pod_paths, *volume_paths]) if a}
    )
    staging = next(c for c in STAGING_CANDIDATES if not any(_is_under(p, c) or _is_under(c, p) for p in pod_paths))
    lines = ["set -euo pipefail", _tmpfs(staging, "700")]
    for i, (host, _) in enumerate(kept):
        lines += [f"mkdir {staging}/{i}", f"mount --rbind {shlex.quote(host)} {staging}/{i}"]
    # Parents first, so that a tmpfs never hides one made just before.
    for target in overlays:
        lines.append(_tmpfs(target, "755"))
    for volume in sorted(pod.volumes, key=lambda v: v.mount_path):
        if not volume.files:
            lines.append(_tmpfs(volume.mount_path, "777", volume))  # an emptyDir: fresh, empty, world-writable
            continue
        # A secret volume: the kubelet's files (mode 0644, the default), then read-only.
        lines += [f"mkdir -p {shlex.quote(volume.mount_path)}", _tmpfs(volume.mount_path, "755")]
        for name, content in volume.files:
            path = shlex.quote(f"{volume.mount_path}/{name}")
            encoded = base64.b64encode(content.encode()).decode()
            lines += [f"printf %s {encoded} | base64 -d > {path}", f"chmod 0644 {path}"]
        lines.append(f"mount -o remount,ro {shlex.quote(volume.mount_path)}")
    for i, (_, target) in enumerate(kept):
        lines += [f"mkdir -p {shlex.quote(target)}", f"mount --move {staging}/{i} {shlex.quote(target)}"]
    lines.append(f"umount -l {staging}")
    if pod.read_only_root:
        # Every mount but the volumes and the kernel's own (/proc, /sys, /dev) becomes read-only, as an image's
        # layers are; then check that it took, rather than rehearse a writable root by accident.
        skip = " ".join(shlex.quote(p) for p in volume_paths)
        lines += [
            "for mp in $(awk '{print $5}' /proc/self/mountinfo); do",
            '  case "$mp" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac',
            f'  for v in {skip}; do [[ "$mp" == "$v" ]] && continue 2; done',
            '  mount -o remount,bind,ro "$mp" 2>/dev/null || true',
            "done",
            "if touch /.rehearsal-write-probe 2>/dev/null; then echo 'root filesystem still writable' >&2; exit 70; fi",
        ]
    user = []
    if pod.uid is not None:
        user = ["setpriv", f"--reuid={pod.uid}", f"--regid={pod.gid if pod.gid is not None else pod.uid}"]
        user.append("--clear-groups")
    lines += [f"cd {shlex.quote(fs.workdir(image, pod))}", f'exec {" ".join(user)} env -i "$@"']
    return "\n".join(lines)


def pod_environment(pod: PodSpec, image: ImageSpec, fs: Filesystem, address: PodAddress, head_ip: str) -> dict:
    """The image's ENV, what KubeRay adds, then the container's env (which wins, as in Kubernetes)."""
    env = {key: fs.in_pod(value, image) for key, value in image.env.items()}
    env |= {
        "HOME": IMAGE_HOME,
        "PATH": f"{Path(sys.prefix).resolve()}/bin:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "RAY_CLUSTER_NAME": "serve-app-rehearsal",
        "RAY_NODE_TYPE_NAME": pod.group,
        "RAY_CLOUD_INSTANCE_ID": address.name,
        "RAY_ADDRESS": f"{'127.0.0.1' if pod.is_head else head_ip}:6379",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    return env | pod.env


def pod_command(address: PodAddress, script: str, env: dict[str, str], command: list[str]) -> list[str]:
    assignments = [f"{key}={value}" for key, value in env.items()]
    namespaces = ["ip", "netns", "exec", address.name, "unshare", "--mount", "--propagation", "private"]
    return [*namespaces, "bash", "-c", script, "pod", *assignments, *command]


class PodProcess:
    """One container's main process, its output in a log file."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.log = log
        self.started = time.monotonic()
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def exited(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def preflight() -> None:
    """Refuse early, with the reason, where pods cannot be made: not root, or namespaces refused."""
    if os.geteuid() != 0:
        raise PodsUnavailable("needs root (network and mount namespaces, a bridge, setpriv to the pod's user)")
    for tool in ("ip", "unshare", "setpriv"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            raise PodsUnavailable(f"needs `{tool}` (Debian: iproute2 / util-linux)")
    probe = subprocess.run(
        ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
        capture_output=True,
        text=True,
    )
    if probe.returncode:
        raise PodsUnavailable(f"the kernel refuses private namespaces here: {probe.stderr.strip()}")
