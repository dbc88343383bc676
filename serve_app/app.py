"""The application graph: one ingress in front of the model deployments."""

import importlib
import os
from typing import Any

from ray.serve import Application, Deployment

from deployments.faq import deployment as faq_deployment
from deployments.faq.deployment import FAQMatcher
from deployments.resnet import deployment as resnet_deployment
from deployments.resnet.deployment import ImageClassifier
from serve_app.auth import Authenticator
from serve_app.ingress import Ingress
from serve_app.settings import AppArgs


def build_app(args: AppArgs) -> Application:
    """Application builder named by serve_config.yaml (``import_path: serve_app:build_app``).

    Serve requires a builder to take exactly one parameter, the ``args`` of the config.
    """
    return build_graph(args)


def import_replica_modules() -> None:
    """Import what the model replicas import when they start, beyond the graph: binding the graph imports no model
    library (torch, scikit-learn, numba load in the replicas), so a check that the application runs somewhere
    (serve_app.rehearsal: a read-only root, the image's caches) calls this as well."""
    for module in (*faq_deployment.REPLICA_IMPORTS, *resnet_deployment.REPLICA_IMPORTS):
        importlib.import_module(module)


def build_graph(args: AppArgs, deployment_options: dict[str, dict[str, Any]] | None = None) -> Application:
    """The graph, with deployment options overridden by deployment name from Python (benchmarks), as the
    ``deployments`` section of serve_config.yaml does for ``serve deploy``."""
    options = deployment_options or {}

    def configured(deployment: Deployment) -> Deployment:
        return deployment.options(**options[deployment.name]) if deployment.name in options else deployment

    faq = configured(FAQMatcher).bind(args.faq_model_uri)
    images = configured(ImageClassifier).bind(args.images.model_dump())
    return bind_ingress(configured(Ingress), args, faq, images)


def bind_ingress(ingress: Deployment, args: AppArgs, faq: Application, images: Application) -> Application:
    """The ingress in front of these model deployments, with the ingress settings of ``args``."""
    return ingress.bind(
        faq,
        images,
        args.limits.model_dump(),
        args.faq_call_grouping.model_dump(),
        args.auth.model_dump(),
        args.rate_limit.model_dump(),
        args.collection.model_dump(),
    )


def local_development_args() -> AppArgs:
    """Arguments of ``serve run serve_app:graph`` on a laptop.

    Authentication follows ``SERVE_APP_AUTH__ENABLED`` when it is set. Otherwise it is on exactly when
    credentials are configured, so a fresh clone answers without keys; the ingress logs loudly that auth is off.
    ``build_app`` (serve deploy, the RayService) keeps it on and refuses everything until keys are set.
    """
    args = AppArgs()
    if "SERVE_APP_AUTH__ENABLED" not in os.environ and not Authenticator(args.auth).configured:
        args.auth.enabled = False
    return args
