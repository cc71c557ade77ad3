"""Batch scoring: pure functions over a frame and a fitted pipeline."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from tabml_assets.ml.features import require_columns

PREDICTION_COLUMN = "prediction"
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


def score_frame(
    frame: pd.DataFrame,
    model: Pipeline,
    feature_columns: list[str],
    model_name: str,
    model_version: str,
    scored_at: dt.datetime,
) -> pd.DataFrame:
    """The input rows with one prediction each, and which model produced it and when."""
    require_columns(frame, feature_columns, "scoring input")
    scored = frame.copy()
    scored[PREDICTION_COLUMN] = predict_in_chunks(model, frame[feature_columns])
    scored["model_name"] = model_name
    scored["model_version"] = model_version
    scored["scored_at"] = pd.Timestamp(scored_at).tz_localize(None) if pd.Timestamp(scored_at).tzinfo else pd.Timestamp(scored_at)
    return scored
