"""One shard replica: durable state in its own RocksDB (storage.py), derived HNSW + payload index
in memory (state.py), changed only by its one writer (writer.py).

The parts, one concept each:
  storage.py     the RocksDB key layout and the log on it
  state.py       the in-memory state and `apply`, the only mutation path
  checkpoint.py  checkpoints and recovery on open
  role.py        role and epoch: the one owner, and the decisions that depend on them
  pipeline.py    a primary's group commit: append, replicate, apply, acknowledge
  follower.py    a follower taking a primary's entries
  snapshot.py    reading a snapshot, staging and installing one
  search.py      search over the state
  writer.py      the writer: one task runs every change, one at a time

The locking discipline: every change (log, rows, state, checkpoint, database handle, role taken
from a primary's call) is a job of the writer, so changes never overlap and a cancelled caller
cannot break the order. Readers (search, get) run in worker threads and take the state's
shared lock; `apply` takes it exclusively. There is no other lock on the data path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import numpy as np

from quartz_cluster import filters, limits, logs
from quartz_cluster.capacity import index_row_bytes as capacity_row_bytes
from quartz_cluster.errors import Unavailable
from quartz_cluster.node.shard import follower, search, snapshot
from quartz_cluster.node.shard.checkpoint import Checkpoints, recover
from quartz_cluster.node.shard.pipeline import Pending, WritePipeline
from quartz_cluster.node.shard.role import FOLLOWER, ReplicaRole
from quartz_cluster.node.shard.spec import ShardOptions, ShardSpec
from quartz_cluster.node.shard.state import IndexState, StateLost
from quartz_cluster.node.shard.storage import K_EPOCH, ShardStore
from quartz_cluster.node.shard.writer import ShardWriter
from quartz_cluster.observability.metrics import CHECKPOINT_FAILURES, CHECKPOINT_SECONDS
from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.validation import WriteBatch

log = logging.getLogger("quartz.shard")


class ShardReplica:
    def __init__(self, path: str, spec: ShardSpec, options: ShardOptions) -> None:
        self.path, self.spec, self.options = path, spec, options
        self.log = logs.ContextAdapter(log, {"shard": spec.name})
        self.store = ShardStore(path)
        self.state = IndexState(spec, options, self.log)
        self.checkpoints = Checkpoints(path)
        self.roles = ReplicaRole(spec.name, self.store.meta(K_EPOCH), self.store.put_epoch)
        self.pipeline = WritePipeline(self.state, self.store, self.roles, self.log)
        group_max = 1 if options.commit_mode == "batch" else limits.GROUP_COMMIT_BATCHES_MAX
        self.writer: ShardWriter | None = None
        self._group_max = group_max
        self._staging: snapshot.Staging | None = None
        self.incarnation = ""  # set by the registry
        # health (reported in Stats and logged)
        self.points_since_checkpoint = 0
        self.checkpoint_failures = 0
        self.checkpoint_error = ""
        self._checkpoint_retry_at = 0.0
        self.last_checkpoint_s = 0.0
        self._follower_checkpoint_factor = 1.0 + random.uniform(0.0, options.follower_checkpoint_jitter)

    # ---------------------------------------------------------------- lifecycle

    def load(self) -> str:
        """Bring the in-memory state up to the end of the log. Returns how it got there."""
        return recover(self.state, self.store, self.checkpoints)

    def start(self) -> None:
        self.writer = ShardWriter(
            self.spec.name, self._commit_group, self._after_job, self._group_max, self.log
        )
        self.writer.start()

    async def close(self, checkpoint: bool = True) -> None:
        """Stop replicating (a primary's retry loop ends), finish queued work, stop the writer,
        optionally checkpoint, close RocksDB."""
        if self.roles.replicator is not None:
            self.roles.replicator.stop()
        if self.writer is not None:
            await self.writer.close()
        if self._staging is not None:
            self._staging.abort()
        if checkpoint and not self.broken and self.state.applied_lsn > self.checkpoints.lsn:
            await asyncio.to_thread(self._checkpoint)
        self.store.close()

    # ---------------------------------------------------------------- views

    @property
    def broken(self) -> str | None:
        return self.writer.stopped if self.writer is not None else None

    @property
    def db(self):
        return self.store.db

    @property
    def role(self) -> str:
        return self.roles.role

    @property
    def epoch(self) -> int:
        return self.roles.epoch

    @property
    def replicator(self):
        return self.roles.replicator

    @property
    def primary_hint(self) -> str:
        return self.roles.primary_hint

    @property
    def log_end(self) -> int:
        return self.store.log_end

    @property
    def last_epoch(self) -> int:
        return self.store.last_epoch

    @property
    def applied_lsn(self) -> int:
        return self.state.applied_lsn

    @property
    def checkpoint_lsn(self) -> int:
        return self.checkpoints.lsn

    @property
    def label_of(self) -> dict[str, int]:
        return self.state.label_of

    @property
    def free(self) -> dict[int, None]:
        return self.state.free

    @property
    def next_label(self) -> int:
        return self.state.next_label

    @property
    def hnsw(self):
        return self.state.hnsw

    def health(self) -> str:
        if self.broken:
            return f"out of service: {self.broken}"
        if self.checkpoint_error:
            return f"checkpoint failing ({self.checkpoint_failures} in a row): {self.checkpoint_error}"
        return "ok"

    def stats(self) -> dict:
        return {
            **self.state.stats(),
            "checkpoint_lsn": self.checkpoints.lsn,
            "epoch": self.roles.epoch,
            "log_end": self.store.log_end,
            "last_epoch": self.store.last_epoch,
            "storage_bytes": self.store.size_bytes(),
            "health": self.health(),
        }

    # ---------------------------------------------------------------- roles (the map's word)

    def become_primary(self, epoch: int, replicator) -> None:
        self.roles.become_primary(epoch, replicator)

    def become_follower(self, epoch: int, primary: str) -> None:
        self.roles.become_follower(epoch, primary)

    def set_lease_check(self, lease_ok) -> None:
        self.roles.lease_ok = lease_ok

    def check_strong_read(self, epoch: int) -> None:
        self.roles.check_strong_read(epoch)

    # ---------------------------------------------------------------- writes

    def _writer(self):
        if self.writer is None:
            raise Unavailable(f"shard {self.spec.name} is not started")
        return self.writer

    async def write(self, batch: WriteBatch, epoch: int = 0, min_in_sync: int = 1) -> int:
        """Make a validated batch durable on every in-sync replica and visible; returns its LSN."""
        writer = self._writer()
        if self.broken:
            raise Unavailable(f"shard {self.spec.name} is out of service: {self.broken}")
        refusal = self.roles.write_refusal(epoch, min_in_sync)
        if refusal is not None:
            raise refusal
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        writer.enqueue_write(Pending(batch, fut, epoch, min_in_sync))
        return await fut

    async def _commit_group(self, group: list[Pending]) -> None:
        reason = await self.pipeline.commit(group)
        if reason is not None:
            self.writer.stop_for_good(reason)
            return
        self.points_since_checkpoint += sum(p.points() for p in group)

    async def exclusive(self, name: str, fn):
        """Run `fn` (async) as a job of the writer: no write, append or install meanwhile.
        The replicator's probes and catch-up joins need the log to stand still."""
        return await self._writer().run(name, fn)

    async def append_replicated(self, req: node_pb2.ReplicateRequest) -> node_pb2.ReplicateResponse:
        """A follower takes entries from its primary (follower.py), as a writer job."""

        async def job():
            try:
                reply, points = await follower.append_replicated(
                    self.state, self.store, self.roles, req, self.incarnation
                )
            except StateLost as exc:
                self.log.exception("follower apply failed; shard out of service until restart")
                self.writer.stop_for_good(str(exc))
                raise Unavailable(f"shard {self.spec.name} is out of service: {exc}") from None
            self.points_since_checkpoint += points
            return reply

        return await self._writer().run("append", job)

    # ---------------------------------------------------------------- checkpoints

    def _checkpoint_due(self) -> bool:
        every = self.options.checkpoint_every_points
        if self.roles.role == FOLLOWER:
            # A follower's checkpoint holds up the primary's next Replicate: followers of one
            # shard checkpoint at different points (a per-replica offset), and while more work
            # is queued they wait, up to twice the interval.
            every = int(every * self._follower_checkpoint_factor)
            if (
                self.writer is not None
                and not self.writer.queue_empty
                and self.points_since_checkpoint < 2 * every
            ):
                return False
        return self.points_since_checkpoint >= every

    async def _after_job(self) -> None:
        if self.broken or not self._checkpoint_due():
            return
        if time.monotonic() < self._checkpoint_retry_at:
            return
        try:
            await asyncio.to_thread(self._checkpoint)
        except Exception as exc:
            CHECKPOINT_FAILURES.inc()
            self.checkpoint_failures += 1
            self.checkpoint_error = f"{type(exc).__name__}: {exc}"
            delay = min(
                self.options.checkpoint_retry_s_max,
                self.options.checkpoint_retry_s_min * 2 ** (self.checkpoint_failures - 1),
            )
            self._checkpoint_retry_at = time.monotonic() + delay
            self.log.error(
                "checkpoint failed; writes go on from the log, retrying",
                extra={
                    "error": self.checkpoint_error,
                    "failures": self.checkpoint_failures,
                    "retry_s": delay,
                },
            )
            return
        if self.checkpoint_failures:
            self.log.info("checkpoint succeeded again", extra={"failures": self.checkpoint_failures})
        self.checkpoint_failures, self.checkpoint_error = 0, ""

    def _checkpoint(self) -> None:
        count = len(self.state.label_of)
        seconds = self.checkpoints.save(self.state, self.store, self.options.log_retention_entries)
        self.points_since_checkpoint = 0
        self.last_checkpoint_s = seconds
        CHECKPOINT_SECONDS.observe(seconds)
        self.log.info(
            "checkpoint", extra={"lsn": self.checkpoints.lsn, "seconds": round(seconds, 3), "count": count}
        )

    # ---------------------------------------------------------------- snapshots

    def read_log(
        self, from_lsn: int, count: int, bytes_max: int | None = None, upto: int | None = None
    ) -> list[bytes] | None:
        return self.store.read_log(from_lsn, count, bytes_max, upto)

    def entry_epoch(self, lsn: int) -> int:
        return self.store.entry_epoch(lsn)

    def snapshot_chunks(self):
        return snapshot.snapshot_chunks(self.store)

    def begin_snapshot(self, epoch: int, lsn: int, lsn_epoch: int, next_label: int) -> snapshot.Staging:
        """Start receiving a snapshot: a staging database, outside the writer. A newer stream
        supersedes an older one still running."""
        fenced = self.roles.fenced(epoch)
        if fenced is not None:
            raise fenced
        if self._staging is not None:
            self._staging.abort()
        self._staging = snapshot.Staging(self.path, epoch, lsn, lsn_epoch, next_label)
        return self._staging

    async def install_snapshot(self, staging: snapshot.Staging) -> node_pb2.ReplicateResponse:
        """Install a completely received snapshot, as a writer job."""

        async def job():
            if not staging.claim():
                raise Unavailable("the snapshot stream was aborted before it could be installed")
            fenced = self.roles.fenced(staging.epoch)
            if fenced is not None:
                staging.failed()
                raise fenced
            epoch = max(staging.epoch, self.roles.epoch)
            try:
                await asyncio.to_thread(
                    snapshot.install, staging, self.state, self.store, self.checkpoints, epoch
                )
            except BaseException as exc:
                swapped = staging.state == "swapped"
                staging.failed()
                if swapped:
                    self.log.exception("snapshot install failed after the swap; out of service until restart")
                    self.writer.stop_for_good(f"snapshot install failed after the swap: {exc!r}")
                raise
            if self.roles.epoch > epoch:  # a newer epoch accepted during the swap: keep it durable
                self.store.put_epoch(self.roles.epoch)
            self.roles.accepted_durably(epoch)
            self.points_since_checkpoint = self.options.checkpoint_every_points if staging.rows else 0
            self.log.info(
                "snapshot installed",
                extra={"lsn": staging.lsn, "rows": staging.rows, "epoch": self.roles.epoch},
            )
            return node_pb2.ReplicateResponse(
                status=node_pb2.REPLICATE_OK,
                log_end=self.store.log_end,
                last_epoch=self.store.last_epoch,
                incarnation=self.incarnation,
            )

        try:
            return await self._writer().run("install", job)
        finally:
            if self._staging is staging:
                self._staging = None

    # ---------------------------------------------------------------- reads

    async def wait_applied(self, lsn: int, timeout_s: float) -> None:
        """For a session read: return once `lsn` is applied here, or refuse after timeout_s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.state.applied_lsn < lsn:
            if loop.time() >= deadline:
                raise Unavailable(
                    f"this replica of shard {self.spec.name} has applied LSN {self.state.applied_lsn}; "
                    f"the session needs {lsn}",
                    "session",
                )
            await asyncio.sleep(0.002)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        ef: int,
        flt: filters.Filter | None,
        with_payload: bool,
    ) -> list[search.SearchHits]:
        """Top-k per query, best first. Blocking: call from a worker thread."""
        if self.broken:
            raise Unavailable(f"shard {self.spec.name} is out of service: {self.broken}")
        return search.search(self.state, self.store, queries, k, ef, flt, with_payload)

    def growth_bytes(self, points: int) -> int:
        """Memory that `points` more points may add at once beyond their rows: when the index fills
        up, it and its float32 mirror are doubled (old and new are alive while copied)."""
        end = self.state.next_label + points
        capacity = self.state.hnsw.capacity
        if end <= capacity:
            return 0
        while capacity < end:
            capacity *= 2
        return capacity * (capacity_row_bytes(self.spec.dim, self.spec.m) + self.spec.dim * 4)

    def get(self, ids: list[str], with_vectors: bool, with_payload: bool) -> list[tuple[str, bytes, bytes]]:
        return self.store.get(ids, with_vectors, with_payload)
