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


def _epochs(table: dict[int, int]):
    """epoch_of over exactly the LSNs in table: asking for any other is a bug in decide."""

    def epoch_of(lsn: int) -> int:
        if lsn not in table:
            raise AssertionError(f"epoch_of({lsn}) outside the held log")
        return table[lsn]

    return epoch_of


def test_a_request_exactly_one_epoch_stale_is_fenced_and_the_same_epoch_is_not():
    held = _epochs({1: 3, 2: 3})
    assert decide(4, 0, 2, held, 3, 2, 3, [3]) == Fenced(4)
    assert decide(4, 0, 2, held, 3, 2, 3, []) == Fenced(4)  # a probe too
    assert decide(3, 0, 2, held, 3, 2, 3, [3]) == Append(0)
    assert decide(3, 0, 2, held, 4, 2, 3, [4]) == Append(0)  # a newer epoch is accepted


def test_entry_epochs_may_be_equal_to_each_other_and_to_the_request_but_not_above():
    held = _epochs({1: 1})
    assert decide(1, 0, 1, held, 2, 1, 1, [1, 1, 2, 2]) == Append(0)
    for bad in ([3], [1, 3], [2, 1], [2, 2, 1]):
        with pytest.raises(InvalidArgument) as err:
            decide(1, 0, 1, held, 2, 1, 1, bad)
        assert err.value.field == "entries"
        assert (
            str(err.value) == "entries: entry epochs must be non-decreasing and not above the request's epoch"
        )


def test_behind_starts_one_past_the_log_end():
    held = _epochs({1: 1, 2: 1})
    assert decide(1, 0, 2, held, 1, 3, 1, [1]) == Behind(2)
    assert decide(1, 0, 2, held, 1, 2, 1, [1]) == Append(0)  # prev_lsn == log_end: appends
    assert decide(1, 0, 0, _epochs({}), 1, 1, 1, []) == Behind(0)  # an empty log, probed


def test_an_empty_log_appends_from_lsn_one_without_reading_epoch_zero():
    assert decide(0, 0, 0, _epochs({}), 1, 0, 0, [1, 1]) == Append(0)
    assert decide(0, 0, 0, _epochs({}), 1, 0, 0, []) == Append(0)


def test_prev_entry_must_match_in_epoch():
    held = _epochs({1: 1, 2: 2})
    assert decide(2, 0, 2, held, 2, 2, 2, [2]) == Append(0)
    assert decide(2, 0, 2, held, 2, 2, 1, [2]) == Diverged()
    assert decide(2, 0, 2, held, 2, 1, 1, [2]) == Append(1)  # LSN 2 already held, same epoch
    assert decide(2, 0, 2, held, 3, 1, 1, [3]) == Diverged()  # LSN 2 held from another epoch


def test_held_entries_are_skipped_until_the_log_end_then_appended():
    held = _epochs({1: 1, 2: 1, 3: 2})
    assert decide(2, 0, 3, held, 2, 0, 0, [1, 1, 2, 2, 2]) == Append(3)
    assert decide(2, 0, 3, held, 2, 1, 1, [1, 2, 2]) == Append(2)
    assert decide(2, 0, 3, held, 2, 0, 0, [1, 2]) == Diverged()  # LSN 2 differs
    assert decide(2, 0, 3, held, 2, 0, 0, [1, 1, 1]) == Diverged()  # LSN 3 differs


def test_a_probe_finding_a_longer_log_means_diverged_an_equal_one_is_in_step():
    held = _epochs({1: 1, 2: 1, 3: 1})
    assert decide(1, 0, 3, held, 1, 3, 1, []) == Append(0)
    assert decide(1, 0, 3, held, 1, 2, 1, []) == Diverged()
    # with entries the same position is not a probe: LSN 3 is a duplicate
    assert decide(1, 0, 3, held, 1, 2, 1, [1]) == Append(1)


def test_entries_behind_a_snapshot_are_checked_against_its_last_entry():
    # the replica was installed from a snapshot ending at LSN 10 (epoch 3) and holds 11 (epoch 3)
    held = _epochs({10: 3, 11: 3})
    # a resend from LSN 9: 9 and 10 are covered by the snapshot, 11 is held, 12 is new
    assert decide(3, 10, 11, held, 3, 8, 3, [3, 3, 3, 3]) == Append(3)
    # exactly up to the snapshot: everything already held
    assert decide(3, 10, 11, held, 3, 8, 3, [3, 3]) == Append(2)
    # the snapshot's last entry has another epoch at the primary: diverged
    assert decide(3, 10, 11, held, 4, 8, 3, [3, 4]) == Diverged()
    # entries that stop short of the snapshot cannot be matched: diverged
    assert decide(3, 10, 11, held, 3, 8, 3, [3]) == Diverged()
    assert decide(3, 10, 11, held, 3, 9, 3, []) == Diverged()
    # prev_lsn at the snapshot itself: checked like any held entry
    assert decide(3, 10, 11, held, 3, 10, 3, [3, 3]) == Append(1)
    assert decide(3, 10, 11, held, 3, 10, 2, [3]) == Diverged()
    # after the snapshot's entry, a held entry from another epoch: diverged
    assert decide(3, 10, 11, held, 4, 9, 3, [3, 4]) == Diverged()
