"""Retries: transient MLflow errors are retried with backoff until they pass; permanent ones
(bad credentials, a missing model) fail the step at once with their message.

The Dagster-level tests run the test deployment against a real MLflow server behind a gateway
that checks the bearer token and injects 503s (tabml_assets_tests/mlflow_gateway.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from dagster import DagsterInstance, ExecuteInProcessResult, Failure
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient

from tabml_assets.definitions import build_definitions
from tabml_assets.resources import build_model_registry, build_partition_store
from tabml_assets.resources.model_registry import ModelRegistry, ModelVersionRef
from tabml_assets.resources.retries import fail_fast_unless_transient, is_transient
from tabml_assets.seed import plan_seed, run_selection, seed_demo
from tabml_assets.spec import LoadedSpec, load_spec
from tabml_assets_tests.conftest import TODAY
from tabml_assets_tests.mlflow_gateway import MlflowGateway, free_port, mlflow_gateway

TOKEN = "test-token-for-the-gateway"
_model_numbers = itertools.count()


# Classification, on real exceptions from real clients. ------------------------------------------


def test_connection_refused_from_a_real_client_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MlflowException) as raised:
        client.search_experiments()
    assert is_transient(raised.value)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}), True),
        (RestException({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}), True),
        (RestException({"error_code": "INTERNAL_ERROR", "message": "server bug"}), True),
        (RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such model"}), False),
        (RestException({"error_code": "UNAUTHENTICATED", "message": "bad token"}), False),
        (RestException({"error_code": "PERMISSION_DENIED", "message": "not yours"}), False),
        (MlflowException("a local problem"), False),
        (ConnectionResetError("reset by peer"), True),
        (requests.exceptions.ReadTimeout("slow"), True),
        (ValueError("a bug"), False),
    ],
)
def test_classification(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


def test_http_statuses_and_causes() -> None:
    assert is_transient(http_error(429)) and is_transient(http_error(502))
    assert not is_transient(http_error(403)) and not is_transient(http_error(404))
    try:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError as cause:
            raise RuntimeError("wrapped") from cause
    except RuntimeError as wrapped:
        assert is_transient(wrapped)


def test_fail_fast_unless_transient() -> None:
    with pytest.raises(ConnectionResetError):
        with fail_fast_unless_transient("MLflow: something"):
            raise ConnectionResetError("reset")
    with pytest.raises(Failure) as raised:
        with fail_fast_unless_transient("MLflow: load model models:/m/9"):
            raise RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Model version 9 not found"})
    assert raised.value.allow_retries is False
    assert raised.value.description == (
        "MLflow: load model models:/m/9 failed with a permanent error (not retried): "
        "RestException RESOURCE_DOES_NOT_EXIST: RESOURCE_DOES_NOT_EXIST: Model version 9 not found"
    )


def test_missing_model_version_is_a_permanent_failure(test_spec: LoadedSpec) -> None:
    registry = build_model_registry(test_spec)
    missing = ModelVersionRef(registry.model_name, "999", "no-run")
    with pytest.raises(Failure) as raised:
        registry.load_model(missing)
    assert raised.value.allow_retries is False
    assert f"load model models:/{registry.model_name}/999 failed with a permanent error" in raised.value.description


# The retry policy on real steps, against a real MLflow server. ----------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowGateway]:
    with mlflow_gateway(tmp_path_factory.mktemp("mlflow_server"), TOKEN) as running:
        yield running


def edit_yaml(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))


def gateway_spec(conf_dir: Path, project_dir: Path, tabml_home: Path, url: str) -> LoadedSpec:
    """The test deployment with MLflow behind the gateway and short retry delays."""
    number = next(_model_numbers)
    edit_yaml(
        conf_dir / "profiles" / "test.yaml",
        lambda profile: profile["mlflow"].update(
            tracking_uri=url, registry_uri=url,
            experiment_name=f"tabml-retries-{number}", model_name=f"tabml_retries_{number}",
        ),
    )
    # Pipeline overrides per deployment live in the project's own profile.
    edit_yaml(
        project_dir / "profiles" / "test.yaml",
        lambda profile: profile.setdefault("pipeline_overrides", {}).update(
            retries={"max_retries": 3, "delay_seconds": 0.2}
        ),
    )
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    assert spec.pipeline.retries.delay_seconds == 0.2
    return spec


@pytest.fixture
def gateway_env(monkeypatch: pytest.MonkeyPatch, gateway: MlflowGateway) -> MlflowGateway:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    # MLflow's client retries by itself for minutes; here Dagster's step retry is under test.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return gateway


# Op and step keys of a project's assets carry its name: nyc_taxi__<asset>.
def step_key(asset: str) -> str:
    return f"nyc_taxi__{asset}"


def step_retries(result: ExecuteInProcessResult, step: str) -> int:
    return sum(1 for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY" and e.step_key == step)


def step_failure(result: ExecuteInProcessResult, step: str) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_key == step:
            user = event.step_failure_data.user_failure_data
            return user.description if user and user.description else event.step_failure_data.error.message
    raise AssertionError(f"step {step} did not fail")


def no_run_left_running(registry: ModelRegistry) -> None:
    client = registry.client()
    experiment = client.get_experiment_by_name(registry.experiment_name)
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")
    assert runs == []


def test_transient_errors_are_retried_then_succeed_and_permanent_ones_fail_at_once(
    gateway_env: MlflowGateway, conf_dir: Path, project_dir: Path, tabml_home: Path,
    instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = gateway_spec(conf_dir, project_dir, tabml_home, gateway_env.url)
    keys = spec.keys
    defs = build_definitions(spec)
    plan = seed_demo(defs, spec, instance, TODAY)
    scoring_key = plan.scoring_day.isoformat()

    # Two 503s: the step is retried twice with backoff and then scores the day.
    before = len(gateway_env.state.statuses())
    gateway_env.state.fail_next(2, status=503)
    result = run_selection(defs, instance, [keys.batch_predictions], partition_key=scoring_key, raise_on_error=False)
    assert result.success
    assert step_retries(result, step_key("batch_predictions")) == 2
    assert gateway_env.state.statuses()[before : before + 2] == [503, 503]
    assert build_partition_store(spec).exists(keys.batch_predictions, scoring_key)

    # A 429 on the promotion step is retried the same way.
    gateway_env.state.fail_next(1, status=429)
    result = run_selection(
        defs, instance, [keys.champion_model], partition_key=plan.training_day.isoformat(), raise_on_error=False
    )
    assert result.success and step_retries(result, step_key("champion_model")) == 1

    # Bad credentials are permanent: no retry, and the message says what MLflow answered.
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "a-wrong-token")
    result = run_selection(defs, instance, [keys.batch_predictions], partition_key=scoring_key, raise_on_error=False)
    assert not result.success
    assert step_retries(result, step_key("batch_predictions")) == 0
    message = step_failure(result, step_key("batch_predictions"))
    assert "failed with a permanent error (not retried)" in message and "UNAUTHENTICATED" in message
    assert "a-wrong-token" not in message

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    no_run_left_running(build_model_registry(spec))


def test_a_model_without_champion_fails_at_once(
    gateway_env: MlflowGateway, conf_dir: Path, project_dir: Path, tabml_home: Path,
    instance: DagsterInstance,
) -> None:
    spec = gateway_spec(conf_dir, project_dir, tabml_home, gateway_env.url)
    keys = spec.keys
    defs = build_definitions(spec)
    key = plan_seed(spec, TODAY).scoring_day.isoformat()
    run_selection(defs, instance, keys.assets("raw_data", "features"), partition_key=key)
    # One transient error first: retried, then the permanent "no champion" ends the step.
    gateway_env.state.fail_next(1, status=503)
    result = run_selection(defs, instance, [keys.batch_predictions], partition_key=key, raise_on_error=False)
    assert not result.success
    assert step_retries(result, step_key("batch_predictions")) == 1
    assert f"registered model '{spec.profile.mlflow.model_name}' has no 'champion' alias yet" in step_failure(
        result, step_key("batch_predictions")
    )
