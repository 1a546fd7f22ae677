"""The row schema: one field list drives the CSV, the JSON and the readers; unknown fields and statuses raise."""

from __future__ import annotations

import csv
import json

import pytest

from infertune.results import (
    FIELD_NAMES,
    STATUSES,
    ResultFiles,
    ResultRow,
    Status,
    read_rows,
)


def _row(**extra) -> ResultRow:
    fields = {"model": "m", "variant": "onnxruntime:int8", "backend": "onnxruntime", "precision": "int8",
              "options": "", "batch_size": 8, "device": "cpu"}
    return ResultRow(**{**fields, **extra})


def test_unknown_fields_and_statuses_raise_instead_of_vanishing():
    row = _row()
    with pytest.raises(TypeError, match="latency_p50"):
        row.update(latency_p50=1.0)  # a typo for latency_p50_ms
    with pytest.raises(TypeError):
        _row(throughput=3.0)
    with pytest.raises(ValueError):
        _row(status="segfaulted")
    row.update(status="crashed", error="worker process killed by SIGSEGV")
    assert row.status is Status.CRASHED and row.status == "crashed"


def test_statuses_are_plain_strings_in_the_files_and_rows_round_trip(tmp_path):
    assert STATUSES[0] == "ok" and all(str(Status(s)) == s == f"{Status(s)}" for s in STATUSES)
    rows = [_row(status=Status.TIMEOUT, error="cell ran longer than 4 s", note="a, b"),
            _row(batch_size=1, latency_p50_ms=2.5, throughput_ips=400.0, fidelity_ok=True, rounds=2)]
    files = ResultFiles(tmp_path / "r.csv", tmp_path / "r.json")
    for row in rows:
        files.add(row, [1.0, 2.0] if row.latency_p50_ms else None)
    with (tmp_path / "r.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == FIELD_NAMES
        assert [line["status"] for line in reader] == ["timeout", "ok"]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [r["status"] for r in doc["rows"]] == ["timeout", "ok"]
    assert set(doc["rows"][0]) == set(FIELD_NAMES)
    for path in (tmp_path / "r.csv", tmp_path / "r.json"):
        assert read_rows(path) == rows


def test_result_files_get_the_usual_mode(tmp_path):
    """CSV and JSON are written through a temporary file (mkstemp: 0600), yet end up like every other output."""
    import stat

    from infertune.results import ResultFiles, ResultRow

    files = ResultFiles(tmp_path / "r.csv", tmp_path / "r.json")
    files.add(ResultRow("m", "pytorch:fp32", "pytorch", "fp32", "", 1, "cpu", latency_p50_ms=1.0))
    plain = tmp_path / "plain.txt"
    plain.write_text("what open() creates")
    for path in (files.csv_path, files.json_path):
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode), path
