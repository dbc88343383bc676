"""The rehearsal's in-place serveConfigV2 change (no Ray here: the change itself)."""

from serve_app.rehearsal.config_update import REVISION_VARIABLE, replica_ids, revised


def test_the_revision_changes_only_each_applications_runtime_env_and_counts_up():
    config = {
        "proxy_location": "EveryNode",
        "applications": [{"name": "a", "args": {"x": 1}}, {"name": "b", "runtime_env": {"env_vars": {"K": "v"}}}],
    }
    once = revised(config)
    assert config["applications"][0] == {"name": "a", "args": {"x": 1}}  # the original is left as it was
    assert once["applications"][0] == {
        "name": "a",
        "args": {"x": 1},
        "runtime_env": {"env_vars": {REVISION_VARIABLE: "2"}},
    }
    assert once["applications"][1]["runtime_env"]["env_vars"] == {"K": "v", REVISION_VARIABLE: "2"}
    assert revised(once)["applications"][0]["runtime_env"]["env_vars"][REVISION_VARIABLE] == "3"
    assert {k: v for k, v in once.items() if k != "applications"} == {"proxy_location": "EveryNode"}


def test_replica_ids_gather_every_deployment():
    application = {"deployments": {"A": {"replicas": [{"replica_id": "1"}, {"replica_id": "2"}]}, "B": {}}}
    assert replica_ids(application) == {"1", "2"}
