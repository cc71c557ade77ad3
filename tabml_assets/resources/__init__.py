"""One resource table per deployment, chosen once by TABML_DEPLOYMENT (default dev)."""

from __future__ import annotations

from typing import Any

from dagster import ResourceDefinition

from tabml_assets.resources.data_sources import DemoTripSource, LandingFolderSource, TripSource
from tabml_assets.resources.model_registry import ModelRegistry
from tabml_assets.resources.spark import SparkSessionResource
from tabml_assets.resources.storage import PartitionedParquetIOManager
from tabml_assets.spec import LoadedSpec


def build_trip_source(spec: LoadedSpec) -> TripSource:
    source = spec.profile.data_source
    if source.kind == "demo":
        return DemoTripSource(rows_per_day=source.demo_rows_per_day)
    if source.kind == "landing_folder":
        return LandingFolderSource(folder=spec.resolve_local(source.landing_folder))
    from tabml_assets.resources.databricks_table import DatabricksTableSource

    return DatabricksTableSource(table=source.table)


def build_model_registry(spec: LoadedSpec) -> ModelRegistry:
    mlflow = spec.profile.mlflow
    return ModelRegistry(
        tracking_uri=spec.resolve_local(mlflow.tracking_uri),
        registry_uri=spec.resolve_local(mlflow.registry_uri),
        experiment_name=mlflow.experiment_name,
        model_name=mlflow.model_name,
        artifact_location=spec.resolve_local(mlflow.artifact_location) if mlflow.artifact_location else None,
    )


def build_resources(spec: LoadedSpec) -> dict[str, Any]:
    resources: dict[str, Any] = {
        "io_manager": PartitionedParquetIOManager(root=spec.resolve_local(spec.profile.storage.root)),
        "trip_source": build_trip_source(spec),
        "model_registry": build_model_registry(spec),
    }
    if spec.deployment in ("staging", "prod"):
        from tabml_assets.resources.databricks import build_step_launcher

        # In staging and prod the heavy assets run on a Databricks job cluster.
        resources["step_launcher"] = build_step_launcher(spec)
        # On the cluster, features and scoring run distributed on the cluster's Spark session.
        resources["spark"] = SparkSessionResource()
    else:
        # dev and test run every step in this process.
        resources["step_launcher"] = ResourceDefinition.none_resource()
        # No Spark: features and scoring stream partition files through pandas in batches.
        resources["spark"] = ResourceDefinition.none_resource()
    return resources
