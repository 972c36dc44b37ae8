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

from tests.integration.conftest import wait_for

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
    latest = orjson.loads((data / "cluster.json").read_bytes())  # children restarted since
    for p in info["processes"] + latest["processes"]:  # never leak a child, whatever happened
        subprocess.run(["kill", "-9", str(p["pid"])], capture_output=True)


def test_up_status_collections_load_and_ctrl_c(up, tmp_path):
    proc, data, info = up
    assert info["router"] and info["etcd"] and info["router"] == info["routers"][0]
    roles = sorted(p["role"] for p in info["processes"])
    assert roles == ["coordinator", "etcd", "node", "node", "node", "router"]
    assert all(p["pid"] > 0 for p in info["processes"])
    # auth is on: the admin key is in the data dir, readable by its owner only
    assert info["auth"] is True and info["admin_key_file"] == str(data.resolve() / "admin.key")
    assert (data / "admin.key").stat().st_mode & 0o777 == 0o600

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


def test_up_operations_a_newcomer_hits(up, tmp_path):
    """Issue 12 items 4, 8, 9, 10 against a real `quartz up`: the coordinator has a health port
    and status shows it as leader; a second `up` on the same data dir is refused at once; a
    killed node is restarted by `up`; drain of an unknown node is refused and writes nothing;
    an empty list says so; the environment variables find the cluster."""
    proc, data, info = up
    d = ["--data-dir", str(data)]
    (coord,) = [p for p in info["processes"] if p["role"] == "coordinator"]
    assert coord["address"]  # it was null: nothing to health-check
    status = json.loads(quartz("status", "--json", *d).stdout)
    assert status["coordinators"] == [{"id": coord["id"], "address": coord["address"], "leader": True}]
    assert all({"replicas", "primaries"} <= set(n) for n in status["nodes"])
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(coord["address"]) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    second = quartz("up", "--data-dir", str(data), "--port", "0", check=False)
    assert second.returncode == 1
    assert "already running" in second.stderr and f"pid {proc.pid}" in second.stderr

    empty = quartz("collections", "list", *d)
    assert empty.stdout == "" and "no collections" in empty.stderr

    np.save(tmp_path / "v.npy", np.ones((5, 4), np.float32))
    missing = quartz("load", str(tmp_path / "v.npy"), "--collection", "nope", "--no-create", *d, check=False)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("error: collection 'nope' does not exist (and --no-create was given)")

    for bad in ("nosuchnode", "has/slash"):
        out = quartz("drain", bad, *d, check=False)
        assert out.returncode != 0 and "drained" not in out.stdout, out
    import asyncio

    from quartz_cluster.auth.cluster import ClusterCredentials
    from quartz_cluster.meta import schema
    from quartz_cluster.meta.store import EtcdStore

    async def drain_keys():  # etcd with the cluster's credentials, from the data dir's secret
        store = EtcdStore(info["etcd"], ClusterCredentials.load(data).etcd_auth)
        try:
            return (await store.list(schema.DRAINING))[1]
        finally:
            await store.close()

    assert asyncio.run(drain_keys()) == []  # no drain key was left behind

    import os

    # from another directory: the router and etcd from the environment, the API key from
    # QUARTZ_API_KEY; etcd's credentials come only from the cluster secret in a data dir
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QUARTZ_")},
        "QUARTZ_ROUTER": info["router"],
        "QUARTZ_ETCD": info["etcd"][0],
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def by_env(*args, **extra):
        return subprocess.run(
            [sys.executable, "-m", "quartz_cluster", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=elsewhere,
            env={**env, **extra},
        )

    key = (data / "admin.key").read_text().strip()
    listed = by_env("collections", "list", QUARTZ_API_KEY=key)
    assert listed.returncode == 0 and "no collections" in listed.stderr, listed.stderr
    no_key = by_env("collections", "list")
    assert no_key.returncode == 1 and no_key.stderr.startswith("error: UNAUTHENTICATED"), no_key.stderr
    status = by_env("status", "--json", QUARTZ_DATA_DIR=str(data))
    assert status.returncode == 0 and json.loads(status.stdout)["coordinators"], status.stderr
    refused = by_env("status", "--json")  # no cluster secret here: etcd refuses
    assert (
        refused.returncode == 1 and refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
    )

    (n1,) = [p for p in info["processes"] if p["id"] == "n1"]
    os.kill(n1["pid"], signal.SIGKILL)

    def restarted():
        now = orjson.loads((data / "cluster.json").read_bytes())
        (p,) = [p for p in now["processes"] if p["id"] == "n1"]
        return p["pid"] != n1["pid"] and p

    again = wait_for(restarted, "quartz up to restart the killed node")
    wait_for(
        lambda: (
            {"n1": True}.items()
            <= {
                n["id"]: n["alive"] for n in json.loads(quartz("status", "--json", *d).stdout)["nodes"]
            }.items()
        ),
        "n1 alive again",
    )
    assert subprocess.run(["kill", "-0", str(again["pid"])]).returncode == 0


def test_nothing_listening_fails_at_once_naming_the_address(tmp_path):
    """A router address where nothing listens: the SDKs and the CLI fail at once (they waited
    out the whole deadline: "Deadline Exceeded", or 30-60 s of silence in the CLI)."""
    import asyncio

    from quartz_cluster import QuartzClient
    from quartz_cluster.client.aio import AsyncQuartzClient
    from quartz_cluster.errors import Unavailable
    from quartz_cluster.procs import free_port

    address = f"127.0.0.1:{free_port()}"
    with QuartzClient(address, timeout=60) as c, pytest.raises(Unavailable) as err:
        c.list_collections()
    assert f"cannot reach the QuartzDB router at {address}" in str(err.value)

    async def aio():
        async with AsyncQuartzClient(address, timeout=60) as c:
            await c.count("x")

    with pytest.raises(Unavailable, match=f"cannot reach the QuartzDB router at {address}"):
        asyncio.run(aio())
    np.save(tmp_path / "v.npy", np.ones((3, 2), np.float32))
    for args in (("collections", "list"), ("load", str(tmp_path / "v.npy"), "--collection", "c")):
        out = quartz(*args, "--router", address, check=False)
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert out.stderr.startswith("error: UNAVAILABLE: cannot reach the QuartzDB router at " + address)
