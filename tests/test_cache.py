"""The artifact cache trusts an entry only while its files hash as they did when it was committed."""

from __future__ import annotations

import json

from infertune.cache import ArtifactCache, entry_problem, file_sha256, verify_entry


def _committed(tmp_path, warnings: list[str]):
    cache = ArtifactCache(tmp_path, "model-abc", warn=warnings.append)
    entry = cache.entry("onnx", opset=18)
    entry.file("model.onnx").write_bytes(bytes(range(256)) * 40)
    (entry.path / "sub").mkdir()
    entry.file("sub/weights.bin").write_bytes(b"\1" * 1000)
    entry.commit({"opset": 18})
    return cache, entry


def test_commit_records_size_and_sha256_of_every_file(tmp_path):
    _, entry = _committed(tmp_path, [])
    manifest = json.loads(entry.file("manifest.json").read_text())
    assert manifest["opset"] == 18 and entry.meta() == {"opset": 18}
    assert manifest["files"]["model.onnx"] == {"size": 10240, "sha256": file_sha256(entry.file("model.onnx"))}
    assert set(manifest["files"]) == {"model.onnx", "sub/weights.bin"}


def test_bytes_overwritten_in_place_rebuild_the_entry_with_one_warning(tmp_path):
    warnings: list[str] = []
    cache, entry = _committed(tmp_path, warnings)
    assert cache.entry("onnx", opset=18).hit and warnings == []
    with open(entry.file("model.onnx"), "r+b") as f:  # 200 bytes overwritten, size unchanged
        f.seek(3000)
        f.write(b"\0" * 200)
    again = cache.entry("onnx", opset=18)
    assert not again.hit and not again.file("model.onnx").exists()  # rebuilt from scratch
    assert len(warnings) == 1 and warnings[0] == again.note
    assert "model.onnx does not match its recorded SHA-256" in warnings[0] and "rebuilding it" in warnings[0]


def test_verify_entry_checks_a_directory_or_one_file(tmp_path):
    _, entry = _committed(tmp_path, [])
    assert verify_entry(entry.path) and verify_entry(entry.file("model.onnx")) and entry_problem(entry.path) == ""
    weights = entry.file("sub/weights.bin")
    weights.write_bytes(b"\0" * 1000)  # zeroed, same size
    assert verify_entry(entry.file("model.onnx"))  # that file alone is still intact
    assert not verify_entry(weights) and not verify_entry(entry.path)
    assert entry_problem(entry.path) == "sub/weights.bin does not match its recorded SHA-256: its content changed after it was cached"
    weights.write_bytes(b"\1" * 10)
    assert entry_problem(weights) == "sub/weights.bin has 10 of 1000 bytes"
    weights.unlink()
    assert entry_problem(entry.path) == "sub/weights.bin is missing"
    assert entry_problem(tmp_path / "nowhere") == "unreadable manifest.json"


def test_an_entry_cached_without_hashes_is_not_trusted(tmp_path):
    warnings: list[str] = []
    cache, entry = _committed(tmp_path, warnings)
    manifest = entry.file("manifest.json")
    manifest.write_text(json.dumps({"key": entry.key, "files": {"model.onnx": 10240}}))  # an older manifest
    again = cache.entry("onnx", opset=18)
    assert not again.hit and "no recorded content hash" in warnings[0]


def test_a_settled_file_is_hashed_once_per_process_and_again_once_it_changes(tmp_path, monkeypatch):
    import os

    from infertune import cache

    path = tmp_path / "model.onnx"
    path.write_bytes(b"\1" * 4096)
    old = 1_000_000_000_000_000_000  # written long ago (ns)
    os.utime(path, ns=(old, old))
    reads: list[str] = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: (reads.append(str(p)), real_open(p, *a, **k))[1])
    first = cache.file_sha256(path)
    assert cache.file_sha256(path) == first and reads == [str(path)]  # the second call read nothing
    path.write_bytes(b"\2" * 4096)  # same size, written now: a new time, hashed again (and every time)
    assert cache.file_sha256(path) != first and cache.file_sha256(path) == cache.file_sha256(path)
    assert len(reads) == 4
