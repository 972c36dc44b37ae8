"""A replica's role and epoch: the one place they change (DESIGN §5).

The shard map (node/membership.py) makes a replica primary or follower; a call from a newer
primary (follower.py) may demote it before the map says so; nothing else writes these fields.
Every decision that depends on them (may this replica take a write, serve a strong read, is an
epoch fenced) is made here too. An epoch is made durable before it is accepted in memory.
"""

from __future__ import annotations

from collections.abc import Callable

from quartz_cluster.errors import FailedPrecondition, Unavailable

PRIMARY, FOLLOWER, STANDALONE = "primary", "follower", "standalone"


class ReplicaRole:
    def __init__(self, name: str, epoch: int, persist_epoch: Callable[[int], None]) -> None:
        self.name = name
        self.role = STANDALONE  # no cluster (a node on its own) until the map or a primary says
        self.epoch = epoch  # the highest epoch accepted
        self.primary_hint = ""  # the primary this replica knows of (for error messages)
        self.replicator = None  # set on a primary
        self.lease_ok: Callable[[], bool] = lambda: True
        self._persist_epoch = persist_epoch

    # ---------------------------------------------------------------- changes

    def accept_epoch(self, epoch: int) -> None:
        """Durably accept a (higher) epoch: older ones are refused from now on."""
        if epoch > self.epoch:
            self._persist_epoch(epoch)
            self.epoch = epoch

    def accepted_durably(self, epoch: int) -> None:
        """An epoch already written with the data it came with (a follower's append, a snapshot)."""
        self.epoch = max(self.epoch, epoch)

    def become_primary(self, epoch: int, replicator) -> None:
        self.accept_epoch(epoch)
        if self.replicator is not None and self.replicator is not replicator:
            self.replicator.stop()
        self.role, self.primary_hint, self.replicator = PRIMARY, "", replicator

    def become_follower(self, epoch: int, primary: str) -> None:
        self.accept_epoch(epoch)
        self.role, self.primary_hint = FOLLOWER, primary
        self._stop_replicator()

    def heard_from_primary(self, epoch: int) -> None:
        """A primary's call in `epoch` reached this replica: if that epoch is newer, a primary of
        an older epoch steps down at once (the map will confirm)."""
        if self.role == PRIMARY and epoch > self.epoch:
            self.role = FOLLOWER
            self._stop_replicator()

    def following(self, primary: str) -> None:
        """This replica took a primary's entries: it follows that primary."""
        if self.role == STANDALONE:
            self.role = FOLLOWER
        self.primary_hint = primary

    def _stop_replicator(self) -> None:
        if self.replicator is not None:
            self.replicator.stop()
            self.replicator = None

    # ---------------------------------------------------------------- decisions

    def fenced(self, epoch: int) -> FailedPrecondition | None:
        if epoch < self.epoch:
            return FailedPrecondition(
                f"epoch {epoch} is fenced: shard {self.name} accepted epoch {self.epoch}", "epoch"
            )
        return None

    def write_refusal(self, epoch: int, min_in_sync: int) -> Exception | None:
        """Why this replica must not take a write now (fencing, DESIGN §5), or None."""
        if self.role == FOLLOWER:
            return FailedPrecondition(
                f"this replica of shard {self.name} is a follower in epoch {self.epoch}; "
                f"the primary is {self.primary_hint or 'unknown'}",
                "epoch",
            )
        if epoch and epoch != self.epoch:
            return FailedPrecondition(
                f"epoch {epoch} is not the current epoch {self.epoch} of shard {self.name}", "epoch"
            )
        if self.role == PRIMARY and not self.lease_ok():
            return Unavailable(f"the primary of shard {self.name} cannot renew its lease", "epoch")
        in_sync = self.in_sync_size()
        if in_sync < min_in_sync:
            return Unavailable(
                f"shard {self.name} has {in_sync} in-sync replicas; the write needs {min_in_sync}",
                "write_consistency",
            )
        return None

    def in_sync_size(self) -> int:
        return self.replicator.in_sync_size() if self.replicator is not None else 1

    def check_strong_read(self, epoch: int) -> None:
        """A strong read sees every acknowledged write only on the current primary, and the
        primary knows it is current only while its lease lives: a paused or cut-off primary
        whose lease lapsed may already have a successor acknowledging writes it never saw."""
        if self.role == STANDALONE:
            return
        if self.role != PRIMARY:
            raise Unavailable(
                f"this replica of shard {self.name} is a follower in epoch {self.epoch}; "
                "strong reads are served by the primary",
                "consistency",
            )
        if epoch and epoch != self.epoch:
            raise Unavailable(
                f"strong read for epoch {epoch}, but shard {self.name} is in epoch {self.epoch}",
                "consistency",
            )
        if not self.lease_ok():
            raise Unavailable(
                f"the primary of shard {self.name} cannot renew its lease; strong reads wait for it",
                "consistency",
            )
