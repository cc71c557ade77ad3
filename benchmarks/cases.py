"""The measured workloads, each run in a fresh process: `python -m benchmarks.cases NAME ARGS RESULT`.

A fresh process per case keeps peak RSS and warm caches (the registry's model cache, imported
modules) from leaking from one figure into the next. Imports happen inside each case, so the
bare-script cases never import Dagster or tabml.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROCESS_START = time.perf_counter()

Case = Callable[[dict[str, Any]], dict[str, Any]]
CASES: dict[str, Case] = {}


def case(function: Case) -> Case:
    CASES[function.__name__] = function
    return function


def _open_instance(dagster_home: Path) -> Any:
    from dagster import DagsterInstance

    return DagsterInstance.local_temp(str(dagster_home))


def _tabml_definitions(args: dict[str, Any]) -> tuple[Any, Any]:
    from benchmarks.workspace import Workspace
    from tabml_assets.definitions import build_definitions

    spec = Workspace.from_args(args).spec()
    return spec, build_definitions(spec)


def _materializations(result: Any, asset: Any) -> list[Any]:
    """The run's materializations of `asset` (an AssetKey), one per partition."""
    materializations = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    return [m for m in materializations if m.asset_key == asset]


def _row_count(result: Any, asset: Any) -> int:
    """Rows the run materialized for `asset` (an AssetKey), from its materialization metadata.

    A range run records the same metadata on each partition's materialization, with the run's
    total as dagster/row_count; its rows_per_partition gives each partition's own count.
    """
    total = 0
    for materialization in _materializations(result, asset):
        metadata = materialization.metadata
        if "rows_per_partition" in metadata:
            total += int(metadata["rows_per_partition"].value[materialization.partition])
        else:
            total += int(metadata["dagster/row_count"].value)
    return total


@case
def tabml_end_to_end(args: dict[str, Any]) -> dict[str, Any]:
    """The whole graph through tabml: ingest window + scoring day, train/evaluate/promote, score."""
    from tabml_assets.seed import run_selection

    start = time.perf_counter()
    spec, defs = _tabml_definitions(args)
    defs.get_repository_def()
    seconds = {"load_definitions": time.perf_counter() - start}
    keys = spec.keys
    first, training_day, scoring_day = args["first_day"], args["training_day"], args["scoring_day"]
    with _open_instance(Path(args["dagster_home"])) as instance:
        start = time.perf_counter()
        run_selection(defs, instance, keys.assets("raw_data", "features"), partition_range=(first, scoring_day))
        seconds["ingest"] = time.perf_counter() - start
        start = time.perf_counter()
        training = run_selection(
            defs, instance, keys.assets("trained_model", "evaluation_report", "champion_model"),
            partition_key=training_day,
        )
        seconds["train_evaluate_promote"] = time.perf_counter() - start
        start = time.perf_counter()
        scoring = run_selection(defs, instance, [keys.batch_predictions], partition_key=scoring_day)
        seconds["score"] = time.perf_counter() - start
    report = training.asset_value(keys.evaluation_report)
    return {
        "seconds": seconds,
        "window_rows": training.asset_value(keys.trained_model).rows.window,
        "scored_rows": _row_count(scoring, keys.batch_predictions),
        "test_rmse": report.challenger.metrics["rmse"],
        "model_version": report.challenger.version,
    }


@case
def bare_end_to_end(args: dict[str, Any]) -> dict[str, Any]:
    """The same work as a hand-written pandas/scikit-learn/MLflow script."""
    from benchmarks.bare_script import run_bare_pipeline

    return run_bare_pipeline(
        landing=Path(args["landing"]),
        output=Path(args["output"]),
        tracking_uri=args["tracking_uri"],
        model_name=args["model_name"],
        training_days=[dt.date.fromisoformat(d) for d in args["training_days"]],
        scoring_day=dt.date.fromisoformat(args["scoring_day"]),
        estimator_params=args["estimator_params"],
        pip_requirements=args["pip_requirements"],
        gate=tuple(args["gate"]),
        categorical=tuple(args["categorical"]),
        refit_on_validation=args["refit_on_validation"],
    )


@case
def tabml_ingest(args: dict[str, Any]) -> dict[str, Any]:
    """Setup: raw_data and features for a range of days (one run)."""
    from tabml_assets.seed import run_selection

    spec, defs = _tabml_definitions(args)
    with _open_instance(Path(args["dagster_home"])) as instance:
        result = run_selection(
            defs, instance, spec.keys.assets("raw_data", "features"), partition_range=(args["first_day"], args["last_day"])
        )
    return {"rows": _row_count(result, spec.keys.features)}


def _with_spark(defs: Any, master: str) -> tuple[Any, float]:
    """The same definitions with a pyspark local-mode `spark` resource; its session started."""
    from dagster import Definitions

    from tabml_assets.resources.spark import SparkSessionResource

    spark = SparkSessionResource(master=master)
    start = time.perf_counter()
    # Started here so the scoring figure is the steady state a running cluster would show.
    spark.get_session()
    session_seconds = time.perf_counter() - start
    with_spark = Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs, schedules=defs.schedules,
        sensors=defs.sensors, resources={**defs.resources, "spark": spark}, executor=defs.executor,
    )
    return with_spark, session_seconds


@case
def tabml_scoring(args: dict[str, Any]) -> dict[str, Any]:
    """batch_predictions for one partition, as a scoring run materializes it (pandas or Spark)."""
    from tabml_assets.seed import run_selection

    spec, defs = _tabml_definitions(args)
    predictions = spec.keys.batch_predictions
    session_seconds = None
    if args.get("spark_master"):
        defs, session_seconds = _with_spark(defs, args["spark_master"])
    defs.get_repository_def()
    with _open_instance(Path(args["dagster_home"])) as instance:
        start = time.perf_counter()
        result = run_selection(defs, instance, [predictions], partition_key=args["day"])
        seconds = time.perf_counter() - start
    engine = None
    for materialization in _materializations(result, predictions):
        if "engine" in materialization.metadata:
            engine = materialization.metadata["engine"].value
    return {
        "rows": _row_count(result, predictions),
        "seconds": seconds,
        "engine": engine,
        "spark_session_seconds": session_seconds,
    }


@case
def bare_scoring(args: dict[str, Any]) -> dict[str, Any]:
    """Bare `model.predict` on the same features file, plus its parquet read and write."""
    import mlflow
    import mlflow.sklearn

    from benchmarks.bare_script import score_file

    start = time.perf_counter()
    mlflow.set_tracking_uri(args["tracking_uri"])
    mlflow.set_registry_uri(args["tracking_uri"])
    model = mlflow.sklearn.load_model(args["model_uri"])
    load_seconds = time.perf_counter() - start
    result = score_file(model, Path(args["features_file"]), Path(args["output"]), args["feature_columns"])
    return {**result, "model_load_seconds": load_seconds}


@case
def import_floor(args: dict[str, Any]) -> dict[str, Any]:
    """The floor no code location avoids: a fresh interpreter importing dagster, pandas, sklearn."""
    start = time.perf_counter()
    import dagster  # noqa: F401
    import pandas  # noqa: F401
    import sklearn  # noqa: F401

    return {"interpreter_start_to_import_seconds": start - PROCESS_START, "seconds": time.perf_counter() - start}


@case
def load_definitions(args: dict[str, Any]) -> dict[str, Any]:
    """Import the code location and resolve its repository, as a code server does on start."""
    import importlib

    start = time.perf_counter()
    module = importlib.import_module("tabml_assets.definitions")
    imported = time.perf_counter()
    repository = module.defs.get_repository_def()
    resolved = time.perf_counter()
    return {
        "interpreter_start_to_import_seconds": start - PROCESS_START,
        "import_and_build_seconds": imported - start,
        "resolve_repository_seconds": resolved - imported,
        "seconds": resolved - start,
        "assets": len(list(repository.asset_graph.get_all_asset_keys())),
    }


def _backfill_chunks(defs: Any, assets: list[Any], keys: list[str]) -> list[list[str]]:
    """Group partition keys into runs the way the assets' (AssetKeys) BackfillPolicy would."""
    limits = []
    for asset in assets:
        policy = defs.resolve_assets_def(asset).backfill_policy
        if policy is None:
            limits.append(1)  # no policy: Dagster launches one run per partition
        else:
            limits.append(policy.max_partitions_per_run or len(keys))
    size = min(limits)
    return [keys[i : i + size] for i in range(0, len(keys), size)]


@case
def tabml_backfill(args: dict[str, Any]) -> dict[str, Any]:
    """raw_data -> features -> batch_predictions for many days: per the policy, or one run per day."""
    from tabml_assets.seed import run_selection

    spec, defs = _tabml_definitions(args)
    assets = spec.keys.assets("raw_data", "features", "batch_predictions")
    keys = args["days"]
    chunks = _backfill_chunks(defs, assets, keys) if args["mode"] == "policy" else [[k] for k in keys]
    with _open_instance(Path(args["dagster_home"])) as instance:
        start = time.perf_counter()
        rows = 0
        for chunk in chunks:
            if len(chunk) == 1:
                result = run_selection(defs, instance, assets, partition_key=chunk[0])
            else:
                result = run_selection(defs, instance, assets, partition_range=(chunk[0], chunk[-1]))
            rows += _row_count(result, spec.keys.batch_predictions)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "runs": len(chunks), "partitions": len(keys), "rows": rows}


@case
def tabml_fit_window(args: dict[str, Any]) -> dict[str, Any]:
    """Fit one training window's feature files: xgboost.spark on pyspark local mode, or the same
    XGBoost parameters in this process (tabml's split, preprocessing, train fit and refit)."""
    import pandas as pd

    from tabml_assets.ml.spark_training import fit_window_on_spark
    from tabml_assets.ml.training import fit_window
    from tabml_assets.spec import EstimatorSpec, load_spec

    spec = load_spec(args["deployment"])
    files = args["files"]
    estimator = EstimatorSpec.model_validate({"class": args["estimator_class"], "params": args["params"]})
    pipeline = spec.pipeline.model_copy(update={"estimator": estimator})
    session_seconds = 0.0
    start = time.perf_counter()
    if args.get("spark_master"):
        from tabml_assets.resources.spark import SparkSessionResource

        # Started before the timed fit: on a cluster the session already exists.
        session = SparkSessionResource(master=args["spark_master"]).get_session()
        session_seconds = time.perf_counter() - start
        start = time.perf_counter()
        trained = fit_window_on_spark(session, files, pipeline, spec.steps)
    else:
        window = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        trained = fit_window(window, pipeline, spec.steps)
    seconds = time.perf_counter() - start
    return {
        "rows": trained.window_rows,
        "fitted_rows": trained.fit.fitted_rows,
        "seconds": seconds,
        "spark_session_seconds": session_seconds,
        "validation_rmse": trained.fit.validation_metrics.get("rmse"),
    }


def own_peak_rss_mib() -> float | None:
    """This process's peak RSS since exec (VmHWM); the harness samples the whole tree too.

    Not getrusage's ru_maxrss: Linux carries that over from the forking parent across exec,
    so a child of a large parent would report the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_module_case(cases: dict[str, Case], argv: list[str]) -> bool:
    """Run `argv` = [CASE, ARGS_JSON, RESULT_FILE] of another case module, as `run_case` starts
    one in its own process; False when argv names no case of `cases`."""
    if not argv or argv[0] not in cases:
        return False
    name, args_json, result_file = argv[:3]
    result = cases[name](json.loads(args_json))
    result["peak_rss_mib"] = own_peak_rss_mib()
    Path(result_file).write_text(json.dumps(result, default=str))
    return True


def section_main(
    doc: str | None,
    argv: list[str],
    name: str,
    measure: Callable[[Any, Any], dict[str, Any]],
    summary: Callable[[dict[str, Any]], list[str]],
    add_arguments: Callable[[Any], None] | None = None,
) -> None:
    """A benchmark section run alone (`python -m benchmarks.<section>`): --smoke, --repeats,
    --output, plus the section's own options; `measure(bench, options)` gives its figures."""
    import argparse
    import logging
    import tempfile
    from dataclasses import replace

    from benchmarks.run import SMOKE, Bench, Sizes

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--repeats", type=int, help="runs per figure (default 3)")
    parser.add_argument("--output", type=Path, help="write latest.json with this section here")
    parser.add_argument("--work-dir", type=Path, help="scratch folder, kept (default a temp dir)")
    if add_arguments is not None:
        add_arguments(parser)
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    sizes = SMOKE if options.smoke else Sizes()
    if options.repeats:
        sizes = replace(sizes, repeats=options.repeats)
    with tempfile.TemporaryDirectory(prefix=f"tabml-bench-{name}-") as temp:
        result = measure(Bench(sizes=sizes, work=options.work_dir or Path(temp)), options)
    for line in summary(result):
        logging.getLogger("tabml.bench").info("%s", line)
    if options.output:
        options.output.mkdir(parents=True, exist_ok=True)
        (options.output / "latest.json").write_text(json.dumps({"results": {name: result}}, indent=2, default=str) + "\n")


def main() -> None:
    name, args_json, result_file = sys.argv[1:4]
    profile_file = os.environ.get("TABML_BENCH_PROFILE")
    if profile_file:
        # Sampling profile of the case, to explain a missed target (see benchmarks/README.md).
        from pyinstrument import Profiler

        with Profiler(interval=0.005) as profiler:
            result = CASES[name](json.loads(args_json))
        Path(profile_file).write_text(profiler.output_text(unicode=True, color=False, show_all=False))
    else:
        result = CASES[name](json.loads(args_json))
    result["peak_rss_mib"] = own_peak_rss_mib()
    Path(result_file).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
