"""Feature engineering as scikit-learn transformers.

`TripFeatureBuilder` is stateless (raw trips -> engineered columns) and runs in the `features`
asset. `build_preprocessor` returns the fitted-at-training-time part (zip codes as categories,
scaling for linear models); it lives inside the model pipeline, so it travels with the model
into scoring.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from tabml_assets.ml.schema import DROPOFF, PICKUP, RAW_COLUMNS

# Columns the features asset keeps beside the model inputs: the row's time (for partitioning
# and drift) and the target.
FEATURE_KEY_COLUMNS: list[str] = [PICKUP]
ENGINEERED_COLUMNS: list[str] = [
    "trip_distance",
    "trip_duration_minutes",
    "pickup_hour",
    "pickup_weekday",
    "pickup_zip",
    "dropoff_zip",
]


class MissingColumnsError(KeyError):
    """A frame lacks columns a step needs; the message names them and what was found."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingColumnsError(
            f"{what}: missing columns {missing}; expected {columns}, found {list(frame.columns)}"
        )


class TripFeatureBuilder(BaseEstimator, TransformerMixin):
    """Derive pickup hour and weekday and trip duration from raw trips; stateless."""

    def __init__(self, target_column: str = "fare_amount") -> None:
        self.target_column = target_column

    def fit(self, frame: pd.DataFrame, y: object = None) -> TripFeatureBuilder:
        require_columns(frame, RAW_COLUMNS, "TripFeatureBuilder.fit")
        self.n_features_in_ = frame.shape[1]
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        require_columns(frame, [c for c in RAW_COLUMNS if c != self.target_column], "raw trips")
        pickup = pd.to_datetime(frame[PICKUP])
        dropoff = pd.to_datetime(frame[DROPOFF])
        out = pd.DataFrame(
            {
                PICKUP: pickup,
                "trip_distance": frame["trip_distance"].astype("float64"),
                "trip_duration_minutes": (dropoff - pickup).dt.total_seconds() / 60.0,
                "pickup_hour": pickup.dt.hour.astype("int64"),
                "pickup_weekday": pickup.dt.weekday.astype("int64"),
                "pickup_zip": frame["pickup_zip"].astype("int64"),
                "dropoff_zip": frame["dropoff_zip"].astype("int64"),
            },
            index=frame.index,
        )
        if self.target_column in frame.columns:
            out[self.target_column] = frame[self.target_column].astype("float64")
        return out.reset_index(drop=True)


def build_features(raw: pd.DataFrame, target_column: str) -> pd.DataFrame:
    """Raw trips -> engineered feature rows (with the target where present)."""
    return TripFeatureBuilder(target_column=target_column).fit_transform(raw)


def build_preprocessor(
    feature_columns: list[str], categorical_columns: list[str], tree_model: bool
) -> ColumnTransformer:
    """The fitted preprocessing: zip codes as categories; scaling for linear models."""
    numeric = [c for c in feature_columns if c not in categorical_columns]
    if tree_model:
        # Ordinal codes feed HistGradientBoosting's native categorical splits; an unseen zip
        # becomes NaN, which the trees route like a missing value instead of failing.
        categorical = OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=np.nan, dtype="float64"
        )
        numeric_step: object = "passthrough"
    else:
        categorical = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        numeric_step = StandardScaler()
    return ColumnTransformer(
        [("categories", categorical, categorical_columns), ("numeric", numeric_step, numeric)],
        remainder="drop",
        verbose_feature_names_out=False,
    )
