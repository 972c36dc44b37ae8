"""`quartz bench` end to end on a small generated set: every system measured, figures present and
sane (recall, no errors), the JSON and plots written. Speed itself is never asserted."""

from __future__ import annotations

import orjson
import pytest

from quartz_cluster.bench import harness, report
from quartz_cluster.datasets import generate_clustered

pytestmark = pytest.mark.integration


def test_bench_measures_every_system_and_writes_its_report(tmp_path):
    ds = generate_clustered(3000, dim=16, n_queries=100, seed=2)
    cfg = harness.BenchConfig(
        systems=["hnswlib", "quartz-node", "quartz-cluster"],
        ef_sweep=[16, 64],
        concurrency=[1, 2],
        duration_s=0.5,
        serial_queries=100,
        workdir=str(tmp_path / "work"),
    )
    result = harness.run(ds, cfg, say=lambda _: None)
    assert [s["system"] for s in result["systems"]] == cfg.systems
    for s in result["systems"]:
        assert s["ingest"]["rows"] == 3000 and s["ingest"]["rows_per_s"] > 0
        assert s["operating_recall_at_10"] >= 0.9, s["system"]
        assert set(s["concurrency"]) == {"1", "2"}
        assert all(v["error_rate"] == 0 and v["calls"] > 0 for v in s["concurrency"].values())
        if s["system"] != "hnswlib":  # servers in other processes: their CPU per query is measured
            assert all(v["server_cpu_ms_per_query"] > 0 for v in s["concurrency"].values())
        assert len(s["filtered"]) >= 2
        assert all(f["recall_at_10"] >= 0.9 for f in s["filtered"]), s["system"]
    path, pngs = report.write(result, tmp_path / "out", "bench-test")
    assert orjson.loads(path.read_bytes())["dataset"]["rows"] == 3000
    assert len(pngs) == 2 and all(p.exists() for p in pngs)
    assert "quartz-cluster" in report.tables(result) and "CPU ms per query" in report.tables(result)
