"""On-disk cache of converted artifacts under ``models/``, keyed by everything that changes the result.

The key hashes the model's weights digest, the backend name and runtime version, the precision and
options, the input shape and the settings that matter; a hit means conversion is skipped, and the
row says so (``cache_hit``). The manifest records every file's size when the entry is committed; an
entry whose files have since been truncated or removed (a full disk, an interrupted copy) is not a
hit: it is rebuilt, and ``CacheEntry.note`` says why. Directory names are sanitised so no model or
backend name can place files outside the cache root.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
        """Mark the entry complete; only committed entries are hits next time."""
        files = {str(p.relative_to(self.path)): p.stat().st_size for p in sorted(self.path.rglob("*"))
                 if p.is_file() and p.name not in _BOOKKEEPING}
        (self.path / "manifest.json").write_text(
            json.dumps({"key": self.key, **(meta or {}), "files": files}, indent=2))

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class ArtifactCache:
    """Cache rooted at ``root`` for one model (``model_id`` is name + weights digest)."""

    def __init__(self, root: Path | str, model_id: str, enabled: bool = True) -> None:
        self.root = Path(root)
        self.model_id = model_id
        self.enabled = enabled

    def entry(self, backend: str, **parts: Any) -> CacheEntry:
        """Return the entry for (backend, parts...); creates its directory."""
        blob = json.dumps({"model": self.model_id, "backend": backend, **parts}, sort_keys=True, default=str)
        key = hashlib.sha256(blob.encode()).hexdigest()[:16]
        path = self.root / _safe(self.model_id) / _safe(backend) / key
        hit = self.enabled and (path / "manifest.json").is_file()
        damage = _damage(path) if hit else ""
        if not hit or damage:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True, exist_ok=True)
            (path / "key.json").write_text(blob)
        note = f"cached artifact in {path} was damaged ({damage}); rebuilding it" if damage else ""
        return CacheEntry(path=path, key=key, hit=hit and not damage, note=note)


_BOOKKEEPING = ("manifest.json", "key.json")


def _damage(path: Path) -> str:
    """'' when every file the manifest lists is there with its recorded size, else what is wrong."""
    try:
        files = json.loads((path / "manifest.json").read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return "unreadable manifest.json"
    if not isinstance(files, dict):
        return "unreadable manifest.json"
    for name, size in files.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        actual = f.stat().st_size
        if actual != size:
            return f"{name} has {actual} of {size} bytes"
    return ""


def _safe(text: str) -> str:
    """One path component: only letters, digits and ``-_.``; never ``..`` or empty."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip(".")
    return safe or "_"


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
            if f in ("manifest.json", "key.json"):
                continue
            total += os.path.getsize(os.path.join(dirpath, f))
    return total / 1e6
