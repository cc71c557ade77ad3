"""Partitioned asset storage: parquet per partition, JSON for small records, atomic writes.

The same code serves dev (a local folder) and Databricks (a Unity Catalog volume or DBFS path,
which clusters mount as local files under /Volumes and /dbfs), so both sides see one store.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext

_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")


class UnsafePathError(ValueError):
    """A partition key or asset name that would escape the storage root."""


def safe_segment(value: str, what: str) -> str:
    """Reject keys such as '../x' or 'a/b' before they become file names."""
    if not _SAFE_SEGMENT.match(value) or ".." in value:
        raise UnsafePathError(
            f"{what}: expected letters, digits, '_', '-', '.', '=' (no path separators or '..'), "
            f"found {value!r}"
        )
    return value


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Write through `write(tmp_path)` into a temp file beside `path`, then rename into place.

    A crash mid-write leaves the previous version of `path` untouched and readable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_json_atomic(value: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2, default=str)))


class PartitionedParquetIOManager(ConfigurableIOManager):
    """Stores DataFrames as <root>/<asset>/<partition>.parquet and dicts as .json."""

    root: str

    def _path(self, asset_key_path: list[str], partition: str | None, suffix: str) -> Path:
        folder = Path(self.root).joinpath(*(safe_segment(p, "asset key") for p in asset_key_path))
        name = safe_segment(partition, "partition key") if partition is not None else "latest"
        return folder / f"{name}{suffix}"

    def partition_path(self, asset_name: str, partition: str | None, suffix: str = ".parquet") -> Path:
        return self._path([asset_name], partition, suffix)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            return
        key = list(context.asset_key.path)
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        if isinstance(obj, Mapping) and all(isinstance(v, pd.DataFrame) for v in obj.values()) and obj:
            # Partitioned tables arrive as one frame per partition key (several in a range run).
            expected = set(partitions)
            if set(obj) != expected:
                raise ValueError(
                    f"{'/'.join(key)}: expected frames for partitions {sorted(p for p in expected if p)}, "
                    f"found {sorted(obj)}"
                )
            for partition, frame in obj.items():
                write_parquet_atomic(frame, self._path(key, partition, ".parquet"))
            return
        if len(partitions) != 1:
            raise ValueError(
                f"{'/'.join(key)}: a run over {len(partitions)} partitions must return a "
                f"mapping of partition key -> DataFrame, found {type(obj).__name__}"
            )
        if isinstance(obj, pd.DataFrame):
            write_parquet_atomic(obj, self._path(key, partitions[0], ".parquet"))
        else:
            write_json_atomic(obj, self._path(key, partitions[0], ".json"))

    def load_input(self, context: InputContext) -> Any:
        key = list(context.asset_key.path)
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        frames: list[pd.DataFrame] = []
        missing: list[str] = []
        for partition in partitions:
            parquet = self._path(key, partition, ".parquet")
            if parquet.exists():
                frames.append(pd.read_parquet(parquet))
                continue
            as_json = self._path(key, partition, ".json")
            if as_json.exists() and len(partitions) == 1:
                return json.loads(as_json.read_text())
            missing.append(partition or "(unpartitioned)")
        if missing:
            raise FileNotFoundError(
                f"{'/'.join(key)}: partitions {missing} are not materialized under {Path(self.root)}; "
                f"materialize {'/'.join(key)} for them first"
            )
        if len(frames) == 1:
            return frames[0]
        non_empty = [f for f in frames if len(f)]
        return pd.concat(non_empty or frames[:1], ignore_index=True)
