"""What a follower does with a Replicate request. Pure: the caller supplies its log position
and a way to read the epoch of any entry it holds.

Log matching (Raft): two logs that hold an entry with the same LSN and epoch are identical up
to it, because one primary per epoch assigns each LSN once. So a follower appends after
(prev_lsn, prev_epoch) only if it holds that exact entry; entries it already holds with the
same epoch are duplicates to skip; anything else means its log diverged (it kept entries of a
fenced epoch) and it must be resynchronised from a snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from quartz_cluster.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Fenced:
    """The request comes from an older epoch than one this replica has accepted."""

    epoch: int


@dataclass(frozen=True, slots=True)
class Behind:
    """The follower's log ends before prev_lsn: resend from log_end + 1."""

    log_end: int


@dataclass(frozen=True, slots=True)
class Diverged:
    """The follower holds entries the primary does not: resynchronise by snapshot."""


@dataclass(frozen=True, slots=True)
class Append:
    """Append entries[skip:]; the first `skip` are already held."""

    skip: int


Decision = Fenced | Behind | Diverged | Append


def decide(
    accepted_epoch: int,
    log_start: int,
    log_end: int,
    epoch_of: Callable[[int], int],
    request_epoch: int,
    prev_lsn: int,
    prev_epoch: int,
    entry_epochs: Sequence[int],
) -> Decision:
    """accepted_epoch: the highest epoch this replica has accepted; [log_start, log_end]: the LSNs
    it can vouch for (log_start is where a snapshot put it; epoch_of(log_start) must work);
    epoch_of(lsn): epoch of a held entry. entry_epochs: epochs of the incoming entries, which are
    LSNs prev_lsn + 1, prev_lsn + 2, ..."""
    if any(b < a for a, b in pairwise(entry_epochs)) or any(e > request_epoch for e in entry_epochs):
        raise InvalidArgument(
            "entry epochs must be non-decreasing and not above the request's epoch", "entries"
        )
    if request_epoch < accepted_epoch:
        return Fenced(accepted_epoch)
    probe = not entry_epochs
    if prev_lsn > log_end:
        return Behind(log_end)
    if prev_lsn < log_start:
        # The primary is sending entries this replica compacted into a snapshot. They can only
        # be duplicates if the snapshot's last entry matches the primary's at that LSN.
        covered = log_start - prev_lsn
        if covered > len(entry_epochs) or entry_epochs[covered - 1] != epoch_of(log_start):
            return Diverged()
        prev_lsn, prev_epoch, entry_epochs = log_start, epoch_of(log_start), entry_epochs[covered:]
        skip_base = covered
    else:
        skip_base = 0
    if prev_lsn > 0 and epoch_of(prev_lsn) != prev_epoch:
        return Diverged()
    skip = 0
    for i, epoch in enumerate(entry_epochs):
        lsn = prev_lsn + 1 + i
        if lsn > log_end:
            break
        if epoch_of(lsn) != epoch:
            return Diverged()  # a different entry at this LSN: this replica kept a fenced tail
        skip += 1
    if probe and log_end > prev_lsn:
        # A probe (no entries) from a primary whose log ends before ours: our tail is fenced.
        return Diverged()
    return Append(skip_base + skip)
