"""The dg CLI on the project as it is laid out: `dg check defs`, `dg list defs` and `dg launch` of
one asset partition, each a real subprocess against a real instance in a temp DAGSTER_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import AssetRecordsFilter, DagsterInstance

from tabml_assets.keys import ASSET_NAMES, SCORING_JOB, PipelineKeys
from tabml_assets_tests.dagster_dev_server import REPO_ROOT, write_instance_yaml

pytestmark = pytest.mark.slow

KEYS = PipelineKeys("nyc_taxi")
DAY = "2026-03-05"
DG = Path(sys.executable).parent / "dg"


def dg(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # `dg check defs` loads the project in its own Python: with --use-active-venv, the one
    # running these tests (a checkout made by `make` has it as .venv, which dg finds by itself).
    return subprocess.run(
        [str(DG), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def dg_env(tmp_path: Path) -> dict[str, str]:
    dagster_home = tmp_path / "dagster_home"
    write_instance_yaml(dagster_home)
    return {
        **os.environ,
        "TABML_DEPLOYMENT": "test",
        "TABML_HOME": str(tmp_path / "tabml_home"),
        "DAGSTER_HOME": str(dagster_home),
        "VIRTUAL_ENV": sys.prefix,
    }


def test_dg_checks_lists_and_launches_one_partition(dg_env: dict[str, str]) -> None:
    checked = dg(["check", "defs", "--use-active-venv"], dg_env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr

    listed = dg(["list", "defs", "--json"], dg_env)
    assert listed.returncode == 0, listed.stderr
    defs = json.loads(listed.stdout)
    assets = {asset["asset_key"] for asset in defs["assets"]}
    assert {key.to_user_string() for key in KEYS.assets(*ASSET_NAMES)} <= assets
    assert "nyc_flights/raw_data" in assets
    assert KEYS.job(SCORING_JOB) in {job["name"] for job in defs["jobs"]}
    assert KEYS.registry_resource in {resource["name"] for resource in defs["resources"]}
    assert any(check["asset_key"] == "nyc_taxi/raw_data" for check in defs["asset_checks"])

    # raw_data and its quarantine are one step's outputs, so they are launched together.
    selection = f"{KEYS.raw_data.to_user_string()},{KEYS.quarantine.to_user_string()}"
    launched = dg(["launch", "--assets", selection, "--partition", DAY], dg_env)
    output = launched.stdout + launched.stderr
    assert launched.returncode == 0, output
    assert "RUN_SUCCESS" in output

    with DagsterInstance.from_config(dg_env["DAGSTER_HOME"]) as instance:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=KEYS.raw_data, asset_partitions=[DAY]), limit=1
        ).records
        assert len(records) == 1
        materialization = records[0].asset_materialization
        assert materialization is not None and materialization.partition == DAY
        assert materialization.metadata["dagster/row_count"].value > 0
        assert instance.get_materialized_partitions(KEYS.quarantine) == {DAY}
        # Only the asset asked for: its downstream features were not built.
        assert instance.get_materialized_partitions(KEYS.features) == set()


def test_dg_check_defs_names_the_bad_file_and_key(
    dg_env: dict[str, str], conf_dir: Path, project_dir: Path
) -> None:
    pipeline = project_dir / "pipeline.yaml"
    spec = yaml.safe_load(pipeline.read_text())
    spec["split"]["train"] = "most"
    pipeline.write_text(yaml.safe_dump(spec))
    checked = dg(["check", "defs", "--use-active-venv"], {**dg_env, "TABML_CONF_DIR": str(conf_dir)})
    output = checked.stdout + checked.stderr
    assert checked.returncode != 0, output
    assert str(pipeline) in output and "split.train" in output
