"""Real-time scoring on Ray Serve. ``serve run serve_app:graph`` runs the default application.

``graph`` and ``build_app`` are resolved lazily so that the CLI and the pure model code do not import Ray.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from serve_app.app import build_app

        return build_app
    if name == "graph":
        from serve_app.app import build_app, local_development_args
        from serve_app.ray_env import set_ray_defaults

        set_ray_defaults()  # `serve run` asks for the graph before it starts Ray, which inherits the environment
        return build_app(local_development_args())
    raise AttributeError(f"module 'serve_app' has no attribute {name!r}")
