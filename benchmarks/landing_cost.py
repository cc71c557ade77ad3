"""Ingestion cost follows the day, not the landing folder (issue 14).

`raw_data` for one day, in a fresh process each time, on the dev deployment with three landing
folders that all hold the same file for that day:

- **few**: the day's file and 9 one-day files of other days;
- **many**: the day's file and 999 one-day files of other days (two files per day where the
  partitions have fewer days than that);
- **large**: as few, plus one 10M-row file of an unrelated day.

The figure is the raw_data step's own time (from its events; the run also checks the
stored day), median of the repeats, with the run's and the process's wall time beside it.
Before the measured runs, the landing sensor ticks over each folder as the daemon would (its
ticks are timed too: 1,000 files landing at once), which records every file's days in the
landing index. Targets: many ≤ 1.5× few; large the same time and memory as few. The cold
figure is one run of `many` with the index deleted (every file is read once, then indexed).

    python -m benchmarks.run --only landing            # the section, inside `make bench`
    python -m benchmarks.landing_cost --smoke          # alone, tiny sizes, results printed
    python -m benchmarks.landing_cost --output /tmp/x  # alone, full sizes, latest.json there
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import workspace as ws

if TYPE_CHECKING:
    from benchmarks.run import Bench, Measurement, Sizes

log = logging.getLogger("tabml.bench")
MODULE = "benchmarks.landing_cost"
TARGET_DAY = dt.date(2025, 9, 20)
FIRST_OTHER_DAY = dt.date(2025, 1, 1)
SENSOR_NAME = "nyc_taxi_landing_sensor"
RAW_DATA_STEP = "nyc_taxi__raw_data"
MAX_TICKS = 400


@dataclass(frozen=True)
class LandingSizes:
    few_files: int
    many_files: int
    rows_per_file: int
    large_file_rows: int

    @classmethod
    def for_bench(cls, sizes: Sizes) -> LandingSizes:
        # The smoke run's tiny sizes: the harness is checked, not the figures.
        if sizes.large_scoring_rows < 1_000_000:
            return cls(
                few_files=10,
                many_files=60,
                rows_per_file=100,
                large_file_rows=sizes.large_scoring_rows,
            )
        return cls(
            few_files=10,
            many_files=1_000,
            rows_per_file=2_000,
            large_file_rows=sizes.large_scoring_rows,
        )


def other_days(count: int) -> list[dt.date]:
    """`count` days other than the target, within the partitions, cycling when there are fewer."""
    last = min(
        dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1),
        FIRST_OTHER_DAY + dt.timedelta(days=599),
    )
    span = [
        FIRST_OTHER_DAY + dt.timedelta(days=i) for i in range((last - FIRST_OTHER_DAY).days + 1)
    ]
    span = [d for d in span if d not in (TARGET_DAY, ws.LARGE_SCORING_DAY)]
    return [span[i % len(span)] for i in range(count)]


def landed_files(bench: Bench, sizes: LandingSizes) -> dict[str, list[Path]]:
    target = ws.land_trips(
        bench.cache, [TARGET_DAY], sizes.rows_per_file, file_name=f"day_{TARGET_DAY}.parquet"
    )
    others = [
        ws.land_trips(
            bench.cache, [day], sizes.rows_per_file, file_name=f"other_{i:04d}_{day}.parquet"
        )
        for i, day in enumerate(other_days(sizes.many_files - 1))
    ]
    large = ws.land_trips(bench.cache, [ws.LARGE_SCORING_DAY], sizes.large_file_rows)
    few = [target, *others[: sizes.few_files - 1]]
    return {"few": few, "many": [target, *others], "large": [*few, large]}


def measure(bench: Bench) -> dict[str, Any]:
    from benchmarks.run import ratio, run_case, summarize

    sizes = LandingSizes.for_bench(bench.sizes)
    folders = landed_files(bench, sizes)
    workspaces = {}
    for name, files in folders.items():
        workspaces[name] = ws.create_workspace(bench.work, f"landing_{name}")
        ws.link_files(files, workspaces[name].landing)
    # Indexed after every link is made: a new hard link changes a file's ctime, which the
    # index rightly takes for a change.
    index_build: dict[str, Any] = {}
    for name, workspace in workspaces.items():
        setup = run_case(
            "landing_index",
            workspace.as_args(),
            bench.logs,
            env=workspace.env(),
            timeout=1800,
            module=MODULE,
        )
        if not setup.ok:
            raise RuntimeError(f"landing {name}: indexing the folder failed: {setup.error}")
        index_build[name] = {**setup.result, "peak_rss_mib": setup.peak_rss_mib}
    runs: dict[str, list[Measurement]] = {name: [] for name in workspaces}
    args = {"day": TARGET_DAY.isoformat()}
    for _ in range(bench.sizes.repeats):
        for name, workspace in workspaces.items():  # interleaved: machine load hits all alike
            runs[name].append(
                run_case(
                    "landing_raw_day",
                    {**workspace.as_args(), **args},
                    bench.logs,
                    env=workspace.env(),
                    module=MODULE,
                )
            )
    many = workspaces["many"]
    (many.landing / ".tabml_landing_index.json").unlink()
    cold = run_case(
        "landing_raw_day",
        {**many.as_args(), **args},
        bench.logs,
        env=many.env(),
        timeout=1800,
        module=MODULE,
    )

    def figures(name: str) -> dict[str, Any]:
        done = [m for m in runs[name] if m.ok]
        return {
            "files_in_folder": len(folders[name]),
            "step_seconds": summarize(runs[name], lambda m: m.result["step_seconds"]),
            "run_seconds": summarize(runs[name], lambda m: m.result["seconds"]),
            "process_wall_seconds": summarize(runs[name], lambda m: m.wall_seconds),
            "peak_rss_mib": summarize(runs[name], lambda m: m.peak_rss_mib),
            "files_read": done[0].result["files_read"] if done else None,
            "rows": done[0].result["rows"] if done else None,
        }

    out = {name: figures(name) for name in workspaces}
    few_s, many_s, large_s = (out[n]["step_seconds"]["median"] for n in ("few", "many", "large"))
    few_rss, large_rss = (
        out["few"]["peak_rss_mib"]["median"],
        out["large"]["peak_rss_mib"]["median"],
    )
    return {
        "available": True,
        "day": TARGET_DAY.isoformat(),
        "rows_per_file": sizes.rows_per_file,
        "large_file_rows": sizes.large_file_rows,
        **out,
        "ratio_many_vs_few": ratio(many_s, few_s),
        "ratio_large_vs_few": ratio(large_s, few_s),
        "rss_ratio_large_vs_few": ratio(large_rss, few_rss),
        "targets": {"ratio_many_vs_few_max": 1.5, "large_vs_few": "same time and memory"},
        "cold_many_step_seconds": cold.result.get("step_seconds") if cold.ok else None,
        "cold_many_run_seconds": cold.result.get("seconds") if cold.ok else None,
        "cold_many_files_read": len(cold.result.get("files_read", [])) if cold.ok else None,
        "cold_error": cold.error,
        "index_build": index_build,
    }


# The cases, each in a fresh process: `python -m benchmarks.landing_cost CASE ARGS RESULT`. ------


def _definitions(args: dict[str, Any]) -> tuple[Any, Any]:
    from benchmarks.workspace import Workspace
    from tabml_assets.definitions import build_definitions

    spec = Workspace.from_args(args).spec()
    return spec, build_definitions(spec)


def case_landing_index(args: dict[str, Any]) -> dict[str, Any]:
    """Tick the landing sensor as the daemon does until every landed file has been read."""
    from dagster import DagsterInstance, build_sensor_context

    _, defs = _definitions(args)
    repository = defs.get_repository_def()
    sensor = repository.get_sensor_def(SENSOR_NAME)
    ticks: list[dict[str, Any]] = []
    cursor = None
    with DagsterInstance.local_temp(args["dagster_home"]) as instance:
        for _ in range(MAX_TICKS):
            start = time.perf_counter()
            with build_sensor_context(
                instance=instance,
                cursor=cursor,
                repository_def=repository,
                sensor_name=SENSOR_NAME,
                resources=defs.resources,
            ) as context:
                data = sensor.evaluate_tick(context)
            seconds = time.perf_counter() - start
            cursor = data.cursor
            state = json.loads(cursor or "{}")
            ticks.append(
                {
                    "seconds": seconds,
                    "run_requests": len(data.run_requests),
                    "files_known": len(state.get("files", {})),
                }
            )
            if not data.run_requests and "read on the next tick" not in (data.skip_message or ""):
                break
    return {
        "ticks": len(ticks),
        "first_tick_seconds": ticks[0]["seconds"],
        "max_tick_seconds": max(t["seconds"] for t in ticks),
        "runs_requested_per_tick": [t["run_requests"] for t in ticks],
        "files_known_per_tick": [t["files_known"] for t in ticks],
    }


def case_landing_raw_day(args: dict[str, Any]) -> dict[str, Any]:
    """raw_data for one day, as a sensor-requested run materializes it."""
    from dagster import DagsterInstance

    from tabml_assets.seed import run_selection

    spec, defs = _definitions(args)
    defs.get_repository_def()
    with DagsterInstance.local_temp(args["dagster_home"]) as instance:
        start = time.perf_counter()
        result = run_selection(defs, instance, [spec.keys.raw_data], partition_key=args["day"])
        seconds = time.perf_counter() - start
        # The raw_data step alone, from its own events (the run also checks the stored day).
        stamps = {
            entry.dagster_event.event_type_value: entry.timestamp
            for entry in instance.all_logs(result.run_id)
            if entry.dagster_event is not None and entry.step_key == RAW_DATA_STEP
        }
    materialization = next(
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == spec.keys.raw_data
    )
    metadata = materialization.metadata
    return {
        "seconds": seconds,
        "step_seconds": stamps["STEP_SUCCESS"] - stamps["STEP_START"],
        "rows": int(metadata["dagster/row_count"].value),
        "files_read": list(metadata["files_read"].value),
        "files_in_folder": int(metadata["files_in_folder"].value),
    }


CASES = {"landing_index": case_landing_index, "landing_raw_day": case_landing_raw_day}


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The section's figures as a few lines (also what `--smoke` prints)."""
    if "few" not in result:
        return [f"landing: {result.get('error', result)}"]
    lines = []
    for name in ("few", "many", "large"):
        figure = result[name]
        lines.append(
            f"{name:>5}: {figure['files_in_folder']:>5} files, raw_data step "
            f"{figure['step_seconds']['median']:.2f} s (min {min(figure['step_seconds']['runs']):.2f}), run "
            f"{figure['run_seconds']['median']:.2f} s, process {figure['process_wall_seconds']['median']:.2f} s, peak RSS "
            f"{figure['peak_rss_mib']['median']:.0f} MiB, files read {figure['files_read']}"
        )
    lines.append(
        f"many/few {result['ratio_many_vs_few']:.2f}x (target <= 1.5x); large/few time {result['ratio_large_vs_few']:.2f}x, "
        f"memory {result['rss_ratio_large_vs_few']:.2f}x; cold many (no index) step {result['cold_many_step_seconds']} s"
    )
    for name, build in result["index_build"].items():
        lines.append(
            f"index {name}: {build['ticks']} tick(s), first {build['first_tick_seconds']:.1f} s, longest "
            f"{build['max_tick_seconds']:.1f} s, runs per tick {build['runs_requested_per_tick']}, "
            f"peak RSS {build['peak_rss_mib']:.0f} MiB"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    from benchmarks.cases import run_module_case, section_main

    argv = sys.argv[1:] if argv is None else argv
    if not run_module_case(CASES, argv):  # else a case in its own process, as run_case starts it
        section_main(__doc__, argv, "landing", lambda bench, _: measure(bench), summary_lines)


if __name__ == "__main__":
    main()
