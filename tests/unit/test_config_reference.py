"""docs/configuration.md is rendered from the settings classes: it must match a fresh render, and every setting
must explain itself there."""

from serve_app.config_reference import REFERENCE_PATH, field_rows, load_deployments, render
from serve_app.settings import AppArgs


def test_committed_reference_is_fresh():
    assert REFERENCE_PATH.read_text() == render(), (
        "docs/configuration.md is stale: run `python -m serve_app.config_reference --write`"
    )


def test_every_setting_has_a_description():
    settings = list(field_rows(AppArgs, AppArgs.model_construct()))
    for _, config_class in load_deployments():
        if config_class is not None:
            settings.extend(field_rows(config_class, config_class.model_construct(), f"{config_class.__name__}."))
    undescribed = [path for path, field, _ in settings if not (field.description or "").strip()]
    assert not undescribed, f"settings without a description (add Field(description=...)): {undescribed}"


def test_every_setting_is_in_the_reference():
    reference = render()
    for path, _, _ in field_rows(AppArgs, AppArgs.model_construct()):
        assert f"| `{path}` |" in reference
