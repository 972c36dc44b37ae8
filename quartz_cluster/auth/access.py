"""Roles and what they may do (DESIGN §11). Pure: the router authenticates a key into a
`Principal`, then asks `authorize` before any work. Every check includes the tenant: a
principal only ever names collections of its own tenant (router/service.py looks them up
under it), so another tenant's collection answers NOT_FOUND, exactly like an absent one."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from quartz_cluster.errors import InvalidArgument, PermissionDenied, echo


class Action(enum.Enum):
    READ = "read points and collection metadata"  # search, get, count, list, describe
    WRITE = "write points"  # upsert, delete
    MANAGE = "create or drop collections"
    KEYS = "manage API keys"  # of its own tenant
    CLUSTER = "administer the cluster"  # tenants, every tenant's keys, nodes, backups


ADMIN, TENANT_ADMIN, READ_WRITE, READ_ONLY = "admin", "tenant-admin", "read-write", "read-only"
ROLES = (ADMIN, TENANT_ADMIN, READ_WRITE, READ_ONLY)
GRANTS: dict[str, frozenset[Action]] = {
    ADMIN: frozenset(Action),
    TENANT_ADMIN: frozenset({Action.READ, Action.WRITE, Action.MANAGE, Action.KEYS}),
    READ_WRITE: frozenset({Action.READ, Action.WRITE}),
    READ_ONLY: frozenset({Action.READ}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's id, tenant, role and collection scope (empty: every collection)."""

    key_id: str
    tenant: str
    role: str
    collections: frozenset[str] = frozenset()

    def describe(self) -> str:
        return f"key {self.key_id} ({self.role})"


# The principal of a router started with --no-auth: an admin of the default tenant.
ANONYMOUS = Principal("anonymous", "default", ADMIN)


def role(value: str, field: str = "role") -> str:
    if value not in ROLES:
        raise InvalidArgument(f"must be one of {', '.join(ROLES)}, got {echo(value)}", field)
    return value


def authorize(principal: Principal, action: Action, collection: str | None = None) -> None:
    """PermissionDenied unless the principal's role grants `action` (on `collection`, when the
    key is limited to named collections)."""
    if action not in GRANTS[principal.role]:
        raise PermissionDenied(f"{principal.describe()} may not {action.value}")
    if collection is not None and principal.collections and collection not in principal.collections:
        raise PermissionDenied(
            f"{principal.describe()} is limited to collections {', '.join(sorted(principal.collections))}"
        )


def visible(principal: Principal, name: str) -> bool:
    """Whether a collection of the principal's tenant shows in its listings."""
    return not principal.collections or name in principal.collections


def authorize_key_grant(
    principal: Principal, tenant: str, granted_role: str, collections: frozenset[str]
) -> None:
    """May `principal` create a key for `tenant` with this role and scope? An admin may create
    any; a tenant-admin only for its own tenant, never an admin key, and never wider than its
    own collection scope."""
    if principal.role == ADMIN:
        return
    authorize(principal, Action.KEYS)
    if tenant != principal.tenant:
        raise PermissionDenied(f"{principal.describe()} may only manage keys of its own tenant", "tenant")
    if granted_role == ADMIN:
        raise PermissionDenied(f"{principal.describe()} may not create admin keys", "role")
    if principal.collections and not (collections and collections <= principal.collections):
        raise PermissionDenied(
            f"{principal.describe()} may only grant collections within its own scope "
            f"({', '.join(sorted(principal.collections))})",
            "collections",
        )


def authorize_tenant(principal: Principal, tenant: str) -> None:
    """May `principal` see or manage keys of `tenant`?"""
    if principal.role == ADMIN:
        return
    authorize(principal, Action.KEYS)
    if tenant != principal.tenant:
        raise PermissionDenied(f"{principal.describe()} may only manage keys of its own tenant", "tenant")
