"""The compatibility module is the only door to Dagster's private modules, and what it mirrors
still matches the installed Dagster (a failure here names what an upgrade moved)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from dagster._core.storage import tags as dagster_tags
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES
from dagster._core.test_utils import freeze_time

import tabml_assets
from tabml_assets import dagster_compat
from tabml_assets.automation.inflight import UNFINISHED_STATUSES

PACKAGE = Path(tabml_assets.__file__).parent
PRIVATE_IMPORT = re.compile(r"^\s*(from|import)\s+dagster\._", re.MULTILINE)


def test_only_the_compat_module_imports_private_dagster_modules() -> None:
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "dagster_compat.py" and PRIVATE_IMPORT.search(path.read_text())
    ]
    assert offenders == [], f"import these through tabml_assets/dagster_compat.py: {offenders}"


def test_run_tags_match_dagsters_own() -> None:
    assert dagster_compat.PARTITION_NAME_TAG == dagster_tags.PARTITION_NAME_TAG
    assert dagster_compat.ASSET_PARTITION_RANGE_START_TAG == dagster_tags.ASSET_PARTITION_RANGE_START_TAG
    assert dagster_compat.ASSET_PARTITION_RANGE_END_TAG == dagster_tags.ASSET_PARTITION_RANGE_END_TAG


def test_unfinished_statuses_are_dagsters_not_finished_ones() -> None:
    assert set(UNFINISHED_STATUSES) == set(NOT_FINISHED_STATUSES)


def test_current_datetime_follows_a_frozen_dagster_clock() -> None:
    frozen = dt.datetime(2026, 3, 5, 1, 30, tzinfo=dt.UTC)
    with freeze_time(frozen):
        assert dagster_compat.current_datetime() == frozen
    assert dagster_compat.current_datetime().tzinfo == dt.UTC


def test_cron_helpers() -> None:
    assert dagster_compat.is_valid_cron_string("30 0 * * *")
    assert not dagster_compat.is_valid_cron_string("every day")
    assert dagster_compat.get_smallest_cron_interval("0 */6 * * *") == dt.timedelta(hours=6)
