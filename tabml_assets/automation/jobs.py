"""Asset jobs: what schedules, sensors and the UI launch."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

SCORING_ASSETS = AssetSelection.assets("raw_data", "features", "batch_predictions")
TRAINING_ASSETS = AssetSelection.assets("trained_model", "evaluation_report", "champion_model")


def build_jobs() -> list[UnresolvedAssetJobDefinition]:
    return [
        define_asset_job(
            "scoring_job",
            selection=SCORING_ASSETS,
            description="Ingest, engineer features and score one day with the champion.",
        ),
        define_asset_job(
            "training_job",
            selection=TRAINING_ASSETS,
            description="Train on the window ending at the partition, evaluate, gate and promote.",
        ),
        define_asset_job(
            "end_to_end_job",
            selection=AssetSelection.all(),
            description="The whole graph for one day: ingest, features, train, evaluate, promote, score.",
        ),
    ]
