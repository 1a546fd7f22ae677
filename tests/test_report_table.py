"""The terminal table at the widths people use (80 to 200 columns) and in logs: nothing cut, nothing wrapped
inside a word, every reason whole in a numbered note, the essential columns always there."""

from __future__ import annotations

import io
import itertools
import re

import pytest
from rich.console import Console

from infertune.report.table import E2E_HEADER, HEADERS, seed_table
from infertune.report.view import build_views, fmt_ms, fmt_speedup, reason_text, speedup
from tests.report_fixtures import (
    CRASH_REASON,
    DEFAULT_CPU_LADDER,
    TENSORRT_REASON,
    make_rows,
)

WIDTHS = (80, 120, 160, 200)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _render(rows, width: int, terminal: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=terminal, color_system="truecolor" if terminal else None)
    seed_table(rows, console)
    return _ANSI.sub("", out.getvalue())


def _default_run():
    rows, _ = make_rows(batches=(1, 8), ladder=DEFAULT_CPU_LADDER)
    return rows


def _words(text: str) -> str:
    return " ".join(text.split())


def _glued(text: str) -> str:
    """Text without any whitespace: a note wrapped between words, or a path longer than the line folded, still
    contains its reason whole."""
    return "".join(text.split())


def _table_lines(text: str) -> list[str]:
    """The lines of the tables themselves (not the notes under them)."""
    return [ln for ln in text.splitlines() if "│" in ln or re.match(r"^\S.*\s{2,}\S", ln)]


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "piped"])
@pytest.mark.parametrize("width", WIDTHS)
def test_every_number_name_and_reason_appears_whole_at_every_width(width, terminal):
    rows = _default_run()
    text = _render(rows, width, terminal)
    assert max(len(line) for line in text.splitlines()) <= width
    flat = _glued(text)
    for view in build_views(rows):
        group = [ln.row for ln in view.lines]
        for line in view.lines:
            row = line.row
            # the variant's name, its p50 and its speedup each appear as one whole token on its line
            mine = [ln for ln in text.splitlines() if re.search(rf"(^|[\s│]){re.escape(row.variant)}( ★)?[\s│]", ln)]
            assert mine, f"{row.variant} missing or cut at width {width}"
            tokens = set(re.split(r"[\s│]+", " ".join(mine)))
            if line.latency != "—":
                assert fmt_ms(row.latency_p50_ms) in tokens
            value = speedup(row, group)
            if value is not None:
                assert fmt_speedup(value) in tokens  # 7.26x, never 7.2
            reason = reason_text(row)
            if reason:
                assert _glued(reason) in flat, f"reason of {row.variant} not whole at width {width}"
        assert _glued(view.fastest_sentence()) in flat
    assert _glued(TENSORRT_REASON) in flat and _glued(CRASH_REASON) in flat
    assert "† noisy" in text and re.search(r"\d †", text)  # the noise marker stays next to the number


@pytest.mark.parametrize("width", WIDTHS)
def test_essential_columns_always_and_more_columns_as_width_allows(width):
    text = _render(_default_run(), width, terminal=False)
    header = _words(" ".join(text.splitlines()[1:6]))
    for name in ("Format", "Latency", "Speedup", "Status"):
        assert name in header
    if width >= 160:
        for name in ("Throughput", "p95", "Fidelity", "Peak mem"):
            assert name in header


def _shown_headers(width: int) -> list[str]:
    lines = _render(_default_run(), width, False).splitlines()
    rule = next(i for i, ln in enumerate(lines) if set(ln.strip()) <= set("─━┡╇┩"))
    head = _words(" ".join(lines[1:rule]).replace("┃", " "))
    names = [h.split(" (")[0] for h in HEADERS + (E2E_HEADER,)]
    return [n for n in names if n in head]


def test_wider_terminal_never_shows_fewer_columns():
    shown = [_shown_headers(w) for w in (80, 100, 120, 160, 200, 260)]
    for narrow, wide in itertools.pairwise(shown):
        assert set(narrow) <= set(wide)
    assert len(shown[0]) < len(shown[-1]) == len(HEADERS)


def test_long_reasons_are_numbered_notes_and_shared_reasons_are_printed_once():
    text = _render(_default_run()[:12], 120, terminal=False)  # batch 1 only
    notes = [ln for ln in text.splitlines() if re.match(r"^\[\d+\] ", ln)]
    trt = [n for n in notes if "tensorrt:fp32, tensorrt:fp16: unavailable" in n]
    assert len(trt) == 1  # two variants, one reason: one note
    number = re.match(r"^\[(\d+)\]", trt[0]).group(1)
    assert len(re.findall(rf"unavailable \[{number}\]", text)) == 2  # both rows point at it
    table = "\n".join(_table_lines(text))
    assert TENSORRT_REASON not in table and "SIGSEGV" not in table  # reasons live under the table, not in cells


def test_the_harness_row_has_no_speedup_or_throughput_and_says_what_it_is():
    text = _render(_default_run()[:12], 200, terminal=False)
    null_line = next(ln for ln in text.splitlines() if "null:fp32" in ln and "│" in ln)
    cells = [c.strip() for c in null_line.split("│")[1:-1]]
    assert cells[2] == "—" and cells[3] == "—"  # throughput, speedup
    assert "harness" in null_line
    assert "measures the harness itself" in _words(text)


def test_an_unknown_status_is_shown_as_written_with_its_reason():
    rows = _default_run()[:12]
    rows[3].status, rows[3].error = "unverifiable", "the reference's outputs are degenerate: load trained weights"
    text = _render(rows, 80, terminal=False)
    assert "unverifiable [" in text and "degenerate: load trained weights" in _words(text)
    assert fmt_ms(rows[3].latency_p50_ms) in text  # still measured: its numbers stay


def test_too_narrow_for_a_table_lists_each_variant():
    text = _render(_default_run()[:12], 50, terminal=False)
    assert max(len(line) for line in text.splitlines()) <= 50
    rows = _default_run()[:12]
    best = build_views(rows)[0].best_speedup
    assert "openvino:int8 ★" in text and f"Speedup: {fmt_speedup(best)}" in text
