"""Seed the demo so the UI is not empty: for every project of the deployment, land its demo files,
ingest the training window, train, evaluate, promote and score the latest day.
`make run` calls `python -m tabml_assets.seed`."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
)

from tabml_assets.automation.jobs import TRAINING_ASSET_NAMES
from tabml_assets.dagster_compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from tabml_assets.keys import BATCH_PREDICTIONS, FEATURES, RAW_DATA
from tabml_assets.resources import build_partition_store
from tabml_assets.resources.data_sources import land_demo_files
from tabml_assets.spec import LoadedSpec
from tabml_assets.utc import days_between

log = logging.getLogger("tabml.seed")


@dataclass(frozen=True)
class SeedPlan:
    ingest_days: list[dt.date]
    training_day: dt.date
    scoring_day: dt.date


def plan_seed(spec: LoadedSpec, today: dt.date) -> SeedPlan:
    """Train on the window ending the day before yesterday; score yesterday, the latest closed day."""
    scoring_day = today - dt.timedelta(days=1)
    training_day = scoring_day - dt.timedelta(days=1)
    window = spec.pipeline.training_window_days
    first = max(training_day - dt.timedelta(days=window - 1), spec.pipeline.partitions.start_date)
    return SeedPlan(ingest_days=days_between(first, scoring_day), training_day=training_day, scoring_day=scoring_day)


def run_selection(
    defs: Definitions,
    instance: DagsterInstance,
    assets: list[AssetKey],
    partition_key: str | None = None,
    partition_range: tuple[str, str] | None = None,
    raise_on_error: bool = True,
) -> ExecuteInProcessResult:
    """Materialize `assets` for one partition or, in a single run, a range of partitions.

    Assets made by the same step as a selected one (raw_data's quarantine) are selected with it.
    """
    job = defs.resolve_implicit_global_asset_job_def()
    selection = AssetSelection.assets(*assets).required_multi_asset_neighbors()
    assets = sorted(selection.resolve(defs.resolve_asset_graph()))
    tags = {}
    if partition_range is not None:
        tags = {ASSET_PARTITION_RANGE_START_TAG: partition_range[0], ASSET_PARTITION_RANGE_END_TAG: partition_range[1]}
    return job.execute_in_process(
        instance=instance,
        partition_key=partition_key,
        asset_selection=list(assets),
        tags=tags,
        raise_on_error=raise_on_error,
    )


def seed_demo(defs: Definitions, spec: LoadedSpec, instance: DagsterInstance, today: dt.date) -> SeedPlan:
    plan = plan_seed(spec, today)
    source = spec.profile.data_source
    keys = spec.keys
    if source.kind == "landing_folder":
        if spec.steps.demo_rows is None:
            raise ValueError(f"{spec.name}: the steps module has no demo_rows, so there is nothing to seed")
        land_demo_files(spec.landing_folder(), plan.ingest_days, source.demo_rows_per_day, spec.steps.demo_rows)
    first, last = plan.ingest_days[0].isoformat(), plan.ingest_days[-1].isoformat()
    log.info("%s: ingesting %s .. %s", spec.name, first, last)
    run_selection(defs, instance, keys.assets(RAW_DATA, FEATURES), partition_range=(first, last))
    log.info("%s: training, evaluating and promoting on the window ending %s", spec.name, plan.training_day)
    run_selection(
        defs, instance, keys.assets(*TRAINING_ASSET_NAMES),
        partition_key=plan.training_day.isoformat(),
    )
    log.info("%s: scoring %s", spec.name, plan.scoring_day)
    run_selection(defs, instance, keys.assets(BATCH_PREDICTIONS), partition_key=plan.scoring_day.isoformat())
    return plan


def is_seeded(spec: LoadedSpec, today: dt.date) -> bool:
    """True when the project's latest day's predictions exist, so `make run` starts at once."""
    scoring_key = plan_seed(spec, today).scoring_day.isoformat()
    return build_partition_store(spec).exists(spec.keys.batch_predictions, scoring_key)


def main() -> None:
    import argparse

    from tabml_assets.definitions import build_definitions
    from tabml_assets.spec import load_deployment_from_env

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-if-seeded", action="store_true", help="do nothing when the latest day is already scored")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    deployment = load_deployment_from_env()
    today = dt.datetime.now(dt.UTC).date()
    pending = [s for s in deployment.projects if not (args.skip_if_seeded and is_seeded(s, today))]
    if not pending:
        log.info("demo already seeded for %s; starting the UI", today)
        return
    defs = build_definitions(deployment)
    instance = DagsterInstance.get()
    for spec in pending:
        plan = seed_demo(defs, spec, instance, today)
        log.info(
            "%s seeded: %d days ingested, model trained on %s, %s scored",
            spec.name, len(plan.ingest_days), plan.training_day, plan.scoring_day,
        )


if __name__ == "__main__":
    main()
