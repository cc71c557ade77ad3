"""Registered model versions' artifacts, kept on local disk once downloaded.

A registered version never changes, so its files can be kept: an entry is keyed by model name,
version and the MLflow run that logged it (a registry rebuilt from scratch reuses version
numbers, never run ids). An entry is filled in a temporary folder beside it and renamed into
place only once complete, with a manifest of every file's size and SHA-256; an entry whose
files do not match its manifest (a partial copy, a disk error, a hand edit) is removed and
downloaded again, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tabml_assets.resources.storage import remove_stale_temp_files, temp_prefix

MANIFEST = ".tabml-manifest.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_of(folder: Path) -> dict[str, dict[str, int | str]]:
    """Every file under `folder` (but the manifest): relative path -> size and SHA-256."""
    return {
        str(path.relative_to(folder)): {"size": path.stat().st_size, "sha256": file_digest(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


@dataclass(frozen=True)
class ModelCache:
    """<root>/<model name>/<version>-<run id>/: one registered version's downloaded artifacts."""

    root: Path

    def entry(self, name: str, version: str, run_id: str) -> Path:
        return self.root / _UNSAFE.sub("_", name) / f"{_UNSAFE.sub('_', str(version))}-{_UNSAFE.sub('_', run_id)}"

    def get(self, entry: Path) -> Path | None:
        """The entry's folder if it is complete and every file matches its manifest; an entry
        that does not is removed (so the caller downloads again)."""
        if not entry.is_dir():
            return None
        try:
            expected = json.loads((entry / MANIFEST).read_text())
            intact = isinstance(expected, dict) and expected == manifest_of(entry)
        except (OSError, ValueError):
            intact = False
        if not intact:
            self.evict(entry)
            return None
        return entry

    def fill(self, entry: Path, download: Callable[[Path], Path]) -> Path:
        """Make the entry with `download(staging_folder) -> the downloaded model folder`,
        atomically: a temporary folder beside it, its manifest written last, then one rename."""
        entry.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(entry.parent)
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix(entry), suffix=".tmp", dir=entry.parent))
        try:
            downloaded = download(staging)
            (downloaded / MANIFEST).write_text(json.dumps(manifest_of(downloaded), indent=1))
            try:
                os.rename(downloaded, entry)
            except OSError:
                # Another process filled it first: keep theirs if it is intact.
                if self.get(entry) is None:
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return entry

    def evict(self, entry: Path) -> None:
        """Remove an entry: renamed aside first, so no reader sees it half removed."""
        aside = entry.parent / f".{entry.name}.evicted-{uuid.uuid4().hex}"
        try:
            os.rename(entry, aside)
        except FileNotFoundError:
            return
        shutil.rmtree(aside, ignore_errors=True)
