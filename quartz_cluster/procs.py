"""Child processes of every role (etcd, coordinator, node, router) for `quartz up`, `quartz
demo`, tests and benchmarks. gRPC children bind port 0 (or a given port) and report their
address in an info file once serving, so nothing races to pick free ports; etcd, which cannot
bind port 0, gets ports probed free and keeps them in its data dir across restarts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc

READY_TIMEOUT_S = 60.0
ETCD_AUTH_TOKEN_TTL_S = 3600
STOP_TIMEOUT_S = 30.0
ETCD_START_ATTEMPTS = 5


class ProcessFailed(RuntimeError):
    pass


def wait_serving(address: str, timeout_s: float, tls_ca: bytes | None = None) -> None:
    """Block until the gRPC health service at `address` reports SERVING (over TLS, trusting
    `tls_ca`, when given)."""
    deadline = time.monotonic() + timeout_s
    channel = (
        grpc.secure_channel(address, grpc.ssl_channel_credentials(tls_ca))
        if tls_ca
        else grpc.insecure_channel(address)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} not serving after {timeout_s}s")
            time.sleep(0.05)


def auth_args(cluster_dir: str | Path | None) -> list[str]:
    """A child's credentials: the cluster dir holding the secret, or --no-auth without one."""
    return ["--cluster-dir", str(cluster_dir)] if cluster_dir else ["--no-auth"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quartz_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "quartz_cluster", *args]


class Child:
    """A child process with a log file. Subclasses say how to start it and when it is ready."""

    role = "child"

    def __init__(self, name: str, log_path: str | Path) -> None:
        self.name = name
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.address: str | None = None
        self.metrics_address: str | None = None  # where it serves Prometheus /metrics, if it does

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        raise NotImplementedError

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # Own process group: a Ctrl-C in `quartz up` reaches the parent, which stops
            # children in order, instead of every child at once.
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> Child:
        self._spawn()
        self._wait_ready(time.monotonic() + timeout_s)
        return self

    def _wait_ready(self, deadline: float) -> None:
        pass

    def _check_alive(self, deadline: float) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ProcessFailed(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        if time.monotonic() > deadline:
            self.kill()
            raise TimeoutError(f"{self.name} did not become ready:\n{self.log_tail()}")

    def _wait_info_file(self, path: Path, deadline: float) -> dict:
        while True:
            self._check_alive(deadline)
            if path.exists():
                meta = orjson.loads(path.read_bytes())
                if meta.get("pid") == self.proc.pid:
                    return meta
            time.sleep(0.02)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (graceful) and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


class NodeProcess(Child):
    role = "node"

    def __init__(
        self,
        node_id: str,
        data_dir: str | Path,
        log_path: str | Path | None = None,
        extra_args: list[str] | None = None,
        etcd: str | None = None,
        listen: str = "127.0.0.1:0",
        advertise: str | None = None,
        cluster_dir: str | Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.cluster_dir = cluster_dir
        super().__init__(node_id, log_path or self.data_dir.parent / f"{node_id}.log")
        self.node_id, self.extra_args, self.etcd, self.listen = node_id, extra_args or [], etcd, listen
        self.advertise = advertise
        self.listen_address: str | None = None  # where it is bound (address: where others reach it)

    def command(self) -> list[str]:
        cmd = quartz_cmd(
            "node",
            "--id",
            self.node_id,
            "--data-dir",
            str(self.data_dir),
            "--listen",
            self.listen,
            *self.extra_args,
        )
        if self.advertise:
            cmd += ["--advertise", self.advertise]
        return cmd + (["--etcd", self.etcd] if self.etcd else []) + auth_args(self.cluster_dir)

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "node.json").unlink(missing_ok=True)
        super()._spawn()

    def _wait_ready(self, deadline: float) -> None:
        info = self._wait_info_file(self.data_dir / "node.json", deadline)
        self.address, self.listen_address = info["address"], info["listen"]
        self.metrics_address = info.get("metrics")
        wait_serving(self.listen_address, max(1.0, deadline - time.monotonic()))


class RouterProcess(Child):
    role = "router"

    def __init__(
        self,
        name: str,
        etcd: str,
        info_file: str | Path,
        log_path: str | Path,
        listen: str = "127.0.0.1:0",
        cluster_dir: str | Path | None = None,
        http_listen: str | None = "127.0.0.1:0",
        extra_args: list[str] | None = None,
        tls_ca: str | Path | None = None,
    ) -> None:
        """tls_ca: the CA of the certificate the router serves (extra_args gives --tls-cert and
        --tls-key): readiness is probed over TLS."""
        super().__init__(name, log_path)
        self.etcd, self.info_file, self.listen = etcd, Path(info_file), listen
        self.cluster_dir, self.http_listen, self.extra_args = cluster_dir, http_listen, extra_args or []
        self.http_address: str | None = None
        self.tls_ca = tls_ca

    def command(self) -> list[str]:
        http = ["--http-listen", self.http_listen] if self.http_listen else []
        return quartz_cmd(
            "router",
            "--id",
            self.name,
            "--etcd",
            self.etcd,
            "--listen",
            self.listen,
            "--info-file",
            str(self.info_file),
            *http,
            *auth_args(self.cluster_dir),
            *self.extra_args,
        )

    def _spawn(self) -> None:
        self.info_file.unlink(missing_ok=True)
        super()._spawn()

    def _wait_ready(self, deadline: float) -> None:
        info = self._wait_info_file(self.info_file, deadline)
        self.address, self.http_address = info["address"], info.get("http")
        self.metrics_address = self.http_address  # /metrics on the HTTP gateway
        self.listen = self.address  # a restart comes back on the same addresses
        if self.http_address:
            self.http_listen = self.http_address
        ca = Path(self.tls_ca).read_bytes() if self.tls_ca else None
        wait_serving(self.address, max(1.0, deadline - time.monotonic()), ca)


class CoordinatorProcess(Child):
    role = "coordinator"

    def __init__(
        self,
        name: str,
        etcd: str,
        log_path: str | Path,
        lease_ttl_s: int = 3,
        extra_args: list[str] | None = None,
        cluster_dir: str | Path | None = None,
    ) -> None:
        super().__init__(name, log_path)
        self.etcd, self.lease_ttl_s, self.extra_args = etcd, lease_ttl_s, extra_args or []
        self.cluster_dir = cluster_dir
        self.info_file = Path(log_path).with_suffix(".json")

    def command(self) -> list[str]:
        return quartz_cmd(
            "coordinator",
            "--id",
            self.name,
            "--etcd",
            self.etcd,
            "--lease-ttl",
            str(self.lease_ttl_s),
            "--info-file",
            str(self.info_file),
            *auth_args(self.cluster_dir),
            *self.extra_args,
        )

    def _spawn(self) -> None:
        self.info_file.unlink(missing_ok=True)
        super()._spawn()

    def _wait_ready(self, deadline: float) -> None:
        info = self._wait_info_file(self.info_file, deadline)
        self.address, self.metrics_address = info["address"], info.get("metrics")
        wait_serving(self.address, max(1.0, deadline - time.monotonic()))


class EtcdProcess(Child):
    """Debian's etcd on loopback, with its own data dir. Its ports are probed free at first start
    and kept in DATA_DIR/ports.json, because etcd records its peer URL in its data."""

    role = "etcd"

    def __init__(self, name: str, data_dir: str | Path, log_path: str | Path) -> None:
        super().__init__(name, log_path)
        self.data_dir = Path(data_dir)
        self.client_port = self.peer_port = 0
        self.initial_cluster: str | None = None  # "name=peer-url,..." when part of an EtcdCluster

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start_member(self) -> None:
        """Spawn with the ports and initial cluster already set (EtcdCluster waits for quorum)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._spawn()

    def restart_member(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        self._spawn()
        self._wait_ready(time.monotonic() + timeout_s)

    def command(self) -> list[str]:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            os.environ.get("QUARTZ_ETCD_BIN", "etcd"),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir / "data"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            self.initial_cluster or f"{self.name}={peer}",
            "--initial-cluster-state",
            "new",
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "1h",
            "--quota-backend-bytes",
            str(2 * 2**30),
            "--log-level",
            "warn",
            # auth tokens (`quartz up` turns etcd's auth on) outlive an idle hour; clients
            # authenticate again when etcd restarts (meta/store.py)
            "--auth-token-ttl",
            str(ETCD_AUTH_TOKEN_TTL_S),
        ]

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> EtcdProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports_file = self.data_dir / "ports.json"
        for attempt in range(ETCD_START_ATTEMPTS):
            if ports_file.exists() and attempt == 0:
                ports = orjson.loads(ports_file.read_bytes())
                self.client_port, self.peer_port = ports["client"], ports["peer"]
            else:  # a probed port can be taken between the probe and etcd's bind: probe again
                self.client_port, self.peer_port = free_port(), free_port()
            self._spawn()
            try:
                self._wait_ready(time.monotonic() + timeout_s)
            except ProcessFailed:
                if "address already in use" in self.log_tail(50) and attempt + 1 < ETCD_START_ATTEMPTS:
                    continue
                raise
            ports_file.write_bytes(orjson.dumps({"client": self.client_port, "peer": self.peer_port}))
            self.address = self.endpoint
            return self
        raise ProcessFailed("etcd could not bind free ports")

    def _wait_ready(self, deadline: float) -> None:
        url = f"http://{self.endpoint}/health"
        while True:
            self._check_alive(deadline)
            with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=1) as resp:
                if orjson.loads(resp.read()).get("health") == "true":
                    return
            time.sleep(0.05)


class EtcdCluster:
    """Several etcd members on loopback forming one cluster (3 for chaos runs: one member can be
    lost without losing quorum). Ports are probed once and kept in DATA_DIR/ports.json."""

    role = "etcd"

    def __init__(self, data_dir: str | Path, log_dir: str | Path, members: int = 3) -> None:
        self.data_dir, self.log_dir, self.n = Path(data_dir), Path(log_dir), members
        self.members: list[EtcdProcess] = []

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def endpoint(self) -> str:
        return ",".join(self.endpoints)

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> EtcdCluster:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports_file = self.data_dir / "ports.json"
        names = [f"etcd{i + 1}" for i in range(self.n)]
        if ports_file.exists():
            ports = orjson.loads(ports_file.read_bytes())
        else:
            ports = {name: {"client": free_port(), "peer": free_port()} for name in names}
            ports_file.write_bytes(orjson.dumps(ports))
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[n]['peer']}" for n in names)
        self.members = []
        for name in names:
            m = EtcdProcess(name, self.data_dir / name, self.log_dir / f"{name}.log")
            m.client_port, m.peer_port = ports[name]["client"], ports[name]["peer"]
            m.initial_cluster = initial
            self.members.append(m)
        try:
            for m in self.members:  # all at once: a member is healthy only once a quorum is up
                m.start_member()
            deadline = time.monotonic() + timeout_s
            for m in self.members:
                m._wait_ready(deadline)
                m.address = m.endpoint
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self) -> None:
        for m in self.members:
            try:
                m.stop()
            except Exception:
                m.kill()

    def kill(self) -> None:
        for m in self.members:
            with contextlib.suppress(Exception):
                m.kill()
