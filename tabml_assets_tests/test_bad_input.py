"""The bad-input suite: each kind of bad landing file, its outcome, and stored good data intact.

Every case first stores a good day, then lands something bad and materializes raw_data again
through a real Dagster instance: the step either fails with a message naming the file, the
column and the expectation (and writes nothing), or quarantines exactly the bad rows with a
reason and keeps every good one.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from tabml_assets.definitions import build_definitions
from tabml_assets.keys import PipelineKeys
from tabml_assets.ml.quality import REASON_COLUMN
from tabml_assets.resources import build_partition_store, data_sources
from tabml_assets.resources.storage import (
    PartitionedParquetIOManager,
    PartitionStore,
    atomic_write_bytes,
    write_parquet_atomic,
)
from tabml_assets.seed import run_selection
from tabml_assets.spec import LoadedSpec, load_spec

DAY = dt.date(2026, 3, 5)
KEY = DAY.isoformat()
KEYS = PipelineKeys("nyc_taxi")
ROWS = 40
# The nyc_taxi example's columns: the dataset these landing files belong to.
PICKUP = "tpep_pickup_datetime"
DROPOFF = "tpep_dropoff_datetime"
RAW_DATA_NODE = "nyc_taxi__raw_data"


DEMO_ROWS = load_spec("test").steps.demo_rows


def generate_demo_trips(day: dt.date, rows: int) -> pd.DataFrame:
    """The nyc_taxi example's demo trips, from its steps module."""
    assert DEMO_ROWS is not None
    return DEMO_ROWS(day, rows)


@dataclass
class Landing:
    """A dev-like deployment reading a landing folder, with one good day already stored."""

    spec: LoadedSpec
    defs: Definitions
    instance: DagsterInstance
    folder: Path
    store: PartitionStore
    good: pd.DataFrame

    def stored(self, key: str = KEY) -> pd.DataFrame:
        return self.store.read_frame(self.spec.keys.raw_data, key)

    def quarantine(self, key: str = KEY) -> pd.DataFrame:
        return self.store.read_frame(self.spec.keys.quarantine, key)

    def materialize(self, key: str | None = KEY, partition_range: tuple[str, str] | None = None) -> ExecuteInProcessResult:
        return run_selection(
            self.defs, self.instance, [self.spec.keys.raw_data],
            partition_key=None if partition_range else key,
            partition_range=partition_range, raise_on_error=False,
        )


@pytest.fixture
def landing(conf_dir: Path, tabml_home: Path, instance: DagsterInstance) -> Landing:
    profile_path = conf_dir / "profiles" / "test.yaml"
    profile = yaml.safe_load(profile_path.read_text())
    profile["data_source"] = {"kind": "landing_folder", "landing_folder": "landing"}
    profile_path.write_text(yaml.safe_dump(profile))
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    folder = spec.landing_folder()
    assert folder == tabml_home / "landing" / "nyc_taxi"
    folder.mkdir(parents=True)
    good = generate_demo_trips(DAY, ROWS)
    good.to_parquet(folder / "good.parquet", index=False)
    store = build_partition_store(spec)
    state = Landing(spec, build_definitions(spec), instance, folder, store, good)
    assert state.materialize().success
    assert Path(store.root) == tabml_home / "data"
    pd.testing.assert_frame_equal(state.stored(), good)
    return state


def failure_text(result: ExecuteInProcessResult) -> str:
    assert not result.success, "the run was expected to fail"
    texts = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            texts.append(data.error.message if data.error else "")
            if data.user_failure_data and data.user_failure_data.description:
                texts.append(data.user_failure_data.description)
    return "\n".join(texts)


def retries_of(result: ExecuteInProcessResult) -> int:
    return sum(1 for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY")


def materialization_metadata(result: ExecuteInProcessResult) -> dict:
    # A range run records one materialization per partition, all with the step's metadata.
    materialization = result.asset_materializations_for_node(RAW_DATA_NODE)[0]
    return {k: v.value for k, v in materialization.metadata.items()}


def check_results(result: ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")


# Cases where the file cannot be used at all: the step fails and writes nothing. ----------------


def corrupt_parquet(folder: Path, good: pd.DataFrame) -> None:
    (folder / "corrupt.parquet").write_bytes(b"PAR1 this is not a parquet footer PAR1")


def wrong_dtypes(folder: Path, good: pd.DataFrame) -> None:
    bad = good.head(10).astype({"trip_distance": "object"})
    bad["trip_distance"] = "two miles"
    write_csv(bad, folder / "wrong_dtypes.csv")


def all_null_feature(folder: Path, good: pd.DataFrame) -> None:
    bad = good.head(10).copy()
    bad["trip_distance"] = None
    bad.to_parquet(folder / "null_distance.parquet", index=False)


def missing_column(folder: Path, good: pd.DataFrame) -> None:
    write_csv(good.head(10).drop(columns=["dropoff_zip"]), folder / "missing_column.csv")


def too_many_bad_rows(folder: Path, good: pd.DataFrame) -> None:
    bad = generate_demo_trips(DAY, 100)
    bad["trip_distance"] = -bad["trip_distance"]
    bad.to_parquet(folder / "negative_everywhere.parquet", index=False)


@pytest.mark.parametrize(
    ("land_bad_file", "expected"),
    [
        (wrong_dtypes, ["wrong_dtypes.csv", "column 'trip_distance' expected float, found object", "two miles"]),
        (all_null_feature, ["null_distance.parquet", "column 'trip_distance' is empty in all 10 rows",
                            "expected float values"]),
        (missing_column, ["missing_column.csv", "missing column(s) ['dropoff_zip']"]),
        (too_many_bad_rows, ["100 of 140 rows (71%) failed validation", "max_quarantine_fraction 0.5",
                             "negative_everywhere.parquet row 0: trip_distance outside (0, 400)"]),
    ],
    ids=["wrong_dtypes", "all_null_feature", "csv_missing_column", "mostly_bad_rows"],
)
def test_unusable_input_fails_at_once_and_keeps_the_stored_partition(
    landing: Landing, land_bad_file: Callable[[Path, pd.DataFrame], None], expected: list[str]
) -> None:
    quarantine_before = landing.quarantine()
    land_bad_file(landing.folder, landing.good)
    result = landing.materialize()
    message = failure_text(result)
    for text in expected:
        assert text in message, message
    assert "nothing was written" in message.lower()
    # A data error is permanent: the retry policy does not retry it.
    assert retries_of(result) == 0
    pd.testing.assert_frame_equal(landing.stored(), landing.good)
    pd.testing.assert_frame_equal(landing.quarantine(), quarantine_before)
    # The bad file holds rows for DAY only: it never fails a day it does not feed.
    other_day = (DAY + dt.timedelta(days=2)).isoformat()
    generate_demo_trips(DAY + dt.timedelta(days=2), 6).to_parquet(landing.folder / "other_day.parquet", index=False)
    assert landing.materialize(other_day).success
    assert len(landing.stored(other_day)) == 6


def test_a_file_that_cannot_be_read_at_all_is_set_aside_and_named(landing: Landing) -> None:
    """A corrupt parquet file holds rows for no day anyone can tell: it is set aside with its
    reason, named on every day's materialization, and fails none of them."""
    corrupt_parquet(landing.folder, landing.good)
    extra = generate_demo_trips(DAY, 5).assign(fare_amount=lambda f: f["fare_amount"] + 0.001)
    extra.to_parquet(landing.folder / "more.parquet", index=False)
    result = landing.materialize()
    assert result.success
    metadata = materialization_metadata(result)
    reason = metadata["set_aside_files"]["corrupt.parquet"]
    assert "corrupt.parquet: cannot be read as parquet" in reason, reason
    assert metadata["landed_files"] == ["good.parquet", "more.parquet"]
    assert retries_of(result) == 0
    stored = landing.stored()
    assert len(stored) == ROWS + 5 and len(stored.merge(landing.good, how="inner")) == ROWS


# Unlabelled rows are not bad: the label (fare_amount) is nullable and may be absent. ------------


def test_rows_without_a_label_are_stored_with_a_null_target(landing: Landing) -> None:
    """A file whose fares are all null, and a CSV with no fare column at all, are scoring rows:
    ingested with a null fare, never quarantined (the label arrives later, if ever)."""
    null_fares = landing.good.head(10).copy()
    null_fares["fare_amount"] = None
    null_fares.to_parquet(landing.folder / "null_fares.parquet", index=False)
    # Other trips than the good ones, so they are not duplicates of them.
    no_label = generate_demo_trips(DAY, 5).assign(trip_distance=lambda f: f["trip_distance"] + 0.01)
    write_csv(no_label.drop(columns=["fare_amount"]), landing.folder / "no_fare_column.csv")
    result = landing.materialize()
    assert result.success
    assert landing.quarantine().empty
    metadata = materialization_metadata(result)
    assert metadata["quarantined_rows"] == 0
    assert metadata["landed_files"] == ["good.parquet", "no_fare_column.csv", "null_fares.parquet"]
    assert metadata["ignored_columns"] == {}
    checks = check_results(result)
    assert checks["raw_quarantine"] and checks["raw_schema"] and checks["raw_no_nulls"] and checks["raw_value_ranges"]
    stored = landing.stored()
    assert len(stored) == ROWS + 10 + 5 and list(stored.columns) == list(landing.good.columns)
    assert stored["fare_amount"].dtype == "float64"
    # Every good row is still there with its fare; exactly the unlabelled ones have none.
    assert len(stored.merge(landing.good, how="inner")) == ROWS
    unlabelled = stored[stored["fare_amount"].isna()]
    assert len(unlabelled) == 15
    features = ["trip_distance", "pickup_zip", "dropoff_zip", PICKUP, DROPOFF]
    pd.testing.assert_frame_equal(
        unlabelled[features].sort_values(features).reset_index(drop=True),
        pd.concat([null_fares, no_label])[features].sort_values(features).reset_index(drop=True),
        check_dtype=False,
    )


# Cases where only some rows are bad: they are quarantined, the good ones kept. ------------------


def truncated_csv(folder: Path, good: pd.DataFrame) -> int:
    path = folder / "truncated.csv"
    write_csv(generate_demo_trips(DAY, 20).assign(fare_amount=lambda f: f["fare_amount"] + 0.001), path)
    text = path.read_text()
    # The upload stopped in the middle of the last row's dropoff time.
    path.write_text(text[: text.rstrip("\n").rfind("\n") + 1 + 25])
    return 1


def negative_distances(folder: Path, good: pd.DataFrame) -> int:
    extra = generate_demo_trips(DAY, 12).assign(fare_amount=lambda f: f["fare_amount"] + 0.001)
    extra.loc[:2, "trip_distance"] = -1.5
    extra.to_parquet(folder / "negative.parquet", index=False)
    return 3


def future_timestamps(folder: Path, good: pd.DataFrame) -> int:
    extra = generate_demo_trips(DAY, 10).assign(fare_amount=lambda f: f["fare_amount"] + 0.001)
    extra.loc[:1, PICKUP] = pd.Timestamp("2099-01-01 10:00")
    extra.loc[:1, DROPOFF] = pd.Timestamp("2099-01-01 10:30")
    extra.to_parquet(folder / "future.parquet", index=False)
    return 2


def same_file_landed_twice(folder: Path, good: pd.DataFrame) -> int:
    shutil.copy(folder / "good.parquet", folder / "good_again.parquet")
    return ROWS


@pytest.mark.parametrize(
    ("land_bad_rows", "reason"),
    [
        # Its fare is cut off too, but a missing label is no reason: the missing distance is.
        (truncated_csv, "null trip_distance"),
        (negative_distances, "trip_distance outside (0, 400)"),
        (same_file_landed_twice, "duplicate row"),
    ],
    ids=["truncated_csv", "negative_distances", "duplicate_rows"],
)
def test_bad_rows_are_quarantined_with_a_reason_and_good_rows_kept(
    landing: Landing, land_bad_rows: Callable[[Path, pd.DataFrame], int], reason: str
) -> None:
    bad_rows = land_bad_rows(landing.folder, landing.good)
    result = landing.materialize()
    assert result.success
    quarantine = landing.quarantine()
    assert len(quarantine) == bad_rows
    assert all(reason in r for r in quarantine[REASON_COLUMN]), quarantine[REASON_COLUMN].tolist()
    metadata = materialization_metadata(result)
    assert metadata["quarantined_rows"] == bad_rows
    assert metadata["quarantine_reasons"][reason] == bad_rows
    checks = check_results(result)
    assert checks["raw_quarantine"] is False  # WARN: visible, not blocking
    assert checks["raw_schema"] and checks["raw_no_nulls"] and checks["raw_value_ranges"]
    stored = landing.stored()
    # Every previously stored good row is still there, and no bad row got in.
    assert len(stored.merge(landing.good, how="inner")) == ROWS
    assert not stored.duplicated().any()
    assert (stored["trip_distance"] > 0).all() and (stored[PICKUP].dt.date == DAY).all()


def test_rows_for_days_not_closed_wait_for_their_day_and_are_accounted_for(landing: Landing) -> None:
    """Pickups in the future belong to a day that has not closed: no partition holds them yet,
    so they are neither stored nor quarantined in DAY, but counted per file as out of range."""
    future_timestamps(landing.folder, landing.good)
    result = landing.materialize()
    assert result.success
    assert landing.quarantine().empty
    stored = landing.stored()
    assert len(stored) == ROWS + 8 and (stored[PICKUP].dt.date == DAY).all()
    rows = materialization_metadata(result)["rows_per_file"]["future.parquet"]
    assert rows == {
        "delivered": 10, "stored": 8, "quarantined": 0, "in_other_partitions": 0,
        "before_first_partition": 0, "for_days_not_closed": 2,
    }
    assert materialization_metadata(result)["out_of_range_rows"] == 2


def test_a_dropoff_in_the_future_is_quarantined(landing: Landing) -> None:
    extra = generate_demo_trips(DAY, 10).assign(fare_amount=lambda f: f["fare_amount"] + 0.001)
    extra.loc[:1, DROPOFF] = pd.Timestamp("2099-01-01 10:30")
    extra.to_parquet(landing.folder / "future_dropoff.parquet", index=False)
    result = landing.materialize()
    assert result.success
    quarantine = landing.quarantine()
    assert len(quarantine) == 2
    assert all("tpep_dropoff_datetime in the future" in r for r in quarantine[REASON_COLUMN])
    assert materialization_metadata(result)["rows_per_file"]["future_dropoff.parquet"]["quarantined"] == 2


# Cases that are not errors, but must not go unnoticed. ------------------------------------------


def test_empty_file_is_skipped_and_reported(landing: Landing) -> None:
    (landing.folder / "upload_in_progress.csv").write_bytes(b"")
    result = landing.materialize()
    assert result.success
    assert materialization_metadata(result)["empty_files"] == ["upload_in_progress.csv"]
    pd.testing.assert_frame_equal(landing.stored(), landing.good)


def test_unknown_extra_column_is_ignored_and_reported(landing: Landing) -> None:
    extra = generate_demo_trips(DAY, 5).assign(fare_amount=lambda f: f["fare_amount"] + 0.001, tip_amount=1.0)
    extra.to_parquet(landing.folder / "with_tips.parquet", index=False)
    result = landing.materialize()
    assert result.success
    assert materialization_metadata(result)["ignored_columns"] == {"with_tips.parquet": ["tip_amount"]}
    stored = landing.stored()
    assert list(stored.columns) == list(landing.good.columns) and len(stored) == ROWS + 5


def test_zero_row_partition_is_stored_but_never_replaces_stored_rows(landing: Landing) -> None:
    quiet = (DAY + dt.timedelta(days=1)).isoformat()
    result = landing.materialize(quiet)
    assert result.success
    assert landing.stored(quiet).empty and landing.quarantine(quiet).empty
    assert check_results(result) == {
        "raw_schema": True, "raw_non_empty": False, "raw_no_nulls": True,
        "raw_value_ranges": True, "raw_quarantine": True,
    }
    # The only file of a stored day disappears: an empty read must not wipe the stored rows.
    (landing.folder / "good.parquet").unlink()
    message = failure_text(landing.materialize())
    assert f"raw_data {KEY}: the data source delivered 0 rows, but the stored partition has {ROWS} rows" in message
    pd.testing.assert_frame_equal(landing.stored(), landing.good)


def test_file_spanning_several_days_feeds_each_day(landing: Landing) -> None:
    next_day = DAY + dt.timedelta(days=1)
    spanning = pd.concat(
        [generate_demo_trips(DAY, 7).assign(fare_amount=lambda f: f["fare_amount"] + 0.001),
         generate_demo_trips(next_day, 9)],
        ignore_index=True,
    )
    write_csv(spanning, landing.folder / "two_days.csv")
    result = landing.materialize(partition_range=(KEY, next_day.isoformat()))
    assert result.success
    assert len(landing.stored()) == ROWS + 7 and len(landing.stored(next_day.isoformat())) == 9
    assert landing.quarantine().empty and landing.quarantine(next_day.isoformat()).empty
    metadata = materialization_metadata(result)
    assert metadata["quarantined_per_partition"] == {KEY: 0, next_day.isoformat(): 0}
    assert metadata["landed_files"] == ["good.parquet", "two_days.csv"]
    assert len(landing.instance.fetch_materializations(landing.spec.keys.raw_data, limit=10).records) == 3


# Atomic writes: a failure mid-write leaves the previous version readable. ------------------------


def test_a_writer_that_raises_midway_leaves_the_previous_version(tmp_path: Path) -> None:
    target = PartitionStore(root=str(tmp_path)).path(KEYS.raw_data, KEY)
    previous = generate_demo_trips(DAY, 30)
    write_parquet_atomic(previous, target)

    def half_then_crash(tmp: Path) -> None:
        tmp.write_bytes(target.read_bytes()[:100])
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, half_then_crash)
    pd.testing.assert_frame_equal(pd.read_parquet(target), previous)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # temp file removed


KILLED_WRITER = """
import sys, time
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from tabml_assets.resources.storage import atomic_write_bytes

def slow_write(tmp):
    table = pa.table({"x": list(range(1000))})
    with pq.ParquetWriter(tmp, table.schema) as writer:
        while True:  # the writer never finishes: it is killed mid-write
            writer.write_table(table)
            time.sleep(0.01)

atomic_write_bytes(Path(sys.argv[1]), slow_write)
"""


def test_a_writer_killed_midway_leaves_the_previous_version(tmp_path: Path) -> None:
    target = PartitionStore(root=str(tmp_path)).path(KEYS.features, KEY)
    previous = generate_demo_trips(DAY, 30)
    write_parquet_atomic(previous, target)
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)])
    try:
        deadline = time.monotonic() + 60
        temp_files: list[Path] = []
        while time.monotonic() < deadline and not any(p.stat().st_size > 10_000 for p in temp_files):
            temp_files = [p for p in target.parent.iterdir() if p.name != target.name]
            time.sleep(0.05)
        assert temp_files, "the writer never started writing"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    pd.testing.assert_frame_equal(pd.read_parquet(target), previous)
    # What the kill left behind is a hidden temp file, which no reader or landing scan picks up.
    assert all(p.name.startswith(f".{target.name}.") and p.suffix == ".tmp" for p in temp_files)


# Streaming: a day is read, validated and written in batches, never whole. ----------------------


def materialize_streaming(landing: Landing, batch_rows: int) -> ExecuteInProcessResult:
    """raw_data for KEY on the landing deployment, its store streaming `batch_rows` rows at a time."""
    store = PartitionStore(root=landing.store.root, stream_batch_rows=batch_rows)
    resources = {**landing.defs.resources, "partition_store": store, "io_manager": PartitionedParquetIOManager(store=store)}
    defs = Definitions(assets=landing.defs.assets, asset_checks=landing.defs.asset_checks, resources=resources)
    return run_selection(defs, landing.instance, [landing.spec.keys.raw_data], partition_key=KEY, raise_on_error=False)


@pytest.mark.parametrize("name", ["big.parquet", "big.csv.gz"])
def test_a_day_streams_in_batches_with_the_same_quarantine_as_a_whole_read(
    landing: Landing, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Every file skimmed and streamed in batches of 7 rows: a duplicate of a row in an earlier
    batch, a bad value and an unparseable one are quarantined with their file row, and the
    stored day is the whole-read result, written one row group per batch."""
    monkeypatch.setattr(data_sources, "FULL_READ_BYTES", 0)
    extra = generate_demo_trips(DAY, 30).assign(fare_amount=lambda f: f["fare_amount"] + 0.001)
    extra.loc[10, "trip_distance"] = -2.0
    extra.loc[20] = extra.loc[2]  # repeats a row three batches earlier
    if name.endswith(".parquet"):
        extra.to_parquet(landing.folder / name, index=False, row_group_size=9)
    else:
        text = extra.astype({"pickup_zip": "object"})
        text.loc[25, "pickup_zip"] = "not a zip"
        text.to_csv(landing.folder / name, index=False, date_format="%Y-%m-%d %H:%M:%S", compression="gzip")
    result = materialize_streaming(landing, batch_rows=7)
    assert result.success
    quarantine = landing.quarantine()
    bad_rows = {10: "trip_distance outside (0, 400)", 20: "duplicate row"}
    if name.endswith(".csv.gz"):
        bad_rows[25] = "unparseable pickup_zip; null pickup_zip"
    assert dict(zip(quarantine["source_row"], quarantine[REASON_COLUMN], strict=True)) == bad_rows
    assert set(quarantine["source_file"]) == {name}
    # Files in name order (big.* before good.parquet), each file's rows in its order.
    stored = landing.stored()
    kept = extra.drop(index=list(bad_rows)).reset_index(drop=True)
    pd.testing.assert_frame_equal(stored.iloc[: len(kept)].reset_index(drop=True), kept.astype(stored.dtypes.to_dict()))
    pd.testing.assert_frame_equal(stored.iloc[len(kept) :].reset_index(drop=True), landing.good)
    row_groups = pq.ParquetFile(landing.store.path(landing.spec.keys.raw_data, KEY)).metadata.num_row_groups
    assert row_groups >= 30 // 7  # one (or more) per batch: the day was never one frame
    rows = materialization_metadata(result)["rows_per_file"][name]
    assert rows == {"delivered": 30, "stored": 30 - len(bad_rows), "quarantined": len(bad_rows),
                    "in_other_partitions": 0, "before_first_partition": 0, "for_days_not_closed": 0}


def test_a_bad_cell_deep_in_a_many_block_csv_quarantines_its_row_and_the_rest_lands(
    landing: Landing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV streamed through arrow a few hundred bytes at a time: the blocks before and after
    the unparseable distance are read typed, its row alone is quarantined with the column
    named and its file row, and every other row is stored in order."""
    monkeypatch.setattr(data_sources, "FULL_READ_BYTES", 0)
    monkeypatch.setattr(data_sources, "CSV_BLOCK_BYTES", 1024)
    extra = generate_demo_trips(DAY, 1200).assign(fare_amount=lambda f: f["fare_amount"] + 0.001)
    text = extra.astype({"trip_distance": "object"})
    text.loc[950, "trip_distance"] = "3.1.4"
    # Named to come before good.parquet: a day stores its files in name order.
    write_csv(text, landing.folder / "blocks.csv")
    assert (landing.folder / "blocks.csv").stat().st_size > 40 * 1024
    result = materialize_streaming(landing, batch_rows=200)
    assert result.success
    quarantine = landing.quarantine()
    assert dict(zip(quarantine["source_row"], quarantine[REASON_COLUMN], strict=True)) == {
        950: "unparseable trip_distance; null trip_distance"
    }
    kept = extra.drop(index=[950]).reset_index(drop=True)
    stored = landing.stored()
    pd.testing.assert_frame_equal(stored.iloc[: len(kept)].reset_index(drop=True), kept.astype(stored.dtypes.to_dict()))
    pd.testing.assert_frame_equal(stored.iloc[len(kept) :].reset_index(drop=True), landing.good)
    assert materialization_metadata(result)["rows_per_file"]["blocks.csv"]["quarantined"] == 1


def test_a_refusal_found_after_streaming_leaves_stored_partitions_and_no_temp_files(
    landing: Landing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quarantine fraction is known only after the last batch: the batches already written
    go to temporary files, which the refusal removes; the stored day and its quarantine stay."""
    monkeypatch.setattr(data_sources, "FULL_READ_BYTES", 0)
    bad = generate_demo_trips(DAY, 100).assign(trip_distance=-1.0)
    bad.to_parquet(landing.folder / "bad.parquet", index=False)
    store = landing.store
    stored = (landing.spec.keys.raw_data, landing.spec.keys.quarantine)
    before = {key: store.path(key, KEY).read_bytes() for key in stored}
    summaries = {key: store.path(key, KEY, ".summary.json").read_bytes() for key in stored}
    result = materialize_streaming(landing, batch_rows=16)
    message = failure_text(result)
    assert "100 of 140 rows (71%) failed validation" in message
    assert "Nothing was written; stored partitions are unchanged." in message
    for key, content in before.items():
        assert store.path(key, KEY).read_bytes() == content
        # The stored day keeps its summary beside it, unchanged as well.
        assert store.path(key, KEY, ".summary.json").read_bytes() == summaries[key]
        assert sorted(p.name for p in store.asset_folder(key).iterdir()) == [f"{KEY}.parquet", f"{KEY}.summary.json"]


def test_a_large_file_unusable_only_past_its_first_batches_blocks_its_day(
    landing: Landing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A skimmed file whose distance column holds no number in any row: known only at the end
    of the stream, it holds back its day, is recorded in the landing index and nothing is written."""
    monkeypatch.setattr(data_sources, "FULL_READ_BYTES", 0)
    words = generate_demo_trips(DAY, 30).astype({"trip_distance": "object"}).assign(trip_distance="far")
    write_csv(words, landing.folder / "words.csv")
    stored = landing.stored()
    result = materialize_streaming(landing, batch_rows=7)
    message = failure_text(result)
    assert "1 landing file(s) hold rows for this day but cannot be used" in message
    assert "words.csv: column 'trip_distance' expected float, found object values such as ['far', 'far', 'far']" in message
    pd.testing.assert_frame_equal(landing.stored(), stored)
    index = json.loads((landing.folder / data_sources.INDEX_FILE).read_text())
    assert "trip_distance" in index["files"]["words.csv"]["error"]
