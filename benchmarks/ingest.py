"""Ingesting one large day: raw_data's time and memory against a bare read-validate-write (issue 16).

One UTC day of N demo trips (10M at full size) in one landing file, parquet and CSV. The tabml
side is `raw_data` for that day on the dev deployment, in a fresh process, after the landing
sensor has indexed the file (as the daemon would before the run): it streams the file in
batches, validates every row against the dataset spec, quarantines the bad ones with their
reasons and provenance, and writes both partitions atomically. The baseline is what one would
write by hand with pandas: read the whole file, apply the same rules as boolean masks, drop
duplicates, write the valid and the quarantined rows to parquet.

Figures: the raw_data step's own time (from its events) and the process's peak RSS, beside the
bare script's time (read to written) and peak RSS; medians of the repeats, interleaved. Targets:
peak RSS < 2 GB at 10M rows, time <= 1.2x the bare script.

    python -m benchmarks.run --only ingest            # the section, inside `make bench`
    python -m benchmarks.ingest --smoke               # alone, tiny sizes, results printed
    python -m benchmarks.ingest --rows 1000000        # alone, 1M rows, parquet only
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from benchmarks import workspace as ws

if TYPE_CHECKING:
    from benchmarks.run import Bench, Measurement

log = logging.getLogger("tabml.bench")
MODULE = "benchmarks.ingest"
DAY = dt.date(2025, 8, 20)
FORMATS = ("parquet", "csv")


def landed_file(bench: Bench, rows: int, kind: str) -> Path:
    parquet = ws.land_trips(bench.cache, [DAY], rows, file_name=f"ingest_{DAY}_{rows}.parquet")
    if kind == "parquet":
        return parquet
    csv = bench.cache / f"ingest_{DAY}_{rows}.csv"
    if not csv.exists():
        pd.read_parquet(parquet).to_csv(csv, index=False)
    return csv


def measure(bench: Bench, rows: int | None = None, formats: tuple[str, ...] = FORMATS) -> dict[str, Any]:
    from benchmarks.run import ratio, run_case, summarize

    rows = rows or bench.sizes.large_scoring_rows
    out: dict[str, Any] = {"available": True, "day": DAY.isoformat(), "rows": rows}
    for kind in formats:
        source = landed_file(bench, rows, kind)
        workspace = ws.create_workspace(bench.work, f"ingest_{kind}")
        ws.link_files([source], workspace.landing)
        index = run_case("landing_index", workspace.as_args(), bench.logs, env=workspace.env(), timeout=1800,
                         module="benchmarks.landing_cost")
        if not index.ok:
            raise RuntimeError(f"ingest {kind}: indexing the landing folder failed: {index.error}")
        tabml_runs: list[Measurement] = []
        bare_runs: list[Measurement] = []
        for repeat in range(bench.sizes.repeats):  # interleaved: machine load hits both alike
            # The landing section's raw_data case: the step as a sensor-requested run makes it.
            tabml_runs.append(
                run_case("landing_raw_day", {**workspace.as_args(), "day": DAY.isoformat()}, bench.logs,
                         env=workspace.env(), timeout=1800, module="benchmarks.landing_cost")
            )
            bare_runs.append(
                run_case("bare_raw_day", {"file": str(source), "day": DAY.isoformat(),
                                          "output": str(bench.work / f"bare_ingest_{kind}_{repeat}")},
                         bench.logs, timeout=1800, module=MODULE)
            )
        tabml_seconds = summarize(tabml_runs, lambda m: m.result["step_seconds"])
        bare_seconds = summarize(bare_runs, lambda m: m.result["seconds"])
        tabml_rss = summarize(tabml_runs, lambda m: m.peak_rss_mib)
        done = [m for m in tabml_runs if m.ok]
        bare_done = [m for m in bare_runs if m.ok]
        out[kind] = {
            "file_mib": source.stat().st_size / 2**20,
            "index_seconds": index.result.get("first_tick_seconds"),
            "index_peak_rss_mib": index.peak_rss_mib,
            "tabml_step_seconds": tabml_seconds,
            "tabml_run_seconds": summarize(tabml_runs, lambda m: m.result["seconds"]),
            "tabml_process_wall_seconds": summarize(tabml_runs, lambda m: m.wall_seconds),
            "tabml_peak_rss_mib": tabml_rss,
            "bare_seconds": bare_seconds,
            "bare_process_wall_seconds": summarize(bare_runs, lambda m: m.wall_seconds),
            "bare_peak_rss_mib": summarize(bare_runs, lambda m: m.peak_rss_mib),
            "time_ratio": ratio(tabml_seconds["median"], bare_seconds["median"]),
            "tabml_rows": {"stored": done[0].result["rows"]} if done else None,
            "bare_rows": {"stored": bare_done[0].result["rows"], "quarantined": bare_done[0].result["quarantined"]}
            if bare_done else None,
        }
    out["targets"] = {"peak_rss_mib_max": 2048, "time_ratio_max": 1.2}
    return out


# The cases, each in a fresh process: `python -m benchmarks.ingest CASE ARGS RESULT`. --------------


def case_bare_raw_day(args: dict[str, Any]) -> dict[str, Any]:
    """The same day by hand: read the file whole, the taxi rules as masks, two parquet files."""
    import numpy as np

    path, day = Path(args["file"]), pd.Timestamp(args["day"])
    output = Path(args["output"])
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pickup, dropoff = "tpep_pickup_datetime", "tpep_dropoff_datetime"
    if path.suffix == ".csv":
        frame = pd.read_csv(path, parse_dates=[pickup, dropoff])
    else:
        frame = pd.read_parquet(path)
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    rules = {
        f"null {c}": frame[c].isna() for c in (pickup, dropoff, "trip_distance", "pickup_zip", "dropoff_zip")
    }
    rules["trip_distance outside (0, 400)"] = (frame["trip_distance"] <= 0) | (frame["trip_distance"] >= 400)
    rules["fare_amount outside (0, 1000)"] = (frame["fare_amount"] <= 0) | (frame["fare_amount"] >= 1000)
    rules[f"{pickup} outside the partition's day"] = (frame[pickup] < day) | (frame[pickup] >= day + pd.Timedelta(days=1))
    rules["dropoff before pickup"] = frame[dropoff] < frame[pickup]
    rules[f"{pickup} in the future"] = frame[pickup] > now
    rules[f"{dropoff} in the future"] = frame[dropoff] > now
    rules["duplicate row"] = frame.duplicated(keep="first")
    bad = np.zeros(len(frame), dtype=bool)
    for mask in rules.values():
        bad |= mask.to_numpy(dtype=bool)
    quarantined = frame[bad].copy()
    quarantined["reason"] = ""
    for reason, mask in rules.items():
        hit = mask[bad].to_numpy(dtype=bool)
        quarantined.loc[hit, "reason"] = np.where(
            quarantined.loc[hit, "reason"] == "", reason, quarantined.loc[hit, "reason"] + "; " + reason
        )
    valid = frame[~bad]
    valid.to_parquet(output / "raw_data.parquet", index=False)
    quarantined.to_parquet(output / "quarantine.parquet", index=False)
    return {"seconds": time.perf_counter() - start, "rows": len(valid), "quarantined": len(quarantined)}


CASES = {"bare_raw_day": case_bare_raw_day}


def summary_lines(result: dict[str, Any]) -> list[str]:
    if "rows" not in result:
        return [f"ingest: {result.get('error', result)}"]
    lines = []
    for kind in FORMATS:
        if kind not in result:
            continue
        figure = result[kind]
        lines.append(
            f"{kind:>7} {result['rows']:,} rows ({figure['file_mib']:.0f} MiB): raw_data step "
            f"{figure['tabml_step_seconds']['median']:.1f} s, peak RSS {figure['tabml_peak_rss_mib']['median']:.0f} MiB; "
            f"bare {figure['bare_seconds']['median']:.1f} s, peak RSS {figure['bare_peak_rss_mib']['median']:.0f} MiB; "
            f"time {figure['time_ratio']:.2f}x (target <= 1.2x); index tick {figure['index_seconds']:.1f} s, "
            f"{figure['index_peak_rss_mib']:.0f} MiB; rows tabml {figure['tabml_rows']} bare {figure['bare_rows']}"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    from benchmarks.cases import run_module_case, section_main

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rows", type=int, help="rows of the day (default: the scoring section's large size)")
        parser.add_argument("--format", action="append", choices=FORMATS, help="landing file format (repeatable)")

    argv = sys.argv[1:] if argv is None else argv
    if not run_module_case(CASES, argv):  # else a case in its own process, as run_case starts it
        section_main(
            __doc__, argv, "ingest",
            lambda bench, chosen: measure(bench, chosen.rows, tuple(chosen.format or FORMATS)),
            summary_lines, options,
        )


if __name__ == "__main__":
    main()
