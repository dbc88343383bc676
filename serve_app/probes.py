"""The health probes' paths: the ingress's liveness and readiness routes, and Ray Serve's proxy's own two. By
default they need no credentials and are never rate limited, so Kubernetes and Ray can always probe."""

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
PROBE_PATHS = (LIVENESS_PATH, READINESS_PATH, "/-/healthz", "/-/routes")
# The demo page (serve_app/static/demo.html): open by default like the probes; drop it from auth.open_paths to
# require a credential for it (a browser sends none on navigation, so that hides it).
DEMO_PATH = "/"
