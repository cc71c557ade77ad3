"""Partition storage: atomic writes, safe paths, streaming a partition through a pandas
function batch by batch, compacting Spark part files, and the IO manager reading the result."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, build_input_context, build_output_context

from tabml_assets.ml.features import FeatureTable
from tabml_assets.ml.features import build_features as build_feature_table
from tabml_assets.resources.storage import (
    BackgroundWrites,
    PartitionedParquetIOManager,
    PartitionStore,
    SummaryColumns,
    TransformOutputError,
    UnsafePathError,
    atomic_write_bytes,
    compact_parquet_parts,
    made_ahead,
    schema_of_frame,
    stream_transform_parquet,
    write_parquet_atomic,
    written_metadata,
)
from tabml_assets.spec import load_spec

DAY = dt.date(2026, 3, 2)
# The nyc_taxi example's features and keys: a real project's data through the store.
SPEC = load_spec("test")
KEYS = SPEC.keys
FEATURE_TABLE = FeatureTable.of(SPEC.pipeline)
PICKUP = SPEC.pipeline.event_time


def generate_demo_trips(day: dt.date, rows: int) -> pd.DataFrame:
    assert SPEC.steps.demo_rows is not None
    return SPEC.steps.demo_rows(day, rows)


def build_features(raw: pd.DataFrame) -> pd.DataFrame:
    """The features asset's batch transform: the project's derived columns in the feature table."""
    return build_feature_table(raw, FEATURE_TABLE, derive=SPEC.steps.build_features)


def with_label(frame: pd.DataFrame, label: str = "scored") -> pd.DataFrame:
    """A transform shaped like scoring: a derived number and a constant string column."""
    out = frame.copy()
    out["double_distance"] = out["trip_distance"] * 2
    out["label"] = label
    return out


@pytest.fixture
def store(tmp_path: Path) -> PartitionStore:
    return PartitionStore(root=str(tmp_path / "data"), stream_batch_rows=7)


@pytest.fixture
def raw_partition(store: PartitionStore) -> Path:
    path = store.path(KEYS.raw_data, DAY.isoformat())
    write_parquet_atomic(generate_demo_trips(DAY, 50), path)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_failed_write_keeps_the_previous_file_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "part" / "2026-03-02.parquet"
    write_parquet_atomic(pd.DataFrame({"a": [1, 2]}), path)

    def crash(tmp: Path) -> None:
        tmp.write_bytes(b"half a parquet file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, crash)
    pd.testing.assert_frame_equal(pd.read_parquet(path), pd.DataFrame({"a": [1, 2]}))
    assert leftovers(path.parent) == []


def test_partitions_live_under_their_project_and_asset(tmp_path: Path, store: PartitionStore) -> None:
    assert store.path(KEYS.raw_data, "2026-03-02") == tmp_path / "data" / "nyc_taxi" / "raw_data" / "2026-03-02.parquet"
    assert store.path(KEYS.features, None, ".json") == tmp_path / "data" / "nyc_taxi" / "features" / "latest.json"


@pytest.mark.parametrize("key", ["../escape", "a/b", "", ".hidden", "2026-03-02/.."])
def test_partition_keys_cannot_leave_the_root(store: PartitionStore, key: str) -> None:
    with pytest.raises(UnsafePathError, match="partition key"):
        store.path(KEYS.features, key)


@pytest.mark.parametrize("project", ["..", "a/b", ".hidden"])
def test_asset_key_segments_cannot_leave_the_root(store: PartitionStore, project: str) -> None:
    with pytest.raises(UnsafePathError, match="asset key"):
        store.path(AssetKey([project, "features"]), "2026-03-02")


def test_streamed_transform_runs_batch_by_batch_and_matches_the_whole_frame(
    store: PartitionStore, raw_partition: Path
) -> None:
    seen: list[int] = []

    def engineer(frame: pd.DataFrame) -> pd.DataFrame:
        seen.append(len(frame))
        return build_features(frame)

    written = store.transform_partition(
        KEYS.raw_data, KEYS.features, DAY.isoformat(), engineer,
        summary=SummaryColumns(sums=("trip_distance",), ranges=(PICKUP,)),
    )

    # 50 rows in batches of at most 7: the partition never sits in memory whole.
    assert seen == [7, 7, 7, 7, 7, 7, 7, 1]
    assert pq.ParquetFile(written.path).metadata.num_row_groups == 8
    expected = build_features(pd.read_parquet(raw_partition))
    pd.testing.assert_frame_equal(pd.read_parquet(written.path), expected)
    assert written.path == store.path(KEYS.features, DAY.isoformat())
    assert written.rows == 50
    assert written.column_sums["trip_distance"] == pytest.approx(expected["trip_distance"].sum())
    assert written.column_ranges[PICKUP] == (expected[PICKUP].min(), expected[PICKUP].max())
    pd.testing.assert_frame_equal(written.preview, expected.head(5))
    assert leftovers(written.path.parent) == []


def test_shared_objects_reach_the_transform_as_keyword_arguments(
    store: PartitionStore, raw_partition: Path
) -> None:
    written = store.transform_partition(
        KEYS.raw_data, KEYS.asset("labelled"), DAY.isoformat(), with_label, shared={"label": "from shared"}
    )
    assert set(pd.read_parquet(written.path)["label"]) == {"from shared"}


def test_empty_partition_keeps_the_full_schema(tmp_path: Path) -> None:
    source = tmp_path / "empty.parquet"
    write_parquet_atomic(generate_demo_trips(DAY, 10).iloc[:0], source)
    full_source = tmp_path / "full.parquet"
    write_parquet_atomic(generate_demo_trips(DAY, 10), full_source)

    empty = stream_transform_parquet(source, tmp_path / "out_empty.parquet", with_label)
    full = stream_transform_parquet(full_source, tmp_path / "out_full.parquet", with_label)

    assert empty.rows == 0 and pq.read_metadata(empty.path).num_rows == 0
    # The constant string column is a string column even with no row to infer it from.
    assert pq.read_schema(empty.path).field("label").type == pa.string()
    assert pq.read_schema(empty.path).names == pq.read_schema(full.path).names
    assert pd.read_parquet(empty.path).dtypes.to_dict() == pd.read_parquet(full.path).dtypes.to_dict()


def test_a_batch_that_does_not_fit_names_the_partition_and_column_and_keeps_the_old_file(
    store: PartitionStore, raw_partition: Path
) -> None:
    target = store.path(KEYS.features, DAY.isoformat())
    write_parquet_atomic(pd.DataFrame({"previous": [1]}), target)
    calls = {"n": 0}

    def drops_a_column_later(frame: pd.DataFrame) -> pd.DataFrame:
        calls["n"] += 1
        out = build_features(frame)
        return out.drop(columns=["pickup_hour"]) if calls["n"] == 3 else out

    with pytest.raises(TransformOutputError) as raised:
        store.transform_partition(KEYS.raw_data, KEYS.features, DAY.isoformat(), drops_a_column_later)
    message = str(raised.value)
    assert str(target) in message and "['pickup_hour']" in message
    pd.testing.assert_frame_equal(pd.read_parquet(target), pd.DataFrame({"previous": [1]}))
    assert leftovers(target.parent) == []


def test_missing_upstream_partition_says_what_to_materialize(store: PartitionStore) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        store.transform_partition(KEYS.raw_data, KEYS.features, "2026-03-05", with_label)
    message = str(raised.value)
    assert "nyc_taxi/raw_data: partition 2026-03-05 is not materialized" in message
    assert "materialize nyc_taxi/raw_data for 2026-03-05 first" in message
    assert str(store.path(KEYS.raw_data, "2026-03-05")) in message


def test_compaction_keeps_part_order_and_casts_to_the_partition_schema(tmp_path: Path) -> None:
    parts = tmp_path / "spark_out"
    parts.mkdir()
    frame = pd.DataFrame({"n": range(10), "x": [float(i) / 3 for i in range(10)]})
    # As Spark writes them: one file per task, names in task order, plus a commit marker.
    for task, start in enumerate((0, 4, 8)):
        chunk = frame.iloc[start : start + 4]
        pq.write_table(pa.Table.from_pandas(chunk[["x", "n"]], preserve_index=False), parts / f"part-{task:05d}-abc.snappy.parquet")
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    target = tmp_path / "out" / "2026-03-02.parquet"

    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        compact_parquet_parts(parts, target, schema)
    (parts / "_SUCCESS").touch()
    written = compact_parquet_parts(parts, target, schema, batch_rows=3, summary=SummaryColumns(sums=("n",)))

    pd.testing.assert_frame_equal(pd.read_parquet(target), frame)
    assert written.rows == 10 and written.column_sums["n"] == 45


def test_io_manager_reads_streamed_partitions_and_rejects_wrong_partition_sets(
    store: PartitionStore, raw_partition: Path
) -> None:
    store.transform_partition(KEYS.raw_data, KEYS.features, DAY.isoformat(), build_features)
    io_manager = PartitionedParquetIOManager(store=store)
    loaded = io_manager.load_input(build_input_context(asset_key=KEYS.features, partition_key=DAY.isoformat()))
    pd.testing.assert_frame_equal(loaded, store.read_frame(KEYS.features, DAY.isoformat()))

    frames = {"2026-03-01": loaded}
    with pytest.raises(ValueError, match=r"expected frames for partitions \['2026-03-02'\], found \['2026-03-01'\]"):
        io_manager.handle_output(build_output_context(asset_key=KEYS.features, partition_key=DAY.isoformat()), frames)


def test_written_metadata_totals_a_range_run(store: PartitionStore, tmp_path: Path) -> None:
    days = ["2026-03-02", "2026-03-03"]
    for key, rows in zip(days, (30, 0), strict=True):
        trips = generate_demo_trips(dt.date.fromisoformat(key), 30).iloc[:rows]
        write_parquet_atomic(trips, store.path(KEYS.raw_data, key))
    written = {
        key: store.transform_partition(
            KEYS.raw_data, KEYS.features, key, build_features, summary=SummaryColumns(ranges=(PICKUP,))
        )
        for key in days
    }
    metadata = written_metadata(written, time_column=PICKUP, time_label="event_time")
    assert metadata["dagster/row_count"].value == 30
    assert metadata["rows_per_partition"].value == {"2026-03-02": 30, "2026-03-03": 0}
    columns = {c.name: c.type for c in metadata["dagster/column_schema"].value.columns}
    assert columns[PICKUP] == "datetime64[us]" and columns["pickup_zip"] == "int64"
    earliest = dt.datetime.fromtimestamp(metadata["earliest_event_time"].value, dt.UTC)
    assert earliest.date() == dt.date(2026, 3, 2)


def test_background_writes_store_the_same_partitions_and_raise_a_failed_write(tmp_path: Path) -> None:
    frame = pd.DataFrame({"value": [1.0, 2.0, float("nan")], "day": pd.to_datetime(["2026-03-01"] * 3)})
    schema = schema_of_frame(frame)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    inline, background = PartitionStore(root=str(tmp_path / "inline")), PartitionStore(root=str(tmp_path / "background"))
    with BackgroundWrites() as writes:
        staged = [background.stage("things", key, schema, writes=writes) for key in ("a", "b")]
        for _ in range(3):
            for partition in staged:  # interleaved, as a run's days arrive
                partition.write(table)
        written = [partition.commit({"n": 1}) for partition in staged]
    expected = inline.stage("things", "a", schema)
    for _ in range(3):
        expected.write(table)
    expected.commit({"n": 1})
    for key, result in zip(("a", "b"), written, strict=True):
        assert result.rows == 9 and result.non_finite_counts == {"value": 3}
        assert pq.read_table(background.path("things", key)).equals(pq.read_table(inline.path("things", "a")))
        stored, reference = background.read_summary("things", key), inline.read_summary("things", "a")
        assert stored is not None and reference is not None
        assert stored.model_dump(exclude={"file_mtime_ns"}) == reference.model_dump(exclude={"file_mtime_ns"})

    # A batch the file cannot take fails in the background thread: the error reaches the
    # caller, and the discarded partition leaves nothing behind.
    other = pa.table({"other": [1]})
    with pytest.raises(ValueError, match="schema"), BackgroundWrites() as writes:
        failing = background.stage("things", "c", schema, writes=writes)
        failing.write(other)
        try:
            failing.close()
        finally:
            failing.discard()
    assert not background.exists("things", "c")
    assert sorted(p.name for p in (tmp_path / "background" / "things").iterdir()) == [
        "a.parquet", "a.summary.json", "b.parquet", "b.summary.json",
    ]


def test_batches_made_ahead_arrive_in_order_one_ahead_and_raise_where_they_fail() -> None:
    made: list[int] = []

    def batches(fail_at: int | None = None) -> Iterator[pa.Table]:
        for number in range(5):
            if number == fail_at:
                raise ValueError(f"batch {number} does not fit")
            made.append(number)
            yield pa.table({"n": [number]})

    taken = []
    for table in made_ahead(batches()):
        taken.append(table["n"][0].as_py())
        # While the caller holds a batch, at most the next one has been made.
        assert len(made) <= len(taken) + 1
    assert taken == [0, 1, 2, 3, 4] == made

    made.clear()
    received = []
    with pytest.raises(ValueError, match="batch 2 does not fit"):
        for table in made_ahead(batches(fail_at=2)):
            received.append(table["n"][0].as_py())
    # Every batch made before the failure reached the caller first.
    assert received == [0, 1] == made


def test_a_transform_that_fails_in_a_later_batch_leaves_the_stored_partition(tmp_path: Path) -> None:
    source, target = tmp_path / "in.parquet", tmp_path / "out.parquet"
    write_parquet_atomic(pd.DataFrame({"value": range(10)}), source)
    write_parquet_atomic(pd.DataFrame({"value": [-1]}), target)

    def fails_late(frame: pd.DataFrame) -> pd.DataFrame:
        if frame["value"].iloc[0] >= 6:
            raise RuntimeError("the third batch is bad")
        return frame

    with pytest.raises(RuntimeError, match="third batch"):
        stream_transform_parquet(source, target, fails_late, batch_rows=3)
    # Made ahead in another thread, the failure still stops the write: the old file stays.
    assert pd.read_parquet(target)["value"].tolist() == [-1]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
