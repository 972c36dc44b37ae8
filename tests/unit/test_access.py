"""The front door's pure parts (DESIGN §11): API key format and keyed hashes, roles and what
they grant, the authenticator over a cluster view, and member tokens for the internal plane."""

from __future__ import annotations

import os
import stat

import pytest

from quartz_cluster.auth import access, keys
from quartz_cluster.auth.access import ADMIN, READ_ONLY, READ_WRITE, TENANT_ADMIN, Action, Principal
from quartz_cluster.auth.authenticator import Authenticator
from quartz_cluster.auth.cluster import (
    MEMBER_METADATA,
    TOKEN_CLOCK_SKEW_S,
    TOKEN_REFRESH_S,
    TOKEN_TTL_S,
    ClusterCredentials,
    MemberIdentity,
    load_optional,
)
from quartz_cluster.coordinator.reconcile import ClusterView
from quartz_cluster.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from quartz_cluster.meta.schema import KeyRecord, TenantRecord

SECRET = bytes(range(32))


# ------------------------------------------------------------------ keys


def test_a_new_key_parses_back_to_its_id_and_secret_and_only_its_hash_matches():
    key_id, secret, key = keys.new_key()
    assert key == f"qz_{key_id}_{secret}"
    assert keys.parse(key) == (key_id, secret)
    stored = keys.digest(SECRET, key_id, secret)
    assert secret not in stored and len(stored) == 64
    assert keys.matches(SECRET, key_id, secret, stored)
    assert not keys.matches(SECRET, key_id, secret[:-1] + ("0" if secret[-1] != "0" else "1"), stored)
    assert not keys.matches(bytes(32), key_id, secret, stored)  # another cluster's secret
    other_id = "0" * 12 if key_id != "0" * 12 else "1" * 12
    assert not keys.matches(SECRET, other_id, secret, stored)  # the hash is bound to the key id


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "qz_",
        "qz_abc_def",
        "Bearer qz_x",
        "qz_" + "a" * 12 + "_" + "b" * 39,
        "qz_" + "A" * 12 + "_" + "b" * 40,
        "xx_" + "a" * 12 + "_" + "b" * 40,
        "qz_" + "a" * 12 + "_" + "b" * 40 + "\n",
        "q" * 10_000,
    ],
)
def test_a_malformed_key_is_unauthenticated_and_not_echoed(bad):
    with pytest.raises(Unauthenticated, match=r"malformed API key") as err:
        keys.parse(bad)
    # the message is fixed: nothing of the value sent (perhaps a secret) comes back
    assert str(err.value) == "malformed API key: expected qz_<key id>_<secret> (12 and 40 hex digits)"


def test_the_key_comes_from_bearer_or_api_key_metadata():
    assert keys.from_metadata([("authorization", "Bearer qz_k")]) == "qz_k"
    assert keys.from_metadata([("authorization", "bearer  qz_k ")]) == "qz_k"
    assert keys.from_metadata([("x", "y"), ("api-key", " qz_k")]) == "qz_k"
    assert keys.from_metadata([]) is None and keys.from_metadata(None) is None
    for bad in ("Basic abc", "Bearer", "Bearer  ", "qz_k"):
        with pytest.raises(Unauthenticated, match=r"Bearer"):
            keys.from_metadata([("authorization", bad)])


# ------------------------------------------------------------------ roles

P = {role: Principal("k1", "t1", role) for role in (ADMIN, TENANT_ADMIN, READ_WRITE, READ_ONLY)}
GRANTED = {
    ADMIN: set(Action),
    TENANT_ADMIN: {Action.READ, Action.WRITE, Action.MANAGE, Action.KEYS},
    READ_WRITE: {Action.READ, Action.WRITE},
    READ_ONLY: {Action.READ},
}


@pytest.mark.parametrize("role", sorted(GRANTED))
@pytest.mark.parametrize("action", list(Action))
def test_each_role_grants_exactly_its_actions(role, action):
    if action in GRANTED[role]:
        access.authorize(P[role], action, "docs")
    else:
        with pytest.raises(PermissionDenied, match=rf"^key k1 \({role}\) may not {action.value}$"):
            access.authorize(P[role], action, "docs")


def test_a_scoped_key_reaches_only_its_collections():
    p = Principal("k2", "t1", READ_WRITE, frozenset({"a", "b"}))
    access.authorize(p, Action.WRITE, "a")
    access.authorize(p, Action.READ)  # no collection named: a listing, filtered by `visible`
    with pytest.raises(PermissionDenied, match=r"limited to collections a, b"):
        access.authorize(p, Action.READ, "c")
    assert access.visible(p, "a") and not access.visible(p, "c")
    assert access.visible(P[READ_ONLY], "anything")


def test_role_names_are_checked():
    assert access.role("read-only") == "read-only"
    with pytest.raises(
        InvalidArgument, match=r"^role: must be one of admin, tenant-admin, read-write, read-only"
    ):
        access.role("root")


def test_key_grants_admin_any_tenant_admin_its_own_tenant_below_admin_within_scope():
    access.authorize_key_grant(P[ADMIN], "other", ADMIN, frozenset())
    access.authorize_key_grant(P[TENANT_ADMIN], "t1", READ_ONLY, frozenset({"x"}))
    access.authorize_key_grant(P[TENANT_ADMIN], "t1", TENANT_ADMIN, frozenset())
    with pytest.raises(PermissionDenied, match=r"^tenant: .* only manage keys of its own tenant"):
        access.authorize_key_grant(P[TENANT_ADMIN], "other", READ_ONLY, frozenset())
    with pytest.raises(PermissionDenied, match=r"^role: .* may not create admin keys"):
        access.authorize_key_grant(P[TENANT_ADMIN], "t1", ADMIN, frozenset())
    for role in (READ_WRITE, READ_ONLY):
        with pytest.raises(PermissionDenied, match=r"may not manage API keys"):
            access.authorize_key_grant(P[role], "t1", READ_ONLY, frozenset())
    scoped = Principal("k3", "t1", TENANT_ADMIN, frozenset({"a"}))
    access.authorize_key_grant(scoped, "t1", READ_ONLY, frozenset({"a"}))
    for wider in (frozenset(), frozenset({"a", "b"})):
        with pytest.raises(PermissionDenied, match=r"^collections: .*within its own scope"):
            access.authorize_key_grant(scoped, "t1", READ_ONLY, wider)


def test_tenant_key_listing_is_for_admins_and_the_tenants_own_admin():
    access.authorize_tenant(P[ADMIN], "any")
    access.authorize_tenant(P[TENANT_ADMIN], "t1")
    with pytest.raises(PermissionDenied):
        access.authorize_tenant(P[TENANT_ADMIN], "t2")
    with pytest.raises(PermissionDenied):
        access.authorize_tenant(P[READ_WRITE], "t1")


# ------------------------------------------------------------------ authenticator


def view_with(*recs: KeyRecord, tenants=("t1",)) -> ClusterView:
    v = ClusterView()
    v.tenants = {t: TenantRecord(t) for t in tenants}
    v.keys = {r.id: r for r in recs}
    return v


def make_key(role=READ_WRITE, tenant="t1", collections=(), expires_at=0) -> tuple[str, KeyRecord]:
    key_id, secret, key = keys.new_key()
    rec = KeyRecord(
        key_id, tenant, role, keys.digest(SECRET, key_id, secret), tuple(collections), 1, expires_at
    )
    return key, rec


def test_the_authenticator_turns_a_stored_key_into_its_principal():
    key, rec = make_key(READ_ONLY, collections=("a",))
    auth = Authenticator(ClusterCredentials(SECRET), lambda: view_with(rec))
    p = auth.authenticate([("authorization", f"Bearer {key}")])
    assert p == Principal(rec.id, "t1", READ_ONLY, frozenset({"a"}))
    assert auth.authenticate([("api-key", key)]) == p


def test_missing_unknown_wrong_secret_revoked_expired_and_orphaned_keys_are_refused():
    key, rec = make_key(expires_at=1000)
    creds = ClusterCredentials(SECRET)
    view = view_with(rec)
    auth = Authenticator(creds, lambda: view)
    assert auth.authenticate([("api-key", key)], now=999.0).key_id == rec.id
    with pytest.raises(Unauthenticated, match=r"has expired"):
        auth.authenticate([("api-key", key)], now=1000.0)
    with pytest.raises(Unauthenticated, match=r"^missing API key"):
        auth.authenticate([], now=0)
    wrong = key[:-1] + ("0" if key[-1] != "0" else "1")
    with pytest.raises(Unauthenticated, match=r"^unknown or revoked API key$"):
        auth.authenticate([("api-key", wrong)], now=0)
    other, _ = make_key()
    with pytest.raises(Unauthenticated, match=r"^unknown or revoked API key$"):
        auth.authenticate([("api-key", other)], now=0)
    view = view_with(rec, tenants=())  # its tenant deleted
    with pytest.raises(Unauthenticated, match=r"^unknown or revoked API key$"):
        auth.authenticate([("api-key", key)], now=0)
    view = view_with()  # revoked: the record is gone
    with pytest.raises(Unauthenticated, match=r"^unknown or revoked API key$"):
        auth.authenticate([("api-key", key)], now=0)


def test_without_credentials_every_caller_is_the_anonymous_admin():
    auth = Authenticator(None, ClusterView)
    assert not auth.enabled
    assert auth.authenticate([]) is access.ANONYMOUS and access.ANONYMOUS.role == ADMIN


# ------------------------------------------------------------------ cluster credentials


def test_the_cluster_secret_is_created_once_private_and_loaded_back(tmp_path):
    a = ClusterCredentials.create(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "cluster.secret").st_mode) == 0o600
    assert ClusterCredentials.create(tmp_path).secret == a.secret == ClusterCredentials.load(tmp_path).secret
    assert len(a.secret) == 32
    assert (
        a.etcd_password
        == ClusterCredentials.load(tmp_path).etcd_password
        != ClusterCredentials(SECRET).etcd_password
    )
    (tmp_path / "cluster.secret").write_text("not a secret")
    with pytest.raises(FailedPrecondition, match=r"is not a cluster secret"):
        ClusterCredentials.load(tmp_path)
    with pytest.raises(FailedPrecondition, match=r"does not exist"):
        ClusterCredentials.load(tmp_path / "none")


def test_a_process_needs_a_cluster_dir_or_an_explicit_no_auth(tmp_path):
    assert load_optional(None, True, "node") is None
    with pytest.raises(FailedPrecondition, match=r"needs --cluster-dir D .* or --no-auth"):
        load_optional(None, False, "node")
    ClusterCredentials.create(tmp_path)
    assert load_optional(str(tmp_path), False, "router").secret == ClusterCredentials.load(tmp_path).secret


def test_member_tokens_verify_only_under_the_same_secret_and_while_current():
    creds = ClusterCredentials(SECRET)
    token = creds.member_token("n1", now=10_000)
    assert ClusterCredentials(SECRET).verify_member(token, now=10_000 + TOKEN_TTL_S - 1) == "n1"
    for now in (10_000 + TOKEN_TTL_S, 10_000 - TOKEN_CLOCK_SKEW_S - 1):
        with pytest.raises(Unauthenticated, match=r"expired member token"):
            ClusterCredentials(SECRET).verify_member(token, now=now)
    with pytest.raises(Unauthenticated, match=r"bad member token"):
        ClusterCredentials(bytes(32)).verify_member(token, now=10_000)
    forged = token.replace("qzm1.n1.", "qzm1.n2.")
    with pytest.raises(Unauthenticated, match=r"bad member token"):
        creds.verify_member(forged, now=10_000)
    for bad in (None, "", "qz_" + "a" * 12 + "_" + "b" * 40, "qzm1.n1.x.y", token + "0"):
        with pytest.raises(Unauthenticated, match=r"admits cluster members only"):
            ClusterCredentials(SECRET).verify_member(bad, now=10_000)


def test_a_cached_token_still_expires():
    creds = ClusterCredentials(SECRET)
    token = creds.member_token("n1", now=0)
    assert creds.verify_member(token, now=1) == "n1"  # now cached
    with pytest.raises(Unauthenticated, match=r"expired"):
        creds.verify_member(token, now=TOKEN_TTL_S)


def test_a_member_identity_renews_its_token(monkeypatch):
    clock = [1_000_000.0]
    monkeypatch.setattr("quartz_cluster.auth.cluster.time.time", lambda: clock[0])
    ident = MemberIdentity(ClusterCredentials(SECRET), "r1")
    [(name, first)] = ident.metadata()
    assert name == MEMBER_METADATA and ident.metadata() == ((name, first),)
    clock[0] += TOKEN_REFRESH_S
    [(_, second)] = ident.metadata()
    assert second != first and ClusterCredentials(SECRET).verify_member(second, now=clock[0]) == "r1"
