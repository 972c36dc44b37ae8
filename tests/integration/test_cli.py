"""The `quartz` CLI as a user runs it: up, status, collections, load, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import orjson
import pytest

pytestmark = pytest.mark.integration


def quartz(*args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quartz_cluster", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


@pytest.fixture
def up(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quartz_cluster",
            "up",
            "--data-dir",
            str(data),
            "--nodes",
            "3",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 90
    while not (data / "cluster.json").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "quartz up did not come up"
        time.sleep(0.1)
    info = orjson.loads((data / "cluster.json").read_bytes())
    yield proc, data, info
    if proc.poll() is None:
        proc.kill()
    for p in info["processes"]:  # never leak a child, whatever happened
        subprocess.run(["kill", "-9", str(p["pid"])], capture_output=True)


def test_up_status_collections_load_and_ctrl_c(up, tmp_path):
    proc, data, info = up
    assert info["router"] and info["etcd"] and info["router"] == info["routers"][0]
    roles = sorted(p["role"] for p in info["processes"])
    assert roles == ["coordinator", "etcd", "node", "node", "node", "router"]
    assert all(p["pid"] > 0 for p in info["processes"])

    d = ["--data-dir", str(data)]
    out = quartz("collections", "create", "docs", "--dim", "8", "--shards", "3", "--rf", "2", *d)
    assert "created docs" in out.stdout and "ready=True" in out.stdout
    status = json.loads(quartz("status", "--json", *d).stdout)
    assert {n["id"] for n in status["nodes"]} == {"n1", "n2", "n3"} and all(
        n["alive"] for n in status["nodes"]
    )
    assert sorted(s["shard"] for s in status["shards"]) == [0, 1, 2]
    for s in status["shards"]:
        assert set(s) >= {"collection", "shard", "epoch", "primary", "replicas", "in_sync"}
        assert s["collection"] == "docs" and s["primary"] in s["replicas"] and len(s["replicas"]) == 2
    table = quartz("status", *d).stdout
    assert "n1" in table and "docs" in table

    vecs = np.random.default_rng(0).normal(size=(2500, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", vecs)
    (tmp_path / "p.jsonl").write_bytes(
        b"".join(orjson.dumps({"id": f"row{i}", "n": i}) + b"\n" for i in range(2500))
    )
    out = quartz(
        "load", str(tmp_path / "v.npy"), "--collection", "docs", "--payloads", str(tmp_path / "p.jsonl"), *d
    )
    assert "loaded 2,500 points" in out.stderr
    described = json.loads(quartz("collections", "describe", "docs", *d).stdout)
    assert described["count"] == 2500 and described["dim"] == 8
    assert "docs" in quartz("collections", "list", *d).stdout

    bad = quartz("collections", "create", "docs", "--dim", "8", *d, check=False)
    assert bad.returncode == 1 and "ALREADY_EXISTS" in bad.stderr
    assert quartz("collections", "drop", "docs", *d).returncode == 0
    assert "docs" not in quartz("collections", "list", *d).stdout

    proc.send_signal(signal.SIGINT)  # Ctrl-C stops every child
    assert proc.wait(60) == 0
    for p in info["processes"]:
        gone = subprocess.run(["kill", "-0", str(p["pid"])], capture_output=True).returncode != 0
        assert gone, f"{p['role']} {p['id']} still running"
