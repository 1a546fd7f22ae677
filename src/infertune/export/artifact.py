"""Where a row's artifact lives in the cache, and the proof that its files are still the ones the cache recorded.

A row names its artifact relative to ``output.models_dir`` (``ResultRow.artifact``); the cache entry is
the directory above it that holds a ``manifest.json`` (``infertune.cache``). Before a file leaves the
cache it is checked against that manifest: its recorded size, and its recorded sha256 where the
manifest has one (``infertune.cache`` records both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from infertune.cache import MANIFEST as CACHE_MANIFEST
from infertune.cache import file_sha256
from infertune.errors import InfertuneError


class ArtifactError(InfertuneError):
    """The artifact a row names is missing or is not what the cache recorded."""



@dataclass(frozen=True)
class CachedFile:
    """One file of a cache entry, the name it gets in an export, and what the cache recorded about it."""

    path: Path
    export_name: str
    recorded_bytes: int | None
    recorded_sha256: str | None


def entry_dir(path: Path) -> Path:
    """The cache entry holding ``path`` (a file of the entry, or the entry itself)."""
    for candidate in (path, *path.parents):
        if (candidate / CACHE_MANIFEST).is_file():
            return candidate
    raise ArtifactError(f"{path} is not inside a committed cache entry (no {CACHE_MANIFEST} above it): "
                        "the cache was cleared or moved; run the variant again to rebuild it")


def cache_manifest(entry: Path) -> dict:
    try:
        doc = json.loads((entry / CACHE_MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise ArtifactError(f"cannot read {entry / CACHE_MANIFEST} ({err}); run the variant again to rebuild "
                            "the entry") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{entry / CACHE_MANIFEST} is not a cache manifest; run the variant again")
    return doc


def cached_files(entry: Path, names: list[str] | None = None) -> list[CachedFile]:
    """The files of ``entry`` (all that its manifest lists, or ``names``) with what the manifest recorded."""
    listed = cache_manifest(entry).get("files")
    records = listed if isinstance(listed, dict) else {}
    out = []
    for name in names if names is not None else sorted(records):
        size, digest = _recorded(records.get(name))
        out.append(CachedFile(entry / name, Path(name).name, size, digest))
    return out


def _recorded(record: object) -> tuple[int | None, str | None]:
    """(size, sha256) from a manifest's ``files`` entry: a size, or ``{"size": .., "sha256": ..}``."""
    if isinstance(record, dict):
        size, digest = record.get("size"), record.get("sha256")
        return (size if isinstance(size, int) else None), (digest if isinstance(digest, str) else None)
    return (record if isinstance(record, int) else None), None


def check_copy(cached: CachedFile, copy: Path) -> str:
    """Compare ``copy`` (just copied out of the cache) with the cache's record; return its sha256.

    Raises ArtifactError naming the file, what was recorded and what is there.
    """
    if not cached.path.is_file():
        raise ArtifactError(f"{cached.path} is missing from the cache: run the variant again to rebuild it")
    size = copy.stat().st_size
    if cached.recorded_bytes is not None and size != cached.recorded_bytes:
        raise ArtifactError(f"{cached.path} has {size} bytes but the cache recorded {cached.recorded_bytes}: "
                            "the file changed after it was built; run the variant again (or --no-cache)")
    digest = file_sha256(copy)
    if cached.recorded_sha256 is not None and digest != cached.recorded_sha256:
        raise ArtifactError(f"{cached.path} does not match its recorded sha256 (recorded {cached.recorded_sha256[:16]}..., "
                            f"now {digest[:16]}...): the file changed after it was built and is not the artifact "
                            "that was measured; run the variant again (or --no-cache) and export that run")
    return digest
