"""Asset, group, job, sensor, schedule and resource names of one pipeline: the only place they
are defined and built.

Each project is its own pipeline in the one code location, so every name carries the project:
asset keys are prefixed (`nyc_taxi/raw_data`), groups, jobs and sensors start with it, and the
project's own resources (its data source and its MLflow registry) are keyed by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dagster import AssetKey

RAW_DATA = "raw_data"
QUARANTINE = "raw_data_quarantine"
FEATURES = "features"
TRAINED_MODEL = "trained_model"
EVALUATION_REPORT = "evaluation_report"
CHAMPION_MODEL = "champion_model"
BATCH_PREDICTIONS = "batch_predictions"
ASSET_NAMES = (RAW_DATA, FEATURES, TRAINED_MODEL, EVALUATION_REPORT, CHAMPION_MODEL, BATCH_PREDICTIONS)
# Shadow scoring by the challenger, beside the pipeline: never read by consumers of batch_predictions.
CHALLENGER_PREDICTIONS = "challenger_predictions"

# Jobs, sensors and schedules by their base name; PipelineKeys prefixes each with the project.
SCORING_JOB = "scoring_job"
TRAINING_JOB = "training_job"
END_TO_END_JOB = "end_to_end_job"
ROLLBACK_JOB = "rollback_job"
LANDING_SENSOR = "landing_sensor"
CHAMPION_SENSOR = "champion_sensor"
RETRAINING_SENSOR = "retraining_sensor"
SCORING_LINEAGE_SENSOR = "scoring_lineage_sensor"
SHADOW_PROMOTION_SENSOR = "shadow_promotion_sensor"
PREDICTIONS_FRESHNESS_SENSOR = "batch_predictions_freshness_sensor"
DAILY_SCORING_SCHEDULE = "daily_scoring_schedule"
RETRAINING_SCHEDULE = "retraining_schedule"
# The deployment's one alert on failed runs, for every pipeline: not prefixed.
RUN_FAILURE_SENSOR = "run_failure_alert_sensor"

# The asset groups of a pipeline, in the order data flows through them.
Stage = Literal["ingestion", "features", "training", "inference"]


@dataclass(frozen=True)
class PipelineKeys:
    """Every name of one project's pipeline."""

    project: str

    def asset(self, name: str) -> AssetKey:
        return AssetKey([self.project, name])

    @property
    def raw_data(self) -> AssetKey:
        return self.asset(RAW_DATA)

    @property
    def quarantine(self) -> AssetKey:
        return self.asset(QUARANTINE)

    @property
    def features(self) -> AssetKey:
        return self.asset(FEATURES)

    @property
    def trained_model(self) -> AssetKey:
        return self.asset(TRAINED_MODEL)

    @property
    def evaluation_report(self) -> AssetKey:
        return self.asset(EVALUATION_REPORT)

    @property
    def champion_model(self) -> AssetKey:
        return self.asset(CHAMPION_MODEL)

    @property
    def batch_predictions(self) -> AssetKey:
        return self.asset(BATCH_PREDICTIONS)

    @property
    def challenger_predictions(self) -> AssetKey:
        return self.asset(CHALLENGER_PREDICTIONS)

    def assets(self, *names: str) -> list[AssetKey]:
        return [self.asset(name) for name in names]

    def group(self, stage: Stage) -> str:
        """`ingestion`, `features`, `training` or `inference`, for this project."""
        return f"{self.project}_{stage}"

    def job(self, name: str) -> str:
        return f"{self.project}_{name}"

    def sensor(self, name: str) -> str:
        return f"{self.project}_{name}"

    def schedule(self, name: str) -> str:
        return f"{self.project}_{name}"

    @property
    def source_resource(self) -> str:
        """The project's data source (landing folder, demo rows, a table or its own loader)."""
        return f"{self.project}_source"

    @property
    def registry_resource(self) -> str:
        """The project's MLflow experiment and registered model."""
        return f"{self.project}_model_registry"

    @property
    def mlflow_resource(self) -> str:
        """dagster-mlflow's `mlflow_tracking` on the project's experiment, for a team's own steps."""
        return f"{self.project}_mlflow"
