"""The front door (issue 13), on a real cluster with auth on: every public operation x every
kind of key, over gRPC (the SDK) and over HTTP (the gateway), answers exactly the code it
should; tenants never see each other; keys are managed the way a user would (admin key ->
tenant, tenant-admin key -> its own keys); revocation reaches every router."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from quartz_cluster.client import QuartzClient
from quartz_cluster.errors import QuartzError

DIM = 8
OPS = ["list", "describe", "count", "get", "search", "upsert", "delete", "create", "drop", "backups"]
READS = {"list", "describe", "count", "get", "search"}
WRITES = {"upsert", "delete"}
MANAGE = {"create", "drop"}
HTTP_STATUS = {"OK": (200, 201), "UNAUTHENTICATED": (401,), "PERMISSION_DENIED": (403,), "NOT_FOUND": (404,)}
REVOCATION_WAIT_S_MAX = 30.0  # a wait bound, not an assertion on speed (the figure is printed)


def expected(key: str, op: str) -> str:
    if key in ("none", "malformed", "wrong_secret", "revoked", "expired"):
        return "UNAUTHENTICATED"
    if op == "backups":  # a cluster admin's operation (as are the other backup calls)
        return "OK" if key == "admin" else "PERMISSION_DENIED"
    if key in ("admin", "tenant_admin"):
        return "OK"
    if key == "read_only":
        return "OK" if op in READS else "PERMISSION_DENIED"
    if key == "read_write":
        return "OK" if op in READS | WRITES else "PERMISSION_DENIED"
    if key == "foreign":  # a tenant-admin of another tenant: `docs` does not exist for it
        return "OK" if op in ("list", "create") else "NOT_FOUND"
    if key == "scoped":  # read-write, limited to the collection `other`
        return "OK" if op == "list" else "PERMISSION_DENIED"
    raise AssertionError(key)


KEYS = ["none", "malformed", "wrong_secret", "revoked", "expired", "read_only", "read_write",
        "tenant_admin", "admin", "foreign", "scoped"]  # fmt: skip


@pytest.fixture(scope="module")
def env():
    """No ambient key: a test that sends none must really send none."""
    saved = {k: os.environ.pop(k, None) for k in ("QUARTZ_API_KEY", "QUARTZ_DATA_DIR")}
    os.environ["QUARTZ_DATA_DIR"] = "/nonexistent-quartz-dir"
    yield
    for k, v in saved.items():
        os.environ.pop(k, None)
        if v is not None:
            os.environ[k] = v


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, env):
    from quartz_cluster.cluster import LocalCluster

    c = LocalCluster(tmp_path_factory.mktemp("auth"), nodes=2, routers=2)
    c.start()
    yield c
    c.kill()


@pytest.fixture(scope="module")
def keys(cluster):
    admin = cluster.client(timeout=30)
    admin.create_collection("docs", dim=DIM, shards=2, replication_factor=1)
    vecs = np.random.default_rng(1).normal(size=(20, DIM)).astype("f4")
    admin.upsert(
        "docs", ids=[f"p{i}" for i in range(20)], vectors=vecs, payloads=[{"i": i} for i in range(20)]
    )
    admin.create_tenant("acme", plan="paid")
    out = {"none": None, "malformed": "qz_not-a-key", "admin": cluster.admin_key}
    key_id = cluster.admin_key.split("_")[1]
    out["wrong_secret"] = f"qz_{key_id}_{'0' * 40}"
    out["read_only"], _ = admin.create_key(role="read-only")
    out["read_write"], _ = admin.create_key(role="read-write")
    out["tenant_admin"], _ = admin.create_key(role="tenant-admin")
    out["foreign"], _ = admin.create_key(tenant="acme", role="tenant-admin")
    out["scoped"], _ = admin.create_key(role="read-write", collections=["other"])
    out["revoked"], info = admin.create_key(role="admin")
    assert admin.revoke_key(info.id)
    out["expired"], info = admin.create_key(role="admin", expires_in_s=1)
    while time.time() < info.expires_at:  # let it expire (a wait, not a timing assertion)
        time.sleep(0.2)
    admin.close()
    return out


# ------------------------------------------------------------------ the operations, both ways


class Grpc:
    def __init__(self, cluster, key):
        self.c = QuartzClient(cluster.router_address, api_key=key, timeout=30)

    def run(self, op: str, name: str) -> None:
        c, v = self.c, np.ones(DIM, dtype="f4")
        {
            "list": lambda: c.list_collections(),
            "describe": lambda: c.describe_collection(name),
            "count": lambda: c.count(name),
            "get": lambda: c.get(name, ["p1"]),
            "search": lambda: c.search(name, v, k=3),
            "upsert": lambda: c.upsert(name, ids=["new"], vectors=v[None, :]),
            "delete": lambda: c.delete(name, ["absent"]),
            "create": lambda: c.create_collection(name, dim=DIM, shards=1, replication_factor=1),
            "drop": lambda: c.drop_collection(name),
            "backups": lambda: c.list_backups(),
        }[op]()

    def code(self, op: str, name: str) -> str:
        try:
            self.run(op, name)
        except QuartzError as exc:
            return exc.code
        return "OK"

    def names(self) -> list[str]:
        return [i.name for i in self.c.list_collections()]


class Http:
    def __init__(self, cluster, key):
        self.base, self.key = f"http://{cluster.http_address}", key

    def request(self, method: str, path: str, body=None) -> tuple[int, dict]:
        headers = {"content-type": "application/json"}
        if self.key is not None:
            headers["authorization"] = f"Bearer {self.key}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            assert e.headers["content-type"] == "application/problem+json"
            return e.code, json.loads(e.read())

    def run(self, op: str, name: str) -> tuple[int, dict]:
        v = [1.0] * DIM
        return {
            "list": lambda: self.request("GET", "/v1/collections"),
            "describe": lambda: self.request("GET", f"/v1/collections/{name}"),
            "count": lambda: self.request("GET", f"/v1/collections/{name}/count"),
            "get": lambda: self.request("POST", f"/v1/collections/{name}/points/get", {"ids": ["p1"]}),
            "search": lambda: self.request("POST", f"/v1/collections/{name}/search", {"vector": v, "k": 3}),
            "upsert": lambda: self.request(
                "PUT", f"/v1/collections/{name}/points", {"points": [{"id": "new", "vector": v}]}
            ),
            "delete": lambda: self.request(
                "POST", f"/v1/collections/{name}/points/delete", {"ids": ["absent"]}
            ),
            "create": lambda: self.request(
                "POST", "/v1/collections", {"name": name, "dim": DIM, "shards": 1, "replication_factor": 1}
            ),
            "drop": lambda: self.request("DELETE", f"/v1/collections/{name}"),
            "backups": lambda: self.request("GET", "/v1/admin/backups"),
        }[op]()

    def code(self, op: str, name: str) -> str:
        status, body = self.run(op, name)
        if status in (200, 201):
            return "OK"
        assert body["status"] == status and body["detail"] and "Traceback" not in body["detail"]
        return body["code"]

    def names(self) -> list[str]:
        return [c["name"] for c in self.request("GET", "/v1/collections")[1]["collections"]]


TRANSPORTS = {"grpc": Grpc, "http": Http}


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("key", KEYS)
def test_authorization_matrix(cluster, keys, key, transport):
    """Every public operation with this key answers exactly the expected code, and a refused
    operation changes nothing."""
    caller = TRANSPORTS[transport](cluster, keys[key])
    admin = cluster.client(timeout=60)
    got = {}
    for op in OPS:
        name = "docs"
        if op == "create":
            name = f"made_{key}_{transport}"
        elif op == "drop":
            name = f"drop_{key}_{transport}"
            admin.create_collection(name, dim=DIM, shards=1, replication_factor=1)
        before = admin.count("docs")
        got[op] = caller.code(op, name)
        if got[op] != "OK" and op in WRITES:
            assert admin.count("docs") == before, f"a refused {op} changed the collection"
        if op == "create" and got[op] == "OK":
            caller.run("drop", name)  # in the creator's tenant
        if op == "drop" and name in [i.name for i in admin.list_collections()]:
            assert got[op] != "OK"
            admin.drop_collection(name)
    assert got == {op: expected(key, op) for op in OPS}
    if key in ("foreign", "scoped"):
        assert "docs" not in caller.names()  # listings never cross tenants or scopes
    admin.delete("docs", ["new"])


def test_tenants_have_their_own_namespaces(cluster, keys):
    """Two tenants may both have `docs`; each sees, counts and searches only its own."""
    mine, theirs = cluster.client(timeout=60), QuartzClient(cluster.router_address, api_key=keys["foreign"])
    theirs.create_collection("docs", dim=3, shards=1, replication_factor=1)
    try:
        theirs.upsert("docs", ids=["x"], vectors=np.ones((1, 3), "f4"), payloads=[{"t": "acme"}])
        assert theirs.count("docs") == 1 and mine.count("docs") >= 20
        assert theirs.describe_collection("docs").dim == 3 and mine.describe_collection("docs").dim == DIM
        assert [h.id for h in theirs.search("docs", np.ones(3, "f4"), k=5)] == ["x"]
        assert theirs.get("docs", ["p1"]) == [] and [p.id for p in mine.get("docs", ["p1"])] == ["p1"]
        assert [i.name for i in theirs.list_collections()] == ["docs"]
    finally:
        theirs.drop_collection("docs")
    assert mine.count("docs") >= 20  # dropping theirs left ours alone


def test_key_management_follows_the_roles(cluster, keys):
    ta = QuartzClient(cluster.router_address, api_key=keys["tenant_admin"])
    rw = QuartzClient(cluster.router_address, api_key=keys["read_write"])
    key, info = ta.create_key(role="read-only", description="made by a tenant-admin")
    assert info.tenant == "default" and info.role == "read-only" and key.startswith(f"qz_{info.id}_")
    assert info.id in [k.id for k in ta.list_keys()]
    assert all(k.tenant == "default" for k in ta.list_keys())
    for call, code in [
        (lambda: ta.create_key(role="admin"), "PERMISSION_DENIED"),
        (lambda: ta.create_key(tenant="acme", role="read-only"), "PERMISSION_DENIED"),
        (lambda: ta.list_keys("acme"), "PERMISSION_DENIED"),
        (lambda: ta.create_tenant("evil"), "PERMISSION_DENIED"),
        (lambda: rw.create_key(role="read-only"), "PERMISSION_DENIED"),
        (lambda: rw.list_keys(), "PERMISSION_DENIED"),
        (lambda: ta.create_key(role="superuser"), "INVALID_ARGUMENT"),
        (lambda: ta.revoke_key("nosuchkey000"), "NOT_FOUND"),
    ]:
        with pytest.raises(QuartzError) as err:
            call()
        assert err.value.code == code
    assert ta.whoami().role == "tenant-admin"
    assert ta.revoke_key(info.id)
    assert info.id not in [k.id for k in ta.list_keys()]


def test_a_revoked_key_is_refused_by_every_router(cluster, keys):
    admin = cluster.client(timeout=30)
    key, info = admin.create_key(role="read-only")
    other = QuartzClient(cluster.routers[1].address, api_key=key)
    while True:  # the new key reaches the second router by the watch too
        try:
            other.list_collections()
            break
        except QuartzError as exc:
            assert exc.code == "UNAUTHENTICATED"
            time.sleep(0.05)
    t0 = time.monotonic()
    admin.revoke_key(info.id)  # through the first router
    while time.monotonic() - t0 < REVOCATION_WAIT_S_MAX:
        try:
            other.list_collections()
        except QuartzError as exc:
            assert exc.code == "UNAUTHENTICATED"
            break
        time.sleep(0.01)
    else:
        pytest.fail(f"the second router still accepts a key revoked {REVOCATION_WAIT_S_MAX} s ago")
    print(f"revocation reached the second router in {time.monotonic() - t0:.3f} s")


def test_the_cli_manages_tenants_and_keys_with_the_data_dirs_admin_key(cluster, keys):
    def quartz(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "quartz_cluster", *args, "--data-dir", str(cluster.data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    made = quartz("tenants", "create", "cli-tenant")
    assert made.returncode == 0, made.stderr
    assert "cli-tenant" in quartz("tenants", "list").stdout
    out = quartz("keys", "create", "--tenant", "cli-tenant", "--role", "tenant-admin", "--expires-in", "30d")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert QuartzClient(cluster.router_address, api_key=key).whoami().tenant == "cli-tenant"
    listed = quartz("keys", "list", "--tenant", "cli-tenant", "--json")
    [info] = json.loads(listed.stdout)
    assert info["role"] == "tenant-admin" and info["expires_at"] > time.time() + 29 * 86400
    assert quartz("keys", "revoke", info["id"]).returncode == 0
    refused = quartz("collections", "list", "--api-key", key)
    assert refused.returncode == 1 and refused.stderr.startswith("error: UNAUTHENTICATED")
    assert quartz("tenants", "delete", "cli-tenant").returncode == 0
    assert "cli-tenant" not in quartz("tenants", "list").stdout


def test_the_last_admin_key_cannot_be_revoked(cluster, keys):
    """Revoking the last live admin key would lock every administrator out for good."""
    admin = cluster.client(timeout=30)
    me = admin.whoami()
    live = [
        k.id
        for k in admin.list_keys()
        if k.role == "admin" and (not k.expires_at or k.expires_at > time.time())
    ]
    assert live == [me.id]  # the expired admin key of the matrix does not count
    with pytest.raises(QuartzError) as err:
        admin.revoke_key(me.id)
    assert err.value.code == "FAILED_PRECONDITION" and "last admin key" in str(err.value)
    assert admin.whoami().id == me.id
    _, other = admin.create_key(role="admin")
    assert admin.revoke_key(other.id)  # not the last one: revoked
