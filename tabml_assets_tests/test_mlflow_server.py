"""Train, promote and score through a real `mlflow server` process on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from mlflow.tracking import MlflowClient

from tabml_assets.definitions import build_definitions
from tabml_assets.resources import build_partition_store
from tabml_assets.seed import seed_demo
from tabml_assets.spec import load_spec
from tabml_assets_tests.conftest import TODAY
from tabml_assets_tests.dagster_dev_server import (
    MLFLOW_SERVER_TEST_ENV,
    free_port,
    stop_process_group,
    wait_until_serving,
)

# Starts a real server (mlflow server / PostgreSQL): left out of `make test-fast`.
pytestmark = pytest.mark.slow


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path / "mlflow_server.log"
    mlflow = Path(sys.executable).parent / "mlflow"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                "--artifacts-destination", str(tmp_path / "server_artifacts"),
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **MLFLOW_SERVER_TEST_ENV},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/health", process, log_path, 120, "mlflow server")
        yield url
    finally:
        stop_process_group(process)


def test_train_promote_score_through_a_tracking_server(
    mlflow_server: str, conf_dir: Path, tabml_home: Path, instance: DagsterInstance
) -> None:
    profile_path = conf_dir / "profiles" / "test.yaml"
    profile = yaml.safe_load(profile_path.read_text())
    # Artifacts go through the server's proxy (mlflow-artifacts:), as with a remote server.
    profile["mlflow"].update({"tracking_uri": mlflow_server, "registry_uri": mlflow_server, "artifact_location": None})
    profile_path.write_text(yaml.safe_dump(profile))
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)

    plan = seed_demo(build_definitions(spec), spec, instance, TODAY)

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    # The deployment's model_name template, tabml_{project}, filled for the example.
    assert spec.profile.mlflow.model_name == "tabml_nyc_taxi"
    champion = client.get_model_version_by_alias("tabml_nyc_taxi", "champion")
    assert champion.source.startswith("models:/") or "mlflow-artifacts" in client.get_run(champion.run_id).info.artifact_uri
    scored = build_partition_store(spec).read_frame(spec.keys.batch_predictions, plan.scoring_day.isoformat())
    assert set(scored["model_version"]) == {str(champion.version)}
    assert not (tabml_home / "mlflow.db").exists()
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert runs and {r.info.status for r in runs} == {"FINISHED"}
