"""What changed in the landing folder, and which days it touches: pure functions for the sensor.

A landed file is identified by its name and the SHA-256 of its bytes, so touching a file or
dropping the same content again changes nothing, while any edit is seen even when the size
and mtime look the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tabml_assets.resources.data_sources import UnreadableFileError, read_landed_file
from tabml_assets.spec import DatasetSpec


@dataclass(frozen=True)
class LandedFile:
    """One file as the sensor last saw it: its content hash and the UTC event-time days it holds."""

    sha256: str
    days: tuple[str, ...]
    error: str | None = None


@dataclass(frozen=True)
class LandingChanges:
    """Files that appeared, changed or disappeared since the last scan, and the days they touch."""

    files: dict[str, LandedFile]
    changed: dict[str, str] = field(default_factory=dict)  # name -> new sha256, or "deleted"
    days_changed_by: dict[str, list[str]] = field(default_factory=dict)  # day -> file names
    unreadable: dict[str, str] = field(default_factory=dict)  # name -> error message


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def event_days(frame: pd.DataFrame, event_time: str) -> tuple[str, ...]:
    """The sorted UTC days (partition keys) of a landed frame's event times."""
    return tuple(sorted(pd.to_datetime(frame[event_time]).dt.strftime("%Y-%m-%d").unique()))


def scan_landing_folder(
    paths: list[Path], previous: dict[str, LandedFile], dataset: DatasetSpec
) -> LandingChanges:
    """Compare the folder with the previous scan; read only files whose content changed."""
    files: dict[str, LandedFile] = {}
    changes = LandingChanges(files=files)
    for path in paths:
        sha = file_sha256(path)
        before = previous.get(path.name)
        if before is not None and before.sha256 == sha:
            files[path.name] = before
            continue
        try:
            days = event_days(read_landed_file(path, dataset), dataset.event_time)
            files[path.name] = LandedFile(sha, days)
        except UnreadableFileError as exc:
            # Remembered with its hash: retried only when the file's content changes.
            files[path.name] = LandedFile(sha, (), str(exc))
            changes.unreadable[path.name] = str(exc)
            continue
        changes.changed[path.name] = sha
        # Days the file no longer holds changed too: their rows must disappear downstream.
        for day in sorted(set(days) | set(before.days if before else ())):
            changes.days_changed_by.setdefault(day, []).append(path.name)
    for name, before in previous.items():
        if name not in files:
            changes.changed[name] = "deleted"
            for day in before.days:
                changes.days_changed_by.setdefault(day, []).append(name)
    return changes


def landing_run_key(day: str, changed: dict[str, str], names: list[str]) -> str:
    """Same day and same file contents -> same run key, so Dagster never runs them twice."""
    digest = hashlib.sha256("|".join(f"{n}={changed[n]}" for n in sorted(names)).encode())
    return f"landing:{day}:{digest.hexdigest()[:16]}"


def files_to_json(files: dict[str, LandedFile]) -> dict[str, dict[str, object]]:
    return {
        name: {"sha256": f.sha256, "days": list(f.days), **({"error": f.error} if f.error else {})}
        for name, f in files.items()
    }


def files_from_json(raw: dict[str, dict[str, object]]) -> dict[str, LandedFile]:
    return {
        name: LandedFile(str(v["sha256"]), tuple(v.get("days", ())), v.get("error"))  # type: ignore[arg-type]
        for name, v in raw.items()
    }
