"""What tabml needs of Dagster 1.13 that `dagster` does not export: the one module that imports
from `dagster._...` (and from `dagster_shared`), each name with the reason no public API serves.

Everything else in tabml uses `from dagster import ...`. On a Dagster upgrade this module is the
list to check; `tabml_assets_tests/test_dagster_compat.py` fails when one of these moves.
"""

from __future__ import annotations

import datetime as dt

# Checks a config dict against a schema, fills its defaults and resolves `{"env": ...}`, as
# Dagster does for resource config. The step launcher applies dagster-databricks' schema with it
# when a step launches, so that loading the code location need not import dagster-databricks;
# `dagster` offers this only for a whole job's run config (`validate_run_config`).
from dagster._config import process_config as process_config

# The return type of the public `define_asset_job`. `dagster` exports no name for it (only the
# resolved `JobDefinition`), and jobs, schedules and sensors are typed with it.
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition as UnresolvedAssetJobDefinition,
)

# What a run launcher's `check_run_worker_health` must return, and the origin of a run launched
# through a gRPC code server (whose host says whether the run worker is a local process). The
# public `RunLauncher` API names both types but `dagster` exports neither.
from dagster._core.launcher import (
    CheckRunHealthResult as CheckRunHealthResult,
)
from dagster._core.launcher import (
    WorkerStatus as WorkerStatus,
)
from dagster._core.remote_origin import (
    GrpcServerCodeLocationOrigin as GrpcServerCodeLocationOrigin,
)

# Dagster's clock. The daemon stamps ticks with it and Dagster's test helper `freeze_time` moves
# it, so a sensor that reads it sees the same "now" as the tick it evaluates; `datetime.now`
# would not follow a frozen tick.
from dagster._time import get_current_datetime as _dagster_now

# Dagster's own cron parser (Dagster ships no croniter): validating the spec's cron strings
# with it accepts exactly what schedules and `FreshnessPolicy.cron` accept.
from dagster._utils.schedules import (
    get_smallest_cron_interval as get_smallest_cron_interval,
)
from dagster._utils.schedules import is_valid_cron_string as is_valid_cron_string

# A step's error as recorded in the event log (a remote step's failure arrives as one). Defined
# in the dagster-shared package that dagster depends on; `dagster` does not re-export it.
from dagster_shared.error import SerializableErrorInfo as SerializableErrorInfo

# Run tags Dagster sets on partitioned runs and reads to know which partitions a run writes.
# Their values are documented (partitioned runs, backfills) but `dagster` exports no constants;
# the test module checks them against Dagster's own.
PARTITION_NAME_TAG = "dagster/partition"
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"


def current_datetime() -> dt.datetime:
    """Now, in UTC, on Dagster's clock (see the import above)."""
    return _dagster_now().astimezone(dt.UTC)

