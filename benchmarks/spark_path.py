"""The Spark scoring path (pyspark local mode, mapInPandas) against the pandas path on one machine.

Both score the same 10M-row features partition with the same champion through tabml's
batch_predictions; the Spark run swaps only the `spark` resource, as staging and prod do.
The session is started before the timed run (a cluster's session already exists); its start
is reported beside the figure.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any

from benchmarks import workspace as ws

if TYPE_CHECKING:
    from benchmarks.run import Bench, Measurement


def measure(bench: Bench) -> dict[str, Any]:
    from benchmarks.run import ratio, summarize

    if importlib.util.find_spec("tabml_assets.resources.spark") is None:
        return {"available": False, "reason": "tabml_assets.resources.spark does not exist in this checkout"}
    workspace = bench.scoring_workspace()
    bench.large_day_ingested(workspace)
    master = f"local[{len(os.sched_getaffinity(0))}]"
    day = ws.LARGE_SCORING_DAY.isoformat()
    spark_runs: list[Measurement] = []
    pandas_runs: list[Measurement] = list(bench.large_pandas_runs)
    for repeat in range(bench.sizes.repeats):
        spark_runs.append(bench.run("tabml_scoring", {**workspace.as_args(), "day": day, "spark_master": master},
                                    env=workspace.env(), profile="spark_scoring" if repeat == 0 else None))
        if len(pandas_runs) < bench.sizes.repeats:
            pandas_runs.append(bench.run("tabml_scoring", {**workspace.as_args(), "day": day}, env=workspace.env()))
    spark_rate = summarize(spark_runs, lambda m: m.result["rows"] / m.result["seconds"])
    pandas_rate = summarize(pandas_runs, lambda m: m.result["rows"] / m.result["seconds"])
    engines = sorted({str(m.result.get("engine")) for m in spark_runs if m.ok})
    return {
        "available": True,
        "master": master,
        "engine": engines,
        "rows": bench.sizes.large_scoring_rows,
        "spark_rows_per_second": spark_rate,
        "pandas_rows_per_second": pandas_rate,
        "ratio": ratio(spark_rate["median"], pandas_rate["median"]),
        "spark_seconds": summarize(spark_runs, lambda m: m.result["seconds"]),
        "spark_session_start_seconds": summarize(spark_runs, lambda m: m.result["spark_session_seconds"]),
        "spark_peak_rss_mib": summarize(spark_runs, lambda m: m.peak_rss_mib),
        "pandas_peak_rss_mib": summarize(pandas_runs, lambda m: m.peak_rss_mib),
    }
