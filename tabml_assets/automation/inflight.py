"""Which partitions in-flight runs are writing, so automation never starts a second writer.

The run queue already keeps two single-day runs of the same day apart (a concurrency limit on
the `dagster/partition` tag, see infra/dagster/dagster.dev.yaml). A backfill run over a range
carries only its range tags, which a tag limit cannot compare with a day, so the sensors ask
this module and hold a day back while any queued or running run writes it.
"""

from __future__ import annotations

from collections.abc import Iterable

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from tabml_assets.dagster_compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from tabml_assets.utc import days_between

# Runs that may still write: waiting in the queue, starting, running, or being canceled.
UNFINISHED_STATUSES = (
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.SUSPENDED,
    DagsterRunStatus.CANCELING,
)


def days_being_written(
    instance: DagsterInstance, assets: Iterable[AssetKey]
) -> dict[str, str]:
    """Day -> id of a queued or running run that writes one of `assets` for that day."""
    wanted = set(assets)
    busy: dict[str, str] = {}
    for run in instance.get_runs(filters=RunsFilter(statuses=list(UNFINISHED_STATUSES))):
        if run.asset_selection is not None and not (set(run.asset_selection) & wanted):
            continue
        tags = run.tags
        if PARTITION_NAME_TAG in tags:
            days = [tags[PARTITION_NAME_TAG]]
        elif ASSET_PARTITION_RANGE_START_TAG in tags and ASSET_PARTITION_RANGE_END_TAG in tags:
            first, last = tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG]
            days = [day.isoformat() for day in days_between(first, last)]
        else:
            continue
        for day in days:
            busy.setdefault(day, run.run_id)
    return busy
