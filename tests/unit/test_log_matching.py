"""The follower's append decision, against explicit cases and against a model of two logs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quartz_cluster.errors import InvalidArgument
from quartz_cluster.replication.log_matching import Append, Behind, Diverged, Fenced, decide


def run(
    follower: list[int],
    epoch: int,
    prev_lsn: int,
    prev_epoch: int,
    entries: list[int],
    accepted: int = 0,
    log_start: int = 0,
    start_epoch: int = 0,
):
    """follower[i] is the epoch of LSN log_start + 1 + i."""

    def epoch_of(lsn: int) -> int:
        if lsn == 0:
            return 0
        if lsn == log_start:
            return start_epoch
        return follower[lsn - log_start - 1]

    return decide(
        accepted, log_start, log_start + len(follower), epoch_of, epoch, prev_lsn, prev_epoch, entries
    )


def test_cases():
    assert run([1, 1], 2, 2, 1, [2, 2]) == Append(0)
    assert run([1, 1], 1, 4, 1, [1]) == Behind(2)
    assert run([1, 1, 1], 1, 1, 1, [1, 1]) == Append(2)  # duplicates of what it holds
    assert run([1, 1, 1], 1, 1, 1, [1, 1, 1]) == Append(2)
    assert run([1, 1, 1], 2, 1, 1, [2]) == Diverged()  # LSN 2 was written in epoch 1, primary has epoch 2
    assert run([1, 1, 1], 2, 2, 1, []) == Diverged()  # probe: primary ends at 2, we hold a fenced 3
    assert run([1, 1], 2, 2, 1, []) == Append(0)  # probe: in step
    assert run([1, 1], 1, 2, 1, [1], accepted=3) == Fenced(3)
    assert run([1], 2, 1, 2, [2]) == Diverged()  # prev entry has another epoch
    # after a snapshot at LSN 10 (epoch 3): a resend of 9..11 overlaps the snapshot
    assert run([3], 3, 8, 3, [3, 3, 3], log_start=10, start_epoch=3) == Append(3)
    assert run([], 4, 8, 3, [3, 3, 4], log_start=10, start_epoch=3) == Append(2)
    assert run([], 4, 8, 2, [2, 2, 4], log_start=10, start_epoch=3) == Diverged()
    with pytest.raises(InvalidArgument):
        run([1], 1, 1, 1, [2, 1])


@st.composite
def histories(draw):
    """A primary's log (epochs, non-decreasing) and a follower's log that shares a prefix with it
    and may carry a tail from a fenced epoch (one that never reached the primary's log)."""
    n = draw(st.integers(0, 12))
    steps = draw(st.lists(st.sampled_from([0, 0, 0, 2]), min_size=n, max_size=n))
    primary, epoch = [], 1
    for s in steps:
        epoch += s
        primary.append(epoch)
    k = draw(st.integers(0, n))
    follower = primary[:k]
    # A fenced tail: written by an old primary in an epoch between the shared prefix's last
    # epoch and the epoch of the primary's entry at k + 1 (the steps of 2 leave room for it).
    if k < n and primary[k] - (primary[k - 1] if k else 1) >= 2:
        fenced = primary[k] - 1
        follower = follower + [fenced] * draw(st.integers(0, 4))
    return primary, follower


@settings(max_examples=500, deadline=None)
@given(h=histories(), data=st.data())
def test_following_the_decisions_converges_to_the_primary_log(h, data):
    primary, follower = h
    epoch = primary[-1] if primary else 1
    prev = data.draw(st.integers(0, len(primary)))
    count = data.draw(st.integers(0, len(primary) - prev))
    if count == 0:
        prev = len(primary)  # a request without entries is a probe: "my log ends at prev_lsn"
    entries = primary[prev : prev + count]
    d = run(follower, epoch, prev, primary[prev - 1] if prev else 0, entries)
    if isinstance(d, Append):
        result = follower[: prev + d.skip] + entries[d.skip :]
        # what the follower keeps must be the primary's log up to where it now ends
        assert result[: prev + count] == primary[: prev + count]
        assert d.skip <= count
    elif isinstance(d, Behind):
        assert d.log_end == len(follower) < prev
    else:
        assert isinstance(d, Diverged)
        assert follower[: len(follower)] != primary[: len(follower)]  # it really holds a fenced entry
