"""Run every tabml benchmark side by side with its baseline; write results/latest.json and latest.md.

    python -m benchmarks.run                 # the full run `make bench` does (under 20 minutes)
    python -m benchmarks.run --smoke         # tiny sizes, one repeat: checks the harness in ~2 min
    python -m benchmarks.run --only scoring  # one section (end_to_end, scoring, spark, backfill,
                                             # load_time, sensor), results merged into latest.json

Each case runs in a fresh subprocess; its wall time is measured here and its peak RSS is
sampled here over the whole process tree (so Spark's JVM counts). Figures are medians of
`--repeats` runs (at least 3), tabml and baseline runs interleaved so that load from other
processes on the machine hits both sides alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import psutil

from benchmarks import workspace as ws
from benchmarks.report import render_markdown

log = logging.getLogger("tabml.bench")
# Not resolve(): a benchmarks/ symlinked into another checkout measures that checkout.
REPO_ROOT = Path(__file__).absolute().parent.parent
RESULTS_DIR = Path(__file__).absolute().parent / "results"
SECTIONS = (
    "load_time", "end_to_end", "scoring", "spark", "backfill", "sensor", "real_taxi", "landing",
    "spark_training", "ingest",
)
LIBRARIES = ("dagster", "mlflow", "pandas", "pyarrow", "numpy", "scikit-learn", "pyspark", "dagster-pyspark")
RSS_SAMPLE_SECONDS = 0.05


@dataclass(frozen=True)
class Sizes:
    training_rows: int = 1_000_000
    scoring_rows: int = 1_000_000
    large_scoring_rows: int = 10_000_000
    backfill_days: int = 60
    backfill_rows_per_day: int = 10_000
    # One window trained both ways; modest, as the Spark fit pays its fixed cost per run.
    spark_training_rows: int = 300_000
    repeats: int = 3


SMOKE = Sizes(
    training_rows=35_000, scoring_rows=20_000, large_scoring_rows=60_000,
    backfill_days=4, backfill_rows_per_day=500, spark_training_rows=20_000, repeats=1,
)


@dataclass
class Measurement:
    """One case in one fresh process: wall time, peak RSS of its process tree, what it reported."""

    case: str
    wall_seconds: float
    peak_rss_mib: float
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class CaseFailed(RuntimeError):
    """A benchmark case's process failed; the message holds the tail of its log."""


def _tree_rss_bytes(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run_case(
    name: str,
    args: dict[str, Any],
    log_dir: Path,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    profile_file: Path | None = None,
    module: str = "benchmarks.cases",
) -> Measurement:
    """Run case `name` of `module` in a fresh interpreter; sample its tree's RSS until it exits."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{name}-{time.monotonic_ns()}"
    result_file, log_file = log_dir / f"{stamp}.json", log_dir / f"{stamp}.log"
    env = dict(env or os.environ)
    if profile_file is not None:
        env["TABML_BENCH_PROFILE"] = str(profile_file)
    command = [sys.executable, "-m", module, name, json.dumps(args, default=str), str(result_file)]
    peak = 0
    with open(log_file, "wb") as output:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        watched = psutil.Process(child.pid)
        while child.poll() is None:
            try:
                peak = max(peak, _tree_rss_bytes(watched))
            except psutil.NoSuchProcess:
                pass
            if time.perf_counter() - start > timeout:
                child.kill()
                child.wait()
                break
            time.sleep(RSS_SAMPLE_SECONDS)
        wall = time.perf_counter() - start
    measurement = Measurement(case=name, wall_seconds=wall, peak_rss_mib=peak / 2**20)
    if child.returncode != 0 or not result_file.exists():
        tail = log_file.read_text(errors="replace")[-3000:]
        measurement.error = f"{name} exited with {child.returncode} after {wall:.1f}s; log {log_file}:\n{tail}"
        log.error("%s", measurement.error)
        return measurement
    measurement.result = json.loads(result_file.read_text())
    # A spike shorter than the sampling interval still shows in the process's own ru_maxrss.
    measurement.peak_rss_mib = max(measurement.peak_rss_mib, measurement.result.get("peak_rss_mib") or 0.0)
    log.info("%s: %.1fs wall, peak RSS %.0f MiB", name, wall, measurement.peak_rss_mib)
    return measurement


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(measurements: list[Measurement], value: Callable[[Measurement], float]) -> dict[str, Any]:
    """Median and every run of one figure, and the errors of runs that failed."""
    ok = [m for m in measurements if m.ok]
    values = [value(m) for m in ok]
    return {
        "median": median(values),
        "runs": values,
        "errors": [m.error for m in measurements if not m.ok],
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator in (None, 0):
        return None
    return numerator / denominator


# --- the environment ----------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": versions,
        "git_commit": commit.stdout.strip() or None,
    }


# --- the sections -------------------------------------------------------------------------


@dataclass
class Bench:
    sizes: Sizes
    work: Path
    cache: Path = field(init=False)
    logs: Path = field(init=False)
    profile_dir: Path | None = None
    _scoring_workspace: ws.Workspace | None = None
    # The scoring section's pandas runs of the large partition, reused by the Spark section.
    large_pandas_runs: list[Measurement] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cache = self.work / "landed"
        self.logs = self.work / "logs"
        self.cache.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, args: dict[str, Any], env: dict[str, str] | None = None, profile: str | None = None) -> Measurement:
        profile_file = self.profile_dir / f"{profile}.txt" if profile and self.profile_dir else None
        return run_case(name, args, self.logs, env=env, profile_file=profile_file)

    # Landed trips shared by the end-to-end, scoring and Spark sections (hard-linked, not copied).
    def training_files(self) -> list[Path]:
        days = ws.days_ending(ws.TRAINING_DAY, self.spec_window())
        per_day = -(-self.sizes.training_rows // len(days))
        return [ws.land_trips(self.cache, [day], per_day) for day in days]

    def scoring_file(self) -> Path:
        return ws.land_trips(self.cache, [ws.SCORING_DAY], self.sizes.scoring_rows)

    def spec_window(self) -> int:
        from tabml_assets.spec import load_spec

        return load_spec(ws.DEPLOYMENT).pipeline.training_window_days

    def end_to_end_args(self) -> dict[str, Any]:
        window = self.spec_window()
        return {
            "first_day": ws.days_ending(ws.TRAINING_DAY, window)[0].isoformat(),
            "training_day": ws.TRAINING_DAY.isoformat(),
            "scoring_day": ws.SCORING_DAY.isoformat(),
        }

    def end_to_end(self) -> dict[str, Any]:
        """1: the whole graph through tabml against the bare script, on the same landed files."""
        from tabml_assets.resources.model_registry import pip_requirements_for
        from tabml_assets.spec import load_spec

        spec = load_spec(ws.DEPLOYMENT)
        files = [*self.training_files(), self.scoring_file()]
        criteria = spec.pipeline.validation.criteria
        gate = (criteria["rmse"].max, criteria["r2"].min)
        if spec.pipeline.split.early_stopping_rounds is not None:
            raise CaseFailed("the bare script fits without early stopping; the spec sets split.early_stopping_rounds")
        tabml_runs, bare_runs = [], []
        for repeat in range(self.sizes.repeats):
            tabml_ws = ws.create_workspace(self.work, f"e2e_tabml_{repeat}")
            ws.link_files(files, tabml_ws.landing)
            tabml_runs.append(
                self.run("tabml_end_to_end", {**tabml_ws.as_args(), **self.end_to_end_args()}, env=tabml_ws.env(),
                         profile="end_to_end_tabml" if repeat == 0 else None)
            )
            bare_dir = self.work / f"e2e_bare_{repeat}"
            ws.link_files(files, bare_dir / "landing")
            bare_args = {
                "landing": str(bare_dir / "landing"),
                "output": str(bare_dir / "predictions.parquet"),
                "tracking_uri": f"sqlite:///{bare_dir / 'mlflow.db'}",
                "model_name": "bare_fare_model",
                "training_days": [d.isoformat() for d in ws.days_ending(ws.TRAINING_DAY, spec.pipeline.training_window_days)],
                "scoring_day": ws.SCORING_DAY.isoformat(),
                "estimator_params": spec.pipeline.estimator.params,
                "pip_requirements": pip_requirements_for(None),  # the model argument is not used
                "gate": gate,
                "categorical": spec.pipeline.categorical_columns,
                "refit_on_validation": spec.pipeline.split.refit_on_validation,
            }
            bare_runs.append(self.run("bare_end_to_end", bare_args, profile="end_to_end_bare" if repeat == 0 else None))
            if tabml_runs[-1].ok and self._scoring_workspace is None:
                self._scoring_workspace = tabml_ws
        tabml_wall = summarize(tabml_runs, lambda m: m.wall_seconds)
        bare_wall = summarize(bare_runs, lambda m: m.wall_seconds)
        tabml_work = summarize(tabml_runs, lambda m: sum(m.result["seconds"].values()) - m.result["seconds"]["load_definitions"])
        bare_work = summarize(bare_runs, lambda m: sum(m.result["seconds"].values()))
        return {
            "training_window_rows": self.sizes.training_rows,
            "scoring_rows": self.sizes.scoring_rows,
            "tabml_wall_seconds": tabml_wall,
            "bare_wall_seconds": bare_wall,
            "ratio_wall": ratio(tabml_wall["median"], bare_wall["median"]),
            "tabml_work_seconds": tabml_work,
            "bare_work_seconds": bare_work,
            "ratio_work": ratio(tabml_work["median"], bare_work["median"]),
            "tabml_steps_seconds": _median_steps(tabml_runs),
            "bare_steps_seconds": _median_steps(bare_runs),
            "tabml_test_rmse": summarize(tabml_runs, lambda m: m.result["test_rmse"])["median"],
            "bare_test_rmse": summarize(bare_runs, lambda m: m.result["test_rmse"])["median"],
            "target_ratio_max": 1.25,
        }

    def scoring_workspace(self) -> ws.Workspace:
        """A home with a champion (trained on the end-to-end window) and features for the scoring days."""
        if self._scoring_workspace is None:
            workspace = ws.create_workspace(self.work, "scoring")
            ws.link_files([*self.training_files(), self.scoring_file()], workspace.landing)
            setup = self.run("tabml_end_to_end", {**workspace.as_args(), **self.end_to_end_args()}, env=workspace.env())
            if not setup.ok:
                raise CaseFailed(f"scoring setup failed: {setup.error}")
            self._scoring_workspace = workspace
        return self._scoring_workspace

    def large_day_ingested(self, workspace: ws.Workspace) -> None:
        marker = workspace.home / f".ingested-{ws.LARGE_SCORING_DAY}-{self.sizes.large_scoring_rows}"
        if marker.exists():
            return
        ws.link_files([ws.land_trips(self.cache, [ws.LARGE_SCORING_DAY], self.sizes.large_scoring_rows)], workspace.landing)
        day = ws.LARGE_SCORING_DAY.isoformat()
        setup = self.run("tabml_ingest", {**workspace.as_args(), "first_day": day, "last_day": day}, env=workspace.env())
        if not setup.ok:
            raise CaseFailed(f"ingesting {day} failed: {setup.error}")
        marker.touch()

    def champion_uri(self, workspace: ws.Workspace) -> str:
        from mlflow.tracking import MlflowClient

        spec = workspace.spec()
        client = MlflowClient(tracking_uri=workspace.mlflow_uri, registry_uri=workspace.mlflow_uri)
        version = client.get_model_version_by_alias(spec.profile.mlflow.model_name, "champion").version
        return f"models:/{spec.profile.mlflow.model_name}/{version}"

    def features_file(self, workspace: ws.Workspace, day: dt.date) -> Path:
        from tabml_assets.resources import build_partition_store

        spec = workspace.spec()
        return build_partition_store(spec).path(spec.keys.features, day.isoformat())

    def scoring(self) -> dict[str, Any]:
        """2: batch_predictions throughput and peak RSS at two sizes, against bare model.predict."""
        workspace = self.scoring_workspace()
        self.large_day_ingested(workspace)
        spec = workspace.spec()
        model_uri = self.champion_uri(workspace)
        out: dict[str, Any] = {"model_uri": model_uri, "sizes": {}}
        for label, day, rows in (
            ("1M" if self.sizes.scoring_rows == 1_000_000 else str(self.sizes.scoring_rows), ws.SCORING_DAY, self.sizes.scoring_rows),
            ("10M" if self.sizes.large_scoring_rows == 10_000_000 else str(self.sizes.large_scoring_rows), ws.LARGE_SCORING_DAY, self.sizes.large_scoring_rows),
        ):
            tabml_runs, bare_runs = [], []
            for repeat in range(self.sizes.repeats):
                tabml_runs.append(
                    self.run("tabml_scoring", {**workspace.as_args(), "day": day.isoformat()}, env=workspace.env(),
                             profile=f"scoring_{label}_tabml" if repeat == 0 else None)
                )
                bare_runs.append(
                    self.run(
                        "bare_scoring",
                        {
                            "tracking_uri": workspace.mlflow_uri,
                            "model_uri": model_uri,
                            "features_file": str(self.features_file(workspace, day)),
                            "output": str(self.work / f"bare_predictions_{label}.parquet"),
                            "feature_columns": spec.pipeline.feature_columns,
                        },
                    )
                )
            if day == ws.LARGE_SCORING_DAY:
                self.large_pandas_runs = tabml_runs
            tabml_rate = summarize(tabml_runs, lambda m: m.result["rows"] / m.result["seconds"])
            bare_rate = summarize(bare_runs, lambda m: m.result["rows"] / m.result["seconds"])
            out["sizes"][label] = {
                "rows": rows,
                "tabml_rows_per_second": tabml_rate,
                "bare_rows_per_second": bare_rate,
                "throughput_ratio": ratio(tabml_rate["median"], bare_rate["median"]),
                "tabml_peak_rss_mib": summarize(tabml_runs, lambda m: m.peak_rss_mib),
                "bare_peak_rss_mib": summarize(bare_runs, lambda m: m.peak_rss_mib),
                "tabml_seconds": summarize(tabml_runs, lambda m: m.result["seconds"]),
                "bare_seconds": summarize(bare_runs, lambda m: m.result["seconds"]),
                "bare_phases_seconds": {
                    phase: median([m.result[phase] for m in bare_runs if m.ok])
                    for phase in ("read_seconds", "predict_seconds", "write_seconds", "model_load_seconds")
                },
                "tabml_rows_scored": summarize(tabml_runs, lambda m: m.result["rows"])["median"],
            }
        small, large = (out["sizes"][k] for k in list(out["sizes"]))
        out["rss_growth"] = ratio(large["tabml_peak_rss_mib"]["median"], small["tabml_peak_rss_mib"]["median"])
        out["rows_growth"] = ratio(large["rows"], small["rows"])
        out["targets"] = {"throughput_ratio_min": 0.8, "large_throughput_ratio_min": 1.0, "peak_rss_mib_max_at_10M": 2048}
        return out

    def spark(self) -> dict[str, Any]:
        """6: the Spark (mapInPandas) scoring path on one machine, against the pandas path."""
        from benchmarks import spark_path

        return spark_path.measure(self)

    def backfill(self) -> dict[str, Any]:
        """3: raw -> features -> predictions over many days: the backfill policy against one run per day."""
        workspace = self.scoring_workspace()
        # The demo source generates each day on demand, so the figure is the orchestration's
        # cost and not the landing folder's (which re-reads every landed file for every day).
        backfill_ws = ws.create_workspace(
            self.work, "backfill", home=workspace.home,
            profile_overrides={"data_source": {"kind": "demo", "demo_rows_per_day": self.sizes.backfill_rows_per_day}},
        )
        days = [(ws.BACKFILL_FIRST_DAY + dt.timedelta(days=i)).isoformat() for i in range(self.sizes.backfill_days)]
        runs: dict[str, list[Measurement]] = {"policy": [], "per_partition": []}
        for repeat in range(self.sizes.repeats):
            for mode in runs:
                fresh = replace(backfill_ws, dagster_home=backfill_ws.dagster_home.parent / f"dagster_home_{mode}_{repeat}")
                fresh.dagster_home.mkdir(parents=True, exist_ok=True)
                runs[mode].append(
                    self.run("tabml_backfill", {**fresh.as_args(), "days": days, "mode": mode}, env=fresh.env(),
                             profile=f"backfill_{mode}" if repeat == 0 else None)
                )
        policy = summarize(runs["policy"], lambda m: m.result["seconds"])
        per_partition = summarize(runs["per_partition"], lambda m: m.result["seconds"])
        return {
            "days": self.sizes.backfill_days,
            "rows_per_day": self.sizes.backfill_rows_per_day,
            "policy_runs": summarize(runs["policy"], lambda m: m.result["runs"])["median"],
            "policy_seconds": policy,
            "per_partition_seconds": per_partition,
            "speedup": ratio(per_partition["median"], policy["median"]),
            "per_partition_seconds_per_run": ratio(per_partition["median"], self.sizes.backfill_days),
        }

    def load_time(self) -> dict[str, Any]:
        """4: import plus Definitions for each deployment, each in a fresh interpreter."""
        from tabml_assets.spec import DEPLOYMENTS

        runs: dict[str, list[Measurement]] = {d: [] for d in DEPLOYMENTS}
        floor: list[Measurement] = []
        conf_dir = ws.every_example_conf(self.work / "load_conf")
        for repeat in range(self.sizes.repeats):
            floor.append(self.run("import_floor", {}))
            for deployment in DEPLOYMENTS:
                home = self.work / f"load_{deployment}_{repeat}"
                (home / "dagster_home").mkdir(parents=True)
                env = dict(os.environ)
                env.update({"TABML_CONF_DIR": str(conf_dir), "TABML_DEPLOYMENT": deployment, "TABML_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home")})
                runs[deployment].append(self.run("load_definitions", {}, env=env,
                                                 profile=f"load_{deployment}" if repeat == 0 else None))
        floor_wall = summarize(floor, lambda m: m.wall_seconds)
        floor_import = summarize(floor, lambda m: m.result["seconds"])
        return {
            deployment: {
                "process_wall_seconds": summarize(measurements, lambda m: m.wall_seconds),
                "import_and_definitions_seconds": summarize(measurements, lambda m: m.result["seconds"]),
                "resolve_repository_seconds": summarize(measurements, lambda m: m.result["resolve_repository_seconds"])["median"],
                "peak_rss_mib": summarize(measurements, lambda m: m.peak_rss_mib)["median"],
                # Both example projects' assets (every_example_conf).
                "assets": measurements[0].result["assets"],
                # Against the floor measured in the same run: absolute seconds do not carry
                # from one machine to the next, the ratio does.
                "ratio_to_floor": ratio(summarize(measurements, lambda m: m.wall_seconds)["median"], floor_wall["median"]),
            }
            for deployment, measurements in runs.items()
        } | {"import_floor": {"process_wall_seconds": floor_wall, "import_seconds": floor_import},
             "target_ratio_max": 1.25}

    def sensor(self) -> dict[str, Any]:
        """5: from a file landing to the rescoring run starting, under a real `dagster dev`."""
        from benchmarks import sensor_reaction

        return sensor_reaction.measure(self)

    def real_taxi(self) -> dict[str, Any]:
        """7: the shipped taxi example on the real NYC sample, January -> February 2016."""
        from benchmarks import real_taxi

        return real_taxi.measure(self.work)

    def spark_training(self) -> dict[str, Any]:
        """9: one training window fitted on Spark (xgboost.spark, local mode) and in one process."""
        from benchmarks import spark_training

        return spark_training.measure(self)

    def landing(self) -> dict[str, Any]:
        """8: raw_data for one day with 10 or 1,000 files, or a 10M-row file, in the landing folder."""
        from benchmarks import landing_cost

        return landing_cost.measure(self)

    def ingest(self) -> dict[str, Any]:
        """9: raw_data for one large day (parquet and CSV landing file) against a bare read-validate-write."""
        from benchmarks import ingest

        return ingest.measure(self)


def _median_steps(measurements: list[Measurement]) -> dict[str, float | None]:
    ok = [m for m in measurements if m.ok]
    if not ok:
        return {}
    return {step: median([m.result["seconds"][step] for m in ok]) for step in ok[0].result["seconds"]}


def run_sections(bench: Bench, sections: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for section in sections:
        log.info("== %s", section)
        start = time.perf_counter()
        try:
            results[section] = getattr(bench, section)()
        except Exception as exc:  # one broken section must not hide the others' figures
            log.exception("section %s failed", section)
            results[section] = {"error": f"{type(exc).__name__}: {exc}"}
        results[section]["section_seconds"] = time.perf_counter() - start
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and one repeat, written to --output (default a temp dir)")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    parser.add_argument("--repeats", type=int, help="runs per figure (default 3)")
    parser.add_argument("--output", type=Path, help=f"results folder (default {RESULTS_DIR})")
    parser.add_argument("--work-dir", type=Path, help="scratch folder (default a temp dir, removed afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--profile", action="store_true", help="also write pyinstrument profiles of the first run of each case")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    sizes = SMOKE if args.smoke else Sizes()
    if args.repeats:
        sizes = replace(sizes, repeats=args.repeats)
    output = args.output or (Path(tempfile.mkdtemp(prefix="tabml-bench-smoke-")) if args.smoke else RESULTS_DIR)
    if output.absolute() == RESULTS_DIR and (args.smoke or sizes.repeats < 3):
        parser.error(
            f"--output {RESULTS_DIR} holds the published figures: expected full sizes and at least 3 "
            f"repeats, found {'--smoke' if args.smoke else f'--repeats {sizes.repeats}'}; pass another --output"
        )
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tabml-bench-"))
    sections = args.only or list(SECTIONS)
    started = dt.datetime.now(dt.UTC)
    machine = machine_info()
    bench = Bench(sizes=sizes, work=work, profile_dir=(output / "profiles") if args.profile else None)
    if bench.profile_dir:
        bench.profile_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        results = run_sections(bench, sections)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    document = {
        "started_at": started.isoformat(timespec="seconds"),
        "total_seconds": time.perf_counter() - start,
        "smoke": args.smoke,
        "sizes": asdict(sizes),
        "machine": machine,
        "results": results,
    }
    output.mkdir(parents=True, exist_ok=True)
    latest = output / "latest.json"
    if args.only and latest.exists():
        # A partial run refreshes its sections and keeps the others' latest figures.
        previous = json.loads(latest.read_text())
        document["results"] = {**previous.get("results", {}), **results}
        document["sections_refreshed"] = sections
    latest.write_text(json.dumps(document, indent=2, default=str) + "\n")
    (output / "latest.md").write_text(render_markdown(document))
    log.info("wrote %s and %s in %.0fs", latest, output / "latest.md", document["total_seconds"])


if __name__ == "__main__":
    main()
