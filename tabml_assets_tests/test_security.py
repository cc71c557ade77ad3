"""Security: secrets never reach logs, events, metadata or MLflow; servers bind 127.0.0.1; config
cannot import arbitrary code; models load only from the registry; paths stay in their folders."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import AssetKey, DagsterInstance
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from mlflow.tracking import MlflowClient

from tabml_assets.definitions import build_definitions
from tabml_assets.ml.estimators import make_estimator
from tabml_assets.resources import build_model_registry, build_partition_store
from tabml_assets.resources.databricks import step_launcher_config
from tabml_assets.resources.model_registry import ModelVersionRef
from tabml_assets.resources.storage import PartitionStore, UnsafePathError
from tabml_assets.seed import run_selection, seed_demo
from tabml_assets.spec import EstimatorSpec, LoadedSpec, load_spec
from tabml_assets_tests.conftest import TODAY
from tabml_assets_tests.mlflow_gateway import MlflowGateway, mlflow_gateway

REPO = Path(__file__).resolve().parents[1]
SENTINEL = "tabml-sentinel-secret-5b7e1c9d"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowGateway]:
    with mlflow_gateway(tmp_path_factory.mktemp("mlflow_server"), SENTINEL) as running:
        yield running


def files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_sentinel_secret_never_leaks(
    gateway: MlflowGateway, conf_dir: Path, tabml_home: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    # The deployment consumes the token from the environment, as MLflow and Databricks do.
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", SENTINEL)
    profile_path = conf_dir / "profiles" / "test.yaml"
    profile = yaml.safe_load(profile_path.read_text())
    profile["mlflow"].update(tracking_uri=gateway.url, registry_uri=gateway.url, experiment_name="tabml-sentinel")
    profile_path.write_text(yaml.safe_dump(profile))
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    dagster_home = tmp_path / "dagster_home_sentinel"
    dagster_home.mkdir()
    with DagsterInstance.local_temp(str(dagster_home)) as instance:
        seed_demo(build_definitions(spec), spec, instance, TODAY)
        runs = instance.get_runs()
        events = [serialize_value(e) for run in runs for e in instance.all_logs(run.run_id)]

    # The secret was really used: every request carried it, the gateway refused none.
    statuses = gateway.state.statuses()
    assert statuses.count(200) > 20 and 401 not in statuses
    assert len(runs) == 3 and len(events) > 100

    leaks = [e for e in events if SENTINEL in e]
    assert leaks == [], "the secret is in Dagster events (logs, metadata, check results)"
    compute_logs = [p for p in dagster_home.rglob("*") if p.suffix in (".out", ".err", ".complete")]
    assert compute_logs, "expected captured compute logs to search"
    needle = SENTINEL.encode()
    assert files_containing(dagster_home, needle) == []  # run/event storage, compute logs
    assert files_containing(tabml_home, needle) == []  # partitions, quarantine, artifacts, reports
    # The MLflow server's own store: params, tags, metrics and artifacts of every run.
    assert files_containing(gateway.server_log.parent, needle) == []
    client = MlflowClient(tracking_uri=gateway.url, registry_uri=gateway.url)
    mlflow_runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert mlflow_runs
    for run in mlflow_runs:
        assert SENTINEL not in repr(run.data.params) and SENTINEL not in repr(run.data.tags)
    for version in client.search_model_versions():
        assert SENTINEL not in repr(version.tags)
    assert SENTINEL not in caplog.text
    out, err = capfd.readouterr()
    assert SENTINEL not in out and SENTINEL not in err


def test_databricks_credentials_stay_out_of_the_definitions_snapshot(
    tabml_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("DATABRICKS_TOKEN", SENTINEL)
    spec = load_spec("staging", tabml_home=tabml_home)
    repository = build_definitions(spec).get_repository_def()
    snapshot = serialize_value(RepositorySnap.from_def(repository))
    # The launcher is in the snapshot; its config refers to the variable by name (read when a
    # step launches), so the value stays in the environment.
    assert '"name": "step_launcher"' in snapshot
    assert step_launcher_config(spec)["databricks_token"] == {"env": "DATABRICKS_TOKEN"}
    assert SENTINEL not in snapshot
    assert SENTINEL not in json.dumps(step_launcher_config(spec))


# Servers bind 127.0.0.1. ----------------------------------------------------------------------


def test_servers_bind_loopback_by_default() -> None:
    from dagster_webserver.cli import DEFAULT_WEBSERVER_HOST

    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^HOST \?= 127\.0\.0\.1$", makefile, re.MULTILINE)
    assert "dagster dev -h $(HOST)" in makefile
    # `dagster dev` without -h falls back to the webserver's default host.
    assert DEFAULT_WEBSERVER_HOST == "127.0.0.1"
    helpers = (REPO / "tabml_assets_tests" / "dagster_dev_server.py").read_text()
    assert "127.0.0.1" in helpers and "0.0.0.0" not in helpers


# No arbitrary code from config; models only from the registry. ---------------------------------


@pytest.mark.parametrize("class_name", ["os.system", "subprocess.Popen", "sklearn.ensemble.RandomForestRegressor"])
def test_estimator_outside_the_allow_list_is_never_imported(class_name: str) -> None:
    # Even a spec that skipped validation cannot make training import a class by path.
    spec = EstimatorSpec.model_construct(class_name=class_name, params={})
    for task in ("regression", "binary"):
        with pytest.raises(ValueError, match=re.escape(f"found {class_name!r}")):
            make_estimator(spec, task, None)


def test_models_load_only_from_the_registry_by_version(test_spec: LoadedSpec) -> None:
    registry = build_model_registry(test_spec)
    name = registry.model_name
    for ref in ("runs:/0123/model", "/tmp/model.pkl", ModelVersionRef("other_model", "1", "r"),
                ModelVersionRef(name, "../1", "r"), ModelVersionRef(name, "champion", "r")):
        with pytest.raises(TypeError, match="expected a registered version"):
            registry.load_model(ref)  # type: ignore[arg-type]
    # Nothing in the package loads a model any other way.
    offenders = []
    for path in (REPO / "tabml_assets").rglob("*.py"):
        if path.name == "model_registry.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"mlflow\.\w+\.load_model|pickle\.loads?\(|joblib\.load|skops\.io\.load|cloudpickle\.load", line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
            # A booster rebuilt from the bytes a Spark fit just produced reads no file.
            elif "load_model(" in line and "registry.load_model(" not in line and "load_model(bytearray(" not in line:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


# Paths cannot escape their folders. -----------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["../../etc/passwd", "..", "2026-03-05/../../x", "/abs/path", "a\\b", "", ".hidden", "a/b"]
)
def test_partition_keys_cannot_escape_the_storage_root(tmp_path: Path, key: str) -> None:
    store = PartitionStore(root=str(tmp_path / "data"))
    with pytest.raises(UnsafePathError, match="partition key"):
        store.path(AssetKey(["nyc_taxi", "raw_data"]), key)
    with pytest.raises(UnsafePathError, match="asset key"):
        store.path(key or "..", "2026-03-05")
    # Neither segment of a project's asset key (project, then asset) may escape either.
    with pytest.raises(UnsafePathError, match="asset key"):
        store.path(AssetKey([key or "..", "raw_data"]), "2026-03-05")
    with pytest.raises(UnsafePathError, match="asset key"):
        store.path(AssetKey(["nyc_taxi", key or ".."]), "2026-03-05")


def test_landing_file_outside_the_folder_is_refused(
    conf_dir: Path, tabml_home: Path, tmp_path: Path, instance: DagsterInstance
) -> None:
    profile_path = conf_dir / "profiles" / "test.yaml"
    profile = yaml.safe_load(profile_path.read_text())
    profile["data_source"] = {"kind": "landing_folder", "landing_folder": "landing"}
    profile_path.write_text(yaml.safe_dump(profile))
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    day = dt.date(2026, 3, 5)
    outside = tmp_path / "elsewhere" / "secret.parquet"
    outside.parent.mkdir()
    assert spec.steps.demo_rows is not None
    spec.steps.demo_rows(day, 10).to_parquet(outside, index=False)
    landing = spec.landing_folder()
    assert landing == tabml_home / "landing" / "nyc_taxi"
    landing.mkdir(parents=True)
    (landing / "innocent.parquet").symlink_to(outside)
    result = run_selection(
        build_definitions(spec), instance, [spec.keys.raw_data], partition_key=day.isoformat(), raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data
    assert "innocent.parquet: resolves to" in failure.user_failure_data.description
    assert "outside the landing folder" in failure.user_failure_data.description
    assert not build_partition_store(spec).exists(spec.keys.raw_data, day.isoformat())
    assert not (tabml_home / "data").exists() or not any((tabml_home / "data").rglob("*.parquet"))
    assert pd.read_parquet(outside).shape == (10, 6)
