"""Render a benchmark results document as the markdown table the README shows."""

from __future__ import annotations

from typing import Any


def _num(value: float | None, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def _med(figure: dict[str, Any] | None, digits: int = 1, suffix: str = "") -> str:
    return _num((figure or {}).get("median"), digits, suffix)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def _rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(benchmark, tabml, baseline, ratio, target, verdict) rows, in the issue's order."""
    rows: list[tuple[str, str, str, str, str, str]] = []
    failed = {name: section["error"] for name, section in results.items() if "error" in section}

    e2e = results.get("end_to_end")
    if e2e and "error" not in e2e:
        label = f"1. End to end: {e2e['training_window_rows']:,}-row window + {e2e['scoring_rows']:,}-row day"
        wall = e2e["ratio_wall"]
        rows.append((label + " (process wall)", _med(e2e["tabml_wall_seconds"], suffix=" s"),
                     _med(e2e["bare_wall_seconds"], suffix=" s"), _num(wall, 2, "×"), "≤ 1.25×",
                     _verdict(None if wall is None else wall <= e2e["target_ratio_max"])))
        work = e2e["ratio_work"]
        rows.append(("   same, without interpreter start and imports", _med(e2e["tabml_work_seconds"], suffix=" s"),
                     _med(e2e["bare_work_seconds"], suffix=" s"), _num(work, 2, "×"), "", ""))

    scoring = results.get("scoring")
    if scoring and "error" not in scoring:
        targets = scoring["targets"]
        for index, (label, size) in enumerate(scoring["sizes"].items()):
            throughput = size["throughput_ratio"]
            # The small size's target, then the large one's (older results have only the first).
            minimum = targets["throughput_ratio_min"] if index == 0 else targets.get("large_throughput_ratio_min", targets["throughput_ratio_min"])
            rows.append((f"2. Batch scoring {label} rows: rows/s", _med(size["tabml_rows_per_second"], 0),
                         _med(size["bare_rows_per_second"], 0), _num(throughput, 2, "×"), f"≥ {minimum:g}×",
                         _verdict(None if throughput is None else throughput >= minimum)))
        for index, (label, size) in enumerate(scoring["sizes"].items()):
            peak = size["tabml_peak_rss_mib"]["median"]
            target, verdict = "", ""
            if index == len(scoring["sizes"]) - 1:
                target = f"< {scoring['targets']['peak_rss_mib_max_at_10M']:,} MiB"
                verdict = _verdict(None if peak is None else peak < scoring["targets"]["peak_rss_mib_max_at_10M"])
            rows.append((f"   peak RSS, {label} rows", _med(size["tabml_peak_rss_mib"], 0, " MiB"),
                         _med(size["bare_peak_rss_mib"], 0, " MiB"), "", target, verdict))
        growth, rows_growth = scoring.get("rss_growth"), scoring.get("rows_growth")
        rows.append(("   peak RSS growth for the rows' growth", _num(growth, 2, "×"), "", f"rows {_num(rows_growth, 0, '×')}",
                     "sub-linear", _verdict(None if growth is None or rows_growth is None else growth < rows_growth)))

    backfill = results.get("backfill")
    if backfill and "error" not in backfill:
        rows.append((f"3. Backfill {backfill['days']} days raw → features → predictions "
                     f"({backfill['policy_runs']:.0f} runs vs {backfill['days']})",
                     _med(backfill["policy_seconds"], suffix=" s"), _med(backfill["per_partition_seconds"], suffix=" s"),
                     _num(backfill["speedup"], 1, "× faster"), "", ""))

    load = results.get("load_time")
    if load and "error" not in load:
        floor = load.get("import_floor", {}).get("process_wall_seconds")
        for deployment, figures in load.items():
            if deployment == "import_floor" or not isinstance(figures, dict) or "process_wall_seconds" not in figures:
                continue
            share = figures.get("ratio_to_floor")
            rows.append((f"4. Load time, {deployment}: import + Definitions (process wall)",
                         _med(figures["process_wall_seconds"], 2, " s"),
                         f"{_med(floor, 2, ' s')} (import dagster, pandas, sklearn)" if floor else "",
                         _num(share, 2, "×"), f"≤ {load.get('target_ratio_max', 1.25)}×",
                         _verdict(None if share is None else share <= load.get("target_ratio_max", 1.25))))

    sensor = results.get("sensor")
    if sensor and "error" not in sensor:
        if sensor.get("available"):
            rows.append(("5. Sensor reaction: file landed → rescoring run started", _med(sensor["landed_to_run_started_seconds"], suffix=" s"),
                         "", f"interval {sensor.get('sensor_interval_seconds', 'n/a')} s", "", ""))
        else:
            rows.append(("5. Sensor reaction", "not measured", "", "", "", sensor.get("reason", "")))

    spark = results.get("spark")
    if spark and "error" not in spark:
        if spark.get("available"):
            rows.append((f"6. Spark {spark['master']} scoring {spark['rows']:,} rows: rows/s", _med(spark["spark_rows_per_second"], 0),
                         f"pandas path {_med(spark['pandas_rows_per_second'], 0)}", _num(spark.get("ratio"), 2, "×"), "", ""))
            rows.append(("   peak RSS (driver + JVM)", _med(spark["spark_peak_rss_mib"], 0, " MiB"),
                         f"pandas path {_med(spark['pandas_peak_rss_mib'], 0, ' MiB')}", "", "", ""))
        else:
            rows.append(("6. Spark path", "not measured", "", "", "", spark.get("reason", "")))

    training = results.get("spark_training")
    if training and "error" not in training:
        rows.append((f"9. Training one {training['days']}-day window of {int(training['rows'] or 0):,} rows on Spark "
                     f"{training['master']} (xgboost.spark): rows/s", _med(training["spark_rows_per_second"], 0),
                     f"one process {_med(training['process_rows_per_second'], 0)}", _num(training.get("ratio"), 2, "×"), "",
                     f"session start {_med(training['spark_session_start_seconds'], 1, ' s')}, not timed"))
        rows.append(("   peak RSS (driver + JVM)", _med(training["spark_peak_rss_mib"], 0, " MiB"),
                     f"one process {_med(training['process_peak_rss_mib'], 0, ' MiB')}", "", "", ""))

    real = results.get("real_taxi")
    if real and "error" not in real:
        if "skipped" in real:
            rows.append(("7. Real taxi sample, February RMSE", "not measured", "", "", "≤ 3.29", real["skipped"]))
        else:
            tabml, reference = real["tabml"]["february"], real["reference"]["february"]
            rows.append((f"7. Real taxi sample: trained on January 2016, February RMSE ({tabml['rows']:,} trips)",
                         _num(tabml["rmse"], 3), f"plain script {_num(reference['rmse'], 3)}", "",
                         f"≤ {real['target_rmse_max']:g}", _verdict(real["met"])))
            rows.append(("   February MAE", _num(tabml["mae"], 3), f"plain script {_num(reference['mae'], 3)}", "", "", ""))
            if "rmse_without_worst_5" in tabml:
                rows.append(("   February RMSE without the 5 worst trips", _num(tabml["rmse_without_worst_5"], 3),
                             f"plain script {_num(reference['rmse_without_worst_5'], 3)}", "", "",
                             f"the 5 worst carry {tabml['worst_5_share_of_squared_error']:.0%} of the squared error"))

    ingest = results.get("ingest")
    if ingest and "error" not in ingest:
        for kind in ("parquet", "csv"):
            figure = ingest.get(kind)
            if not figure:
                continue
            time_ratio, peak = figure["time_ratio"], figure["tabml_peak_rss_mib"]["median"]
            rows.append((f"9. Ingest one {ingest['rows']:,}-row day, {kind} landing file: raw_data step",
                         _med(figure["tabml_step_seconds"], suffix=" s"),
                         f"bare read-validate-write {_med(figure['bare_seconds'], suffix=' s')}",
                         _num(time_ratio, 2, "×"), f"≤ {ingest['targets']['time_ratio_max']}×",
                         _verdict(None if time_ratio is None else time_ratio <= ingest["targets"]["time_ratio_max"])))
            rows.append(("   peak RSS", _med(figure["tabml_peak_rss_mib"], 0, " MiB"),
                         _med(figure["bare_peak_rss_mib"], 0, " MiB"), "",
                         f"< {ingest['targets']['peak_rss_mib_max']:,} MiB",
                         _verdict(None if peak is None else peak < ingest["targets"]["peak_rss_mib_max"])))

    for name, error in failed.items():
        rows.append((f"{name}", "**failed**", "", "", "", error.splitlines()[0][:120]))
    return rows


def render_markdown(document: dict[str, Any]) -> str:
    machine = document["machine"]
    libraries = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items() if v)
    lines = [
        f"Measured {document['started_at']} on {machine['usable_cores']} cores ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB, load average at start {machine['load_average_at_start'][0]}; "
        f"Python {machine['python']}, {libraries}; commit {machine['git_commit']}. "
        f"Each figure is the median of {document['sizes']['repeats']} runs; the whole run took "
        f"{document['total_seconds'] / 60:.1f} min.",
        "",
        "| benchmark | tabml | baseline | ratio | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in _rows(document["results"])]
    return "\n".join(lines) + "\n"
