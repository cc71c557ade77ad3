"""Realized accuracy matched batch by batch gives what a merge of the whole day gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tabml_assets.ml.realized import (
    identity_columns,
    last_labelled_row_of_identity,
    realized_accuracy,
    realized_accuracy_of_own_labels,
)
from tabml_assets.ml.scoring import PREDICTION_COLUMN
from tabml_assets.spec import PipelineSpec, load_spec


def test_batches_match_labels_like_a_merge_of_the_whole_day() -> None:
    spec = load_spec("test")  # nyc_taxi: no unique key, so rows are identified by time and inputs
    pipeline = spec.pipeline
    identity = identity_columns(pipeline)
    target = pipeline.target_column
    rng = np.random.default_rng(0)
    rows = 3000
    features = pd.DataFrame({
        column: rng.integers(0, 40, rows).astype("float64") for column in identity if column != pipeline.event_time
    })
    features.insert(0, pipeline.event_time, pd.Timestamp("2026-03-01") + pd.to_timedelta(rng.integers(0, 86_400, rows), unit="s"))
    features[target] = rng.normal(12, 3, rows)
    features.loc[rng.random(rows) < 0.3, target] = np.nan  # not every label has arrived
    scored = features[identity].copy()
    scored[PREDICTION_COLUMN] = features[target].fillna(12) + rng.normal(0, 1, rows)
    # A re-ingested row: the later label of the same identity wins.
    features = pd.concat([features, features.iloc[[5]].assign(**{target: 99.0})], ignore_index=True)

    whole = realized_accuracy(scored, features, pipeline, spec.steps)
    batches = realized_accuracy(
        (scored.iloc[i : i + 700] for i in range(0, rows, 700)),
        (features.iloc[i : i + 500] for i in range(0, len(features), 500)),
        pipeline, spec.steps,
    )
    labels = features[features[target].notna()].drop_duplicates(identity, keep="last")
    merged = scored.merge(labels[[*identity, target]], on=identity, how="inner")
    assert whole.scored_rows == batches.scored_rows == rows
    assert whole.labelled_rows == batches.labelled_rows == len(merged)
    expected_rmse = float(np.sqrt(np.mean((merged[PREDICTION_COLUMN] - merged[target]) ** 2)))
    assert np.isclose(whole.metrics["rmse"], expected_rmse) and np.isclose(batches.metrics["rmse"], expected_rmse)


def test_a_day_without_labels_matches_nothing() -> None:
    spec = load_spec("test")
    pipeline = spec.pipeline
    identity = identity_columns(pipeline)
    frame = pd.DataFrame({c: [1.0, 2.0] for c in identity if c != pipeline.event_time})
    frame.insert(0, pipeline.event_time, pd.Timestamp("2026-03-01"))
    scored = frame.assign(**{PREDICTION_COLUMN: [3.0, 4.0]})
    unlabelled = frame.assign(**{pipeline.target_column: [np.nan, np.nan]})
    realized = realized_accuracy(scored, unlabelled, pipeline, spec.steps)
    assert (realized.scored_rows, realized.labelled_rows, realized.metrics) == (2, 0, {})


def test_each_row_takes_the_last_label_of_its_identity() -> None:
    hashes = np.array([5, 3, 5, 3, 7, 5], dtype="uint64")
    labelled = np.array([True, False, True, False, False, False])
    # Identity 5: rows 0 and 2 labelled, the later wins for all three; 3 and 7 have none.
    assert last_labelled_row_of_identity(hashes, labelled).tolist() == [2, -1, 2, -1, -1, 2]
    assert last_labelled_row_of_identity(np.array([], dtype="uint64"), np.array([], dtype=bool)).tolist() == []
    # Every identity once: each row's own label, or none.
    assert last_labelled_row_of_identity(np.array([9, 4, 6], dtype="uint64"), np.array([True, False, True])).tolist() == [0, -1, 2]


def test_last_label_of_identity_agrees_with_a_plain_scan_of_the_rows() -> None:
    # Days with no repeats, a few, and many (the repeated identities are the only ones sorted).
    rng = np.random.default_rng(7)
    for rows, identities in ((1000, 10**9), (1000, 990), (1000, 40), (1, 1), (2, 1)):
        hashes = rng.integers(0, identities, rows).astype("uint64")
        labelled = rng.random(rows) < 0.6
        last: dict[int, int] = {}
        for row, (identity, has_label) in enumerate(zip(hashes.tolist(), labelled.tolist(), strict=True)):
            if has_label:
                last[identity] = row
        expected = [last.get(identity, -1) for identity in hashes.tolist()]
        assert last_labelled_row_of_identity(hashes, labelled).tolist() == expected


def day_of_features(pipeline: PipelineSpec, rows: int, rng: np.random.Generator, *, repeat_identities: bool) -> pd.DataFrame:
    """A day's feature rows, 40 % of them without a label. With `repeat_identities`, few
    distinct times and inputs: many rows share an identity, some with different labels."""
    inputs = [c for c in identity_columns(pipeline) if c != pipeline.event_time]
    if repeat_identities:
        features = pd.DataFrame({column: rng.integers(0, 3, rows).astype("float64") for column in inputs})
        offsets = pd.to_timedelta(rng.integers(0, 3, rows), unit="h")
    else:
        features = pd.DataFrame({column: rng.normal(size=rows) for column in inputs})
        offsets = pd.to_timedelta(np.arange(rows), unit="s")
    features.insert(0, pipeline.event_time, pd.Timestamp("2026-03-01") + offsets)
    features[pipeline.target_column] = rng.normal(12, 3, rows)
    features.loc[rng.random(rows) < 0.4, pipeline.target_column] = np.nan
    return features


@pytest.mark.parametrize("repeat_identities", [True, False])
def test_predictions_with_their_own_labels_give_what_matching_to_the_features_gives(repeat_identities: bool) -> None:
    spec = load_spec("test")
    pipeline = spec.pipeline
    identity = identity_columns(pipeline)
    target = pipeline.target_column
    rng = np.random.default_rng(1)
    rows = 2000
    features = day_of_features(pipeline, rows, rng, repeat_identities=repeat_identities)
    # The predictions file as scoring writes it: every feature row, in order, with its columns.
    scored = features.assign(**{PREDICTION_COLUMN: rng.normal(12, 3, rows)})
    assert (scored.duplicated(identity).sum() > 100) if repeat_identities else not scored.duplicated(identity).any()

    matched = realized_accuracy(scored.drop(columns=[target]), features, pipeline, spec.steps)
    own = realized_accuracy_of_own_labels((scored.iloc[i : i + 300] for i in range(0, rows, 300)), pipeline, spec.steps)
    assert (own.scored_rows, own.labelled_rows) == (matched.scored_rows, matched.labelled_rows) == (rows, own.labelled_rows)
    assert 0 < own.labelled_rows < rows
    assert own.metrics == matched.metrics

    # The rows of each repeated identity, as the features' summary lists them (none, for a day
    # of distinct identities): the same answer from the predictions and labels alone.
    groups = [list(g) for g in scored.groupby(identity).indices.values() if len(g) > 1]
    assert bool(groups) == repeat_identities
    listed = realized_accuracy_of_own_labels(
        (scored[[PREDICTION_COLUMN, target]].iloc[i : i + 300] for i in range(0, rows, 300)),
        pipeline, spec.steps, repeated_identities=groups,
    )
    assert (listed.labelled_rows, listed.metrics) == (matched.labelled_rows, matched.metrics)


def test_own_labels_of_a_nullable_boolean_target_match_like_the_features(tmp_path) -> None:
    """A classifier's label column of booleans with NA (the flights example's `late`)."""
    from tabml_assets.ml.scoring import probability_column
    from tabml_assets.spec import load_deployment

    spec = load_deployment("test", tabml_home=tmp_path).project("nyc_flights")
    pipeline = spec.pipeline
    identity = identity_columns(pipeline)
    target = pipeline.target_column
    rng = np.random.default_rng(2)
    rows = 1500
    features = pd.DataFrame({
        column: rng.integers(0, 1000, rows) for column in identity if column != pipeline.event_time
    })
    features.insert(0, pipeline.event_time, pd.Timestamp("2026-03-01") + pd.to_timedelta(rng.integers(0, 86_400, rows), unit="s"))
    late = pd.array(rng.random(rows) < 0.3, dtype="boolean")
    late[rng.random(rows) < 0.5] = pd.NA  # not every flight has landed
    features[target] = late
    probability = rng.random(rows)
    scored = features.assign(**{
        PREDICTION_COLUMN: probability > 0.5,
        probability_column(False): 1 - probability,
        probability_column(True): probability,
    })

    matched = realized_accuracy(scored.drop(columns=[target]), features, pipeline, spec.steps)
    own = realized_accuracy_of_own_labels((scored.iloc[i : i + 400] for i in range(0, rows, 400)), pipeline, spec.steps)
    assert 0 < own.labelled_rows == matched.labelled_rows < rows
    assert "roc_auc" in own.metrics and own.metrics == matched.metrics
