"""The feature table and the fitted preprocessing, for any project.

`build_features` runs in the `features` asset, batch by batch: the project's own row-level
`build_features` (from its steps module) derives columns, and tabml keeps the event time, the
model inputs and the target (null where the label is not known yet) in fixed dtypes, so every
batch of every day has the same schema. `build_preprocessor` returns the fitted-at-training-time
part (categories, scaling for linear models); it lives inside the model pipeline, so it travels
with the model into scoring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.types import pandas_dtype
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from tabml_assets.ml.schema import DTYPES, NULLABLE_DTYPES, as_text_objects
from tabml_assets.spec import PipelineSpec


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


@dataclass(frozen=True)
class FeatureTable:
    """The columns of a project's feature table and their dtypes (picklable, for Spark)."""

    event_time: str
    feature_columns: tuple[str, ...]
    target_column: str
    dtypes: tuple[tuple[str, str], ...]
    # The dataset's unique key where it is not already a model input: a row's identity, so
    # predictions can be matched with labels that arrive later.
    key_columns: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [self.event_time, *self.key_columns, *self.feature_columns, self.target_column]

    @classmethod
    def of(cls, pipeline: PipelineSpec) -> FeatureTable:
        types = pipeline.feature_table_types()
        dtypes = {pipeline.event_time: DTYPES["datetime"]}
        kept = {pipeline.event_time, *pipeline.feature_columns, pipeline.target_column}
        keys = tuple(c for c in pipeline.dataset.unique_key or [] if c not in kept)
        for column in keys:
            nullable = pipeline.dataset.is_nullable(column)
            dtypes[column] = (NULLABLE_DTYPES if nullable else DTYPES)[types[column]]
        for column in pipeline.feature_columns:
            nullable = column in pipeline.dataset.columns and pipeline.dataset.is_nullable(column)
            dtypes[column] = (NULLABLE_DTYPES if nullable else DTYPES)[types[column]]
        # The target is null where the label has not arrived (scoring rows).
        dtypes[pipeline.target_column] = NULLABLE_DTYPES[types[pipeline.target_column]]
        if types[pipeline.target_column] == "integer" and pipeline.task == "regression":
            dtypes[pipeline.target_column] = "float64"
        return cls(
            event_time=pipeline.event_time,
            feature_columns=tuple(pipeline.feature_columns),
            target_column=pipeline.target_column,
            dtypes=tuple(dtypes.items()),
            key_columns=keys,
        )


def build_features(
    raw: pd.DataFrame,
    table: FeatureTable,
    derive: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Raw rows -> feature rows: the event time, the model inputs and the target where known."""
    frame = derive(raw) if derive is not None else raw
    if not isinstance(frame, pd.DataFrame) or len(frame) != len(raw):
        found = f"{len(frame)} rows" if isinstance(frame, pd.DataFrame) else type(frame).__name__
        raise ValueError(
            f"steps build_features: expected a DataFrame with one row per raw row ({len(raw)}), "
            f"found {found}"
        )
    kept = [table.event_time, *table.key_columns, *table.feature_columns]
    require_columns(frame, kept, "steps build_features output")
    if not frame.index.equals(pd.RangeIndex(len(frame))):
        frame = frame.reset_index(drop=True)
    columns: dict[str, pd.Series] = {}
    for column, dtype in table.dtypes:
        # Only the target may be absent: its label is not known yet (scoring rows).
        values = frame[column] if column in frame.columns else pd.Series(pd.NA, index=frame.index)
        try:
            if dtype == "object":
                values = as_text_objects(values)
            elif values.dtype != pandas_dtype(dtype):
                # A column already in its dtype is kept as it is: casting would only copy it.
                values = values.astype(pandas_dtype(dtype))
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"feature column {column!r}: expected values of dtype {dtype}, found "
                f"{values.dtype} ({exc})"
            ) from None
        columns[column] = values
    # Built once from the typed columns, in the table's order (dtypes follow `columns`).
    return pd.DataFrame(columns)


def build_preprocessor(
    feature_columns: list[str], categorical_columns: list[str], tree_model: bool
) -> ColumnTransformer:
    """The fitted preprocessing: categories as codes (trees) or one-hot (linear); scaling for linear models."""
    numeric = [c for c in feature_columns if c not in categorical_columns]
    if tree_model:
        # Ordinal codes feed the trees' native categorical splits; an unseen category becomes
        # NaN, which the trees route like a missing value instead of failing.
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
