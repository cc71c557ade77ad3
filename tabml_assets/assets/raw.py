"""raw_data: one UTC day of a project's rows from the deployment's data source, validated row by row.

Rows that break a rule of the dataset spec go to the `raw_data_quarantine` asset, made by the
same step for the same partitions, with a `reason` column and the file and row each came from;
the count is in both materializations' metadata and in the `raw_quarantine` check. Input that cannot be used at
all fails the step before anything is written, so the stored partition stays as it was.
"""


import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    multi_asset,
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
from tabml_assets.resources.storage import PartitionStore
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


def blocking_refusal(key: str, landed: LandedDay) -> str | None:
    """Why a day must wait for files that hold rows for it but cannot be used, or None."""
    if not landed.blocking_files:
        return None
    reasons = "; ".join(landed.blocking_files.values())
    return (
        f"raw_data {key}: {len(landed.blocking_files)} landing file(s) hold rows for this day but "
        f"cannot be used, so the day waits for them: {reasons}. Fix or remove "
        f"{', '.join(landed.blocking_files)}; the landing sensor then runs {key} again"
    )


@dataclass(frozen=True)
class FileRows:
    """Where one landed file's rows went: delivered = stored + quarantined + in other partitions
    + before the first partition + for days not closed yet (the last two: out of range)."""

    delivered: int
    stored: int
    quarantined: int
    in_other_partitions: int = 0
    before_first_partition: int = 0
    for_days_not_closed: int = 0

    @property
    def out_of_range(self) -> int:
        return self.before_first_partition + self.for_days_not_closed


def account_rows(
    landed: dict[str, LandedDay], checked: dict[str, ValidatedRows], first_day: str, today: str
) -> dict[str, FileRows]:
    """Every delivered row of every file this run read, accounted for (file -> FileRows)."""
    routed: Counter[str] = Counter()
    quarantined: Counter[str] = Counter()
    facts = {}
    for key, day in landed.items():
        routed.update(day.rows[SOURCE_FILE_COLUMN].astype(str))
        quarantined.update(checked[key].quarantined[SOURCE_FILE_COLUMN].astype(str))
        facts.update(day.file_facts)
    accounts = {}
    for name in sorted(routed):
        stored = routed[name] - quarantined[name]
        if name not in facts:
            # A frame source (demo rows, a loader, a table) delivers exactly the run's days.
            accounts[name] = FileRows(routed[name], stored, quarantined[name])
            continue
        per_day = facts[name].rows_per_day()
        other_days = [d for d in per_day if first_day <= d < today and d not in landed]
        accounts[name] = FileRows(
            delivered=facts[name].rows,
            stored=stored,
            quarantined=quarantined[name],
            in_other_partitions=sum(per_day[d] for d in other_days),
            before_first_partition=sum(n for d, n in per_day.items() if d < first_day),
            for_days_not_closed=sum(n for d, n in per_day.items() if d >= today),
        )
    return accounts


def landing_metadata(landed: dict[str, LandedDay], accounts: dict[str, FileRows]) -> dict[str, Any]:
    """Which files fed the run, each file's rows accounted for, and the files set aside or ignored."""
    days = list(landed.values())
    return {
        "landed_files": MetadataValue.json(sorted({f for day in days for f in day.files})),
        "rows_per_file": MetadataValue.json({f: dataclasses.asdict(rows) for f, rows in accounts.items()}),
        "out_of_range_rows": MetadataValue.int(sum(rows.out_of_range for rows in accounts.values())),
        "ignored_columns": MetadataValue.json({f: c for day in days for f, c in day.ignored_columns.items()}),
        "empty_files": MetadataValue.json(sorted({f for day in days for f in day.empty_files})),
        "set_aside_files": MetadataValue.json({f: r for day in days for f, r in day.set_aside_files.items()}),
        "unsupported_files": MetadataValue.json(sorted({f for day in days for f in day.unsupported_files})),
        # The index says which files touch the run's days; only those (and files it did not
        # know yet) are opened.
        "files_read": MetadataValue.json(sorted({f for day in days for f in day.files_read})),
        "files_in_folder": MetadataValue.int(max((day.files_in_folder for day in days), default=0)),
    }


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
    first_day = spec.pipeline.partitions.start_date.isoformat()
    keys = spec.keys
    group = keys.group("ingestion")

    @multi_asset(
        # The step keeps the name an `@asset` keyed raw_data would have (nyc_taxi__raw_data).
        name=keys.raw_data.to_python_identifier(),
        specs=[
            AssetSpec(
                keys.raw_data, group_name=group, kinds={"pandas", "parquet"}, owners=OWNERS, code_version="3",
                description="The project's raw rows for each UTC day, validated; bad rows are quarantined with a reason.",
            ),
            AssetSpec(
                keys.quarantine, group_name=group, kinds={"pandas", "parquet"}, owners=OWNERS, code_version="3",
                description=(
                    "The rows of each raw_data day that broke a rule of the dataset spec, with the "
                    f"`{REASON_COLUMN}` and the landing file and row they came from."
                ),
            ),
        ],
        # One read of the source makes both: the quarantine cannot be built without raw_data.
        can_subset=False,
        partitions_def=daily_partitions(spec.pipeline),
        backfill_policy=BACKFILL_POLICY,
        retry_policy=build_retry_policy(spec.pipeline.retries),
        required_resource_keys={"step_launcher", keys.source_resource, "partition_store"},
    )
    @transient_errors_only
    def raw_data(context: AssetExecutionContext) -> Iterator[MaterializeResult]:
        source: DataSource = getattr(context.resources, keys.source_resource)
        store: PartitionStore = context.resources.partition_store
        now = dt.datetime.now(dt.UTC)
        partitions = partition_keys(context)
        landed_days = land(source, [partition_day(k) for k in partitions], now)
        landed = {key: landed_days[partition_day(key)] for key in partitions}
        checked: dict[str, ValidatedRows] = {}
        refusals: list[str] = []
        for key, day_rows in landed.items():
            checked[key] = validate_landed_day(day_rows, dataset, partition_day(key), now)
            stored = store.row_count(keys.raw_data, key) if store.exists(keys.raw_data, key) else None
            refusal = blocking_refusal(key, day_rows) or refuse_to_store(
                key, checked[key], len(day_rows.rows), stored, quality
            )
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
            store.write_frame(keys.quarantine, key, result.quarantined)
            store.write_frame(keys.raw_data, key, result.valid)
        frames = {key: result.valid for key, result in checked.items()}
        quarantined = {key: result.quarantined for key, result in checked.items()}
        reasons = count_reasons(pd.concat(quarantined.values(), ignore_index=True))
        quarantine_path = MetadataValue.path(str(store.path(keys.quarantine, partitions[0])))
        metadata = table_metadata(frames, dataset.event_time)
        accounts = account_rows(landed, checked, first_day, now.date().isoformat())
        metadata.update(landing_metadata(landed, accounts))
        metadata.update(
            {
                "source": MetadataValue.text(source.describe()),
                "delivered_rows": MetadataValue.int(sum(len(day.rows) for day in landed.values())),
                "quarantined_rows": MetadataValue.int(sum(map(len, quarantined.values()))),
                "quarantine_reasons": MetadataValue.json(reasons),
                "quarantine_path": quarantine_path,
            }
        )
        if len(partitions) > 1:
            metadata["quarantined_per_partition"] = MetadataValue.json({k: len(q) for k, q in quarantined.items()})
        yield MaterializeResult(asset_key=keys.raw_data, metadata=metadata)
        quarantine_metadata = table_metadata(quarantined, dataset.event_time)
        quarantine_metadata.update({"quarantine_reasons": MetadataValue.json(reasons), "path": quarantine_path})
        yield MaterializeResult(asset_key=keys.quarantine, metadata=quarantine_metadata)

    return raw_data
