"""Automation: asset jobs, schedules, sensors, freshness and the notifier they alert through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetChecksDefinition,
    AssetsDefinition,
    EnvVar,
    ScheduleDefinition,
    SensorDefinition,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from tabml_assets.automation.freshness import (
    build_predictions_freshness_checks,
    build_predictions_freshness_sensor,
    with_freshness_policies,
)
from tabml_assets.automation.jobs import build_jobs
from tabml_assets.automation.schedules import build_schedules
from tabml_assets.automation.sensors import build_sensors
from tabml_assets.resources.notifier import LogNotifier, Notifier, SlackWebhookNotifier
from tabml_assets.spec import LoadedSpec


def build_notifier(spec: LoadedSpec) -> Notifier:
    notifications = spec.profile.notifications
    if notifications.kind == "slack":
        # Resolved when the sensor runs; the URL never appears in config, logs or the UI.
        return SlackWebhookNotifier(webhook_url=EnvVar(notifications.slack_webhook_env_var))
    return LogNotifier()


@dataclass(frozen=True)
class Automation:
    """Everything definitions.py registers besides the assets themselves."""

    assets: list[AssetsDefinition]
    asset_checks: list[AssetChecksDefinition]
    jobs: list[UnresolvedAssetJobDefinition]
    schedules: list[ScheduleDefinition]
    sensors: list[SensorDefinition]
    resources: dict[str, Any]


def build_automation(spec: LoadedSpec, assets: list[AssetsDefinition]) -> Automation:
    """Freshness policies on `assets`, plus the jobs, schedules, sensors and checks around them."""
    jobs = build_jobs()
    by_name = {job.name: job for job in jobs}
    freshness_checks = build_predictions_freshness_checks(spec)
    return Automation(
        assets=with_freshness_policies(assets, spec.pipeline.automation),
        asset_checks=freshness_checks,
        jobs=jobs,
        schedules=build_schedules(spec, by_name),
        sensors=[*build_sensors(spec, by_name), build_predictions_freshness_sensor(spec, freshness_checks)],
        resources={"notifier": build_notifier(spec)},
    )
