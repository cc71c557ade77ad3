"""Automation: asset jobs, schedules, sensors, freshness and the notifier they alert through."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import (
    AssetChecksDefinition,
    AssetsDefinition,
    JobDefinition,
    ScheduleDefinition,
    SensorDefinition,
)

from tabml_assets.automation.freshness import (
    build_predictions_freshness_checks,
    build_predictions_freshness_sensor,
    with_freshness_policies,
)
from tabml_assets.automation.jobs import build_jobs
from tabml_assets.automation.lineage import (
    build_scoring_lineage_sensor,
    build_shadow_promotion_sensor,
)
from tabml_assets.automation.rollback import build_rollback_job
from tabml_assets.automation.schedules import build_schedules
from tabml_assets.automation.sensors import build_run_failure_sensor, build_sensors
from tabml_assets.dagster_compat import UnresolvedAssetJobDefinition
from tabml_assets.spec import LoadedSpec, Profile

__all__ = ["Automation", "Profile", "build_automation", "build_run_failure_sensor"]


@dataclass(frozen=True)
class Automation:
    """Everything definitions.py registers besides the assets themselves."""

    assets: list[AssetsDefinition]
    asset_checks: list[AssetChecksDefinition]
    jobs: list[UnresolvedAssetJobDefinition | JobDefinition]
    schedules: list[ScheduleDefinition]
    sensors: list[SensorDefinition]


def build_automation(spec: LoadedSpec, assets: list[AssetsDefinition]) -> Automation:
    """Freshness policies on one pipeline's `assets`, plus its jobs, schedules, sensors and checks."""
    by_name = build_jobs(spec.keys)
    freshness_checks = build_predictions_freshness_checks(spec)
    lifecycle_sensors = [build_scoring_lineage_sensor(spec)]
    if spec.pipeline.shadow.promote_after_days:
        lifecycle_sensors.append(build_shadow_promotion_sensor(spec))
    return Automation(
        assets=with_freshness_policies(assets, spec.pipeline.automation, spec.keys),
        asset_checks=freshness_checks,
        jobs=[*by_name.values(), build_rollback_job(spec)],
        schedules=build_schedules(spec, by_name),
        sensors=[
            *build_sensors(spec, by_name),
            build_predictions_freshness_sensor(spec, freshness_checks),
            *lifecycle_sensors,
        ],
    )
