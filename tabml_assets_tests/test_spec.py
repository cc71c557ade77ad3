"""The pipeline spec: every deployment loads; each kind of bad spec fails with file, key,
expectation and what was found."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tabml_assets.definitions import build_definitions
from tabml_assets.keys import ASSET_NAMES
from tabml_assets.spec import (
    DEFAULT_CONF_DIR,
    DEPLOYMENTS,
    SpecError,
    available_deployments,
    load_deployment,
    load_spec,
)


def edit_yaml(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_every_deployment_builds_definitions(deployment: str, tabml_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", "https://dummy.cloud.databricks.com")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dummy-token")
    loaded = load_deployment(deployment, tabml_home=tabml_home)
    defs = build_definitions(loaded)
    repo = defs.get_repository_def()
    names = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert "nyc_taxi" in [spec.name for spec in loaded.projects]
    # Every project's assets are there, each key prefixed by its project.
    for spec in loaded.projects:
        expected = {key.to_user_string() for key in spec.keys.assets(*ASSET_NAMES)}
        assert expected == {f"{spec.name}/{name}" for name in (
            "raw_data", "features", "trained_model", "evaluation_report", "champion_model", "batch_predictions",
        )}
        assert expected <= names
    # dev and test run in process; staging and prod ship heavy steps to Databricks.
    assert uses_databricks(defs) == (deployment in ("staging", "prod"))
    assert executor_of(defs) == ("multiprocess" if deployment in ("staging", "prod") else "in_process")


def uses_databricks(defs) -> bool:
    launcher = defs.get_repository_def().get_top_level_resources()["step_launcher"]
    return "databricks" in launcher.resource_fn.__module__


def executor_of(defs) -> str:
    return defs.resolve_job_def("nyc_taxi_scoring_job").executor_def.name


def test_deployment_behaviour_follows_profile_keys_not_names(
    conf_dir: Path, tabml_home: Path, monkeypatch
) -> None:
    """dev with staging's `executor` and `databricks` section behaves as staging does."""
    monkeypatch.setenv("DATABRICKS_HOST", "https://dummy.cloud.databricks.com")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dummy-token")
    staging = yaml.safe_load((conf_dir / "profiles" / "staging.yaml").read_text())

    def like_staging(profile: dict) -> None:
        profile.update(executor="multiprocess", databricks=staging["databricks"], storage=staging["storage"])

    edit_yaml(conf_dir / "profiles" / "dev.yaml", like_staging)
    defs = build_definitions(load_deployment("dev", conf_dir=conf_dir, tabml_home=tabml_home))
    assert uses_databricks(defs) and executor_of(defs) == "multiprocess"

    # And a profile of any name runs in process without one.
    (conf_dir / "profiles" / "laptop.yaml").write_text((conf_dir / "profiles" / "test.yaml").read_text())
    defs = build_definitions(load_deployment("laptop", conf_dir=conf_dir, tabml_home=tabml_home))
    assert not uses_databricks(defs) and executor_of(defs) == "in_process"


def test_unknown_executor_names_file_key_expected_and_found(conf_dir: Path, tabml_home: Path) -> None:
    profile = conf_dir / "profiles" / "dev.yaml"
    edit_yaml(profile, lambda d: d.update(executor="threads"))
    with pytest.raises(SpecError) as error:
        load_deployment("dev", conf_dir=conf_dir, tabml_home=tabml_home)
    message = str(error.value)
    assert str(profile) in message and "key `executor`" in message
    assert "'in_process' or 'multiprocess'" in message and "'threads'" in message


def test_databricks_table_without_databricks_section(conf_dir: Path, tabml_home: Path) -> None:
    profile = conf_dir / "profiles" / "dev.yaml"
    edit_yaml(profile, lambda d: d["data_source"].update(kind="databricks_table"))
    with pytest.raises(SpecError) as error:
        load_deployment("dev", conf_dir=conf_dir, tabml_home=tabml_home)
    message = str(error.value)
    assert str(profile) in message and "key `databricks`" in message
    assert "'databricks_table'" in message and "found none" in message


def test_a_project_profile_choosing_a_databricks_table_is_blamed(
    conf_dir: Path, project_dir: Path, tabml_home: Path
) -> None:
    profile = project_dir / "profiles" / "dev.yaml"
    profile.parent.mkdir(exist_ok=True)
    profile.write_text(yaml.safe_dump({"data_source": {"kind": "databricks_table"}}))
    with pytest.raises(SpecError) as error:
        load_deployment("dev", conf_dir=conf_dir, tabml_home=tabml_home)
    assert str(error.value).startswith(f"{profile}: key `databricks`")


def test_unknown_key_names_file_and_key(conf_dir: Path, project_dir: Path, tabml_home: Path) -> None:
    edit_yaml(project_dir / "pipeline.yaml", lambda d: d["split"].update({"holdout": 0.1}))
    with pytest.raises(SpecError) as error:
        load_spec("dev", conf_dir=conf_dir, tabml_home=tabml_home)
    message = str(error.value)
    assert str(project_dir / "pipeline.yaml") in message
    assert "split.holdout" in message and "unknown key" in message


def test_wrong_type_names_expected_and_found(conf_dir: Path, project_dir: Path, tabml_home: Path) -> None:
    edit_yaml(project_dir / "pipeline.yaml", lambda d: d.update({"training_window_days": "a week"}))
    with pytest.raises(SpecError) as error:
        load_spec("dev", conf_dir=conf_dir, tabml_home=tabml_home)
    message = str(error.value)
    assert str(project_dir / "pipeline.yaml") in message
    assert "key `training_window_days`" in message
    assert "expected a valid integer" in message.lower() or "expected input should be a valid integer" in message.lower()
    assert "'a week'" in message


def test_ratios_must_sum_to_one(conf_dir: Path, project_dir: Path, tabml_home: Path) -> None:
    edit_yaml(project_dir / "pipeline.yaml", lambda d: d["split"].update({"train": 0.8}))
    with pytest.raises(SpecError) as error:
        load_spec("dev", conf_dir=conf_dir, tabml_home=tabml_home)
    message = str(error.value)
    assert str(project_dir / "pipeline.yaml") in message
    assert "key `split`" in message and "must sum to 1" in message and "1.1" in message


def test_estimator_outside_allow_list(conf_dir: Path, project_dir: Path, tabml_home: Path) -> None:
    edit_yaml(project_dir / "pipeline.yaml", lambda d: d["estimator"].update({"class": "os.system"}))
    with pytest.raises(SpecError) as error:
        load_spec("dev", conf_dir=conf_dir, tabml_home=tabml_home)
    message = str(error.value)
    assert str(project_dir / "pipeline.yaml") in message
    assert "estimator.class" in message and "HistGradientBoostingRegressor" in message and "'os.system'" in message


def test_profile_override_errors_blame_the_profile(conf_dir: Path, project_dir: Path, tabml_home: Path) -> None:
    """A bad key the project's own profiles/test.yaml overrides is blamed on that file, not pipeline.yaml."""
    profile = project_dir / "profiles" / "test.yaml"
    edit_yaml(profile, lambda d: d["pipeline_overrides"].update({"training_window_days": 0}))
    with pytest.raises(SpecError) as error:
        load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    message = str(error.value)
    assert str(profile) in message and str(project_dir / "pipeline.yaml") not in message
    assert "key `training_window_days`" in message
    assert "greater than or equal to 1" in message and "found 0" in message


def test_unknown_deployment() -> None:
    with pytest.raises(SpecError, match=r"TABML_DEPLOYMENT: expected one of \['dev', 'prod', 'staging', 'test'\] .* found 'qa'"):
        load_spec("qa")


def test_shipped_profiles_are_the_deployments() -> None:
    assert available_deployments(DEFAULT_CONF_DIR) == sorted(DEPLOYMENTS)


def test_dagster_definitions_validate_reports_spec_errors(
    conf_dir: Path, project_dir: Path, tabml_home: Path
) -> None:
    """The CLI a user runs fails on a bad spec and prints the file and key."""
    edit_yaml(project_dir / "pipeline.yaml", lambda d: d["split"].update({"train": "most"}))
    env = {**os.environ, "TABML_CONF_DIR": str(conf_dir), "TABML_HOME": str(tabml_home), "TABML_DEPLOYMENT": "dev"}
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "tabml_assets.definitions"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tabml_home,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert str(project_dir / "pipeline.yaml") in output and "split.train" in output and "'most'" in output
