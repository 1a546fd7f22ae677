"""``--per-node`` without Ray: the node in a cell's identity, the plan's cells and jobs per node, the choice of
nodes, speedups and pooling per node, resume per (variant, node), and reports side by side per node.

The pipeline tests run the real pipeline with an executor that runs jobs here (``none``) and offers three
made-up nodes, so the plan, sink, journal and resume logic is checked in seconds; tests/test_ray_per_node.py
runs the same on a real two-node Ray cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from infertune.config import validate_config
from infertune.errors import ConfigError
from infertune.executors.base import ClusterNode, Event, Job, RowEvent
from infertune.executors.inprocess import InProcessExecutor
from infertune.journal import read_journal
from infertune.plan import make_plan, place_on_nodes
from infertune.results import ResultRow, cell_id, fill_speedups, read_rows
from infertune.resume import load_resume

TINY = {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False}
NODE_A = ClusterNode("node-a", "id-a", "host-a", cpus=2, gpus=0)
NODE_B = ClusterNode("node-b", "id-b", "host-b", cpus=1, gpus=1)
HEAD = ClusterNode("head", "id-h", "host-h", cpus=0, gpus=0)  # `ray start --head --num-cpus 0`
CPUS = {"node-a": "CPU A (AVX2)", "node-b": "CPU B (AVX-512 VNNI)"}


def _config(tmp_path: Path, variants=("pytorch:fp32", "null:fp32"), batches=(1, 2), per_node=True, **bench) -> dict:
    return {
        "model": TINY,
        "benchmark": {"batch_sizes": list(batches), "warmup_iterations": 1, "benchmark_iterations": 2,
                      "min_time_s": 0.0, "device": "cpu", "isolation": "ray", "baseline_check": False, **bench},
        "optimization": {"variants": list(variants)},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
        "ray": {"per_node": per_node},
    }


# ---------------------------------------------------------------------------------------------- identity


def test_the_node_enters_a_cells_identity_only_when_pinned():
    assert cell_id("m", "pytorch:fp32", 8, "cpu") == "m|pytorch:fp32|8|cpu"  # unpinned keys as they always were
    assert cell_id("m", "pytorch:fp32", 8, "cpu", "node-a") == "m|pytorch:fp32|8|cpu|node-a"
    row = ResultRow(model="m", variant="pytorch:fp32", backend="pytorch", precision="fp32", options="",
                    batch_size=8, device="cpu", node="host-a")
    assert row.cell_id == "m|pytorch:fp32|8|cpu"  # where an unpinned cell happened to run is not its identity
    row.update(pinned_node="node-a")
    assert row.cell_id.endswith("|node-a")


def test_per_node_needs_the_ray_executor(tmp_path):
    pytest.importorskip("ray", reason="isolation: ray is validated against the installed executor")
    with pytest.raises(ConfigError, match=r"--per-node.*add --executor ray"):
        validate_config({**_config(tmp_path), "benchmark": {"isolation": "process"}})
    assert validate_config(_config(tmp_path)).ray.per_node


def test_the_cli_flag_sets_the_config_key():
    from infertune.cli import build_parser, overrides_from_args

    args = build_parser().parse_args(["run", "--executor", "ray", "--per-node"])
    assert overrides_from_args(args)["ray"]["per_node"] is True
    assert overrides_from_args(build_parser().parse_args(["run"]))["ray"]["per_node"] is None  # the file decides


def test_the_cli_refuses_per_node_without_ray_in_one_line(tmp_path, capsys):
    from infertune.cli import main

    code = main(["run", "--per-node", "--device", "cpu", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "add --executor ray" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # refused before any file was claimed


# ---------------------------------------------------------------------------------------------- the plan


def _plan(tmp_path, **kw):
    return make_plan(validate_config(_config(tmp_path, **kw)), measure=True, log=lambda m: None)


def test_every_node_that_offers_a_cpu_takes_the_cpu_ladder(tmp_path):
    plan, lines = place_on_nodes(_plan(tmp_path), [NODE_B, HEAD, NODE_A])
    assert [n.name for n in plan.nodes] == ["node-a", "node-b"]  # by name, so reruns list them alike
    assert any("leaving out head" in line and "--num-cpus 0" in line for line in lines)
    assert plan.cells_planned == 2 * 2 * 2 and len(plan.cells()) == 8
    assert {c[2] for c in plan.cells()} == {"node-a", "node-b"}


def test_a_cuda_run_leaves_out_nodes_without_a_gpu_and_refuses_a_cluster_without_one(tmp_path):
    import dataclasses

    cuda = dataclasses.replace(_plan(tmp_path), device="cuda")
    plan, lines = place_on_nodes(cuda, [NODE_A, NODE_B])
    assert [n.name for n in plan.nodes] == ["node-b"]
    assert any("leaving out node-a (no GPU" in line and "--device cpu" in line for line in lines)
    with pytest.raises(ConfigError, match=r"no node of the Ray cluster offers a GPU.*--device cpu"):
        place_on_nodes(cuda, [NODE_A, HEAD])


def test_a_resumed_run_keeps_its_own_nodes(tmp_path):
    newcomer = ClusterNode("node-c", "id-c", cpus=4)
    plan, lines = place_on_nodes(_plan(tmp_path), [newcomer, NODE_A], recorded=["node-b", "node-a"])
    assert [n.name for n in plan.nodes] == ["node-a"] and plan.absent_nodes == ("node-b",)
    assert plan.places == ("node-a", "node-b") and plan.cells_planned == 8  # node-c joined later: not this run's
    assert any("node-b of this run are not in the Ray cluster now" in line for line in lines)


def test_one_job_per_variant_and_node_pinned_there(tmp_path):
    from infertune.reference import Reference

    plan, _ = place_on_nodes(_plan(tmp_path), [NODE_A, NODE_B])
    reference = Reference(path="ref.npz", weights_path="w.pt", weights_tag="random", digest="d", weights_mb=1.0,
                          source=None, verify_description="")  # type: ignore[arg-type]  # only handed on
    asked = []

    def todo(variant, batch, node):
        asked.append((variant.name, batch, node))
        return not (node == "node-a" and variant.name == "pytorch:fp32")  # already done there

    jobs = plan.variant_jobs(reference, "run", 0, todo)
    assert [(j.variant.name, j.pinned.name, j.batches) for j in jobs] == [
        ("null:fp32", "node-a", (1, 2)), ("pytorch:fp32", "node-b", (1, 2)), ("null:fp32", "node-b", (1, 2))]
    assert len({j.job_id for j in jobs}) == 3 and jobs[0].label == "null:fp32 on node-a"
    assert len(asked) == 8
    assert jobs[0].base_row(1).pinned_node == "node-a" and jobs[0].base_row(1).cell_id.endswith("|node-a")
    assert [j.threads for j in jobs] == [2, 1, 1]  # each node's own CPUs, as a local run there would use
    explicit, _ = place_on_nodes(_plan(tmp_path, threads=3), [NODE_A, NODE_B])
    assert {j.threads for j in explicit.variant_jobs(reference, "run", 0, lambda v, b, n: True)} == {3}
    unpinned = _plan(tmp_path, per_node=False).variant_jobs(reference, "run", 0, lambda v, b, n: True)
    assert [j.pinned for j in unpinned] == [None, None] and unpinned[0].job_id == "pytorch:fp32@0"


# ---------------------------------------------------------------------------------------------- rows


def _row(variant, node, p50, batch=1, **kw):
    backend, precision = variant.split(":")
    return ResultRow(model="m", variant=variant, backend=backend, precision=precision, options="", batch_size=batch,
                     device="cpu", latency_p50_ms=p50, pinned_node=node, node_cpu=CPUS.get(node, ""), **kw)


def test_speedups_are_against_the_same_nodes_baseline():
    rows = [_row("pytorch:fp32", "node-a", 10.0), _row("openvino:int8", "node-a", 5.0),
            _row("pytorch:fp32", "node-b", 4.0), _row("openvino:int8", "node-b", 1.0)]
    fill_speedups(rows)
    assert [r.speedup_vs_pytorch for r in rows] == [1.0, 2.0, 1.0, 4.0]
    lonely = [_row("openvino:int8", "node-c", 1.0)]
    fill_speedups(rows + lonely)
    assert lonely[0].speedup_vs_pytorch is None  # no baseline on its node: no speedup, not another node's


def test_int8_notes_compare_with_the_same_nodes_fp32_and_name_that_nodes_cpu(tmp_path):
    from infertune.results import ResultFiles
    from infertune.sink import annotate_int8

    rows = [_row("openvino:fp32", "node-a", 5.0, node_isa="AVX2"), _row("openvino:int8", "node-a", 6.0, node_isa="AVX2"),
            _row("openvino:fp32", "node-b", 9.0, node_isa="AVX-512, AVX-512 VNNI"),
            _row("openvino:int8", "node-b", 6.0, node_isa="AVX-512, AVX-512 VNNI")]
    annotate_int8(ResultFiles(tmp_path / "r.csv", tmp_path / "r.json", rows=rows))
    assert "lacks VNNI" in rows[1].note  # slower than node-a's own fp32, on a CPU without VNNI
    assert rows[3].note == ""  # faster than node-b's fp32, though slower than node-a's


def test_rounds_pool_per_node(tmp_path):
    from infertune.journal import Journal
    from infertune.results import ResultFiles
    from infertune.sink import Sink

    files = ResultFiles(tmp_path / "r.csv", tmp_path / "r.json")
    sink = Sink(files, Journal(tmp_path / "r.jsonl"), "run", log=lambda m: None)
    for round_index, (a, b) in enumerate([([1.0, 1.0, 1.0], [5.0, 5.0, 5.0]), ([3.0, 3.0, 3.0], [7.0, 7.0, 7.0])]):
        for node, samples in (("node-a", a), ("node-b", b)):
            sink.keep(_row("pytorch:fp32", node, samples[0], latency_scope="end_to_end"), samples, round_index)
    rows = {r.pinned_node: r for r in read_rows(files.csv_path)}
    assert len(rows) == 2 and rows["node-a"].rounds == rows["node-b"].rounds == 2
    assert json.loads(rows["node-a"].round_p50s_ms) == [1.0, 3.0] and json.loads(rows["node-b"].round_p50s_ms) == [5.0, 7.0]
    assert rows["node-a"].latency_p50_ms == 2.0 and rows["node-b"].latency_p50_ms == 6.0  # never each other's samples


# ---------------------------------------------------------------------------------------------- reports


def _per_node_rows() -> list[ResultRow]:
    rows = []
    for node, scale in (("node-a", 1.0), ("node-b", 3.0)):
        for batch in (1, 8):
            rows += [_row("pytorch:fp32", node, 10.0 * scale * batch, batch, status="ok", latency_scope="end_to_end"),
                     _row("onnxruntime:fp32", node, 5.0 * scale * batch * (0.5 if node == "node-b" else 1), batch,
                          status="ok", latency_scope="end_to_end", fidelity_ok=True)]
    fill_speedups(rows)
    return rows


def test_the_report_groups_by_node_and_shows_the_nodes_side_by_side():
    from infertune.report.nodes import side_by_side, side_by_side_markdown
    from infertune.report.view import best_variants, build_views

    rows = _per_node_rows()
    views = build_views(rows)
    assert [v.title for v in views] == [
        "m · cpu · batch 1 · on node-a (CPU A (AVX2))", "m · cpu · batch 1 · on node-b (CPU B (AVX-512 VNNI))",
        "m · cpu · batch 8 · on node-a (CPU A (AVX2))", "m · cpu · batch 8 · on node-b (CPU B (AVX-512 VNNI))"]
    assert len(best_variants(rows)) == 4  # a winner per node, not one for the cluster
    tables = side_by_side(rows)
    assert [t.title for t in tables] == ["m · cpu · batch 1", "m · cpu · batch 8"]
    first = tables[0]
    assert first.nodes == ("node-a (CPU A (AVX2))", "node-b (CPU B (AVX-512 VNNI))")
    cells = dict(first.lines)
    assert [c.text for c in cells["pytorch:fp32"]] == ["10.0 ms · 1.00×", "30.0 ms · 1.00×"]
    assert [c.text for c in cells["onnxruntime:fp32"]] == ["5.00 ms · 2.00× ★", "7.50 ms · 4.00× ★"]
    assert first.fastest[1].startswith("node-b: onnxruntime:fp32 (4.00×")
    markdown = "\n".join(side_by_side_markdown(rows))
    assert "## Side by side per node" in markdown and "| Format | node-a (CPU A (AVX2)) |" in markdown
    unpinned = [_row("pytorch:fp32", "", 1.0)]
    assert side_by_side(unpinned) == [] and build_views(unpinned)[0].title == "m · cpu · batch 1"
    assert side_by_side([r for r in rows if r.pinned_node == "node-a"]) == []  # one node: nothing to set beside


def test_report_files_show_each_node(tmp_path):
    from infertune.report.build import build_report
    from infertune.results import ResultFiles

    files = ResultFiles(tmp_path / "run.csv", tmp_path / "run.json", rows=_per_node_rows())
    files.write()
    paths = build_report(files.csv_path, tmp_path / "report")
    html = paths["html"].read_text()
    assert 'id="per-node"' in html and "node-b (CPU B (AVX-512 VNNI))" in html and ">Node</button>" in html
    md = paths["markdown"].read_text()
    assert "## Side by side per node" in md and "| m · cpu · node-b | 8 | **onnxruntime:fp32**" in md
    charts = {p.name for p in paths.values() if p.suffix == ".png"}
    assert any("node-a" in name for name in charts) and any("node-b" in name for name in charts)
    from rich.console import Console

    from infertune.cli import _print_table

    console = Console(record=True, width=140)
    _print_table(files.rows, console)
    text = console.export_text()
    assert "batch 1 · on node-a" in text and "fastest per node: node-a: onnxruntime:fp32" in text


def test_compare_matches_each_node_with_itself(tmp_path):
    from infertune.report.compare import compare_runs
    from infertune.results import ResultFiles

    base, cand = _per_node_rows(), _per_node_rows()
    for r in cand:
        if r.pinned_node == "node-b":
            r.latency_p50_ms *= 2  # node-b got slower; node-a did not
    for name, rows in (("a", base), ("b", cand)):
        ResultFiles(tmp_path / f"{name}.csv", tmp_path / f"{name}.json", rows=rows).write()
    comparison = compare_runs(tmp_path / "a.json", tmp_path / "b.json")
    changes = {(c.node, c.variant, c.batch_size): c.p50_change for c in comparison.cells}
    assert len(changes) == 8
    assert all(v == pytest.approx(1.0 if node == "node-b" else 0.0) for (node, *_), v in changes.items())


# ---------------------------------------------------------------------------------------------- the pipeline


class _FakeCluster(InProcessExecutor):
    """Runs jobs here (``none``) and offers three nodes; records which job went to which node."""

    placed: ClassVar[list[tuple[str, str, tuple[int, ...]]]] = []
    alive: ClassVar[Sequence[ClusterNode]] = (NODE_A, NODE_B, HEAD)

    def nodes(self) -> list[ClusterNode]:
        return list(self.alive)

    def run(self, jobs: Sequence[Job]) -> Iterator[Event]:
        for job in jobs:
            pinned = getattr(job, "pinned", None)
            if pinned is not None:
                type(self).placed.append((job.variant.name, pinned.name, job.batches))  # type: ignore[attr-defined]
        for event in super().run(jobs):
            if isinstance(event, RowEvent) and event.row.pinned_node:
                event.row.update(node=event.row.pinned_node, node_cpu=CPUS[event.row.pinned_node])
            yield event


@pytest.fixture
def fake_cluster(monkeypatch):
    pytest.importorskip("ray", reason="isolation: ray is validated against the installed executor")
    from infertune import pipeline

    _FakeCluster.placed = []
    _FakeCluster.alive = (NODE_A, NODE_B, HEAD)
    monkeypatch.setattr(pipeline, "make_executor", lambda name, settings: _FakeCluster(settings))
    return _FakeCluster


def test_a_per_node_run_has_a_row_per_variant_batch_and_node(tmp_path, fake_cluster):
    from infertune.pipeline import run

    lines: list[str] = []
    result = run(validate_config(_config(tmp_path, baseline_check=True)), log=lines.append)
    keys = [(r.pinned_node, r.variant, r.batch_size) for r in result.rows]
    assert keys == [(n, v, b) for n in ("node-a", "node-b") for v in ("pytorch:fp32", "null:fp32") for b in (1, 2)]
    assert all(r.status == "ok" and r.node_cpu == CPUS[r.pinned_node] for r in result.rows)
    # the four jobs, then the end-of-run baseline check once per node
    assert sorted(fake_cluster.placed) == sorted([("pytorch:fp32", "node-a", (1, 2)), ("null:fp32", "node-a", (1, 2)),
                                                  ("pytorch:fp32", "node-b", (1, 2)), ("null:fp32", "node-b", (1, 2)),
                                                  ("pytorch:fp32", "node-a", (1, 2)), ("pytorch:fp32", "node-b", (1, 2))])
    baselines = [r for r in result.rows if r.variant == "pytorch:fp32"]
    assert all(r.recheck_p50_ms for r in baselines) and all(r.speedup_vs_pytorch == 1.0 for r in baselines)
    doc = json.loads(result.json_path.read_text())
    assert doc["run"]["nodes"] == ["node-a", "node-b"] and doc["run"]["cells_planned"] == 8
    assert set(doc["samples_ms"]) == {r.cell_id for r in result.rows} and len(doc["samples_ms"]) == 8
    assert any("leaving out head" in line for line in lines)


def test_resume_runs_only_the_missing_variant_node_cells(tmp_path, fake_cluster):
    from infertune.pipeline import run

    first = run(validate_config(_config(tmp_path)), log=lambda m: None)
    journal = first.csv_path.with_suffix(".jsonl")
    records = journal.read_text().splitlines()
    kept = [line for line in records if not ('"null:fp32"' in line and '"pinned_node":"node-b"' in line)]
    assert len(kept) == 6
    journal.write_text("\n".join(kept) + "\n")  # as if the run had died before null:fp32 ran on node-b
    doc = json.loads(first.json_path.read_text())
    doc["run"]["status"] = "interrupted"
    first.json_path.write_text(json.dumps(doc))

    fake_cluster.placed = []
    fake_cluster.alive = (NODE_B, NODE_A, ClusterNode("node-c", "id-c", cpus=8))  # a newcomer is not this run's
    resumed = run(load_resume(first.csv_path).config, log=lambda m: None, resume=load_resume(first.csv_path))
    assert fake_cluster.placed == [("null:fp32", "node-b", (1, 2))]
    assert len(resumed.rows) == 8 and all(r.status == "ok" for r in resumed.rows)
    assert len(read_journal(journal)) == 8


def test_resume_with_a_node_gone_records_its_cells_as_not_run(tmp_path, fake_cluster):
    from infertune.pipeline import run

    first = run(validate_config(_config(tmp_path, batches=(1,))), log=lambda m: None)
    journal = first.csv_path.with_suffix(".jsonl")
    journal.write_text("".join(line + "\n" for line in journal.read_text().splitlines()
                               if '"pinned_node":"node-a"' in line))
    fake_cluster.placed = []
    fake_cluster.alive = (NODE_A,)
    state = load_resume(first.csv_path)
    resumed = run(state.config, log=lambda m: None, resume=state)
    assert fake_cluster.placed == []
    gone = [r for r in resumed.rows if r.pinned_node == "node-b"]
    assert len(gone) == 2 and all(r.status == "failed" and "node node-b of this run is not in the Ray cluster now"
                                  in r.error for r in gone)
    assert len(read_journal(journal)) == 2  # not journaled: a later --resume runs them once node-b is back
