"""Batch scoring: pure functions over a frame and a fitted pipeline."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from tabml_assets.ml.features import require_columns
from tabml_assets.ml.metrics import positive_class_probability, predict

PREDICTION_COLUMN = "prediction"
# Classification: the positive class's probability (binary); `probability_<class>` per class.
PROBABILITY_COLUMN = "probability"
# Chunks bound the scoring step's extra memory to one chunk's transformed matrix.
SCORING_CHUNK_ROWS = 250_000


def predict_in_chunks(model: Pipeline, inputs: pd.DataFrame, chunk_rows: int = SCORING_CHUNK_ROWS) -> np.ndarray:
    if len(inputs) == 0:
        return np.empty(0, dtype="float64")
    parts = [
        np.asarray(model.predict(inputs.iloc[start : start + chunk_rows]), dtype="float64")
        for start in range(0, len(inputs), chunk_rows)
    ]
    return np.concatenate(parts)


def probability_column(label: object) -> str:
    """The column holding the probability of one class, e.g. `probability_late`."""
    return f"{PROBABILITY_COLUMN}_{label}"


def score_frame(
    frame: pd.DataFrame,
    model: Pipeline,
    feature_columns: list[str],
    model_name: str,
    model_version: str,
    scored_at: dt.datetime,
    *,
    task: str = "regression",
    positive_class: object = None,
) -> pd.DataFrame:
    """The input rows with one prediction each, and which model produced it and when.

    Regression: `prediction`. Classification: `prediction` is the predicted label, with one
    `probability_<class>` column per class and, for a binary target, `probability` of the
    positive class (what thresholds, ranking and drift use).
    """
    require_columns(frame, feature_columns, "scoring input")
    scored = frame.copy()
    if task == "regression":
        scored[PREDICTION_COLUMN] = predict_in_chunks(model, frame[feature_columns])
    else:
        predictions = predict(model, frame[feature_columns], task)
        assert predictions.probabilities is not None and predictions.classes is not None
        scored[PREDICTION_COLUMN] = predictions.values
        if task == "binary":
            scored[PROBABILITY_COLUMN] = positive_class_probability(predictions, positive_class)
        for index, label in enumerate(predictions.classes):
            scored[probability_column(label)] = predictions.probabilities[:, index]
    scored["model_name"] = model_name
    scored["model_version"] = model_version
    scored["scored_at"] = pd.Timestamp(scored_at).tz_localize(None) if pd.Timestamp(scored_at).tzinfo else pd.Timestamp(scored_at)
    return scored
