"""The workspace emulator answers databricks-sdk as Databricks does, and its cluster really runs
the submitted Python task. Driven through the same clients the step launcher uses."""

from __future__ import annotations

import io
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster_databricks.databricks import DatabricksClient
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import DatabricksError, PermissionDenied, Unauthenticated
from databricks.sdk.service import iam, jobs

from tabml_assets_tests.databricks_emulator import DatabricksWorkspaceEmulator, running_emulator

TOKEN = "dapi-test-token"
SCOPE = {"tabml-staging": {"databricks-token": TOKEN, "mlflow-password": "s3cr3t-value"}}


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[DatabricksWorkspaceEmulator]:
    with running_emulator(
        tmp_path / "workspace", token=TOKEN, oauth_clients={"sp-client": "sp-secret"}, secret_scopes=SCOPE
    ) as running:
        yield running


def client_for(emulator: DatabricksWorkspaceEmulator) -> DatabricksClient:
    return DatabricksClient(host=emulator.host, token=TOKEN)


def submit_script(emulator: DatabricksWorkspaceEmulator, source: str, parameters: list[str], timeout: int = 0) -> int:
    """Upload a Python file to DBFS and submit it as the step launcher does."""
    client = client_for(emulator)
    client.put_file(io.BytesIO(textwrap.dedent(source).encode()), "dbfs:///tasks/task.py", overwrite=True)
    waiter = client.workspace_client.jobs.submit(
        run_name="emulator test",
        timeout_seconds=timeout or None,
        tasks=[jobs.SubmitTask.from_dict({
            "task_key": "dagster-task",
            "new_cluster": {"spark_version": "15.4.x-scala2.12", "node_type_id": "i3.xlarge", "num_workers": 1},
            "libraries": [{"whl": "/Volumes/x/y/z/tabml-0.1.0-py3-none-any.whl"}],
            "spark_python_task": {"python_file": "dbfs:///tasks/task.py", "parameters": parameters},
        })],
    )
    return waiter.bind()["run_id"]


def wait_terminated(emulator: DatabricksWorkspaceEmulator, run_id: int, timeout: float = 60) -> jobs.Run:
    client = client_for(emulator).workspace_client
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.jobs.get_run(run_id)
        assert run.state is not None
        if run.state.life_cycle_state in (jobs.RunLifeCycleState.TERMINATED, jobs.RunLifeCycleState.INTERNAL_ERROR):
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not terminate within {timeout}s")


def test_dbfs_round_trip_in_blocks_and_missing_file(emulator: DatabricksWorkspaceEmulator) -> None:
    client = client_for(emulator)
    payload = bytes(range(256)) * 20_000  # 5 MB: several 1 MB blocks each way
    client.put_file(io.BytesIO(payload), "dbfs:///dagster_staging/run/step/blob.bin", overwrite=True)
    assert emulator.local_path("/dbfs/dagster_staging/run/step/blob.bin").read_bytes() == payload
    assert client.read_file("dbfs:///dagster_staging/run/step/blob.bin") == payload
    assert len(emulator.calls("POST", "/api/2.0/dbfs/add-block")) == 5

    with pytest.raises(DatabricksError) as missing:
        client.read_file("dbfs:///dagster_staging/run/step/absent.pkl")
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert "/dagster_staging/run/step/absent.pkl" in str(missing.value)

    with pytest.raises(DatabricksError) as exists:
        client.put_file(io.BytesIO(b"x"), "dbfs:///dagster_staging/run/step/blob.bin", overwrite=False)
    assert exists.value.error_code == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(DatabricksError, match="escapes DBFS"):
        client.read_file("dbfs:///../outside")


def test_token_and_oauth_service_principal(emulator: DatabricksWorkspaceEmulator) -> None:
    with pytest.raises((Unauthenticated, PermissionDenied)):
        WorkspaceClient(host=emulator.host, token="dapi-wrong").dbfs.read("/nothing")
    # OAuth M2M: the SDK discovers the token endpoint, trades client credentials for a token.
    oauth = WorkspaceClient(host=emulator.host, client_id="sp-client", client_secret="sp-secret")
    with pytest.raises(DatabricksError) as missing:
        oauth.dbfs.read("/nothing")
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"  # authenticated, then served
    assert [r.status for r in emulator.calls("POST", "/oidc/v1/token")] == [200]
    with pytest.raises(ValueError, match="invalid_client"):
        WorkspaceClient(host=emulator.host, client_id="sp-client", client_secret="wrong").dbfs.read("/nothing")


def test_sdk_retries_throttling_and_unavailable_but_not_internal_errors(emulator: DatabricksWorkspaceEmulator) -> None:
    client = client_for(emulator)
    client.put_file(io.BytesIO(b"hello"), "dbfs:///f.txt", overwrite=True)
    emulator.inject_http_fault("GET", "/api/2.0/dbfs/read", 429, times=2)
    emulator.inject_http_fault("GET", "/api/2.0/dbfs/read", 503, times=1)
    assert client.read_file("dbfs:///f.txt") == b"hello"
    assert [(r.status, r.injected) for r in emulator.calls("GET", "/api/2.0/dbfs/read")] == [
        (429, True), (429, True), (503, True), (200, False),
    ]
    # A plain 500 is not transient to databricks-sdk: the caller sees it at once.
    emulator.inject_http_fault("GET", "/api/2.0/dbfs/read", 500, message="boom in the control plane")
    with pytest.raises(DatabricksError, match="boom in the control plane"):
        client.read_file("dbfs:///f.txt")


def test_driver_runs_the_task_with_dbutils_and_dbfs_paths(emulator: DatabricksWorkspaceEmulator) -> None:
    script = """
        import os, sys
        # The globals a Databricks driver gives a spark_python_task.
        token = dbutils.secrets.get(scope="tabml-staging", key="databricks-token")
        os.environ["DATABRICKS_TOKEN"] = token
        assert type(sc).__name__ == "LazySparkContext"
        with open(sys.argv[1], "w") as out:
            out.write(f"pid={os.getpid()} argv={sys.argv[1:]}")
    """
    run_id = submit_script(emulator, script, ["/dbfs/tasks/result.txt", "plain-arg"])
    run = wait_terminated(emulator, run_id)
    assert run.state.result_state == jobs.RunResultState.SUCCESS, emulator.runs[run_id].error
    result = emulator.local_path("dbfs:/tasks/result.txt").read_text()
    emulated = emulator.runs[run_id]
    assert f"pid={emulated.driver_pid}" in result and "plain-arg" in result
    assert emulated.report is not None
    assert emulated.report["secrets_served"] == ["tabml-staging/databricks-token"]
    assert emulated.report["env_from_secrets"] == ["DATABRICKS_TOKEN"]
    assert run.tasks[0].cluster_instance.cluster_id == emulated.cluster_id
    cluster = client_for(emulator).workspace_client.clusters.get(emulated.cluster_id)
    assert cluster.spark_version == "15.4.x-scala2.12"


def test_failed_task_reports_the_error_and_unknown_secret_fails(emulator: DatabricksWorkspaceEmulator) -> None:
    run_id = submit_script(emulator, "raise RuntimeError('partition 2026-03-01 has no rows')", [])
    run = wait_terminated(emulator, run_id)
    assert run.state.result_state == jobs.RunResultState.FAILED
    output = client_for(emulator).workspace_client.jobs.get_run_output(run_id)
    assert output.error == "RuntimeError: partition 2026-03-01 has no rows"

    run_id = submit_script(emulator, "dbutils.secrets.get(scope='tabml-staging', key='absent')", [])
    wait_terminated(emulator, run_id)
    assert "Secret does not exist with scope: tabml-staging and key: absent" in emulator.runs[run_id].error


def test_injected_cluster_failure_slow_run_cancel_and_timeout(emulator: DatabricksWorkspaceEmulator) -> None:
    emulator.fail_next_run("Cluster terminated. Reason: Driver unreachable")
    run = wait_terminated(emulator, submit_script(emulator, "pass", []))
    assert run.state.life_cycle_state == jobs.RunLifeCycleState.INTERNAL_ERROR
    assert run.state.state_message == "Cluster terminated. Reason: Driver unreachable"

    # A long task: cancelling kills the driver's process group and ends the run CANCELED.
    run_id = submit_script(emulator, "import time\ntime.sleep(120)", [])
    emulator.wait_for(lambda: emulator.runs[run_id].driver_pid is not None, 30, "the driver to start")
    client_for(emulator).workspace_client.jobs.cancel_run(run_id)
    run = wait_terminated(emulator, run_id, timeout=15)
    assert run.state.result_state == jobs.RunResultState.CANCELED
    assert emulator.cancel_calls == [run_id]

    # A task that outlives the run's timeout_seconds ends TIMEDOUT.
    run_id = submit_script(emulator, "import time\ntime.sleep(120)", [], timeout=1)
    run = wait_terminated(emulator, run_id, timeout=30)
    assert run.state.result_state == jobs.RunResultState.TIMEDOUT

    # A slow run: RUNNING, but the task has not started yet; cancelling it never starts it.
    emulator.task_start_delay_seconds = 60
    run_id = submit_script(emulator, "raise SystemExit('must not run')", [])
    assert client_for(emulator).workspace_client.jobs.get_run(run_id).state.life_cycle_state == jobs.RunLifeCycleState.RUNNING
    client_for(emulator).workspace_client.jobs.cancel_run(run_id)
    run = wait_terminated(emulator, run_id, timeout=5)
    assert run.state.result_state == jobs.RunResultState.CANCELED
    assert emulator.runs[run_id].driver_pid is None


def test_permissions_update_is_recorded(emulator: DatabricksWorkspaceEmulator) -> None:
    run_id = submit_script(emulator, "pass", [])
    client = client_for(emulator).workspace_client
    job_id = client.jobs.get_run(run_id).job_id
    client.permissions.update(
        "jobs", str(job_id),
        access_control_list=[iam.AccessControlRequest(group_name="ml-engineers", permission_level=iam.PermissionLevel.CAN_MANAGE_RUN)],
    )
    assert emulator.permission_updates == [
        ("jobs", str(job_id), [{"group_name": "ml-engineers", "permission_level": "CAN_MANAGE_RUN"}])
    ]
    wait_terminated(emulator, run_id)
