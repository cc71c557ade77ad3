"""Training one window on Spark (xgboost.spark, pyspark local mode) against the same XGBoost
fit in one process, on the same feature files.

Both sides run tabml's own training functions in a fresh process each: the chronological
split, the fitted preprocessing, the fit on train and the refit on train + validation
(`fit_window_on_spark` and `fit_window`). The in-process side reads the window's files into
one DataFrame and fits `XGBRegressor`; the Spark side reads them with Spark and fits
`SparkXGBRegressor` with one worker per core. Same XGBoost parameters; rows/s is the window's
rows over the fit's seconds (file reading included on both sides). The Spark session is
started before the timed fit, as on a cluster, and its start is reported beside the figure.

On one machine this measures what distribution costs, not what it buys: the point of the Spark
fit is the window that does not fit in the driver's memory (tested in
tabml_assets_tests/test_spark_training.py), which the in-process fit cannot train at all.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import workspace as ws

if TYPE_CHECKING:
    from benchmarks.run import Bench, Measurement

PARAMS: dict[str, Any] = {"n_estimators": 100, "max_depth": 6, "learning_rate": 0.1, "random_state": 0}


def window_files(folder: Path, rows: int, days: int) -> list[Path]:
    """The taxi example's demo trips through its build_features, one parquet file per day."""
    from tabml_assets.ml.features import FeatureTable, build_features
    from tabml_assets.spec import load_spec

    spec = load_spec(ws.DEPLOYMENT)
    assert spec.steps.demo_rows is not None
    folder.mkdir(parents=True, exist_ok=True)
    per_day = -(-rows // days)
    paths = []
    for offset in range(days):
        day = ws.TRAINING_DAY - dt.timedelta(days=days - 1 - offset)
        path = folder / f"{day}.parquet"
        if not path.exists():
            raw = spec.steps.demo_rows(day, per_day)
            build_features(raw, table=FeatureTable.of(spec.pipeline), derive=spec.steps.build_features).to_parquet(
                path, index=False
            )
        paths.append(path)
    return paths


def measure(bench: Bench) -> dict[str, Any]:
    from benchmarks.run import ratio, summarize
    from tabml_assets.spec import load_spec

    rows = bench.sizes.spark_training_rows
    days = load_spec(ws.DEPLOYMENT).pipeline.training_window_days
    files = [str(p) for p in window_files(bench.work / "spark_training_window", rows, days)]
    cores = len(os.sched_getaffinity(0))
    master = f"local[{cores}]"
    common = {"deployment": ws.DEPLOYMENT, "files": files}
    spark_runs: list[Measurement] = []
    process_runs: list[Measurement] = []
    for repeat in range(bench.sizes.repeats):
        spark_runs.append(bench.run(
            "tabml_fit_window",
            {**common, "estimator_class": "SparkXGBRegressor", "params": {**PARAMS, "num_workers": cores},
             "spark_master": master},
            profile="spark_training_spark" if repeat == 0 else None,
        ))
        process_runs.append(bench.run(
            "tabml_fit_window",
            {**common, "estimator_class": "XGBRegressor", "params": {**PARAMS, "n_jobs": cores}},
            profile="spark_training_process" if repeat == 0 else None,
        ))
    spark_rate = summarize(spark_runs, lambda m: m.result["rows"] / m.result["seconds"])
    process_rate = summarize(process_runs, lambda m: m.result["rows"] / m.result["seconds"])
    return {
        "master": master,
        "rows": summarize(spark_runs, lambda m: m.result["rows"])["median"],
        "days": days,
        "params": PARAMS,
        "spark_rows_per_second": spark_rate,
        "process_rows_per_second": process_rate,
        "ratio": ratio(spark_rate["median"], process_rate["median"]),
        "spark_seconds": summarize(spark_runs, lambda m: m.result["seconds"]),
        "process_seconds": summarize(process_runs, lambda m: m.result["seconds"]),
        "spark_session_start_seconds": summarize(spark_runs, lambda m: m.result["spark_session_seconds"]),
        "spark_fitted_rows": summarize(spark_runs, lambda m: m.result["fitted_rows"])["median"],
        "process_fitted_rows": summarize(process_runs, lambda m: m.result["fitted_rows"])["median"],
        "spark_validation_rmse": summarize(spark_runs, lambda m: m.result["validation_rmse"])["median"],
        "process_validation_rmse": summarize(process_runs, lambda m: m.result["validation_rmse"])["median"],
        "spark_peak_rss_mib": summarize(spark_runs, lambda m: m.peak_rss_mib),
        "process_peak_rss_mib": summarize(process_runs, lambda m: m.peak_rss_mib),
    }
