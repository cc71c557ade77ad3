"""Asset jobs of one pipeline: what schedules, sensors and the UI launch."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from tabml_assets.dagster_compat import UnresolvedAssetJobDefinition
from tabml_assets.keys import (
    BATCH_PREDICTIONS,
    CHALLENGER_PREDICTIONS,
    CHAMPION_MODEL,
    END_TO_END_JOB,
    EVALUATION_REPORT,
    FEATURES,
    QUARANTINE,
    RAW_DATA,
    SCORING_JOB,
    TRAINED_MODEL,
    TRAINING_JOB,
    PipelineKeys,
)

# raw_data and its quarantine are made by one step, so they are selected together.
SCORING_ASSET_NAMES = (RAW_DATA, QUARANTINE, FEATURES, BATCH_PREDICTIONS)
TRAINING_ASSET_NAMES = (TRAINED_MODEL, EVALUATION_REPORT, CHAMPION_MODEL)
# Shadow scoring runs beside scoring, in the same job, after batch_predictions.
SHADOW_ASSET_NAMES = (CHALLENGER_PREDICTIONS,)


def build_jobs(keys: PipelineKeys) -> dict[str, UnresolvedAssetJobDefinition]:
    """The pipeline's jobs by their base name (`scoring_job`, ...); each is named for the project."""
    return {
        SCORING_JOB: define_asset_job(
            keys.job(SCORING_JOB),
            selection=AssetSelection.assets(*keys.assets(*SCORING_ASSET_NAMES, *SHADOW_ASSET_NAMES)),
            description=(
                f"{keys.project}: ingest, engineer features and score one day with the champion "
                "(and with the challenger in shadow, while one waits)."
            ),
        ),
        TRAINING_JOB: define_asset_job(
            keys.job(TRAINING_JOB),
            selection=AssetSelection.assets(*keys.assets(*TRAINING_ASSET_NAMES)),
            description=f"{keys.project}: train on the window ending at the partition, evaluate, gate and promote.",
        ),
        END_TO_END_JOB: define_asset_job(
            keys.job(END_TO_END_JOB),
            selection=AssetSelection.key_prefixes([keys.project]),
            description=f"{keys.project}: the whole graph for one day: ingest, features, train, evaluate, promote, score.",
        ),
    }
