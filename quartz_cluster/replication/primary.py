"""The primary side of a shard's replication (DESIGN §5).

`replicate()` is called by the shard's writer, holding the commit lock, after a group's
entries are durable locally. It returns once every member of in_sync holds them durably. A
follower that does not acknowledge within REPLICATION_TIMEOUT_S is first removed from in_sync
in etcd (compare-and-swap on the shard key, through `isr_change`), and only then is the write
acknowledged without it. If the removal cannot be made (the map moved: a new epoch, another
primary), the write is not committed.

Every replica outside in_sync gets a catch-up task: it brings the follower up to the log end
(by log, or by snapshot when the follower diverged or the log no longer reaches back), then,
holding the commit lock so no entry can slip in between, adds it back to in_sync. From the
moment that succeeds, the follower counts in every acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable

import grpc

from quartz_cluster import limits, logs
from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.rpc.channels import NodeChannels

log = logging.getLogger("quartz.replication")
CATCHUP_BACKOFF_S_MAX = 2.0

# isr_change(node, incarnation): add the node to in_sync with that incarnation, or remove it
# (incarnation None). True when etcd took the change.
IsrChange = Callable[[str, str | None], Awaitable[bool]]


class NotCommitted(Exception):
    pass


def replication_timeout_s(entry_bytes: int, ef_construction: int) -> float:
    """The deadline of a Replicate call: a follower applies what it receives before it answers,
    and that work grows with the bytes (points x dim) and with ef_construction. A fixed deadline
    pushed healthy followers out of in_sync on big batches (10k x 384-d: 2.9 s against 2 s)."""
    work = entry_bytes / limits.REPLICATION_APPLY_BYTES_PER_S_MIN
    return limits.REPLICATION_TIMEOUT_S + work * max(1.0, ef_construction / limits.DEFAULT_EF_CONSTRUCTION)


class Replicator:
    def __init__(
        self,
        replica,
        me: str,
        epoch: int,
        peers: dict[str, str],
        in_sync: dict[str, str],
        isr_change: IsrChange,
        channels: NodeChannels,
    ) -> None:
        self.replica, self.me, self.epoch = replica, me, epoch
        self.peers = dict(peers)  # replica node -> address (not me)
        self.in_sync = dict(in_sync)  # node -> replica incarnation (me included)
        self.isr_change, self.channels = isr_change, channels
        self.log = logs.ContextAdapter(log, {"shard": replica.spec.name, "epoch": epoch})
        self.ref = node_pb2.ShardRef(collection_id=replica.spec.collection_id, shard=replica.spec.shard)
        self._catchups: dict[str, asyncio.Task] = {}
        self._probes: dict[str, asyncio.Task] = {}  # one per in-sync follower when the epoch starts
        self.stopped = False
        # per follower: the log position it acknowledged and when it last held our whole log
        # (quartz_replication_lag_*; node/metrics.py). In-sync followers hold every committed entry.
        now = time.monotonic()
        self.started_at = now
        self.acked_lsn = {node: replica.log_end for node in self.in_sync if node != me}
        self.caught_up_at = {node: now for node in self.in_sync if node != me}

    # ------------------------------------------------------------------ membership

    def in_sync_size(self) -> int:
        return len(self.in_sync)

    def update(self, peers: dict[str, str], replicas: tuple[str, ...]) -> None:
        """New addresses (a peer restarted) or replicas; (re)start catch-up where needed. A node no
        longer among the replicas (moved away) stops counting in acknowledgements."""
        self.peers = dict(peers)
        for node in list(self.in_sync):
            if node != self.me and node not in replicas:
                self.in_sync.pop(node)
        for node, task in list(self._catchups.items()):
            if node not in replicas:
                task.cancel()
        for node in self.peers:
            if node not in self.in_sync:
                self._start_catchup(node)

    def start(self) -> None:
        """A new epoch: check every in-sync follower's log against ours now, not at the next write.
        A follower may hold an entry the previous primary replicated but never committed (it lost
        its epoch first); we do not have it, so that follower is resynchronised (Kafka truncates on
        leader change for the same reason). One behind is filled in."""
        for node in list(self.in_sync):
            if node != self.me:
                self._probes[node] = asyncio.get_running_loop().create_task(
                    self._probe(node), name=f"probe-{node}"
                )

    async def _probe(self, node: str) -> None:
        r = self.replica

        async def probe() -> None:  # a writer job: no append in between, the log end stands still
            self._check_current()
            if await self._send(node, [], r.log_end, r.last_epoch):
                return
            self.log.warning(
                "in-sync follower disagrees with the new primary; resyncing it", extra={"node": node}
            )
            if await self.isr_change(node, None):
                self.in_sync.pop(node, None)
                self._start_catchup(node)

        try:
            await r.exclusive("probe", probe)
        except NotCommitted:
            return
        except Exception as exc:
            self.log.info("probe failed", extra={"node": node, "error": repr(exc)})

    def stop(self) -> None:
        self.stopped = True
        for task in (*self._catchups.values(), *self._probes.values()):
            task.cancel()

    def _start_catchup(self, node: str) -> None:
        task = self._catchups.get(node)
        if self.stopped or (task is not None and not task.done()):
            return
        self._catchups[node] = asyncio.get_running_loop().create_task(
            self._catch_up(node), name=f"catchup-{node}"
        )

    def _check_current(self) -> None:
        if self.stopped or self.replica.role != "primary" or self.replica.epoch != self.epoch:
            raise NotCommitted(f"no longer the primary of epoch {self.epoch}")

    def _acknowledged(self, node: str, lsn: int) -> None:
        self.acked_lsn[node] = max(lsn, self.acked_lsn.get(node, 0))
        if self.acked_lsn[node] >= self.replica.log_end:
            self.caught_up_at[node] = time.monotonic()

    def lag(self, now: float) -> dict[str, tuple[int, float]]:
        """Per follower: (entries of our log it has not acknowledged, seconds since it last held
        our whole log; 0 when it holds it now)."""
        end = self.replica.log_end
        out = {}
        for node in self.peers:
            behind = max(0, end - self.acked_lsn.get(node, 0))
            out[node] = (behind, 0.0 if behind == 0 else now - self.caught_up_at.get(node, self.started_at))
        return out

    # ------------------------------------------------------------------ the write path

    async def replicate(self, entries: list[bytes], prev_lsn: int, prev_epoch: int) -> None:
        acked: set[str] = set()
        while True:
            self._check_current()
            targets = [n for n in self.in_sync if n != self.me and n not in acked]
            if not targets:
                return
            results = await asyncio.gather(*(self._send(n, entries, prev_lsn, prev_epoch) for n in targets))
            for node, ok in zip(targets, results, strict=True):
                if ok:
                    acked.add(node)
                    continue
                self.log.warning(
                    "follower did not acknowledge; removing it from in_sync", extra={"node": node}
                )
                if await self.isr_change(node, None):
                    self.in_sync.pop(node, None)
                    self._start_catchup(node)
                else:
                    self._check_current()
                    await asyncio.sleep(0.2)  # etcd unreachable or the map moved: retry, or stop above

    async def _send(self, node: str, entries: list[bytes], prev_lsn: int, prev_epoch: int) -> bool:
        address = self.peers.get(node)
        if address is None:
            return False
        stub = self.channels.stub(address)
        try:
            resp = await self._replicate(stub, prev_lsn, prev_epoch, entries)
            if (
                resp.status == node_pb2.REPLICATE_BEHIND
                and prev_lsn - resp.log_end <= limits.INLINE_CATCHUP_ENTRIES_MAX
            ):
                # In sync but a little behind (e.g. after a promotion): fill the gap, then retry.
                fill = await asyncio.to_thread(
                    self.replica.read_log,
                    resp.log_end + 1,
                    prev_lsn - resp.log_end,
                    limits.REPLICATION_CALL_BYTES_MAX,
                )
                if fill is not None and len(fill) < prev_lsn - resp.log_end:
                    fill = None  # too big to send inline: the catch-up task will do it
                if fill is not None:
                    epoch = self.replica.entry_epoch(resp.log_end)
                    resp = await self._replicate(stub, resp.log_end, epoch, fill + entries)
            if resp.status == node_pb2.REPLICATE_OK:
                self._acknowledged(node, prev_lsn + len(entries))
                return True
            return False
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "fenced" in (exc.details() or ""):
                self.stopped = True  # a newer epoch exists: this primary is stale
            self.log.warning(
                "replicate failed", extra={"node": node, "error": f"{exc.code().name}: {exc.details()}"}
            )
            return False
        except Exception as exc:  # whatever it is, this follower did not acknowledge
            self.log.warning("replicate failed", extra={"node": node, "error": repr(exc)})
            return False

    async def _replicate(
        self,
        stub,
        prev_lsn: int,
        prev_epoch: int,
        entries: list[bytes],
    ) -> node_pb2.ReplicateResponse:
        req = node_pb2.ReplicateRequest(
            ref=self.ref,
            epoch=self.epoch,
            primary=self.me,
            prev_lsn=prev_lsn,
            prev_epoch=prev_epoch,
            entries=entries,
        )
        timeout_s = replication_timeout_s(sum(map(len, entries)), self.replica.spec.ef_construction)
        return await stub.Replicate(req, timeout=timeout_s)

    # ------------------------------------------------------------------ catch-up

    async def _catch_up(self, node: str) -> None:
        backoff = 0.1
        while not self.stopped and node in self.peers:
            try:
                if await self._bring_up_to_date(node, join=False) and await self.replica.exclusive(
                    "join", lambda node=node: self._join(node)
                ):
                    return
            except asyncio.CancelledError:
                raise
            except NotCommitted:
                return
            except Exception as exc:
                self.log.info("catch-up attempt failed", extra={"node": node, "error": repr(exc)})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, CATCHUP_BACKOFF_S_MAX)

    async def _join(self, node: str) -> bool:
        """A writer job (no entry can be appended meanwhile): send the last entries, then add
        the follower to in_sync. From then on it counts in every acknowledgement."""
        self._check_current()
        incarnation = await self._bring_up_to_date(node, join=True)
        if incarnation and await self.isr_change(node, incarnation):
            self.in_sync[node] = incarnation
            self._acknowledged(node, self.replica.log_end)
            self.log.info("follower caught up; back in in_sync", extra={"node": node})
            return True
        return False

    async def _bring_up_to_date(self, node: str, join: bool) -> str | None:
        """Send the follower what it lacks until its log ends where ours does. Returns its
        replica incarnation when it is there, else None."""
        address = self.peers.get(node)
        if address is None:
            return None
        stub = self.channels.stub(address)
        r = self.replica
        # Only committed entries (up to applied_lsn) are sent: a group in flight may still be
        # truncated, and a follower outside in_sync must never hold what the primary drops.
        end = r.applied_lsn
        resp = await self._replicate(stub, end, r.entry_epoch(end), [])  # probe
        for _ in range(100_000):  # bounded: each round makes progress or snapshots
            self._check_current()
            end = r.applied_lsn
            if resp.status == node_pb2.REPLICATE_OK and resp.log_end == end:
                return resp.incarnation
            if resp.status == node_pb2.REPLICATE_DIVERGED or resp.log_end > r.log_end:
                resp = await self._send_snapshot(stub)
                continue
            if resp.log_end > end:  # it holds the group in flight: wait for it to commit
                await asyncio.sleep(0.05)
                resp = await self._replicate(stub, r.applied_lsn, r.entry_epoch(r.applied_lsn), [])
                continue
            start = resp.log_end + 1
            entries = await asyncio.to_thread(
                r.read_log,
                start,
                limits.REPLICATION_ENTRIES_PER_CALL_MAX,
                limits.REPLICATION_CALL_BYTES_MAX,
                end,
            )
            if entries is None:  # our log no longer reaches back that far
                resp = await self._send_snapshot(stub)
                continue
            resp = await self._replicate(stub, resp.log_end, r.entry_epoch(resp.log_end), entries)
            if resp.status != node_pb2.REPLICATE_OK:
                continue  # behind or diverged: handled at the top of the loop (resend or snapshot)
            if not join and end - resp.log_end <= limits.REPLICATION_ENTRIES_PER_CALL_MAX:
                # Close enough: the last few entries are sent as a writer job, then it joins.
                return resp.incarnation
        return None

    async def _send_snapshot(self, stub) -> node_pb2.ReplicateResponse:
        """Stream our committed state to a follower. A thread reads RocksDB into a bounded queue;
        the stream polls it, so neither side can block the other forever."""
        r = self.replica
        self.log.info("sending snapshot")
        chunks: queue.Queue = queue.Queue(maxsize=4)
        cancelled = threading.Event()

        def produce() -> None:
            for item in r.snapshot_chunks():
                while not cancelled.is_set():
                    try:
                        chunks.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        pass
                if cancelled.is_set():
                    return

        producer = asyncio.get_running_loop().run_in_executor(None, produce)

        async def stream():
            while True:
                try:
                    lsn, lsn_epoch, next_label, rows = chunks.get_nowait()
                except queue.Empty:
                    if producer.done() and chunks.empty():
                        producer.result()  # re-raise a read error
                        return
                    await asyncio.sleep(0.005)
                    continue
                yield node_pb2.SnapshotChunk(
                    ref=self.ref,
                    epoch=self.epoch,
                    lsn=lsn,
                    lsn_epoch=lsn_epoch,
                    next_label=next_label,
                    keys=[k for k, _ in rows],
                    values=[v for _, v in rows],
                )

        try:
            return await stub.InstallSnapshot(stream(), timeout=limits.SNAPSHOT_TIMEOUT_S)
        finally:
            cancelled.set()
