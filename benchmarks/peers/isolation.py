"""Environment that keeps a fast-ingress Serve server from touching another one on the same machine.

Ray's HAProxy ingress has machine-wide defaults: config file, admin socket and server state under
/tmp/haproxy-serve, stats and metrics listeners on 8404/9101, fallback proxy on 8500/9500, and direct-ingress
replicas on ports from 30000 (bound with SO_REUSEPORT). Two clusters on one host (the test suite runs several)
then share an admin socket and the replicas' ports, and one cluster's HAProxy ends up answering with the other
cluster's application. Each server gets its own directory and ports instead.
"""

import random
import socket
import tempfile

# Direct-ingress replica port blocks are drawn from here: below Linux's ephemeral range (32768+), apart from
# Ray's default block (30000-31000).
PORT_BLOCKS = range(20000, 29000, 100)
BLOCK_SIZE = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    free = [start for start in starts if all(_bindable(port) for port in range(start, start + BLOCK_SIZE))]
    if len(free) < count:
        raise RuntimeError(f"fewer than {count} free blocks of {BLOCK_SIZE} ports in {PORT_BLOCKS}")
    return free[:count]


def private_fast_ingress_env() -> dict[str, str]:
    """RAY_SERVE_* settings that give one server's HAProxy and ingress replicas files and ports of their own."""
    folder = tempfile.mkdtemp(prefix="haproxy-serve-")
    http, grpc = free_port_blocks(2)
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{folder}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{folder}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{folder}/server-state",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{folder}/metrics.sock",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http + BLOCK_SIZE - 1),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc + BLOCK_SIZE - 1),
    }
