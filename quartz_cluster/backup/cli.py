"""`quartz backup ...`: create, list, describe, verify, restore, delete, schedule (DESIGN §13).

Everything but `verify` goes through the router with an admin key, like any client; `verify`
reads the repository itself (it needs no cluster). Progress bars go to stderr on a terminal;
`--json` prints one JSON document for scripts."""

from __future__ import annotations

import argparse
import sys
import time

import orjson

POLL_S = 0.5


def _progress(args, label: str, total: int):
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    show = sys.stderr.isatty() and not getattr(args, "json", False)
    columns = (TextColumn(label), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    bar = Progress(*columns, console=Console(stderr=True), disable=not show)
    return bar, total


def _print_json(obj) -> None:
    print(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


def _job_line(j: dict) -> str:
    copied = f"copied {_size(j['bytes_copied'])} of {_size(j['bytes_total'])}"
    extra = f" error: {j['error']}" if j["error"] else ""
    sched = f" schedule={j['schedule']}" if j["schedule"] else ""
    return (
        f"{j['id']}  {j['state']:<8}  {_when(j['requested_at'])}  {j['vectors']} vectors  "
        f"{j['shards_done']}/{j['shards_total']} shards  {copied}  {j['repository']}{sched}{extra}"
    )


def _create(args) -> int:
    from quartz_cluster.cli import CliError, _client

    with _client(args) as client:
        job = client.create_backup(args.to, args.collection or ())
        if args.no_wait:
            _print_json(job) if args.json else print(job["id"])
            return 0
        bar, _ = _progress(args, f"backup {job['id']}", 0)
        with bar:
            task = bar.add_task("copy", total=None)
            while job["state"] in ("pending", "running"):
                time.sleep(POLL_S)
                job = client.backup(job["id"])
                bar.update(task, total=max(job["shards_total"], 1), completed=job["shards_done"])
        if args.json:
            _print_json(job)
        else:
            print(_job_line(job))
        if job["state"] != "complete":
            raise CliError(f"backup {job['id']} failed: {job['error']}")
    return 0


def _list(args) -> int:
    from quartz_cluster.cli import _client

    with _client(args) as client:
        found = client.list_backups(args.source or "")
    if args.json:
        _print_json(found)
    elif not found:
        print("no backups", file=sys.stderr)
    for j in [] if args.json else found:
        print(_job_line(j))
    return 0


def _describe(args) -> int:
    from quartz_cluster.cli import _client

    with _client(args) as client:
        m = client.describe_backup(args.id, args.source or "")
    if args.json:
        _print_json(m)
        return 0
    t = m["totals"]
    print(
        f"backup {m['id']}: complete {_when(m['completed_at'])} (writes acknowledged before "
        f"{_when(m['requested_at'])} are in it); parent {m.get('parent') or '-'}"
    )
    print(
        f"  {t['vectors']} vectors, {t['shards']} shards, {_size(t['bytes'])} in {t['objects']} objects "
        f"({_size(t['bytes_copied'])} copied by this backup)"
    )
    for c in m["collections"]:
        print(f"  {c['tenant']}/{c['name']}: dim {c['dim']} {c['metric']}, {c['shards']} shards")
        for p in c["parts"]:
            index = f"index@{p['index']['lsn']}" if p.get("index") else "no index (rebuilt on restore)"
            print(f"    shard {p['shard']}: epoch {p['epoch']} lsn {p['lsn']}, {p['count']} vectors, {index}")
    return 0


def _verify(args) -> int:
    from quartz_cluster.backup import verify
    from quartz_cluster.backup.repository import open_repository
    from quartz_cluster.cli import CliError

    repo = open_repository(args.source)
    total = verify.total_bytes(repo, args.id)
    bar, _ = _progress(args, f"verify {args.id}", total)
    with bar:
        task = bar.add_task("verify", total=total)
        report = verify.verify(repo, args.id, lambda n: bar.advance(task, n))
    if args.json:
        _print_json(report)
    else:
        for p in report["problems"]:
            print(f"{p['object']}: {p['problem']} ({p['file']})")
        if report["ok"]:
            print(f"backup {args.id}: {report['objects']} objects, {_size(report['bytes'])}: all intact")
    if not report["ok"]:
        first = report["problems"][0]["object"]
        raise CliError(f"backup {args.id}: {len(report['problems'])} bad objects (first: {first})")
    return 0


def _restore(args) -> int:
    from quartz_cluster.cli import CliError, _client

    with _client(args) as client:
        made = client.restore_backup(
            args.source,
            args.id,
            args.collection or (),
            args.as_name or "",
            args.replication_factor or 0,
            args.tenant or "",
        )
        names = [c.name for c in made]
        if args.no_wait:
            _print_json([c.name for c in made]) if args.json else print(" ".join(names))
            return 0
        bar, _ = _progress(args, f"restore {args.id}", 0)
        t0 = time.monotonic()
        status = {}
        with bar:
            task = bar.add_task("restore", total=len(names))
            while True:
                infos = {n: client.describe_collection(n) for n in names}
                status = {n: i.status for n, i in infos.items()}
                bar.update(task, completed=sum(s == "ready" for s in status.values()))
                failed = {n: s for n, s in status.items() if s.startswith("restore failed")}
                if failed or all(s == "ready" for s in status.values()):
                    break
                time.sleep(POLL_S)
        seconds = round(time.monotonic() - t0, 3)
        if failed:
            for n in names:  # nothing half-restored stays behind
                try:
                    client.drop_collection(n)
                except Exception as exc:
                    print(f"warning: could not drop {n}: {exc}", file=sys.stderr)
            first = next(iter(failed.items()))
            raise CliError(
                f"restore of {first[0]} from backup {args.id} failed: {first[1][len('restore failed: ') :]}"
            )
        counts = {n: int(client.count(n)) for n in names}
    if args.json:
        _print_json({"backup": args.id, "collections": counts, "seconds": seconds})
    else:
        for n, count in counts.items():
            print(f"restored {n}: {count} vectors ({seconds} s)")
    return 0


def _delete(args) -> int:
    from quartz_cluster.cli import _client

    with _client(args) as client:
        client.delete_backup(args.id, args.source or "")
    print(f"deleted backup {args.id}")
    return 0


def _schedule(args) -> int:
    from quartz_cluster.cli import _client

    with _client(args) as client:
        if args.action == "set":
            s = client.set_backup_schedule(args.name, args.to, args.every, args.keep, args.collection or ())
            out = [s]
        elif args.action == "delete":
            client.delete_backup_schedule(args.name)
            print(f"deleted schedule {args.name}")
            return 0
        else:
            out = client.list_backup_schedules()
    if args.json:
        _print_json(out)
        return 0
    if not out:
        print("no backup schedules", file=sys.stderr)
    for s in out:
        last = f"last {s['last_backup']} {s['last_state']}" if s["last_backup"] else "no backup yet"
        print(
            f"{s['name']}: every {s['interval_s']} s, keep {s['keep']}, to {s['repository']}; {last}; "
            f"next at {_when(s['next_at'])}"
        )
    return 0


def add_commands(sub, cluster_opts, find_opts) -> None:
    """Register `quartz backup ...` on the `quartz` parser."""
    from quartz_cluster.cli import _duration

    del cluster_opts
    backup = sub.add_parser("backup", help="create | list | describe | verify | restore | delete | schedule")
    bsub = backup.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser, router: bool = True) -> None:
        if router:
            find_opts(p, router=True)
        p.add_argument("--json", action="store_true", help="one JSON document on stdout")

    p = bsub.add_parser("create", help="back up every collection (or those named) while writes go on")
    common(p)
    p.add_argument("--to", required=True, help="file:///DIR or s3://BUCKET/PREFIX")
    p.add_argument("--collection", action="append", help="tenant/name or name (repeatable; default: all)")
    p.add_argument("--no-wait", action="store_true", help="print the backup id and return")
    p.add_argument("--timeout", type=float, default=None, help="seconds per call")
    p.set_defaults(func=_create)

    p = bsub.add_parser("list", help="backups: the cluster's jobs, and complete backups in --from")
    common(p)
    p.add_argument("--from", dest="source", default=None, help="a repository to list too")
    p.set_defaults(func=_list)

    p = bsub.add_parser("describe", help="a backup's manifest")
    common(p)
    p.add_argument("id")
    p.add_argument("--from", dest="source", default=None, help="its repository (default: from its job)")
    p.set_defaults(func=_describe)

    p = bsub.add_parser("verify", help="re-read every object of a backup and check its checksum")
    common(p, router=False)
    p.add_argument("id")
    p.add_argument("--from", dest="source", required=True, help="file:///DIR or s3://BUCKET/PREFIX")
    p.set_defaults(func=_verify)

    p = bsub.add_parser("restore", help="create collections from a backup (into any cluster)")
    common(p)
    p.add_argument("id")
    p.add_argument("--from", dest="source", required=True, help="file:///DIR or s3://BUCKET/PREFIX")
    p.add_argument("--collection", action="append", help="which collections (repeatable; default: all)")
    p.add_argument("--as", dest="as_name", default=None, help="restore one collection under this name")
    p.add_argument("--tenant", default=None, help="into this tenant (default: each collection's own)")
    p.add_argument(
        "--replication-factor", type=int, default=None, help="default: 3, or every live node if fewer"
    )
    p.add_argument("--no-wait", action="store_true", help="return once the collections are created")
    p.add_argument("--timeout", type=float, default=None, help="seconds per call")
    p.set_defaults(func=_restore)

    p = bsub.add_parser("delete", help="delete a complete backup (objects no backup uses go at the next GC)")
    common(p)
    p.add_argument("id")
    p.add_argument("--from", dest="source", default=None, help="its repository (default: from its job)")
    p.set_defaults(func=_delete)

    p = bsub.add_parser("schedule", help="set | list | delete backup schedules (run by the coordinator)")
    ssub = p.add_subparsers(dest="action", required=True)
    s = ssub.add_parser("set", help="back up every interval and keep the newest N")
    common(s)
    s.add_argument("name")
    s.add_argument("--to", required=True, help="file:///DIR or s3://BUCKET/PREFIX")
    s.add_argument("--every", type=_duration, required=True, help="interval: 1d, 6h, 30m, 90s")
    s.add_argument("--keep", type=int, required=True, help="complete backups to keep")
    s.add_argument("--collection", action="append", help="tenant/name or name (repeatable; default: all)")
    s.set_defaults(func=_schedule)
    s = ssub.add_parser("list")
    common(s)
    s.set_defaults(func=_schedule)
    s = ssub.add_parser("delete")
    common(s)
    s.add_argument("name")
    s.set_defaults(func=_schedule)
