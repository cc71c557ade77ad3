"""dagster-mlflow's `mlflow_tracking` resource on a project's experiment, for a team's own steps.

A team's op or asset in this code location that requires `<project>_mlflow` and logs with
`context.resources.<project>_mlflow.log_metric(...)` writes to the same MLflow run as tabml's
steps of that Dagster run: the parent run tagged `dagster_run_id` (model_registry.py), which
dagster-mlflow finds by that tag, or starts and tags itself, and tabml's steps then find.

It is dagster-mlflow's resource (its config, its `MlFlow` object proxying the `mlflow` module)
with two additions, both where dagster-mlflow falls short with tabml:

- the experiment is created first, with the deployment's artifact location: dagster-mlflow's
  `mlflow.set_experiment` would create it with MLflow's default, `./mlruns` under the working
  directory;
- at teardown the run is closed. dagster-mlflow ends it only in its `end_mlflow_on_run_finished`
  hook, which needs the resource under the key `mlflow` and ends the run after the job's last op
  in topological order only; otherwise the parent stays RUNNING. Here it is settled like tabml's
  own steps settle it: left RUNNING while a tabml step's run under it is open, FAILED when a step
  of the Dagster run failed, else FINISHED.

The resource works through MLflow's fluent, process-wide state (tracking URI, experiment, the
active run), so tabml's own steps never require it. No secret belongs in its config: its `env`
field is copied into `os.environ` and shown in the run config.

mlflow and dagster-mlflow are imported when the resource starts, not with this module (about a
second every process loading the code location would otherwise pay), so the config schema is
dagster-mlflow's, spelled out here; test_lazy_imports.py checks it against the installed one.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from dagster import (
    BetaWarning,
    DagsterEventType,
    Field,
    InitResourceContext,
    Noneable,
    Permissive,
    ResourceDefinition,
    StringSource,
    resource,
)

from tabml_assets.resources.model_registry import (
    KILLED,
    ModelRegistry,
    current_parent,
    settle_parent_run,
)

# dagster_mlflow.resources.CONFIG_SCHEMA (dagster-mlflow 0.29.27).
DAGSTER_MLFLOW_CONFIG_SCHEMA = {
    "experiment_name": Field(StringSource, is_required=True, description="MlFlow experiment name."),
    "mlflow_tracking_uri": Field(
        Noneable(StringSource), default_value=None, is_required=False, description="MlFlow tracking server uri."
    ),
    "parent_run_id": Field(
        Noneable(str), default_value=None, is_required=False,
        description="Mlflow run ID of parent run if this is a nested run.",
    ),
    "mlflow_run_id": Field(
        Noneable(str), default_value=None, is_required=False, description="Mlflow run ID to use for this run."
    ),
    "env": Field(Permissive(), description="Environment variables for mlflow setup."),
    "env_to_tag": Field(
        Noneable(list), default_value=None, is_required=False,
        description="List of environment variables to log as tags in mlflow.",
    ),
    "extra_tags": Field(Permissive(), description="Any extra key-value tags to log to mlflow."),
}


def dagster_mlflow_resource() -> ResourceDefinition:
    """dagster-mlflow's `mlflow_tracking`, imported on first use."""
    # Its hook module warns at import that it is beta, in every process that starts the
    # resource (a worker printing its run id on stdout among them); we know.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        from dagster_mlflow import mlflow_tracking
    return mlflow_tracking


def _step_failed(context: InitResourceContext) -> bool:
    if context.run is None or context.instance is None:
        return False
    # In this process's steps or, with the multiprocess executor, any step ended before.
    return bool(context.instance.all_logs(context.run.run_id, of_type=DagsterEventType.STEP_FAILURE))


class OutsideADagsterRun:
    """Stands in for the resource where there is no Dagster run; any use says why it fails."""

    def __init__(self, experiment_name: str) -> None:
        self._experiment_name = experiment_name

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"mlflow_tracking on experiment {self._experiment_name!r}: `{name}` needs the MLflow "
            "run of a Dagster run, and this resource was built outside one (a sensor, schedule "
            "or build_resources); use it from an op or asset"
        )


@resource(
    config_schema={
        **DAGSTER_MLFLOW_CONFIG_SCHEMA,
        "artifact_location": Field(
            Noneable(StringSource), default_value=None, is_required=False,
            description="Artifact location of the experiment where this resource creates it.",
        ),
    },
    description="dagster-mlflow's mlflow_tracking on the project's experiment: writes to the "
    "parent MLflow run of this Dagster run, the one tabml's steps nest their runs under.",
)
def tabml_mlflow_tracking(context: InitResourceContext) -> Iterator[Any]:
    config = context.resource_config
    if context.run is None:
        # Built outside a Dagster run (a sensor given every resource, `build_resources`): there
        # is no run to write to, and dagster-mlflow would fail on the missing run's job name.
        yield OutsideADagsterRun(config["experiment_name"])
        return
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    tracking_uri = config.get("mlflow_tracking_uri") or mlflow.get_tracking_uri()
    # The experiment as tabml's registry creates it (ModelRegistry.experiment_id).
    ModelRegistry(
        tracking_uri=tracking_uri, registry_uri=tracking_uri,
        experiment_name=config["experiment_name"], model_name="",
        artifact_location=config.get("artifact_location"),
    ).experiment_id()
    dagster_mlflow = dagster_mlflow_resource().resource_fn(context)  # type: ignore[call-arg]
    mlf = next(dagster_mlflow)
    started = mlflow.active_run()
    # dagster-mlflow keeps mlflow_run_id None when it started the run itself.
    run_id: str = mlf.mlflow_run_id or (started.info.run_id if started is not None else "")
    mlf.mlflow_run_id = run_id
    try:
        yield mlf
    finally:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            # Pops the process's active run; the status is settled below.
            mlflow.end_run()
        try:
            client = MlflowClient(tracking_uri=tracking_uri)
            kept = current_parent(client, run_id)
            if kept != run_id:
                # A tabml step created the parent at the same time and retired this one.
                client.set_terminated(run_id, KILLED)
            settle_parent_run(client, mlf.experiment.experiment_id, kept, failed=_step_failed(context))
        except MlflowException as exc:
            context.log.warning(f"MLflow at {tracking_uri}: could not close run {run_id}: {exc}")  # type: ignore[union-attr]
        # dagster-mlflow's own teardown (its cleanup_on_error).
        for _ in dagster_mlflow:
            pass


def build_mlflow_tracking(
    tracking_uri: str, experiment_name: str, artifact_location: str | None, project: str
) -> ResourceDefinition:
    """The project's `<project>_mlflow`: its experiment on the deployment's tracking server
    (`databricks` in staging/prod, credentials from the environment, never from config)."""
    return tabml_mlflow_tracking.configured(
        {
            "experiment_name": experiment_name,
            "mlflow_tracking_uri": tracking_uri,
            "artifact_location": artifact_location,
            "extra_tags": {"tabml.project": project},
        }
    )
