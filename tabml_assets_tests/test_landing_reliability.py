"""Landing-folder reliability (issue 14), each case as a new user's files would produce it, against
a real Dagster instance, a real landing folder and the landing sensor evaluated as the daemon does:

- one bad file holds back only the days it has rows for, is named with its reason (tick, an
  observation on raw_data, an alert) and its days run again once it is fixed, removed or replaced;
- no row lands on the wrong day or nowhere: day-first dates are refused unless declared, rows
  outside the partitions are counted per file, any-case and compressed files are read;
- a run reads only the files that touch its day, and stays right when the index is stale;
- a partition key outside the partitions is refused before any work, and never retried.
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import (
    AssetObservation,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    build_sensor_context,
)
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster._core.test_utils import freeze_time

from tabml_assets.assets.common import partition_range_problem
from tabml_assets.automation.sensors import MAX_LANDING_RUNS_PER_TICK
from tabml_assets.definitions import build_definitions
from tabml_assets.resources import build_partition_store
from tabml_assets.resources.data_sources import INDEX_FILE
from tabml_assets.resources.notifier import Notifier
from tabml_assets.resources.storage import write_parquet_atomic
from tabml_assets.seed import run_selection
from tabml_assets.spec import LoadedSpec, load_spec
from tabml_assets_tests.dagster_dev_server import DagsterDev, dagster_dev, write_instance_yaml
from tabml_assets_tests.test_automation import NYC_TAXI_ONLY
from tabml_assets_tests.test_bad_input import failure_text, retries_of

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
GOOD_DAY, BAD_DAY = "2026-03-04", "2026-03-05"
SENSOR = "nyc_taxi_landing_sensor"
RAW_DATA_NODE = "nyc_taxi__raw_data"
# The nyc_taxi example's event time: the dataset these landing files belong to.
PICKUP = "tpep_pickup_datetime"


class FileNotifier(Notifier):
    """Alerts appended to a JSON-lines file: a notifier whose alerts a test can read back."""

    path: str

    def notify(self, title: str, body: str) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"title": title, "body": body}) + "\n")

    def alerts(self) -> list[dict[str, str]]:
        path = Path(self.path)
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def landing_profile(conf_dir: Path) -> None:
    profile_path = conf_dir / "profiles" / "test.yaml"
    profile = yaml.safe_load(profile_path.read_text())
    profile["data_source"] = {"kind": "landing_folder", "landing_folder": "landing"}
    profile_path.write_text(yaml.safe_dump(profile))


def declare(project_dir: Path, **dataset: object) -> None:
    """Add keys to the dataset section of the project's pipeline.yaml, as a user would."""
    pipeline = project_dir / "pipeline.yaml"
    spec = yaml.safe_load(pipeline.read_text())
    spec["dataset"].update(dataset)
    pipeline.write_text(yaml.safe_dump(spec, sort_keys=False))


class Landing:
    """The test deployment reading a landing folder, with a real instance and an alert file."""

    def __init__(self, conf_dir: Path, tabml_home: Path, instance: DagsterInstance) -> None:
        landing_profile(conf_dir)
        self.conf_dir, self.tabml_home, self.instance = conf_dir, tabml_home, instance
        self.notifier = FileNotifier(path=str(tabml_home / "alerts.jsonl"))
        self.reload()
        self.folder = self.spec.landing_folder()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store = build_partition_store(self.spec)

    def reload(self) -> None:
        self.spec: LoadedSpec = load_spec(
            "test", conf_dir=self.conf_dir, tabml_home=self.tabml_home
        )
        self.defs: Definitions = build_definitions(self.spec)

    def trips(self, day: str, rows: int, offset: float = 0.0) -> pd.DataFrame:
        assert self.spec.steps.demo_rows is not None
        frame = self.spec.steps.demo_rows(dt.date.fromisoformat(day), rows)
        return frame.assign(fare_amount=frame["fare_amount"] + offset)

    def land(self, name: str, frame: pd.DataFrame) -> Path:
        path = self.folder / name
        if ".csv" in name.lower():
            frame.to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")
        else:
            write_parquet_atomic(frame, path)
        return path

    def tick(self, cursor: str | None, now: dt.datetime = NOW) -> SensorExecutionData:
        repository = self.defs.get_repository_def()
        with (
            freeze_time(now),
            build_sensor_context(
                instance=self.instance,
                cursor=cursor,
                repository_def=repository,
                sensor_name=SENSOR,
                resources={**self.defs.resources, "notifier": self.notifier},
            ) as context,
        ):
            return repository.get_sensor_def(SENSOR).evaluate_tick(context)

    def materialize(self, key: str) -> ExecuteInProcessResult:
        return run_selection(
            self.defs,
            self.instance,
            [self.spec.keys.raw_data],
            partition_key=key,
            raise_on_error=False,
        )

    def stored(self, key: str) -> pd.DataFrame:
        return self.store.read_frame(self.spec.keys.raw_data, key)

    def has_partition(self, key: str) -> bool:
        return self.store.exists(self.spec.keys.raw_data, key)


@pytest.fixture
def landing(conf_dir: Path, tabml_home: Path, instance: DagsterInstance) -> Landing:
    return Landing(conf_dir, tabml_home, instance)


def requested(data: SensorExecutionData) -> list[str]:
    return sorted(str(r.partition_key) for r in data.run_requests)


def observations(data: SensorExecutionData) -> dict[str, AssetObservation]:
    """The sensor's per-file status events on raw_data, by landing file."""
    events = [e for e in data.asset_events if isinstance(e, AssetObservation)]
    return {str(e.metadata["landing_file"].value): e for e in events}


def metadata_of(result: ExecuteInProcessResult) -> dict:
    materialization = result.asset_materializations_for_node(RAW_DATA_NODE)[0]
    return {k: v.value for k, v in materialization.metadata.items()}


# One bad file stops every day. --------------------------------------------------------------------


def test_a_bad_file_holds_back_only_its_own_day_and_runs_it_once_fixed(landing: Landing) -> None:
    """A wrong-case column used to fail the sensor's run for a *different*, good day."""
    landing.land("good.parquet", landing.trips(GOOD_DAY, 20))
    bad = landing.trips(BAD_DAY, 15)
    landing.land("wrong_case.csv", bad.rename(columns={"trip_distance": "Trip_Distance"}))

    first = landing.tick(None)
    assert requested(first) == [GOOD_DAY]
    assert BAD_DAY in json.loads(first.cursor)["pending"]
    status = observations(first)["wrong_case.csv"]
    assert status.metadata["status"].value == "cannot be used"
    reason = str(status.metadata["reason"].value)
    assert "missing column(s) ['trip_distance']" in reason
    assert "'Trip_Distance' differs from 'trip_distance' only in case" in reason
    assert observations(first)["good.parquet"].metadata["status"].value == "usable"
    [alert] = landing.notifier.alerts()
    assert "wrong_case.csv unreadable" in alert["body"] and "only in case" in alert["body"]

    # The good day runs; the bad day fails at once naming the file, writing nothing.
    assert landing.materialize(GOOD_DAY).success
    assert len(landing.stored(GOOD_DAY)) == 20
    blocked = landing.materialize(BAD_DAY)
    message = failure_text(blocked)
    assert (
        f"raw_data {BAD_DAY}: 1 landing file(s) hold rows for this day but cannot be used"
        in message
    )
    assert "wrong_case.csv" in message and "Nothing was written" in message
    assert retries_of(blocked) == 0 and not landing.has_partition(BAD_DAY)

    # Later ticks keep the day waiting and say why, without alerting again.
    again = landing.tick(first.cursor)
    assert again.run_requests == []
    assert f"{BAD_DAY} waits for wrong_case.csv" in again.skip_message
    assert len(landing.notifier.alerts()) == 1

    # The user fixes the file: its day is requested, and only its day.
    landing.land("wrong_case.csv", bad)
    fixed = landing.tick(again.cursor)
    assert requested(fixed) == [BAD_DAY]
    assert observations(fixed)["wrong_case.csv"].metadata["status"].value == "usable"
    assert landing.materialize(BAD_DAY).success
    assert len(landing.stored(BAD_DAY)) == 15


@pytest.mark.parametrize("remedy", ["removed", "replaced"])
def test_a_day_blocked_by_a_file_runs_again_when_the_file_is_removed_or_replaced(
    landing: Landing, remedy: str
) -> None:
    landing.land("good.parquet", landing.trips(BAD_DAY, 12))
    assert landing.materialize(BAD_DAY).success
    broken = landing.trips(BAD_DAY, 6, offset=0.01).astype({"trip_distance": "object"})
    broken["trip_distance"] = "two miles"
    landing.land("broken.csv", broken)
    blocked = landing.tick(None)
    assert blocked.run_requests == []
    assert f"{BAD_DAY} waits for broken.csv" in blocked.skip_message
    if remedy == "removed":
        (landing.folder / "broken.csv").unlink()
    else:
        landing.land("broken.csv", landing.trips(BAD_DAY, 6, offset=0.01))
    after = landing.tick(blocked.cursor)
    assert requested(after) == [BAD_DAY]
    assert json.loads(after.cursor)["pending"] == {}
    assert landing.materialize(BAD_DAY).success
    assert len(landing.stored(BAD_DAY)) == (12 if remedy == "removed" else 18)


def test_a_future_only_file_fails_no_day_and_is_forgotten_once_deleted(landing: Landing) -> None:
    """Rows all in the future used to be refused, failing every run, and their day stayed in the
    sensor's pending list after the file was deleted."""
    today = dt.datetime.now(dt.UTC).date()
    future, past = (
        (today + dt.timedelta(days=3)).isoformat(),
        (today - dt.timedelta(days=3)).isoformat(),
    )
    landing.land("early_delivery.parquet", landing.trips(future, 10))
    landing.land("good.parquet", landing.trips(past, 8))
    now = dt.datetime.now(dt.UTC)
    first = landing.tick(None, now=now)
    assert requested(first) == [past]
    assert list(json.loads(first.cursor)["pending"]) == [future]
    summary = observations(first)["early_delivery.parquet"]
    assert summary.metadata["rows_for_days_not_closed"].value == 10

    result = landing.materialize(past)
    assert result.success
    rows = metadata_of(result)["rows_per_file"]
    assert list(rows) == ["good.parquet"]  # the future file feeds no closed day: not even opened
    assert "early_delivery.parquet" not in metadata_of(result)["files_read"]

    (landing.folder / "early_delivery.parquet").unlink()
    gone = landing.tick(first.cursor, now=now)
    assert gone.run_requests == []
    assert json.loads(gone.cursor)["pending"] == {}
    assert observations(gone)["early_delivery.parquet"].metadata["status"].value == "deleted"


def test_an_unlabelled_day_does_not_fail_another_day(landing: Landing) -> None:
    landing.land("good.parquet", landing.trips(GOOD_DAY, 10))
    landing.land("no_fares.csv", landing.trips(BAD_DAY, 7).drop(columns=["fare_amount"]))
    data = landing.tick(None)
    assert requested(data) == [GOOD_DAY, BAD_DAY]
    for day, rows in ((GOOD_DAY, 10), (BAD_DAY, 7)):
        assert landing.materialize(day).success
        assert len(landing.stored(day)) == rows
    assert landing.stored(BAD_DAY)["fare_amount"].isna().all()


# Rows silently on the wrong day or nowhere. ------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "lands_on"),
    [
        ({}, None),
        ({"day_first": True}, "2026-02-03"),
        ({"day_first": False}, "2026-03-02"),
        ({"datetime_format": "%d/%m/%Y %H:%M"}, "2026-02-03"),
    ],
    ids=["undeclared", "day_first", "month_first", "datetime_format"],
)
def test_day_first_dates_are_refused_unless_the_dataset_declares_the_order(
    conf_dir: Path,
    project_dir: Path,
    tabml_home: Path,
    instance: DagsterInstance,
    declared: dict,
    lands_on: str | None,
) -> None:
    """03/02/2026 08:00 used to be read month-first without a word: 100 rows on the wrong day."""
    if declared:
        declare(project_dir, **declared)
    landing = Landing(conf_dir, tabml_home, instance)
    trips = landing.trips("2026-02-03", 100)
    trips.to_csv(landing.folder / "export.csv", index=False, date_format="%d/%m/%Y %H:%M")
    data = landing.tick(None)
    if lands_on is None:
        assert data.run_requests == []
        reason = str(observations(data)["export.csv"].metadata["reason"].value)
        assert "column 'tpep_pickup_datetime' has dates such as ['03/02/2026" in reason
        assert "order of day and month is ambiguous" in reason
        assert "dataset.day_first" in reason and "dataset.datetime_format" in reason
        # Days unknown: set aside, named on the runs of every day, failing none.
        for day in ("2026-02-03", "2026-03-02"):
            result = landing.materialize(day)
            assert result.success and landing.stored(day).empty
            assert "export.csv" in metadata_of(result)["set_aside_files"]
        return
    assert requested(data) == [lands_on]
    assert landing.materialize(lands_on).success
    stored = landing.stored(lands_on)
    assert len(stored) == 100 and (stored[PICKUP].dt.date.astype(str) == lands_on).all()
    other = "2026-03-02" if lands_on == "2026-02-03" else "2026-02-03"
    assert landing.materialize(other).success and landing.stored(other).empty


def test_rows_before_the_first_partition_are_accounted_for_per_file(landing: Landing) -> None:
    """203 of 206 rows used to arrive and 3 to vanish: no partition, no quarantine, no word."""
    start = landing.spec.pipeline.partitions.start_date
    early = landing.trips((start - dt.timedelta(days=1)).isoformat(), 3)
    landing.land(
        "export.parquet", pd.concat([landing.trips(GOOD_DAY, 203), early], ignore_index=True)
    )
    data = landing.tick(None)
    assert requested(data) == [GOOD_DAY]
    status = observations(data)["export.parquet"]
    assert status.metadata["rows"].value == 206
    assert status.metadata["rows_before_first_partition"].value == 3
    assert status.metadata["rows_per_partition"].value == {GOOD_DAY: 203}
    [alert] = landing.notifier.alerts()
    assert "3 dated before the first partition, never ingested" in alert["body"]

    result = landing.materialize(GOOD_DAY)
    assert result.success
    rows = metadata_of(result)["rows_per_file"]["export.parquet"]
    assert rows == {
        "delivered": 206,
        "stored": 203,
        "quarantined": 0,
        "in_other_partitions": 0,
        "before_first_partition": 3,
        "for_days_not_closed": 0,
    }
    assert metadata_of(result)["out_of_range_rows"] == 3
    assert len(landing.stored(GOOD_DAY)) == 203


def test_every_row_of_a_file_is_accounted_for_across_its_days(landing: Landing) -> None:
    """delivered = stored + quarantined + in other partitions + out of range, for each run."""
    frame = pd.concat(
        [landing.trips(GOOD_DAY, 30), landing.trips(BAD_DAY, 20), landing.trips("2024-12-30", 4)],
        ignore_index=True,
    )
    frame.loc[:4, "trip_distance"] = -1.0  # five bad rows on GOOD_DAY
    frame.loc[40, PICKUP] = None  # one row without a pickup: quarantined on the file's main day
    landing.land("mixed.parquet", frame)
    totals = {"stored": 0, "quarantined": 0}
    for day in (GOOD_DAY, BAD_DAY):
        result = landing.materialize(day)
        assert result.success
        rows = metadata_of(result)["rows_per_file"]["mixed.parquet"]
        parts = (
            "stored",
            "quarantined",
            "in_other_partitions",
            "before_first_partition",
            "for_days_not_closed",
        )
        assert rows["delivered"] == 54 == sum(rows[k] for k in parts), rows
        totals["stored"] += rows["stored"]
        totals["quarantined"] += rows["quarantined"]
    assert totals == {"stored": 30 - 5 + 19, "quarantined": 5 + 1}
    quarantine = landing.store.read_frame(landing.spec.keys.quarantine, GOOD_DAY)
    assert sorted(quarantine["reason"].unique()) == [
        "null tpep_pickup_datetime",
        "trip_distance outside (0, 400)",
    ]


def test_any_case_extensions_and_compressed_files_are_read(landing: Landing) -> None:
    """.CSV, .PARQUET and .csv.gz files used to be ignored without a word."""
    parts = [landing.trips(GOOD_DAY, 5, offset=i / 100) for i in range(6)]
    parts[0].to_csv(landing.folder / "upper.CSV", index=False)
    parts[1].to_parquet(landing.folder / "upper.PARQUET", index=False)
    parts[2].to_csv(landing.folder / "export.csv.gz", index=False, compression="gzip")
    (landing.folder / "export.csv.bz2").write_bytes(
        bz2.compress(parts[3].to_csv(index=False).encode())
    )
    parts[4].to_parquet(landing.folder / "zstd.parquet", index=False, compression="zstd")
    (landing.folder / "export.parquet.gz").write_bytes(
        gzip.compress(parts[5].to_parquet(index=False))
    )
    (landing.folder / "export.json").write_text(parts[0].to_json())
    data = landing.tick(None)
    assert requested(data) == [GOOD_DAY]
    [alert] = landing.notifier.alerts()
    assert "export.json ignored: not a landing file" in alert["body"]

    result = landing.materialize(GOOD_DAY)
    assert result.success
    metadata = metadata_of(result)
    assert metadata["landed_files"] == sorted(
        [
            "upper.CSV",
            "upper.PARQUET",
            "export.csv.gz",
            "export.csv.bz2",
            "zstd.parquet",
            "export.parquet.gz",
        ]
    )
    assert metadata["unsupported_files"] == ["export.json"]
    assert len(landing.stored(GOOD_DAY)) == 30
    assert landing.tick(data.cursor).run_requests == [] and len(landing.notifier.alerts()) == 1


def test_an_undecodable_csv_names_the_encodings_tried_and_how_to_declare_one(
    conf_dir: Path, project_dir: Path, tabml_home: Path, instance: DagsterInstance
) -> None:
    landing = Landing(conf_dir, tabml_home, instance)
    trips = landing.trips(GOOD_DAY, 9).assign(note="café crème")
    trips.to_csv(landing.folder / "latin1.csv", index=False, encoding="latin-1")
    data = landing.tick(None)
    assert data.run_requests == []
    reason = str(observations(data)["latin1.csv"].metadata["reason"].value)
    assert "cannot be decoded as text: tried utf-8 (with or without a byte-order mark)" in reason
    assert "declare the file's encoding as dataset.encoding" in reason

    declare(project_dir, encoding="latin-1")
    landing.reload()
    assert requested(landing.tick(data.cursor)) == [GOOD_DAY]
    result = landing.materialize(GOOD_DAY)
    assert result.success and len(landing.stored(GOOD_DAY)) == 9
    assert metadata_of(result)["ignored_columns"] == {"latin1.csv": ["note"]}


# Ingestion cost follows the folder, not the day. -------------------------------------------------


def test_a_run_reads_only_the_files_that_touch_its_day_and_stays_right_when_the_index_is_stale(
    landing: Landing,
) -> None:
    days = [(dt.date(2026, 1, 1) + dt.timedelta(days=i)).isoformat() for i in range(40)]
    for day in days:
        landing.land(f"trips_{day}.parquet", landing.trips(day, 6))
    landing.tick(None)  # the sensor reads every new file once and records its days
    assert (landing.folder / INDEX_FILE).exists()
    target = days[10]
    result = landing.materialize(target)
    assert result.success
    assert metadata_of(result)["files_read"] == [f"trips_{target}.parquet"]
    assert metadata_of(result)["files_in_folder"] == 40

    # Another file now also holds rows for the target day, and the sensor has not seen it yet:
    # its index entry is stale, so the run reads it again instead of trusting the index.
    landing.land(
        f"trips_{days[20]}.parquet",
        pd.concat([landing.trips(days[20], 6), landing.trips(target, 4, 0.01)]),
    )
    result = landing.materialize(target)
    assert result.success and len(landing.stored(target)) == 10
    assert metadata_of(result)["files_read"] == sorted(
        [f"trips_{days[20]}.parquet", f"trips_{target}.parquet"]
    )

    # A damaged index is rebuilt from the files: slower once, never wrong.
    (landing.folder / INDEX_FILE).write_text("{not json")
    result = landing.materialize(target)
    assert result.success and len(landing.stored(target)) == 10
    assert len(metadata_of(result)["files_read"]) == 40
    again = landing.materialize(target)
    assert metadata_of(again)["files_read"] == sorted(
        [f"trips_{days[20]}.parquet", f"trips_{target}.parquet"]
    )

    # An index made under another dataset spec (here: another time zone) is not trusted.
    declare(landing.conf_dir.parent / "examples" / "nyc_taxi", timezone="America/New_York")
    landing.reload()
    shifted = landing.materialize(target)
    assert shifted.success and len(metadata_of(shifted)["files_read"]) == 40


def test_a_tick_requests_a_bounded_batch_and_keeps_the_rest_for_later(landing: Landing) -> None:
    days = [
        (dt.date(2025, 10, 1) + dt.timedelta(days=i)).isoformat()
        for i in range(MAX_LANDING_RUNS_PER_TICK * 2 + 7)
    ]
    frame = pd.concat([landing.trips(day, 2) for day in days], ignore_index=True)
    for day, rows in frame.groupby(frame[PICKUP].dt.date.astype(str)):
        landing.land(f"d_{day}.parquet", rows)
    seen: list[str] = []
    cursor = None
    for expected in (MAX_LANDING_RUNS_PER_TICK, MAX_LANDING_RUNS_PER_TICK, 7, 0):
        data = landing.tick(cursor)
        assert len(data.run_requests) == expected
        seen += requested(data)
        cursor = data.cursor
    assert sorted(seen) == days  # every day once, in day order across ticks


# Bad partition keys. -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("2099-01-01", "partition key 2099-01-01 is in the future"),
        ("2024-06-01", "partition key 2024-06-01 is before the first partition 2025-01-01"),
    ],
    ids=["future", "before_start"],
)
def test_a_partition_key_outside_the_partitions_is_refused_up_front(
    landing: Landing, key: str, expected: str
) -> None:
    """A launch with any `dagster/partition` tag (UI, GraphQL) used to write a stray quarantine
    file and retry three times (future), or fail deep in Dagster (before the start)."""
    landing.land("good.parquet", landing.trips(GOOD_DAY, 5))
    job = landing.defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=landing.instance,
        asset_selection=[landing.spec.keys.raw_data, landing.spec.keys.quarantine, landing.spec.keys.features],
        tags={"dagster/partition": key},
        raise_on_error=False,
    )
    message = failure_text(result)
    assert expected in message, message
    last = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    assert f"the daily partitions run from 2025-01-01 to {last}" in message
    assert "Nothing was run or written" in message
    assert retries_of(result) == 0
    data = landing.tabml_home / "data"
    assert not data.exists() or not any(p.is_file() for p in data.rglob("*"))


def test_a_malformed_partition_key_never_becomes_a_run(landing: Landing) -> None:
    """Dagster itself refuses a key that is no date when the run is created: no step starts."""
    job = landing.defs.resolve_implicit_global_asset_job_def()
    for key in ("2026-13-01", "../x"):
        with pytest.raises(ValueError, match="does not match format"):
            job.execute_in_process(
                instance=landing.instance,
                asset_selection=[landing.spec.keys.raw_data, landing.spec.keys.quarantine],
                tags={"dagster/partition": key},
            )
    assert landing.instance.get_runs() == []
    assert not (landing.tabml_home / "data").exists()


@pytest.mark.parametrize(
    ("first", "last", "problem"),
    [
        ("2026-03-01", "2026-03-09", None),
        ("2026-03-01", "2026-03-10", "partition key 2026-03-10 has not closed yet"),
        ("2026-03-11", "2026-03-12", "partition key 2026-03-11 is in the future"),
        (
            "2024-12-30",
            "2026-01-01",
            "partition key 2024-12-30 is before the first partition 2025-01-01",
        ),
        ("2026-02-30", "2026-02-30", "partition key '2026-02-30' is not a calendar day"),
        ("20260301", "20260301", "partition key '20260301': expected a day as YYYY-MM-DD"),
    ],
)
def test_partition_range_problem_names_the_key_and_the_valid_range(
    first: str, last: str, problem: str | None
) -> None:
    found = partition_range_problem(first, last, dt.date(2025, 1, 1), dt.date(2026, 3, 9))
    if problem is None:
        assert found is None
        return
    assert found is not None and found.startswith(problem), found
    assert (
        "the daily partitions run from 2025-01-01 to 2026-03-09 (the latest UTC day that has closed)"
        in found
    )


def test_the_same_checks_hold_for_another_project(landing: Landing) -> None:
    """nyc_flights names none of nyc_taxi's columns: the landing rules come from its own spec."""
    deployment_spec = load_spec(
        "test", conf_dir=landing.conf_dir, tabml_home=landing.tabml_home, project="nyc_flights"
    )
    folder = deployment_spec.landing_folder()
    folder.mkdir(parents=True, exist_ok=True)
    assert deployment_spec.steps.demo_rows is not None
    good = deployment_spec.steps.demo_rows(dt.date(2026, 3, 4), 30)
    good.to_parquet(folder / "good.parquet", index=False)
    event = deployment_spec.pipeline.dataset.event_time
    bad = deployment_spec.steps.demo_rows(dt.date(2026, 3, 5), 30)
    bad.to_csv(folder / "day_first.csv", index=False, date_format="%d/%m/%Y %H:%M")
    defs = build_definitions(deployment_spec)
    result = run_selection(
        defs,
        landing.instance,
        [deployment_spec.keys.raw_data],
        partition_key="2026-03-04",
        raise_on_error=False,
    )
    assert result.success
    materialization = result.asset_materializations_for_node("nyc_flights__raw_data")[0]
    set_aside = materialization.metadata["set_aside_files"].value
    assert f"column '{event}' has dates such as" in set_aside["day_first.csv"]
    assert "order of day and month is ambiguous" in set_aside["day_first.csv"]


# The same, for real: `dagster dev` with its daemon, the file status in the UI. -----------------

LANDING_RUNS = """
query LandingRuns {
  runsOrError(filter: {tags: [{key: "tabml/trigger", value: "landing"}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""
OBSERVATIONS = """
query Observations {
  assetOrError(assetKey: {path: ["nyc_taxi", "raw_data"]}) {
    ... on Asset {
      assetObservations(limit: 20) {
        description
        metadataEntries { label ... on TextMetadataEntry { text } }
      }
    }
  }
}
"""


def landing_runs_by_day(server: DagsterDev) -> dict[str, str]:
    runs = server.graphql(LANDING_RUNS)["runsOrError"]["results"]
    return {
        next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition"): r["status"]
        for r in runs
    }


def wait_for(
    condition: Callable[[], object], what: str, server: DagsterDev, timeout: float = 150
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(
        f"{what} within {timeout}s; runs {landing_runs_by_day(server)}\n{server.log()[-4000:]}"
    )


@pytest.mark.slow
def test_under_dagster_dev_a_bad_file_is_shown_and_never_blocks_the_good_day(
    conf_dir: Path, tabml_home: Path, tmp_path: Path
) -> None:
    profile_path = conf_dir / "profiles" / "test.yaml"
    profile = yaml.safe_load(profile_path.read_text())
    profile["data_source"] = {"kind": "landing_folder", "landing_folder": "landing"}
    profile["sensors"] = {"default_status": "RUNNING", "minimum_interval_seconds": 2}
    profile["projects"] = NYC_TAXI_ONLY
    profile_path.write_text(yaml.safe_dump(profile))
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    assert spec.steps.demo_rows is not None
    folder = spec.landing_folder()
    folder.mkdir(parents=True)
    bad = spec.steps.demo_rows(dt.date.fromisoformat(BAD_DAY), 15)
    dagster_home = tmp_path / "dagster_home"
    write_instance_yaml(dagster_home)
    with dagster_dev(
        tabml_home, dagster_home, extra_env={"TABML_CONF_DIR": str(conf_dir)}
    ) as server:
        bad.rename(columns={"trip_distance": "Trip_Distance"}).to_csv(
            folder / "wrong_case.csv", index=False
        )
        write_parquet_atomic(
            spec.steps.demo_rows(dt.date.fromisoformat(GOOD_DAY), 20), folder / "good.parquet"
        )
        wait_for(
            lambda: landing_runs_by_day(server).get(GOOD_DAY) == "SUCCESS",
            f"{GOOD_DAY} ingested",
            server,
        )

        def status_of_bad_file() -> str | None:
            asset = server.graphql(OBSERVATIONS)["assetOrError"]
            for event in asset.get("assetObservations", []):
                entries = {e["label"]: e.get("text") for e in event["metadataEntries"]}
                if entries.get("landing_file") == "wrong_case.csv":
                    return f"{entries.get('status')}: {entries.get('reason')}"
            return None

        shown = str(wait_for(status_of_bad_file, "the bad file's status on raw_data", server))
        assert shown.startswith("cannot be used: ") and "only in case" in shown
        assert BAD_DAY not in landing_runs_by_day(server)
        wait_for(
            lambda: "landing file problem(s)" in server.log(),
            "the alert in the daemon's log",
            server,
            30,
        )

        bad.to_csv(folder / "wrong_case.csv", index=False)  # fixed
        wait_for(
            lambda: landing_runs_by_day(server).get(BAD_DAY) == "SUCCESS",
            f"{BAD_DAY} ingested once fixed",
            server,
        )
    store = build_partition_store(spec)
    assert len(store.read_frame(spec.keys.raw_data, GOOD_DAY)) == 20
    assert len(store.read_frame(spec.keys.raw_data, BAD_DAY)) == 15
