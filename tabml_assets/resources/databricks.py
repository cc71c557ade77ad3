"""The Databricks side of staging and prod: the step launcher configured from the profile."""

from __future__ import annotations

from typing import Any

from dagster import EnvVar, ResourceDefinition
from dagster_databricks import databricks_pyspark_step_launcher

from tabml_assets.spec import LoadedSpec


def secret_env_name(secret_key: str) -> str:
    return secret_key.upper().replace("-", "_")


def step_launcher_config(spec: LoadedSpec) -> dict[str, Any]:
    """The launcher's config from the profile; host and token come only through EnvVar."""
    databricks = spec.profile.databricks
    if databricks is None:
        raise ValueError(f"{spec.profile_file}: key `databricks`: required for {spec.deployment}, found nothing")
    cluster = databricks.cluster
    if cluster.existing_cluster_id:
        cluster_config: dict[str, Any] = {"existing": cluster.existing_cluster_id}
    else:
        if cluster.autoscale:
            size: dict[str, Any] = {"autoscale": dict(cluster.autoscale)}
        else:
            size = {"num_workers": cluster.num_workers or 1}
        nodes: dict[str, Any] = (
            {"instance_pool_id": cluster.instance_pool_id}
            if cluster.instance_pool_id
            else {"node_types": {"node_type_id": cluster.node_type_id or "i3.xlarge"}}
        )
        cluster_config = {"new": {"spark_version": cluster.spark_version, "size": size, "nodes": nodes}}
    config: dict[str, Any] = {
        "run_config": {
            "run_name": f"tabml-{spec.deployment}",
            "cluster": cluster_config,
            "libraries": [{"whl": databricks.wheel_path}],
            "install_default_libraries": True,
            "timeout_seconds": databricks.timeout_seconds,
        },
        "databricks_host": EnvVar("DATABRICKS_HOST"),
        "databricks_token": EnvVar("DATABRICKS_TOKEN"),
        "env_variables": {"TABML_DEPLOYMENT": spec.deployment, **databricks.env_variables},
        "secrets_to_env_variables": [
            {"name": secret_env_name(key), "key": key, "scope": databricks.secret_scope}
            for key in databricks.secrets
        ],
        "poll_interval_sec": databricks.poll_interval_sec,
        "max_completion_wait_time_seconds": databricks.max_completion_wait_time_seconds,
        "verbose_logs": False,
    }
    if databricks.permissions_group:
        config["permissions"] = {
            "job_permissions": {"CAN_MANAGE_RUN": [{"group_name": databricks.permissions_group}]}
        }
    return config


def build_step_launcher(spec: LoadedSpec) -> ResourceDefinition:
    return databricks_pyspark_step_launcher.configured(step_launcher_config(spec))
