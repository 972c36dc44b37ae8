"""`quartz`: the one console script.

Commands find the cluster from --router / --etcd, else $QUARTZ_ROUTER / $QUARTZ_ETCD, else from
DATA_DIR/cluster.json (written by `quartz up`) with DATA_DIR from --data-dir or $QUARTZ_DATA_DIR
(default .quartz/cluster). An operation that fails prints one line, "error: ...", and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

DEFAULT_DATA_DIR = ".quartz/cluster"
SUPERVISE_INTERVAL_S = 0.5  # how often `quartz up` checks its children


class CliError(Exception):
    """A failure to report as one line on stderr (exit status 1), never a traceback."""


def _data_dir(args: argparse.Namespace) -> str:
    return args.data_dir or os.environ.get("QUARTZ_DATA_DIR") or DEFAULT_DATA_DIR


def _cluster_file(args: argparse.Namespace) -> dict:
    from quartz_cluster.cluster import read_cluster_file

    try:
        return read_cluster_file(_data_dir(args))
    except FileNotFoundError as exc:
        raise CliError(f"{exc} (or give --router / --etcd, or set QUARTZ_ROUTER / QUARTZ_ETCD)") from None


def _router(args: argparse.Namespace) -> str:
    return getattr(args, "router", None) or os.environ.get("QUARTZ_ROUTER") or _cluster_file(args)["router"]


def _etcd(args: argparse.Namespace) -> str:
    return _endpoints(
        getattr(args, "etcd", None) or os.environ.get("QUARTZ_ETCD") or ",".join(_cluster_file(args)["etcd"])
    )


def _endpoints(text: str) -> str:
    """etcd endpoints as given, once they parse (else one line on stderr, not a traceback)."""
    from quartz_cluster.meta.store import parse_endpoints

    try:
        parse_endpoints(text)
    except ValueError as exc:
        raise CliError(f"--etcd: {exc}") from None
    return text


def _etcd_auth(args: argparse.Namespace):
    """etcd's credentials from the data dir's cluster secret (None: a --no-auth cluster)."""

    from quartz_cluster.auth.cluster import SECRET_FILE, ClusterCredentials

    d = Path(_data_dir(args))
    return ClusterCredentials.load(d).etcd_auth if (d / SECRET_FILE).exists() else None


def _api_key(args: argparse.Namespace) -> str | None:
    """--api-key, else $QUARTZ_API_KEY, else the data dir's admin key (client/_common.find_api_key)."""
    from quartz_cluster.client._common import find_api_key

    return find_api_key(getattr(args, "api_key", None), _data_dir(args))


def _client(args: argparse.Namespace, timeout: float | None = None):
    from quartz_cluster.client import QuartzClient

    return QuartzClient(
        _router(args),
        api_key=_api_key(args),
        timeout=timeout or getattr(args, "timeout", None) or 60.0,
        tls=getattr(args, "tls", False),
        ca_cert=getattr(args, "ca_cert", None),
    )


def _credentials(args: argparse.Namespace, role: str):
    from quartz_cluster.auth.cluster import load_optional
    from quartz_cluster.errors import QuartzError

    try:
        creds = load_optional(args.cluster_dir, args.no_auth, role)
    except QuartzError as exc:
        raise CliError(str(exc)) from None
    if creds is None:
        print(
            f"WARNING: quartz {role} runs with --no-auth: anyone who reaches its ports can do anything",
            file=sys.stderr,
        )
    return creds


# --------------------------------------------------------------------------- processes


def _observability(args: argparse.Namespace):
    from quartz_cluster.observability import ObservabilitySettings

    ratio = args.trace_sample_ratio
    if ratio is not None and not 0.0 <= ratio <= 1.0:
        raise CliError(f"--trace-sample-ratio must be within [0, 1], got {ratio}")
    return ObservabilitySettings(getattr(args, "metrics_listen", None), args.otlp_endpoint, ratio)


def _node(args: argparse.Namespace) -> int:
    from quartz_cluster.node.main import NodeSettings, run

    return run(
        NodeSettings(
            node_id=args.id,
            data_dir=args.data_dir,
            listen=args.listen,
            advertise=args.advertise,
            commit_mode=args.commit_mode,
            checkpoint_every_points=args.checkpoint_every,
            threads=args.threads,
            etcd=args.etcd,
            lease_ttl_s=args.lease_ttl,
            log_retention_entries=args.log_retention,
            memory_bytes_max=args.memory_max,
            credentials=_credentials(args, "node"),
            observability=_observability(args),
        ),
        args.log_level,
    )


def _router_cmd(args: argparse.Namespace) -> int:
    from quartz_cluster.router.main import RouterSettings, run

    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("--tls-cert and --tls-key go together")
    tls = None
    if args.tls_cert:
        tls = (Path(args.tls_cert).read_bytes(), Path(args.tls_key).read_bytes())
    settings = RouterSettings(
        etcd=args.etcd,
        listen=args.listen,
        info_file=args.info_file,
        credentials=_credentials(args, "router"),
        tls=tls,
        tls_files=(args.tls_cert, args.tls_key) if args.tls_cert else None,
        router_id=args.id,
        http_listen=args.http_listen,
        journal_dir=args.journal_dir
        or (str(Path(args.cluster_dir) / "routers" / args.id / "journal") if args.cluster_dir else None),
        journal_fsync=args.journal_fsync,
        observability=_observability(args),
    )
    return run(settings, args.log_level)


def _coordinator(args: argparse.Namespace) -> int:
    from quartz_cluster.coordinator.billing import BillingSettings
    from quartz_cluster.coordinator.main import CoordinatorSettings, new_id, run

    settings = CoordinatorSettings(
        args.id or new_id(),
        args.etcd,
        lease_ttl_s=args.lease_ttl,
        repair_grace_s=args.repair_grace,
        rebalance_after_s=args.rebalance_after,
        listen=args.listen,
        info_file=args.info_file,
        credentials=_credentials(args, "coordinator"),
        billing=BillingSettings(
            sample_s=args.usage_sample,
            stripe_api_key=os.environ.get("STRIPE_API_KEY") or None,
            stripe_api_base=args.stripe_api_base,
        ),
        observability=_observability(args),
    )
    return run(settings, args.log_level)


def _up(args: argparse.Namespace) -> int:
    from rich.console import Console

    from quartz_cluster.cluster import LocalCluster

    console = Console()
    data_dir = _data_dir(args)
    if args.no_auth:
        console.print(
            "[bold red]WARNING: --no-auth: no API keys, open etcd and an open internal plane. "
            "Anyone who reaches these ports can read, write and drop everything. For experiments only.[/]"
        )
    cluster = LocalCluster(
        data_dir,
        nodes=args.nodes,
        coordinators=args.coordinators,
        router_port=args.port,
        auth=not args.no_auth,
        http_port=args.http_port,
    )
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    from quartz_cluster.cluster import AlreadyRunning

    try:
        with console.status(
            f"starting etcd, {args.coordinators} coordinator(s), {args.nodes} nodes and a router"
        ):
            cluster.start()
    except AlreadyRunning as exc:
        raise CliError(str(exc)) from None
    console.print(f"[bold green]QuartzDB cluster up[/] (data dir {cluster.data_dir})")
    console.print(f"  router (gRPC, quartz.v1.Quartz): [bold]{cluster.router_address}[/]")
    http = f"http://{cluster.http_address}"
    console.print(f"  HTTP gateway: [bold]{http}[/] (docs: {http}/docs; dashboard: {http}/dashboard)")
    console.print(f"  metrics: {http}/metrics; nodes' and coordinators' in the cluster file")
    if cluster.new_admin_key:
        console.print(
            f"  admin API key (shown once; also in {cluster.admin_key_file}, mode 0600):\n"
            f"    [bold]{cluster.new_admin_key}[/]"
        )
    elif cluster.auth:
        console.print(f"  admin API key: in {cluster.admin_key_file}")
    console.print(f"  etcd: {cluster.etcd.endpoint}")
    for n in cluster.nodes:
        console.print(f"  node {n.name}: {n.address} (pid {n.pid}; metrics {n.metrics_address})")
    console.print(f"  cluster file: {cluster.data_dir / 'cluster.json'}; logs in {cluster.logs}")
    console.print("A child that dies is restarted (backoff 1 s doubling to 60 s). Ctrl-C stops everything.")
    try:
        while not stop["now"]:
            for event in cluster.supervise():
                console.print(f"  {event}")
            time.sleep(SUPERVISE_INTERVAL_S)
    finally:
        console.print("stopping ...")
        cluster.stop()
        console.print("stopped.")
    return 0


# --------------------------------------------------------------------------- operations


async def _audit_drain(store, node: str, verb: str) -> None:
    """`quartz drain` changes the cluster through etcd (cluster credentials, no API key): it
    records its own audit event (user: the operator's login, as etcd's root)."""
    import getpass

    from quartz_cluster.audit.event import make_event
    from quartz_cluster.audit.store import append_one

    event = make_event(
        verb=verb,
        code=200,
        key_id="",
        role="cluster",
        resource="nodes",
        name=node,
        user_agent=f"quartz-cli (user {getpass.getuser()})",
        annotations={"quartz/via": "etcd"},
    )
    await append_one(store, event, "cli")


def _bootstrap(args: argparse.Namespace) -> int:
    """Secure an etcd the operator runs and print a new admin key (once: only its hash is kept)."""
    import orjson

    from quartz_cluster.auth.bootstrap import bootstrap_etcd
    from quartz_cluster.meta.schema import DEFAULT_TENANT

    etcd = args.etcd or os.environ.get("QUARTZ_ETCD")
    if not etcd:
        raise CliError("give --etcd host:port[,...] (or set QUARTZ_ETCD)")
    key = bootstrap_etcd(_endpoints(etcd), args.cluster_dir)
    if args.json:
        print(orjson.dumps({"admin_key": key, "tenant": DEFAULT_TENANT, "etcd_auth": True}).decode())
    else:
        print(f"etcd auth is on; tenant {DEFAULT_TENANT!r} exists", file=sys.stderr)
        print(f"admin key: {key}")
        print(
            "shown once: store it now (each run creates another; revoke the ones you do not keep)",
            file=sys.stderr,
        )
    return 0


def _drain(args: argparse.Namespace) -> int:
    """Mark a node draining; the coordinator moves each replica off it (new replica first,
    caught up, primary handed over, old replica removed). Waits and shows progress."""
    import time

    from rich.console import Console

    from quartz_cluster.coordinator.reconcile import ClusterView
    from quartz_cluster.meta import schema
    from quartz_cluster.meta.store import EtcdStore

    console = Console()

    async def run() -> int:
        store = EtcdStore(_etcd(args), _etcd_auth(args))
        try:
            if args.cancel:
                if await store.get(schema.drain_key(args.node)) is None:
                    raise CliError(f"node {args.node!r} is not draining")
                await store.delete(schema.drain_key(args.node))
                await _audit_drain(store, args.node, "cancel_drain")
                console.print(f"drain of {args.node} cancelled")
                return 0
            rev, kvs = await store.list(schema.ROOT)
            view = ClusterView.from_kvs(rev, kvs)
            holds = any(args.node in rec.replicas for by in view.shards.values() for rec, _ in by.values())
            if args.node not in view.nodes and not holds:
                known = ", ".join(sorted(view.nodes)) or "none"
                raise CliError(f"no node {args.node!r} in the cluster (nodes: {known}); nothing drained")
            await store.put(schema.drain_key(args.node), b"{}")
            await _audit_drain(store, args.node, "drain")
            deadline = time.monotonic() + args.timeout
            with console.status(f"draining {args.node}") as status:
                while True:
                    rev, kvs = await store.list(schema.ROOT)
                    view = ClusterView.from_kvs(rev, kvs)
                    left = [
                        f"{rec.collection}/{s}"
                        for by in view.shards.values()
                        for s, (rec, _) in by.items()
                        if args.node in rec.replicas
                    ]
                    if not left:
                        console.print(f"{args.node} holds no replica any more: drained")
                        return 0
                    status.update(
                        f"draining {args.node}: {len(left)} replica(s) left ({', '.join(left[:4])})"
                    )
                    if time.monotonic() > deadline:
                        console.print(f"[red]timed out[/] with {len(left)} replica(s) left on {args.node}")
                        return 1
                    await asyncio.sleep(0.5)
        finally:
            await store.close()

    return asyncio.run(run())


def _status(args: argparse.Namespace) -> int:
    import orjson

    from quartz_cluster.backup import jobs as backup_jobs
    from quartz_cluster.coordinator.reconcile import ClusterView
    from quartz_cluster.meta import schema
    from quartz_cluster.meta.store import EtcdStore

    async def snapshot() -> tuple[ClusterView, list[dict], list[dict]]:
        store = EtcdStore(_etcd(args), _etcd_auth(args))
        try:
            rev, kvs = await store.list(schema.ROOT)
            _, sched_kvs = await store.list(backup_jobs.SCHEDULES)
            _, job_kvs = await store.list(backup_jobs.JOBS)
            return ClusterView.from_kvs(rev, kvs), coordinators_of(kvs), backups_of(sched_kvs, job_kvs)
        finally:
            await store.close()

    try:
        view, coordinators, backups = asyncio.run(snapshot())
    except (OSError, aetcd_errors().ClientError) as exc:
        raise CliError(f"cannot read the cluster from etcd at {_etcd(args)}: {exc}") from None
    known = set(view.nodes) | {
        n for by in view.shards.values() for rec, _ in by.values() for n in rec.replicas
    }
    owners = {c.id: (c.tenant, c.name) for c in view.collections.values()}
    shards = [
        {
            "tenant": owners.get(cid, ("?", rec.collection))[0],
            "collection": owners.get(cid, ("?", rec.collection))[1],
            "collection_id": cid,
            "shard": s,
            "epoch": rec.epoch,
            "primary": rec.primary,
            "replicas": list(rec.replicas),
            "in_sync": [i.node for i in rec.in_sync],
        }
        for cid, by in sorted(view.shards.items())
        for s, (rec, _) in sorted(by.items())
        if cid not in view.tombstones
    ]
    nodes = [
        {
            "id": n,
            "address": view.nodes[n].address if n in view.nodes else None,
            "alive": n in view.nodes,
            "health": view.unhealthy.get(n, "ok" if n in view.nodes else ""),
            "replicas": sum(n in s["replicas"] for s in shards),
            "primaries": sum(n == s["primary"] for s in shards),
        }
        for n in sorted(known)
    ]
    if args.json:
        out = {"coordinators": coordinators, "nodes": nodes, "shards": shards, "backup_schedules": backups}
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="coordinators", title_justify="left")
    for col in ("id", "address", "leader"):
        t.add_column(col)
    for c in coordinators:
        t.add_row(c["id"], c["address"] or "-", "[green]yes[/]" if c["leader"] else "")
    console.print(t if coordinators else "[red]no coordinator is running[/]")
    t = Table(title="nodes", title_justify="left")
    for col in ("id", "address", "alive", "health", "replicas", "primaries"):
        t.add_column(col)
    for n in nodes:
        t.add_row(
            n["id"],
            n["address"] or "-",
            "[green]yes[/]" if n["alive"] else "[red]no[/]",
            n["health"] if n["health"] in ("ok", "") else f"[red]{n['health']}[/]",
            str(n["replicas"]),
            str(n["primaries"]),
        )
    console.print(t)
    t = Table(title="shards", title_justify="left")
    for col in ("collection", "shard", "epoch", "primary", "replicas", "in_sync"):
        t.add_column(col)
    for s in shards:
        t.add_row(
            s["collection"] if s["tenant"] == "default" else f"{s['tenant']}/{s['collection']}",
            str(s["shard"]),
            str(s["epoch"]),
            s["primary"],
            ",".join(s["replicas"]),
            ",".join(s["in_sync"]) or "[yellow](creating)[/]",
        )
    console.print(t)
    if backups:
        t = Table(title="backup schedules", title_justify="left")
        for col in ("schedule", "every", "keep", "repository", "last backup", "state"):
            t.add_column(col)
        for b in backups:
            t.add_row(
                b["name"],
                f"{b['interval_s']} s",
                str(b["keep"]),
                b["repository"],
                b["last_backup"] or "-",
                b["last_state"] or "-",
            )
        console.print(t)
    return 0


def backups_of(schedule_kvs, job_kvs) -> list[dict]:
    """Each backup schedule and its latest job, from etcd listings."""
    from quartz_cluster.backup import jobs

    all_jobs = [jobs.Job.from_json(kv.value) for kv in job_kvs]
    out = []
    for kv in schedule_kvs:
        s = jobs.Schedule.from_json(kv.value)
        mine = sorted((j for j in all_jobs if j.schedule == s.name), key=lambda j: j.requested_at)
        last = mine[-1] if mine else None
        out.append(
            {
                "name": s.name,
                "interval_s": s.interval_s,
                "keep": s.keep,
                "repository": s.repository,
                "last_backup": last.id if last else "",
                "last_state": last.state if last else "",
            }
        )
    return out


def coordinators_of(kvs) -> list[dict]:
    """The registered coordinators and which one leads, from an etcd listing of the root."""
    from quartz_cluster.meta import schema

    leader, out = None, []
    for kv in kvs:
        if kv.key == schema.LEADER:
            leader = schema.LeaderRecord.from_json(kv.value).id
    for kv in kvs:
        if kv.key.startswith(schema.COORDINATORS):
            rec = schema.LeaderRecord.from_json(kv.value)
            out.append({"id": rec.id, "address": rec.address or None, "leader": rec.id == leader})
    return sorted(out, key=lambda c: c["id"])


def _collections(args: argparse.Namespace) -> int:
    import orjson

    from quartz_cluster.errors import QuartzError

    try:
        with _client(args) as c:
            if args.action == "list":
                infos = c.list_collections()
                if not infos:
                    print("no collections", file=sys.stderr)
                for info in infos:
                    print(
                        f"{info.name}\tdim={info.dim}\tmetric={info.metric}\tshards={info.shards}\t"
                        f"rf={info.replication_factor}\tready={info.ready}"
                    )
            elif args.action == "create":
                info = c.create_collection(
                    args.name,
                    dim=args.dim,
                    metric=args.metric,
                    shards=args.shards,
                    replication_factor=args.rf,
                    m=args.m,
                    ef_construction=args.ef_construction,
                    ef=args.ef,
                    wait=True,
                )
                print(
                    f"created {info.name} ({info.id}): {info.shards} shards x {info.replication_factor}, "
                    f"ready={info.ready}"
                )
            elif args.action == "describe":
                info = c.describe_collection(args.name)
                out = {k: getattr(info, k) for k in info.__slots__}
                out["count"] = c.count(args.name)
                print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
            else:
                c.drop_collection(args.name)
                print(f"dropped {args.name}")
    except QuartzError as exc:
        raise CliError(f"{exc.code}: {exc}") from None
    return 0


def _tenants(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.action == "create":
            t = c.create_tenant(
                args.name,
                args.plan,
                args.stripe_customer or "",
                args.webhook_url or "",
                args.webhook_secret or "",
                args.rate_limit or (),
            )
            print(f"created tenant {t.name} (plan {t.plan})")
        elif args.action == "update":
            t = c.update_tenant(
                args.name,
                args.plan,
                args.stripe_customer,
                args.webhook_url,
                args.webhook_secret,
                [] if args.clear_rate_limits else args.rate_limit,
            )
            limits = ",".join(t.rate_limits) or "the plan's"
            print(f"tenant {t.name}: plan {t.plan}, rate limits {limits}")
        elif args.action == "list":
            for t in c.list_tenants():
                created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t.created_at))
                extra = f"\tstripe={t.stripe_customer}" if t.stripe_customer else ""
                limits = f"\tlimits={','.join(t.rate_limits)}" if t.rate_limits else ""
                print(f"{t.name}\tplan={t.plan}\tcreated={created}{extra}{limits}")
        else:
            revoked = c.delete_tenant(args.name)
            print(f"deleted tenant {args.name} ({revoked} key(s) revoked)")
    return 0


def _usage(args: argparse.Namespace) -> int:
    import orjson

    with _client(args) as c:
        u = c.usage(args.tenant, args.month)
    if args.json:
        print(orjson.dumps(u).decode())
        return 0
    print(f"tenant {u['tenant']} (plan {u['plan']}), {u['month']}")
    print(f"{'day':<12}{'calls':>10}{'vectors written':>17}{'vector-months':>16}{'GB-months':>14}")
    for d in u.get("days", []):
        print(
            f"{d['day']:<12}{int(d['calls']):>10}{int(d['vectors_written']):>17}"
            f"{d['vector_months']:>16.6f}{d['gb_months']:>14.9f}"
        )
    print(
        f"{'total':<12}{int(u['calls']):>10}{int(u['vectors_written']):>17}"
        f"{u['vector_months']:>16.6f}{u['gb_months']:>14.9f}"
    )
    by_op = ", ".join(f"{k} {v}" for k, v in sorted(u.get("calls_by_operation", {}).items()))
    print(f"calls by operation: {by_op or '-'}")
    print(
        f"stored now: {int(u['stored_vectors'])} vectors, {int(u['stored_bytes'])} bytes; "
        f"calls today {u['calls_today']}"
    )
    return 0


def _invoice(args: argparse.Namespace) -> int:
    import orjson

    with _client(args) as c:
        bill = c.invoice(args.tenant, args.month)
        if args.html:
            Path(args.html).write_text(c.invoice(args.tenant, args.month, html=True))
    if args.json:
        print(orjson.dumps(bill).decode())
    else:
        print(f"invoice {bill['tenant']} {bill['month']} (plan {bill['plan']})")
        for line in bill["lines"]:
            print(
                f"  {line['description']:<40} {line['quantity']:>18} {line['unit']:<14} "
                f"- {line['allowance']} free = {line['billable']} x ${line['unit_price']} = ${line['amount']}"
            )
        print(f"  {'total':<40} ${bill['total']}")
    if args.html:
        print(f"HTML written to {args.html}", file=sys.stderr)
    return 0


def _audit(args: argparse.Namespace) -> int:
    import orjson

    from quartz_cluster.audit.chain import format_line

    with _client(args) as c:
        if args.action == "verify":
            report = c.verify_audit()
            if args.json:
                print(orjson.dumps(report).decode())
            for p in report.get("problems", []):
                print(p, file=sys.stderr)
            print(
                f"audit log {'intact' if report['ok'] else 'TAMPERED'}: {int(report['records'])} records "
                f"in {report['chains']} chain(s)"
            )
            return 0 if report["ok"] else 1
        since = _since(args.since) if args.since else None
        for rec in c.audit(args.tenant, since, args.limit, args.verb):
            print(orjson.dumps(rec).decode() if args.json else format_line(rec))
    return 0


def _since(text: str) -> float:
    """--since: a duration back from now (10m, 2h, 7d) or an RFC 3339 time."""
    try:
        return time.time() - _duration(text)
    except argparse.ArgumentTypeError:
        pass
    from quartz_cluster.audit.event import parse_timestamp

    try:
        return parse_timestamp(text).timestamp()
    except ValueError:
        raise CliError(
            f"--since: expected a duration (10m, 2h, 7d) or an RFC 3339 time, got {text!r}"
        ) from None


def _keys(args: argparse.Namespace) -> int:
    import orjson

    def when(ts: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else "never"

    with _client(args) as c:
        if args.action == "create":
            collections = [x for x in args.collections.split(",") if x]
            key, info = c.create_key(
                args.tenant, args.role, collections, args.expires_in, args.description, args.rate_limit or ()
            )
            if args.json:
                print(orjson.dumps({"key": key, **{k: getattr(info, k) for k in info.__slots__}}).decode())
            else:
                print(key)
                print(
                    f"key id {info.id}: tenant {info.tenant}, role {info.role}, collections "
                    f"{','.join(info.collections) or 'all'}, expires {when(info.expires_at)}. "
                    "The key is shown only now: keep it.",
                    file=sys.stderr,
                )
        elif args.action == "list":
            infos = c.list_keys(args.tenant)
            if args.json:
                print(orjson.dumps([{k: getattr(i, k) for k in i.__slots__} for i in infos]).decode())
            for i in [] if args.json else infos:
                print(
                    f"{i.id}\t{i.tenant}\t{i.role}\tcollections={','.join(i.collections) or '*'}\t"
                    f"created={when(i.created_at)}\texpires={when(i.expires_at)}\t{i.description}"
                )
        else:
            c.revoke_key(args.key_id)
            print(f"revoked {args.key_id}")
    return 0


def _load(args: argparse.Namespace) -> int:
    from quartz_cluster.loader import load_file

    return load_file(
        _router(args),
        _api_key(args),
        args.file,
        args.collection,
        args.payloads,
        args.id_key,
        args.batch,
        create=not args.no_create,
        shards=args.shards,
        rf=args.rf,
        metric=args.metric,
        limit=args.limit,
    )


def _export(args: argparse.Namespace) -> int:
    """Every point of a collection (matching --filter) to an NDJSON file, through the SDK's
    paging; written to a temp file beside it and renamed once complete, so a failed export leaves
    nothing under the final name."""
    import tempfile

    import orjson
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from quartz_cluster.client._common import export_line
    from quartz_cluster.errors import QuartzError

    flt = None
    if args.filter is not None:
        try:
            flt = orjson.loads(args.filter)
        except orjson.JSONDecodeError as exc:
            raise CliError(f"--filter: not valid JSON ({exc})") from None
    target = Path(args.to)
    if target.is_dir():
        raise CliError(f"--to {args.to}: is a directory (give a file name)")
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise CliError(f"--to {args.to}: no such directory {directory}")
    show = sys.stderr.isatty() and not args.json
    t0 = time.perf_counter()
    points = size = 0
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, _client(args) as c:
            total = c.count(args.collection, filter=flt) if show else None
            columns = [TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
            with Progress(*columns, console=Console(stderr=True), disable=not show) as progress:
                task = progress.add_task("export", total=total)
                pages = c.scroll_all(
                    args.collection,
                    filter=flt,
                    page_size=args.page_size,
                    with_vectors=True,
                    with_payload=True,
                    consistency=args.consistency,
                )
                for point in pages:
                    line = export_line(point.id, point.vector, point.payload)
                    out.write(line)
                    points += 1
                    size += len(line)
                    if points % 1000 == 0:
                        progress.update(task, completed=points)
                progress.update(task, completed=points)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except QuartzError as exc:
        raise CliError(f"{exc.code}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    seconds = time.perf_counter() - t0
    if args.json:
        summary = {
            "collection": args.collection,
            "points": points,
            "bytes": size,
            "seconds": round(seconds, 3),
            "file": str(target),
        }
        print(orjson.dumps(summary).decode())
    else:
        print(
            f"exported {points} points ({size / 1e6:.1f} MB) of {args.collection} to {target} "
            f"in {seconds:.1f} s"
        )
    return 0


def _chaos(args: argparse.Namespace) -> int:
    from quartz_cluster.chaos.runner import ChaosConfig, run

    report = run(
        ChaosConfig(
            args.scenario,
            args.duration,
            args.seed,
            args.nodes,
            args.shards,
            args.rf,
            args.out or f".quartz/chaos/{args.scenario}-{args.seed}",
        )
    )
    return 0 if report["passed"] else 1


def _demo(args: argparse.Namespace) -> int:
    from quartz_cluster.demo import run_demo

    return run_demo(args.data_dir or ".quartz/demo", args.shared_dir, args.rows, args.nodes)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from quartz_cluster import __version__

    parser = argparse.ArgumentParser(prog="quartz", description="QuartzDB distributed vector database")
    parser.add_argument("--version", action="version", version=f"quartz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def cluster_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--cluster-dir",
            default=None,
            help="a `quartz up` data dir: the cluster secret (member tokens, etcd password, key hashes)",
        )
        p.add_argument(
            "--no-auth", action="store_true", help="run without credentials (a --no-auth cluster only)"
        )

    def observability_opts(p: argparse.ArgumentParser, metrics_port: bool) -> None:
        if metrics_port:
            p.add_argument(
                "--metrics-listen",
                default=None,
                metavar="HOST:PORT",
                help="serve Prometheus metrics at GET /metrics here (port 0 picks a free one)",
            )
        p.add_argument(
            "--otlp-endpoint",
            default=None,
            metavar="HOST:PORT",
            help="export OpenTelemetry traces over OTLP/gRPC here (default $OTEL_EXPORTER_OTLP_ENDPOINT; "
            "unset: tracing off)",
        )
        p.add_argument(
            "--trace-sample-ratio",
            type=float,
            default=None,
            metavar="RATIO",
            help="share of requests without a sampled traceparent that start a trace (default 0.01)",
        )

    def find_opts(p: argparse.ArgumentParser, router: bool = False, etcd: bool = False) -> None:
        p.add_argument(
            "--data-dir",
            default=None,
            help=f"cluster data dir (default $QUARTZ_DATA_DIR or {DEFAULT_DATA_DIR})",
        )
        if router:
            p.add_argument("--router", default=None, help="router host:port (default: from the data dir)")
            p.add_argument(
                "--api-key",
                default=None,
                help="API key (default $QUARTZ_API_KEY, else the data dir's admin key)",
            )
            p.add_argument("--tls", action="store_true", help="connect to the router with TLS")
            p.add_argument("--ca-cert", default=None, help="CA certificate (PEM) to trust for TLS")
        if etcd:
            p.add_argument("--etcd", default=None, help="etcd host:port[,...] (default: from the data dir)")

    node = sub.add_parser("node", help="run a storage node")
    node.add_argument(
        "--id", required=True, type=_node_id, help="node id, e.g. n1 (letters, digits, _ and -; 1-64)"
    )
    node.add_argument("--data-dir", required=True, help="directory for this node's shards")
    node.add_argument("--listen", default="127.0.0.1:7101", help="host:port (port 0 picks a free one)")
    node.add_argument(
        "--advertise",
        default=None,
        type=_host_port,
        metavar="HOST:PORT",
        help="the address others reach this node at, registered in etcd (default: the listen address "
        "with the bound port); for a node behind NAT, a proxy or a service name",
    )
    node.add_argument(
        "--etcd", default=None, help="join a cluster: etcd host:port[,...] (default: standalone)"
    )
    node.add_argument("--lease-ttl", type=int, default=3, help="membership lease TTL in seconds")
    node.add_argument(
        "--commit-mode",
        choices=["group", "batch"],
        default="group",
        help="group: one fsync covers every queued batch; batch: one fsync per batch",
    )
    node.add_argument(
        "--checkpoint-every",
        type=int,
        default=50_000,
        metavar="POINTS",
        help="checkpoint the index after this many written points",
    )
    node.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="hnswlib threads")
    node.add_argument(
        "--log-retention",
        type=int,
        default=10_000,
        metavar="ENTRIES",
        help="log entries kept behind the newest checkpoint (for follower catch-up)",
    )
    node.add_argument(
        "--memory-max",
        type=_size,
        default=None,
        metavar="BYTES",
        help="memory budget (e.g. 4G, 512M): new replicas and writes are refused (RESOURCE_EXHAUSTED) "
        "beyond it; default 80%% of the machine's (or cgroup's) memory",
    )
    cluster_opts(node)
    observability_opts(node, metrics_port=True)
    node.add_argument("--log-level", default="info")
    node.set_defaults(func=_node)

    router = sub.add_parser("router", help="run a router (the public endpoint)")
    router.add_argument("--etcd", required=True, help="etcd host:port[,...]")
    router.add_argument("--listen", default="127.0.0.1:7000", help="host:port (port 0 picks a free one)")
    router.add_argument("--info-file", default=None, help="write {address, pid} here once serving")
    router.add_argument("--id", default="router", help="this router's name (in logs and member tokens)")
    router.add_argument(
        "--http-listen", default=None, help="serve the HTTP/JSON gateway here too (host:port; 0 picks a port)"
    )
    router.add_argument(
        "--tls-cert", default=None, help="serve gRPC and HTTP with TLS: certificate chain (PEM)"
    )
    router.add_argument("--tls-key", default=None, help="... and its private key (PEM)")
    router.add_argument(
        "--journal-dir",
        default=None,
        help="the metering journal (default: CLUSTER_DIR/routers/ID/journal); keep it across restarts",
    )
    router.add_argument(
        "--journal-fsync", action="store_true", help="fsync each metered call (survives losing the machine)"
    )
    cluster_opts(router)
    observability_opts(router, metrics_port=False)  # /metrics on --http-listen
    router.add_argument("--log-level", default="info")
    router.set_defaults(func=_router_cmd)

    coord = sub.add_parser("coordinator", help="run a coordinator (one is elected leader)")
    coord.add_argument("--etcd", required=True, help="etcd host:port[,...]")
    coord.add_argument("--id", default=None, help="coordinator id (default: random)")
    coord.add_argument("--lease-ttl", type=int, default=3, help="leadership lease TTL in seconds")
    coord.add_argument(
        "--usage-sample",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="sample each tenant's storage (and send usage alerts and Stripe meter events) this often",
    )
    coord.add_argument(
        "--stripe-api-base",
        default=None,
        help="Stripe API endpoint (default Stripe's); usage goes to Stripe when $STRIPE_API_KEY is set",
    )
    coord.add_argument(
        "--repair-grace",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a node gone this long has its replicas re-created on other nodes",
    )
    coord.add_argument(
        "--rebalance-after",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a node up this long may take primaries back (each move evens out primaries per node)",
    )
    coord.add_argument(
        "--listen", default="127.0.0.1:0", help="host:port for gRPC health probes (port 0 picks a free one)"
    )
    coord.add_argument("--info-file", default=None, help="write {address, pid} here once serving")
    cluster_opts(coord)
    observability_opts(coord, metrics_port=True)
    coord.add_argument("--log-level", default="info")
    coord.set_defaults(func=_coordinator)

    up = sub.add_parser("up", help="start etcd + coordinator + nodes + router on loopback; Ctrl-C stops all")
    up.add_argument("--data-dir", default=None, help=f"where everything is kept (default {DEFAULT_DATA_DIR})")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--coordinators", type=int, default=1)
    up.add_argument("--port", type=int, default=7000, help="router port (0: any free port)")
    up.add_argument("--http-port", type=int, default=8080, help="HTTP gateway port (0: any free port)")
    up.add_argument(
        "--no-auth",
        action="store_true",
        help="NO API keys, open etcd and internal plane: for local experiments only",
    )
    up.set_defaults(func=_up)

    boot = sub.add_parser(
        "bootstrap",
        help="secure an etcd you run (auth on, tenant default) and print a new admin key (what `up` does)",
    )
    boot.add_argument("--etcd", default=None, help="etcd host:port[,...] (default $QUARTZ_ETCD)")
    boot.add_argument(
        "--cluster-dir", required=True, help="the directory holding cluster.secret (read only is fine)"
    )
    boot.add_argument("--json", action="store_true")
    boot.set_defaults(func=_bootstrap)

    drain = sub.add_parser("drain", help="move every replica off a node (no write lost, no search failed)")
    find_opts(drain, etcd=True)
    drain.add_argument("node", type=_node_id)
    drain.add_argument("--timeout", type=float, default=3600.0)
    drain.add_argument("--cancel", action="store_true", help="stop draining (replicas already moved stay)")
    drain.set_defaults(func=_drain)

    status = sub.add_parser("status", help="nodes and shards as tables (or --json)")
    find_opts(status, etcd=True)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    colls = sub.add_parser("collections", help="list | create | describe | drop")
    colls_sub = colls.add_subparsers(dest="action", required=True)
    for action in ("list", "create", "describe", "drop"):
        p = colls_sub.add_parser(action)
        find_opts(p, router=True)
        p.add_argument("--timeout", type=float, default=60.0)
        if action != "list":
            p.add_argument("name")
        if action == "create":
            p.add_argument("--dim", type=int, required=True)
            p.add_argument("--metric", default="cosine", choices=["cosine", "l2", "ip"])
            p.add_argument("--shards", type=int, default=1)
            p.add_argument(
                "--rf",
                type=int,
                default=None,
                help="replication factor (default: 3, or every live node if fewer)",
            )
            p.add_argument("--m", type=int, default=None)
            p.add_argument("--ef-construction", type=int, default=None)
            p.add_argument("--ef", type=int, default=None)
        p.set_defaults(func=_collections)

    tenants = sub.add_parser("tenants", help="create | update | list | delete (admin key)")
    tenants_sub = tenants.add_subparsers(dest="action", required=True)
    for action in ("create", "update", "list", "delete"):
        p = tenants_sub.add_parser(action)
        find_opts(p, router=True)
        p.add_argument("--timeout", type=float, default=30.0)
        if action != "list":
            p.add_argument("name")
        if action in ("create", "update"):
            p.add_argument(
                "--plan",
                choices=["free", "paid"],
                default="free" if action == "create" else None,
                help="billing plan (docs/billing.md)" + ("; default free" if action == "create" else ""),
            )
            p.add_argument("--stripe-customer", default=None, help="the Stripe customer id billed (cus_...)")
            p.add_argument("--webhook-url", default=None, help="where usage alerts are POSTed")
            p.add_argument("--webhook-secret", default=None, help="signs usage alerts (Quartz-Signature)")
            p.add_argument(
                "--rate-limit",
                action="append",
                default=None,
                metavar="CLASS=N/UNIT[:burst=N]",
                help="override the plan's limit of a class (read, write, manage): read=100/s; repeatable",
            )
        if action == "update":
            p.add_argument("--clear-rate-limits", action="store_true", help="back to the plan's limits")
        p.set_defaults(func=_tenants)

    usage = sub.add_parser("usage", help="a tenant's metered usage in a month")
    find_opts(usage, router=True)
    usage.add_argument("--tenant", default=None, help="default: the calling key's")
    usage.add_argument("--month", default=None, help="YYYY-MM (UTC); default this month")
    usage.add_argument("--json", action="store_true")
    usage.add_argument("--timeout", type=float, default=30.0)
    usage.set_defaults(func=_usage)

    inv = sub.add_parser("invoice", help="a tenant's invoice for a month (JSON or text; --html FILE)")
    find_opts(inv, router=True)
    inv.add_argument("--tenant", default=None, help="default: the calling key's")
    inv.add_argument("--month", default=None, help="YYYY-MM (UTC); default this month")
    inv.add_argument("--json", action="store_true")
    inv.add_argument("--html", default=None, metavar="FILE", help="also write the invoice as an HTML page")
    inv.add_argument("--timeout", type=float, default=30.0)
    inv.set_defaults(func=_invoice)

    audit = sub.add_parser("audit", help="tail | verify the audit log (admin key)")
    audit_sub = audit.add_subparsers(dest="action", required=True)
    for action in ("tail", "verify"):
        p = audit_sub.add_parser(action)
        find_opts(p, router=True)
        p.add_argument("--json", action="store_true")
        p.add_argument("--timeout", type=float, default=60.0)
        if action == "tail":
            p.add_argument("--tenant", default=None, help="only events concerning this tenant")
            p.add_argument("--since", default=None, help="a duration back (10m, 2h, 7d) or an RFC 3339 time")
            p.add_argument("--verb", default=None, help="only this operation (upsert, create_key, ...)")
            p.add_argument("--limit", type=int, default=100)
        p.set_defaults(func=_audit)

    keys = sub.add_parser("keys", help="create | list | revoke API keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    for action in ("create", "list", "revoke"):
        p = keys_sub.add_parser(action)
        find_opts(p, router=True)
        p.add_argument("--timeout", type=float, default=30.0)
        p.add_argument("--json", action="store_true")
        if action in ("create", "list"):
            p.add_argument("--tenant", default=None, help="default: the calling key's tenant")
        if action == "create":
            p.add_argument(
                "--role", required=True, choices=["admin", "tenant-admin", "read-write", "read-only"]
            )
            p.add_argument("--collections", default="", help="limit the key to these collections (a,b,...)")
            p.add_argument(
                "--expires-in", type=_duration, default=0, help="e.g. 30d, 12h, 90m (default: never)"
            )
            p.add_argument("--description", default="")
            p.add_argument(
                "--rate-limit",
                action="append",
                default=None,
                metavar="CLASS=N/UNIT[:burst=N]",
                help="this key's own limit of a class: read=100/s (the tenant's applies too); repeatable",
            )
        if action == "revoke":
            p.add_argument("key_id")
        p.set_defaults(func=_keys)

    load = sub.add_parser("load", help="load vectors (.npy) and optional payloads (.jsonl) into a collection")
    find_opts(load, router=True)
    load.add_argument("file", help=".npy file of float vectors (n, dim)")
    load.add_argument("--collection", required=True)
    load.add_argument("--payloads", default=None, help=".jsonl file, one JSON object per vector")
    load.add_argument(
        "--id-key",
        default="id",
        help="payload key holding the point id (default: id); a row whose payload lacks it, or a load "
        "without --payloads, gets its row number",
    )
    load.add_argument("--batch", type=int, default=1000)
    load.add_argument("--limit", type=int, default=None, help="load only the first LIMIT rows")
    load.add_argument("--no-create", action="store_true", help="fail if the collection does not exist")
    load.add_argument("--shards", type=int, default=4, help="when creating")
    load.add_argument(
        "--rf", type=int, default=None, help="when creating (default: 3, or every live node if fewer)"
    )
    load.add_argument("--metric", default="cosine", choices=["cosine", "l2", "ip"], help="when creating")
    load.set_defaults(func=_load)

    export = sub.add_parser(
        "export", help="every point of a collection (id, vector, payload) to an NDJSON file"
    )
    find_opts(export, router=True)
    export.add_argument("collection")
    export.add_argument("--to", required=True, help="the .ndjson file to write (replaced once complete)")
    export.add_argument(
        "--filter", default=None, help="only the points matching this JSON filter, e.g. '{\"must\": [...]}'"
    )
    export.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    export.add_argument("--page-size", type=int, default=1000, help="points per scroll call (1..1000)")
    export.add_argument(
        "--consistency",
        default="strong",
        choices=["eventual", "session", "strong"],
        help="read from each shard's primary (strong, the default) or any replica (eventual)",
    )
    export.add_argument("--timeout", type=float, default=None, help="seconds per page (default 60)")
    export.set_defaults(func=_export)

    from quartz_cluster.chaos.faults import SCENARIOS

    chaos = sub.add_parser("chaos", help="fault-injection runs that check no acknowledged write is lost")
    chaos_sub = chaos.add_subparsers(dest="action", required=True)
    crun = chaos_sub.add_parser("run", help="start a cluster, write and read, inject faults, check")
    crun.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    crun.add_argument("--duration", type=float, default=60.0, help="seconds of faults and workload")
    crun.add_argument("--seed", type=int, default=1, help="the fault schedule; a failing run prints it")
    crun.add_argument("--nodes", type=int, default=3)
    crun.add_argument("--shards", type=int, default=4)
    crun.add_argument("--rf", type=int, default=3)
    crun.add_argument("--out", default=None, help="history, report and timeline go here")
    crun.set_defaults(func=_chaos)

    from quartz_cluster.bench.cli import add_arguments as bench_arguments

    bench = sub.add_parser(
        "bench", help="QuartzDB next to in-process hnswlib, Chroma and Milvus Lite on the same data"
    )
    bench_arguments(bench)
    bench.set_defaults(func=_bench)

    from quartz_cluster.backup import cli as backup_cli

    backup_cli.add_commands(sub, cluster_opts, find_opts)

    demo = sub.add_parser("demo", help="start a cluster, load demo data, run example searches, stop")
    demo.add_argument("--data-dir", default=None, help="where the demo keeps its data (default .quartz/demo)")
    demo.add_argument("--shared-dir", default=None, help="dataset dir (default: ../shared/data if present)")
    demo.add_argument("--rows", type=int, default=20_000, help="rows to load")
    demo.add_argument("--nodes", type=int, default=3)
    demo.set_defaults(func=_demo)
    return parser


def _node_id(text: str) -> str:
    """argparse type for a node id: it is a segment of etcd keys, so limits.NAME_PATTERN (no "/")."""
    import re

    from quartz_cluster.limits import NAME_PATTERN

    if not re.fullmatch(NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(f"a node id must match {NAME_PATTERN}, got {text!r}")
    return text


def _size(text: str) -> int:
    """argparse type for a byte size: 1073741824, 1G, 512M, 64K (binary units)."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = units.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in units else t
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 4G, 512M or bytes, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _duration(text: str) -> int:
    """argparse type for a duration: 30d, 12h, 90m, 45s or seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    t = text.strip().lower()
    scale = units.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in units else t
    if not number.isdigit() or int(number) <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 30d, 12h or 90m, got {text!r}")
    return int(number) * scale


def _host_port(text: str) -> str:
    """argparse type for HOST:PORT (port 1-65535)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a port in 1-65535, got {text!r}")
    return text


def _bench(args: argparse.Namespace) -> int:
    from quartz_cluster.bench.cli import run

    return run(args)


def aetcd_errors():
    import aetcd.exceptions

    return aetcd.exceptions


def main(argv: list[str] | None = None) -> int:
    import grpc

    from quartz_cluster.errors import QuartzError
    from quartz_cluster.loader import LoadError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, LoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except QuartzError as exc:
        print(f"error: {exc.code}: {exc}", file=sys.stderr)
    except (OSError, aetcd_errors().ClientError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
    except grpc.RpcError as exc:  # a raw gRPC call (etcd's auth API in `bootstrap`)
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
