"""serve_config.yaml is a valid Serve config, its import path builds, and it agrees with the code."""

from pathlib import Path

import pytest
import yaml
from ray.serve import Application
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve.schema import ServeDeploySchema

from deployments.faq.deployment import FAQMatcher
from deployments.faq.settings import FaqUserConfig
from deployments.resnet.deployment import ImageClassifier
from deployments.resnet.settings import ImageUserConfig
from serve_app.ingress import Ingress
from serve_app.settings import AppArgs

CONFIG_PATH = Path(__file__).resolve().parents[2] / "serve_config.yaml"
DEPLOYMENTS_IN_CODE = {"Ingress": Ingress, "FAQMatcher": FAQMatcher, "ImageClassifier": ImageClassifier}
USER_CONFIGS = {"FAQMatcher": FaqUserConfig, "ImageClassifier": ImageUserConfig}


@pytest.fixture(scope="module")
def config() -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load(CONFIG_PATH.read_text()))


def test_import_path_builds_with_the_configured_args(config):
    (app,) = config.applications
    module_name, attribute = app.import_path.split(":")
    builder = getattr(__import__(module_name), attribute)
    # The very call `serve deploy` makes on the cluster (it checks the builder's signature, then validates args).
    built = call_user_app_builder_with_args_if_necessary(builder, app.args)
    assert isinstance(built, Application)


def test_args_are_exactly_the_settings(config):
    (app,) = config.applications
    assert AppArgs(**app.args).model_dump() == AppArgs().model_dump()


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS_IN_CODE))
def test_deployment_options_equal_the_code_defaults(config, name):
    (app,) = config.applications
    configured = next(d for d in app.deployments if d.name == name).model_dump(exclude_unset=True)
    deployment = DEPLOYMENTS_IN_CODE[name]
    in_code = {
        "name": deployment.name,
        "max_ongoing_requests": deployment.max_ongoing_requests,
        "max_queued_requests": deployment.max_queued_requests,
        "ray_actor_options": deployment.ray_actor_options,
    }
    if deployment.user_config is not None:
        in_code["user_config"] = deployment.user_config
    if "graceful_shutdown_timeout_s" in configured:
        in_code["graceful_shutdown_timeout_s"] = deployment._deployment_config.graceful_shutdown_timeout_s
    autoscaling = deployment._deployment_config.autoscaling_config
    if autoscaling is not None:
        in_code["autoscaling_config"] = autoscaling.model_dump(include=set(configured["autoscaling_config"]))
    assert _without_defaults(configured) == in_code


def _without_defaults(options: dict) -> dict:
    actor = {key: value for key, value in options.get("ray_actor_options", {}).items() if value not in ({}, None)}
    return {**options, "ray_actor_options": actor}


def test_every_deployment_of_the_graph_is_configured(config):
    (app,) = config.applications
    assert {d.name for d in app.deployments} == set(DEPLOYMENTS_IN_CODE)


def assert_user_configs_are_the_settings(serve_deploy_config) -> None:
    """The model packages own these (deployments/*/settings.py); a misspelt or removed option fails here, not at
    the replicas' reconfigure."""
    (app,) = serve_deploy_config.applications
    configured = {d.name: d.user_config for d in app.deployments if "user_config" in d.model_fields_set}
    assert set(configured) == set(USER_CONFIGS)
    for name, user_config in configured.items():
        USER_CONFIGS[name](**user_config)


def test_each_user_config_is_its_deployments_settings(config):
    assert_user_configs_are_the_settings(config)


def test_only_the_image_deployment_batches_and_it_can_fill_its_batches(config):
    # FAQ requests are batched once, by the ingress (faq_call_grouping), whatever route they come by.
    (app,) = config.applications
    user_configs = {d.name: d.model_dump(exclude_unset=True).get("user_config", {}) for d in app.deployments}
    batched = [d for d in app.deployments if "max_batch_size" in user_configs[d.name]]
    assert [d.name for d in batched] == ["ImageClassifier"]
    (images,) = batched
    assert images.max_ongoing_requests >= images.user_config["max_batch_size"]


def test_every_deployment_bounds_its_queue(config):
    # Overload must answer 503 at once, not queue without bound (max_queued_requests -1 means unbounded).
    (app,) = config.applications
    for deployment in app.deployments:
        assert deployment.max_queued_requests > 0, deployment.name
        assert deployment.max_ongoing_requests <= deployment.max_queued_requests, deployment.name


def test_a_replaced_ingress_replica_outlasts_the_requests_it_holds(config):
    # Its requests may wait up to upstream_timeout_s for a model replica (one that is itself restarting during a
    # redeploy); killing the ingress replica before that would fail them.
    (app,) = config.applications
    ingress = next(d for d in app.deployments if d.name == "Ingress")
    assert ingress.graceful_shutdown_timeout_s > AppArgs(**app.args).limits.upstream_timeout_s


def test_the_ingress_refuses_excess_requests_before_serve_queues_them(config):
    # A replica queues requests beyond max_ongoing_requests (unbounded behind the fast ingress), so the ingress's
    # own admission limits must be reached first; measured without this: p99 35 s at 3x capacity, no 503.
    (app,) = config.applications
    ingress = next(d for d in app.deployments if d.name == "Ingress")
    limits = AppArgs(**app.args).limits
    assert ingress.max_ongoing_requests > limits.max_in_flight + limits.max_images_in_flight
