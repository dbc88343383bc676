"""NGINX in front, as kuberay/ingress.yaml has ingress-nginx put it in front of the Serve service's pods: its
annotations mapped to the directives ingress-nginx writes for them (nginx.tmpl), run by a real ``nginx``.

    with nginx_front(folder, "127.0.0.1:8080", ["10.0.0.2:8000", "10.0.0.3:8000"]):  # each pod's Serve port

The Ingress object itself needs a cluster; what it asks of NGINX (retries, body size, timeouts) runs here.
"""

import http.client
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from serve_app.kuberay import ROOT
from serve_app.rehearsal.checks import wait_for

INGRESS = ROOT / "kuberay" / "ingress.yaml"
ANNOTATION_PREFIX = "nginx.ingress.kubernetes.io/"
# ingress-nginx annotation -> the NGINX directive it sets in the location (seconds written with their unit).
DIRECTIVES = {
    "proxy-next-upstream": ("proxy_next_upstream", ""),
    "proxy-next-upstream-tries": ("proxy_next_upstream_tries", ""),
    "proxy-next-upstream-timeout": ("proxy_next_upstream_timeout", "s"),
    "proxy-read-timeout": ("proxy_read_timeout", "s"),
    "proxy-body-size": ("client_max_body_size", ""),
}
# ingress-nginx's own defaults for the retry directives, where no annotation sets them.
CONTROLLER_DEFAULTS = ["proxy_next_upstream error timeout;", "proxy_next_upstream_tries 3;"]


def ingress_directives(ingress: Path = INGRESS) -> list[str]:
    """The NGINX directives of the Ingress's annotations."""
    annotations = yaml.safe_load(ingress.read_text())["metadata"]["annotations"]
    return [
        f"{directive} {annotations[ANNOTATION_PREFIX + name]}{unit};"
        for name, (directive, unit) in DIRECTIVES.items()
        if ANNOTATION_PREFIX + name in annotations
    ]


def nginx_config(folder: Path, listen: str, upstreams: list[str], directives: list[str]) -> str:
    # max_fails=0: every request tries its upstreams afresh, as the controller's Lua balancer does.
    servers = "".join(f"server {upstream} max_fails=0; " for upstream in upstreams)
    return (
        # As root NGINX's workers would run as nobody, who cannot write the body files here.
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off; worker_processes 1; pid {folder}/nginx.pid; error_log {folder}/error.log warn;\n"
        "events { worker_connections 1024; }\n"
        # One line per request: its status and each try's upstream status ("502, 200": sent again once).
        "http { log_format tries '$status $upstream_status';\n"
        f"  access_log {folder}/access.log tries;\n"
        f"  client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy;\n"
        f"  upstream serve {{ {servers}}}\n"
        f"  server {{ listen {listen}; location / {{ proxy_pass http://serve; {' '.join(directives)} }} }}\n"
        "}\n"
    )


def error_log(folder: Path) -> str:
    log = folder / "error.log"
    return log.read_text() if log.exists() else ""


def tries(folder: Path) -> list[list[str]]:
    """Each request NGINX answered so far: the status of each try at an upstream, in order (``502`` from the
    upstream, ``502`` too where the connection failed; more than one: sent again)."""
    log = folder / "access.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split(" ", 1)[1].replace(" ", "").split(",") for line in lines if " " in line]


def sent_again(answered: list[list[str]]) -> dict:
    """Of the requests NGINX answered (``tries``): those it sent to an upstream more than once, how many of them
    were answered 200, and how their tries ended, counted."""
    again = [statuses for statuses in answered if len(statuses) > 1]
    return {
        "requests": len(again),
        "answered": sum(statuses[-1] == "200" for statuses in again),
        "tries": dict(Counter(", ".join(statuses) for statuses in again)),
    }


class Front:
    """A running NGINX (``nginx_front``) whose upstreams can change, as the Serve service's endpoints do when a
    pod leaves or becomes Ready: the configuration is rewritten and NGINX reloads it gracefully."""

    def __init__(self, folder: Path, listen: str, directives: list[str]) -> None:
        self.folder, self.listen, self.directives = folder, listen, directives
        self.conf = folder / "nginx.conf"

    def write(self, upstreams: list[str]) -> None:
        self.conf.write_text(nginx_config(self.folder, self.listen, upstreams, self.directives))

    def set_upstreams(self, upstreams: list[str]) -> None:
        self.write(upstreams)
        subprocess.run(["nginx", "-p", str(self.folder), "-c", str(self.conf), "-s", "reload"], check=True)


@contextmanager
def nginx_front(
    folder: Path, listen: str, upstreams: list[str], directives: list[str] | None = None
) -> Iterator[Front]:
    """A running NGINX listening on ``listen`` ("host:port") in front of ``upstreams`` ("host:port"), with
    ``directives`` (default: the Ingress's); stopped on exit."""
    front = Front(folder, listen, ingress_directives() if directives is None else directives)
    front.write(upstreams)
    process = subprocess.Popen(["nginx", "-p", str(folder), "-c", str(front.conf)], stderr=subprocess.DEVNULL)
    host, _, port = listen.rpartition(":")
    try:

        def listening() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"nginx did not start: {error_log(folder)}")
            http.client.HTTPConnection(host, int(port), timeout=1).connect()  # OSError until it listens
            return True

        wait_for("nginx listening", listening, timeout_s=10, interval_s=0.05)
        yield front
    finally:
        process.terminate()
        process.wait(10)
