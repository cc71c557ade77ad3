"""raw_data: one UTC day of a project's rows from the deployment's data source, validated row by row.

Rows that break a rule of the dataset spec go to a quarantine file beside the data,
`<storage root>/<project>/raw_data_quarantine/<partition>.parquet`, with a `reason` column; the count is
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
from tabml_assets.ml.schema import raw_columns
from tabml_assets.resources.data_sources import (
    READ_PROBLEMS_COLUMN,
    SOURCE_FILE_COLUMN,
    SOURCE_ROW_COLUMN,
    DataSource,
    LandedDay,
    UnreadableFileError,
)
from tabml_assets.resources.retries import build_retry_policy, transient_errors_only
from tabml_assets.resources.storage import PartitionedParquetIOManager, write_parquet_atomic
from tabml_assets.spec import DataQualitySpec, DatasetSpec, LoadedSpec

# A backfill of many days runs in a few bounded runs instead of one run per day.
BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=31)
EXAMPLE_ROWS = 3


def quarantine_columns(dataset: DatasetSpec) -> list[str]:
    return [*raw_columns(dataset), SOURCE_FILE_COLUMN, SOURCE_ROW_COLUMN, REASON_COLUMN]


def validate_landed_day(
    landed: LandedDay, dataset: DatasetSpec, day: dt.date, now: dt.datetime
) -> ValidatedRows:
    """Valid rows in the raw schema and quarantined rows (with provenance and reason) for one day."""
    rows = landed.rows
    checked = validate_raw_rows(
        rows.drop(columns=[READ_PROBLEMS_COLUMN]), dataset, day, now, rows[READ_PROBLEMS_COLUMN]
    )
    return ValidatedRows(valid=checked.valid, quarantined=checked.quarantined[quarantine_columns(dataset)])


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
            f"raw_data {key}: the data source delivered 0 rows, but the stored partition has "
            f"{stored_rows} rows; refusing to replace them with an empty day (was a landing file "
            "removed?). If the day really has no rows, delete the stored partition and materialize again"
        )
    return None


def stored_row_count(path: Path) -> int | None:
    if not path.exists():
        return None
    return pq.ParquetFile(path).metadata.num_rows


def land(source: DataSource, days: list[dt.date], now: dt.datetime) -> dict[dt.date, LandedDay]:
    """Read the days; input that cannot be used fails at once (retrying cannot fix a file)."""
    try:
        return source.land_days(days, now)
    except UnreadableFileError as exc:
        raise Failure(
            description=f"raw_data: ingestion stopped, nothing was written: {exc}",
            allow_retries=False,
        ) from exc


def build_raw_data_asset(spec: LoadedSpec) -> AssetsDefinition:
    quality = spec.pipeline.data_quality
    dataset = spec.pipeline.dataset
    keys = spec.keys

    @asset(
        key=keys.raw_data,
        group_name=keys.group("ingestion"),
        kinds={"pandas", "parquet"},
        owners=OWNERS,
        code_version="2",
        partitions_def=daily_partitions(spec.pipeline),
        backfill_policy=BACKFILL_POLICY,
        retry_policy=build_retry_policy(spec.pipeline.retries),
        required_resource_keys={"step_launcher", keys.source_resource, "io_manager"},
    )
    @transient_errors_only
    def raw_data(context: AssetExecutionContext) -> Output[dict[str, pd.DataFrame]]:
        """The project's raw rows for each UTC day, validated; bad rows are quarantined with a reason."""
        source: DataSource = getattr(context.resources, keys.source_resource)
        store: PartitionedParquetIOManager = context.resources.io_manager
        now = dt.datetime.now(dt.UTC)
        partitions = partition_keys(context)
        landed = land(source, [partition_day(k) for k in partitions], now)
        checked: dict[str, ValidatedRows] = {}
        refusals: list[str] = []
        for key in partitions:
            day_rows = landed[partition_day(key)]
            checked[key] = validate_landed_day(day_rows, dataset, partition_day(key), now)
            stored = stored_row_count(store.partition_path(keys.raw_data, key))
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
            write_parquet_atomic(result.quarantined, store.partition_path(keys.quarantine, key))
        frames = {key: result.valid for key, result in checked.items()}
        quarantined = {key: len(result.quarantined) for key, result in checked.items()}
        all_quarantined = pd.concat([r.quarantined for r in checked.values()], ignore_index=True)
        metadata = table_metadata(frames, dataset.event_time)
        files = sorted({f for day in landed.values() for f in day.files})
        ignored = {f: c for day in landed.values() for f, c in day.ignored_columns.items()}
        empty_files = sorted({f for day in landed.values() for f in day.empty_files})
        metadata.update(
            {
                "source": MetadataValue.text(source.describe()),
                "delivered_rows": MetadataValue.int(sum(len(day.rows) for day in landed.values())),
                "quarantined_rows": MetadataValue.int(sum(quarantined.values())),
                "quarantine_reasons": MetadataValue.json(count_reasons(all_quarantined)),
                "quarantine_path": MetadataValue.path(str(store.partition_path(keys.quarantine, partitions[0]))),
                "landed_files": MetadataValue.json(files),
                "ignored_columns": MetadataValue.json(ignored),
                "empty_files": MetadataValue.json(empty_files),
            }
        )
        if len(partitions) > 1:
            metadata["quarantined_per_partition"] = MetadataValue.json(quarantined)
        return Output(frames, metadata=metadata)

    return raw_data
