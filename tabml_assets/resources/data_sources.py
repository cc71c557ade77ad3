"""Trip data sources: interchangeable resources that return one UTC day of raw trips."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableResource

from tabml_assets.ml.demo_data import generate_demo_trips
from tabml_assets.ml.schema import PICKUP, RAW_COLUMNS, RAW_SCHEMA
from tabml_assets.resources.storage import write_parquet_atomic

LANDING_SUFFIXES = (".parquet", ".csv")


class UnreadableFileError(ValueError):
    """A landed file that cannot be read as trips; names the file, column and expectation."""


class TripSource(ConfigurableResource, ABC):
    """Where raw trips come from."""

    @abstractmethod
    def read_day(self, day: dt.date) -> pd.DataFrame:
        """All trips picked up on `day` (UTC), with RAW_SCHEMA columns."""

    def describe(self) -> str:
        return type(self).__name__


class DemoTripSource(TripSource):
    """Built-in deterministic generator with the NYC-taxi sample's schema."""

    rows_per_day: int = 2000

    def read_day(self, day: dt.date) -> pd.DataFrame:
        return generate_demo_trips(day, self.rows_per_day)

    def describe(self) -> str:
        return f"demo generator ({self.rows_per_day} rows/day)"


def coerce_to_raw_schema(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check and cast a landed frame to RAW_SCHEMA; errors name the file and the column."""
    missing = [c for c in RAW_COLUMNS if c not in frame.columns]
    if missing:
        raise UnreadableFileError(
            f"{source}: missing column(s) {missing}; expected columns {RAW_COLUMNS}, "
            f"found {list(frame.columns)}"
        )
    out = {}
    for column, dtype in RAW_SCHEMA.items():
        values = frame[column]
        try:
            if dtype.startswith("datetime"):
                converted = pd.to_datetime(values, errors="raise", utc=True).dt.tz_convert(None)
                out[column] = converted.astype(dtype)
            elif dtype == "int64":
                numeric = pd.to_numeric(values, errors="raise")
                if numeric.isna().any() or (numeric % 1 != 0).any():
                    raise ValueError("non-integer values")
                out[column] = numeric.astype("int64")
            else:
                out[column] = pd.to_numeric(values, errors="raise").astype(dtype)
        except (ValueError, TypeError) as exc:
            sample = values.head(3).tolist()
            raise UnreadableFileError(
                f"{source}: column {column!r} expected {dtype}, found {values.dtype} "
                f"values such as {sample} ({exc})"
            ) from None
    return pd.DataFrame(out)


def read_landed_file(path: Path) -> pd.DataFrame:
    """Read one parquet or CSV file into RAW_SCHEMA."""
    try:
        if path.suffix == ".parquet":
            frame = pq.read_table(path).to_pandas()
        else:
            frame = pd.read_csv(path)
    except (pa.ArrowException, OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UnreadableFileError(f"{path}: cannot be read as {path.suffix[1:]} ({exc})") from None
    return coerce_to_raw_schema(frame, str(path))


class LandingFolderSource(TripSource):
    """Parquet and CSV files dropped into a folder; rows go to the day of their pickup time."""

    folder: str

    def landed_files(self) -> list[Path]:
        root = Path(self.folder)
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if p.suffix in LANDING_SUFFIXES and p.is_file())

    def read_day(self, day: dt.date) -> pd.DataFrame:
        start = pd.Timestamp(day)
        end = start + pd.Timedelta(days=1)
        parts = []
        for path in self.landed_files():
            frame = read_landed_file(path)
            parts.append(frame[(frame[PICKUP] >= start) & (frame[PICKUP] < end)])
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in RAW_SCHEMA.items()})
        return pd.concat(parts, ignore_index=True).sort_values(PICKUP, kind="stable").reset_index(drop=True)

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
