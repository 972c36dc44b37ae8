"""The short chaos runs CI does on every change: a real cluster (3-member etcd), writers and
readers, faults on a seeded schedule; the checker must find nothing lost, unexpected or
duplicated, and the replicas identical afterwards."""

from __future__ import annotations

import os

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
    # the audit log is as durable as the data: through a killed node or etcd member, every chain
    # verifies and every acknowledged write has its event
    audit = report["audit"]
    assert audit["verified"] and audit["writes_audited"] >= audit["writes_acknowledged"] > 0, audit
    if scenario == "etcd-quorum-loss":  # without etcd the data path keeps serving eventual reads
        for f in report["recovery"]:
            assert f["reads_during"]["eventual_ok"] > 0 and f["reads_during"]["eventual_failed"] == 0, f
    for name in ("history.jsonl", "report.json", "summary.txt", "timeline.png"):
        assert (tmp_path / scenario / name).exists()


def test_losing_a_node_for_good_keeps_writes_going_and_restores_the_replication_factor(tmp_path):
    """lose-node: a node killed and its data dir deleted, never restarted. With the defaults (RF
    3, majority writes) writes come back after the failover and, after the repair grace, every
    shard has 3 in-sync replicas again on the remaining nodes, with no operator."""
    report = run(
        ChaosConfig("lose-node", duration_s=20, seed=7, out_dir=str(tmp_path / "lose")), say=lambda _: None
    )
    assert report["passed"] and report["lost"] == [] and report["divergent_shards"] == []
    assert (
        report["audit"]["verified"]
        and report["audit"]["writes_audited"] >= report["audit"]["writes_acknowledged"]
    )
    assert report["config"]["nodes"] == 4 and report["config"]["rf"] == 3  # a spare node for the copy
    (loss,) = [f for f in report["recovery"] if f["fault"] == "lose-node"]
    assert loss["recovered_after_s"] is not None  # writes came back (the figure is in RELIABILITY.md)
    assert report["replication_restored_after_s"] is not None
    assert report["converged_after_s"] is not None


def test_backup_under_faults_is_complete_and_whole_or_failed_and_unlisted(tmp_path):
    """backup-under-faults: a backup while the workload writes, then its shard primary and the
    leader coordinator SIGKILLed. Each backup ends complete (a restore holds every write
    acknowledged before it was asked for) or failed without a manifest."""
    report = run(
        ChaosConfig("backup-under-faults", duration_s=14, seed=3, out_dir=str(tmp_path / "bk")),
        say=lambda _: None,
    )
    assert report["passed"] and report["lost"] == [], report
    assert report["backups"] and all(b["passed"] for b in report["backups"]), report["backups"]
    for b in report["backups"]:  # retried through the failovers, each one completes
        assert b["state"] == "complete", b
        assert b["acknowledged_before"] > 0 and b["missing"] == [] and b["wrong"] == []


def test_the_heaviest_accepted_requests_cause_no_false_failover(tmp_path):
    report = run(
        ChaosConfig("heavy-load", duration_s=20, seed=7, out_dir=str(tmp_path / "heavy")), say=lambda _: None
    )
    assert report["passed"] and report["lost"] == [], report
    assert report["false_failovers"] == 0 and report["epoch_bumps"] == 0, report
    assert sum(h["searches"] for h in report["heavy_load"]) > 0  # the heavy load did run


@pytest.mark.skipif(os.geteuid() != 0, reason="disk-full mounts a tmpfs per node data dir: it needs root")
def test_a_full_disk_is_remediated_without_an_operator(tmp_path):
    """disk-full: a shard primary's data dir (a tmpfs) filled to the last byte. The node reports
    it cannot write; the coordinator hands its primaries to in-sync replicas (writes resume) and
    moves its replicas to the spare node; nothing acknowledged is lost."""
    report = run(
        ChaosConfig("disk-full", duration_s=20, seed=7, out_dir=str(tmp_path / "disk")), say=lambda _: None
    )
    assert report["passed"] and report["lost"] == [] and report["divergent_shards"] == [], report
    assert report["config"]["nodes"] == 4  # a spare node for the moved replicas
    (full,) = [f for f in report["recovery"] if f["fault"] == "disk-full"]
    assert full["recovered_after_s"] is not None  # writes resumed (the figure is in RELIABILITY.md)
    assert report["disk_full"]["replicas_moved_after_s"] is not None, report["disk_full"]
    assert report["converged_after_s"] is not None
    with open("/proc/mounts") as f:
        assert str(tmp_path) not in f.read()  # every tmpfs unmounted
