"""A whole cluster on loopback from one data dir: etcd + coordinator(s) + nodes + router(s).
Used by `quartz up`, the demo, tests and benchmarks. Restarting on the same data dir brings
the same data back (etcd's data, each node's shards, the router's port)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from quartz_cluster.auth.cluster import ADMIN_KEY_FILE
from quartz_cluster.procs import (
    Child,
    CoordinatorProcess,
    EtcdCluster,
    EtcdProcess,
    NodeProcess,
    RouterProcess,
)

CLUSTER_FILE = "cluster.json"
LOCK_FILE = "cluster.lock"  # held (flock) by the process that runs the cluster; holds its pid
RESTART_BACKOFF_S_FIRST = 1.0  # a child that died is restarted after this, doubling ...
RESTART_BACKOFF_S_MAX = 60.0  # ... up to this while it keeps dying
RESTART_STABLE_S = 60.0  # a child up this long has its backoff reset
# every node and coordinator serves Prometheus metrics on a free loopback port (cluster.json
# names it); routers serve /metrics on their HTTP port
METRICS_ARGS = ["--metrics-listen", "127.0.0.1:0"]


class AlreadyRunning(RuntimeError):
    """Another process runs a cluster from this data dir."""


@dataclass(slots=True)
class _Restarts:
    backoff_s: float = RESTART_BACKOFF_S_FIRST
    next_at: float = 0.0
    started_at: float = 0.0
    count: int = 0


class LocalCluster:
    def __init__(
        self,
        data_dir: str | Path,
        nodes: int = 3,
        coordinators: int = 1,
        routers: int = 1,
        router_port: int = 0,
        lease_ttl_s: int = 3,
        node_args: list[str] | None = None,
        coordinator_args: list[str] | None = None,
        etcd_members: int = 1,
        node_advertise: Callable[[str], str] | None = None,
        auth: bool = True,
        http_port: int | None = 0,
        router_args: list[str] | None = None,
    ) -> None:
        """auth: secure the cluster (cluster secret, etcd auth, admin key; DESIGN §11); False is
        `quartz up --no-auth`. http_port: the first router's HTTP gateway port (0: any free port;
        None: no gateway)."""
        self.data_dir = Path(data_dir).resolve()
        self.n_nodes, self.n_coordinators, self.n_routers = nodes, coordinators, routers
        self.router_port, self.lease_ttl_s = router_port, lease_ttl_s
        self.node_args = node_args or []
        self.coordinator_args = coordinator_args or []
        self.etcd_members = etcd_members
        # node id -> the address it advertises (chaos runs put a fault-injecting front there)
        self.node_advertise = node_advertise
        self.etcd: EtcdProcess | None = None
        self.coordinators: list[CoordinatorProcess] = []
        self.nodes: list[NodeProcess] = []
        self.routers: list[RouterProcess] = []
        self.auth, self.http_port, self.router_args = auth, http_port, router_args or []
        self.new_admin_key: str | None = None  # set when this start created the admin key
        self.network = None  # the chaos runner's fault-injecting network, when it put one in front
        self._lock_fd: int | None = None
        self._restarts: dict[str, _Restarts] = {}

    def _lock(self) -> None:
        """Refuse early when another process runs a cluster from this data dir (it once got as far
        as RocksDB's "LOCK: Resource temporarily unavailable", after writing into the running
        cluster's etcd log)."""
        path = self.data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"a cluster is already running from {self.data_dir} (pid {pid}); stop it first, "
                "or use another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def supervise(self, now: float | None = None) -> list[str]:
        """Restart every child that died, with a backoff per child (doubling from
        RESTART_BACKOFF_S_FIRST to RESTART_BACKOFF_S_MAX while it keeps dying); returns what it
        did, one line per event, for `quartz up` to print. A killed node comes back on its data."""
        now = time.monotonic() if now is None else now
        events = []
        for child in self.processes():
            state = self._restarts.setdefault(child.name, _Restarts(started_at=now))
            if child.alive():
                if now - state.started_at >= RESTART_STABLE_S:
                    state.backoff_s = RESTART_BACKOFF_S_FIRST
                continue
            if state.next_at == 0.0:
                code = child.proc.returncode if child.proc is not None else None
                state.next_at = now + state.backoff_s
                events.append(
                    f"{child.role} {child.name} exited (code {code}); restart in {state.backoff_s:.0f} s"
                )
                continue
            if now < state.next_at:
                continue
            try:
                if isinstance(child, EtcdProcess) and child.initial_cluster:
                    child.restart_member()  # a member of a multi-member etcd rejoins its cluster
                else:
                    child.start()
            except Exception as exc:
                events.append(f"{child.role} {child.name} did not restart: {str(exc).splitlines()[0]}")
            else:
                state.count += 1
                events.append(f"{child.role} {child.name} restarted (pid {child.pid}, restart {state.count})")
                self.write_info()
            state.started_at, state.next_at = time.monotonic(), 0.0
            state.backoff_s = min(state.backoff_s * 2, RESTART_BACKOFF_S_MAX)
        return events

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def router_address(self) -> str:
        return self.routers[0].address

    @property
    def http_address(self) -> str | None:
        return self.routers[0].http_address if self.routers else None

    @property
    def cluster_dir(self) -> Path | None:
        """Where the cluster's credentials are (passed to every child), or None without auth."""
        return self.data_dir if self.auth else None

    @property
    def admin_key_file(self) -> Path | None:
        return self.data_dir / ADMIN_KEY_FILE if self.auth else None

    @property
    def admin_key(self) -> str | None:
        """The bootstrap admin key (None without auth): what tests, the demo and harnesses use."""
        return self.admin_key_file.read_text().strip() if self.auth else None

    def member_identity(self, name: str):
        """A MemberIdentity (member token) to call this cluster's nodes with, as a member named
        `name`; None without auth."""
        from quartz_cluster.auth.cluster import ClusterCredentials, MemberIdentity

        return MemberIdentity(ClusterCredentials.load(self.data_dir), name) if self.auth else None

    def client(self, router: int = 0, **kwargs):
        """A QuartzClient to a router of this cluster with the admin key."""
        from quartz_cluster.client import QuartzClient

        return QuartzClient(self.routers[router].address, api_key=self.admin_key, **kwargs)

    def _previous_router_ports(self) -> list[tuple[int, int | None]]:
        """(gRPC port, HTTP port) of each router of the last run from this data dir."""
        f = self.data_dir / CLUSTER_FILE
        if not f.exists():
            return []
        with contextlib.suppress(Exception):
            info = orjson.loads(f.read_bytes())
            return [
                (
                    int(p["address"].rsplit(":", 1)[1]),
                    int(p["http"].rsplit(":", 1)[1]) if p.get("http") else None,
                )
                for p in info["processes"]
                if p["role"] == "router"
            ]
        return []

    def start(self) -> LocalCluster:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            if self.etcd_members > 1:
                self.etcd = EtcdCluster(self.data_dir / "etcd", self.logs, self.etcd_members).start()
            else:
                self.etcd = EtcdProcess("etcd", self.data_dir / "etcd", self.logs / "etcd.log").start()
            endpoint = self.etcd.endpoint
            if self.auth:
                from quartz_cluster.auth.bootstrap import bootstrap

                self.new_admin_key = bootstrap(endpoint, self.data_dir)
            for i in range(self.n_coordinators):
                c = CoordinatorProcess(
                    f"c{i + 1}",
                    endpoint,
                    self.logs / f"c{i + 1}.log",
                    self.lease_ttl_s,
                    [*METRICS_ARGS, *self.coordinator_args],
                    cluster_dir=self.cluster_dir,
                )
                self.coordinators.append(c.start())
            for i in range(self.n_nodes):
                self.nodes.append(self.make_node(f"n{i + 1}").start())
            previous = self._previous_router_ports()
            for i in range(self.n_routers):
                port, http = previous[i] if i < len(previous) else (0, None)
                if i == 0 and self.router_port:
                    port = self.router_port
                if i == 0 and self.http_port:
                    http = self.http_port
                r = RouterProcess(
                    f"r{i + 1}",
                    endpoint,
                    self.data_dir / f"router-r{i + 1}.json",
                    self.logs / f"r{i + 1}.log",
                    listen=f"127.0.0.1:{port}",
                    cluster_dir=self.cluster_dir,
                    http_listen=None if self.http_port is None else f"127.0.0.1:{http or 0}",
                    extra_args=self.router_args,
                )
                self.routers.append(r.start())
        except BaseException:
            self.stop()
            raise
        self.write_info()
        return self

    def make_node(self, node_id: str) -> NodeProcess:
        return NodeProcess(
            node_id,
            self.data_dir / "nodes" / node_id,
            self.logs / f"{node_id}.log",
            etcd=self.etcd.endpoint,
            extra_args=[
                "--lease-ttl",
                str(self.lease_ttl_s),
                *METRICS_ARGS,
                *self._memory_args(),
                *self.node_args,
            ],
            advertise=self.node_advertise(node_id) if self.node_advertise else None,
            cluster_dir=self.cluster_dir,
        )

    def _memory_args(self) -> list[str]:
        """The nodes share this machine: each gets its share of the memory budget, so that together
        they stay within it (admission control refuses what would go beyond)."""
        if any(a.startswith("--memory-max") for a in self.node_args):
            return []
        from quartz_cluster import limits
        from quartz_cluster.node.memory import available_bytes

        share = int(available_bytes() * limits.NODE_MEMORY_FRACTION / max(1, self.n_nodes))
        return ["--memory-max", str(share)]

    def etcd_processes(self) -> list[EtcdProcess]:
        if isinstance(self.etcd, EtcdCluster):
            return self.etcd.members
        return [self.etcd] if self.etcd is not None else []

    def processes(self) -> list[Child]:
        return [*self.etcd_processes(), *self.coordinators, *self.nodes, *self.routers]

    def write_info(self) -> None:
        info = {
            "router": self.routers[0].address if self.routers else None,
            "http": self.http_address,
            "routers": [r.address for r in self.routers],
            "auth": self.auth,
            "admin_key_file": str(self.admin_key_file) if self.admin_key_file else None,
            "etcd": [m.endpoint for m in self.etcd_processes()],
            "data_dir": str(self.data_dir),
            "processes": [
                {
                    "role": p.role,
                    "id": p.name,
                    "pid": p.pid,
                    "address": p.address,
                    "log": str(p.log_path),
                    **({"http": p.http_address} if getattr(p, "http_address", None) else {}),
                    **({"metrics": p.metrics_address} if getattr(p, "metrics_address", None) else {}),
                }
                for p in self.processes()
            ],
        }
        tmp = self.data_dir / (CLUSTER_FILE + ".tmp")
        tmp.write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.data_dir / CLUSTER_FILE)

    def stop(self) -> None:
        """Graceful stop in dependency order: routers, nodes, coordinators, etcd last."""
        for p in [*self.routers, *self.nodes, *self.coordinators, self.etcd]:
            if p is not None:
                try:
                    p.stop()
                except Exception:
                    p.kill()
        self._unlock()

    def kill(self) -> None:
        for p in self.processes():
            with contextlib.suppress(Exception):
                p.kill()
        self._unlock()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_cluster_file(data_dir: str | Path) -> dict:
    path = Path(data_dir) / CLUSTER_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is a cluster running from this data dir (quartz up)?")
    return orjson.loads(path.read_bytes())
