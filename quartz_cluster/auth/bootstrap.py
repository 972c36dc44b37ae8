"""`quartz up`'s first start of a cluster dir: the cluster secret, etcd's root user with auth
enabled, the `default` tenant and the admin key (written to D/admin.key, mode 0600). Each step
is idempotent: a start that was interrupted is completed by the next one. `quartz bootstrap`
does the same for an etcd the operator runs, from a cluster secret it already has."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aetcd.rpc as etcd_rpc
import grpc

from quartz_cluster.auth import access, admin
from quartz_cluster.auth.cluster import (
    ADMIN_KEY_FILE,
    ETCD_USER,
    SECRET_FILE,
    ClusterCredentials,
    write_private,
)
from quartz_cluster.errors import AlreadyExists, FailedPrecondition
from quartz_cluster.meta import schema
from quartz_cluster.meta.store import EtcdStore, parse_endpoints

DEFAULT_TENANT_PLAN = "paid"  # the operator's own tenant: no quotas, generous rate limits
CALL_TIMEOUT_S = 10.0


async def enable_etcd_auth(endpoints: str, password: str) -> bool:
    """Create etcd's root user and turn auth on, unless it is on already; True if it did. Auth is
    cluster-wide: one member of a multi-member etcd is enough."""
    host, port = parse_endpoints(endpoints)[0]
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        auth = etcd_rpc.AuthStub(channel)
        if await _auth_enabled(auth, password):
            return False
        try:
            await auth.UserAdd(
                etcd_rpc.AuthUserAddRequest(name=ETCD_USER, password=password), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            if "already exists" not in (exc.details() or ""):
                raise
        await auth.UserGrantRole(
            etcd_rpc.AuthUserGrantRoleRequest(user=ETCD_USER, role="root"), timeout=CALL_TIMEOUT_S
        )
        try:
            await auth.AuthEnable(etcd_rpc.AuthEnableRequest(), timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            if "already enabled" not in (exc.details() or ""):
                raise
        return True


async def _auth_enabled(auth, password: str) -> bool:
    """Whether etcd's auth is on. etcd 3.5 answers AuthStatus; 3.4 (Debian's) has no such RPC, so
    we authenticate as root: that succeeds only when auth is on."""
    try:
        status = await auth.AuthStatus(etcd_rpc.AuthStatusRequest(), timeout=CALL_TIMEOUT_S)
        return bool(status.enabled)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
    try:
        await auth.Authenticate(
            etcd_rpc.AuthenticateRequest(name=ETCD_USER, password=password), timeout=CALL_TIMEOUT_S
        )
        return True
    except grpc.aio.AioRpcError as exc:
        if "authentication is not enabled" in (exc.details() or ""):
            return False
        raise


async def _secure(
    endpoint: str, creds: ClusterCredentials, key_file: Path | None, description: str
) -> str | None:
    """etcd's auth on, the `default` tenant, and an admin key: returned, and written to
    `key_file` when one is given (None, and no new key, when that file exists already)."""
    await enable_etcd_auth(endpoint, creds.etcd_password)
    store = EtcdStore(endpoint, creds.etcd_auth)
    try:
        try:
            await admin.create_tenant(store, schema.DEFAULT_TENANT, plan=DEFAULT_TENANT_PLAN)
        except AlreadyExists:
            pass
        if key_file is not None and key_file.exists():
            return None
        _, key = await admin.create_key(
            store, creds, schema.DEFAULT_TENANT, access.ADMIN, description=description
        )
        if key_file is not None:
            write_private(key_file, key + "\n")
        return key
    finally:
        await store.close()


def bootstrap(endpoint: str, cluster_dir: str | Path) -> str | None:
    """Secure a cluster dir's etcd and create its admin key; returns the key when it was created
    now (to print once), None when the dir had one."""
    d = Path(cluster_dir)
    return asyncio.run(
        _secure(endpoint, ClusterCredentials.create(d), d / ADMIN_KEY_FILE, "bootstrap admin key (quartz up)")
    )


def bootstrap_etcd(endpoint: str, cluster_dir: str | Path) -> str:
    """`quartz bootstrap`: the same for an etcd the operator runs (Kubernetes, systemd), with the
    cluster secret in `cluster_dir` (read only: a mounted Secret will do). Nothing is written;
    every run returns a new admin key, to be stored by the caller."""
    secret = Path(cluster_dir) / SECRET_FILE
    if not secret.exists():
        raise FailedPrecondition(
            f"{secret} does not exist: put the cluster secret there (new: `openssl rand -hex 32`)",
            "cluster_dir",
        )
    creds = ClusterCredentials.load(cluster_dir)
    key = asyncio.run(_secure(endpoint, creds, None, "bootstrap admin key (quartz bootstrap)"))
    assert key is not None  # no key file: a key is always created
    return key
