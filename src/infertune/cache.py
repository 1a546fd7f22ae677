"""On-disk cache of converted artifacts under ``models/``, keyed by everything that changes the result.

The key hashes the model's weights digest, the backend name and runtime version, the precision and
options, the input shape and the settings that matter; a hit means conversion is skipped, and the
row says so (``cache_hit``). The manifest records every file's size and SHA-256 when the entry is
committed, and a hit is checked against both: an entry whose files have since been truncated,
removed or overwritten (a full disk, an interrupted copy, bytes zeroed in place) is not a hit but is
rebuilt, with one warning line (``CacheEntry.note`` says why too). ``entry_problem`` / ``verify_entry``
re-check an artifact against its recorded hashes for code that reads a cached file directly. Hashing
reads every byte (about 0.1 s per 100 MB), which is why it happens when an entry is reused, never
while timing, and once per process for a file whose size, inode and modification time have not changed
since (a job reuses one export at every batch size: ``file_sha256``). Directory names are sanitised so no model or backend name can place files outside
the cache root.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
_BOOKKEEPING = (MANIFEST, "key.json")


@dataclass(frozen=True)
class CacheEntry:
    """One cache directory. ``hit`` is True when a previous run finished writing it."""

    path: Path
    key: str
    hit: bool
    #: why an entry that was committed is being rebuilt ("" when it was not damaged).
    note: str = ""

    def file(self, name: str) -> Path:
        return self.path / name

    def commit(self, meta: dict[str, Any] | None = None) -> None:
        """Mark the entry complete, recording each file's size and SHA-256; only committed entries are hits."""
        files = {str(p.relative_to(self.path)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
                 for p in sorted(self.path.rglob("*")) if p.is_file() and p.name not in _BOOKKEEPING}
        (self.path / MANIFEST).write_text(json.dumps({"key": self.key, **(meta or {}), "files": files}, indent=2))

    def meta(self) -> dict[str, Any]:
        """What ``commit`` recorded besides the files ({} before commit or when unreadable)."""
        manifest = _read_manifest(self.path)
        return {k: v for k, v in (manifest or {}).items() if k not in ("key", "files")}

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class ArtifactCache:
    """Cache rooted at ``root`` for one model (``model_id`` is name + weights digest)."""

    def __init__(self, root: Path | str, model_id: str, enabled: bool = True,
                 warn: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.model_id = model_id
        self.enabled = enabled
        #: where the one line about a damaged entry goes (a logging warning: the run's log, or stderr).
        self.warn = warn or logging.getLogger(__name__).warning

    def entry(self, backend: str, **parts: Any) -> CacheEntry:
        """Return the entry for (backend, parts...); creates its directory."""
        blob = json.dumps({"model": self.model_id, "backend": backend, **parts}, sort_keys=True, default=str)
        key = hashlib.sha256(blob.encode()).hexdigest()[:16]
        path = self.root / _safe(self.model_id) / _safe(backend) / key
        hit = self.enabled and (path / MANIFEST).is_file()
        damage = entry_problem(path) if hit else ""
        if not hit or damage:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True, exist_ok=True)
            (path / "key.json").write_text(blob)
        note = f"warning: cached artifact in {path} was damaged ({damage}); rebuilding it" if damage else ""
        if note:
            self.warn(note)
        return CacheEntry(path=path, key=key, hit=hit and not damage, note=note)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks.

    Remembered for this process while the file's size, inode and modification time stay the same, for a
    file last written more than a second before it was hashed: a later write then always gets a later
    time, however coarse the file system's clock (a file written within that second is hashed each time).
    """
    stat = os.stat(path)
    stamp = (os.path.abspath(path), stat.st_size, stat.st_ino, stat.st_mtime_ns)
    known = _HASHED.get(stamp)
    if known is not None:
        return known
    settled = stat.st_mtime_ns < time.time_ns() - 1_000_000_000
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if settled:
        _HASHED[stamp] = digest.hexdigest()
    return digest.hexdigest()


#: (path, size, inode, mtime) -> SHA-256 of the files this process hashed.
_HASHED: dict[tuple[str, int, int, int], str] = {}


def entry_problem(path: Path | str) -> str:
    """'' when a committed cache entry still holds what it was committed with, else what differs.

    ``path`` is the entry's directory (every file its manifest lists is checked) or one file inside
    it (only that file is checked). Sizes are compared first (cheap), then SHA-256 hashes. An entry
    whose manifest has no hashes (written by an older infertune) cannot be trusted and says so.
    """
    path = Path(path)
    entry_dir, only = path, None
    if path.is_file() and path.name not in _BOOKKEEPING:  # the entry is the nearest folder with a manifest
        entry_dir = next((d for d in path.parents if (d / MANIFEST).is_file()), path.parent)
        only = path.relative_to(entry_dir).as_posix()
    manifest = _read_manifest(entry_dir)
    files = manifest.get("files") if manifest is not None else None
    if not isinstance(files, dict):
        return f"unreadable {MANIFEST}"
    if only is not None:
        if only not in files:
            return f"{only} is not listed in {MANIFEST}"
        files = {only: files[only]}
    for name, recorded in files.items():
        if not isinstance(recorded, dict) or "sha256" not in recorded:
            return f"{name} has no recorded content hash (cached by an older version)"
        f = entry_dir / name
        if not f.is_file():
            return f"{name} is missing"
        size = f.stat().st_size
        if size != recorded.get("size"):
            return f"{name} has {size} of {recorded.get('size')} bytes"
        if file_sha256(f) != recorded["sha256"]:
            return f"{name} does not match its recorded SHA-256: its content changed after it was cached"
    return ""


def verify_entry(path: Path | str) -> bool:
    """True when the cache entry (directory) or cached file at ``path`` matches its recorded hashes."""
    return not entry_problem(path)


def _read_manifest(entry_dir: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((entry_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _safe(text: str) -> str:
    """One path component: only letters, digits and ``-_.``; never ``..`` or empty."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip(".")
    return safe or "_"


def artifact_ref(path: Path | str | None, cache_root: Path | str) -> str:
    """A row's ``artifact``: ``path`` relative to the cache root, as a POSIX string; "" for no artifact (or one outside the cache)."""
    if path is None:
        return ""
    try:
        return Path(path).resolve().relative_to(Path(cache_root).resolve()).as_posix()
    except ValueError:
        return ""


def dir_size_mb(path: Path | None) -> float | None:
    """Size on disk of a file or directory, in MB (10^6 bytes); None when there is no artifact."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return path.stat().st_size / 1e6
    if not path.exists():
        return None
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            if f in _BOOKKEEPING:
                continue
            total += os.path.getsize(os.path.join(dirpath, f))
    return total / 1e6
