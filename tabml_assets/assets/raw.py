"""raw_data: one UTC day of taxi trips from the deployment's trip source, validated row by row.

Rows that break a rule go to a quarantine file beside the data,
`<storage root>/raw_data_quarantine/<partition>.parquet`, with a `reason` column; the count is
in the materialization metadata and in the `raw_quarantine` check. Input that cannot be used at
all fails the step before anything is written, so the stored partition stays as it was.
"""


import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from tabml_assets.assets.common import (
    OWNERS,
    daily_partitions,
    partition_day,
    partition_keys,
    table_metadata,
)
from tabml_assets.ml.quality import REASON_COLUMN, ValidatedRows, count_reasons, validate_raw_rows
from tabml_assets.ml.schema import RAW_COLUMNS
from tabml_assets.resources.data_sources import (
    READ_PROBLEMS_COLUMN,
    SOURCE_FILE_COLUMN,
    SOURCE_ROW_COLUMN,
    LandedDay,
    TripSource,
    UnreadableFileError,
)
from tabml_assets.resources.retries import build_retry_policy, transient_errors_only
from tabml_assets.resources.storage import PartitionedParquetIOManager, write_parquet_atomic
from tabml_assets.spec import DataQualitySpec, LoadedSpec

# A backfill of many days runs in a few bounded runs instead of one run per day.
BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=31)
QUARANTINE_ASSET = "raw_data_quarantine"
QUARANTINE_COLUMNS = [*RAW_COLUMNS, SOURCE_FILE_COLUMN, SOURCE_ROW_COLUMN, REASON_COLUMN]
EXAMPLE_ROWS = 3


def quarantine_path(store: PartitionedParquetIOManager, partition: str) -> Path:
    return store.partition_path(QUARANTINE_ASSET, partition)


def validate_landed_day(landed: LandedDay, day: dt.date, now: dt.datetime) -> ValidatedRows:
    """Valid rows in RAW_SCHEMA and quarantined rows in QUARANTINE_COLUMNS for one landed day."""
    rows = landed.rows
    checked = validate_raw_rows(rows.drop(columns=[READ_PROBLEMS_COLUMN]), day, now, rows[READ_PROBLEMS_COLUMN])
    return ValidatedRows(valid=checked.valid, quarantined=checked.quarantined[QUARANTINE_COLUMNS])


def describe_examples(quarantined: pd.DataFrame) -> str:
    examples = quarantined.head(EXAMPLE_ROWS)
    return "; ".join(
        f"{row[SOURCE_FILE_COLUMN]} row {row[SOURCE_ROW_COLUMN]}: {row[REASON_COLUMN]}"
        for _, row in examples.iterrows()
    )


def refuse_to_store(
    key: str,
    checked: ValidatedRows,
    delivered: int,
    stored_rows: int | None,
    quality: DataQualitySpec,
) -> str | None:
    """Why this day must not replace what is stored, or None when it may."""
    quarantined = len(checked.quarantined)
    if delivered and quarantined / delivered > quality.max_quarantine_fraction:
        return (
            f"raw_data {key}: {quarantined} of {delivered} rows "
            f"({quarantined / delivered:.0%}) failed validation, above "
            f"data_quality.max_quarantine_fraction {quality.max_quarantine_fraction:g}. "
            f"Reasons: {count_reasons(checked.quarantined)}. First rows: "
            f"{describe_examples(checked.quarantined)}"
        )
    if delivered == 0 and stored_rows:
        return (
            f"raw_data {key}: the trip source delivered 0 rows, but the stored partition has "
            f"{stored_rows} rows; refusing to replace them with an empty day (was a landing file "
            "removed?). If the day really has no trips, delete the stored partition and materialize again"
        )
    return None


def stored_row_count(path: Path) -> int | None:
    if not path.exists():
        return None
    return pq.ParquetFile(path).metadata.num_rows


def land(trip_source: TripSource, days: list[dt.date], now: dt.datetime) -> dict[dt.date, LandedDay]:
    """Read the days; input that cannot be used fails at once (retrying cannot fix a file)."""
    try:
        return trip_source.land_days(days, now)
    except UnreadableFileError as exc:
        raise Failure(
            description=f"raw_data: ingestion stopped, nothing was written: {exc}",
            allow_retries=False,
        ) from exc


def build_raw_data_asset(spec: LoadedSpec) -> AssetsDefinition:
    quality = spec.pipeline.data_quality

    @asset(
        name="raw_data",
        group_name="ingestion",
        kinds={"pandas", "parquet"},
        owners=OWNERS,
        code_version="2",
        partitions_def=daily_partitions(spec.pipeline),
        backfill_policy=BACKFILL_POLICY,
        retry_policy=build_retry_policy(spec.pipeline.retries),
        required_resource_keys={"step_launcher", "trip_source", "io_manager"},
    )
    @transient_errors_only
    def raw_data(context: AssetExecutionContext) -> Output[dict[str, pd.DataFrame]]:
        """Raw taxi trips for each UTC day, validated; bad rows are quarantined with a reason."""
        trip_source: TripSource = context.resources.trip_source
        store: PartitionedParquetIOManager = context.resources.io_manager
        now = dt.datetime.now(dt.UTC)
        keys = partition_keys(context)
        landed = land(trip_source, [partition_day(k) for k in keys], now)
        checked: dict[str, ValidatedRows] = {}
        refusals: list[str] = []
        for key in keys:
            day_rows = landed[partition_day(key)]
            checked[key] = validate_landed_day(day_rows, partition_day(key), now)
            stored = stored_row_count(store.partition_path("raw_data", key))
            refusal = refuse_to_store(key, checked[key], len(day_rows.rows), stored, quality)
            if refusal:
                refusals.append(refusal)
        if refusals:
            raise Failure(
                description="\n".join([*refusals, "Nothing was written; stored partitions are unchanged."]),
                allow_retries=False,
            )
        # Every day passed: the quarantine (empty or not) replaces the previous one, so a
        # re-materialized partition never keeps stale quarantined rows.
        for key, result in checked.items():
            write_parquet_atomic(result.quarantined, quarantine_path(store, key))
        frames = {key: result.valid for key, result in checked.items()}
        quarantined = {key: len(result.quarantined) for key, result in checked.items()}
        all_quarantined = pd.concat([r.quarantined for r in checked.values()], ignore_index=True)
        metadata = table_metadata(frames)
        files = sorted({f for day in landed.values() for f in day.files})
        ignored = {f: c for day in landed.values() for f, c in day.ignored_columns.items()}
        empty_files = sorted({f for day in landed.values() for f in day.empty_files})
        metadata.update(
            {
                "source": MetadataValue.text(trip_source.describe()),
                "delivered_rows": MetadataValue.int(sum(len(day.rows) for day in landed.values())),
                "quarantined_rows": MetadataValue.int(sum(quarantined.values())),
                "quarantine_reasons": MetadataValue.json(count_reasons(all_quarantined)),
                "quarantine_path": MetadataValue.path(str(quarantine_path(store, keys[0]))),
                "landed_files": MetadataValue.json(files),
                "ignored_columns": MetadataValue.json(ignored),
                "empty_files": MetadataValue.json(empty_files),
            }
        )
        if len(keys) > 1:
            metadata["quarantined_per_partition"] = MetadataValue.json(quarantined)
        return Output(frames, metadata=metadata)

    return raw_data
