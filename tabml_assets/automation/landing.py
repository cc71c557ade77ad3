"""What changed in the landing folder, and which days it touches: pure functions for the sensor.

A landed file is identified by its name and the SHA-256 of its bytes, so touching a file or
dropping the same content again changes nothing, while any edit is seen even when the size
and mtime look the same. A file is hashed again only when its fingerprint (size, mtime, ctime,
inode) moved, so a tick over a large, quiet folder reads no file.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabml_assets.resources.data_sources import FileFacts, LandingFolderSource, file_fingerprint


@dataclass(frozen=True)
class LandedFile:
    """One file as the sensor last saw it: its content hash and the UTC event-time days it holds."""

    sha256: str
    days: tuple[str, ...]
    # Why the file cannot be used; it then holds back `days` (when they are known).
    error: str | None = None
    fingerprint: str = ""
    # False when the file's event times cannot be read: `days` are those of its earlier content.
    days_known: bool = True


@dataclass(frozen=True)
class LandingChanges:
    """Files that appeared, changed or disappeared since the last scan, and the days they touch."""

    files: dict[str, LandedFile]
    changed: dict[str, str] = field(default_factory=dict)  # name -> new sha256, or "deleted"
    days_changed_by: dict[str, list[str]] = field(default_factory=dict)  # day -> file names
    unreadable: dict[str, str] = field(default_factory=dict)  # name -> why it cannot be used
    examined: dict[str, FileFacts] = field(default_factory=dict)  # files read for new content
    # Changed files left for the next tick when the scan's time budget ran out.
    deferred: list[str] = field(default_factory=list)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan_landing_folder(
    paths: list[Path],
    previous: dict[str, LandedFile],
    source: LandingFolderSource,
    deadline: float | None = None,
) -> LandingChanges:
    """Compare the folder with the previous scan; read only files whose content changed, until
    `deadline` (time.monotonic); the others wait for the next scan."""
    changes = LandingChanges(files={})
    files = changes.files
    to_read: dict[str, tuple[Path, str, str]] = {}
    for path in paths:
        try:
            fingerprint = file_fingerprint(path)
        except FileNotFoundError:
            continue  # removed since the folder was listed: seen as deleted below
        before = previous.get(path.name)
        if before is not None and before.fingerprint == fingerprint:
            files[path.name] = before
            continue
        sha = file_sha256(path)
        if before is not None and before.sha256 == sha:
            files[path.name] = dataclasses.replace(before, fingerprint=fingerprint)  # touched only
            continue
        to_read[path.name] = (path, sha, fingerprint)
    survey = source.survey([p for p, _, _ in to_read.values()], deadline=deadline)
    for name, (_, sha, fingerprint) in to_read.items():
        before = previous.get(name)
        facts = survey.facts.get(name)
        if facts is None:
            changes.deferred.append(name)
            if before is not None:
                files[name] = before  # the old view stands until the new content is read
            continue
        days = tuple(sorted(facts.event_days))
        if not facts.days_known and before is not None:
            days = tuple(sorted(set(days) | set(before.days)))
        files[name] = LandedFile(sha, days, facts.error, fingerprint, facts.days_known)
        changes.examined[name] = facts
        changes.changed[name] = sha
        if facts.error is not None:
            changes.unreadable[name] = facts.error
        # Days the file no longer holds changed too: their rows must disappear downstream.
        for day in sorted(set(days) | set(before.days if before else ())):
            changes.days_changed_by.setdefault(day, []).append(name)
    for name, before in previous.items():
        if name not in files and name not in changes.deferred:
            changes.changed[name] = "deleted"
            for day in before.days:
                changes.days_changed_by.setdefault(day, []).append(name)
    return changes


def landing_run_key(day: str, changed: dict[str, str], names: list[str]) -> str:
    """Same day and same file contents -> same run key, so Dagster never runs them twice."""
    digest = hashlib.sha256("|".join(f"{n}={changed[n]}" for n in sorted(names)).encode())
    return f"landing:{day}:{digest.hexdigest()[:16]}"


def blocking_files(files: dict[str, LandedFile]) -> dict[str, dict[str, str]]:
    """Day -> {file: why} for files that hold rows for the day but cannot be used."""
    blocked: dict[str, dict[str, str]] = {}
    for name, landed in sorted(files.items()):
        if landed.error is not None:
            for day in landed.days:
                blocked.setdefault(day, {})[name] = landed.error
    return blocked


def forget_gone_files(
    pending: dict[str, dict[str, Any]], files: dict[str, LandedFile], today: str
) -> dict[str, dict[str, Any]]:
    """Pending days that have not closed keep only the files still present and holding them.

    Such a day has no partition yet, so a file that is gone leaves nothing to undo; a day left
    with no file is dropped. Closed days keep their entry: a run must remove the rows.
    """
    kept: dict[str, dict[str, Any]] = {}
    for day, entry in pending.items():
        if day >= today:
            names = [n for n in entry["files"] if n in files and day in files[n].days]
            if not names:
                continue
            entry = {**entry, "files": names}
        kept[day] = entry
    return kept


@dataclass(frozen=True)
class FileReport:
    """One landed file's rows against the partition range: what the sensor shows and alerts on."""

    name: str
    rows: int
    in_range: dict[str, int]
    before_start: int
    not_closed: int
    error: str | None
    days_known: bool

    @property
    def summary(self) -> str:
        if self.error is not None:
            where = "" if self.days_known else " (the days it holds are unknown)"
            return f"{self.name} unreadable, set aside{where}: {self.error}"
        in_range = sum(self.in_range.values())
        parts = [f"{self.name}: {self.rows} rows, {in_range} for {len(self.in_range)} partition(s)"]
        if self.before_start:
            parts.append(f"{self.before_start} dated before the first partition, never ingested")
        if self.not_closed:
            parts.append(f"{self.not_closed} for days not closed yet, ingested once they close")
        return "; ".join(parts)


def report_file(name: str, facts: FileFacts, first_day: str, today: str) -> FileReport:
    rows_per_day = facts.rows_per_day()
    return FileReport(
        name=name,
        rows=facts.rows,
        in_range={d: n for d, n in rows_per_day.items() if first_day <= d < today},
        before_start=sum(n for d, n in rows_per_day.items() if d < first_day),
        not_closed=sum(n for d, n in rows_per_day.items() if d >= today),
        error=facts.error,
        days_known=facts.days_known,
    )


def files_to_json(files: dict[str, LandedFile]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name, f in files.items():
        entry: dict[str, object] = {
            "sha256": f.sha256,
            "days": list(f.days),
            "fingerprint": f.fingerprint,
        }
        if f.error:
            entry["error"] = f.error
        if not f.days_known:
            entry["days_known"] = False
        out[name] = entry
    return out


def files_from_json(raw: dict[str, dict[str, Any]]) -> dict[str, LandedFile]:
    return {
        name: LandedFile(
            str(v["sha256"]),
            tuple(v.get("days", ())),
            v.get("error"),
            str(v.get("fingerprint", "")),
            bool(v.get("days_known", True)),
        )
        for name, v in raw.items()
    }
