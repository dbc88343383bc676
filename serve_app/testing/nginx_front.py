"""NGINX in front, as kuberay/ingress.yaml has ingress-nginx put it in front of the Serve service's pods: its
annotations mapped to the directives ingress-nginx writes for them (nginx.tmpl), run by a real ``nginx``.

    with nginx_front(folder, [8000, 8000]) as port:  # upstreams: each pod's Serve port

The Ingress object itself needs a cluster; what it asks of NGINX (retries, body size, timeouts) runs here.
"""

import http.client
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from serve_app.kuberay import ROOT
from serve_app.testing.ports import free_port

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


def nginx_config(folder: Path, port: int, upstream_ports: list[int], directives: list[str]) -> str:
    # max_fails=0: every request tries its upstreams afresh, as the controller's Lua balancer does.
    upstreams = "".join(f"server 127.0.0.1:{p} max_fails=0; " for p in upstream_ports)
    return (
        # As root NGINX's workers would run as nobody, who cannot write the body files here.
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off; worker_processes 1; pid {folder}/nginx.pid; error_log {folder}/error.log warn;\n"
        "events { worker_connections 1024; }\n"
        # One line per request: its status and each try's upstream status ("502, 200": sent again once).
        "http { log_format tries '$status $upstream_status';\n"
        f"  access_log {folder}/access.log tries;\n"
        f"  client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy;\n"
        f"  upstream serve {{ {upstreams}}}\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://serve; {' '.join(directives)} }} }}\n"
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


@contextmanager
def nginx_front(folder: Path, upstream_ports: list[int], directives: list[str] | None = None) -> Iterator[int]:
    """A running NGINX on a free port (yielded) in front of ``upstream_ports``, with ``directives`` (default:
    the Ingress's); stopped on exit."""
    port = free_port()
    conf = folder / "nginx.conf"
    directives = ingress_directives() if directives is None else directives
    conf.write_text(nginx_config(folder, port, upstream_ports, directives))
    process = subprocess.Popen(["nginx", "-p", str(folder), "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {error_log(folder)}") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)
