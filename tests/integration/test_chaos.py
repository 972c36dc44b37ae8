"""The short chaos runs CI does on every change: a real cluster (3-member etcd), writers and
readers, faults on a seeded schedule; the checker must find nothing lost, unexpected or
duplicated, and the replicas identical afterwards."""

from __future__ import annotations

import pytest

from quartz_cluster.chaos.runner import ChaosConfig, run

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "scenario",
    ["kill-primary", "pause-primary", "partition", "etcd-member-loss", "etcd-quorum-loss", "drain"],
)
def test_short_chaos_run_keeps_every_acknowledged_write(tmp_path, scenario):
    report = run(
        ChaosConfig(scenario, duration_s=20, seed=7, out_dir=str(tmp_path / scenario)), say=lambda _: None
    )
    assert report["lost"] == [] and report["unexpected"] == [] and report["duplicated"] == []
    assert report["stale"] == [], "a strong read missed an acknowledged write"
    assert report["wrong_vectors"] == [] and report["divergent_shards"] == []
    assert report["converged_after_s"] is not None
    assert report["acknowledged"] > 100, "too little was written for the run to mean anything"
    assert any(e["fault"] == scenario for e in report["recovery"]), "no fault was injected"
    assert report["passed"]
    if scenario == "etcd-quorum-loss":  # without etcd the data path keeps serving eventual reads
        for f in report["recovery"]:
            assert f["reads_during"]["eventual_ok"] > 0 and f["reads_during"]["eventual_failed"] == 0, f
    for name in ("history.jsonl", "report.json", "summary.txt", "timeline.png"):
        assert (tmp_path / scenario / name).exists()
