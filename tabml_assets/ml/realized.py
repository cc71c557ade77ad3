"""Realized accuracy: the stored predictions of a day against the labels that arrived since.

Scoring rows usually carry no label. When the day is re-ingested with its labels, its feature
rows hold the target; matched to the predictions by row identity (the dataset's unique key,
else the event time and the model inputs), they give the metrics the model really reached.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from tabml_assets.ml.metrics import Predictions, metrics_for
from tabml_assets.ml.scoring import PREDICTION_COLUMN, PROBABILITY_COLUMN
from tabml_assets.ml.training import label_array, target_values
from tabml_assets.spec import PipelineSpec
from tabml_assets.steps import ProjectSteps


@dataclass(frozen=True)
class RealizedAccuracy:
    """How many scored rows have a label now, and the metrics of their predictions."""

    scored_rows: int
    labelled_rows: int
    metrics: dict[str, float]


def identity_columns(pipeline: PipelineSpec) -> list[str]:
    """What identifies a row across re-ingestion: the unique key, else the time and the inputs."""
    if pipeline.dataset.unique_key:
        return [pipeline.event_time, *(c for c in pipeline.dataset.unique_key if c != pipeline.event_time)]
    return [pipeline.event_time, *pipeline.feature_columns]


def class_of_column(name: str, labels: dict[str, object]) -> object:
    """`probability_<class>` -> the class as the labels hold it (True, 3, "late")."""
    text = name.removeprefix(f"{PROBABILITY_COLUMN}_")
    return labels.get(text, text)


def stored_predictions(scored: pd.DataFrame, pipeline: PipelineSpec, target: pd.Series) -> Predictions:
    if pipeline.task == "regression":
        return Predictions(scored[PREDICTION_COLUMN].to_numpy(dtype="float64"))
    columns = [c for c in scored.columns if c.startswith(f"{PROBABILITY_COLUMN}_")]
    # Column names carry the classes as text; the labels seen give them back their type.
    seen = [*target.astype("object").tolist(), *scored[PREDICTION_COLUMN].astype("object").tolist()]
    labels = {str(label): label for label in seen}
    classes = tuple(class_of_column(c, labels) for c in columns)
    return Predictions(
        label_array(scored[PREDICTION_COLUMN]),
        scored[columns].to_numpy(dtype="float64"),
        classes,
    )


def realized_accuracy(
    scored: pd.DataFrame, features: pd.DataFrame, pipeline: PipelineSpec, steps: ProjectSteps
) -> RealizedAccuracy:
    """The day's predictions scored against the labels its feature rows hold now."""
    target = pipeline.target_column
    identity = identity_columns(pipeline)
    labels = features.loc[features[target].notna(), [*identity, target]].drop_duplicates(identity, keep="last")
    matched = scored.drop(columns=[target], errors="ignore").merge(labels, on=identity, how="inner")
    if matched.empty:
        return RealizedAccuracy(len(scored), 0, {})
    y_true = matched[target]
    values = target_values(matched, pipeline)
    predictions = stored_predictions(matched, pipeline, y_true)
    metrics = metrics_for(pipeline.task, values, predictions, pipeline.target.positive_class, steps.metrics)
    return RealizedAccuracy(len(scored), len(matched), metrics)
