"""Data sources: interchangeable resources that deliver UTC days of a project's raw rows.

Sources deliver rows as they are, with where each row came from; `raw_data` then validates them
and quarantines the bad ones. A source raises `UnreadableFileError` only for input that cannot
be used at all (a corrupt file, a missing or wholly mistyped column), naming the file, the column
and what was expected. Every source reads its columns, types and time axis from the project's
dataset spec, which it carries as JSON config (resources are config, not Python objects).
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableResource
from pandas.api.types import pandas_dtype

from tabml_assets.ml.quality import REASON_SEPARATOR, naive_utc
from tabml_assets.ml.schema import as_text_objects, raw_columns, unvalidated_schema
from tabml_assets.resources.storage import write_parquet_atomic
from tabml_assets.spec import DatasetSpec

LANDING_SUFFIXES = (".parquet", ".csv")
SOURCE_FILE_COLUMN = "source_file"
SOURCE_ROW_COLUMN = "source_row"
# Problems found while reading a row (e.g. "unparseable temperature"); "" when none.
READ_PROBLEMS_COLUMN = "read_problems"
SAMPLE_VALUES = 3
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "0.0"})


@functools.lru_cache(maxsize=32)
def parse_dataset(dataset_json: str) -> DatasetSpec:
    return DatasetSpec.model_validate_json(dataset_json)


class UnreadableFileError(ValueError):
    """A landed file that cannot be read as the dataset's rows; names the file, column and expectation."""


@dataclass(frozen=True)
class LandedDay:
    """One UTC day of rows as delivered, before row-level validation.

    `rows` has the dataset's columns in unvalidated dtypes plus SOURCE_FILE_COLUMN,
    SOURCE_ROW_COLUMN and READ_PROBLEMS_COLUMN.
    """

    rows: pd.DataFrame
    files: list[str] = field(default_factory=list)
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)
    empty_files: list[str] = field(default_factory=list)


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

    def land_days(self, days: Sequence[dt.date], now: dt.datetime) -> dict[dt.date, LandedDay]:
        """Each day's rows as delivered, with their provenance; `raw_data` validates them."""
        return {
            day: LandedDay(rows=as_unvalidated_rows(self.read_day(day), self.dataset, self.describe()))
            for day in days
        }

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


def _describe_values(values: pd.Series) -> str:
    return repr([str(v)[:40] for v in values.head(SAMPLE_VALUES).tolist()])


def _to_utc(values: pd.Series, timezone: str) -> pd.Series:
    """Timestamps as UTC; those without a zone are read in the dataset's `timezone`."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    elif pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        # Epoch numbers are not timestamps in a file: a wrong type, not a value to guess.
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    elif timezone == "UTC":
        return pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    else:
        text = values.astype("string")
        # Strings with an offset name their instant; the others are wall-clock times in `timezone`.
        has_offset = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)\s*$", regex=True, na=False)
        aware = pd.to_datetime(text.where(has_offset), errors="coerce", utc=True, format="mixed")
        naive = pd.to_datetime(text.where(~has_offset), errors="coerce", format="mixed")
        local = naive.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
        return aware.where(has_offset, local)
    if parsed.dt.tz is None:
        return parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    return parsed.dt.tz_convert("UTC")


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


def _coerce_column(values: pd.Series, dtype: str, timezone: str = "UTC") -> pd.Series:
    """`values` in `dtype`; anything that does not parse becomes missing."""
    if dtype.startswith("datetime"):
        return _to_utc(values, timezone).dt.tz_convert(None).astype(pandas_dtype(dtype))
    if dtype == "object":
        return _to_string(values)
    if dtype == "boolean":
        return _to_boolean(values)
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.Series(pd.NA, index=values.index, dtype=dtype)
    numeric = pd.to_numeric(values, errors="coerce")
    if dtype == "Int64":
        numeric = numeric.astype("Float64")
        numeric = numeric.where((numeric % 1 == 0).fillna(False))
        return numeric.astype("Int64")
    return numeric.astype("Float64").astype(pandas_dtype(dtype))


def coerce_landed_frame(
    frame: pd.DataFrame, dataset: DatasetSpec, source: str
) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """A landed frame -> (the dataset's columns, unvalidated dtypes; read problems per row; ignored columns).

    A column that is missing, entirely empty or entirely of the wrong type makes the whole file
    unusable; a single value that does not parse only marks its row. Label columns may be
    missing or empty: scoring data often has no label yet.
    """
    columns = raw_columns(dataset)
    missing = [c for c in columns if c not in frame.columns and c not in dataset.label_columns]
    if missing:
        raise UnreadableFileError(
            f"{source}: missing column(s) {missing}; expected columns {columns}, "
            f"found {list(frame.columns)}"
        )
    ignored = [str(c) for c in frame.columns if c not in dataset.columns]
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
        present = values.notna()
        if isinstance(values.dtype, pd.StringDtype) or values.dtype == object:
            present &= values.astype("string").str.strip().ne("").fillna(False)
        if len(frame) and not present.any() and not dataset.is_nullable(column):
            raise UnreadableFileError(
                f"{source}: column {column!r} is empty in all {len(frame)} rows; "
                f"expected {declared} values"
            )
        coerced = _coerce_column(values, dtype, dataset.timezone)
        if dtype == "object":
            coerced = as_text_objects(coerced.mask(~present))
        unparseable = present & coerced.isna()
        if present.any() and unparseable[present].all():
            raise UnreadableFileError(
                f"{source}: column {column!r} expected {declared}, found {values.dtype} "
                f"values such as {_describe_values(values[present])}"
            )
        if unparseable.any():
            reason = f"unparseable {column}"
            current = problems[unparseable]
            problems[unparseable] = current.where(current == "", current + REASON_SEPARATOR) + reason
        out[column] = coerced
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


def load_landed_file(path: Path, dataset: DatasetSpec) -> LandedFile:
    """Read one parquet or CSV file; a 0-byte file is empty, not an error."""
    if path.stat().st_size == 0:
        return LandedFile(path, empty_unvalidated_rows(dataset), [])
    try:
        if path.suffix == ".parquet":
            frame = pq.read_table(path).to_pandas()
        else:
            # Strings first: each column is parsed by the schema, so one bad value marks one row.
            frame = pd.read_csv(path, dtype=str)
    except (pa.ArrowException, OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UnreadableFileError(f"{path}: cannot be read as {path.suffix[1:]} ({exc})") from None
    coerced, problems, ignored = coerce_landed_frame(frame, dataset, str(path))
    coerced[SOURCE_FILE_COLUMN] = path.name
    coerced[SOURCE_ROW_COLUMN] = range(len(coerced))
    coerced[READ_PROBLEMS_COLUMN] = problems
    return LandedFile(path, coerced, ignored)


def read_landed_file(path: Path, dataset: DatasetSpec) -> pd.DataFrame:
    """One landing file's rows that have an event time, in the dataset's columns (not yet validated).

    Rows without an event time are left out here: `raw_data` routes them to their file's most
    common day and quarantines them there.
    """
    rows = load_landed_file(path, dataset).rows
    return rows.loc[rows[dataset.event_time].notna(), raw_columns(dataset)].reset_index(drop=True)


def home_days(rows: pd.DataFrame, event_time: str, now: dt.datetime) -> pd.Series:
    """The partition day each row of one file belongs to.

    A row goes to the UTC day of its event time. A row whose event time is missing, unparseable
    or in the future belongs to no partition that will ever run, so it goes to its file's most
    common day, where it is quarantined with its reason instead of vanishing.
    """
    event = rows[event_time]
    usable = event.notna() & (event <= naive_utc(now))
    days = event.dt.date
    if usable.all():
        return days
    if not usable.any():
        raise UnreadableFileError(
            f"{rows[SOURCE_FILE_COLUMN].iloc[0]}: column {event_time!r} has no usable value in "
            f"{len(rows)} rows; expected past event times, found "
            f"{_describe_values(event.astype('object'))}"
        )
    fallback = days[usable].mode().iloc[0]
    return days.where(usable, fallback)


class LandingFolderSource(DataSource):
    """Parquet and CSV files dropped into a folder; rows go to the UTC day of their event time."""

    folder: str

    def landed_files(self) -> list[Path]:
        """Landing files, in name order; a file that resolves outside the folder is refused."""
        root = Path(self.folder)
        if not root.is_dir():
            return []
        resolved_root = root.resolve()
        files = []
        # Hidden files are uploads in progress (and our own temp files), not deliveries.
        for path in sorted(root.iterdir()):
            if path.name.startswith(".") or path.suffix not in LANDING_SUFFIXES:
                continue
            target = path.resolve()
            if not target.is_relative_to(resolved_root):
                raise UnreadableFileError(
                    f"{path}: resolves to {target}, outside the landing folder {resolved_root}; "
                    "expected a regular file inside it"
                )
            if target.is_file():
                files.append(path)
        return files

    def land_days(self, days: Sequence[dt.date], now: dt.datetime) -> dict[dt.date, LandedDay]:
        wanted = set(days)
        parts: dict[dt.date, list[pd.DataFrame]] = {day: [] for day in days}
        files_per_day: dict[dt.date, list[str]] = {day: [] for day in days}
        ignored: dict[str, list[str]] = {}
        empty: list[str] = []
        # Each file is read once for the whole range of days.
        for path in self.landed_files():
            landed = load_landed_file(path, self.dataset)
            if landed.empty:
                empty.append(path.name)
                continue
            if landed.ignored_columns:
                ignored[path.name] = landed.ignored_columns
            row_days = home_days(landed.rows, self.dataset.event_time, now)
            for day in wanted.intersection(row_days.unique()):
                parts[day].append(landed.rows[(row_days == day).to_numpy()])
                files_per_day[day].append(path.name)
        landed_days = {}
        for day in days:
            rows = pd.concat(parts[day], ignore_index=True) if parts[day] else empty_unvalidated_rows(self.dataset)
            touched = files_per_day[day]
            landed_days[day] = LandedDay(
                rows=rows,
                files=touched,
                ignored_columns={f: c for f, c in ignored.items() if f in touched},
                empty_files=list(empty),
            )
        return landed_days

    def read_day(self, day: dt.date) -> pd.DataFrame:
        """Every landed row for `day`, unvalidated (raw_data validates and quarantines)."""
        now = dt.datetime.now(dt.UTC)
        return self.land_days([day], now)[day].rows[raw_columns(self.dataset)].reset_index(drop=True)

    def describe(self) -> str:
        return f"landing folder {self.folder}"


def land_demo_files(
    folder: Path, days: list[dt.date], rows_per_day: int, demo_rows: Callable[[dt.date, int], pd.DataFrame]
) -> list[Path]:
    """Drop one parquet file of the project's demo rows per day into `folder`, as an upstream system would."""
    written = []
    for day in days:
        path = folder / f"demo_{day.isoformat()}.parquet"
        if not path.exists():
            write_parquet_atomic(demo_rows(day, rows_per_day), path)
        written.append(path)
    return written
