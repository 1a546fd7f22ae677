"""The seed's results table (``Format | Latency (ms) | Throughput (img/sec) | Speedup``), for the
terminal (rich) and as GitHub markdown, one table per (model, device, batch size).

The terminal table fits the console's width: variant, p50, speedup and status are always shown, the other
columns join in priority order while they fit, and no cell ever wraps or is cut (numbers and names print
whole). The status cell is one short word with a note number; the long reason (an error, a fidelity
failure, a run note) is printed in full under the table as a numbered note, wrapped between words.
GPU tables add ``E2E p50 (ms)``: the latency of a second loop timed from host input to host output,
next to the device latency (input already on the GPU, CUDA events) of the main columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from infertune.report.view import (
    GroupView,
    LineView,
    best_variants,
    build_views,
    fidelity_word,
    fmt_ms,
    md_escape,
    reason_text,
    status_word,
)
from infertune.results import ResultRow

__all__ = ["HEADERS", "best_variants", "markdown_table", "seed_table"]

#: the seed README's four columns, then ours (the order in which they are shown, not their priority).
HEADERS = ("Format", "Latency (ms)", "Throughput (img/sec)", "Speedup", "p95 (ms)", "Fidelity",
           "Convert (s)", "Size (MB)", "Peak mem (MB)", "Status")
#: printed under a table whose rows ran with random weights.
RANDOM_WEIGHTS_NOTE = ("fidelity is agreement with random weights: it shows each variant computes the same "
                       "function as FP32 eager, not that its predictions are right (use trained weights for that)")
E2E_HEADER = "E2E p50 (ms)"
#: columns always shown, whatever the width.
ESSENTIAL = ("Format", "Latency (ms)", "Speedup", "Status")
#: the other columns, most useful first (the seed's Throughput leads): they join the terminal table in this
#: order while they fit, so a wider terminal never shows fewer columns.
PRIORITY = ("Throughput (img/sec)", "Fidelity", E2E_HEADER, "p95 (ms)", "Peak mem (MB)", "Convert (s)", "Size (MB)")
#: columns right-aligned as numbers.
_NUMERIC = {"Latency (ms)", "Throughput (img/sec)", "Speedup", "p95 (ms)", E2E_HEADER, "Convert (s)", "Size (MB)",
            "Peak mem (MB)"}

_STYLES = {"best": "bold green", "fidelity_failed": "red", "error": "dim", "overhead": "dim italic", "ok": ""}


@dataclass(frozen=True)
class _Note:
    """One numbered note under a table: a reason shared by one or more variants."""

    number: int
    variants: tuple[str, ...]
    text: str

    def line(self) -> str:
        return f"[{self.number}] {', '.join(self.variants)}: {self.text}"


def seed_table(rows: Iterable[ResultRow], console: Console | None = None) -> None:
    """Print one table per (model, device, batch size), fitted to the console's width, with notes under it.

    Args:
        rows: result rows, in the order the run wrote them.
        console: where to print (a ``Console(record=True)`` in tests); the terminal by default.
    """
    console = console or Console()
    views = build_views(rows)
    if not views:
        console.print("no result rows to show")
        return
    for view in views:
        notes, refs = _notes(view)
        columns = _columns(view, refs)
        console.print(_fitted_table(view, columns, console.width))
        for line in _under_lines(view, notes):
            console.print(Text(line, style="bold" if line.startswith("fastest") else "dim"), overflow="fold")
        console.print()


# ---------------------------------------------------------------- columns and notes


@dataclass(frozen=True)
class _Column:
    header: str
    cells: list[str]  # one per line of the view, already formatted
    extra_width: int = 0  # room given beyond the narrowest width, so that the header wraps less

    @property
    def numeric(self) -> bool:
        return self.header in _NUMERIC

    @property
    def min_width(self) -> int:
        """Widest cell, or the header's longest word (headers may wrap between words, cells never)."""
        words = max(cell_len(w) for w in self.header.split())
        return max([words, *(cell_len(c) for c in self.cells)])

    @property
    def width(self) -> int:
        return self.min_width + self.extra_width

    def widened(self, room: int) -> _Column:
        """This column up to ``room`` wider, as far as that makes its header take fewer lines."""
        best = self
        for extra in range(1, room + 1):
            trial = replace(self, extra_width=self.extra_width + extra)
            if trial.header_text().count("\n") < best.header_text().count("\n"):
                best = trial
        return best

    def header_text(self) -> str:
        """The header broken between words so that no line is wider than the column."""
        lines: list[str] = []
        for word in self.header.split():
            if lines and cell_len(lines[-1]) + 1 + cell_len(word) <= self.width:
                lines[-1] += f" {word}"
            else:
                lines.append(word)
        return "\n".join(lines)


def _notes(view: GroupView) -> tuple[list[_Note], dict[int, list[int]]]:
    """Numbered notes (each distinct reason once, with every variant it applies to) and each line's numbers."""
    texts: dict[str, list[str]] = {}
    per_line: dict[int, list[str]] = {}
    for i, line in enumerate(view.lines):
        reasons = [reason_text(line.row)]
        if line.row.note:
            reasons.append(line.row.note)
        for reason in filter(None, reasons):
            texts.setdefault(reason, []).append(line.variant)
            per_line.setdefault(i, []).append(reason)
    numbers = {text: n for n, text in enumerate(texts, start=1)}
    notes = [_Note(numbers[t], tuple(dict.fromkeys(v)), t) for t, v in texts.items()]
    refs = {i: [numbers[t] for t in reasons] for i, reasons in per_line.items()}
    return notes, refs


def _columns(view: GroupView, refs: dict[int, list[int]]) -> list[_Column]:
    """Every column this group could show, in display order, with its cells formatted."""
    cells: dict[str, Callable[[int, LineView], str]] = {
        "Format": lambda i, ln: f"{ln.variant} ★" if ln.kind == "best" else ln.variant,
        "Latency (ms)": lambda i, ln: f"{ln.latency} †" if ln.noisy else ln.latency,
        "Throughput (img/sec)": lambda i, ln: ln.throughput,
        "Speedup": lambda i, ln: ln.speedup,
        "p95 (ms)": lambda i, ln: ln.p95,
        E2E_HEADER: lambda i, ln: fmt_ms(ln.row.e2e_latency_p50_ms),
        "Fidelity": lambda i, ln: fidelity_word(ln.row),
        "Convert (s)": lambda i, ln: ln.convert,
        "Size (MB)": lambda i, ln: ln.size,
        "Peak mem (MB)": lambda i, ln: ln.memory,
        "Status": lambda i, ln: status_word(ln.row) + (f" [{','.join(map(str, refs[i]))}]" if i in refs else ""),
    }
    return [_Column(_header(view, h), [cells[h](i, ln) for i, ln in enumerate(view.lines)]) for h in _headers(view)]


def _header(view: GroupView, header: str) -> str:
    return "Fidelity (random weights)" if header == "Fidelity" and _random_weights(view) else header


def _base(header: str) -> str:
    return "Fidelity" if header.startswith("Fidelity") else header


def _headers(view: GroupView) -> tuple[str, ...]:
    headers = list(HEADERS)
    if _has_e2e(view):
        headers.insert(headers.index("p95 (ms)") + 1, E2E_HEADER)
    return tuple(headers)


def _random_weights(view: GroupView) -> bool:
    """True when the group's rows ran with random weights: its agreement numbers say nothing about accuracy."""
    weights = {ln.row.weights for ln in view.lines if ln.row.weights}
    return bool(weights) and all(w.startswith("random") for w in weights)


def _has_e2e(view: GroupView) -> bool:
    """True when some row of the group was also timed end to end (GPU runners)."""
    return any(ln.row.e2e_latency_p50_ms is not None for ln in view.lines)


# ---------------------------------------------------------------- fitting the width


@dataclass(frozen=True)
class _Layout:
    """How a table is drawn, and the width that costs beyond its cells (measured from rich's output)."""

    box: box.Box
    padding: tuple[int, int]
    boxed: bool  # outer edges and a line between columns
    collapse: bool
    per_column: int
    per_table: int

    def total(self, columns: list[_Column]) -> int:
        return sum(c.width + self.per_column for c in columns) + self.per_table


#: a boxed table, or two spaces between columns and a rule under the header when that shows more columns.
_LAYOUTS = (_Layout(box.HEAVY_HEAD, (0, 1), True, False, 3, 1),
            _Layout(box.SIMPLE_HEAD, (0, 1), False, True, 2, -2))


def choose_columns(columns: list[_Column], width: int) -> tuple[list[_Column], _Layout] | None:
    """The columns that fit ``width`` and the layout to draw them in, headers widened into any room left.

    The essential columns always; then the others in priority order until one does not fit. The layout showing
    the most columns wins, the roomiest (boxed) one on a tie. None when even the essential columns do
    not fit the tightest layout.
    """
    fits: list[tuple[list[_Column], int]] = []
    for index, layout in enumerate(_LAYOUTS):
        chosen = [c for c in columns if _base(c.header) in ESSENTIAL]
        if layout.total(chosen) > width:
            continue
        for name in PRIORITY:
            extra = next((c for c in columns if _base(c.header) == name), None)
            if extra is None:
                continue
            trial = [c for c in columns if c in chosen or c is extra]  # keep display order
            if layout.total(trial) > width:
                break
            chosen = trial
        for i in sorted(range(len(chosen)), key=lambda i: cell_len(chosen[i].header) - chosen[i].width):
            chosen[i] = chosen[i].widened(width - layout.total(chosen))
        fits.append((chosen, index))
    if not fits:
        return None
    chosen, index = max(fits, key=lambda fit: (len(fit[0]), -fit[1]))
    return chosen, _LAYOUTS[index]


def _fitted_table(view: GroupView, columns: list[_Column], width: int) -> Table | Text:
    title = f"{view.title}  (p50 {view.scope} latency)"
    fit = choose_columns(columns, width)
    if fit is None:
        return _stacked(view, columns, title)
    chosen, layout = fit
    table = Table(title=title, title_justify="left", box=layout.box, padding=layout.padding,
                  show_edge=layout.boxed, pad_edge=layout.boxed, collapse_padding=layout.collapse)
    for column in chosen:
        table.add_column(Text(column.header_text()), justify="right" if column.numeric else "left",
                         no_wrap=True, min_width=column.width, max_width=column.width)
    for i, line in enumerate(view.lines):
        # Text(), never markup strings: "pip install infertune[openvino]" must print as written.
        table.add_row(*(Text(c.cells[i]) for c in chosen), style=_STYLES.get(line.kind, ""))
    return table


def _stacked(view: GroupView, columns: list[_Column], title: str) -> Text:
    """Too narrow for any table: one block per variant, each value on its own ``header: value`` line."""
    out = Text(title + "\n")
    for i, line in enumerate(view.lines):
        out.append(f"{columns[0].cells[i]}\n", style=_STYLES.get(line.kind, "") or "bold")
        for column in columns[1:]:
            if column.cells[i] != "—":
                out.append(f"  {column.header}: {column.cells[i]}\n")
    return out


def _under_lines(view: GroupView, notes: list[_Note]) -> list[str]:
    """The winner sentence, the noise footnote, then the numbered notes (every reason in full)."""
    lines = [view.fastest_sentence()]
    if _random_weights(view):
        lines.append(RANDOM_WEIGHTS_NOTE)
    if view.noisy_lines:
        lines.append(view.noise_footnote())
    if view.flagged_lines:
        lines.append(view.flag_footnote())
    lines.extend(note.line() for note in notes)
    return lines


# ---------------------------------------------------------------- markdown


def markdown_table(rows: Iterable[ResultRow]) -> str:
    """The same tables as GitHub markdown, every column: a ``###`` heading per group, the winner in bold."""
    parts: list[str] = []
    for view in build_views(rows):
        notes, refs = _notes(view)
        columns = _columns(view, refs)
        parts.append(f"### {md_escape(view.title)}\n")
        parts.append(f"p50 {md_escape(view.scope)} latency per batch; speedup vs pytorch:fp32.\n")
        parts.append("| " + " | ".join(c.header for c in columns) + " |")
        parts.append("|" + "|".join(("---:" if c.numeric else "---") for c in columns) + "|")
        for i, line in enumerate(view.lines):
            cells = [md_escape(c.cells[i]) for c in columns]
            if line.kind == "best":
                cells = [f"**{c}**" for c in cells]
            parts.append("| " + " | ".join(cells) + " |")
        parts.append("")
        parts.extend(f"{md_escape(line)}  " for line in _under_lines(view, notes))
        parts.append("")
    return "\n".join(parts).rstrip() + "\n" if parts else "_no result rows_\n"
