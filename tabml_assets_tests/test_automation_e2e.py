"""The landing sensor for real: `dagster dev` with its daemon, a file dropped into the landing
folder, and predictions for its rows written with no click."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dagster import DagsterInstance
from mlflow.tracking import MlflowClient

from tabml_assets.definitions import build_definitions
from tabml_assets.resources import build_partition_store
from tabml_assets.seed import seed_demo
from tabml_assets.spec import load_spec
from tabml_assets_tests.conftest import TODAY
from tabml_assets_tests.dagster_dev_server import DagsterDev, dagster_dev, write_instance_yaml
from tabml_assets_tests.test_automation import NYC_TAXI_ONLY, edit_profile, land

NEW_DAYS = ["2026-03-10", "2026-03-11"]
ROWS_PER_DAY = 30
RUNS_QUERY = """
query LandingRuns {
  runsOrError(filter: {tags: [{key: "tabml/trigger", value: "landing"}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""


def landing_runs(server: DagsterDev) -> list[dict]:
    runs = server.graphql(RUNS_QUERY)["runsOrError"]["results"]
    return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in runs]


def wait_for_landing_runs(server: DagsterDev, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = landing_runs(server)
        failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
        if failed:
            raise AssertionError(f"landing run failed: {failed}\n{server.log()[-4000:]}")
        if len(runs) >= count and all(r["status"] == "SUCCESS" for r in runs):
            return runs
        time.sleep(0.5)
    raise AssertionError(f"landing runs after {timeout}s: {landing_runs(server)}\n{server.log()[-4000:]}")


@pytest.mark.slow
def test_dropped_file_is_scored_with_no_click(conf_dir: Path, tabml_home: Path, tmp_path: Path) -> None:
    edit_profile(
        conf_dir,
        data_source={"kind": "landing_folder", "landing_folder": "landing"},
        sensors={"default_status": "RUNNING", "minimum_interval_seconds": 2},
        projects=NYC_TAXI_ONLY,
    )
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    dagster_home = tmp_path / "dagster_home"
    write_instance_yaml(dagster_home)
    # A champion and a few ingested days, in the same instance the daemon will use.
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        seed_demo(build_definitions(spec), spec, instance, TODAY)
    uri = f"sqlite:///{tabml_home}/mlflow.db"
    champion = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(
        spec.profile.mlflow.model_name, "champion"
    )

    with dagster_dev(tabml_home, dagster_home, extra_env={"TABML_CONF_DIR": str(conf_dir)}) as server:
        land(spec, "new_trips.parquet", NEW_DAYS, rows_per_day=ROWS_PER_DAY)
        runs = wait_for_landing_runs(server, len(NEW_DAYS), timeout=150)

    # Exactly the file's days ran, each once (the seeded days were already ingested).
    assert sorted(r["tags"]["dagster/partition"] for r in runs) == NEW_DAYS
    assert {r["tags"]["tabml/landing_files"] for r in runs} == {"new_trips.parquet"}
    for day in NEW_DAYS:
        predictions = build_partition_store(spec).read_frame(spec.keys.batch_predictions, day)
        assert len(predictions) == ROWS_PER_DAY
        assert predictions["prediction"].notna().all()
        assert set(predictions["model_version"]) == {str(champion.version)}
