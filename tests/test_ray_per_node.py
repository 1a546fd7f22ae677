"""``--per-node`` on a real Ray cluster of two nodes on this machine (``ray.cluster_utils.Cluster``, one CPU
each): the whole ladder on each node, each job on its pinned node, speedups against the same node's
baseline, the measurement slot still respected, the report side by side per node, and a resumed run that
completes only the missing (variant, node) cells.

Both nodes are one machine, so they share its cores and its measurement slot file (``$TMPDIR``): the slot
is per machine, and no two measurements of the run may overlap at all. Each node's raylet gets
``INFERTUNE_TEST_NODE`` set to its name; the ``where`` test backend writes it into its rows' notes,
which is how the test sees where a job really ran.
"""

from __future__ import annotations

import json
import os
from itertools import pairwise
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the Ray executor needs ray: pip install 'infertune[ray]'")

from infertune.config import validate_config
from infertune.journal import read_journal
from infertune.pipeline import run
from infertune.resume import load_resume

REPO = Path(__file__).resolve().parents[1]
TINY = {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False}
NODES = ("node-a", "node-b")
VARIANTS = ("pytorch:fp32", "where:fp32")


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    from tests.fault_backends import NODE_ENV

    path = os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")])

    def node(name: str) -> dict:
        return {"num_cpus": 1, "node_name": name, "resources": {name: 1}, "env_vars": {"PYTHONPATH": path, NODE_ENV: name}}

    cluster = Cluster(initialize_head=True, head_node_args={**node(NODES[0]), "include_dashboard": False})
    try:
        cluster.add_node(**node(NODES[1]))
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()  # the run joined the cluster and left it running: leave no Ray for the next test
        cluster.shutdown()


def _config(tmp_path: Path, address: str) -> dict:
    return {
        "model": TINY,
        # min_time_s makes each measurement last long enough that two at once would overlap without the slot
        "benchmark": {"batch_sizes": [1, 2], "warmup_iterations": 1, "benchmark_iterations": 2, "min_time_s": 0.2,
                      "device": "cpu", "isolation": "ray"},
        "optimization": {"variants": list(VARIANTS)},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
        "ray": {"address": address, "per_node": True},
    }


def test_the_ladder_runs_on_every_node_and_resumes_per_node(tmp_path, two_nodes, fault_backends):
    from infertune.report.build import build_report

    result = run(validate_config(_config(tmp_path, two_nodes.address)), log=lambda m: None)

    rows = result.rows
    assert [(r.pinned_node, r.variant, r.batch_size) for r in rows] == [
        (n, v, b) for n in NODES for v in VARIANTS for b in (1, 2)]
    assert all(r.status == "ok" and r.latency_p50_ms and r.node and r.node_cpu for r in rows), \
        [(r.variant, r.pinned_node, r.status, r.error) for r in rows]
    assert all(f"ran on {r.pinned_node}" in r.note for r in rows if r.variant == "where:fp32")  # pinned for real
    base = {(r.pinned_node, r.batch_size): r for r in rows if r.variant == "pytorch:fp32"}
    for r in rows:  # each speedup is against its own node's baseline
        assert r.speedup_vs_pytorch == pytest.approx(base[(r.pinned_node, r.batch_size)].latency_p50_ms
                                                     / r.latency_p50_ms)
    assert all(r.recheck_p50_ms for r in base.values())  # the end-of-run check ran on each node
    windows = sorted((r.measure_start_unix_s, r.measure_end_unix_s, r.pinned_node, r.variant, r.batch_size)
                     for r in rows)
    for (_, end, *first), (start, _, *second) in pairwise(windows):  # one machine: one slot for both nodes
        assert end <= start, f"{first} and {second} measured at the same time on one machine"
    doc = json.loads(result.json_path.read_text())
    assert doc["run"]["nodes"] == list(NODES) and doc["run"]["status"] == "complete"
    assert set(doc["samples_ms"]) == {r.cell_id for r in rows} and len(doc["samples_ms"]) == 8
    report = build_report(result.csv_path, tmp_path / "report")
    markdown = report["markdown"].read_text()
    assert "## Side by side per node" in markdown and all(f"| {n} (" in markdown or f" {n} (" in markdown for n in NODES)

    # As if the run had died before where:fp32 ran on node-b: its journal lacks those two cells.
    journal = result.csv_path.with_suffix(".jsonl")
    kept = [line for line in journal.read_text().splitlines()
            if not ('"where:fp32"' in line and '"pinned_node":"node-b"' in line)]
    assert len(kept) == 6
    journal.write_text("\n".join(kept) + "\n")
    doc["run"]["status"] = "interrupted"
    result.json_path.write_text(json.dumps(doc))
    state = load_resume(result.csv_path)
    resumed = run(state.config, log=lambda m: None, resume=state)

    records = read_journal(journal)
    assert [(rec.row["variant"], rec.row["pinned_node"], rec.row["batch_size"]) for rec in records[6:]] == [
        ("where:fp32", "node-b", 1), ("where:fp32", "node-b", 2)]  # only the missing cells ran
    assert len(resumed.rows) == 8 and all(r.status == "ok" for r in resumed.rows)
    again = [r for r in resumed.rows if r.variant == "where:fp32" and r.pinned_node == "node-b"]
    assert all("ran on node-b" in r.note for r in again)
