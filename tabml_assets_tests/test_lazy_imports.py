"""Loading the code location imports neither MLflow nor Databricks' libraries.

Every process that loads the definitions (webserver, daemon, code server, each run worker, each
emulated Databricks step) would pay their imports, 1 s for mlflow and 2 s for dagster-databricks
with the Databricks SDK, while only the steps that talk to them need them. So tabml imports them
where they are used and spells out the few constants and the config schema it needs at load;
these tests check those copies against the installed packages.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from dagster import DagsterInvalidConfigError

from tabml_assets.resources import model_registry
from tabml_assets.resources.databricks import launcher_config, step_launcher_config
from tabml_assets.resources.mlflow_tracking import DAGSTER_MLFLOW_CONFIG_SCHEMA
from tabml_assets.spec import load_spec

DEPLOYMENTS = ["dev", "test", "staging", "prod"]
IMPORTED_ON_FIRST_USE = ["mlflow", "dagster_mlflow", "dagster_databricks", "databricks.sdk", "pyspark"]

LOAD_EVERY_DEPLOYMENT = f"""
import json, sys
from tabml_assets.definitions import build_definitions
from tabml_assets.spec import load_deployment

loaded = {{}}
for name in {DEPLOYMENTS!r}:
    deployment = load_deployment(name)
    repository = build_definitions(deployment).get_repository_def()
    loaded[name] = [len(deployment.projects), len(list(repository.asset_graph.get_all_asset_keys()))]
heavy = [m for m in {IMPORTED_ON_FIRST_USE!r} if m in sys.modules]
print(json.dumps({{"assets": loaded, "imported": heavy}}))
"""


def test_loading_every_deployment_imports_no_mlflow_or_databricks_library() -> None:
    # A fresh interpreter: this test process has imported mlflow long since.
    done = subprocess.run(
        [sys.executable, "-c", LOAD_EVERY_DEPLOYMENT], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Every project's assets (raw data to predictions), so nothing was left out to get here.
    assert all(assets >= 8 * projects > 0 for projects, assets in result["assets"].values()), result
    assert result["assets"]["dev"][0] == 2, "dev loads both example projects"
    assert result["imported"] == [], f"imported at load: {result['imported']}"


def test_run_statuses_are_mlflows() -> None:
    from mlflow.entities import RunStatus

    for status in (model_registry.RUNNING, model_registry.FINISHED, model_registry.FAILED, model_registry.KILLED):
        assert RunStatus.to_string(RunStatus.from_string(status)) == status


def _described(schema: dict) -> dict:
    return {
        name: (field.config_type.key, field.is_required, field.default_value if field.default_provided else None)
        for name, field in schema.items()
    }


def test_mlflow_tracking_config_schema_is_dagster_mlflows() -> None:
    from dagster_mlflow.resources import CONFIG_SCHEMA

    assert _described(DAGSTER_MLFLOW_CONFIG_SCHEMA) == _described(CONFIG_SCHEMA)


def test_step_launcher_config_is_checked_against_dagster_databricks_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", "https://adb-1.azuredatabricks.net")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-not-a-real-token")
    config = step_launcher_config(load_spec("staging"))
    processed = launcher_config(config)
    # Defaults the profile leaves out come from dagster-databricks' schema.
    assert processed["run_config"]["cluster"] == config["run_config"]["cluster"]
    assert "wait_for_logs" in processed and "max_completion_wait_time_seconds" in processed
    assert "secrets_to_env_variables" in processed
    # `{"env": ...}` read from the environment where the step launches, never stored in config.
    assert config["databricks_host"] == {"env": "DATABRICKS_HOST"}
    assert processed["databricks_host"] == "https://adb-1.azuredatabricks.net"

    broken = {**config, "poll_interval_sec": "often"}
    with pytest.raises(DagsterInvalidConfigError, match="poll_interval_sec"):
        launcher_config(broken)
