"""`quartz chaos run`: start a cluster (3-member etcd, 2 coordinators), run the workload,
inject faults on a schedule drawn from the seed, heal, wait for convergence, check, report."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson

from quartz_cluster.chaos.checker import availability, check, recovery_times
from quartz_cluster.chaos.faults import (
    FAULTS,
    NEEDS_NETWORK,
    NEEDS_SPARE_NODE,
    NEEDS_TMPFS,
    SCENARIOS,
    Injected,
)
from quartz_cluster.chaos.netproxy import Network
from quartz_cluster.chaos.workload import History, Workload
from quartz_cluster.cluster import LocalCluster
from quartz_cluster.meta.schema import shard_of
from quartz_cluster.node.client import NodeClient

COLLECTION = "chaos"
CONVERGE_TIMEOUT_S = 120.0
RECALL_QUERIES = 50


@dataclass
class ChaosConfig:
    scenario: str
    duration_s: float = 60.0
    seed: int = 1
    nodes: int = 3
    shards: int = 4
    rf: int = 3  # with majority writes (2 of 3), any single node may be lost for good
    out_dir: str = ".quartz/chaos"
    dim: int = 16
    fault_every_s: float = 8.0  # a fault starts this often
    heal_after_s: float = 4.0  # and is healed this long after

    def replay(self) -> str:
        return (
            f"quartz chaos run --scenario {self.scenario} --duration {self.duration_s:g} --seed {self.seed} "
            f"--nodes {self.nodes} --shards {self.shards} --rf {self.rf}"
        )


NODE_TMPFS_BYTES = 256 * 2**20  # each node's data dir in disk-full runs: room for the workload


def mount_node_tmpfs(cluster_dir: Path, nodes: int) -> None:
    """Each node's data dir on a tmpfs of its own (disk-full fills one); needs root."""
    if os.geteuid() != 0:
        raise PermissionError("this scenario mounts a tmpfs per node data dir: run it as root")
    for i in range(nodes):
        path = cluster_dir / "nodes" / f"n{i + 1}"
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={NODE_TMPFS_BYTES},mode=0700", "tmpfs", str(path)],
            check=True,
        )


def unmount_under(directory: Path) -> None:
    """Unmount every mount below `directory` (this runner's tmpfs), deepest first."""
    prefix = str(directory.resolve()) + "/"
    try:
        with open("/proc/mounts") as f:
            points = [line.split()[1] for line in f]
    except OSError:
        return
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def run(cfg: ChaosConfig, say=print) -> dict:
    if cfg.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {cfg.scenario!r}; one of {', '.join(sorted(SCENARIOS))}")
    rng = random.Random(cfg.seed)
    if any(f in NEEDS_SPARE_NODE for f in SCENARIOS[cfg.scenario]):
        cfg.nodes = max(cfg.nodes, cfg.rf + 1)  # a spare node to restore the replication factor on
    out = Path(cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    unmount_under(out / "cluster")  # a previous run's tmpfs, if it was interrupted
    shutil.rmtree(out / "cluster", ignore_errors=True)  # a run always starts from a fresh cluster
    if any(f in NEEDS_TMPFS for f in SCENARIOS[cfg.scenario]):
        mount_node_tmpfs(out / "cluster", cfg.nodes)
    net = None
    if any(f in NEEDS_NETWORK for f in SCENARIOS[cfg.scenario]):
        net = Network(lambda: {p.pid: p.name for p in cluster.processes() if p.alive()})
    cluster = LocalCluster(
        out / "cluster",
        nodes=cfg.nodes,
        coordinators=2,
        etcd_members=3,
        # lose-node: the default grace, after which lost replicas are re-created; otherwise no
        # repair, so that a killed node's return is what is tested
        coordinator_args=[] if "lose-node" in SCENARIOS[cfg.scenario] else ["--repair-grace", "3600"],
        node_advertise=(lambda node_id: net.front(node_id, _listen_address(out / "cluster", node_id)))
        if net
        else None,
    )
    cluster.network = net
    history = History()
    cluster.history = history  # faults that need to know what was acknowledged when
    say(
        f"chaos {cfg.scenario}: seed {cfg.seed}, {cfg.duration_s:g} s, {cfg.nodes} nodes, "
        f"{cfg.shards} shards x RF {cfg.rf}; output in {out}"
    )
    try:
        cluster.start()
        with cluster.client(timeout=60) as c:
            c.create_collection(
                COLLECTION, dim=cfg.dim, metric="cosine", shards=cfg.shards, replication_factor=cfg.rf
            )
        history.start = time.monotonic()
        workload = Workload(cluster.router_address, cluster.admin_key, COLLECTION, cfg.dim, history, cfg.seed)
        workload.start()
        _schedule(cfg, cluster, history, rng, say)
        workload.halt()
        say("healed; waiting for convergence ...")
        converge_s = _converge(cluster, history, cfg)
        report = _check(cfg, cluster, history, converge_s)
        report["epoch_bumps"] = _epoch_bumps(cluster)
        done = [e["t"] for e in history.events if e["type"] == "converged"]
        lost = [e["t"] for e in history.events if e["type"] == "fault" and e["fault"] in NEEDS_SPARE_NODE]
        if lost:  # every shard back to its replication factor, counted from the loss
            report["replication_restored_after_s"] = round(done[0] - lost[0], 2) if done else None
        report["heavy_load"] = getattr(cluster, "heavy_stats", [])
        if "disk-full" in SCENARIOS[cfg.scenario]:
            report["disk_full"] = getattr(cluster, "disk_full_stats", None)
            moved = (report["disk_full"] or {}).get("replicas_moved_after_s")
            report["passed"] = report["passed"] and moved is not None
        if getattr(cluster, "backups", None):
            report["backups"] = _check_backups(cluster, history)
            report["passed"] = report["passed"] and all(b["passed"] for b in report["backups"])
        if "heavy-load" in SCENARIOS[cfg.scenario] and cfg.scenario == "heavy-load":
            # no fault but load: any failover is a false one (a lease lost under load)
            report["false_failovers"] = report["epoch_bumps"]
            report["passed"] = report["passed"] and report["epoch_bumps"] == 0
    except BaseException:
        cluster.kill()
        if net is not None:
            net.close()
        unmount_under(out / "cluster")
        raise
    cluster.stop()
    if net is not None:
        net.close()
    unmount_under(out / "cluster")
    _write(out, cfg, history, report)
    say(summary(report))
    return report


BACKUP_WAIT_S = 300.0


def _check_backups(cluster: LocalCluster, h: History) -> list[dict]:
    """Each backup a fault asked for: complete, and a restore of it (under another name) holds
    every write acknowledged before it was asked for, bit for bit; or failed, with no manifest,
    and not listed as complete."""
    from quartz_cluster.backup import manifest
    from quartz_cluster.backup.repository import open_repository

    out = []
    with cluster.client(timeout=60) as c:
        for i, b in enumerate(cluster.backups):
            deadline = time.monotonic() + BACKUP_WAIT_S
            job = c.backup(b["id"])
            while job["state"] in ("pending", "running") and time.monotonic() < deadline:
                time.sleep(0.5)
                job = c.backup(b["id"])
            result = {"id": b["id"], "state": job["state"], "error": job["error"], "passed": False}
            repo = open_repository(job["repository"])
            listed = {j["id"] for j in c.list_backups(job["repository"]) if j["state"] == "complete"}
            if job["state"] == "failed":
                result["passed"] = repo.size(manifest.manifest_key(b["id"])) is None and b["id"] not in listed
            elif job["state"] == "complete":
                name = f"restored-{i}"
                c.restore_backup(job["repository"], b["id"], [COLLECTION], as_name=name)
                while c.describe_collection(name).status != "ready" and time.monotonic() < deadline:
                    time.sleep(0.5)
                want = sorted(b["acked_before"])
                got: dict[str, np.ndarray] = {}
                for start in range(0, len(want), 5000):
                    for p in c.get(
                        name, want[start : start + 5000], with_payload=False, consistency="strong"
                    ):
                        got[p.id] = p.vector
                missing = [pid for pid in want if pid not in got]
                wrong = [pid for pid in got if not np.array_equal(got[pid], h.vectors[pid])]
                result.update(
                    acknowledged_before=len(want),
                    missing=missing[:20],
                    wrong=wrong[:20],
                    passed=not missing and not wrong and b["id"] in listed,
                )
                c.drop_collection(name)
            out.append(result)
    return out


def _epoch_bumps(cluster: LocalCluster) -> int:
    """Failovers and handovers over the run: every shard starts at epoch 1, and each one bumps it."""
    with cluster.client(timeout=30) as c:
        return sum(s["epoch"] - 1 for info in c.list_collections() for s in info.shard_map)


def _listen_address(cluster_dir: Path, node_id: str):
    """Where node `node_id` listens now (node.json; a restart picks a new port), or None."""
    info = cluster_dir / "nodes" / node_id / "node.json"

    def current() -> str | None:
        try:
            return orjson.loads(info.read_bytes()).get("listen")
        except (OSError, ValueError):
            return None

    return current


def _schedule(cfg: ChaosConfig, cluster: LocalCluster, h: History, rng: random.Random, say) -> None:
    names = SCENARIOS[cfg.scenario]
    pending: list[tuple[float, Injected]] = []
    next_fault = min(2.0, cfg.fault_every_s)
    while h.now() < cfg.duration_s:
        if h.now() >= next_fault and h.now() + cfg.heal_after_s < cfg.duration_s:
            name = rng.choice(names)
            t = h.now()
            injected = FAULTS[name](cluster, COLLECTION, rng)
            next_fault = h.now() + cfg.fault_every_s
            if injected.skipped:
                continue
            h.add({"type": "fault", "t": t, "fault": name, "target": injected.target})
            say(f"  t={t:6.1f}s  {name} ({injected.target})")
            hold_s = cfg.heal_after_s if injected.heal_after_s is None else injected.heal_after_s
            pending.append((h.now() + hold_s, injected))
            next_fault = h.now() + cfg.fault_every_s
        for due, injected in [p for p in pending if p[0] <= h.now()]:
            injected.heal()
            h.add({"type": "heal", "t": h.now(), "fault": injected.fault, "target": injected.target})
            pending.remove((due, injected))
        time.sleep(0.1)
    for _, injected in pending:
        injected.heal()
        h.add({"type": "heal", "t": h.now(), "fault": injected.fault, "target": injected.target})


def _replica_states(cluster: LocalCluster, attempted: list[str], shards: int) -> dict[int, list[object]]:
    """Per shard, each live replica's (log end, count, {id: vector bytes} of the attempted ids it holds)."""
    with cluster.client(timeout=30) as c:
        info = c.describe_collection(COLLECTION)
    nodes = {n.name: n for n in cluster.nodes if n.alive()}
    out: dict[int, list[object]] = {}
    for s in info.shard_map:
        mine = [i for i in attempted if shard_of(i, shards) == s["shard"]]
        states = []
        for name in s["replicas"]:
            node = nodes.get(name)
            if node is None:
                states.append(("down", name))
                continue
            with member_client(cluster, node.address) as nc:
                stats = nc.stats(info.id, s["shard"])
                held: dict[str, bytes] = {}
                for start in range(0, len(mine), 5000):
                    got = nc.get(info.id, s["shard"], mine[start : start + 5000], with_payload=False)
                    held.update({pid: vec.tobytes() for pid, (vec, _) in got.items()})
            states.append((stats.log_end, stats.count, held))
        out[s["shard"]] = states
    return out


def member_client(cluster: LocalCluster, address: str) -> NodeClient:
    """A NodeClient to a node of the cluster that calls as a member ("chaos"): the checker reads
    each replica directly, which the sealed node API allows cluster members only."""
    return NodeClient(address, identity=cluster.member_identity("chaos"))


def _converge(cluster: LocalCluster, h: History, cfg: ChaosConfig) -> float | None:
    """Wait until every shard has RF live in-sync replicas holding the same data."""
    t0 = time.monotonic()
    attempted = list(h.vectors)
    while time.monotonic() - t0 < CONVERGE_TIMEOUT_S:
        try:
            with cluster.client(timeout=10) as c:
                shard_map = c.describe_collection(COLLECTION).shard_map
            if all(len(s["in_sync"]) == cfg.rf for s in shard_map):
                states = _replica_states(cluster, attempted, cfg.shards)
                if all(all(x == v[0] for x in v) for v in states.values()):
                    h.add({"type": "converged", "t": h.now()})
                    return round(time.monotonic() - t0, 2)
        except Exception:
            pass
        time.sleep(0.5)
    return None


def _check(cfg: ChaosConfig, cluster: LocalCluster, h: History, converge_s: float | None) -> dict:
    attempted = sorted(h.vectors)
    with cluster.client(timeout=60) as c:
        present: dict[str, np.ndarray] = {}
        for start in range(0, len(attempted), 5000):
            for p in c.get(
                COLLECTION, attempted[start : start + 5000], with_payload=False, consistency="strong"
            ):
                present[p.id] = p.vector
        count = c.count(COLLECTION)
        # recall@10 after convergence vs exact cosine over what is stored
        ids = sorted(present)
        base = np.stack([present[i] for i in ids]) if ids else np.zeros((0, cfg.dim), np.float32)
        q = np.random.default_rng(cfg.seed).normal(size=(RECALL_QUERIES, cfg.dim)).astype(np.float32)
        recall = None
        if len(ids) >= 10:
            bn = base / np.linalg.norm(base, axis=1, keepdims=True)
            qn = q / np.linalg.norm(q, axis=1, keepdims=True)
            truth = np.argsort(-(qn @ bn.T), axis=1)[:, :10]
            hits = c.search(COLLECTION, q, k=10, with_payload=False, consistency="strong")
            found = [{h_.id for h_ in row} for row in hits]
            recall = float(np.mean([len(found[i] & {ids[j] for j in truth[i]}) / 10 for i in range(len(q))]))
        audit = _audit_check(c, sum(e["ok"] for e in h.events if e["type"] == "write"))
    wrong_vectors = sorted(i for i, v in present.items() if not np.array_equal(v, h.vectors[i]))
    states = _replica_states(cluster, attempted, cfg.shards)
    verdict = check(
        set(attempted),
        set(h.acked),
        set(present),
        set(h.read_ids),
        h.result_lists,
        count,
        states,
        h.strong_read_misses,
    )
    events = h.events
    writes = [e for e in events if e["type"] == "write"]
    reads = [e for e in events if e["type"] == "read"]
    return {
        "config": asdict(cfg),
        "passed": verdict.passed and not wrong_vectors and converge_s is not None and audit["passed"],
        "audit": audit,
        "lost": verdict.lost,
        "unexpected": verdict.unexpected,
        "duplicated": verdict.duplicated,
        "stale": verdict.stale,
        "wrong_vectors": wrong_vectors,
        "recovered": len(verdict.recovered),
        "divergent_shards": verdict.divergent_shards,
        "converged_after_s": converge_s,
        "attempted": len(attempted),
        "acknowledged": len(h.acked),
        "stored": count,
        "writes": {"ok": sum(e["ok"] for e in writes), "failed": sum(not e["ok"] for e in writes)},
        "reads": {"ok": sum(e["ok"] for e in reads), "failed": sum(not e["ok"] for e in reads)},
        "recall_at_10_after": recall,
        "recovery": recovery_times(events),
        "availability": availability(events),
        "replay": cfg.replay(),
    }


def _audit_check(c, writes_ok: int) -> dict:
    """The audit log came through the faults: every chain verifies, and every write the
    workload had acknowledged has its audit event (it is journaled before the answer)."""
    report = c.verify_audit()
    limit = 10_000  # the most one tail returns (router/service.py AUDIT_TAIL_MAX)
    audited = sum(r["event"]["responseStatus"]["code"] == 200 for r in c.audit(verb="upsert", limit=limit))
    return {
        "passed": report["ok"] and audited >= min(writes_ok, limit),
        "verified": report["ok"],
        "problems": report["problems"][:10],
        "records": report["records"],
        "writes_audited": audited,
        "writes_acknowledged": writes_ok,
    }


def summary(r: dict) -> str:
    cfg = r["config"]
    lines = [
        f"chaos {cfg['scenario']} seed {cfg['seed']}: {'PASS' if r['passed'] else 'FAIL'}",
        f"  writes: {r['acknowledged']:,} ids acknowledged of {r['attempted']:,} attempted "
        f"({r['writes']['ok']:,} ok / {r['writes']['failed']:,} failed calls); stored {r['stored']:,}",
        f"  lost {len(r['lost'])}, unexpected {len(r['unexpected'])}, duplicated {len(r['duplicated'])}, "
        f"  stale strong reads {len(r['stale'])}, wrong vectors {len(r['wrong_vectors'])}, "
        f"recovered (unacknowledged but stored) {r['recovered']}",
        f"  reads: {r['reads']['ok']:,} ok / {r['reads']['failed']:,} failed",
        f"  converged after {r['converged_after_s']} s; divergent shards {r['divergent_shards'] or 'none'}; "
        f"recall@10 after convergence {r['recall_at_10_after']}",
    ]
    for b in r.get("backups", []):
        detail = (
            f"{b['acknowledged_before']} writes acknowledged before it, {len(b['missing'])} missing "
            f"from its restore, {len(b['wrong'])} wrong"
            if b["state"] == "complete"
            else f"failed ({b['error']}), not listed"
        )
        lines.append(f"  backup {b['id']}: {b['state']}, {detail}: {'ok' if b['passed'] else 'FAIL'}")
    if "replication_restored_after_s" in r:
        lines.append(
            f"  replication factor restored {r['replication_restored_after_s']} s after the node was lost"
        )
    if "epoch_bumps" in r:
        lines.append(f"  failovers and handovers (epoch bumps): {r['epoch_bumps']}")
    if "audit" in r:
        a = r["audit"]
        lines.append(
            f"  audit log: {'verified' if a['verified'] else 'BROKEN'} ({a['records']:,} records); "
            f"{a['writes_audited']:,} write events for {a['writes_acknowledged']:,} acknowledged writes"
        )
    for h in r.get("heavy_load", []):
        lines.append(
            f"  heavy load: {h['writes']} batches written, {h['searches']} searches answered, "
            f"refused {h['refused'] or 'none'}"
        )
    for f in r["recovery"]:
        d = f["reads_during"]
        lines.append(
            f"  fault {f['fault']} ({f['target']}) at {f['t']:.1f} s: writes recovered after "
            f"{f['recovered_after_s']} s, longest write outage {f['write_outage_s']} s;\n"
            f"    reads while in force: eventual {d['eventual_ok']} ok / "
            f"{d['eventual_failed']} failed, strong {d['strong_ok']} ok / {d['strong_failed']} failed"
        )
    if not r["passed"]:
        lines.append(f"  replay: {r['replay']}")
    return "\n".join(lines)


def _write(out: Path, cfg: ChaosConfig, h: History, report: dict) -> None:
    with open(out / "history.jsonl", "wb") as f:
        for e in h.events:
            f.write(orjson.dumps(e) + b"\n")
    (out / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (out / "summary.txt").write_text(summary(report) + "\n")
    _timeline(out / "timeline.png", h.events, report)


def _timeline(path: Path, events: list[dict], report: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # an optional extra: pip install 'quartz-cluster[chaos]'
        return
    buckets = report["availability"]
    t = [b["t"] for b in buckets]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, [b["write_ok"] for b in buckets], label="writes ok/s", color="tab:blue")
    ax.plot(t, [b["read_ok"] for b in buckets], label="reads ok/s", color="tab:green")
    ax.plot(
        t,
        [b["eventual_read_ok"] for b in buckets],
        label="eventual reads ok/s",
        color="tab:olive",
        linestyle="--",
    )
    ax.plot(t, [b["write_err"] for b in buckets], label="write errors/s", color="tab:red")
    ax.plot(t, [b["read_err"] for b in buckets], label="read errors/s", color="tab:orange")
    for e in events:
        if e["type"] == "fault":
            ax.axvline(e["t"], color="red", linestyle="--", alpha=0.6)
            ax.text(
                e["t"],
                ax.get_ylim()[1] * 0.95,
                f" {e['fault']}",
                color="red",
                fontsize=7,
                rotation=90,
                va="top",
            )
        elif e["type"] == "heal":
            ax.axvline(e["t"], color="green", linestyle=":", alpha=0.6)
    cfg = report["config"]
    ax.set_title(f"chaos {cfg['scenario']} seed {cfg['seed']}: {'PASS' if report['passed'] else 'FAIL'}")
    ax.set_xlabel("seconds")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
