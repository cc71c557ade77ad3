"""Shared fixtures: a temporary TABML_HOME, the test deployment's spec and definitions, a real
Dagster instance, and the guarantee that no test leaves an MLflow run RUNNING."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions
from mlflow.tracking import MlflowClient

from tabml_assets.definitions import build_definitions
from tabml_assets.spec import DEFAULT_CONF_DIR, LoadedSpec, load_spec

EXAMPLES_DIR = DEFAULT_CONF_DIR.parent / "examples"

# A fixed "today" keeps partitions and demo rows identical from run to run.
TODAY = dt.date(2026, 3, 10)


@pytest.fixture
def tabml_home(tmp_path: Path) -> Path:
    home = tmp_path / "tabml_home"
    home.mkdir()
    return home


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    """A writable copy of the packaged conf/ and examples/ that a test may edit.

    The profiles list their projects as ../examples/<name>, so the copy keeps that layout.
    """
    target = tmp_path / "conf"
    shutil.copytree(DEFAULT_CONF_DIR, target)
    shutil.copytree(EXAMPLES_DIR, tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture
def project_dir(conf_dir: Path) -> Path:
    """The writable copy of the nyc_taxi example project (its pipeline.yaml, steps, profiles)."""
    return conf_dir.parent / "examples" / "nyc_taxi"


@pytest.fixture
def test_spec(tabml_home: Path) -> LoadedSpec:
    return load_spec("test", tabml_home=tabml_home)


@pytest.fixture
def test_defs(test_spec: LoadedSpec) -> Definitions:
    return build_definitions(test_spec)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as dagster_instance:
        yield dagster_instance


def running_mlflow_runs(tracking_uri: str) -> list[str]:
    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
    return [r.info.run_id for r in runs]


@pytest.fixture(autouse=True)
def no_mlflow_run_left_running(tabml_home: Path) -> Iterator[None]:
    yield
    db = tabml_home / "mlflow.db"
    if db.exists():
        assert running_mlflow_runs(f"sqlite:///{db}") == [], "an MLflow run was left RUNNING"
