"""Child processes of QuartzDB roles (node today; router, coordinator, etcd later), for
`quartz demo` / `quartz up`, tests and benchmarks. A child binds port 0 and reports its
address in DATA_DIR/node.json, so there is no race on picking free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class ProcessFailed(RuntimeError):
    pass


def wait_serving(address: str, timeout_s: float) -> None:
    """Block until the gRPC health service at `address` reports SERVING."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
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


class NodeProcess:
    def __init__(
        self,
        node_id: str,
        data_dir: str | Path,
        log_path: str | Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.node_id = node_id
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / f"{node_id}.log"
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.address: str | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> NodeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        info = self.data_dir / "node.json"
        info.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "quartz_cluster",
            "node",
            "--id",
            self.node_id,
            "--data-dir",
            str(self.data_dir),
            "--listen",
            "127.0.0.1:0",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise ProcessFailed(
                    f"node {self.node_id} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if info.exists():
                meta = orjson.loads(info.read_bytes())
                if meta["pid"] == self.proc.pid:
                    self.address = meta["address"]
                    break
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"node {self.node_id} did not start:\n{self.log_tail()}")
            time.sleep(0.02)
        wait_serving(self.address, max(1.0, deadline - time.monotonic()))
        return self

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
