"""raw_data: one UTC day of a project's rows from the deployment's data source, validated row by row.

Rows that break a rule of the dataset spec go to the `raw_data_quarantine` asset, made by the
same step for the same partitions, with a `reason` column and the file and row each came from;
the count is in both materializations' metadata and in the `raw_quarantine` check.

A day is read, validated and written in bounded batches, so memory does not grow with its size.
The batches go to temporary files beside the stored partitions, which are renamed into place only
once every day of the run passed its refusals (input that cannot be used, too many quarantined
rows, an empty day over stored rows): a refused run changes nothing that is stored.
"""


import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
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

from tabml_assets.assets.common import OWNERS, daily_partitions, partition_day, partition_keys
from tabml_assets.keys import PipelineKeys
from tabml_assets.ml.quality import (
    QUARANTINE_REASONS_FACT,
    REASON_COLUMN,
    RULE_COUNTS_FACT,
    RULES_DIGEST_FACT,
    DuplicateTracker,
    count_reasons,
    rule_reasons,
    rules_digest,
    validate_raw_rows,
)
from tabml_assets.ml.schema import raw_columns, raw_schema
from tabml_assets.resources.data_sources import (
    READ_PROBLEMS_COLUMN,
    SOURCE_FILE_COLUMN,
    SOURCE_ROW_COLUMN,
    DataSource,
    LandedDay,
    UnreadableFileError,
    empty_unvalidated_rows,
)
from tabml_assets.resources.retries import build_retry_policy, transient_errors_only
from tabml_assets.resources.storage import (
    BackgroundWrites,
    PartitionStore,
    StagedPartition,
    SummaryColumns,
    WrittenPartition,
    frame_to_table,
    schema_of_frame,
    written_metadata,
)
from tabml_assets.spec import DataQualitySpec, DatasetSpec, LoadedSpec

# A backfill of many days runs in a few bounded runs instead of one run per day.
BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=31)
EXAMPLE_ROWS = 3


def quarantine_columns(dataset: DatasetSpec) -> list[str]:
    return [*raw_columns(dataset), SOURCE_FILE_COLUMN, SOURCE_ROW_COLUMN, REASON_COLUMN]


def stored_schema(dataset: DatasetSpec) -> pa.Schema:
    """The file schema of raw_data partitions: the raw schema, whatever a day holds."""
    return schema_of_frame(pd.DataFrame({c: pd.Series(dtype=t) for c, t in raw_schema(dataset).items()}))


def quarantine_schema(dataset: DatasetSpec) -> pa.Schema:
    """The file schema of quarantine partitions: raw columns as delivered, provenance and reason."""
    empty = empty_unvalidated_rows(dataset).assign(**{REASON_COLUMN: pd.Series(dtype="object")})
    return schema_of_frame(empty[quarantine_columns(dataset)])


def rows_per_file(rows: pd.DataFrame) -> dict[str, int]:
    names = rows[SOURCE_FILE_COLUMN].to_numpy()
    if len(names) and (names == names[0]).all():
        # A batch comes from one file (every landed batch does): no hash table of 1M names.
        return {str(names[0]): len(names)}
    return {str(name): int(n) for name, n in rows[SOURCE_FILE_COLUMN].value_counts(sort=False).items()}


@dataclass(frozen=True)
class DaySchemas:
    """The file schemas of a day's raw_data and quarantine partitions, made once per run."""

    stored: pa.Schema
    quarantine: pa.Schema

    @classmethod
    def of(cls, dataset: DatasetSpec) -> "DaySchemas":
        return cls(stored_schema(dataset), quarantine_schema(dataset))


@dataclass
class DayIngest:
    """One day being ingested: its valid and quarantined rows streamed into staged partitions,
    and the figures its refusals, metadata and row accounting need."""

    key: str
    valid: StagedPartition
    quarantine: StagedPartition
    duplicates: DuplicateTracker
    # source file -> rows it delivered to this day, and how many of them were quarantined.
    delivered: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    # Rule reason -> stored (valid) rows breaking it, kept in the partition's summary.
    kept_rule_counts: Counter[str] = field(default_factory=Counter)
    examples: pd.DataFrame | None = None

    @classmethod
    def start(
        cls,
        store: PartitionStore,
        keys: PipelineKeys,
        key: str,
        dataset: DatasetSpec,
        schemas: DaySchemas,
        writes: BackgroundWrites,
    ) -> "DayIngest":
        ranges = SummaryColumns(ranges=(dataset.event_time,))
        return cls(
            key,
            valid=store.stage(keys.raw_data, key, schemas.stored, ranges, writes),
            quarantine=store.stage(keys.quarantine, key, schemas.quarantine, ranges, writes),
            duplicates=DuplicateTracker(dataset),
        )

    def add(self, batch: pd.DataFrame, dataset: DatasetSpec, now: dt.datetime) -> None:
        """Validate one batch of the day's delivered rows and write both halves."""
        # The read problems column rides along: validation reads only the dataset's columns,
        # and the quarantine keeps only its own.
        checked = validate_raw_rows(
            batch, dataset, partition_day(self.key), now, batch[READ_PROBLEMS_COLUMN], self.duplicates
        )
        quarantined = checked.quarantined[quarantine_columns(dataset)]
        # The (small) quarantine first: the stored rows' write then runs while the next batch
        # is read and validated.
        self.quarantine.write(frame_to_table(quarantined, self.quarantine.schema, f"raw_data_quarantine {self.key}"))
        self.valid.write(frame_to_table(checked.valid, self.valid.schema, f"raw_data {self.key}"))
        self.delivered.update(rows_per_file(batch))
        self.quarantined.update(rows_per_file(quarantined))
        self.reasons.update(count_reasons(quarantined))
        self.kept_rule_counts.update(checked.kept_rule_counts)
        if len(quarantined) and (self.examples is None or len(self.examples) < EXAMPLE_ROWS):
            self.examples = pd.concat([self.examples, quarantined.head(EXAMPLE_ROWS)]).head(EXAMPLE_ROWS)

    @property
    def delivered_rows(self) -> int:
        return sum(self.delivered.values())

    @property
    def quarantined_rows(self) -> int:
        return sum(self.quarantined.values())

    @property
    def reason_counts(self) -> dict[str, int]:
        return dict(self.reasons.most_common())

    def stored_facts(self, dataset: DatasetSpec, now: dt.datetime) -> dict[str, Any]:
        """What validation found on the rows raw_data stores, for its summary (the checks')."""
        rules = {reason: int(self.kept_rule_counts[reason]) for reason in rule_reasons(dataset)}
        return {RULE_COUNTS_FACT: rules, RULES_DIGEST_FACT: rules_digest(dataset), "validated_at": now.isoformat()}

    def quarantine_facts(self) -> dict[str, Any]:
        return {QUARANTINE_REASONS_FACT: self.reason_counts}


def describe_examples(quarantined: pd.DataFrame) -> str:
    examples = quarantined.head(EXAMPLE_ROWS)
    return "; ".join(
        f"{row[SOURCE_FILE_COLUMN]} row {row[SOURCE_ROW_COLUMN]}: {row[REASON_COLUMN]}"
        for _, row in examples.iterrows()
    )


def refuse_to_store(
    key: str, ingest: DayIngest, stored_rows: int | None, quality: DataQualitySpec
) -> str | None:
    """Why this day must not replace what is stored, or None when it may."""
    quarantined, delivered = ingest.quarantined_rows, ingest.delivered_rows
    if delivered and quarantined / delivered > quality.max_quarantine_fraction:
        assert ingest.examples is not None
        return (
            f"raw_data {key}: {quarantined} of {delivered} rows "
            f"({quarantined / delivered:.0%}) failed validation, above "
            f"data_quality.max_quarantine_fraction {quality.max_quarantine_fraction:g}. "
            f"Reasons: {ingest.reason_counts}. First rows: "
            f"{describe_examples(ingest.examples)}"
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
    landed: dict[str, LandedDay], ingests: dict[str, DayIngest], first_day: str, today: str
) -> dict[str, FileRows]:
    """Every delivered row of every file this run read, accounted for (file -> FileRows)."""
    routed: Counter[str] = Counter()
    quarantined: Counter[str] = Counter()
    facts = {}
    for key, day in landed.items():
        routed.update(ingests[key].delivered)
        quarantined.update(ingests[key].quarantined)
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


def unusable_input(exc: UnreadableFileError) -> Failure:
    """Input that cannot be used fails at once: retrying cannot fix a file."""
    return Failure(description=f"raw_data: ingestion stopped, nothing was written: {exc}", allow_retries=False)


def ingest_days(
    source: DataSource,
    store: PartitionStore,
    keys: PipelineKeys,
    partitions: list[str],
    dataset: DatasetSpec,
    now: dt.datetime,
) -> tuple[dict[str, LandedDay], dict[str, DayIngest]]:
    """Stream the days' rows into staged partitions (not yet in place): what each day received."""
    try:
        run = source.land_days([partition_day(k) for k in partitions], now, store.stream_batch_rows)
    except UnreadableFileError as exc:
        raise unusable_input(exc) from exc
    ingests: dict[str, DayIngest] = {}
    # Each batch is written while the next one is read and validated.
    with BackgroundWrites() as writes:
        try:
            schemas = DaySchemas.of(dataset)
            for key in partitions:
                ingests[key] = DayIngest.start(store, keys, key, dataset, schemas, writes)
            for day, batch in run.batches:
                ingests[day.isoformat()].add(batch, dataset, now)
            for ingest in ingests.values():
                ingest.valid.close()
                ingest.quarantine.close()
        except BaseException as exc:
            discard(ingests)
            if isinstance(exc, UnreadableFileError):
                raise unusable_input(exc) from exc
            raise
    return {key: run.days[partition_day(key)] for key in partitions}, ingests


def discard(ingests: dict[str, DayIngest]) -> None:
    for ingest in ingests.values():
        ingest.valid.discard()
        ingest.quarantine.discard()


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
        landed, ingests = ingest_days(source, store, keys, partitions, dataset, now)
        refusals = [
            refusal
            for key, ingest in ingests.items()
            if (refusal := blocking_refusal(key, landed[key]) or refuse_to_store(
                key, ingest, store.row_count(keys.raw_data, key) if store.exists(keys.raw_data, key) else None, quality
            ))
        ]
        if refusals:
            discard(ingests)
            raise Failure(
                description="\n".join([*refusals, "Nothing was written; stored partitions are unchanged."]),
                allow_retries=False,
            )
        # Every day passed: the quarantine (empty or not) replaces the previous one, so a
        # re-materialized partition never keeps stale quarantined rows.
        quarantined = {key: ingest.quarantine.commit(ingest.quarantine_facts()) for key, ingest in ingests.items()}
        stored = {key: ingest.valid.commit(ingest.stored_facts(dataset, now)) for key, ingest in ingests.items()}
        yield MaterializeResult(asset_key=keys.raw_data, metadata=raw_metadata(
            stored, quarantined, landed, ingests, source, first_day, now, dataset.event_time
        ))
        metadata = written_metadata(quarantined, dataset.event_time, "event_time")
        metadata["quarantine_reasons"] = MetadataValue.json(total_reasons(ingests))
        yield MaterializeResult(asset_key=keys.quarantine, metadata=metadata)

    return raw_data


def total_reasons(ingests: dict[str, DayIngest]) -> dict[str, int]:
    reasons: Counter[str] = Counter()
    for ingest in ingests.values():
        reasons.update(ingest.reasons)
    return dict(reasons.most_common())


def raw_metadata(
    stored: dict[str, WrittenPartition],
    quarantined: dict[str, WrittenPartition],
    landed: dict[str, LandedDay],
    ingests: dict[str, DayIngest],
    source: DataSource,
    first_day: str,
    now: dt.datetime,
    event_time: str,
) -> dict[str, Any]:
    """raw_data's materialization: the stored rows, where each file's rows went, the quarantine."""
    metadata = written_metadata(stored, event_time, "event_time")
    accounts = account_rows(landed, ingests, first_day, now.date().isoformat())
    metadata.update(landing_metadata(landed, accounts))
    metadata.update(
        {
            "source": MetadataValue.text(source.describe()),
            "delivered_rows": MetadataValue.int(sum(i.delivered_rows for i in ingests.values())),
            "quarantined_rows": MetadataValue.int(sum(w.rows for w in quarantined.values())),
            "quarantine_reasons": MetadataValue.json(total_reasons(ingests)),
            "quarantine_path": MetadataValue.path(str(next(iter(quarantined.values())).path)),
        }
    )
    if len(stored) > 1:
        metadata["quarantined_per_partition"] = MetadataValue.json({k: w.rows for k, w in quarantined.items()})
    return metadata
