"""etcd keys of usage, limits and the audit log. They live outside /quartz/ (which every router
watches): they change with traffic, not with the cluster's shape.

    /qz-usage/calls/<tenant>/<YYYY-MM-DDTHH>     calls by key and operation, vectors written (an hour)
    /qz-usage/storage/<tenant>/<YYYY-MM-DDTHH>   vector-seconds and byte-seconds stored (an hour)
    /qz-usage/stored/<tenant>                    the latest storage sample {vectors, bytes, at}
    /qz-usage/cursor/<journal id>                how far a router journal's usage has been shipped
    /qz-usage/rids/<h>/<YYYYMMDDHHMM>/<journal>-<n>  request ids shipped (h: bucket of the id)
    /qz-usage/queries/<tenant>/<journal id>      the latest searches (query history)
    /qz-usage/alerts/<tenant>/<quota>/<period>/<threshold>  a usage alert (sent once)
    /qz-usage/stripe/<tenant>                    the last hour sent to Stripe
    /qz-audit/records/<chain>/<seq:012d>         one audit record (hash-chained)
    /qz-audit/heads/<chain>                      a chain's head and its journal cursor
"""

from __future__ import annotations

import hashlib
import time

USAGE = b"/qz-usage/"
CALLS = USAGE + b"calls/"
STORAGE = USAGE + b"storage/"
STORED = USAGE + b"stored/"
CURSORS = USAGE + b"cursor/"
RIDS = USAGE + b"rids/"
QUERIES = USAGE + b"queries/"
ALERTS = USAGE + b"alerts/"
STRIPE = USAGE + b"stripe/"
AUDIT = b"/qz-audit/"
AUDIT_RECORDS = AUDIT + b"records/"
AUDIT_HEADS = AUDIT + b"heads/"


def hour_of(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H", time.gmtime(t))


def day_of(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def month_of(t: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(t))


def minute_of(t: float) -> str:
    return time.strftime("%Y%m%d%H%M", time.gmtime(t))


def calls_key(tenant: str, hour: str) -> bytes:
    return CALLS + f"{tenant}/{hour}".encode()


def storage_key(tenant: str, hour: str) -> bytes:
    return STORAGE + f"{tenant}/{hour}".encode()


def stored_key(tenant: str) -> bytes:
    return STORED + tenant.encode()


def cursor_key(journal: str) -> bytes:
    return CURSORS + journal.encode()


def rid_bucket(rid: str) -> str:
    """Request ids are spread over 16 buckets, so a retry's lookup reads 1/16 of the window."""
    return hashlib.blake2b(rid.encode(), digest_size=1).hexdigest()[0]


def rids_prefix(bucket: str) -> bytes:
    return RIDS + bucket.encode() + b"/"


def rids_key(bucket: str, minute: str, journal: str, n: int) -> bytes:
    return rids_prefix(bucket) + f"{minute}/{journal}-{n}".encode()


def queries_key(tenant: str, journal: str) -> bytes:
    return QUERIES + f"{tenant}/{journal}".encode()


def alert_key(tenant: str, quota: str, period: str, threshold: int) -> bytes:
    return ALERTS + f"{tenant}/{quota}/{period}/{threshold}".encode()


def stripe_key(tenant: str) -> bytes:
    return STRIPE + tenant.encode()


def audit_record_key(chain: str, seq: int) -> bytes:
    return AUDIT_RECORDS + f"{chain}/{seq:012d}".encode()


def audit_head_key(chain: str) -> bytes:
    return AUDIT_HEADS + chain.encode()


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with `prefix` (etcd range end)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])
