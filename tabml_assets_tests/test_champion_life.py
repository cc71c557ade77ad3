"""The champion's life with real MLflow and a real Dagster instance: the never-worse gate,
shadow scoring of the challenger and the N-day promotion rule, and rollback as one audited
action (refused for a never-gated version, and read back as the champion history and as the
lineage of each scored day). The rollback launched through the webserver is in
test_champion_life_e2e.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from dagster import (
    AssetCheckKey,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

from tabml_assets.assets.shadow import choose_shadow_model
from tabml_assets.definitions import build_definitions
from tabml_assets.keys import PipelineKeys
from tabml_assets.ml.evaluation import evaluate_gate, gate_check_names
from tabml_assets.ml.lifecycle import (
    ChampionChange,
    RollbackTarget,
    champion_tenures,
    history_markdown,
    rollback_refusal,
)
from tabml_assets.ml.shadow import (
    ShadowEvidence,
    compare_day,
    shadow_frame,
    shadow_promotion_verdict,
)
from tabml_assets.resources import build_partition_store, build_resources
from tabml_assets.seed import SeedPlan, run_selection, seed_demo
from tabml_assets.spec import LoadedSpec, ShadowSpec, ValidationSpec, load_deployment, load_spec
from tabml_assets_tests.conftest import TODAY
from tabml_assets_tests.test_automation import tick

KEYS = PipelineKeys("nyc_taxi")
TRAINING = KEYS.assets("trained_model", "evaluation_report", "champion_model")
SCORING = [KEYS.batch_predictions, KEYS.challenger_predictions]
MODEL_NAME = "tabml_nyc_taxi"
# A learning rate this small leaves the 60-iteration test model far from converged: a model
# clearly worse than the default one, but inside the (loosened) absolute criteria.
WEAK_LEARNING_RATE = 0.02
LOOSE_CRITERIA = {"rmse": {"max": 100.0}}


def edit_pipeline(project_dir: Path, edit: Any) -> None:
    path = project_dir / "pipeline.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))


def set_learning_rate(project_dir: Path, rate: float) -> None:
    edit_pipeline(project_dir, lambda d: d["estimator"]["params"].update({"learning_rate": rate}))


def client_of(tabml_home: Path) -> MlflowClient:
    uri = f"sqlite:///{tabml_home}/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def champion_of(tabml_home: Path) -> str:
    return str(client_of(tabml_home).get_model_version_by_alias(MODEL_NAME, "champion").version)


def audit_runs(tabml_home: Path) -> list:
    client = client_of(tabml_home)
    experiment = client.get_experiment_by_name("tabml-test-nyc_taxi")
    return client.search_runs(
        [experiment.experiment_id], filter_string="tags.`tabml.audit` = 'champion_change'",
        order_by=["attributes.start_time ASC"],
    )


def reload(conf_dir: Path, tabml_home: Path) -> tuple[LoadedSpec, Definitions]:
    spec = load_spec("test", conf_dir=conf_dir, tabml_home=tabml_home)
    return spec, build_definitions(spec)


def check_record(instance: DagsterInstance, name: str) -> Any:
    key = AssetCheckKey(KEYS.evaluation_report, name)
    return instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]


def latest_metadata(instance: DagsterInstance, key: Any) -> dict[str, Any]:
    event = instance.get_latest_materialization_event(key)
    assert event is not None and event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def seed_with(conf_dir: Path, project_dir: Path, tabml_home: Path, instance: DagsterInstance,
              learning_rate: float | None = None) -> SeedPlan:
    """The demo seeded with champion v1 (a weak one when `learning_rate` is given)."""
    edit_pipeline(project_dir, lambda d: d["validation"].update({"criteria": LOOSE_CRITERIA}))
    if learning_rate is not None:
        set_learning_rate(project_dir, learning_rate)
    spec, defs = reload(conf_dir, tabml_home)
    plan = seed_demo(defs, spec, instance, TODAY)
    assert champion_of(tabml_home) == "1"
    return plan


# --- the gate: never worse by default -----------------------------------------------------------


def test_gate_compares_with_the_champion_by_default() -> None:
    default = ValidationSpec()
    assert default.max_worse_than_champion_pct == 0.0
    assert gate_check_names(default) == ["no_worse_than_champion"]
    assert gate_check_names(ValidationSpec(max_worse_than_champion_pct=None)) == []
    worse, better = {"rmse": 19.8}, {"rmse": 14.0}
    champion = {"rmse": 14.7}
    [refused] = evaluate_gate(default, "rmse", worse, champion)
    assert not refused.passed and refused.threshold == pytest.approx(14.7)
    assert refused.description == "FAILED: challenger rmse = 19.8, required <= 14.7 (champion 14.7, no worse)"
    assert evaluate_gate(default, "rmse", better, champion)[0].passed
    # A tolerance: up to 5 % worse passes; for a higher-is-better metric the bound is below.
    tolerant = ValidationSpec(max_worse_than_champion_pct=5)
    assert evaluate_gate(tolerant, "rmse", {"rmse": 15.4}, champion)[0].passed
    assert not evaluate_gate(tolerant, "rmse", {"rmse": 15.5}, champion)[0].passed
    [auc] = evaluate_gate(tolerant, "roc_auc", {"roc_auc": 0.62}, {"roc_auc": 0.66})
    assert not auc.passed and auc.comparison == ">=" and auc.threshold == pytest.approx(0.627)
    # A first model: no champion, so only the absolute criteria apply.
    [first] = evaluate_gate(default, "rmse", worse, None)
    assert first.passed and "no champion yet, only the absolute criteria apply" in first.description


def test_worse_challenger_is_refused_by_default_and_promoted_with_the_comparison_off(
    conf_dir: Path, project_dir: Path, tabml_home: Path, instance: DagsterInstance
) -> None:
    plan = seed_with(conf_dir, project_dir, tabml_home, instance)
    day = plan.training_day.isoformat()
    # The same window, a weaker estimator: worse on the same test split, inside the criteria.
    set_learning_rate(project_dir, WEAK_LEARNING_RATE)
    _, defs = reload(conf_dir, tabml_home)
    result = run_selection(defs, instance, TRAINING, partition_key=day, raise_on_error=False)

    assert not result.success
    assert champion_of(tabml_home) == "1"
    refused = check_record(instance, "gate_no_worse_than_champion")
    assert refused.status == AssetCheckExecutionRecordStatus.FAILED
    evaluation = refused.event.dagster_event.event_specific_data
    assert evaluation.metadata["value"].value > evaluation.metadata["threshold"].value
    assert "(champion " in evaluation.description and "no worse)" in evaluation.description
    # The absolute criterion passed: the comparison with the champion alone refused it.
    assert check_record(instance, "gate_rmse_max").status == AssetCheckExecutionRecordStatus.SUCCEEDED
    report = latest_metadata(instance, KEYS.evaluation_report)
    assert report["challenger_rmse"] > report["champion_rmse"]
    assert "Decided by: failed no_worse_than_champion." in report["step_card"]
    assert client_of(tabml_home).get_model_version(MODEL_NAME, "2").tags["validation_status"] == "failed"
    assert [r.data.tags["tabml.change.version"] for r in audit_runs(tabml_home)] == ["1"]

    # Turned off explicitly (null), the same worse model is promoted.
    edit_pipeline(project_dir, lambda d: d["validation"].update({"max_worse_than_champion_pct": None}))
    spec, defs = reload(conf_dir, tabml_home)
    assert "no_worse_than_champion" not in gate_check_names(spec.pipeline.validation)
    run_selection(defs, instance, TRAINING, partition_key=day)
    assert champion_of(tabml_home) == "3"
    promoted = latest_metadata(instance, KEYS.champion_model)
    assert promoted["promoted"] is True and promoted["previous_champion_version"] == "1"
    assert "| v3 |" in promoted["champion_history"] and "| v1 |" in promoted["champion_history"]


def test_better_challenger_is_promoted_and_audited(
    conf_dir: Path, project_dir: Path, tabml_home: Path, instance: DagsterInstance
) -> None:
    plan = seed_with(conf_dir, project_dir, tabml_home, instance, learning_rate=WEAK_LEARNING_RATE)
    set_learning_rate(project_dir, 0.1)
    _, defs = reload(conf_dir, tabml_home)
    run_selection(defs, instance, TRAINING, partition_key=plan.training_day.isoformat())

    assert champion_of(tabml_home) == "2"
    assert check_record(instance, "gate_no_worse_than_champion").status == AssetCheckExecutionRecordStatus.SUCCEEDED
    report = latest_metadata(instance, KEYS.evaluation_report)
    assert report["challenger_rmse"] < report["champion_rmse"]
    assert "Decided by: passed the absolute criteria and no_worse_than_champion." in report["step_card"]
    version = client_of(tabml_home).get_model_version(MODEL_NAME, "2")
    assert version.tags["tabml.previous_champion"] == "1"
    assert version.tags["tabml.promotion_gate"] == "passed rmse_max, no_worse_than_champion"
    audits = audit_runs(tabml_home)
    assert [r.data.tags["tabml.change.action"] for r in audits] == ["promotion", "promotion"]
    assert [r.info.status for r in audits] == ["FINISHED", "FINISHED"]
    assert audits[1].data.tags["tabml.change.previous_version"] == "1"
    assert audits[1].data.tags["tabml.change.training_window"] == f"{plan.ingest_days[0]} .. {plan.training_day}"


# --- shadow scoring -------------------------------------------------------------------------------


def test_scoring_job_of_every_deployment_runs_the_shadow_beside_scoring(tabml_home: Path) -> None:
    defs = build_definitions(load_deployment("dev", tabml_home=tabml_home))
    for project in ("nyc_taxi", "nyc_flights"):
        keys = PipelineKeys(project)
        selected = defs.resolve_job_def(keys.job("scoring_job")).asset_layer.selected_asset_keys
        assert {keys.batch_predictions, keys.challenger_predictions} <= selected
        # Nothing reads the shadow: batch_predictions' consumers never see the challenger.
        graph = defs.resolve_asset_graph()
        assert graph.get(keys.challenger_predictions).child_keys == set()
        assert keys.challenger_predictions not in graph.get(keys.batch_predictions).parent_keys


@pytest.mark.slow
def test_shadow_scoring_and_the_n_day_promotion_rule(
    conf_dir: Path, project_dir: Path, tabml_home: Path, instance: DagsterInstance
) -> None:
    edit_pipeline(project_dir, lambda d: d["shadow"].update({"promote_after_days": 2}))
    plan = seed_with(conf_dir, project_dir, tabml_home, instance, learning_rate=WEAK_LEARNING_RATE)
    training_day = plan.training_day.isoformat()
    # No challenger in shadow yet: the shadow step succeeds and writes nothing.
    _, defs = reload(conf_dir, tabml_home)
    quiet = run_selection(defs, instance, SCORING, partition_key=plan.scoring_day.isoformat())
    assert quiet.success and instance.get_latest_materialization_event(KEYS.challenger_predictions) is None

    set_learning_rate(project_dir, 0.1)
    spec, defs = reload(conf_dir, tabml_home)
    run_selection(defs, instance, TRAINING, partition_key=training_day)
    # The gate passed, but the challenger has no shadow days yet: the champion stays.
    assert champion_of(tabml_home) == "1"
    waiting = latest_metadata(instance, KEYS.champion_model)
    assert waiting["promoted"] is False and waiting["challenger_version"] == "2"
    assert waiting["shadow_rule"] == "waiting for shadow evidence: 0 of 2 shadow day(s) with labels"

    shadow_days = [plan.scoring_day.isoformat(), plan.ingest_days[-3].isoformat()]
    scored = run_selection(defs, instance, SCORING, partition_key=shadow_days[0])
    assert scored.success
    shadow = latest_metadata(instance, KEYS.challenger_predictions)
    assert shadow["challenger_version"] == "2" and shadow["champion_version"] == "1"
    assert shadow["labelled_rows"] == shadow["dagster/row_count"] == 400
    assert 0 < shadow["mean_absolute_difference"] < 100
    assert shadow["challenger_realized_rmse"] < shadow["champion_realized_rmse"]
    assert shadow["challenger_no_worse_on_rmse"] is True
    assert "| v1 | v2 | 400 | 400 |" in shadow["champion_vs_challenger"]
    store = build_partition_store(spec)
    stored = store.read_frame(KEYS.challenger_predictions, shadow_days[0])
    served = store.read_frame(KEYS.batch_predictions, shadow_days[0])
    assert set(stored["champion_version"]) == {"1"} and set(stored["challenger_version"]) == {"2"}
    np.testing.assert_allclose(stored["champion_prediction"], served["prediction"])
    # Consumers of batch_predictions see the champion's predictions only.
    assert set(served["model_version"]) == {"1"} and "challenger_prediction" not in served.columns

    run_selection(defs, instance, [KEYS.champion_model], partition_key=training_day)
    assert champion_of(tabml_home) == "1"
    assert latest_metadata(instance, KEYS.champion_model)["shadow_rule"].startswith("waiting for shadow evidence: 1 of 2")

    run_selection(defs, instance, SCORING, partition_key=shadow_days[1])
    run_selection(defs, instance, [KEYS.champion_model], partition_key=training_day)
    assert champion_of(tabml_home) == "2"
    promoted = latest_metadata(instance, KEYS.champion_model)
    assert promoted["promoted"] is True
    assert promoted["shadow_rule"].startswith("no worse than the champion on 2 shadow day(s) with labels")
    # Within shadow.days_after_promotion, the previous champion is the one scored in shadow.
    registry = build_resources(spec)[KEYS.registry_resource]
    now = dt.datetime.now(dt.UTC)
    kept = choose_shadow_model(registry, ShadowSpec(days_after_promotion=3), now)
    assert kept.ref is not None and kept.ref.version == "1" and kept.role == "previous champion"
    assert choose_shadow_model(registry, ShadowSpec(days_after_promotion=3), now + dt.timedelta(days=4)).ref is None
    # Without it, the promotion moved @champion onto @challenger: nothing is left in shadow.
    after = run_selection(defs, instance, SCORING, partition_key=shadow_days[0])
    assert after.success
    assert latest_metadata(instance, KEYS.challenger_predictions)["challenger_version"] == "2"
    events = instance.fetch_materializations(KEYS.challenger_predictions, limit=10).records
    assert len(events) == 2


def test_shadow_rule_counts_the_latest_labelled_days() -> None:
    days = [ShadowEvidence("2026-03-01", True), ShadowEvidence("2026-03-02", None), ShadowEvidence("2026-03-03", False)]
    blocked = shadow_promotion_verdict(days, 2)
    assert not blocked.allowed and "worse than the champion on realized labels on 2026-03-03" in blocked.description
    days.append(ShadowEvidence("2026-03-04", True))
    days.append(ShadowEvidence("2026-03-05", True))
    assert shadow_promotion_verdict(days, 2).allowed


def test_shadow_comparison_for_a_binary_classifier() -> None:
    rng = np.random.default_rng(3)
    inputs = pd.DataFrame({"x": rng.normal(size=200)})
    labels = inputs["x"] + rng.normal(scale=0.5, size=200) > 0
    champion = LogisticRegression().fit(inputs[:100], labels[:100])
    challenger = LogisticRegression(C=0.001).fit(inputs[100:], labels[100:])
    served = inputs.assign(
        late=labels.astype("boolean").where(inputs.index < 150),  # the last 50 rows' labels have not arrived
        prediction=champion.predict(inputs),
        probability=champion.predict_proba(inputs)[:, 1],
        probability_False=champion.predict_proba(inputs)[:, 0],
        probability_True=champion.predict_proba(inputs)[:, 1],
        model_version="1",
    )
    frame = shadow_frame(served, challenger, ["x"], ["late"], "2", task="binary", positive_class=True)
    assert list(frame.columns)[:3] == ["late", "champion_version", "challenger_version"]
    np.testing.assert_allclose(
        frame["probability_difference"], np.abs(challenger.predict_proba(inputs)[:, 1] - served["probability"])
    )
    day = compare_day(frame, "late", "binary", [False, True], "roc_auc", True, 0.0, True)
    assert day.rows == 200 and day.labelled_rows == 150
    agree = float(np.mean(challenger.predict(inputs) == served["prediction"]))
    assert day.agreement["labels_agree"] == pytest.approx(agree)
    assert 0 < day.agreement["probability_difference"] < 1
    assert set(day.champion_metrics) >= {"roc_auc", "log_loss", "accuracy"}
    assert day.challenger_no_worse == (day.challenger_metrics["roc_auc"] >= day.champion_metrics["roc_auc"])


# --- rollback ------------------------------------------------------------------------------------


def test_rollback_refusals_name_the_version_and_the_fix() -> None:
    def target(**kw: Any) -> RollbackTarget:
        return RollbackTarget(**{"model_name": "m", "version": "3", "exists": True, "validation_status": "passed", "was_champion": True, **kw})

    assert rollback_refusal(target(), "4", force=False) is None
    never_gated = rollback_refusal(target(validation_status=None), "4", force=False)
    assert never_gated == (
        "rollback of m to version 3 refused: version 3 never passed the promotion gate "
        "(validation_status: never evaluated); set force: true to restore it anyway; @champion stays at version 4"
    )
    assert rollback_refusal(target(validation_status=None), "4", force=True) is None
    assert "was never champion" in (rollback_refusal(target(was_champion=False), "4", force=False) or "")
    assert "has no version 3" in (rollback_refusal(target(exists=False), "4", force=True) or "")
    assert "already champion" in (rollback_refusal(target(), "3", force=True) or "")


def test_champion_history_reads_changes_as_tenures() -> None:
    changes = [
        ChampionChange("promotion", "1", None, "2026-03-01T00:00:00+00:00", "gate", "seed", "passed rmse_max", "a .. b"),
        ChampionChange("promotion", "2", "1", "2026-03-05T00:00:00+00:00", "gate", "schedule", "passed rmse_max", "c .. d"),
        ChampionChange("rollback", "1", "2", "2026-03-06T00:00:00+00:00", "fares off | by 30%", "ana", "passed rmse_max", "a .. b"),
    ]
    assert ChampionChange.from_tags(changes[2].as_tags()) == changes[2]
    tenures = champion_tenures(list(reversed(changes)))
    assert [(t.version, t.until) for t in tenures] == [
        ("1", "2026-03-05T00:00:00+00:00"), ("2", "2026-03-06T00:00:00+00:00"), ("1", None),
    ]
    table = history_markdown(tenures).splitlines()
    assert table[2] == (
        "| v1 | 2026-03-06 00:00 UTC | now (champion) | rollback: fares off \\| by 30% | ana | passed rmse_max | a .. b |"
    )


def rollback_config(version: str, reason: str = "fares off after the retrain", force: bool = False) -> dict:
    return {"ops": {"nyc_taxi_rollback_champion": {"config": {"version": version, "reason": reason, "requested_by": "ana", "force": force}}}}


@pytest.mark.slow
def test_rollback_in_process_restores_audits_and_records_the_lineage(
    conf_dir: Path, project_dir: Path, tabml_home: Path, instance: DagsterInstance
) -> None:
    plan = seed_with(conf_dir, project_dir, tabml_home, instance, learning_rate=WEAK_LEARNING_RATE)
    set_learning_rate(project_dir, 0.1)
    _, defs = reload(conf_dir, tabml_home)
    run_selection(defs, instance, TRAINING, partition_key=plan.training_day.isoformat())
    scored_day = plan.scoring_day.isoformat()
    run_selection(defs, instance, [KEYS.batch_predictions], partition_key=scored_day)
    # v3: trained, never evaluated, so never gated.
    run_selection(defs, instance, [KEYS.trained_model], partition_key=plan.training_day.isoformat())
    job = defs.resolve_job_def(KEYS.job("rollback_job"))

    refused = job.execute_in_process(run_config=rollback_config("3"), instance=instance, raise_on_error=False)
    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure)
    assert "version 3 never passed the promotion gate (validation_status: never evaluated)" in str(failure.event_specific_data.error.message)
    assert champion_of(tabml_home) == "2"
    assert [r.data.tags["tabml.change.action"] for r in audit_runs(tabml_home)] == ["promotion", "promotion"]

    restored = job.execute_in_process(run_config=rollback_config("1"), instance=instance)
    assert restored.success and champion_of(tabml_home) == "1"
    client = client_of(tabml_home)
    assert client.get_model_version(MODEL_NAME, "1").tags["tabml.restore_reason"] == "fares off after the retrain"
    assert client.get_model_version(MODEL_NAME, "2").tags["tabml.rolled_back_reason"] == "fares off after the retrain"
    audit = audit_runs(tabml_home)[-1]
    assert audit.info.status == "FINISHED"
    assert audit.data.tags["tabml.change.action"] == "rollback"
    assert audit.data.tags["tabml.change.requested_by"] == "ana"
    assert audit.data.tags["tabml.change.days_to_rescore"] == scored_day
    record = instance.get_latest_materialization_event(KEYS.champion_model)
    assert record.run_id == restored.run_id
    metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    assert metadata["action"] == "rollback" and metadata["model_version"] == "1"
    assert metadata["previous_champion_version"] == "2" and metadata["days_to_rescore"] == [scored_day]
    assert "rollback: fares off after the retrain" in metadata["champion_history"]

    # What the champion sensor does next, then the lineage the day carries in the UI.
    rescore = run_selection(defs, instance, [KEYS.batch_predictions], partition_key=scored_day)
    instance.add_run_tags(rescore.run_id, {"tabml/trigger": "new_champion"})
    result = tick(defs, KEYS.sensor("scoring_lineage_sensor"), instance, None)
    observations = [e for e in result.asset_events if e.partition == scored_day]
    latest = {k: v.value for k, v in observations[-1].metadata.items()}
    assert latest["model_version"] == "1"
    assert latest["training_window"] == f"{plan.ingest_days[0]} .. {plan.training_day}"
    assert latest["gate_verdict"] == "passed rmse_max, no_worse_than_champion"
    assert latest["rescored_after_rollback"].startswith("yes: rollback to v1 at ")
    # Seeded by v1, scored by v2 once promoted, rescored by v1 after the rollback.
    assert [e.metadata["model_version"].value for e in observations] == ["1", "2", "1"]
    assert [e.metadata["rescored_after_rollback"].value for e in observations][:2] == ["no", "no"]
    assert instance.get_run_by_id(refused.run_id).status == DagsterRunStatus.FAILURE


@pytest.mark.slow
def test_shadow_scoring_of_the_flights_classifier(tabml_home: Path, instance: DagsterInstance) -> None:
    spec = load_spec("test", tabml_home=tabml_home, project="nyc_flights")
    keys = spec.keys
    defs = build_definitions(spec)
    plan = seed_demo(defs, spec, instance, TODAY)
    # v2 trained but not evaluated: @challenger, not champion, so it is scored in shadow.
    run_selection(defs, instance, [keys.trained_model], partition_key=plan.scoring_day.isoformat())
    day = plan.scoring_day.isoformat()
    run_selection(defs, instance, [keys.batch_predictions, keys.challenger_predictions], partition_key=day)

    shadow = latest_metadata(instance, keys.challenger_predictions)
    assert shadow["challenger_version"] == "2" and shadow["champion_version"] == "1"
    assert 0.5 < shadow["mean_labels_agree"] <= 1 and 0 <= shadow["mean_probability_difference"] < 0.5
    assert 0 < shadow["labelled_rows"] <= shadow["dagster/row_count"]
    for prefix in ("champion", "challenger"):
        assert 0 < shadow[f"{prefix}_realized_roc_auc"] < 1 and shadow[f"{prefix}_realized_log_loss"] > 0
    assert isinstance(shadow["challenger_no_worse_on_roc_auc"], bool)
    stored = build_partition_store(spec).read_frame(keys.challenger_predictions, day)
    assert {"champion_probability_True", "challenger_probability_True", "labels_agree"} <= set(stored.columns)
    assert stored["labels_agree"].mean() == pytest.approx(shadow["mean_labels_agree"])
