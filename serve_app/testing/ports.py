"""Free ports, and the environment that keeps a fast-ingress Serve server off another one on the same machine.

Ray's HAProxy ingress has machine-wide defaults: config file, admin socket and server state under
/tmp/haproxy-serve, stats and metrics listeners on 8404/9101, fallback proxy on 8500/9500, and direct-ingress
replicas on ports from 30000 (bound with SO_REUSEPORT). Two clusters on one host (the test suite runs several)
then share an admin socket and the replicas' ports, and one cluster's HAProxy ends up answering with the other
cluster's application. Each server gets its own directory and ports instead.
"""

import itertools
import random
import socket
import tempfile

# Port blocks are drawn from here: below Linux's ephemeral range (32768+), so no outgoing connection takes them,
# above Ray's worker ports (10002-19999) and apart from Ray's direct-ingress default (30000-31000).
PORT_BLOCKS = range(20000, 29000, 100)
BLOCK_SIZE = 100
SINGLE_PORTS = range(29000, 30000)  # free_port()'s


def free_port() -> int:
    """A port nobody listens on, outside the ephemeral range (an outgoing connection could take one of those
    between this check and the server's bind)."""
    ports = list(SINGLE_PORTS)
    random.shuffle(ports)
    for port in ports:
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port in {SINGLE_PORTS}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_blocks(count: int) -> list[int]:
    """First ports of ``count`` blocks of BLOCK_SIZE ports nobody listens on (a replica needs one, a redeploy
    two per replica); random blocks, so servers started at the same moment rarely pick the same one."""
    starts = list(PORT_BLOCKS)
    random.shuffle(starts)
    free = (start for start in starts if all(_bindable(port) for port in range(start, start + BLOCK_SIZE)))
    blocks = list(itertools.islice(free, count))  # stops probing once it has enough
    if len(blocks) < count:
        raise RuntimeError(f"fewer than {count} free blocks of {BLOCK_SIZE} ports in {PORT_BLOCKS}")
    return blocks


# The folder of one server's HAProxy files (private_fast_ingress_env); serve_app.testing.server removes its own.
PRIVATE_HAPROXY_PREFIX = "haproxy-serve-"


def private_fast_ingress_env() -> dict[str, str]:
    """RAY_SERVE_* settings that give one server's HAProxy and ingress replicas files and ports of their own."""
    folder = tempfile.mkdtemp(prefix=PRIVATE_HAPROXY_PREFIX)
    # Single ports come from a block of their own too: an ephemeral port that was free a moment ago can be
    # taken by any outgoing connection before HAProxy binds it (seen in CI: stats port "Address already in use").
    http, grpc, single = free_port_blocks(3)
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{folder}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{folder}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{folder}/server-state",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{folder}/metrics.sock",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(single),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(single + 1),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(single + 2),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(single + 3),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http + BLOCK_SIZE - 1),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc + BLOCK_SIZE - 1),
    }
