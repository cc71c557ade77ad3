"""One resource table per deployment, chosen once by TABML_DEPLOYMENT (default dev).

The deployment's shared resources (storage, the step launcher, Spark, the notifier) are keyed
once; each project adds its own data source, MLflow registry and dagster-mlflow tracking resource
under keys named for it.
"""

from __future__ import annotations

from typing import Any

from dagster import EnvVar, ResourceDefinition

from tabml_assets.resources.data_sources import (
    DataSource,
    DemoSource,
    LandingFolderSource,
    StepsLoaderSource,
)
from tabml_assets.resources.mlflow_tracking import build_mlflow_tracking
from tabml_assets.resources.model_registry import ModelRegistry
from tabml_assets.resources.notifier import LogNotifier, Notifier, SlackWebhookNotifier
from tabml_assets.resources.spark import SparkSessionResource
from tabml_assets.resources.storage import PartitionedParquetIOManager, PartitionStore
from tabml_assets.spec import Deployment, LoadedSpec, SpecError


def build_data_source(spec: LoadedSpec) -> DataSource:
    source = spec.profile.data_source
    dataset = spec.pipeline.dataset.model_dump_json()
    module = spec.steps.module_name
    if source.kind in ("demo", "steps"):
        hook = "demo_rows" if source.kind == "demo" else "load_day"
        if module is None or getattr(spec.steps, hook) is None:
            raise SpecError(
                f"{spec.profile_file}: key `data_source.kind`: {source.kind!r} needs `{hook}` in "
                f"{spec.name}'s steps module ({spec.steps.file or 'the spec names none: add `steps`'}), "
                "found none"
            )
        if source.kind == "demo":
            return DemoSource(dataset_spec=dataset, steps_module=module, rows_per_day=source.demo_rows_per_day)
        return StepsLoaderSource(dataset_spec=dataset, steps_module=module)
    if source.kind == "landing_folder":
        return LandingFolderSource(dataset_spec=dataset, folder=str(spec.landing_folder()))
    from tabml_assets.resources.databricks_table import DatabricksTableSource

    return DatabricksTableSource(dataset_spec=dataset, table=spec.source_table())


def build_model_registry(spec: LoadedSpec) -> ModelRegistry:
    mlflow = spec.profile.mlflow
    return ModelRegistry(
        tracking_uri=spec.resolve_local(mlflow.tracking_uri),
        registry_uri=spec.resolve_local(mlflow.registry_uri),
        experiment_name=mlflow.experiment_name,
        model_name=mlflow.model_name,
        artifact_location=spec.resolve_local(mlflow.artifact_location) if mlflow.artifact_location else None,
        # On the disk of wherever the steps run (TABML_HOME): versions are downloaded once.
        model_cache_dir=str(spec.tabml_home / "model_cache"),
    )


def build_project_mlflow(spec: LoadedSpec) -> ResourceDefinition:
    """dagster-mlflow's resource on the registry's experiment, for a team's own steps."""
    mlflow = spec.profile.mlflow
    return build_mlflow_tracking(
        tracking_uri=spec.resolve_local(mlflow.tracking_uri),
        experiment_name=mlflow.experiment_name,
        artifact_location=spec.resolve_local(mlflow.artifact_location) if mlflow.artifact_location else None,
        project=spec.name,
    )


def build_notifier(spec: LoadedSpec) -> Notifier:
    notifications = spec.profile.notifications
    if notifications.kind == "slack":
        # Resolved when the sensor runs; the URL never appears in config, logs or the UI.
        return SlackWebhookNotifier(webhook_url=EnvVar(notifications.slack_webhook_env_var))
    return LogNotifier()


def build_partition_store(spec: LoadedSpec) -> PartitionStore:
    """The deployment's partition store: the one owner of every partition path, read and write."""
    return PartitionStore(root=spec.resolve_local(spec.profile.storage.root))


def build_project_resources(spec: LoadedSpec) -> dict[str, Any]:
    """The resources one project owns: its data source, its MLflow registry and dagster-mlflow's
    tracking resource on the same experiment."""
    keys = spec.keys
    return {
        keys.source_resource: build_data_source(spec),
        keys.registry_resource: build_model_registry(spec),
        keys.mlflow_resource: build_project_mlflow(spec),
    }


def build_shared_resources(spec: LoadedSpec) -> dict[str, Any]:
    """The deployment's resources every project shares (read from any of its projects' specs)."""
    # One store owns the partition layout; the IO manager and the streaming assets share it.
    store = build_partition_store(spec)
    resources: dict[str, Any] = {
        "partition_store": store,
        "io_manager": PartitionedParquetIOManager(store=store),
        "notifier": build_notifier(spec),
    }
    if spec.profile.databricks is not None:
        from tabml_assets.resources.databricks import build_step_launcher

        # A profile with a `databricks` section runs the heavy assets on a Databricks job cluster.
        resources["step_launcher"] = build_step_launcher(spec)
        # On the cluster, features and scoring run distributed on the cluster's Spark session.
        resources["spark"] = SparkSessionResource()
    else:
        # Without one, every step runs where Dagster runs.
        resources["step_launcher"] = ResourceDefinition.none_resource()
        # No Spark: features and scoring stream partition files through pandas in batches.
        resources["spark"] = ResourceDefinition.none_resource()
    return resources


def build_resources(deployment: Deployment | LoadedSpec) -> dict[str, Any]:
    """The deployment's resource table: shared resources plus each project's own."""
    projects = deployment.projects if isinstance(deployment, Deployment) else [deployment]
    resources = build_shared_resources(projects[0])
    for spec in projects:
        resources.update(build_project_resources(spec))
    return resources
