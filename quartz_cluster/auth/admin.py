"""Tenants and API keys in etcd: create, list, delete and revoke (the router's admin RPCs and
`quartz up`'s bootstrap). Only keyed hashes of key secrets are written."""

from __future__ import annotations

import time

from quartz_cluster import validation
from quartz_cluster.auth import access, keys
from quartz_cluster.auth.cluster import ClusterCredentials
from quartz_cluster.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, echo
from quartz_cluster.meta import schema
from quartz_cluster.meta.schema import KeyRecord, TenantRecord
from quartz_cluster.meta.store import EtcdStore

KEY_DESCRIPTION_CHARS_MAX = 256
KEY_COLLECTIONS_MAX = 100
KEY_EXPIRES_IN_S_MAX = 10 * 365 * 86400
KEYS_PER_TENANT_MAX = 1000
WEBHOOK_URL_CHARS_MAX = 2048
WEBHOOK_SECRET_CHARS_MAX = 256
STRIPE_CUSTOMER_CHARS_MAX = 255
RATE_LIMITS_MAX = 8


def rate_limits(texts, field: str = "rate_limits") -> tuple[str, ...]:
    """Rate-limit overrides ("read=100/s:burst=200"), checked and normalised; one per class."""
    from quartz_cluster.billing import plans

    texts = list(texts)
    if len(texts) > RATE_LIMITS_MAX:
        raise InvalidArgument(f"at most {RATE_LIMITS_MAX}", field)
    out: dict[str, str] = {}
    for i, text in enumerate(texts):
        try:
            op_class, rate = plans.parse_rate(text)
        except InvalidArgument as exc:
            raise InvalidArgument(str(exc), f"{field}[{i}]") from None
        if op_class in out:
            raise InvalidArgument(f"class {op_class!r} is given twice", f"{field}[{i}]")
        out[op_class] = f"{op_class}={rate.to_text()}"
    return tuple(out[c] for c in sorted(out))


def tenant_settings(
    plan: str | None = None,
    stripe_customer: str | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> dict:
    """The billing settings of a tenant given (None: unchanged), checked."""
    from quartz_cluster.billing import plans

    out: dict = {}
    if plan is not None:
        out["plan"] = plans.plan(plan).name
    if stripe_customer is not None:
        if len(stripe_customer) > STRIPE_CUSTOMER_CHARS_MAX or not stripe_customer.isprintable():
            raise InvalidArgument(
                f"must be a Stripe customer id (cus_...), at most {STRIPE_CUSTOMER_CHARS_MAX} characters",
                "stripe_customer",
            )
        out["stripe_customer"] = stripe_customer
    if webhook_url is not None:
        if webhook_url and (
            len(webhook_url) > WEBHOOK_URL_CHARS_MAX
            or not webhook_url.startswith(("http://", "https://"))
            or not webhook_url.isprintable()
            or " " in webhook_url
        ):
            raise InvalidArgument(
                f"must be an http(s) URL of at most {WEBHOOK_URL_CHARS_MAX} characters", "webhook_url"
            )
        out["webhook_url"] = webhook_url
    if webhook_secret is not None:
        if len(webhook_secret) > WEBHOOK_SECRET_CHARS_MAX:
            raise InvalidArgument(f"at most {WEBHOOK_SECRET_CHARS_MAX} characters", "webhook_secret")
        out["webhook_secret"] = webhook_secret
    return out


async def create_tenant(
    store: EtcdStore, name: str, now: float | None = None, limits: tuple[str, ...] = (), **settings
) -> TenantRecord:
    validation.name(name, "name")
    rec = TenantRecord(
        name,
        int(time.time() if now is None else now),
        rate_limits=rate_limits(limits),
        **tenant_settings(**settings),
    )
    key = schema.tenant_key(name)
    await store.client()
    t = store.txn
    ok, _ = await store.transaction(compare=[t.create(key) == 0], success=[t.put(key, rec.to_json())])
    if not ok:
        raise AlreadyExists(f"tenant {echo(name)} already exists", "name")
    return rec


async def update_tenant(
    store: EtcdStore, name: str, limits: tuple[str, ...] | None = None, **settings
) -> TenantRecord:
    """Change a tenant's plan, billing settings or rate limits (compare-and-swap)."""
    import dataclasses

    validation.name(name, "name")
    changes = tenant_settings(**settings)
    if limits is not None:
        changes["rate_limits"] = rate_limits(limits)
    key = schema.tenant_key(name)
    kv = await store.get(key)
    if kv is None:
        raise NotFound(f"tenant {echo(name)} does not exist", "name")
    rec = dataclasses.replace(TenantRecord.from_json(kv.value, schema.show_key(key)), **changes)
    t = store.txn
    ok, _ = await store.transaction(
        compare=[t.mod(key) == kv.mod_revision], success=[t.put(key, rec.to_json())]
    )
    if not ok:
        raise FailedPrecondition(f"tenant {echo(name)} changed concurrently; retry", "name")
    return rec


async def delete_tenant(store: EtcdStore, name: str) -> int:
    """Delete a tenant that owns no collection, and revoke its keys; the number revoked."""
    validation.name(name, "name")
    if name == schema.DEFAULT_TENANT:
        raise FailedPrecondition(
            "the default tenant holds the bootstrap admin key and cannot be deleted", "name"
        )
    if await store.get(schema.tenant_key(name)) is None:
        raise NotFound(f"tenant {echo(name)} does not exist", "name")
    _, colls = await store.list(schema.COLLECTIONS + f"{name}/".encode())
    if colls:
        raise FailedPrecondition(
            f"tenant {echo(name)} still owns {len(colls)} collection(s); drop them first", "name"
        )
    _, kvs = await store.list(schema.KEYS)
    revoked = [kv.key for kv in kvs if KeyRecord.from_json(kv.value, schema.show_key(kv.key)).tenant == name]
    t = store.txn
    await store.transaction(
        compare=[], success=[t.delete(schema.tenant_key(name)), *(t.delete(k) for k in revoked)]
    )
    return len(revoked)


async def create_key(
    store: EtcdStore,
    credentials: ClusterCredentials,
    tenant: str,
    role: str,
    collections: list[str] | tuple[str, ...] = (),
    expires_in_s: int = 0,
    description: str = "",
    now: float | None = None,
    limits: tuple[str, ...] = (),
) -> tuple[KeyRecord, str]:
    """A new key for an existing tenant: (its record, the key to hand out once)."""
    access.role(role)
    if len(collections) > KEY_COLLECTIONS_MAX:
        raise InvalidArgument(f"at most {KEY_COLLECTIONS_MAX} collections", "collections")
    for i, c in enumerate(collections):
        validation.name(c, f"collections[{i}]")
    if not 0 <= expires_in_s <= KEY_EXPIRES_IN_S_MAX:
        raise InvalidArgument(f"must be in [0, {KEY_EXPIRES_IN_S_MAX}] seconds", "expires_in_s")
    if len(description) > KEY_DESCRIPTION_CHARS_MAX:
        raise InvalidArgument(f"at most {KEY_DESCRIPTION_CHARS_MAX} characters", "description")
    if await store.get(schema.tenant_key(tenant)) is None:
        raise NotFound(f"tenant {echo(tenant)} does not exist", "tenant")
    _, existing = await store.list(schema.KEYS)
    mine = sum(KeyRecord.from_json(kv.value, schema.show_key(kv.key)).tenant == tenant for kv in existing)
    if mine >= KEYS_PER_TENANT_MAX:
        raise FailedPrecondition(
            f"tenant {echo(tenant)} has {mine} API keys: the limit is KEYS_PER_TENANT_MAX = "
            f"{KEYS_PER_TENANT_MAX}; revoke some first",
            "tenant",
        )
    now = time.time() if now is None else now
    key_id, secret, key = keys.new_key()
    rec = KeyRecord(
        id=key_id,
        tenant=tenant,
        role=role,
        hash=keys.digest(credentials.secret, key_id, secret),
        collections=tuple(sorted(set(collections))),
        created_at=int(now),
        expires_at=int(now) + expires_in_s if expires_in_s else 0,
        description=description,
        rate_limits=rate_limits(limits),
    )
    k = schema.key_record_key(key_id)
    t = store.txn
    ok, _ = await store.transaction(
        compare=[t.create(k) == 0, t.create(schema.tenant_key(tenant)) != 0],
        success=[t.put(k, rec.to_json())],
    )
    if not ok:
        raise FailedPrecondition(f"tenant {echo(tenant)} was deleted concurrently", "tenant")
    return rec, key


async def revoke_key(store: EtcdStore, key_id: str) -> KeyRecord:
    validation.name(key_id, "id")
    kv = await store.get(schema.key_record_key(key_id))
    if kv is None:
        raise NotFound(f"API key {echo(key_id)} does not exist", "id")
    rec = KeyRecord.from_json(kv.value, schema.show_key(kv.key))
    await store.delete(kv.key)
    return rec
