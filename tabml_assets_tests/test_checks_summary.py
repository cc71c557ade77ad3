"""Partition summaries and what the checks build on them: each streamed partition write keeps a
summary beside its file, the asset checks read it (and read the file when it is missing or
stale), drift references are made once per model version, and a version's downloaded model is
kept on local disk.

Everything runs for real: a Dagster instance, MLflow on sqlite, the test deployment's demo days.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, Definitions, ExecuteInProcessResult

from tabml_assets.assets.checks import DRIFT_REFERENCE
from tabml_assets.ml.realized import identity_columns
from tabml_assets.resources import build_model_registry, build_partition_store
from tabml_assets.resources.model_cache import MANIFEST, ModelCache
from tabml_assets.resources.storage import (
    LISTED_REPEATED_KEYS,
    KeyRepeats,
    PartitionStore,
    SummaryColumns,
    schema_of_frame,
    summary_path,
    write_parquet_atomic,
)
from tabml_assets.seed import run_selection
from tabml_assets.spec import LoadedSpec
from tabml_assets_tests.test_scoring import register_champion

DAYS = ("2026-03-08", "2026-03-09")


def check_evaluations(result: ExecuteInProcessResult) -> dict[str, Any]:
    """Check name -> (passed, description, metadata values), without how the check read it."""
    return {
        e.check_name: (
            e.passed, e.description,
            {k: v.value for k, v in e.metadata.items() if k not in ("read_from", "rules_evaluated_at")},
        )
        for e in result.get_asset_check_evaluations()
        # Freshness depends on the clock, not on the partition's rows.
        if e.check_name != "freshness_check"
    }


def read_from(result: ExecuteInProcessResult) -> dict[str, str]:
    return {
        e.check_name: str(e.metadata["read_from"].value)
        for e in result.get_asset_check_evaluations()
        if "read_from" in e.metadata
    }


def run_checks(defs: Definitions, instance: DagsterInstance, checks: set[AssetCheckKey], day: str) -> ExecuteInProcessResult:
    """Only the given checks, as a user re-running them from the UI does."""
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(), asset_check_selection=checks)
    return job.execute_in_process(instance=instance, partition_key=day, raise_on_error=False)


def partition_checks(defs: Definitions, spec: LoadedSpec, *assets: AssetKey) -> set[AssetCheckKey]:
    """The checks on `assets` (default raw_data, features, batch_predictions) but the clock's."""
    keys = spec.keys
    assets = assets or (keys.raw_data, keys.features, keys.batch_predictions)
    return {
        k for k in defs.resolve_asset_graph().asset_check_keys if k.asset_key in assets and k.name != "freshness_check"
    }


@pytest.fixture
def scored(test_spec: LoadedSpec, test_defs: Definitions, instance: DagsterInstance) -> ExecuteInProcessResult:
    """A champion, and one day ingested, engineered and scored (checks included)."""
    register_champion(test_spec)
    result = run_selection(
        test_defs, instance, test_spec.keys.assets("raw_data", "features", "batch_predictions"), partition_key=DAYS[0]
    )
    assert result.success
    return result


# The summary itself ------------------------------------------------------------------------


def test_a_streamed_write_stores_a_summary_of_what_it_wrote(tmp_path: Path) -> None:
    store = PartitionStore(root=str(tmp_path))
    frame = pd.DataFrame(
        {
            "when": pd.to_datetime(["2026-03-01 01:00", "2026-03-01 05:00", "2026-03-01 03:00"]),
            "value": [1.5, np.nan, np.inf],
            "count": [3, 1, 2],
            "name": ["a", None, "c"],
        }
    )
    schema = schema_of_frame(frame)
    tables = [pa.Table.from_pandas(frame.iloc[:2], schema=schema, preserve_index=False),
              pa.Table.from_pandas(frame.iloc[2:], schema=schema, preserve_index=False)]

    written = store.write_tables("things", "2026-03-01", tables, schema, SummaryColumns(sums=("count",)), {"source": "test"})

    summary = store.read_summary("things", "2026-03-01")
    assert summary is not None
    assert summary.rows == 3 == written.rows
    assert summary.columns == {"when": "datetime64[ns]", "value": "float64", "count": "int64", "name": "object"}
    assert summary.null_counts == {"when": 0, "value": 1, "count": 0, "name": 1}
    # NaN and +inf: two values a model input must not hold. Integers are finite by type.
    assert summary.non_finite_counts == {"value": 2}
    assert summary.minimum["count"] == 1 and summary.maximum["count"] == 3
    assert summary.minimum["when"] == "2026-03-01T01:00:00" and summary.maximum["when"] == "2026-03-01T05:00:00"
    assert summary.maximum["value"] == float("inf")
    assert summary.facts == {"source": "test"}
    assert summary_path(written.path) == tmp_path / "things" / "2026-03-01.summary.json"


def test_a_streamed_write_counts_the_rows_that_repeat_a_key_across_its_batches(tmp_path: Path) -> None:
    store = PartitionStore(root=str(tmp_path))
    frame = pd.DataFrame({"when": pd.to_datetime(["2026-03-01 01:00"] * 3 + ["2026-03-01 02:00"] * 2),
                          "key": [1, 2, 1, 1, 1], "value": [0.5, 1.5, 2.5, 3.5, 4.5]})
    schema = schema_of_frame(frame)
    tables = [pa.Table.from_pandas(frame.iloc[:2], schema=schema, preserve_index=False),
              pa.Table.from_pandas(frame.iloc[2:], schema=schema, preserve_index=False)]

    store.write_tables("things", "d", tables, schema, SummaryColumns(repeats_on=("when", "key")))
    summary = store.read_summary("things", "d")
    # (01:00, 1) in the first batch and again in the second, (02:00, 1) twice in the second.
    assert summary is not None and summary.key_repeats is not None
    assert (summary.key_repeats.columns, summary.key_repeats.repeated_rows) == (["when", "key"], 2)
    assert sorted(summary.key_repeats.groups or []) == [[0, 2], [3, 4]]

    store.write_tables("things", "e", tables, schema, SummaryColumns(repeats_on=("value",)))
    assert store.read_summary("things", "e").key_repeats == KeyRepeats(columns=["value"], repeated_rows=0, groups=[])  # type: ignore[union-attr]
    # More repeated keys than are listed: counted, their rows left for the reader to find.
    many = pd.DataFrame({"key": np.repeat(np.arange(LISTED_REPEATED_KEYS + 1), 2)})
    many_schema = schema_of_frame(many)
    store.write_tables("things", "h", [pa.Table.from_pandas(many, schema=many_schema, preserve_index=False)], many_schema,
                       SummaryColumns(repeats_on=("key",)))
    assert store.read_summary("things", "h").key_repeats == KeyRepeats(  # type: ignore[union-attr]
        columns=["key"], repeated_rows=LISTED_REPEATED_KEYS + 1, groups=None
    )
    # Not asked, or a key column the rows lack: not counted (unknown), never guessed.
    store.write_tables("things", "f", tables, schema)
    store.write_tables("things", "g", tables, schema, SummaryColumns(repeats_on=("when", "absent")))
    assert store.read_summary("things", "f").key_repeats is None  # type: ignore[union-attr]
    assert store.read_summary("things", "g").key_repeats is None  # type: ignore[union-attr]


def test_a_discarded_staged_write_leaves_the_summary_of_the_stored_file(tmp_path: Path) -> None:
    store = PartitionStore(root=str(tmp_path))
    frame = pd.DataFrame({"value": [1.0, 2.0]})
    schema = schema_of_frame(frame)
    first = store.stage("things", "d", schema)
    first.write(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
    first.commit({"version": 1})

    second = store.stage("things", "d", schema)
    second.write(pa.Table.from_pandas(pd.DataFrame({"value": [np.nan] * 5}), schema=schema, preserve_index=False))
    second.close()
    second.discard()

    summary = store.read_summary("things", "d")
    assert summary is not None and summary.rows == 2 == store.row_count("things", "d")
    assert summary.facts == {"version": 1} and summary.non_finite_counts == {"value": 0}
    assert sorted(p.name for p in (tmp_path / "things").iterdir()) == ["d.parquet", "d.summary.json"]


def test_a_summary_of_a_file_replaced_since_is_not_used(tmp_path: Path) -> None:
    store = PartitionStore(root=str(tmp_path))
    frame = pd.DataFrame({"value": [1.0, 2.0]})
    schema = schema_of_frame(frame)
    store.write_tables("things", "d", [pa.Table.from_pandas(frame, schema=schema, preserve_index=False)], schema)
    assert store.read_summary("things", "d") is not None

    # Another writer (an older tabml, the IO manager, a crash between the two renames) replaced
    # the file but not its summary.
    write_parquet_atomic(pd.DataFrame({"value": [np.nan] * 7}), store.path("things", "d"))

    assert store.read_summary("things", "d") is None
    summary_path(store.path("things", "d")).write_text("{not json")
    assert store.read_summary("things", "d") is None


def test_a_transformed_partition_knows_whether_its_source_changed_since(tmp_path: Path) -> None:
    store = PartitionStore(root=str(tmp_path))
    store.write_frame("inputs", "d", pd.DataFrame({"value": [1.0, 2.0]}))
    store.transform_partition("inputs", "outputs", "d", lambda frame: frame.assign(doubled=frame["value"] * 2))
    assert store.derived_from_current("outputs", "inputs", "d")

    # The input day is re-ingested: the outputs describe the file that was there before.
    store.write_frame("inputs", "d", pd.DataFrame({"value": [1.0, 2.0]}))
    assert not store.derived_from_current("outputs", "inputs", "d")
    assert not store.derived_from_current("outputs", "inputs", "e")


# The checks on summaries, and without them ---------------------------------------------------


def test_checks_read_the_summaries_and_find_what_a_full_read_finds(
    test_spec: LoadedSpec, test_defs: Definitions, instance: DagsterInstance, scored: ExecuteInProcessResult
) -> None:
    on_summaries = check_evaluations(scored)
    sources = read_from(scored)
    assert {"raw_schema", "raw_no_nulls", "raw_value_ranges", "features_columns", "features_finite",
            "predictions_one_per_row", "predictions_plausible_range"} <= set(sources)
    # The day's labels came with it: realized accuracy reads them from the predictions, which
    # were scored from the features as they still are.
    # The features' summary counted no repeated identity, so each row's own label is its answer.
    assert sources.pop("predictions_realized_accuracy") == (
        "batch_predictions (features unchanged since scoring, identities from the features summary)"
    )
    features_summary = build_partition_store(test_spec).read_summary(test_spec.keys.features, DAYS[0])
    assert features_summary is not None and features_summary.key_repeats is not None
    assert features_summary.key_repeats.columns == identity_columns(test_spec.pipeline)
    assert (features_summary.key_repeats.repeated_rows, features_summary.key_repeats.groups) == (0, [])
    assert set(sources.values()) == {"partition summary"}
    assert [name for name, (passed, _, _) in on_summaries.items() if not passed] == []
    quarantine = on_summaries["raw_quarantine"][2]
    assert quarantine["quarantined_rows"] == 0 and quarantine["quarantine_reasons"] == {}

    # Partitions written by an older tabml have no summary: the same checks read the files.
    store = build_partition_store(test_spec)
    for removed in Path(store.root).rglob("*.summary.json"):
        removed.unlink()
    rerun = run_checks(test_defs, instance, partition_checks(test_defs, test_spec), DAYS[0])

    assert set(read_from(rerun).values()) <= {
        "partition file (no current summary)", "prediction column of the partition file",
        "batch_predictions matched to features",
    }
    assert check_evaluations(rerun) == on_summaries


def test_a_summary_that_shows_a_problem_fails_its_check(
    test_spec: LoadedSpec, test_defs: Definitions, instance: DagsterInstance, scored: ExecuteInProcessResult
) -> None:
    keys = test_spec.keys
    store = build_partition_store(test_spec)
    features = store.read_frame(keys.features, DAYS[0])
    features.loc[:2, "trip_distance"] = [np.nan, np.inf, -np.inf]
    schema = schema_of_frame(features)
    store.write_tables(keys.features, DAYS[0], [pa.Table.from_pandas(features, schema=schema, preserve_index=False)], schema)

    checks = {k for k in partition_checks(test_defs, test_spec, keys.features) if not k.name.endswith("_drift")}
    result = run_checks(test_defs, instance, checks, DAYS[0])

    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "features_finite")
    assert not evaluation.passed
    assert evaluation.metadata["non_finite_per_column"].value["trip_distance"] == 3
    assert evaluation.metadata["read_from"].value == "partition summary"


def test_value_rules_changed_since_ingestion_are_evaluated_on_the_stored_rows(
    test_spec: LoadedSpec, test_defs: Definitions, instance: DagsterInstance, scored: ExecuteInProcessResult,
) -> None:
    keys = test_spec.keys
    store = build_partition_store(test_spec)
    distances = store.read_frame(keys.raw_data, DAYS[0])["trip_distance"]
    # The spec now refuses the longer half of the stored trips.
    median = float(distances.median())
    tightened = test_spec.pipeline.dataset.model_copy(deep=True)
    tightened.columns["trip_distance"] = tightened.columns["trip_distance"].model_copy(
        update={"less_than": median, "max": None}
    )
    spec = test_spec.model_copy(update={"pipeline": test_spec.pipeline.model_copy(update={"dataset": tightened})})
    from tabml_assets.definitions import build_definitions

    defs = build_definitions(spec)
    result = run_checks(defs, instance, partition_checks(defs, spec, keys.raw_data), DAYS[0])

    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "raw_value_ranges")
    assert not evaluation.passed
    assert evaluation.metadata["read_from"].value == "partition file (no current summary)"
    broken = {rule: n for rule, n in evaluation.metadata["violations_per_rule"].value.items() if n}
    assert broken == {f"trip_distance outside (0, {median:g})": int((distances >= median).sum())}


# Drift references ---------------------------------------------------------------------------


@pytest.fixture
def trained_and_scored(test_spec: LoadedSpec, test_defs: Definitions, instance: DagsterInstance) -> tuple[str, ExecuteInProcessResult]:
    """A champion trained by the graph on the window ending 2026-03-08, then 2026-03-09 scored."""
    keys = test_spec.keys
    assert run_selection(test_defs, instance, keys.assets("raw_data", "features"), partition_range=("2026-03-05", "2026-03-09")).success
    training = keys.assets("trained_model", "evaluation_report", "champion_model")
    assert run_selection(test_defs, instance, training, partition_key="2026-03-08").success
    scoring = run_selection(test_defs, instance, [keys.batch_predictions], partition_key="2026-03-09")
    assert scoring.success
    return "2026-03-09", scoring


def test_drift_references_are_made_once_per_version_and_reused(
    test_spec: LoadedSpec, test_defs: Definitions, instance: DagsterInstance,
    trained_and_scored: tuple[str, ExecuteInProcessResult], tabml_home: Path,
) -> None:
    day, scoring = trained_and_scored
    keys = test_spec.keys
    store = build_partition_store(test_spec)
    champion = build_model_registry(test_spec).version_for_alias("champion")
    assert champion is not None
    folder = store.asset_folder(keys.asset(DRIFT_REFERENCE))
    predictions_reference = folder / f"{champion.version}.predictions.parquet"
    features_reference = folder / f"{champion.version}.parquet"
    # The scoring run made the predictions reference, on the training window sample.
    assert predictions_reference.exists() and features_reference.exists()
    made = predictions_reference.stat().st_mtime_ns, features_reference.stat().st_mtime_ns
    first = check_evaluations(scoring)["predictions_drift"]
    assert "2026-03-06..2026-03-08" in first[1]
    sample_rows = len(store.read_frame(keys.asset(DRIFT_REFERENCE), champion.version))
    assert first[2]["reference_rows"] == sample_rows == 3 * test_spec.profile.data_source.demo_rows_per_day

    # Without the model cache, a check that loaded the model would download it again.
    shutil.rmtree(tabml_home / "model_cache")
    drift = {k for k in test_defs.resolve_asset_graph().asset_check_keys if k.name.endswith("_drift")}
    rerun = run_checks(test_defs, instance, drift, day)

    assert (predictions_reference.stat().st_mtime_ns, features_reference.stat().st_mtime_ns) == made
    assert not (tabml_home / "model_cache").exists(), "predictions_drift loaded the model again"
    again = check_evaluations(rerun)
    assert again["predictions_drift"] == first
    assert again["features_drift"][2]["reference_rows"] == sample_rows
    assert "champion v1's training window 2026-03-06..2026-03-08" in again["features_drift"][1]


# The local model cache ------------------------------------------------------------------------


def test_a_downloaded_version_is_loaded_from_the_cache_without_the_registry_artifacts(
    test_spec: LoadedSpec, tabml_home: Path
) -> None:
    champion = register_champion(test_spec)
    first = build_model_registry(test_spec).load_model(champion)
    entry = ModelCache(tabml_home / "model_cache").entry(champion.name, champion.version, str(champion.run_id))
    assert (entry / MANIFEST).exists()
    inputs = pd.DataFrame(json.loads((entry / "input_example.json").read_text())["data"],
                          columns=json.loads((entry / "input_example.json").read_text())["columns"])

    # A new process (a new resource) finds the version on disk: the registry's artifacts are not read.
    shutil.rmtree(tabml_home / "mlartifacts")
    again = build_model_registry(test_spec).load_model(champion)

    assert again.predict(inputs).tolist() == first.predict(inputs).tolist()


@pytest.mark.parametrize("damage", ["truncated", "no_manifest"])
def test_a_damaged_cache_entry_is_downloaded_again(test_spec: LoadedSpec, tabml_home: Path, damage: str) -> None:
    champion = register_champion(test_spec)
    build_model_registry(test_spec).load_model(champion)
    entry = ModelCache(tabml_home / "model_cache").entry(champion.name, champion.version, str(champion.run_id))
    model_file = next(p for p in entry.iterdir() if p.name.startswith("model."))
    intact = model_file.read_bytes()
    if damage == "truncated":
        model_file.write_bytes(intact[: len(intact) // 2])
    else:
        (entry / MANIFEST).unlink()  # a copy that stopped before it was complete

    model = build_model_registry(test_spec).load_model(champion)

    assert model_file.read_bytes() == intact
    assert ModelCache(tabml_home / "model_cache").get(entry) == entry
    assert hasattr(model, "predict")


def test_the_evaluation_card_states_the_importance_sample() -> None:
    from sklearn.linear_model import LinearRegression

    from tabml_assets.ml import report

    rng = np.random.default_rng(0)
    inputs = pd.DataFrame({"signal": rng.normal(size=2_000), "noise": rng.normal(size=2_000)})
    target = 3 * inputs["signal"].to_numpy()
    importance = report.feature_importance(LinearRegression().fit(inputs, target), inputs, target, sample_rows=300, repeats=2)
    assert set(importance["sample_rows"]) == {300}
    plot = report.plot_feature_importance(importance)
    assert "random sample of 300 test rows" in plot.caption and "shuffled 2 times" in plot.caption
