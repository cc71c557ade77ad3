"""The shipped taxi example on real data: the Databricks NYC-taxi sample, January -> February 2016.

    python -m benchmarks.real_taxi [--sample PATH]

tabml side: the dev deployment's nyc_taxi project exactly as shipped, except for its dates (the
partitions start on 2016-01-01 and the training window is the whole of January, 31 days). The
sample is landed as one parquet file per UTC day; raw_data -> features for every day, then
trained_model -> evaluation_report -> champion_model on 2016-01-31, then batch_predictions for
every February day. The February predictions are scored against their fares.

Reference: the plain script a data scientist would write, the same six columns from the same
validated rows (the template's own filter), `HistGradientBoostingRegressor()` with its defaults,
fitted on all of January and scored on February.

The sample is not part of the project (`../shared/reference/nyctaxi_2016_sample.parquet`); the
section reports that it was skipped when the file is absent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import workspace as ws

SAMPLE_NAME = Path("shared") / "reference" / "nyctaxi_2016_sample.parquet"
# ../shared beside the checkout; a git worktree in wt/<branch> finds it one level further up.
DEFAULT_SAMPLE = next(
    (p / SAMPLE_NAME for p in Path(__file__).absolute().parents[2:4] if (p / SAMPLE_NAME).exists()),
    Path(__file__).absolute().parents[2] / SAMPLE_NAME,
)
TRAINING_DAY = dt.date(2016, 1, 31)
FIRST_DAY = dt.date(2016, 1, 1)
LAST_DAY = dt.date(2016, 2, 29)
TARGET_RMSE = 3.29  # the plain script's figure in the issue that asked for this section


def scores(predictions: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """RMSE and MAE, and how much of the squared error the 5 worst trips carry: on this sample
    most of February's RMSE is a handful of fares (one $275 trip alone is over half), so RMSE
    differences of a few hundredths are one trip's luck, where MAE moves with every trip."""
    errors = np.asarray(predictions, dtype="float64") - np.asarray(truth, dtype="float64")
    squared = np.sort(errors**2)[::-1]
    return {
        "rmse": float(np.sqrt(np.mean(squared))), "mae": float(np.mean(np.abs(errors))), "rows": len(errors),
        "worst_5_share_of_squared_error": float(squared[:5].sum() / squared.sum()),
        "rmse_without_worst_5": float(np.sqrt(np.mean(squared[5:]))),
    }


def land_sample_by_day(sample: pd.DataFrame, folder: Path, event_time: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    days = pd.to_datetime(sample[event_time]).dt.date
    for day in sorted(days.unique()):
        sample[days == day].to_parquet(folder / f"nyctaxi_{day}.parquet", index=False)
    return int(days.nunique())


def run_tabml(sample: pd.DataFrame, root: Path) -> dict[str, Any]:
    from dagster import DagsterInstance

    from tabml_assets.definitions import build_definitions
    from tabml_assets.resources import build_partition_store
    from tabml_assets.seed import run_selection
    from tabml_assets.spec import load_deployment

    workspace = ws.create_workspace(root, "real_taxi", profile_overrides={"projects": ["../examples/nyc_taxi"]})
    project_profile = workspace.conf_dir.parent / "examples" / "nyc_taxi" / "profiles" / "dev.yaml"
    project_profile.write_text(
        "pipeline_overrides:\n"
        f"  partitions: {{start_date: '{FIRST_DAY}'}}\n"
        f"  training_window_days: {(TRAINING_DAY - FIRST_DAY).days + 1}\n"
    )
    deployment = load_deployment(ws.DEPLOYMENT, conf_dir=workspace.conf_dir, tabml_home=workspace.home)
    spec = deployment.projects[0]
    keys, pipeline = spec.keys, spec.pipeline
    landed_days = land_sample_by_day(sample, spec.landing_folder(), pipeline.event_time)
    defs = build_definitions(deployment)
    seconds: dict[str, float] = {}
    with DagsterInstance.ephemeral() as instance:
        start = time.perf_counter()
        run_selection(defs, instance, keys.assets("raw_data", "features"), partition_range=(str(FIRST_DAY), str(LAST_DAY)))
        seconds["ingest"] = time.perf_counter() - start
        start = time.perf_counter()
        run_selection(
            defs, instance, keys.assets("trained_model", "evaluation_report", "champion_model"),
            partition_key=str(TRAINING_DAY),
        )
        seconds["train_evaluate_promote"] = time.perf_counter() - start
        start = time.perf_counter()
        first_scored = TRAINING_DAY + dt.timedelta(days=1)
        run_selection(defs, instance, keys.assets("batch_predictions"), partition_range=(str(first_scored), str(LAST_DAY)))
        seconds["score_february"] = time.perf_counter() - start
    store = build_partition_store(spec)
    days = [str(first_scored + dt.timedelta(days=i)) for i in range((LAST_DAY - first_scored).days + 1)]
    scored = pd.concat(
        [store.read_frame(keys.batch_predictions, d) for d in days if store.exists(keys.batch_predictions, d)],
        ignore_index=True,
    )
    report = store.read_record(keys.evaluation_report, str(TRAINING_DAY))
    return {
        "february": scores(scored["prediction"].to_numpy(), scored[pipeline.target_column].to_numpy()),
        "landed_days": landed_days,
        "estimator": pipeline.estimator.model_dump(by_alias=True),
        "refit_on_validation": pipeline.split.refit_on_validation,
        "early_stopping_rounds": pipeline.split.early_stopping_rounds,
        "categorical": pipeline.categorical_columns,
        "test_split_rmse": report["challenger"]["metrics"]["rmse"],
        "seconds": seconds,
    }


def run_reference(sample: pd.DataFrame) -> dict[str, Any]:
    """The plain script: the template's filter, six columns, HistGradientBoostingRegressor()."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    frame = sample.copy()
    pickup, dropoff = pd.to_datetime(frame["tpep_pickup_datetime"]), pd.to_datetime(frame["tpep_dropoff_datetime"])
    frame = frame.assign(
        trip_duration_minutes=(dropoff - pickup).dt.total_seconds() / 60,
        pickup_hour=pickup.dt.hour, pickup_weekday=pickup.dt.weekday,
    )
    keep = (
        frame["trip_distance"].between(0, 400, inclusive="neither")
        & frame["fare_amount"].between(0, 1000, inclusive="neither")
        & (dropoff >= pickup)
    )
    frame = frame[keep]
    columns = ["trip_distance", "trip_duration_minutes", "pickup_hour", "pickup_weekday", "pickup_zip", "dropoff_zip"]
    january = frame[pd.to_datetime(frame["tpep_pickup_datetime"]) < pd.Timestamp("2016-02-01")]
    february = frame[pd.to_datetime(frame["tpep_pickup_datetime"]) >= pd.Timestamp("2016-02-01")]
    model = HistGradientBoostingRegressor().fit(january[columns], january["fare_amount"])
    return {"february": scores(model.predict(february[columns]), february["fare_amount"].to_numpy())}


def measure(root: Path, sample_path: Path = DEFAULT_SAMPLE) -> dict[str, Any]:
    if not sample_path.exists():
        return {"skipped": f"{sample_path} not found (the real sample lives in ../shared/reference)"}
    sample = pd.read_parquet(sample_path)
    tabml = run_tabml(sample, root)
    reference = run_reference(sample)
    return {
        "sample": str(sample_path),
        "tabml": tabml,
        "reference": reference,
        "target_rmse_max": TARGET_RMSE,
        "met": tabml["february"]["rmse"] <= TARGET_RMSE,
    }


def main(argv: list[str] | None = None) -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tabml-real-taxi-") as root:
        result = measure(Path(root), args.sample)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
