"""Fast-ingress servers on one host get files and ports of their own (serve_app.testing.ports)."""

import inspect

from ray.serve._private import constants

from serve_app.testing.ports import BLOCK_SIZE, private_fast_ingress_env


def test_every_setting_is_one_ray_reads():
    # A renamed setting in a Ray upgrade would silently bring back the shared defaults.
    source = inspect.getsource(constants)
    for name in private_fast_ingress_env():
        assert f'"{name}"' in source, name


def test_two_servers_share_no_file_and_no_port():
    first, second = private_fast_ingress_env(), private_fast_ingress_env()
    paths = [key for key in first if key.endswith(("_LOC", "_PATH", "_BASE", "_FILE"))]
    assert len(paths) == 5
    assert not {first[key] for key in paths} & {second[key] for key in paths}

    def ports(env: dict[str, str]) -> set[int]:
        single = {int(env[key]) for key in env if key.endswith("_PORT") and "DIRECT_INGRESS" not in key}
        blocks = set()
        for protocol in ("HTTP", "GRPC"):
            low = int(env[f"RAY_SERVE_DIRECT_INGRESS_MIN_{protocol}_PORT"])
            high = int(env[f"RAY_SERVE_DIRECT_INGRESS_MAX_{protocol}_PORT"])
            assert high - low + 1 == BLOCK_SIZE
            blocks |= set(range(low, high + 1))
        assert not single & blocks
        return single | blocks

    # Two servers drawing at the same moment may meet by chance (blocks are random); a server started later
    # skips blocks in which any port is bound. What must always hold: one server's own ports never overlap.
    assert len(ports(first)) == 4 + 2 * BLOCK_SIZE
    assert len(ports(second)) == 4 + 2 * BLOCK_SIZE
