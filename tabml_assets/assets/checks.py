"""Asset checks on the stored partitions: raw_data, features and batch_predictions, and drift.

Checks read what is stored (through the partition store), so they verify what downstream steps
will really read: each partition's summary, which the streamed write that made the file kept
beside it (rows, dtypes, null and non-finite counts, extremes, the rule counts of ingestion),
and the file itself where no current summary exists (a partition of an older tabml) or the
figure needs the rows (a classifier's per-row probabilities), reading only the columns it needs.
Drift compares with references made once per model version and kept. Blocking checks stop downstream assets in
the same run; drift WARNs. In a run over a range of days each check reports once, with the
figures of every day in its metadata.
"""


import datetime as dt
import hashlib
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    PreviewWarning,
    asset_check,
    multi_asset_check,
)

from tabml_assets.assets.common import daily_partitions
from tabml_assets.keys import PipelineKeys
from tabml_assets.ml.metrics import (
    Predictions,
    higher_is_better,
    positive_class_probability,
    predict,
)
from tabml_assets.ml.quality import (
    QUARANTINE_REASONS_FACT,
    REASON_COLUMN,
    RULE_COUNTS_FACT,
    RULES_DIGEST_FACT,
    categorical_population_stability_index,
    count_reasons,
    non_finite_counts,
    null_counts,
    population_stability_index,
    range_rule_reasons,
    rule_violations,
    rules_digest,
    schema_problems,
)
from tabml_assets.ml.realized import (
    RealizedAccuracy,
    identity_columns,
    realized_accuracy,
    realized_accuracy_of_own_labels,
)
from tabml_assets.ml.schema import raw_schema
from tabml_assets.ml.scoring import PREDICTION_COLUMN, PROBABILITY_COLUMN, probability_column
from tabml_assets.resources.model_registry import CHAMPION, ModelRegistry, ModelVersionRef
from tabml_assets.resources.retries import (
    build_retry_policy,
    fail_fast_unless_transient,
    transient_errors_only,
)
from tabml_assets.resources.storage import (
    PartitionStore,
    PartitionSummary,
    frame_to_table,
    schema_of_frame,
)
from tabml_assets.spec import DatasetSpec, LoadedSpec, PipelineSpec
from tabml_assets.utc import days_between

# Checks read the partition files, which in staging and prod live on a volume the cluster
# mounts: they run where the assets run (the step launcher), not on the Dagster host.
CHECK_RESOURCES = {"step_launcher", "partition_store"}


@dataclass
class Finding:
    """One check's outcome on one partition."""

    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def partition_keys_of(context: AssetCheckExecutionContext) -> list[str]:
    return list(context.partition_keys)


def store_of(context: AssetCheckExecutionContext) -> PartitionStore:
    return context.resources.partition_store


def result_from(
    check_name: str, findings: dict[str, Finding], severity: AssetCheckSeverity
) -> AssetCheckResult:
    """One result per check: a single day's figures as they are, several days' per day."""
    failed = [key for key, finding in findings.items() if not finding.passed]
    if len(findings) == 1:
        (key, finding), = findings.items()
        metadata = {"partition": key, **finding.metadata}
        description = finding.description
    else:
        metadata = {
            "partitions": MetadataValue.json({k: f.description for k, f in findings.items()}),
            "failed_partitions": MetadataValue.json(failed),
        }
        description = (
            f"failed for {len(failed)} of {len(findings)} partitions: "
            + "; ".join(findings[k].description for k in failed[:5])
            if failed
            else f"passed for all {len(findings)} partitions"
        )
    return AssetCheckResult(
        check_name=check_name,
        passed=not failed,
        severity=severity,
        description=description,
        metadata=metadata,
    )


def evaluate(
    keys: list[str], name: str, severity: AssetCheckSeverity, rule: Callable[[str], Finding]
) -> AssetCheckResult:
    return result_from(name, {key: rule(key) for key in keys}, severity)


# raw_data -----------------------------------------------------------------------------------


def summary_source(summary: PartitionSummary | None) -> str:
    """How a check read the partition, stated in its metadata."""
    return "partition summary" if summary is not None else "partition file (no current summary)"


def raw_schema_finding(frame: pd.DataFrame | Mapping[str, str], dataset: DatasetSpec) -> Finding:
    """`frame`: the stored rows, or their column -> dtype from the partition's summary."""
    schema = raw_schema(dataset)
    problems = schema_problems(frame, schema)
    return Finding(
        not problems,
        "; ".join(problems) if problems else f"columns and dtypes match the raw schema ({len(schema)} columns)",
        {"problems": MetadataValue.json(problems)},
    )


def raw_nulls_finding(counts: Mapping[str, int], dataset: DatasetSpec) -> Finding:
    """`counts`: nulls per stored column (`null_counts` of the rows, or the summary's)."""
    # Nullable and label columns may hold nulls (a scoring day's label has not arrived).
    with_nulls = {c: n for c, n in counts.items() if n and not (c in dataset.columns and dataset.is_nullable(c))}
    return Finding(
        not with_nulls,
        f"null values in {with_nulls}" if with_nulls else "no null values",
        {"nulls_per_column": MetadataValue.json(dict(counts))},
    )


def raw_rule_counts(frame: pd.DataFrame, dataset: DatasetSpec, key: str, now: dt.datetime) -> dict[str, int]:
    """Rows of `frame` breaking each value rule, evaluated on the rows themselves."""
    masks = rule_violations(frame, dataset, dt.date.fromisoformat(key), now)
    return {rule: int(masks[rule].sum()) for rule in range_rule_reasons(dataset)}


def summarised_rule_counts(summary: PartitionSummary | None, dataset: DatasetSpec) -> dict[str, int] | None:
    """The value-rule counts ingestion stored for the partition's rows, or None when they were
    not made under the dataset spec as it is now (or there is no summary)."""
    if summary is None or summary.facts.get(RULES_DIGEST_FACT) != rules_digest(dataset):
        return None
    counts = summary.facts.get(RULE_COUNTS_FACT)
    if not isinstance(counts, dict) or any(rule not in counts for rule in range_rule_reasons(dataset)):
        return None
    return {rule: int(counts[rule]) for rule in range_rule_reasons(dataset)}


def raw_ranges_finding(counts: Mapping[str, int], validated_at: str | None) -> Finding:
    broken = {rule: n for rule, n in counts.items() if n}
    metadata: dict[str, Any] = {"violations_per_rule": MetadataValue.json(dict(counts))}
    if validated_at:
        # Rules on "now" (nothing in the future) were evaluated then; a stored row cannot move
        # into the future since.
        metadata["rules_evaluated_at"] = validated_at
    return Finding(
        not broken,
        f"rows breaking value rules: {broken}" if broken else "every row meets the value rules and is inside its day",
        metadata,
    )


@dataclass(frozen=True)
class RawDayFacts:
    """What the raw_data checks need of one stored day: from its summary, or from its rows."""

    rows: int
    dtypes: dict[str, str]
    nulls: dict[str, int]
    rule_counts: dict[str, int]
    validated_at: str | None
    source: str


def raw_day_facts(store: PartitionStore, asset: AssetKey, key: str, dataset: DatasetSpec, now: dt.datetime) -> RawDayFacts:
    summary = store.read_summary(asset, key)
    counts = summarised_rule_counts(summary, dataset)
    if summary is not None and counts is not None:
        validated_at = summary.facts.get("validated_at")
        return RawDayFacts(
            summary.rows, summary.columns, summary.null_counts, counts,
            str(validated_at) if validated_at else None, summary_source(summary),
        )
    # An older partition (or one ingested under other rules): its rows, read once.
    frame = store.read_frame(asset, key)
    return RawDayFacts(
        len(frame), {str(c): str(t) for c, t in frame.dtypes.items()}, null_counts(frame),
        raw_rule_counts(frame, dataset, key, now), now.isoformat(), summary_source(None),
    )


def quarantine_finding(store: PartitionStore, asset: AssetKey, key: str) -> Finding:
    """The day's quarantined rows and their reasons, from the quarantine's summary, else its
    row count (parquet footer) and reason column."""
    summary = store.read_summary(asset, key)
    stored_reasons = summary.facts.get(QUARANTINE_REASONS_FACT) if summary is not None else None
    if summary is not None and isinstance(stored_reasons, dict):
        rows, reasons = summary.rows, {str(r): int(n) for r, n in stored_reasons.items()}
    else:
        rows = store.row_count(asset, key)
        reasons = count_reasons(store.read_frame(asset, key, [REASON_COLUMN])) if rows else {}
    return Finding(
        rows == 0,
        f"{rows} rows quarantined: {reasons}" if rows else "no row quarantined",
        {
            "quarantined_rows": MetadataValue.int(rows),
            "quarantine_reasons": MetadataValue.json(reasons),
            "quarantine_path": MetadataValue.path(str(store.path(asset, key))),
        },
    )


def with_source(finding: Finding, source: str) -> Finding:
    return Finding(finding.passed, finding.description, {**finding.metadata, "read_from": source})


def build_raw_data_checks(spec: LoadedSpec) -> AssetChecksDefinition:
    partitions = daily_partitions(spec.pipeline)
    dataset = spec.pipeline.dataset
    pipeline_keys = spec.keys

    def check_spec(name: str, description: str, blocking: bool) -> AssetCheckSpec:
        return AssetCheckSpec(
            name, asset=pipeline_keys.raw_data, description=description, blocking=blocking, partitions_def=partitions
        )

    @multi_asset_check(
        name=f"{spec.name}_raw_data_quality",
        specs=[
            check_spec("raw_schema", "Columns and dtypes are the dataset's raw schema.", True),
            check_spec("raw_non_empty", "The day has at least one valid row.", False),
            check_spec("raw_no_nulls", "No null value in a column the dataset declares not nullable.", True),
            check_spec(
                "raw_value_ranges",
                "Every value rule of the dataset spec holds: " + "; ".join(range_rule_reasons(dataset))
                + " (each names what is refused).",
                True,
            ),
            check_spec("raw_quarantine", "No row of the day was quarantined.", False),
        ],
        required_resource_keys=CHECK_RESOURCES,
    )
    def raw_data_quality(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        """Read from each day's stored summary (what ingestion counted on the rows it wrote);
        a day without one, or ingested under other rules, is read from its file."""
        store = store_of(context)
        keys = partition_keys_of(context)
        now = dt.datetime.now(dt.UTC)
        days = {key: raw_day_facts(store, pipeline_keys.raw_data, key, dataset, now) for key in keys}
        yield evaluate(
            keys, "raw_schema", AssetCheckSeverity.ERROR,
            lambda k: with_source(raw_schema_finding(days[k].dtypes, dataset), days[k].source),
        )
        yield evaluate(
            keys, "raw_non_empty", AssetCheckSeverity.WARN,
            lambda k: Finding(bool(days[k].rows), f"{days[k].rows} rows", {"rows": days[k].rows}),
        )
        yield evaluate(
            keys, "raw_no_nulls", AssetCheckSeverity.ERROR,
            lambda k: with_source(raw_nulls_finding(days[k].nulls, dataset), days[k].source),
        )
        yield evaluate(
            keys, "raw_value_ranges", AssetCheckSeverity.ERROR,
            lambda k: with_source(raw_ranges_finding(days[k].rule_counts, days[k].validated_at), days[k].source),
        )
        yield evaluate(
            keys, "raw_quarantine", AssetCheckSeverity.WARN,
            lambda k: quarantine_finding(store, pipeline_keys.quarantine, k),
        )

    return raw_data_quality


# features -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDayFacts:
    """What the features checks need of one stored day: its columns and the non-finite
    values of its numeric model inputs."""

    columns: list[str]
    non_finite: dict[str, int]
    source: str


def feature_day_facts(store: PartitionStore, asset: AssetKey, key: str, numeric: list[str]) -> FeatureDayFacts:
    summary = store.read_summary(asset, key)
    if summary is None:
        frame = store.read_frame(asset, key)
        return FeatureDayFacts(list(frame.columns), non_finite_counts(frame, numeric), summary_source(None))
    columns = list(summary.columns)
    counts = {c: summary.non_finite_counts[c] for c in numeric if c in summary.non_finite_counts}
    # An integer column is finite by type; a numeric input stored as text is counted from its
    # values, as a full read would (only those columns are read).
    integers = [c for c in numeric if c in columns and c not in counts and summary.columns[c].lower().startswith(("int", "uint"))]
    counts.update({c: summary.null_counts.get(c, 0) for c in integers})
    others = [c for c in numeric if c in columns and c not in counts]
    if others:
        counts.update(non_finite_counts(store.read_frame(asset, key, others), others))
    return FeatureDayFacts(columns, {c: counts[c] for c in numeric if c in counts}, summary_source(summary))


def build_features_checks(spec: LoadedSpec) -> AssetChecksDefinition:
    pipeline = spec.pipeline
    partitions = daily_partitions(pipeline)
    pipeline_keys = spec.keys
    expected = [pipeline.event_time, *pipeline.feature_columns, pipeline.target_column]
    types = pipeline.feature_table_types()
    # The target may be null (unlabelled rows); the numeric model inputs may not.
    numeric = [
        c for c in pipeline.feature_columns
        if c not in pipeline.categorical_columns and types[c] in ("float", "integer")
    ]

    @multi_asset_check(
        name=f"{spec.name}_features_quality",
        specs=[
            AssetCheckSpec(
                "features_columns", asset=pipeline_keys.features, blocking=True, partitions_def=partitions,
                description="Every feature column of the spec, the target and the event time are present.",
            ),
            AssetCheckSpec(
                "features_finite", asset=pipeline_keys.features, blocking=True, partitions_def=partitions,
                description="No NaN or infinite value in the numeric model inputs.",
            ),
        ],
        required_resource_keys=CHECK_RESOURCES,
    )
    def features_quality(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        """Read from each day's stored summary; a day without one is read from its file."""
        store = store_of(context)
        keys = partition_keys_of(context)
        days = {key: feature_day_facts(store, pipeline_keys.features, key, numeric) for key in keys}

        def columns_finding(key: str) -> Finding:
            columns = days[key].columns
            missing = [c for c in expected if c not in columns]
            return Finding(
                not missing,
                f"missing columns {missing}; expected {expected}, found {columns}"
                if missing else f"all {len(expected)} expected columns present",
                {"missing_columns": MetadataValue.json(missing), "read_from": days[key].source},
            )

        def finite_finding(key: str) -> Finding:
            counts = days[key].non_finite
            bad = {c: n for c, n in counts.items() if n}
            return Finding(
                not bad,
                f"NaN or infinite values in {bad}" if bad else f"all values finite in {len(counts)} columns",
                {"non_finite_per_column": MetadataValue.json(counts), "read_from": days[key].source},
            )

        yield evaluate(keys, "features_columns", AssetCheckSeverity.ERROR, columns_finding)
        yield evaluate(keys, "features_finite", AssetCheckSeverity.ERROR, finite_finding)

    return features_quality


# batch_predictions --------------------------------------------------------------------------


def class_probability_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(f"{PROBABILITY_COLUMN}_")]


def probabilities_finding(frame: pd.DataFrame) -> Finding:
    """Class probabilities inside [0, 1] that sum to 1 per row, with the predicted class shares."""
    columns = class_probability_columns(frame)
    matrix = frame[columns].to_numpy(dtype="float64")
    outside = int(((matrix < 0) | (matrix > 1) | ~np.isfinite(matrix)).any(axis=1).sum())
    off_sum = int((np.abs(matrix.sum(axis=1) - 1.0) > 1e-6).sum()) if len(matrix) else 0
    counts = frame[PREDICTION_COLUMN].astype(str).value_counts(normalize=True).round(4)
    shares = {str(label): float(share) for label, share in counts.items()}
    return Finding(
        outside == 0 and off_sum == 0,
        f"{outside} rows with a probability outside [0, 1], {off_sum} whose probabilities do not sum to 1",
        {"outside_range": outside, "not_summing_to_one": off_sum, "predicted_class_shares": MetadataValue.json(shares)},
    )


def build_batch_predictions_checks(spec: LoadedSpec) -> AssetChecksDefinition:
    quality = spec.pipeline.data_quality
    partitions = daily_partitions(spec.pipeline)
    pipeline_keys = spec.keys
    # No bound means no bound: a classifier's probabilities, or a regression target of any size.
    low = quality.plausible_prediction_min if quality.plausible_prediction_min is not None else -np.inf
    high = quality.plausible_prediction_max if quality.plausible_prediction_max is not None else np.inf

    regression = spec.pipeline.task == "regression"
    range_description = (
        f"Every prediction between {low:g} and {high:g} (data_quality.plausible_prediction_*)."
        if regression
        else "Every class probability between 0 and 1, and each row's probabilities sum to 1."
    )

    @multi_asset_check(
        name=f"{spec.name}_batch_predictions_quality",
        specs=[
            AssetCheckSpec(
                "predictions_one_per_row", asset=pipeline_keys.batch_predictions, partitions_def=partitions,
                description="Exactly one prediction (finite, or a label) for every feature row of the day.",
            ),
            AssetCheckSpec(
                "predictions_plausible_range", asset=pipeline_keys.batch_predictions, partitions_def=partitions,
                description=range_description,
            ),
        ],
        required_resource_keys=CHECK_RESOURCES,
    )
    def batch_predictions_quality(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        """Read from each day's stored summary (a classifier's probabilities from their columns);
        a day without one is read from its file."""
        store = store_of(context)
        keys = partition_keys_of(context)
        predictions = pipeline_keys.batch_predictions
        summaries = {key: store.read_summary(predictions, key) for key in keys}
        frames: dict[str, pd.DataFrame] = {}

        def scored(key: str) -> pd.DataFrame:
            """The columns a summary cannot answer for: the prediction and class probabilities."""
            if key not in frames:
                schema = store.read_schema(predictions, key)
                columns = [PREDICTION_COLUMN, *(c for c in schema.names if c.startswith(f"{PROBABILITY_COLUMN}_"))]
                frames[key] = store.read_frame(predictions, key, [c for c in columns if c in schema.names])
            return frames[key]

        def one_per_row(key: str) -> Finding:
            inputs = store.row_count(pipeline_keys.features, key)
            summary = summaries[key]
            if summary is not None and PREDICTION_COLUMN in summary.null_counts:
                count = summary.rows
                counted = summary.non_finite_counts if regression else summary.null_counts
                missing = counted.get(PREDICTION_COLUMN, summary.null_counts[PREDICTION_COLUMN])
            else:
                values = scored(key)[PREDICTION_COLUMN]
                count = len(values)
                missing = (
                    int((~np.isfinite(values.to_numpy(dtype="float64"))).sum()) if regression else int(values.isna().sum())
                )
            passed = count == inputs and missing == 0
            what = "not finite" if regression else "without a label"
            return Finding(
                passed,
                f"{count} predictions for {inputs} feature rows, {missing} {what}",
                {"predictions": count, "feature_rows": inputs, "non_finite": missing,
                 "read_from": summary_source(summary)},
            )

        def plausible(key: str) -> Finding:
            summary = summaries[key]
            if not regression:
                finding = probabilities_finding(scored(key))
                return with_source(finding, "prediction and probability columns of the partition file")
            bounds = f"[{low:g}, {high:g}]"
            if summary is not None:
                seen = (summary.minimum.get(PREDICTION_COLUMN), summary.maximum.get(PREDICTION_COLUMN))
                if summary.rows == 0:
                    return Finding(True, f"0 of 0 predictions outside {bounds}", {"outside_range": 0, "range": bounds})
                if isinstance(seen[0], float) and isinstance(seen[1], float) and low <= seen[0] and seen[1] <= high:
                    # The extremes are inside, so every prediction is.
                    return Finding(True, f"0 of {summary.rows} predictions outside {bounds}", {
                        "outside_range": 0, "range": bounds, "min_prediction": seen[0], "max_prediction": seen[1],
                        "read_from": summary_source(summary),
                    })
            # Some prediction is outside (or no summary): count them on the prediction column.
            values = scored(key)[PREDICTION_COLUMN].to_numpy(dtype="float64")
            outside = int(((values < low) | (values > high)).sum())
            metadata = {"outside_range": outside, "range": f"[{low:g}, {high:g}]", "read_from": "prediction column of the partition file"}
            if len(values):
                metadata.update(min_prediction=float(np.nanmin(values)), max_prediction=float(np.nanmax(values)))
            return Finding(outside == 0, f"{outside} of {len(values)} predictions outside [{low:g}, {high:g}]", metadata)

        yield evaluate(keys, "predictions_one_per_row", AssetCheckSeverity.ERROR, one_per_row)
        yield evaluate(keys, "predictions_plausible_range", AssetCheckSeverity.WARN, plausible)

    return batch_predictions_quality


# drift --------------------------------------------------------------------------------------


def training_window_of(registry: ModelRegistry, ref: ModelVersionRef) -> list[str]:
    """The feature partitions the version was trained on, from its MLflow run's tags."""
    with fail_fast_unless_transient(f"MLflow: read the training window of {ref.uri}"):
        if ref.run_id is None:  # fails fast, as get_run(None) did
            raise ValueError(f"{ref.uri} was registered without an MLflow run")
        tags = registry.client().get_run(ref.run_id).data.tags
    start, end = tags.get("tabml.window_start"), tags.get("tabml.window_end")
    if not start or not end:
        return []
    return [day.isoformat() for day in days_between(start, end)]


def reference_features(
    store: PartitionStore, features: AssetKey, keys: list[str], columns: list[str], max_rows: int
) -> pd.DataFrame:
    """The stored feature rows of `keys` (a fixed sample of at most `max_rows`)."""
    frames = [store.read_frame(features, key, columns) for key in keys if store.exists(features, key)]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return frame.sample(n=max_rows, random_state=0) if len(frame) > max_rows else frame


# Stored drift references, one per model version (versions are immutable), under
# <project>/drift_reference/: <version>.parquet holds the sample of the version's training
# window, <version>.predictions.parquet the version's predictions on it.
DRIFT_REFERENCE = "drift_reference"


@dataclass(frozen=True)
class DriftReference:
    """A version's reference for drift: rows, and the training window they were sampled from."""

    frame: pd.DataFrame
    window: tuple[str, str] | None

    @property
    def label(self) -> str:
        return f"{self.window[0]}..{self.window[1]}" if self.window else "(no window)"


def drift_reference_key(pipeline_keys: PipelineKeys) -> AssetKey:
    return pipeline_keys.asset(DRIFT_REFERENCE)


def reference_digest(**settings: Any) -> str:
    """What a stored reference was made with; one made with other settings is made again."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stored_reference(store: PartitionStore, key: AssetKey, name: str, digest: str) -> DriftReference | None:
    """The reference stored as `name` if it was made with `digest` and its summary is current."""
    if not store.exists(key, name):
        return None
    summary = store.read_summary(key, name)
    if summary is None or summary.facts.get("digest") != digest:
        return None
    window = summary.facts.get("window")
    return DriftReference(store.read_frame(key, name), (str(window[0]), str(window[1])) if window else None)


def store_reference(store: PartitionStore, key: AssetKey, name: str, digest: str, reference: DriftReference, facts: dict[str, Any]) -> None:
    frame = reference.frame.reset_index(drop=True)
    schema = schema_of_frame(frame)
    store.write_tables(
        key, name, [frame_to_table(frame, schema, f"{'/'.join(key.path)}/{name}")], schema,
        facts={**facts, "digest": digest, "window": list(reference.window) if reference.window else None},
    )


def features_reference(
    store: PartitionStore, registry: ModelRegistry, pipeline_keys: PipelineKeys, ref: ModelVersionRef,
    pipeline: PipelineSpec,
) -> DriftReference:
    """The sample of the version's training window (its feature columns), made once per
    version and kept; empty when the window has no stored features (not kept, so that it is
    made once they are)."""
    key = drift_reference_key(pipeline_keys)
    digest = reference_digest(columns=pipeline.feature_columns, max_rows=pipeline.data_quality.drift_reference_max_rows)
    found = stored_reference(store, key, ref.version, digest)
    if found is not None:
        return found
    window = training_window_of(registry, ref)
    frame = reference_features(
        store, pipeline_keys.features, window, pipeline.feature_columns, pipeline.data_quality.drift_reference_max_rows
    )
    reference = DriftReference(frame, (window[0], window[-1]) if window else None)
    if not frame.empty:
        store_reference(store, key, ref.version, digest, reference, {"model_version": ref.version, "run_id": ref.run_id})
    return reference


def predictions_reference(
    store: PartitionStore, registry: ModelRegistry, pipeline_keys: PipelineKeys, version: str,
    pipeline: PipelineSpec,
) -> DriftReference:
    """The version's predictions on its training window sample (the drift columns of
    batch_predictions), made once per version and kept: the model is loaded and predicts only
    the first time."""
    key = drift_reference_key(pipeline_keys)
    name = f"{version}.predictions"
    digest = reference_digest(
        columns=pipeline.feature_columns, max_rows=pipeline.data_quality.drift_reference_max_rows,
        task=pipeline.task, positive_class=pipeline.target.positive_class,
    )
    found = stored_reference(store, key, name, digest)
    if found is not None:
        return found
    run_id = registry.run_id_of(version)
    ref = ModelVersionRef(registry.model_name, version, run_id)
    sample = features_reference(store, registry, pipeline_keys, ref, pipeline)
    if sample.frame.empty:
        return sample
    expected = predict(registry.load_model(ref), sample.frame[pipeline.feature_columns], pipeline.task)
    values = drift_values(expected, pipeline.task, pipeline.target.positive_class)
    reference = DriftReference(pd.DataFrame(values), sample.window)
    store_reference(store, key, name, digest, reference, {"model_version": version, "run_id": run_id})
    return reference


def psi_finding(
    psi: dict[str, float], threshold: float, reference: str, reference_rows: int
) -> Finding:
    drifted = {c: round(v, 4) for c, v in psi.items() if v > threshold}
    metadata: dict[str, Any] = {f"psi_{c}": MetadataValue.float(v) for c, v in psi.items()}
    metadata.update(reference=reference, reference_rows=reference_rows, psi_warn_threshold=threshold)
    return Finding(
        not drifted,
        f"PSI above {threshold:g} for {drifted} against {reference}"
        if drifted
        else f"PSI at most {max(psi.values(), default=0.0):.3f} (threshold {threshold:g}) against {reference}",
        metadata,
    )


def no_reference(reason: str) -> Finding:
    return Finding(True, f"drift not measured: {reason}", {"reference": "none"})


def drift_values(expected: Predictions, task: str, positive_class: object) -> dict[str, np.ndarray]:
    """What predictions drift on: the value (regression), the positive class's probability
    (binary), or each class's probability (multiclass), keyed by its batch_predictions column."""
    if task == "regression":
        return {PREDICTION_COLUMN: np.asarray(expected.values, dtype="float64")}
    if task == "binary":
        return {PROBABILITY_COLUMN: positive_class_probability(expected, positive_class)}
    assert expected.probabilities is not None and expected.classes is not None
    return {probability_column(c): expected.probabilities[:, i] for i, c in enumerate(expected.classes)}


def column_psi(reference: pd.Series, current: pd.Series, bins: int) -> float:
    """PSI on quantile bins for numbers, on category shares for anything else."""
    if pd.api.types.is_numeric_dtype(reference) and not pd.api.types.is_bool_dtype(reference):
        return population_stability_index(reference.to_numpy(dtype="float64", na_value=np.nan), current.to_numpy(dtype="float64", na_value=np.nan), bins)
    return categorical_population_stability_index(reference.astype("object"), current.astype("object"))


def build_drift_checks(spec: LoadedSpec) -> list[AssetChecksDefinition]:
    pipeline = spec.pipeline
    quality = pipeline.data_quality
    partitions = daily_partitions(pipeline)
    retry_policy = build_retry_policy(pipeline.retries)
    pipeline_keys = spec.keys
    registry_key = pipeline_keys.registry_resource

    @asset_check(
        asset=pipeline_keys.features,
        name="features_drift",
        description=(
            f"Population stability index of {quality.drift_columns} against the champion's "
            f"training window; WARN above {quality.psi_warn_threshold:g}."
        ),
        partitions_def=partitions,
        retry_policy=retry_policy,
        required_resource_keys={*CHECK_RESOURCES, registry_key},
    )
    @transient_errors_only
    def features_drift(context: AssetCheckExecutionContext) -> AssetCheckResult:
        store = store_of(context)
        registry: ModelRegistry = getattr(context.resources, registry_key)
        keys = partition_keys_of(context)
        champion = registry.version_for_alias(CHAMPION)
        reference = features_reference(store, registry, pipeline_keys, champion, pipeline) if champion else None

        def finding(key: str) -> Finding:
            if champion is None or reference is None:
                return no_reference("no champion model yet, so no training window to compare with")
            if reference.window is None:
                return no_reference(f"champion v{champion.version}'s training run records no training window")
            if reference.frame.empty:
                return no_reference(f"the champion's training window {reference.label} has no stored features")
            current = store.read_frame(pipeline_keys.features, key, quality.drift_columns)
            psi = {c: column_psi(reference.frame[c], current[c], quality.psi_bins) for c in quality.drift_columns}
            label = f"champion v{champion.version}'s training window {reference.label}"
            return psi_finding(psi, quality.psi_warn_threshold, label, len(reference.frame))

        return evaluate(keys, "features_drift", AssetCheckSeverity.WARN, finding)

    @asset_check(
        asset=pipeline_keys.batch_predictions,
        name="predictions_drift",
        description=(
            "Population stability index of the predictions (class probabilities for a classifier) "
            "against the same model's predictions on its training window (computed once per "
            f"model version and kept); WARN above {quality.psi_warn_threshold:g}."
        ),
        partitions_def=partitions,
        retry_policy=retry_policy,
        required_resource_keys={*CHECK_RESOURCES, registry_key},
    )
    @transient_errors_only
    def predictions_drift(context: AssetCheckExecutionContext) -> AssetCheckResult:
        store = store_of(context)
        registry: ModelRegistry = getattr(context.resources, registry_key)
        predictions = pipeline_keys.batch_predictions

        def finding(key: str) -> Finding:
            names = store.read_schema(predictions, key).names
            drifting = [PREDICTION_COLUMN] if pipeline.task == "regression" else [
                c for c in names if c == PROBABILITY_COLUMN or (pipeline.task == "multiclass" and c.startswith(f"{PROBABILITY_COLUMN}_"))
            ]
            # One run scores a partition with one version: its first row names it (reading
            # the whole text column costs more than the PSI itself on a 10M-row day).
            first = next(store.iter_frames(predictions, key, batch_rows=1, columns=["model_version"]), None)
            if first is None or first.empty:
                return no_reference("the partition has no predictions")
            version = str(first["model_version"].iloc[0])
            scored = store.read_frame(predictions, key, drifting)
            reference = predictions_reference(store, registry, pipeline_keys, version, pipeline)
            if reference.frame.empty:
                return no_reference(f"version {version}'s training window has no stored features")
            psi = {
                column: population_stability_index(
                    reference.frame[column].to_numpy(dtype="float64"), scored[column].to_numpy(dtype="float64"), quality.psi_bins
                )
                for column in reference.frame.columns
            }
            label = f"version {version}'s predictions on its training window {reference.label}"
            return psi_finding(psi, quality.psi_warn_threshold, label, len(reference.frame))

        return evaluate(partition_keys_of(context), "predictions_drift", AssetCheckSeverity.WARN, finding)

    # Without drift columns there is nothing to compare on the features; predictions still drift.
    return [features_drift, predictions_drift] if quality.drift_columns else [predictions_drift]


def build_realized_accuracy_check(spec: LoadedSpec) -> AssetChecksDefinition:
    """The predictions of each day against the labels that arrived since (re-ingested days)."""
    pipeline = spec.pipeline
    pipeline_keys = spec.keys
    criteria = pipeline.validation.criteria
    higher = {m: higher_is_better(m, spec.steps.metrics) for m in criteria}

    @asset_check(
        asset=pipeline_keys.batch_predictions,
        name="predictions_realized_accuracy",
        description=(
            "The stored predictions scored against the labels the day's feature rows hold now "
            "(a day re-ingested once its labels arrived); WARN when a gate criterion is missed."
        ),
        partitions_def=daily_partitions(pipeline),
        required_resource_keys=CHECK_RESOURCES,
    )
    def predictions_realized_accuracy(context: AssetCheckExecutionContext) -> AssetCheckResult:
        store = store_of(context)

        identity = identity_columns(pipeline)

        def finding(key: str) -> Finding:
            features_summary = store.read_summary(pipeline_keys.features, key)
            target = pipeline.target_column
            if features_summary is not None and features_summary.null_counts.get(target) == features_summary.rows:
                # No label has arrived: nothing to match, so the rows need not be read.
                realized = RealizedAccuracy(store.row_count(pipeline_keys.batch_predictions, key), 0, {})
                read_from = "features summary (no labels yet)"
            else:
                # Only what matching and the metrics use: the row identity, the label, the predictions.
                names = store.read_schema(pipeline_keys.batch_predictions, key).names
                predicted = [c for c in names if c == PREDICTION_COLUMN or c.startswith(f"{PROBABILITY_COLUMN}_")]
                if target in names and store.derived_from_current(pipeline_keys.batch_predictions, pipeline_keys.features, key):
                    # The features have not changed since they were scored: the predictions hold
                    # their rows, in order, with the labels they hold now. When the features'
                    # summary lists the rows of each repeated identity (none, usually), the
                    # identity columns need not be read or hashed.
                    repeats = features_summary.key_repeats if features_summary is not None else None
                    groups = repeats.groups if repeats is not None and repeats.columns == identity else None
                    columns = [*predicted, target] if groups is not None else [*identity, *predicted, target]
                    own = store.iter_frames(pipeline_keys.batch_predictions, key, columns=columns)
                    realized = realized_accuracy_of_own_labels(own, pipeline, spec.steps, repeated_identities=groups)
                    read_from = (
                        "batch_predictions (features unchanged since scoring, identities from the features summary)"
                        if groups is not None
                        else "batch_predictions (features unchanged since scoring)"
                    )
                else:
                    scored = store.iter_frames(pipeline_keys.batch_predictions, key, columns=[*identity, *predicted])
                    features = store.iter_frames(pipeline_keys.features, key, columns=list(dict.fromkeys([*identity, target])))
                    realized = realized_accuracy(scored, features, pipeline, spec.steps)
                    read_from = "batch_predictions matched to features"
            metadata: dict[str, Any] = {
                "read_from": MetadataValue.text(read_from),
                "scored_rows": realized.scored_rows,
                "labelled_rows": realized.labelled_rows,
                **{f"realized_{m}": MetadataValue.float(v) for m, v in realized.metrics.items()},
            }
            if not realized.labelled_rows:
                return Finding(True, f"no labels yet for the {realized.scored_rows} scored rows", metadata)
            missed = [
                f"{m} = {realized.metrics[m]:.4g} (gate {'>=' if higher[m] else '<='} {bound:g})"
                for m, threshold in criteria.items()
                for bound in [threshold.min if higher[m] else threshold.max]
                if bound is not None and not (
                    realized.metrics[m] >= bound if higher[m] else realized.metrics[m] <= bound
                )
            ]
            primary = pipeline.metric
            summary = f"{realized.labelled_rows} of {realized.scored_rows} scored rows labelled; realized {primary} = {realized.metrics[primary]:.4g}"
            return Finding(not missed, f"{summary}; missed: {missed}" if missed else summary, metadata)

        return evaluate(partition_keys_of(context), "predictions_realized_accuracy", AssetCheckSeverity.WARN, finding)

    return predictions_realized_accuracy


def build_asset_checks(spec: LoadedSpec) -> list[AssetChecksDefinition]:
    # Per-partition check results are a preview feature of Dagster 1.13; tabml relies on it on
    # purpose, so the notice would only repeat on every load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return [
            build_raw_data_checks(spec),
            build_features_checks(spec),
            build_batch_predictions_checks(spec),
            *build_drift_checks(spec),
            build_realized_accuracy_check(spec),
        ]
