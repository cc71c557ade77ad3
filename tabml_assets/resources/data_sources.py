"""Trip data sources: interchangeable resources that deliver UTC days of raw trips.

Sources deliver rows as they are, with where each row came from; `raw_data` then validates them
and quarantines the bad ones. A source raises `UnreadableFileError` only for input that cannot
be used at all (a corrupt file, a missing or wholly mistyped or empty column), naming the file,
the column and what was expected.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableResource
from pandas.api.types import pandas_dtype

from tabml_assets.ml.demo_data import generate_demo_trips
from tabml_assets.ml.quality import REASON_SEPARATOR, naive_utc
from tabml_assets.ml.schema import PICKUP, RAW_COLUMNS, RAW_SCHEMA
from tabml_assets.resources.storage import write_parquet_atomic

LANDING_SUFFIXES = (".parquet", ".csv")
SOURCE_FILE_COLUMN = "source_file"
SOURCE_ROW_COLUMN = "source_row"
# Problems found while reading a row (e.g. "unparseable trip_distance"); "" when none.
READ_PROBLEMS_COLUMN = "read_problems"
# Nullable dtypes while rows are unvalidated: a missing zip is a row problem, not a crash.
UNVALIDATED_SCHEMA: dict[str, str] = {
    column: ("Int64" if dtype == "int64" else dtype) for column, dtype in RAW_SCHEMA.items()
}
SAMPLE_VALUES = 3


class UnreadableFileError(ValueError):
    """A landed file that cannot be read as trips; names the file, column and expectation."""


@dataclass(frozen=True)
class LandedDay:
    """One UTC day of trips as delivered, before row-level validation.

    `rows` has RAW_COLUMNS in UNVALIDATED_SCHEMA dtypes plus SOURCE_FILE_COLUMN,
    SOURCE_ROW_COLUMN and READ_PROBLEMS_COLUMN.
    """

    rows: pd.DataFrame
    files: list[str] = field(default_factory=list)
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)
    empty_files: list[str] = field(default_factory=list)


def empty_unvalidated_rows() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=t) for c, t in UNVALIDATED_SCHEMA.items()})
    frame[SOURCE_FILE_COLUMN] = pd.Series(dtype="object")
    frame[SOURCE_ROW_COLUMN] = pd.Series(dtype="int64")
    frame[READ_PROBLEMS_COLUMN] = pd.Series(dtype="object")
    return frame


def as_unvalidated_rows(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Rows a source delivered already typed (demo, Databricks) in the unvalidated layout."""
    rows = frame[RAW_COLUMNS].astype(UNVALIDATED_SCHEMA).reset_index(drop=True)
    rows[SOURCE_FILE_COLUMN] = source
    rows[SOURCE_ROW_COLUMN] = range(len(rows))
    rows[READ_PROBLEMS_COLUMN] = ""
    return rows


class TripSource(ConfigurableResource, ABC):
    """Where raw trips come from."""

    @abstractmethod
    def read_day(self, day: dt.date) -> pd.DataFrame:
        """All trips picked up on `day` (UTC), with RAW_SCHEMA columns."""

    def land_days(self, days: Sequence[dt.date], now: dt.datetime) -> dict[dt.date, LandedDay]:
        """Each day's rows as delivered, with their provenance; `raw_data` validates them."""
        return {day: LandedDay(rows=as_unvalidated_rows(self.read_day(day), self.describe())) for day in days}

    def describe(self) -> str:
        return type(self).__name__


class DemoTripSource(TripSource):
    """Built-in deterministic generator with the NYC-taxi sample's schema."""

    rows_per_day: int = 2000

    def read_day(self, day: dt.date) -> pd.DataFrame:
        return generate_demo_trips(day, self.rows_per_day)

    def describe(self) -> str:
        return f"demo generator ({self.rows_per_day} rows/day)"


def _describe_values(values: pd.Series) -> str:
    return repr([str(v)[:40] for v in values.head(SAMPLE_VALUES).tolist()])


def _coerce_column(values: pd.Series, dtype: str) -> pd.Series:
    """`values` in `dtype`; anything that does not parse becomes missing."""
    if dtype.startswith("datetime"):
        if pd.api.types.is_datetime64_any_dtype(values):
            parsed = pd.to_datetime(values, utc=True)
        elif pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            # Epoch numbers are not timestamps in a trip file: a wrong type, not a value to guess.
            parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
        else:
            parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
        return parsed.dt.tz_convert(None).astype(pandas_dtype(dtype))
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.Series(pd.NA, index=values.index, dtype=dtype)
    numeric = pd.to_numeric(values, errors="coerce")
    if dtype == "Int64":
        numeric = numeric.astype("Float64")
        numeric = numeric.where((numeric % 1 == 0).fillna(False))
        return numeric.astype("Int64")
    return numeric.astype("Float64").astype(pandas_dtype(dtype))


def coerce_landed_frame(frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """A landed frame -> (RAW_COLUMNS in UNVALIDATED_SCHEMA, read problems per row, ignored columns).

    A column that is missing, entirely empty or entirely of the wrong type makes the whole file
    unusable; a single value that does not parse only marks its row.
    """
    missing = [c for c in RAW_COLUMNS if c not in frame.columns]
    if missing:
        raise UnreadableFileError(
            f"{source}: missing column(s) {missing}; expected columns {RAW_COLUMNS}, "
            f"found {list(frame.columns)}"
        )
    ignored = [str(c) for c in frame.columns if c not in RAW_SCHEMA]
    frame = frame.reset_index(drop=True)
    out: dict[str, pd.Series] = {}
    problems = pd.Series("", index=frame.index, dtype="object")
    for column, dtype in UNVALIDATED_SCHEMA.items():
        values = frame[column]
        present = values.notna()
        if len(frame) and not present.any():
            raise UnreadableFileError(
                f"{source}: column {column!r} is empty in all {len(frame)} rows; "
                f"expected {RAW_SCHEMA[column]} values"
            )
        coerced = _coerce_column(values, dtype)
        unparseable = present & coerced.isna()
        if present.any() and unparseable[present].all():
            raise UnreadableFileError(
                f"{source}: column {column!r} expected {RAW_SCHEMA[column]}, found {values.dtype} "
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


def load_landed_file(path: Path) -> LandedFile:
    """Read one parquet or CSV file; a 0-byte file is empty, not an error."""
    if path.stat().st_size == 0:
        return LandedFile(path, empty_unvalidated_rows(), [])
    try:
        if path.suffix == ".parquet":
            frame = pq.read_table(path).to_pandas()
        else:
            # Strings first: each column is parsed by the schema, so one bad value marks one row.
            frame = pd.read_csv(path, dtype=str)
    except (pa.ArrowException, OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UnreadableFileError(f"{path}: cannot be read as {path.suffix[1:]} ({exc})") from None
    coerced, problems, ignored = coerce_landed_frame(frame, str(path))
    coerced[SOURCE_FILE_COLUMN] = path.name
    coerced[SOURCE_ROW_COLUMN] = range(len(coerced))
    coerced[READ_PROBLEMS_COLUMN] = problems
    return LandedFile(path, coerced, ignored)


def read_landed_file(path: Path) -> pd.DataFrame:
    """One landing file's rows that have a pickup time, in RAW_COLUMNS (not yet validated).

    Rows without a pickup time are left out here: `raw_data` routes them to their file's most
    common day and quarantines them there.
    """
    rows = load_landed_file(path).rows
    return rows.loc[rows[PICKUP].notna(), RAW_COLUMNS].reset_index(drop=True)


def home_days(rows: pd.DataFrame, now: dt.datetime) -> pd.Series:
    """The partition day each row of one file belongs to.

    A row goes to the UTC day of its pickup. A row whose pickup is missing, unparseable or in
    the future belongs to no partition that will ever run, so it goes to its file's most common
    pickup day, where it is quarantined with its reason instead of vanishing.
    """
    pickup = rows[PICKUP]
    usable = pickup.notna() & (pickup <= naive_utc(now))
    days = pickup.dt.date
    if usable.all():
        return days
    if not usable.any():
        raise UnreadableFileError(
            f"{rows[SOURCE_FILE_COLUMN].iloc[0]}: column {PICKUP!r} has no usable value in "
            f"{len(rows)} rows; expected past pickup times, found "
            f"{_describe_values(pickup.astype('object'))}"
        )
    fallback = days[usable].mode().iloc[0]
    return days.where(usable, fallback)


class LandingFolderSource(TripSource):
    """Parquet and CSV files dropped into a folder; rows go to the day of their pickup time."""

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
            landed = load_landed_file(path)
            if landed.empty:
                empty.append(path.name)
                continue
            if landed.ignored_columns:
                ignored[path.name] = landed.ignored_columns
            row_days = home_days(landed.rows, now)
            for day in wanted.intersection(row_days.unique()):
                parts[day].append(landed.rows[(row_days == day).to_numpy()])
                files_per_day[day].append(path.name)
        landed_days = {}
        for day in days:
            rows = pd.concat(parts[day], ignore_index=True) if parts[day] else empty_unvalidated_rows()
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
        return self.land_days([day], now)[day].rows[RAW_COLUMNS].reset_index(drop=True)

    def describe(self) -> str:
        return f"landing folder {self.folder}"


def land_demo_files(folder: Path, days: list[dt.date], rows_per_day: int) -> list[Path]:
    """Drop one demo parquet file per day into `folder`, as an upstream system would."""
    written = []
    for day in days:
        path = folder / f"demo_trips_{day.isoformat()}.parquet"
        if not path.exists():
            write_parquet_atomic(generate_demo_trips(day, rows_per_day), path)
        written.append(path)
    return written
