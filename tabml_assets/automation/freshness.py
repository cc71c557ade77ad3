"""Freshness: how old the model and the predictions may get, from the spec's automation section.

Dagster's `FreshnessPolicy` judges an asset as a whole (its latest materialization), so a
backfill of an old prediction day would make a missing yesterday look fresh. The per-partition
check on batch_predictions asks instead "is the partition of the day that just closed there?".
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Sequence

from dagster import (
    AssetChecksDefinition,
    AssetsDefinition,
    AssetSpec,
    DefaultSensorStatus,
    FreshnessPolicy,
    SensorDefinition,
    SupersessionWarning,
    build_sensor_for_freshness_checks,
    build_time_partition_freshness_checks,
    map_asset_specs,
)

from tabml_assets.dagster_compat import get_smallest_cron_interval
from tabml_assets.keys import PREDICTIONS_FRESHNESS_SENSOR, PipelineKeys
from tabml_assets.spec import AutomationSpec, LoadedSpec


def model_freshness_policy(automation: AutomationSpec) -> FreshnessPolicy:
    """The trained model warns after `model_freshness_warn_hours` and fails after `..._fail_hours`."""
    return FreshnessPolicy.time_window(
        fail_window=dt.timedelta(hours=automation.model_freshness_fail_hours),
        warn_window=dt.timedelta(hours=automation.model_freshness_warn_hours),
    )


def predictions_freshness_policy(automation: AutomationSpec) -> FreshnessPolicy:
    """Predictions must have been written within one deadline period before each deadline."""
    period = get_smallest_cron_interval(automation.predictions_deadline_cron)
    return FreshnessPolicy.cron(
        deadline_cron=automation.predictions_deadline_cron, lower_bound_delta=period, timezone="UTC"
    )


def with_freshness_policies(
    assets: Sequence[AssetsDefinition], automation: AutomationSpec, keys: PipelineKeys
) -> list[AssetsDefinition]:
    """The same assets, with freshness policies on trained_model and batch_predictions."""
    policies = {
        keys.trained_model: model_freshness_policy(automation),
        keys.batch_predictions: predictions_freshness_policy(automation),
    }

    def attach(spec: AssetSpec) -> AssetSpec:
        policy = policies.get(spec.key)
        return spec.replace_attributes(freshness_policy=policy) if policy else spec

    return list(map_asset_specs(attach, assets))


def build_predictions_freshness_checks(spec: LoadedSpec) -> list[AssetChecksDefinition]:
    """Per-partition check: after each deadline, the day that just closed must be scored."""
    # Superseded by FreshnessPolicy for whole assets, which cannot see a single missing day.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupersessionWarning)
        return list(
            build_time_partition_freshness_checks(
                assets=[spec.keys.batch_predictions],
                deadline_cron=spec.pipeline.automation.predictions_deadline_cron,
                timezone="UTC",
            )
        )


def build_predictions_freshness_sensor(
    spec: LoadedSpec, checks: Sequence[AssetChecksDefinition]
) -> SensorDefinition:
    """Runs the per-partition freshness check whenever it could have become overdue."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupersessionWarning)
        return build_sensor_for_freshness_checks(
            freshness_checks=checks,
            name=spec.keys.sensor(PREDICTIONS_FRESHNESS_SENSOR),
            minimum_interval_seconds=spec.profile.sensors.minimum_interval_seconds,
            default_status=DefaultSensorStatus(spec.profile.sensors.default_status),
        )
