"""The tabml asset graph: raw_data -> features -> trained_model -> evaluation_report ->
champion_model, features -> batch_predictions (scored by the current champion), and
batch_predictions -> challenger_predictions (the challenger in shadow)."""

from __future__ import annotations

from dagster import AssetsDefinition

from tabml_assets.assets.checks import build_asset_checks
from tabml_assets.assets.evaluation import build_evaluation_assets
from tabml_assets.assets.features import build_features_asset
from tabml_assets.assets.predictions import build_batch_predictions_asset
from tabml_assets.assets.raw import build_raw_data_asset
from tabml_assets.assets.shadow import build_challenger_predictions_asset
from tabml_assets.assets.training import build_trained_model_asset
from tabml_assets.spec import LoadedSpec

__all__ = ["build_asset_checks", "build_assets"]


def build_assets(spec: LoadedSpec) -> list[AssetsDefinition]:
    return [
        build_raw_data_asset(spec),
        build_features_asset(spec),
        build_trained_model_asset(spec),
        *build_evaluation_assets(spec),
        build_batch_predictions_asset(spec),
        build_challenger_predictions_asset(spec),
    ]
