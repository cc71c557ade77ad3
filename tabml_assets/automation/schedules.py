"""Schedules: daily scoring of the day that just closed, and periodic retraining with promotion.

Both target the partitioned asset jobs with the spec's cron strings (UTC). Dagster's
`build_schedule_from_partitioned_job` only accepts the partition cadence itself, so these are
plain schedules that request the partition of the last closed day at tick time.
"""

from __future__ import annotations

import datetime as dt

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from tabml_assets.automation.sensors import TRIGGER_TAG
from tabml_assets.dagster_compat import UnresolvedAssetJobDefinition
from tabml_assets.keys import DAILY_SCORING_SCHEDULE, RETRAINING_SCHEDULE, SCORING_JOB, TRAINING_JOB
from tabml_assets.spec import LoadedSpec


def last_closed_day(tick: dt.datetime) -> str:
    """The UTC day before the tick: the newest partition that exists at tick time."""
    return (tick.astimezone(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def build_partition_schedule(
    name: str,
    job: UnresolvedAssetJobDefinition,
    cron: str,
    status: DefaultScheduleStatus,
    description: str,
) -> ScheduleDefinition:
    @schedule(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=status,
        description=description,
    )
    def partition_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        day = last_closed_day(context.scheduled_execution_time)
        return RunRequest(run_key=f"{name}:{day}", partition_key=day, tags={TRIGGER_TAG: "schedule"})

    return partition_schedule


def build_schedules(
    spec: LoadedSpec, jobs: dict[str, UnresolvedAssetJobDefinition]
) -> list[ScheduleDefinition]:
    automation = spec.pipeline.automation
    status = DefaultScheduleStatus(spec.profile.schedules.default_status)
    keys = spec.keys
    return [
        build_partition_schedule(
            keys.schedule(DAILY_SCORING_SCHEDULE),
            jobs[SCORING_JOB],
            automation.scoring_cron,
            status,
            "Ingest, engineer features and score the day that just closed.",
        ),
        build_partition_schedule(
            keys.schedule(RETRAINING_SCHEDULE),
            jobs[TRAINING_JOB],
            automation.retraining_cron,
            status,
            "Train on the window ending with the day that just closed, evaluate, gate and promote.",
        ),
    ]
