"""The typed records between the training assets: their verdicts, and the IO manager storing
them as JSON and reading them back as the class the consuming asset annotates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import AssetKey, PythonObjectDagsterType, build_input_context, build_output_context

from tabml_assets.ml.evaluation import GateResult
from tabml_assets.ml.records import (
    BaselineScore,
    ChampionRecord,
    EvaluationRecord,
    ModelVersionRef,
    ScoredModel,
    TrainedModel,
    TrainingRows,
)
from tabml_assets.resources.storage import PartitionedParquetIOManager, PartitionStore

DAY = "2026-03-08"
REPORT = AssetKey(["nyc_taxi", "evaluation_report"])


def gate_result(check: str, passed: bool) -> GateResult:
    return GateResult(check, "rmse", 4.0, 5.0, "<=", passed, f"{'passed' if passed else 'FAILED'}: {check}")


def evaluation(run_mode: str = "enabled", *gate: GateResult) -> EvaluationRecord:
    return EvaluationRecord(
        challenger=ScoredModel.of(ModelVersionRef("tabml_nyc_taxi", "3", "run-3"), {"rmse": 4.0, "r2": float("nan")}),
        champion=ScoredModel.of(ModelVersionRef("tabml_nyc_taxi", "2", "run-2"), {"rmse": 4.5, "r2": 0.5}),
        baseline=BaselineScore(kind="mean of the training target", metrics={"rmse": 9.0, "r2": 0.0}),
        test_rows=120,
        run_mode=run_mode,
        gate=gate,
        training_window=("2026-03-01", DAY),
    )


def test_the_verdict_names_the_failed_criteria_and_the_run_mode() -> None:
    passed, failed = gate_result("rmse_max", True), gate_result("no_worse_than_champion", False)
    assert evaluation("enabled", passed).verdict() == "passed rmse_max"
    assert evaluation("enabled", passed, failed).verdict() == "failed no_worse_than_champion"
    assert evaluation("dry_run", failed).verdict() == "failed no_worse_than_champion (dry_run: promoted anyway)"
    assert evaluation("disabled").verdict() == "not gated (validation.run_mode: disabled)"
    assert evaluation("enabled").verdict() == "passed (no criteria)"
    assert evaluation("enabled", passed, failed).gate_passed is False
    assert [r.check_name for r in evaluation("enabled", passed, failed).failed] == ["no_worse_than_champion"]


def test_records_are_frozen() -> None:
    record = evaluation("enabled", gate_result("rmse_max", True))
    with pytest.raises(Exception, match="frozen"):
        record.run_mode = "disabled"  # type: ignore[misc]


@pytest.mark.parametrize(
    "record",
    [
        evaluation("enabled", gate_result("rmse_max", True), gate_result("no_worse_than_champion", False)),
        TrainedModel(
            model=ModelVersionRef("tabml_nyc_taxi", "3", "run-3"), window_start="2026-03-01", window_end=DAY,
            rows=TrainingRows(window=900, labelled=880, train=600, validation=140, test=140, fitted=740),
            train_metrics={"rmse": 3.0}, validation_metrics={"rmse": 3.5},
        ),
        ChampionRecord(
            name="tabml_nyc_taxi", version="3", run_id="run-3", challenger_version="3", previous_version=None,
            promoted=True, run_mode="enabled", gate="passed rmse_max", gate_warnings=(), shadow_rule=None,
        ),
    ],
    ids=["evaluation", "trained_model", "champion"],
)
def test_the_io_manager_stores_a_record_as_json_and_loads_the_annotated_class(
    tmp_path: Path, record: EvaluationRecord | TrainedModel | ChampionRecord
) -> None:
    partitions = PartitionStore(root=str(tmp_path))
    store = PartitionedParquetIOManager(store=partitions)
    store.handle_output(build_output_context(asset_key=REPORT, partition_key=DAY), record)

    stored = partitions.read_record(REPORT, DAY)
    loaded = store.load_input(
        build_input_context(asset_key=REPORT, partition_key=DAY, dagster_type=PythonObjectDagsterType(type(record)))
    )

    assert type(loaded) is type(record)
    # NaN metrics (ROC AUC of a one-class split) survive the trip; NaN != NaN, so compare the JSON.
    assert json.dumps(loaded.model_dump()) == json.dumps(record.model_dump())
    if isinstance(record, EvaluationRecord):
        # The JSON keeps the shape readers of the files rely on.
        assert stored["challenger"]["version"] == "3" and stored["challenger"]["uri"] == "models:/tabml_nyc_taxi/3"
        assert stored["gate_passed"] is False and stored["gate"][1]["check_name"] == "no_worse_than_champion"
        assert stored["baseline"]["metrics"]["rmse"] == 9.0


def test_a_record_that_does_not_fit_names_the_file_the_class_and_the_field(tmp_path: Path) -> None:
    partitions = PartitionStore(root=str(tmp_path))
    store = PartitionedParquetIOManager(store=partitions)
    path = partitions.path(REPORT, DAY, ".json")
    path.parent.mkdir(parents=True)
    stored = evaluation("enabled", gate_result("rmse_max", True)).model_dump()
    del stored["baseline"]
    path.write_text(json.dumps(stored))

    with pytest.raises(ValueError) as failure:
        store.load_input(
            build_input_context(asset_key=REPORT, partition_key=DAY, dagster_type=PythonObjectDagsterType(EvaluationRecord))
        )
    message = str(failure.value)
    assert str(path) in message and "is not a valid EvaluationRecord" in message and "baseline" in message
    assert "materialize that partition again" in message


def test_records_stored_before_the_classes_existed_load_unchanged() -> None:
    # What trained_model and evaluation_report wrote as plain dicts (uri included).
    trained = {
        "model": {"name": "tabml_nyc_taxi", "version": "3", "run_id": "run-3", "uri": "models:/tabml_nyc_taxi/3"},
        "window_start": "2026-03-01", "window_end": DAY,
        "rows": {"window": 900, "labelled": 880, "train": 600, "validation": 140, "test": 140, "fitted": 740},
        "train_metrics": {"rmse": 3.0}, "validation_metrics": {"rmse": 3.5},
    }
    assert TrainedModel.model_validate(trained).model == ModelVersionRef("tabml_nyc_taxi", "3", "run-3")
    report = {
        "challenger": {"name": "tabml_nyc_taxi", "version": "3", "run_id": "run-3", "uri": "models:/tabml_nyc_taxi/3", "metrics": {"rmse": 4.0}},
        "champion": None,
        "baseline": {"kind": "mean", "metrics": {"rmse": 9.0}},
        "test_rows": 120, "run_mode": "enabled",
        "gate": [gate_result("rmse_max", False).as_dict()],
        "gate_passed": False, "training_window": ["2026-03-01", DAY],
    }
    loaded = EvaluationRecord.model_validate(report)
    assert loaded.verdict() == "failed rmse_max" and loaded.challenger.ref.run_id == "run-3"
