"""logs.py: one JSON object per record, whatever `extra` holds."""

import logging

import orjson

from quartz_cluster.logs import JsonFormatter


def record(**extra) -> logging.LogRecord:
    rec = logging.LogRecord("quartz.coordinator", logging.INFO, __file__, 1, "PlaceShards", None, None)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_a_dict_keyed_by_shard_numbers_is_logged_not_lost():
    # the coordinator's PlaceShards record: {shard: replicas} raised "Dict key must be str"
    line = JsonFormatter({"coordinator": "c-1"}).format(
        record(collection_id="abc", placement={0: ["n1", "n2"], 1: ["n2", "n3"]})
    )
    entry = orjson.loads(line)
    assert entry["placement"] == {"0": ["n1", "n2"], "1": ["n2", "n3"]}
    assert entry["msg"] == "PlaceShards" and entry["coordinator"] == "c-1" and entry["level"] == "info"


def test_values_json_cannot_hold_are_logged_as_text():
    entry = orjson.loads(JsonFormatter().format(record(where=frozenset([3]), err=ValueError("x"))))
    assert entry["where"] == "frozenset({3})" and entry["err"] == "x"
