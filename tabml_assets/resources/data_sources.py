"""Data sources: interchangeable resources that deliver UTC days of a project's raw rows.

Sources deliver rows as they are, with where each row came from; `raw_data` then validates them
and quarantines the bad ones. A source raises `UnreadableFileError` only for input that cannot
be used at all (a corrupt file, a missing or wholly mistyped column, ambiguous dates), naming the
file, the column and what was expected. Every source reads its columns, types and time axis from
the project's dataset spec, which it carries as JSON config (resources are config, not Python
objects).

The landing folder keeps files apart: a file that cannot be used holds back only the days it
has rows for, and an index beside the files records which days each file holds, so a run reads
only the files that touch its days (see `LandingIndex`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import importlib
import json
import logging
import lzma
import os
import re
import time
import zipfile
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from dagster import ConfigurableResource
from pandas.api.types import pandas_dtype

from tabml_assets.ml.quality import REASON_SEPARATOR
from tabml_assets.ml.schema import as_text_objects, raw_columns, unvalidated_schema
from tabml_assets.resources.storage import write_json_atomic, write_parquet_atomic
from tabml_assets.spec import DatasetSpec

log = logging.getLogger("tabml.landing")

# The landed files tabml reads, by how their name ends (matched case-insensitively):
# suffix -> (format, compression). Parquet's own codecs (snappy, gzip, zstd, ...) need nothing.
LANDING_FORMATS: dict[str, tuple[str, str | None]] = {
    ".parquet": ("parquet", None),
    ".parquet.gz": ("parquet", "gzip"),
    ".csv": ("csv", None),
    ".csv.gz": ("csv", "gzip"),
    ".csv.bz2": ("csv", "bz2"),
    ".csv.xz": ("csv", "xz"),
    ".csv.zip": ("csv", "zip"),
}
SOURCE_FILE_COLUMN = "source_file"
SOURCE_ROW_COLUMN = "source_row"
# Problems found while reading a row (e.g. "unparseable temperature"); "" when none.
READ_PROBLEMS_COLUMN = "read_problems"
SAMPLE_VALUES = 3
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "0.0"})
# Plain UTF-8, and UTF-8 with the byte-order mark spreadsheet exports start with.
DEFAULT_ENCODING = "utf-8-sig"
# Numeric dates whose order of day and month the text does not tell: 05/11/2026, 5.11.26.
NUMERIC_DATE = r"^\s*(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4}|\d{2})(?!\d)(.*)$"
NUMERIC_DATE_START = r"^\s*\d{1,2}[/.\-]\d{1,2}[/.\-]\d"
# Pandas' default missing-value markers: arrow reads a CSV cell as missing where pandas always did.
CSV_NULL_VALUES = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
    "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]
# The strptime directives of a dataset.datetime_format that arrow parses in a CSV (the others,
# such as a zone or a month's name, are left to pandas).
ARROW_DATETIME_DIRECTIVES = frozenset("YmdHMS%")
# Bytes of CSV text arrow parses at a time: with the batch size, what bounds a stream's memory.
# Arrow's default; its reader holds a few dozen blocks' worth in flight, so larger blocks cost
# memory (about 500 MiB at 16 MiB) and bring no speed.
CSV_BLOCK_BYTES = 2**20
INDEX_FILE = ".tabml_landing_index.json"
# Files up to this size are read whole when first seen, so every problem is reported at once;
# larger ones are skimmed (column names and event times) and checked whole by their day's run.
FULL_READ_BYTES = 16 * 2**20
# Rows per batch when a large file is skimmed or streamed into a day (see storage.DEFAULT_BATCH_ROWS).
SKIM_BATCH_ROWS = 1_000_000
INDEX_VERSION = 1
# Days between a file's first and last event time up to which they are counted in an array.
DAY_COUNT_SPAN = 100_000


@functools.lru_cache(maxsize=32)
def parse_dataset(dataset_json: str) -> DatasetSpec:
    return DatasetSpec.model_validate_json(dataset_json)


class UnreadableFileError(ValueError):
    """A landed file that cannot be read as the dataset's rows; names the file, column and expectation."""


@dataclass(frozen=True)
class FileFacts:
    """What one landed file holds, as far as routing and accounting for its rows go.

    Facts depend on the file's bytes and the dataset spec only (never on the clock), so they
    can be computed once per content and kept in the landing index.
    """

    # Size, mtime, ctime and inode when the facts were taken (see `file_fingerprint`).
    fingerprint: str
    rows: int = 0
    # UTC day (partition key) -> rows whose event time falls on it, in or outside the partitions.
    event_days: Mapping[str, int] = field(default_factory=dict)
    # Rows without a usable event time: they go to the file's main day, to be quarantined there.
    missing_event_time: int = 0
    # Why the file cannot be used (None: it can). `event_days` still name the days it would
    # feed when its event times could be read; `days_known` is False when they could not (the
    # days are then those of the file's earlier content, if any).
    error: str | None = None
    days_known: bool = True
    empty: bool = False

    @property
    def usable(self) -> bool:
        return self.error is None

    @property
    def main_day(self) -> str | None:
        """The day most of the file's rows fall on (the earliest of equals)."""
        if not self.event_days:
            return None
        return min(self.event_days, key=lambda day: (-self.event_days[day], day))

    def touches(self, day: str) -> bool:
        return day in self.event_days

    def rows_per_day(self) -> dict[str, int]:
        """Rows each day receives from the file, those without an event time included."""
        days = dict(self.event_days)
        main = self.main_day
        if self.missing_event_time and main is not None:
            days[main] += self.missing_event_time
        return days

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "event_days": dict(self.event_days)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FileFacts:
        return cls(
            fingerprint=str(raw["fingerprint"]),
            rows=int(raw.get("rows", 0)),
            event_days={str(k): int(v) for k, v in dict(raw.get("event_days", {})).items()},
            missing_event_time=int(raw.get("missing_event_time", 0)),
            error=None if raw.get("error") is None else str(raw["error"]),
            days_known=bool(raw.get("days_known", True)),
            empty=bool(raw.get("empty", False)),
        )


@dataclass(frozen=True)
class LandedDay:
    """What is known of one UTC day's delivery besides its rows (which `LandedRun` streams).

    A file found unusable while its rows stream moves, for the days it touches, from `files`
    to `blocking_files` (and to `set_aside_files`) once the stream reaches it.
    """

    files: list[str] = field(default_factory=list)
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)
    empty_files: list[str] = field(default_factory=list)
    # Whole-file facts of the landed files this day's rows came from (for the row accounting).
    file_facts: dict[str, FileFacts] = field(default_factory=dict)
    # Files with rows for this day that cannot be used -> why: the day must not be stored without them.
    blocking_files: dict[str, str] = field(default_factory=dict)
    # Every file in the folder that cannot be used -> why: set aside, named on every day.
    set_aside_files: dict[str, str] = field(default_factory=dict)
    # Files in the folder that are not in a landing format, named instead of silently ignored.
    unsupported_files: list[str] = field(default_factory=list)
    # The files the read opened (the index answered for the others), and how many there are.
    files_read: list[str] = field(default_factory=list)
    files_in_folder: int = 0


@dataclass
class LandedRun:
    """The days of one run as delivered: the facts of each day, and its rows as a single-use
    stream of (day, batch) in delivery order, each batch in the unvalidated layout (the
    dataset's columns in unvalidated dtypes plus SOURCE_FILE_COLUMN, SOURCE_ROW_COLUMN and
    READ_PROBLEMS_COLUMN). The stream raises UnreadableFileError for input that cannot be used
    at all; a landing file that cannot be used only blocks its days."""

    days: dict[dt.date, LandedDay]
    batches: Iterator[tuple[dt.date, pd.DataFrame]]


def empty_unvalidated_rows(dataset: DatasetSpec) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=t) for c, t in unvalidated_schema(dataset).items()})
    frame[SOURCE_FILE_COLUMN] = pd.Series(dtype="object")
    frame[SOURCE_ROW_COLUMN] = pd.Series(dtype="int64")
    frame[READ_PROBLEMS_COLUMN] = pd.Series(dtype="object")
    return frame


def as_unvalidated_rows(frame: pd.DataFrame, dataset: DatasetSpec, source: str) -> pd.DataFrame:
    """Rows a source delivered as a frame (demo, a loader, Databricks) in the unvalidated layout.

    They go through the same coercion as a landed file, so a loader's strings or a table's
    time-zone-aware timestamps are typed exactly as the spec says.
    """
    coerced, problems, _ = coerce_landed_frame(frame, dataset, source)
    coerced[SOURCE_FILE_COLUMN] = source
    coerced[SOURCE_ROW_COLUMN] = range(len(coerced))
    coerced[READ_PROBLEMS_COLUMN] = problems
    return coerced


class DataSource(ConfigurableResource, ABC):
    """Where a project's raw rows come from."""

    # The project's dataset spec (DatasetSpec as JSON): columns, types, event time, time zone.
    dataset_spec: str

    @property
    def dataset(self) -> DatasetSpec:
        return parse_dataset(self.dataset_spec)

    @abstractmethod
    def read_day(self, day: dt.date) -> pd.DataFrame:
        """All rows whose event time falls on `day` (UTC), as the source has them."""

    def land_days(
        self, days: Sequence[dt.date], now: dt.datetime, batch_rows: int = SKIM_BATCH_ROWS
    ) -> LandedRun:
        """Each day's rows as delivered, with their provenance; `raw_data` validates them.

        A source that reads a day as one frame (demo rows, a loader, a table) delivers it as
        one batch: the frame is in memory anyway.
        """

        def batches() -> Iterator[tuple[dt.date, pd.DataFrame]]:
            for day in days:
                yield day, as_unvalidated_rows(self.read_day(day), self.dataset, self.describe())

        return LandedRun({day: LandedDay() for day in days}, batches())

    def describe(self) -> str:
        return type(self).__name__


def steps_function(module_name: str, function: str) -> Callable[..., Any]:
    """A function of a project's steps module, imported when definitions loaded the project."""
    return getattr(importlib.import_module(module_name), function)


class DemoSource(DataSource):
    """The project's own demo rows (`demo_rows(day, rows)` in its steps module)."""

    steps_module: str
    rows_per_day: int = 2000

    def read_day(self, day: dt.date) -> pd.DataFrame:
        return steps_function(self.steps_module, "demo_rows")(day, self.rows_per_day)

    def describe(self) -> str:
        return f"demo rows of {self.steps_module} ({self.rows_per_day} rows/day)"


class StepsLoaderSource(DataSource):
    """The project's own loader (`load_day(day)` in its steps module)."""

    steps_module: str

    def read_day(self, day: dt.date) -> pd.DataFrame:
        return steps_function(self.steps_module, "load_day")(day)

    def describe(self) -> str:
        return f"loader {self.steps_module}.load_day"


# Reading landed files ---------------------------------------------------------------------------


def landing_format(name: str) -> tuple[str, str | None] | None:
    """(format, compression) of a landed file's name, any case; None for a file tabml does not read."""
    lower = name.lower()
    for suffix in sorted(LANDING_FORMATS, key=len, reverse=True):
        if lower.endswith(suffix):
            return LANDING_FORMATS[suffix]
    return None


def _read_parquet(path: Path, compression: str | None, columns: list[str] | None) -> pd.DataFrame:
    if compression is None:
        return pq.read_table(path, columns=columns).to_pandas()
    # A compressed stream is not seekable, and parquet's footer is at the end: read it whole.
    with pa.input_stream(str(path), compression=compression) as stream:
        return pq.read_table(pa.BufferReader(stream.read()), columns=columns).to_pandas()


def _undecodable(path: Path, encoding: str | None, exc: UnicodeDecodeError) -> UnreadableFileError:
    found = f"byte 0x{exc.object[exc.start]:02x}, which is not {exc.encoding}"
    if encoding:
        return UnreadableFileError(
            f"{path}: cannot be decoded as the declared dataset.encoding {encoding!r} ({found}); "
            "fix the file or dataset.encoding in the project's pipeline.yaml"
        )
    return UnreadableFileError(
        f"{path}: cannot be decoded as text: tried utf-8 (with or without a byte-order mark), "
        f"found {found}; declare the file's encoding as dataset.encoding in the project's "
        "pipeline.yaml (e.g. latin-1, cp1252, utf-16)"
    )


def _csv_options(compression: str | None, encoding: str | None, columns: list[str] | None) -> dict[str, Any]:
    # Strings first: each column is parsed by the schema, so one bad value marks one row.
    return {"dtype": str, "encoding": encoding or DEFAULT_ENCODING, "compression": compression, "usecols": columns}


def _read_csv(
    path: Path,
    compression: str | None,
    encoding: str | None,
    columns: list[str] | None,
    rows: int | None = None,
) -> pd.DataFrame:
    try:
        return pd.read_csv(path, nrows=rows, **_csv_options(compression, encoding, columns))
    except UnicodeDecodeError as exc:
        raise _undecodable(path, encoding, exc) from None


def _iter_csv_with_pandas(
    path: Path,
    compression: str | None,
    encoding: str | None,
    columns: list[str] | None,
    batch_rows: int | None,
    skip: int = 0,
) -> Iterator[pd.DataFrame]:
    """The file's rows after the first `skip` through pandas, every cell a Python string: slow,
    but it tolerates and refuses exactly what tabml always has (short rows, bad bytes)."""
    try:
        if batch_rows is None:
            chunks: Iterable[pd.DataFrame] = [pd.read_csv(path, **_csv_options(compression, encoding, columns))]
        else:
            chunks = pd.read_csv(path, chunksize=batch_rows, **_csv_options(compression, encoding, columns))
        seen = 0
        for chunk in chunks:
            seen += len(chunk)
            if seen > skip:
                yield chunk.iloc[max(0, len(chunk) - (seen - skip)) :]
    except UnicodeDecodeError as exc:
        raise _undecodable(path, encoding, exc) from None


@contextlib.contextmanager
def _csv_stream(path: Path, compression: str | None) -> Iterator[Any]:
    """The file's decompressed bytes as something arrow's CSV reader streams from."""
    if compression is None:
        yield str(path)
    elif compression in ("gzip", "bz2"):
        with pa.input_stream(str(path), compression=compression) as stream:
            yield stream
    elif compression == "xz":  # arrow has no xz codec: Python's, read through arrow's file adapter
        with lzma.open(path) as stream:
            yield stream
    else:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
            if len(members) != 1:
                # Pandas names the problem (no file, or several, in the archive).
                raise _NotReadByArrow(f"{len(members)} files in the zip archive")
            with archive.open(members[0]) as stream:
                yield stream


class _NotReadByArrow(ValueError):
    """Arrow would read the file differently from pandas (its header, its archive): pandas reads it."""


def _arrow_csv_tables(
    path: Path,
    compression: str | None,
    encoding: str | None,
    names: list[str],
    columns: list[str],
    batch_rows: int | None,
) -> Iterator[pa.Table]:
    """The rows of a CSV with header `names` as tables of `columns`, `batch_rows` rows each (the
    last fewer; None: one table), every cell as text, read `CSV_BLOCK_BYTES` at a time."""
    read_options = pacsv.ReadOptions(
        block_size=CSV_BLOCK_BYTES,
        # Arrow's utf8 skips a byte-order mark, as the default utf-8-sig does.
        encoding="utf8" if encoding is None else encoding,
    )
    convert_options = pacsv.ConvertOptions(
        # Text, not inferred types: a column inferred from its first block could fail on a later one.
        column_types={name: pa.string() for name in names},
        include_columns=columns,
        null_values=CSV_NULL_VALUES,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    with _csv_stream(path, compression) as stream:
        reader = pacsv.open_csv(
            stream,
            read_options=read_options,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=convert_options,
        )
        if reader.schema.names != columns:
            raise _NotReadByArrow(f"arrow reads the header as {reader.schema.names}, pandas as {columns}")
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            pending.append(batch)
            rows += batch.num_rows
            while batch_rows is not None and rows >= batch_rows:
                table = pa.Table.from_batches(pending, reader.schema)
                yield table.slice(0, batch_rows)
                pending = table.slice(batch_rows).to_batches()
                rows -= batch_rows
        if rows:
            yield pa.Table.from_batches(pending, reader.schema)


def _datetime_cells(text: pa.ChunkedArray, dataset: DatasetSpec) -> pa.ChunkedArray:
    fmt = dataset.datetime_format
    if fmt is None:
        # ISO 8601 without an offset: a zoned value makes the batch's column text, parsed as before.
        return pc.cast(text, pa.timestamp("us"))
    if not set(re.findall("%(.)", fmt)) <= ARROW_DATETIME_DIRECTIVES:
        raise pa.ArrowInvalid(f"datetime_format {fmt!r} is left to pandas")
    parsed = pc.strptime(text, format=fmt, unit="us", error_is_null=False)
    # Arrow's strptime is the C library's, which reads 31/02 as 3 March and skips leading spaces
    # where pandas refuses both: arrow's reading counts only when every value is written exactly
    # as the format writes the time it was read as.
    if not pc.all(pc.equal(pc.strftime(parsed, format=fmt), text)).as_py():
        raise pa.ArrowInvalid(f"values not written as datetime_format {fmt!r} writes them")
    return parsed


def _cast_csv_cells(text: pa.ChunkedArray, column_type: str, dataset: DatasetSpec) -> pa.ChunkedArray:
    """A column of CSV cells in the type arrow reads the spec's `column_type` as, or ArrowInvalid."""
    if column_type in ("float", "integer"):
        # Integers too go through float64, as pandas' coercion does with text (it then refuses fractions).
        return pc.cast(text, pa.float64())
    if column_type == "datetime":
        return _datetime_cells(text, dataset)
    # Strings are the text; booleans' words are matched by pandas, case-insensitively.
    return text


def _csv_frame(table: pa.Table, dataset: DatasetSpec) -> pd.DataFrame:
    """One table of CSV text as the frame `coerce_landed_frame` types.

    A column arrow casts whole (numbers, ISO timestamps) arrives typed, with no Python object
    per cell; a column with one cell it cannot cast arrives as Python strings, as pandas would
    read it, so that batch's column is coerced and its bad cells quarantined exactly as before.
    Columns the dataset does not declare stay arrow text: only their names are used.
    """
    declared = [name for name in table.column_names if name in dataset.columns]
    cells: list[pa.ChunkedArray] = []
    for name in declared:
        text = table.column(name)
        try:
            cells.append(_cast_csv_cells(text, dataset.columns[name].type, dataset))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cells.append(text)
    frame = pa.Table.from_arrays(cells, names=declared).to_pandas()
    for position, name in enumerate(table.column_names):
        if name not in dataset.columns:
            frame.insert(position, name, pd.arrays.ArrowExtensionArray(table.column(name)))
    return frame


def _iter_csv(
    path: Path, compression: str | None, dataset: DatasetSpec, columns: list[str] | None, batch_rows: int | None
) -> Iterator[pd.DataFrame]:
    """A CSV's rows in frames of at most `batch_rows` rows (None: one frame), read by arrow's
    streaming reader; from the first block arrow refuses (a short row, a bad byte, a header it
    names differently), pandas reads the rest, so every file is accepted or refused as before."""
    encoding = dataset.encoding
    # Pandas reads the header: a missing, empty or undecodable one is refused as it always was.
    names = [str(name) for name in _read_csv(path, compression, encoding, None, 0).columns]
    wanted = names if columns is None else [name for name in names if name in columns]
    if len(wanted) != len(set(columns or names)):
        # A requested column the file lacks, or a repeated name: refused or renamed by pandas.
        yield from _iter_csv_with_pandas(path, compression, encoding, columns, batch_rows)
        return
    delivered = 0
    tables = _arrow_csv_tables(path, compression, encoding, names, wanted, batch_rows)
    while True:
        try:
            table = next(tables)
        except StopIteration:
            return
        except (pa.ArrowException, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            log.info("%s: read by pandas from row %d on, as arrow cannot (%s)", path, delivered, exc)
            break
        frame = _csv_frame(table, dataset)
        delivered += len(frame)
        yield frame
    yield from _iter_csv_with_pandas(path, compression, encoding, columns, batch_rows, skip=delivered)


def _format_of(path: Path) -> tuple[str, str | None, str]:
    """(format, compression, how to name it) of a landed file, or UnreadableFileError."""
    detected = landing_format(path.name)
    if detected is None:
        raise UnreadableFileError(
            f"{path}: not a landing file; expected a name ending in {', '.join(LANDING_FORMATS)} (any case)"
        )
    kind, compression = detected
    return kind, compression, kind if compression is None else f"{compression}-compressed {kind}"


@contextlib.contextmanager
def _unreadable_as(path: Path, what: str) -> Iterator[None]:
    """A reader's errors as UnreadableFileError naming the file and the format it was read as."""
    try:
        yield
    except UnreadableFileError:
        raise
    except (pa.ArrowException, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        # ValueError covers pandas' parser errors and a zip archive holding several files.
        raise UnreadableFileError(
            f"{path}: cannot be read as {what} ({type(exc).__name__}: {exc})"
        ) from None


def read_landing_frame(
    path: Path, dataset: DatasetSpec, columns: list[str] | None = None, header_only: bool = False
) -> pd.DataFrame:
    """A landed file's table as it is (CSV cells typed where arrow casts a whole column, else
    strings), or UnreadableFileError saying why not; only `columns` when given, no rows with
    `header_only`."""
    kind, compression, what = _format_of(path)
    with _unreadable_as(path, what):
        if kind == "parquet":
            if header_only and compression is None:
                return pq.read_schema(path).empty_table().to_pandas()
            return _read_parquet(path, compression, columns)
        if not header_only:
            for whole in _iter_csv(path, compression, dataset, columns, None):
                return whole
        return _read_csv(path, compression, dataset.encoding, columns, 0)


def iter_landing_frames(
    path: Path, dataset: DatasetSpec, batch_rows: int, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """A landed file's table in frames of at most `batch_rows` rows (CSV cells as `_csv_frame`
    gives them), at least one (with the file's columns) even for a file without rows;
    UnreadableFileError, at any batch, when the file cannot be read.

    Parquet is read a row group at a time and CSV a block at a time, so memory does not grow
    with the file. A gzip-compressed parquet file is the exception: its stream cannot seek to
    the footer, so it is read whole and then sliced.
    """
    kind, compression, what = _format_of(path)
    with _unreadable_as(path, what):
        if kind == "parquet" and compression is None:
            file = pq.ParquetFile(path)
            frames: Iterable[pd.DataFrame] = (
                batch.to_pandas() for batch in file.iter_batches(batch_size=batch_rows, columns=columns)
            )
            empty = file.schema_arrow.empty_table()
            header = (empty.select(columns) if columns else empty).to_pandas()
        elif kind == "parquet":
            whole = _read_parquet(path, compression, columns)
            frames = (whole.iloc[start : start + batch_rows] for start in range(0, len(whole), batch_rows))
            header = whole.iloc[:0]
        else:
            frames = _iter_csv(path, compression, dataset, columns, batch_rows)
            header = None
        delivered = False
        for frame in frames:
            delivered = True
            yield frame
        if not delivered:
            yield header if header is not None else _read_csv(path, compression, dataset.encoding, columns, 0)


def _describe_values(values: pd.Series) -> str:
    return repr([str(v)[:40] for v in values.head(SAMPLE_VALUES).tolist()])


def _first_present(values: pd.Series, present: np.ndarray) -> pd.Series:
    """The first SAMPLE_VALUES values where `present` holds (an error's examples)."""
    return values.iloc[np.flatnonzero(present)[:SAMPLE_VALUES]]


def _as_utc(parsed: pd.Series, timezone: str) -> pd.Series:
    if parsed.dt.tz is None:
        return parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert(
            "UTC"
        )
    return parsed.dt.tz_convert("UTC")


def _numeric_dates_as_iso(text: pd.Series, day_first: bool | None, where: str) -> pd.Series:
    """Numeric day/month dates (05/11/2026 08:00) rewritten as ISO dates in the declared order.

    Without a declared order they are refused: 05/11/2026 is 5 November in most of the world and
    May 11 in the US, and a guess would put rows on the wrong day without a word.
    """
    candidates = _matches(text, NUMERIC_DATE_START)
    if not candidates.any():
        return text
    parts = text[candidates].str.extract(NUMERIC_DATE)
    parts = parts[parts[0].notna()]
    if parts.empty:
        return text
    first, second, year = (parts[i].astype("int64") for i in range(3))
    if day_first is None:
        samples = _describe_values(text[parts.index])
        hint = ""
        if (first > 12).any():
            hint = f"; {text[first[first > 12].index[0]]!r} suggests the day comes first"
        elif (second > 12).any():
            hint = f"; {text[second[second > 12].index[0]]!r} suggests the month comes first"
        raise UnreadableFileError(
            f"{where} has dates such as {samples} whose order of day and month is ambiguous{hint}; "
            "expected ISO 8601 (2026-11-05 08:00) or a declared order: set dataset.day_first "
            "(true: 05/11/2026 is 5 November; false: May 11) or dataset.datetime_format "
            "(e.g. '%d/%m/%Y %H:%M') in the project's pipeline.yaml"
        )
    day, month = (first, second) if day_first else (second, first)
    # Two-digit years as strptime's %y reads them: 69-99 -> 19xx, 00-68 -> 20xx.
    year = year.where(year >= 100, year + np.where(year < 69, 2000, 1900))
    iso = (
        year.astype(str).str.zfill(4)
        + "-"
        + month.astype(str).str.zfill(2)
        + "-"
        + day.astype(str).str.zfill(2)
        + parts[3]
    )
    rewritten = text.astype("object")
    rewritten[iso.index] = iso
    return rewritten.astype("string")


def _to_utc(values: pd.Series, dataset: DatasetSpec, where: str) -> pd.Series:
    """Timestamps as UTC; those without a zone are read in the dataset's `timezone`."""
    timezone = dataset.timezone
    if pd.api.types.is_datetime64_any_dtype(values):
        return _as_utc(values, timezone)
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        # Epoch numbers are not timestamps in a file: a wrong type, not a value to guess.
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    text = values.astype("string")
    if dataset.datetime_format is not None:
        fmt = dataset.datetime_format
        # A format with an offset (%z) makes every value name its instant.
        return _as_utc(pd.to_datetime(text, format=fmt, errors="coerce", utc="%z" in fmt), timezone)
    text = _numeric_dates_as_iso(text, dataset.day_first, where)
    if timezone == "UTC":
        return _parse_timestamps(text, utc=True)
    # Strings with an offset name their instant; the others are wall-clock times in `timezone`.
    has_offset = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)\s*$", regex=True, na=False)
    aware = _parse_timestamps(text.where(has_offset), utc=True)
    naive = _parse_timestamps(text.where(~has_offset), utc=False)
    local = naive.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    return aware.where(has_offset, local)


def _to_boolean(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values.astype("boolean")
    words = values.astype("string").str.strip().str.lower()
    parsed = pd.Series(pd.NA, index=values.index, dtype="boolean")
    parsed[words.isin(TRUE_WORDS).fillna(False).to_numpy(dtype=bool)] = True
    parsed[words.isin(FALSE_WORDS).fillna(False).to_numpy(dtype=bool)] = False
    return parsed


def _to_string(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.Series(None, index=values.index, dtype="object")
    text = as_text_objects(values)
    return as_text_objects(text.map(lambda v: v if v is None or isinstance(v, str) else str(v)))


def _as_arrow_text(values: pd.Series) -> pa.Array | None:
    """The values as an arrow string array, or None when they are not all strings (or null)."""
    if not (isinstance(values.dtype, pd.StringDtype) or values.dtype == object):
        return None
    try:
        return pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _to_number(values: pd.Series) -> pd.Series:
    """Numbers from any values, anything unparseable missing. Text (a CSV's cells) is cast by
    arrow when every value is a plain number, which is several times faster than pandas."""
    text = _as_arrow_text(values)
    if text is not None:
        try:
            numbers = pc.cast(text, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # some value is not a plain number: pandas marks it missing, row by row
        else:
            return pd.Series(numbers.to_numpy(zero_copy_only=False), index=values.index)
    return pd.to_numeric(values, errors="coerce")


def _matches(text: pd.Series, pattern: str) -> np.ndarray:
    """Which values match the regular expression (RE2 syntax) from their start; null never."""
    arrow_text = _as_arrow_text(text)
    if arrow_text is None:
        return text.str.contains(pattern, regex=True, na=False).to_numpy(dtype=bool)
    return pc.fill_null(pc.match_substring_regex(arrow_text, pattern), False).to_numpy(zero_copy_only=False)


def non_blank(values: pd.Series) -> pd.Series:
    """Which values hold more than whitespace (computed by arrow: a CSV has one per cell)."""
    try:
        text = pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Not all strings (a loader's mixed objects): pandas' own, slower path.
        return values.astype("string").str.strip().ne("").fillna(False).astype(bool)
    blank = pc.equal(pc.utf8_trim_whitespace(text), "")
    return pd.Series(~pc.fill_null(blank, True).to_numpy(zero_copy_only=False), index=values.index)


def _parse_timestamps(text: pd.Series, utc: bool) -> pd.Series:
    """Timestamps in any format pandas reads; ISO 8601 first, which is several times faster."""
    parsed = pd.to_datetime(text, errors="coerce", utc=utc, format="ISO8601")
    retry = (parsed.isna() & text.notna()).to_numpy(dtype=bool)
    if retry.any():
        parsed[retry] = pd.to_datetime(text[retry], errors="coerce", utc=utc, format="mixed")
    return parsed


def already_typed(values: pd.Series, dtype: str, timezone: str) -> bool:
    """Whether `values` need no parsing to become `dtype`: plain floats or integers for those,
    and timestamps without a zone for a dataset whose zone is UTC (naive means UTC there)."""
    kind = values.dtype.kind if isinstance(values.dtype, np.dtype) else None
    if dtype == "float64":
        return kind == "f"
    if dtype == "Int64":
        return kind in ("i", "u")
    if dtype.startswith("datetime"):
        return kind == "M" and timezone == "UTC"
    return False


def _coerce_column(values: pd.Series, dtype: str, dataset: DatasetSpec, where: str) -> pd.Series:
    """`values` in `dtype`; anything that does not parse becomes missing."""
    if already_typed(values, dtype, dataset.timezone):
        # A parquet column of the declared type: nothing to parse (the common case, and the
        # one that costs most per row otherwise).
        return values.astype(pandas_dtype(dtype), copy=False)
    if dtype.startswith("datetime"):
        return _to_utc(values, dataset, where).dt.tz_convert(None).astype(pandas_dtype(dtype))
    if dtype == "object":
        return _to_string(values)
    if dtype == "boolean":
        return _to_boolean(values)
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.Series(pd.NA, index=values.index, dtype=dtype)
    numeric = _to_number(values)
    if dtype == "Int64":
        numeric = numeric.astype("Float64")
        numeric = numeric.where((numeric % 1 == 0).fillna(False))
        return numeric.astype("Int64")
    return numeric.astype("Float64").astype(pandas_dtype(dtype))


def _case_hints(missing: list[str], found: Iterable[object]) -> str:
    by_lower = {str(c).lower(): str(c) for c in found}
    hints = [
        f"{by_lower[m.lower()]!r} differs from {m!r} only in case"
        for m in missing
        if m.lower() in by_lower
    ]
    return f" ({'; '.join(hints)}: column names are case-sensitive)" if hints else ""


def missing_columns(found: Sequence[object], dataset: DatasetSpec, source: str) -> str | None:
    """Which of the dataset's columns (labels aside) a file lacks, or None."""
    columns = raw_columns(dataset)
    missing = [c for c in columns if c not in found and c not in dataset.label_columns]
    if not missing:
        return None
    return (
        f"{source}: missing column(s) {missing}; expected columns {columns}, "
        f"found {[str(c) for c in found]}{_case_hints(missing, found)}"
    )


@dataclass
class ColumnTally:
    """Whole-file facts of the columns of a file read in batches: a column empty in every row,
    or whose every value fails to parse, makes the file unusable, which only the last batch tells."""

    rows: int = 0
    read: set[str] = field(default_factory=set)
    present: Counter[str] = field(default_factory=Counter)
    parsed: Counter[str] = field(default_factory=Counter)
    # column -> (dtype, examples) of the first batch with values, to name in the error.
    found: dict[str, tuple[str, str]] = field(default_factory=dict)

    def problem(self, dataset: DatasetSpec, source: str) -> str | None:
        """The error the whole file would have raised, in column order, or None."""
        for column in unvalidated_schema(dataset):
            if column not in self.read:
                continue  # a label column the file does not carry
            declared = dataset.columns[column].type
            if self.rows and not self.present[column] and not dataset.is_nullable(column):
                return (
                    f"{source}: column {column!r} is empty in all {self.rows} rows; "
                    f"expected {declared} values"
                )
            if self.present[column] and not self.parsed[column]:
                dtype, examples = self.found[column]
                return f"{source}: column {column!r} expected {declared}, found {dtype} values such as {examples}"
        return None


def coerce_landed_frame(
    frame: pd.DataFrame, dataset: DatasetSpec, source: str, tally: ColumnTally | None = None
) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """A landed frame -> (the dataset's columns, unvalidated dtypes; read problems per row; ignored columns).

    A column that is missing, entirely empty or entirely of the wrong type makes the whole file
    unusable; a single value that does not parse only marks its row. Label columns may be
    missing or empty: scoring data often has no label yet. With a `tally`, `frame` is one batch
    of a file: the whole-file refusals are left to `tally.problem` once every batch was read.
    """
    problem = missing_columns(list(frame.columns), dataset, source)
    if problem:
        raise UnreadableFileError(problem)
    ignored = [str(c) for c in frame.columns if c not in dataset.columns]
    if not frame.index.equals(pd.RangeIndex(len(frame))):
        frame = frame.reset_index(drop=True)
    out: dict[str, pd.Series] = {}
    problems = pd.Series("", index=frame.index, dtype="object")
    for column, dtype in unvalidated_schema(dataset).items():
        declared = dataset.columns[column].type
        if column not in frame.columns:
            # A label column the file does not carry: missing in every row. pd.NA cannot be
            # cast to float64 or datetime64, so the column is made empty in its dtype directly.
            out[column] = (
                pd.Series(None, index=frame.index, dtype="object")
                if dtype == "object"
                else pd.Series(index=frame.index, dtype=pandas_dtype(dtype))
            )
            continue
        values = frame[column]
        # Masks as numpy arrays: a boolean Series indexed by another costs an index alignment.
        present = values.notna().to_numpy(dtype=bool)
        if isinstance(values.dtype, pd.StringDtype) or values.dtype == object:
            present &= non_blank(values).to_numpy(dtype=bool)
        any_present = bool(present.any())
        if tally is not None:
            tally.read.add(column)
            tally.present[column] += int(present.sum())
        elif len(frame) and not any_present and not dataset.is_nullable(column):
            raise UnreadableFileError(
                f"{source}: column {column!r} is empty in all {len(frame)} rows; "
                f"expected {declared} values"
            )
        typed = already_typed(values, dtype, dataset.timezone)
        coerced = _coerce_column(values, dtype, dataset, f"{source}: column {column!r}")
        if dtype == "object":
            coerced = as_text_objects(coerced.mask(~present))
        if typed:
            # A column already in its type keeps every value: nothing can fail to parse.
            unparseable = np.zeros(len(frame), dtype=bool)
        else:
            unparseable = present & coerced.isna().to_numpy(dtype=bool)
        if tally is not None:
            tally.parsed[column] += int((present & ~unparseable).sum())
            if any_present and column not in tally.found:
                tally.found[column] = (str(values.dtype), _describe_values(_first_present(values, present)))
        elif any_present and not (present & ~unparseable).any():
            raise UnreadableFileError(
                f"{source}: column {column!r} expected {declared}, found {values.dtype} "
                f"values such as {_describe_values(_first_present(values, present))}"
            )
        if unparseable.any():
            reason = f"unparseable {column}"
            current = problems[unparseable]
            problems[unparseable] = (
                current.where(current == "", current + REASON_SEPARATOR) + reason
            )
        out[column] = coerced
    if tally is not None:
        tally.rows += len(frame)
    return pd.DataFrame(out), problems, ignored


@dataclass(frozen=True)
class LandedFile:
    """One landing file read into the unvalidated layout."""

    path: Path
    rows: pd.DataFrame
    ignored_columns: list[str]

    @property
    def empty(self) -> bool:
        return self.rows.empty


def _landed_from_frame(path: Path, frame: pd.DataFrame, dataset: DatasetSpec) -> LandedFile:
    coerced, problems, ignored = coerce_landed_frame(frame, dataset, str(path))
    coerced[SOURCE_FILE_COLUMN] = path.name
    coerced[SOURCE_ROW_COLUMN] = range(len(coerced))
    coerced[READ_PROBLEMS_COLUMN] = problems
    return LandedFile(path, coerced, ignored)


def stream_landed_file(
    path: Path, dataset: DatasetSpec, batch_rows: int, ignored: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """One landed file's rows in the unvalidated layout, batch by batch (as `load_landed_file`).

    The columns the file has beyond the dataset's are appended to `ignored`. A file that cannot
    be used raises UnreadableFileError: a missing column at the first batch, a column empty or
    unparseable in every row after the last.
    """
    if path.stat().st_size == 0:
        yield empty_unvalidated_rows(dataset)
        return
    tally = ColumnTally()
    offset = 0
    for frame in iter_landing_frames(path, dataset, batch_rows):
        coerced, problems, extra = coerce_landed_frame(frame, dataset, str(path), tally)
        if offset == 0 and ignored is not None:
            ignored.extend(extra)
        coerced[SOURCE_FILE_COLUMN] = path.name
        coerced[SOURCE_ROW_COLUMN] = np.arange(offset, offset + len(coerced), dtype="int64")
        coerced[READ_PROBLEMS_COLUMN] = problems
        offset += len(coerced)
        yield coerced
    problem = tally.problem(dataset, str(path))
    if problem:
        raise UnreadableFileError(problem)


def load_landed_file(path: Path, dataset: DatasetSpec) -> LandedFile:
    """Read one landed file; a 0-byte file is empty, not an error."""
    if path.stat().st_size == 0:
        return LandedFile(path, empty_unvalidated_rows(dataset), [])
    return _landed_from_frame(path, read_landing_frame(path, dataset), dataset)


def day_counts(event: pd.Series) -> dict[str, int]:
    """UTC day (partition key) -> rows, for timezone-naive UTC event times; missing ones left out."""
    days = event.to_numpy().astype("datetime64[D]")
    numbers = days[~np.isnat(days)].astype("int64")
    if not numbers.size:
        return {}
    first = int(numbers.min())
    if int(numbers.max()) - first > DAY_COUNT_SPAN:
        # Event times centuries apart (a typo in a year): counted by sorting instead.
        unique, counts = np.unique(numbers, return_counts=True)
    else:
        # Counting per day from the first beats sorting the rows (a file spans a few days).
        per_day = np.bincount(numbers - first)
        unique = np.flatnonzero(per_day)
        counts = per_day[unique]
        unique = unique + first
    return {str(np.datetime64(int(day), "D")): int(count) for day, count in zip(unique, counts, strict=True)}


def file_fingerprint(path: Path) -> str:
    """Size, modification time, change time and inode of a file.

    Any write through the file system changes the change time, which (unlike the modification
    time) cannot be set back, so an unchanged fingerprint means unchanged bytes.
    """
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}"


def _event_days_of_unusable(
    frame: pd.DataFrame, path: Path, dataset: DatasetSpec
) -> dict[str, int] | None:
    """The days a file that cannot be used would feed, when at least its event times can be read."""
    column = dataset.event_time
    if column not in frame.columns:
        return None
    try:
        event = _coerce_column(
            frame[column],
            unvalidated_schema(dataset)[column],
            dataset,
            f"{path}: column {column!r}",
        )
    except UnreadableFileError:
        return None
    return day_counts(event) or None


def examine_landed_file(path: Path, dataset: DatasetSpec) -> tuple[FileFacts, LandedFile | None]:
    """Read a file whole once: its facts, and its rows when it can be used."""
    fingerprint = file_fingerprint(path)
    if path.stat().st_size == 0:
        return FileFacts(fingerprint, empty=True), LandedFile(
            path, empty_unvalidated_rows(dataset), []
        )
    try:
        frame = read_landing_frame(path, dataset)
    except UnreadableFileError as exc:
        return FileFacts(fingerprint, error=str(exc), days_known=False), None
    try:
        landed = _landed_from_frame(path, frame, dataset)
    except UnreadableFileError as exc:
        days = _event_days_of_unusable(frame, path, dataset)
        return FileFacts(
            fingerprint,
            rows=len(frame),
            event_days=days or {},
            error=str(exc),
            days_known=days is not None,
        ), None
    event = landed.rows[dataset.event_time]
    facts = FileFacts(
        fingerprint,
        rows=len(landed.rows),
        event_days=day_counts(event),
        missing_event_time=int(event.isna().sum()),
        empty=landed.empty,
    )
    return facts, landed


def skim_landed_file(path: Path, dataset: DatasetSpec) -> FileFacts:
    """Facts of a large file from its column names and event times alone, in bounded memory.

    A landing sensor tick must not read a 10M-row file whole; the run that ingests the file's
    day reads it whole and refuses it there (naming it) if another column is unusable.
    """
    fingerprint = file_fingerprint(path)
    event_time = dataset.event_time
    try:
        names = list(read_landing_frame(path, dataset, header_only=True).columns)
    except UnreadableFileError as exc:
        return FileFacts(fingerprint, error=str(exc), days_known=False)
    problem = missing_columns(names, dataset, str(path))
    if event_time not in names:
        return FileFacts(fingerprint, error=problem, days_known=False)
    # The event time alone, through the same coercion (and refusals) as a whole file.
    event_only = dataset.model_copy(
        update={
            "columns": {event_time: dataset.columns[event_time]},
            "label_columns": [],
            "rules": [],
            "unique_key": None,
        }
    )
    tally = ColumnTally()
    days: Counter[str] = Counter()
    missing = 0
    try:
        for frame in iter_landing_frames(path, dataset, SKIM_BATCH_ROWS, columns=[event_time]):
            event = coerce_landed_frame(frame, event_only, str(path), tally)[0][event_time]
            days.update(day_counts(event))
            missing += int(event.isna().sum())
        unusable = tally.problem(event_only, str(path))
    except UnreadableFileError as exc:
        unusable = str(exc)
    if unusable:
        return FileFacts(fingerprint, rows=tally.rows, error=problem or unusable, days_known=False)
    return FileFacts(
        fingerprint,
        rows=tally.rows,
        event_days=dict(sorted(days.items())),
        missing_event_time=missing,
        error=problem,
        empty=tally.rows == 0,
    )


def rows_of_day(rows: pd.DataFrame, event_time: str, day: str, main_day: str | None) -> np.ndarray:
    """Which of one file's rows belong to `day`: those whose event time falls on it (UTC), and,
    on the file's main day, those without an event time (quarantined there, never dropped)."""
    event = rows[event_time].to_numpy().astype("datetime64[D]")
    mask = event == np.datetime64(day, "D")
    if day == main_day:
        mask |= np.isnat(event)
    return mask


# The landing index ------------------------------------------------------------------------------


class LandingIndex:
    """Which days each landed file holds, kept beside the files in `<folder>/.tabml_landing_index.json`.

    Whoever reads a file whole (the landing sensor, a raw_data run) records its facts; every run
    reads the index to pick the files that touch its days. It lives with the files, so a run on
    another machine that sees the folder sees it too. An entry counts only while its file's
    fingerprint is unchanged and it was made under the same dataset spec; any other file is read
    again. So a stale, lost or concurrently overwritten index costs time, never correctness.
    """

    def __init__(self, folder: Path, dataset_json: str) -> None:
        self.path = folder / INDEX_FILE
        self.reader = hashlib.sha256(f"{INDEX_VERSION}|{dataset_json}".encode()).hexdigest()[:16]

    def load(self) -> dict[str, FileFacts]:
        try:
            stored = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(stored, dict) or stored.get("reader") != self.reader:
            return {}
        entries: dict[str, FileFacts] = {}
        for name, raw in dict(stored.get("files", {})).items():
            try:
                entries[str(name)] = FileFacts.from_json(raw)
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # one damaged entry: that file is read again
        return entries

    def update(self, facts: Mapping[str, FileFacts]) -> None:
        """Merge `facts` into the stored index and forget files that are gone (atomic, best effort)."""
        entries = {**self.load(), **facts}
        folder = self.path.parent
        kept = {
            name: entries[name]
            for name in sorted(entries)
            if name in facts or (folder / name).exists()
        }
        document = {
            "version": INDEX_VERSION,
            "reader": self.reader,
            "files": {name: f.to_json() for name, f in kept.items()},
        }
        try:
            write_json_atomic(document, self.path)
        except OSError as exc:
            # A read-only folder only costs speed: the next run reads the files again.
            log.warning("landing index %s not written: %s", self.path, exc)


@dataclass(frozen=True)
class Survey:
    """Facts of a folder's files, and the rows of those read whole on the way."""

    facts: dict[str, FileFacts]
    loaded: dict[str, LandedFile] = field(default_factory=dict)
    # Files read whole because the index had no fresh entry for them.
    examined: list[str] = field(default_factory=list)
    # Files left for later because the time budget ran out.
    unexamined: list[str] = field(default_factory=list)


class LandingFolderSource(DataSource):
    """Parquet and CSV files (compressed ones too) dropped into a folder; rows go to the UTC day
    of their event time."""

    folder: str

    @property
    def index(self) -> LandingIndex:
        return LandingIndex(Path(self.folder), self.dataset_spec)

    def scan_folder(self) -> tuple[list[Path], list[str]]:
        """The landing files (name order) and the visible files in no landing format, from one
        listing. A landing file that resolves outside the folder is refused."""
        root = Path(self.folder)
        if not root.is_dir():
            return [], []
        resolved_root = root.resolve()
        files: list[Path] = []
        unsupported: list[str] = []
        with os.scandir(root) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        for entry in entries:
            # Hidden files are uploads in progress (and our index and temp files), not deliveries.
            if entry.name.startswith("."):
                continue
            if landing_format(entry.name) is None:
                if entry.is_file():
                    unsupported.append(entry.name)
                continue
            path = root / entry.name
            if entry.is_symlink():
                # Only a link can lead out of the folder: resolve those alone (a stat per file).
                target = path.resolve()
                if not target.is_relative_to(resolved_root):
                    raise UnreadableFileError(
                        f"{path}: resolves to {target}, outside the landing folder {resolved_root}; "
                        "expected a regular file inside it"
                    )
            if entry.is_file():
                files.append(path)
        return files, unsupported

    def landed_files(self) -> list[Path]:
        """Landing files, in name order; a file that resolves outside the folder is refused."""
        return self.scan_folder()[0]

    def unsupported_files(self) -> list[str]:
        """Visible files tabml does not read (not parquet or CSV), so they are named, not ignored."""
        return self.scan_folder()[1]

    def survey(
        self,
        paths: Sequence[Path],
        keep_rows_for: Collection[str] = (),
        deadline: float | None = None,
    ) -> Survey:
        """Facts of `paths`: from the index where it is fresh, else by reading the file (and
        recording it). Rows of files read that touch a day of `keep_rows_for` are kept, so they
        are not read twice; files past `deadline` (time.monotonic) are left for later."""
        stored = self.index.load()
        facts: dict[str, FileFacts] = {}
        fresh: dict[str, FileFacts] = {}
        loaded: dict[str, LandedFile] = {}
        unexamined: list[str] = []
        for path in paths:
            try:
                fingerprint = file_fingerprint(path)
            except FileNotFoundError:
                continue  # removed since the folder was listed
            known = stored.get(path.name)
            if known is not None and known.fingerprint == fingerprint:
                facts[path.name] = known
                continue
            if deadline is not None and time.monotonic() > deadline:
                unexamined.append(path.name)
                continue
            if path.stat().st_size <= FULL_READ_BYTES:
                found, landed = examine_landed_file(path, self.dataset)
            else:
                found, landed = skim_landed_file(path, self.dataset), None
            if not found.days_known and known is not None and known.event_days:
                # A file whose event times cannot be read now still holds back the days its
                # earlier content fed: storing them without it would drop its rows.
                found = dataclasses.replace(found, event_days=known.event_days)
            facts[path.name] = fresh[path.name] = found
            if landed is not None and any(found.touches(day) for day in keep_rows_for):
                loaded[path.name] = landed
        if fresh:
            self.index.update(fresh)
        return Survey(facts, loaded, list(fresh), unexamined)

    def land_days(
        self, days: Sequence[dt.date], now: dt.datetime, batch_rows: int = SKIM_BATCH_ROWS
    ) -> LandedRun:
        """Each day's rows from the files that touch it, streamed in batches of at most
        `batch_rows` rows; each file is read once however many of the days it feeds, and the
        other files are not read."""
        dataset = self.dataset
        keys = {day: day.isoformat() for day in days}
        paths, unsupported = self.scan_folder()
        survey = self.survey(paths, keep_rows_for=set(keys.values()))
        used: dict[str, dict[str, FileFacts]] = {key: {} for key in keys.values()}
        blocking: dict[str, dict[str, str]] = {key: {} for key in keys.values()}
        set_aside: dict[str, str] = {}
        empty: list[str] = []
        to_read: list[tuple[Path, FileFacts, list[str]]] = []
        read = set(survey.examined)
        for path in paths:
            facts = survey.facts.get(path.name)
            if facts is None:
                continue
            if facts.empty:
                empty.append(path.name)
                continue
            touched = [key for key in keys.values() if facts.touches(key)]
            if facts.error is not None:
                set_aside[path.name] = facts.error
                for key in touched:
                    blocking[key][path.name] = facts.error
                continue
            if not touched:
                continue
            read.add(path.name)
            to_read.append((path, facts, touched))
            for key in touched:
                used[key][path.name] = facts
        landed_days = {
            day: LandedDay(
                files=sorted(used[key]),
                ignored_columns={},
                empty_files=list(empty),
                file_facts=used[key],
                blocking_files=blocking[key],
                set_aside_files=set_aside,
                unsupported_files=unsupported,
                files_read=sorted(read),
                files_in_folder=len(paths),
            )
            for day, key in keys.items()
        }
        by_key = {key: day for day, key in keys.items()}

        def batches() -> Iterator[tuple[dt.date, pd.DataFrame]]:
            for path, facts, touched in to_read:
                ignored: list[str] = []
                loaded = survey.loaded.pop(path.name, None)
                if loaded is not None:
                    ignored.extend(loaded.ignored_columns)
                    frames: Iterable[pd.DataFrame] = [loaded.rows]
                else:
                    frames = stream_landed_file(path, dataset, batch_rows, ignored)
                try:
                    for frame in frames:
                        for key in touched:
                            mask = rows_of_day(frame, dataset.event_time, key, facts.main_day)
                            if mask.all():
                                yield by_key[key], frame  # a one-day file: no copy
                            elif mask.any():
                                yield by_key[key], frame[mask].reset_index(drop=True)
                except UnreadableFileError as exc:
                    # A skimmed file whose other columns cannot be used: its days wait for it.
                    self.index.update({path.name: dataclasses.replace(facts, error=str(exc))})
                    set_aside[path.name] = str(exc)
                    for key in touched:
                        blocking[key][path.name] = str(exc)
                        landed = landed_days[by_key[key]]
                        landed.files.remove(path.name)
                        landed.file_facts.pop(path.name)
                    continue
                if ignored:
                    for key in touched:
                        landed_days[by_key[key]].ignored_columns[path.name] = ignored

        return LandedRun(landed_days, batches())

    def read_day(self, day: dt.date) -> pd.DataFrame:
        """Every landed row for `day`, unvalidated, in one frame (raw_data streams `land_days`)."""
        run = self.land_days([day], dt.datetime.now(dt.UTC))
        frames = [frame[raw_columns(self.dataset)] for _, frame in run.batches]
        landed = run.days[day]
        if landed.blocking_files:
            name, reason = next(iter(landed.blocking_files.items()))
            raise UnreadableFileError(reason if name in reason else f"{name}: {reason}")
        if not frames:
            return empty_unvalidated_rows(self.dataset)[raw_columns(self.dataset)]
        return pd.concat(frames, ignore_index=True)

    def describe(self) -> str:
        return f"landing folder {self.folder}"


def land_demo_files(
    folder: Path,
    days: list[dt.date],
    rows_per_day: int,
    demo_rows: Callable[[dt.date, int], pd.DataFrame],
) -> list[Path]:
    """Drop one parquet file of the project's demo rows per day into `folder`, as an upstream system would."""
    written = []
    for day in days:
        path = folder / f"demo_{day.isoformat()}.parquet"
        if not path.exists():
            write_parquet_atomic(demo_rows(day, rows_per_day), path)
        written.append(path)
    return written
