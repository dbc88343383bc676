"""The application graph: one ingress in front of the model deployments."""

from ray.serve import Application

from deployments.faq.deployment import FAQMatcher
from deployments.resnet.deployment import ImageClassifier
from serve_app.ingress import Ingress
from serve_app.settings import AppArgs


def build_app(args: AppArgs) -> Application:
    """Application builder named by serve_config.yaml (``import_path: serve_app:build_app``)."""
    faq = FAQMatcher.bind(args.faq_model_uri)
    images = ImageClassifier.bind(args.images.model_dump())
    return Ingress.bind(faq, images, args.limits.model_dump())
