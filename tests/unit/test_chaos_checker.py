from quartz_cluster.chaos.checker import availability, check, recovery_times


def test_verdict_in_jepsen_terms():
    v = check(
        attempted={"a", "b", "c", "d"},
        acked={"a", "b"},
        present={"a", "c"},
        read_ids={"a", "z"},
        result_lists=[["a", "c"], ["c", "c"]],
        stored_count=2,
        replica_states={0: [1, 1], 1: [1, 2]},
    )
    assert v.lost == ["b"] and v.recovered == ["c"] and v.unexpected == ["z"] and v.duplicated == ["c"]
    assert v.divergent_shards == [1] and not v.passed


def test_clean_run_passes_and_counts_catch_duplicates():
    ok = check({"a", "b"}, {"a"}, {"a", "b"}, {"a", "b"}, [["a", "b"]], 2, {0: ["x", "x"]})
    assert ok.passed and ok.recovered == ["b"] and ok.lost == [] and ok.divergent_shards == []
    dup = check({"a"}, {"a"}, {"a"}, set(), [], 2, {})
    assert dup.duplicated and not dup.passed


def test_a_strong_read_missing_an_acknowledged_write_fails_the_run():
    stale = check({"a", "b"}, {"a", "b"}, {"a", "b"}, {"a"}, [], 2, {}, strong_read_misses=["b", "b"])
    assert stale.stale == ["b"] and not stale.passed and stale.lost == []


def test_availability_and_recovery():
    events = [
        {"type": "write", "t0": 0.1, "t1": 0.2, "ok": True},
        {"type": "fault", "t": 0.5, "fault": "kill-primary", "target": "n1"},
        {"type": "write", "t0": 0.6, "t1": 1.4, "ok": False},
        {"type": "read", "kind": "search", "t0": 0.7, "t1": 1.1, "ok": True},
        {"type": "read", "kind": "get-strong", "t0": 0.7, "t1": 1.2, "ok": False},
        {"type": "heal", "t": 1.3, "fault": "kill-primary", "target": "n1"},
        {"type": "read", "kind": "get-strong", "t0": 1.3, "t1": 1.4, "ok": True},
        {"type": "write", "t0": 1.5, "t1": 2.5, "ok": True},
    ]
    buckets = availability(events)
    assert [b["write_ok"] for b in buckets] == [1, 0, 1] and buckets[1]["write_err"] == 1
    assert buckets[1]["read_ok"] == 2 and buckets[1]["read_err"] == 1
    assert recovery_times(events) == [
        {
            "fault": "kill-primary",
            "target": "n1",
            "t": 0.5,
            "healed_after_s": 0.8,
            "recovered_after_s": 2.0,
            "write_outage_s": 2.0,
            "reads_during": {"eventual_ok": 1, "eventual_failed": 0, "strong_ok": 0, "strong_failed": 1},
        }
    ]


def test_a_divergent_shard_fails_the_run_even_with_nothing_lost():
    # every write acknowledged and present, no duplicate, no stale read: only the replicas of
    # shard 2 disagree (one holds a tail the other does not)
    v = check({"a", "b"}, {"a", "b"}, {"a", "b"}, {"a", "b"}, [["a", "b"]], 2, {0: [1, 1], 2: [5, 6, 5]})
    assert v.divergent_shards == [2]
    assert v.lost == v.unexpected == v.duplicated == v.stale == []
    assert not v.passed
    same = check({"a"}, {"a"}, {"a"}, {"a"}, [], 1, {0: [("s", 1)] * 3, 1: []})
    assert same.divergent_shards == [] and same.passed
