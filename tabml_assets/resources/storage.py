"""Partitioned asset storage: parquet per partition, JSON for small records, atomic writes.

The same code serves dev (a local folder) and Databricks (a Unity Catalog volume or DBFS path,
which clusters mount as local files under /Volumes and /dbfs), so both sides see one store.

`PartitionStore` owns the layout, <root>/<asset>/<partition>.parquet: every path, read and
atomic write of a partition. `PartitionedParquetIOManager` delegates to it for the small assets
that go through Dagster's IO as DataFrames or records; assets whose partitions may not fit in
memory (raw_data, features, batch_predictions) use the store directly: `transform_partition`
streams an upstream partition file through a pandas function batch by batch (or through Spark's
`mapInPandas`) into the same layout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pydantic
from dagster import (
    AssetKey,
    ConfigurableIOManager,
    ConfigurableResource,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)

from tabml_assets.ml.quality import repeated_key_rows, row_hashes
from tabml_assets.processes import host_name, process_alive_since
from tabml_assets.utc import utc_timestamp

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")
# Rows per streamed batch: large enough that per-batch overhead vanishes next to predict(),
# small enough that one batch and its transformed copy stay well under 200 MB.
DEFAULT_BATCH_ROWS = 250_000
PREVIEW_ROWS = 5

# A pandas function applied to each batch; `shared` objects (a fitted model) are passed to it
# as keyword arguments and shipped to Spark executors once, as a broadcast.
BatchTransform = Callable[..., pd.DataFrame]


class UnsafePathError(ValueError):
    """A partition key or asset name that would escape the storage root."""


class TransformOutputError(ValueError):
    """A batch transform returned a frame the partition's output schema cannot hold."""


def safe_segment(value: str, what: str) -> str:
    """Reject keys such as '../x' or 'a/b' before they become file names."""
    if not _SAFE_SEGMENT.match(value) or ".." in value:
        raise UnsafePathError(
            f"{what}: expected letters, digits, '_', '-', '.', '=' (no path separators or '..'), "
            f"found {value!r}"
        )
    return value


# Temporary files (and Spark output folders) are named .<target>.<host>.<pid>.<random>.tmp, so a
# later writer can tell whether the process that made one is still working on it.
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.(?P<token>[^.]+)\.tmp$")
# Names of earlier versions, without host and pid: mkstemp's 8 characters, or a Spark folder.
_LEGACY_TEMP_NAME = re.compile(
    r"^\.(?P<target>.+\.(?:parquet|json|html))\.(?:[a-z0-9_]{8}|spark-[0-9a-f]{32})\.tmp$"
)
# A temporary file from another machine (a Databricks driver, another container) cannot be
# checked for its writer; one untouched for a day, on a daily pipeline, has none.
STALE_TEMP_AGE_SECONDS = 24 * 3600


def temp_prefix(path: Path) -> str:
    """The start of a temporary name beside `path`, naming this machine and process."""
    return f".{path.name}.{host_name()}.{os.getpid()}."


def is_stale_temp(entry: Path, now: float, max_age_seconds: float = STALE_TEMP_AGE_SECONDS) -> bool:
    """True for a temporary file or folder of ours whose writer is gone.

    Its writer is gone when it was this machine's process and that process no longer runs (or
    its pid now belongs to a younger process), or, for another machine's or an unnamed writer,
    when nothing touched it for `max_age_seconds`. Anything not named like our temporaries
    (a user's own `.x.tmp`) is never stale.
    """
    named = _TEMP_NAME.match(entry.name)
    if named is None and _LEGACY_TEMP_NAME.match(entry.name) is None:
        return False
    try:
        modified = entry.stat().st_mtime
    except FileNotFoundError:
        return False  # its writer renamed or removed it meanwhile
    if named is not None and named["host"] == host_name():
        pid = int(named["pid"])
        return pid != os.getpid() and not process_alive_since(pid, modified)
    return now - modified > max_age_seconds


def remove_stale_temp_files(folder: Path, max_age_seconds: float = STALE_TEMP_AGE_SECONDS) -> list[Path]:
    """Remove the temporaries that killed writers left in `folder`; return what was removed."""
    now = time.time()
    removed: list[Path] = []
    try:
        entries = [Path(e.path) for e in os.scandir(folder) if e.name.startswith(".") and e.name.endswith(".tmp")]
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not is_stale_temp(entry, now, max_age_seconds):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Write through `write(tmp_path)` into a temp file beside `path`, then rename into place.

    A crash mid-write leaves the previous version of `path` untouched and readable. The temp
    files that killed writers left in the folder are removed first, so they do not pile up.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_json_atomic(value: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2, default=str)))


@dataclass(frozen=True)
class SummaryColumns:
    """Columns whose totals (`sums`) or extremes (`ranges`) a streamed write keeps.

    Every streamed write also keeps, for every column, its null count and (numbers and
    timestamps) its extremes, and for float columns the NaN/inf count: the partition's stored
    summary (`PartitionSummary`), which the asset checks read instead of the file.
    """

    sums: tuple[str, ...] = ()
    ranges: tuple[str, ...] = ()
    # Columns that identify a row: the summary counts the rows repeating an earlier row's
    # values of them (`KeyRepeats`), from a 64-bit hash of each row (8 bytes a row, kept
    # until the write ends).
    repeats_on: tuple[str, ...] = ()


# Keys listed with their rows in a summary's KeyRepeats (a bound on the summary's size).
LISTED_REPEATED_KEYS = 32
# Bump when the summary's fields change meaning: a summary of another format is not used.
SUMMARY_FORMAT = 1
SUMMARY_SUFFIX = ".summary.json"


class KeyRepeats(pydantic.BaseModel):
    """How many rows of a partition repeat the `columns` values of an earlier row, and, when
    only a few keys repeat, which rows share each (row positions in the file). Counted on
    64-bit hashes: two different keys share one with probability ~n^2 / 2^65, which counts a
    repeat that is not one (the cautious side) and never misses one."""

    model_config = pydantic.ConfigDict(frozen=True)

    columns: list[str]
    repeated_rows: int
    # Each repeated key's rows, in file order; None when more keys repeat than are listed.
    groups: list[list[int]] | None = None


class PartitionSummary(pydantic.BaseModel):
    """What a stored partition holds, written beside it by the streamed write that made it.

    `file_size` and `file_mtime_ns` are those of the parquet file it describes: a summary whose
    file was replaced since (by another writer, an older tabml, a crash between the two renames)
    no longer matches and is not used (`PartitionStore.read_summary`).
    """

    model_config = pydantic.ConfigDict(frozen=True)

    format: int = SUMMARY_FORMAT
    rows: int
    # Column -> pandas dtype, as a full read of the file gives it.
    columns: dict[str, str]
    null_counts: dict[str, int]
    # Float columns only: null (NaN) plus +-inf values. Integer columns are finite by type.
    non_finite_counts: dict[str, int]
    # Numbers as floats, timestamps as ISO strings; only columns with at least one value.
    minimum: dict[str, float | str]
    maximum: dict[str, float | str]
    # What the writer knew beyond the rows (e.g. raw_data's value-rule counts, the quarantine's
    # reasons, the model that scored the predictions).
    facts: dict[str, Any] = pydantic.Field(default_factory=dict)
    # Written when the writer was asked (`SummaryColumns.repeats_on`); None otherwise.
    key_repeats: KeyRepeats | None = None
    file_size: int
    file_mtime_ns: int


# The summary fact naming the file a transformed partition was computed from, as it was then.
SOURCE_FILE_FACT = "source_file"


def file_identity(path: Path) -> dict[str, int]:
    """Size and modification time: what tells a later reader a file is still the one it was
    (an atomic replace is a new file with its own mtime)."""
    stat = path.stat()
    return {"file_size": stat.st_size, "file_mtime_ns": stat.st_mtime_ns}


def _json_extreme(value: Any) -> float | str:
    if isinstance(value, int | float):
        return float(value)
    return pd.Timestamp(value).isoformat() if not isinstance(value, str) else value


def _is_summarised_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


@dataclass
class WrittenPartition:
    """What a streamed partition write produced: the figures its materialization reports."""

    path: Path
    rows: int
    schema: pa.Schema
    preview: pd.DataFrame
    column_sums: dict[str, float] = field(default_factory=dict)
    column_ranges: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    null_counts: dict[str, int] = field(default_factory=dict)
    non_finite_counts: dict[str, int] = field(default_factory=dict)
    key_repeats: KeyRepeats | None = None

    def summary(self, facts: Mapping[str, Any] | None = None) -> PartitionSummary:
        """The stored summary of this write (its file must be in place: size and mtime are its)."""
        extremes = {c: r for c, r in self.column_ranges.items() if r[0] is not None}
        return PartitionSummary(
            rows=self.rows,
            columns={str(c): str(t) for c, t in self.preview.dtypes.items()},
            null_counts=self.null_counts,
            non_finite_counts=self.non_finite_counts,
            minimum={c: _json_extreme(low) for c, (low, _) in extremes.items()},
            maximum={c: _json_extreme(high) for c, (_, high) in extremes.items()},
            facts=dict(facts or {}),
            key_repeats=self.key_repeats,
            **file_identity(self.path),
        )


def file_identity_of(summary: PartitionSummary) -> dict[str, int]:
    """The identity of the file `summary` was written for."""
    return {"file_size": summary.file_size, "file_mtime_ns": summary.file_mtime_ns}


def summary_path(path: Path) -> Path:
    """<partition>.summary.json beside <partition>.parquet."""
    return path.with_name(path.name.removesuffix(".parquet") + SUMMARY_SUFFIX)


def write_summary(written: WrittenPartition, facts: Mapping[str, Any] | None = None) -> None:
    """Store `written`'s summary beside its file, once the file is in place.

    Written after the file's rename: a crash between the two leaves the previous summary, whose
    size and mtime no longer match the file, so it is ignored rather than believed.
    """
    document = written.summary(facts).model_dump(mode="json")
    atomic_write_bytes(
        summary_path(written.path), lambda tmp: tmp.write_text(json.dumps(document, indent=1, default=str))
    )


def read_summary_of(path: Path) -> PartitionSummary | None:
    """The summary of the parquet file at `path`, or None when there is none that describes
    the file as it is now (absent, unreadable, another format, or the file replaced since)."""
    try:
        identity = file_identity(path)
        document = json.loads(summary_path(path).read_text())
        summary = PartitionSummary.model_validate(document)
    except (OSError, ValueError):
        return None
    if summary.format != SUMMARY_FORMAT or file_identity_of(summary) != identity:
        return None
    return summary


class _WriteSummary:
    """Accumulates rows, a preview, column sums, extremes, null and non-finite counts while
    batches stream past."""

    def __init__(self, schema: pa.Schema, columns: SummaryColumns) -> None:
        self.schema = schema
        self.rows = 0
        self.preview: pd.DataFrame | None = None
        self.sums = dict.fromkeys(columns.sums, 0.0)
        self.ranges: dict[str, tuple[Any, Any]] = {}
        # Requested ranges, plus every number and timestamp column (the stored summary's extremes).
        self.range_columns = tuple(
            dict.fromkeys(
                [
                    *columns.ranges,
                    *(f.name for f in schema if _is_summarised_number(f.type) or pa.types.is_timestamp(f.type)),
                ]
            )
        )
        self.nulls = dict.fromkeys(schema.names, 0)
        self.floats = [f.name for f in schema if pa.types.is_floating(f.type)]
        self.non_finite = dict.fromkeys(self.floats, 0)
        # Unknown (None) rather than a failed write when the rows lack a key column.
        self.repeats_on = list(columns.repeats_on) if set(columns.repeats_on) <= set(schema.names) else []
        self.key_hashes: list[np.ndarray] = []

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.rows += table.num_rows
        if self.preview is None:
            self.preview = table.slice(0, PREVIEW_ROWS).to_pandas()
        for column in self.sums:
            total = pc.sum(table[column]).as_py()
            self.sums[column] += float(total) if total is not None else 0.0
        for column in self.nulls:
            self.nulls[column] += table[column].null_count
        for column in self.floats:
            # pandas' NaN arrives as null, and a NaN arrow kept as a value is not finite either:
            # every row but the finite ones (is_finite is null on a null, which sum skips).
            finite = pc.sum(pc.is_finite(table[column])).as_py()
            self.non_finite[column] += table.num_rows - int(finite or 0)
        if self.repeats_on:
            self.key_hashes.append(row_hashes(table.select(self.repeats_on).to_pandas(), self.repeats_on))
        for column in self.range_columns:
            extremes = pc.min_max(table[column])
            low, high = extremes["min"].as_py(), extremes["max"].as_py()
            if low is None:
                continue
            seen = self.ranges.get(column)
            self.ranges[column] = (low, high) if seen is None else (min(seen[0], low), max(seen[1], high))

    def result(self, path: Path) -> WrittenPartition:
        preview = self.preview if self.preview is not None else self.schema.empty_table().to_pandas()
        return WrittenPartition(
            path, self.rows, self.schema, preview, self.sums, self.ranges, dict(self.nulls), dict(self.non_finite),
            self._key_repeats(),
        )

    def _key_repeats(self) -> KeyRepeats | None:
        if not self.repeats_on:
            return None
        hashes = np.concatenate(self.key_hashes) if self.key_hashes else np.empty(0, dtype="uint64")
        groups = repeated_key_rows(hashes)
        return KeyRepeats(
            columns=self.repeats_on,
            repeated_rows=sum(len(g) - 1 for g in groups),
            # A few keys listed with their rows; many left for the reader to find.
            groups=[g.tolist() for g in groups] if len(groups) <= LISTED_REPEATED_KEYS else None,
        )


def write_tables_atomic(
    tables: Iterable[pa.Table],
    schema: pa.Schema,
    path: Path,
    summary: SummaryColumns = SummaryColumns(),
    facts: Mapping[str, Any] | None = None,
) -> WrittenPartition:
    """Stream `tables` into one parquet file (a row group or more per table), atomically, and
    its summary (with the writer's `facts`) beside it."""
    totals = _WriteSummary(schema, summary)

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            for table in tables:
                writer.write_table(table)
                totals.add(table)

    atomic_write_bytes(path, write)
    written = totals.result(path)
    write_summary(written, facts)
    return written


class BackgroundWrites:
    """Parquet writes done in one background thread while the caller prepares its next batch.

    One write is in flight at a time, so memory holds one more batch, never a queue of them.
    Encoding a batch releases the GIL: with two cores, the next batch is read and validated
    while the last one is written. A failed write raises at the next `submit` or `wait`.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tabml-parquet-write")
        self._pending: Future[None] | None = None

    def submit(self, write: Callable[[], None]) -> None:
        self.wait()
        self._pending = self._pool.submit(write)

    def wait(self) -> None:
        """Until the write in flight is done; raises its error if it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> BackgroundWrites:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True)


class StagedPartition:
    """A partition file written batch by batch into a temporary beside its target, which only
    `commit` renames into place; `discard` removes it. Until then the stored partition is
    untouched, so a run can refuse its input after reading all of it. With `writes`, batches
    are written in its background thread (in order), and `close` waits for them."""

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        summary: SummaryColumns = SummaryColumns(),
        writes: BackgroundWrites | None = None,
    ) -> None:
        self.path = path
        self.schema = schema
        self.totals = _WriteSummary(schema, summary)
        self.writes = writes
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp_name)
        self.writer: pq.ParquetWriter | None = pq.ParquetWriter(self.tmp, schema)

    def write(self, table: pa.Table) -> None:
        assert self.writer is not None, f"{self.path}: written after it was closed"
        if not table.num_rows:
            return
        if self.writes is None:
            self._write_now(table)
        else:
            self.writes.submit(partial(self._write_now, table))

    def _write_now(self, table: pa.Table) -> None:
        assert self.writer is not None
        self.writer.write_table(table)
        self.totals.add(table)

    def close(self) -> WrittenPartition:
        """Finish the temporary file (still not in place); what it holds."""
        if self.writes is not None:
            # The writes are done in order, one at a time: this partition's last is the latest.
            self.writes.wait()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        return self.totals.result(self.path)

    def commit(self, facts: Mapping[str, Any] | None = None) -> WrittenPartition:
        """Put the file in place, then its summary (with the writer's `facts`) beside it."""
        written = self.close()
        os.replace(self.tmp, self.path)
        write_summary(written, facts)
        return written

    def discard(self) -> None:
        if self.writes is not None:
            with contextlib.suppress(Exception):
                # The run already failed or refused its input: a failed write changes nothing.
                self.writes.wait()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.tmp.unlink(missing_ok=True)


def iter_parquet_frames(path: Path, batch_rows: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """The file's rows (of `columns`, or all) as DataFrames of at most `batch_rows` rows, with
    their stored dtypes."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns):
        yield batch.to_pandas()


def empty_frame_of(path: Path) -> pd.DataFrame:
    """A zero-row frame with the file's columns and dtypes."""
    return pq.read_schema(path).empty_table().to_pandas()


def head_frame_of(path: Path, rows: int) -> pd.DataFrame:
    """The file's first `rows` rows (reads one batch, not the file)."""
    first = next(iter_parquet_frames(path, rows), None)
    return first if first is not None else empty_frame_of(path)


def schema_of_frame(frame: pd.DataFrame) -> pa.Schema:
    """The arrow schema a transform's output is stored with (pandas dtypes kept as metadata).

    Columns arrow cannot type from an empty object column become strings, so an empty
    partition's file has the same column types as a full one.
    """
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    fields = [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


def frame_to_table(frame: pd.DataFrame, schema: pa.Schema, what: str) -> pa.Table:
    """Convert one transformed batch, naming the partition and columns when it does not fit."""
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise TransformOutputError(
            f"{what}: batch is missing columns {missing}; expected {schema.names}, "
            f"found {list(frame.columns)}"
        )
    try:
        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TransformOutputError(
            f"{what}: batch does not fit the partition's schema {dict(zip(schema.names, map(str, schema.types), strict=True))}: {exc}"
        ) from None
    return table.replace_schema_metadata(schema.metadata)


_DONE = object()


def made_ahead(items: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """`items` in order, each next one made in a background thread while the caller writes
    the last: a batch's predict or feature code runs while the one before is encoded (both
    release the GIL). One item is made ahead, so memory holds one batch more, never a queue;
    an error making an item is raised where that item is taken."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tabml-make-ahead") as pool:
        pending = pool.submit(next, items, _DONE)
        while (item := pending.result()) is not _DONE:
            pending = pool.submit(next, items, _DONE)
            yield item


def stream_transform_parquet(
    source: Path,
    target: Path,
    transform: BatchTransform,
    shared: Mapping[str, Any] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    summary: SummaryColumns = SummaryColumns(),
) -> WrittenPartition:
    """Apply `transform(batch, **shared)` to `source` batch by batch and write `target` atomically.

    Memory stays bounded by one batch (plus one parquet row group of `source`), whatever the
    partition's size. The output schema is the first batch's; later batches must fit it.
    """
    shared = dict(shared or {})
    what = f"{target} (from {source})"
    # Before the first read: a source replaced while it is read no longer matches.
    facts = {SOURCE_FILE_FACT: file_identity(source)}
    frames = iter_parquet_frames(source, batch_rows)
    first_input = next(frames, None)
    if first_input is None:
        return write_tables_atomic([], schema_of_frame(transform(empty_frame_of(source), **shared)), target, facts=facts)
    first = transform(first_input, **shared)
    schema = schema_of_frame(first)

    def tables() -> Iterator[pa.Table]:
        yield frame_to_table(first, schema, what)
        for frame in frames:
            yield frame_to_table(transform(frame, **shared), schema, what)

    return write_tables_atomic(made_ahead(tables()), schema, target, summary, facts)


def compact_parquet_parts(
    parts_dir: Path,
    target: Path,
    schema: pa.Schema,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    summary: SummaryColumns = SummaryColumns(),
    facts: Mapping[str, Any] | None = None,
) -> WrittenPartition:
    """Stream a Spark output folder's part files, in task order, into one file atomically."""
    if not (parts_dir / "_SUCCESS").exists():
        raise FileNotFoundError(
            f"{parts_dir}: expected a committed Spark output (a _SUCCESS marker), found "
            f"{sorted(p.name for p in parts_dir.iterdir()) if parts_dir.is_dir() else 'no folder'}"
        )
    # part-00000-..., part-00001-...: task order, which for a file scan is the input's row order.
    parts = sorted(parts_dir.glob("part-*.parquet"))

    def tables() -> Iterator[pa.Table]:
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=batch_rows):
                table = pa.Table.from_batches([batch]).select(schema.names)
                yield table.cast(schema)

    return write_tables_atomic(tables(), schema, target, summary, facts)


def spark_transform_parquet(
    session: SparkSession,
    source: Path,
    target: Path,
    transform: BatchTransform,
    shared: Mapping[str, Any] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    summary: SummaryColumns = SummaryColumns(),
) -> WrittenPartition:
    """As `stream_transform_parquet`, but the batches run on Spark executors via mapInPandas.

    The output schema comes from the transform of the file's first rows on the driver; Spark
    writes part files into a hidden folder beside `target`, which are then streamed into the
    one-file-per-partition layout and removed.
    """
    from tabml_assets.ml.spark_jobs import map_parquet_with_spark

    shared = dict(shared or {})
    facts = {SOURCE_FILE_FACT: file_identity(source)}
    sample = head_frame_of(source, 1_000)
    if len(sample) == 0:
        # Nothing to distribute: the pandas path writes the empty file with the same schema.
        return stream_transform_parquet(source, target, transform, shared, batch_rows, summary)
    schema = schema_of_frame(transform(sample, **shared))
    parts_dir = target.parent / f"{temp_prefix(target)}spark-{uuid.uuid4().hex}.tmp"
    try:
        map_parquet_with_spark(session, str(source), str(parts_dir), transform, shared, schema)
        return compact_parquet_parts(parts_dir, target, schema, batch_rows, summary, facts)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)


def written_metadata(
    written: Mapping[str, WrittenPartition], time_column: str | None = None, time_label: str = "time"
) -> dict[str, Any]:
    """Row count, column schema and preview of streamed partition writes (one or a range).

    With `time_column` (kept as a range in the summary), also the earliest and latest value
    as `earliest_<time_label>` / `latest_<time_label>` (naive timestamps read as UTC): what
    time the rows really cover.
    """
    non_empty = [w for w in written.values() if w.rows]
    first = non_empty[0] if non_empty else next(iter(written.values()))
    metadata: dict[str, Any] = {
        "dagster/row_count": MetadataValue.int(sum(w.rows for w in written.values())),
        "dagster/column_schema": MetadataValue.table_schema(
            TableSchema(columns=[TableColumn(name=str(c), type=str(t)) for c, t in first.preview.dtypes.items()])
        ),
        "preview": MetadataValue.md(first.preview.to_markdown(index=False)),
    }
    if len(written) == 1:
        metadata["path"] = MetadataValue.path(str(first.path))
    else:
        metadata["rows_per_partition"] = MetadataValue.json({k: w.rows for k, w in written.items()})
    ranges = [w.column_ranges[time_column] for w in non_empty if time_column in w.column_ranges]
    if ranges:
        metadata[f"earliest_{time_label}"] = MetadataValue.timestamp(utc_timestamp(min(r[0] for r in ranges)))
        metadata[f"latest_{time_label}"] = MetadataValue.timestamp(utc_timestamp(max(r[1] for r in ranges)))
    return metadata


def read_record(path: Path, expected: Any) -> Any:
    """A stored JSON value, validated into the pydantic record class the input is annotated with."""
    value = json.loads(path.read_text())
    if not (isinstance(expected, type) and issubclass(expected, pydantic.BaseModel)):
        return value
    try:
        return expected.model_validate(value)
    except pydantic.ValidationError as exc:
        raise ValueError(
            f"{path}: the stored record is not a valid {expected.__name__} ({exc.error_count()} "
            f"field(s) do not fit; written by another tabml version?); materialize that partition "
            f"again. {exc}"
        ) from exc


def key_path(asset: AssetKey | str) -> list[str]:
    return list(asset.path) if isinstance(asset, AssetKey) else [asset]


# Input metadata: hand a partitioned input to the asset as its files, not as one DataFrame.
LOAD_AS_FILES = "tabml/load_as_files"


@dataclass(frozen=True)
class PartitionFiles:
    """A partitioned input as its parquet files, for a step that reads them itself (on Spark)."""

    paths: tuple[str, ...]


class PartitionStore(ConfigurableResource):
    """The storage layout, <root>/<asset key path>/<partition>.parquet: every partition's path,
    read and atomic write goes through this resource, so nothing else names a partition file.

    dev keeps `root` in a local folder; staging and prod point it at a Unity Catalog volume,
    which the cluster mounts as local files, so the same code serves both.
    """

    root: str
    # Rows per batch when a partition is streamed (transform_partition, iter_frames, ingestion).
    stream_batch_rows: int = DEFAULT_BATCH_ROWS

    def path(self, asset: AssetKey | str, partition: str | None, suffix: str = ".parquet") -> Path:
        """<root>/<asset key path>/<partition><suffix> ("latest" for an unpartitioned asset)."""
        folder = self.asset_folder(asset)
        name = safe_segment(partition, "partition key") if partition is not None else "latest"
        return folder / f"{name}{suffix}"

    def asset_folder(self, asset: AssetKey | str) -> Path:
        """The folder holding every partition of `asset` (MLflow's dataset lineage points here)."""
        return Path(self.root).joinpath(*(safe_segment(p, "asset key") for p in key_path(asset)))

    def exists(self, asset: AssetKey | str, partition: str | None, suffix: str = ".parquet") -> bool:
        return self.path(asset, partition, suffix).exists()

    def existing_path(self, asset: AssetKey | str, partition: str | None) -> Path:
        """The parquet file of a materialized partition; names what to materialize if absent."""
        path = self.path(asset, partition)
        if not path.exists():
            name = "/".join(key_path(asset))
            raise FileNotFoundError(
                f"{name}: partition {partition} is not materialized (expected {path}); "
                f"materialize {name} for {partition} first"
            )
        return path

    def read_frame(
        self, asset: AssetKey | str, partition: str | None, columns: list[str] | None = None
    ) -> pd.DataFrame:
        """A stored partition (only `columns` when given), or FileNotFoundError naming it."""
        return pq.read_table(self.existing_path(asset, partition), columns=columns).to_pandas()

    def iter_frames(
        self, asset: AssetKey | str, partition: str | None, batch_rows: int | None = None,
        columns: list[str] | None = None,
    ) -> Iterator[pd.DataFrame]:
        """A stored partition's rows (of `columns`, or all) in frames of at most `batch_rows`
        (the store's batch size)."""
        return iter_parquet_frames(self.existing_path(asset, partition), batch_rows or self.stream_batch_rows, columns)

    def read_schema(self, asset: AssetKey | str, partition: str | None) -> pa.Schema:
        return pq.read_schema(self.existing_path(asset, partition))

    def row_count(self, asset: AssetKey | str, partition: str | None) -> int:
        """Rows of a stored partition from its footer (no data read)."""
        return pq.ParquetFile(self.existing_path(asset, partition)).metadata.num_rows

    def read_summary(self, asset: AssetKey | str, partition: str | None) -> PartitionSummary | None:
        """The stored summary of a materialized partition (FileNotFoundError naming it when the
        partition is absent), or None when it has none that describes its file as it is now:
        written by an older tabml, or the file replaced since. Callers then read the file."""
        return read_summary_of(self.existing_path(asset, partition))

    def derived_from_current(self, target_asset: AssetKey | str, source_asset: AssetKey | str, partition: str) -> bool:
        """Whether `target_asset`'s partition was transformed (`transform_partition`) from
        `source_asset`'s file as that file is now: neither replaced since."""
        target, source = self.path(target_asset, partition), self.path(source_asset, partition)
        if not (target.exists() and source.exists()):
            return False
        summary = read_summary_of(target)
        return summary is not None and summary.facts.get(SOURCE_FILE_FACT) == file_identity(source)

    def write_frame(self, asset: AssetKey | str, partition: str | None, frame: pd.DataFrame) -> Path:
        """Replace the partition's file with `frame`, atomically."""
        path = self.path(asset, partition)
        write_parquet_atomic(frame, path)
        return path

    def write_tables(
        self,
        asset: AssetKey | str,
        partition: str | None,
        tables: Iterable[pa.Table],
        schema: pa.Schema,
        summary: SummaryColumns = SummaryColumns(),
        facts: Mapping[str, Any] | None = None,
    ) -> WrittenPartition:
        """Stream `tables` into the partition's file, atomically, with its summary beside it."""
        return write_tables_atomic(tables, schema, self.path(asset, partition), summary, facts)

    def stage(
        self,
        asset: AssetKey | str,
        partition: str | None,
        schema: pa.Schema,
        summary: SummaryColumns = SummaryColumns(),
        writes: BackgroundWrites | None = None,
    ) -> StagedPartition:
        """A new version of the partition, written batch by batch (in `writes`' thread, when
        given) and put in place by `commit`."""
        return StagedPartition(self.path(asset, partition), schema, summary, writes)

    def read_record(self, asset: AssetKey | str, partition: str | None) -> Any:
        return json.loads(self.path(asset, partition, ".json").read_text())

    def write_text(self, asset: AssetKey | str, partition: str | None, suffix: str, text: str) -> Path:
        """An asset partition's document (e.g. the evaluation's HTML report), written atomically."""
        path = self.path(asset, partition, suffix)
        atomic_write_bytes(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return path

    def write_record(self, asset: AssetKey | str, partition: str | None, value: Any) -> Path:
        path = self.path(asset, partition, ".json")
        write_json_atomic(value, path)
        return path

    def transform_partition(
        self,
        source_asset: AssetKey | str,
        target_asset: AssetKey | str,
        partition: str,
        transform: BatchTransform,
        shared: Mapping[str, Any] | None = None,
        spark: SparkSession | None = None,
        summary: SummaryColumns = SummaryColumns(),
    ) -> WrittenPartition:
        """Write `target_asset`'s partition as `transform` of `source_asset`'s, batch by batch.

        With a Spark session the batches run distributed (mapInPandas, `shared` broadcast);
        without one they stream through this process. Both write the same file.
        """
        source = self.existing_path(source_asset, partition)
        target = self.path(target_asset, partition)
        if spark is not None:
            return spark_transform_parquet(
                spark, source, target, transform, shared, self.stream_batch_rows, summary
            )
        return stream_transform_parquet(source, target, transform, shared, self.stream_batch_rows, summary)


class PartitionedParquetIOManager(ConfigurableIOManager):
    """Stores DataFrames as parquet partitions of the partition store and dicts as .json beside them."""

    store: PartitionStore

    def _path(self, asset_key_path: list[str], partition: str | None, suffix: str) -> Path:
        return self.store.path(AssetKey(asset_key_path), partition, suffix)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            return
        key = list(context.asset_key.path)
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        if isinstance(obj, Mapping) and all(isinstance(v, pd.DataFrame) for v in obj.values()) and obj:
            # Partitioned tables arrive as one frame per partition key (several in a range run).
            expected = set(partitions)
            if set(obj) != expected:
                raise ValueError(
                    f"{'/'.join(key)}: expected frames for partitions {sorted(p for p in expected if p)}, "
                    f"found {sorted(obj)}"
                )
            for partition, frame in obj.items():
                self.store.write_frame(context.asset_key, partition, frame)
            return
        if len(partitions) != 1:
            raise ValueError(
                f"{'/'.join(key)}: a run over {len(partitions)} partitions must return a "
                f"mapping of partition key -> DataFrame, found {type(obj).__name__}"
            )
        if isinstance(obj, pd.DataFrame):
            self.store.write_frame(context.asset_key, partitions[0], obj)
        else:
            # Typed records (tabml_assets/ml/records.py) are stored as their fields.
            value = obj.model_dump() if isinstance(obj, pydantic.BaseModel) else obj
            write_json_atomic(value, self._path(key, partitions[0], ".json"))

    def load_input(self, context: InputContext) -> Any:
        key = list(context.asset_key.path)
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        if (context.definition_metadata or {}).get(LOAD_AS_FILES):
            return PartitionFiles(
                tuple(str(self.store.existing_path(context.asset_key, p)) for p in partitions if p)
            )
        frames: list[pd.DataFrame] = []
        missing: list[str] = []
        for partition in partitions:
            if self.store.exists(context.asset_key, partition):
                frames.append(self.store.read_frame(context.asset_key, partition))
                continue
            as_json = self._path(key, partition, ".json")
            if as_json.exists() and len(partitions) == 1:
                return read_record(as_json, context.dagster_type.typing_type)
            missing.append(partition or "(unpartitioned)")
        if missing:
            raise FileNotFoundError(
                f"{'/'.join(key)}: partitions {missing} are not materialized under {Path(self.store.root)}; "
                f"materialize {'/'.join(key)} for them first"
            )
        if len(frames) == 1:
            return frames[0]
        non_empty = [f for f in frames if len(f)]
        return pd.concat(non_empty or frames[:1], ignore_index=True)
