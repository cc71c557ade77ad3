"""The only place that assembles Definitions: the deployment is read once, here.

One code location holds every pipeline the deployment lists: each project's assets, checks,
jobs, schedules and sensors carry its name, and its data source and MLflow registry are its
own resources beside the deployment's shared ones.
"""

from __future__ import annotations

import warnings

from dagster import (
    BetaWarning,
    Definitions,
    ExecutorDefinition,
    in_process_executor,
    multiprocess_executor,
)

from tabml_assets.assets import build_asset_checks, build_assets
from tabml_assets.automation import build_automation, build_run_failure_sensor
from tabml_assets.resources import build_resources
from tabml_assets.spec import Deployment, LoadedSpec, load_deployment_from_env

# tabml relies on BackfillPolicy and allow_nonexistent_upstream_partitions on purpose; their
# beta notices would otherwise greet every user on every load.
warnings.filterwarnings("ignore", category=BetaWarning)

# The profile's `executor` key.
EXECUTORS: dict[str, ExecutorDefinition] = {
    "in_process": in_process_executor,
    "multiprocess": multiprocess_executor,
}


def build_definitions(deployment: Deployment | LoadedSpec) -> Definitions:
    """Definitions for every project of a deployment (or for one project's spec alone)."""
    projects = deployment.projects if isinstance(deployment, Deployment) else [deployment]
    first = projects[0]
    # The deployment's profile chooses; projects cannot override it, so the first one's is it.
    executor = EXECUTORS[first.profile.executor]
    assets, checks, jobs, schedules, sensors = [], [], [], [], []
    for spec in projects:
        automation = build_automation(spec, build_assets(spec))
        assets += automation.assets
        checks += [*automation.asset_checks, *build_asset_checks(spec)]
        jobs += automation.jobs
        schedules += automation.schedules
        sensors += automation.sensors
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=[*sensors, build_run_failure_sensor(first.profile)],
        resources=build_resources(deployment),
        executor=executor,
    )


def load_definitions() -> Definitions:
    return build_definitions(load_deployment_from_env())


defs = load_definitions()
