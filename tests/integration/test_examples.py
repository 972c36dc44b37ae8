"""The examples under examples/ (what scripts/examples.sh runs), each against a live cluster as a
user runs it: a subprocess with QUARTZ_ROUTER / QUARTZ_HTTP / QUARTZ_API_KEY in its environment.
The JavaScript ones skip when node or examples/javascript/node_modules (`npm ci`) is missing."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
JS = EXAMPLES / "javascript"
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One 1-node cluster with the HTTP gateway, shared by the examples (each uses its own
    collection and drops it)."""
    from quartz_cluster.cluster import LocalCluster

    c = LocalCluster(tmp_path_factory.mktemp("examples"), nodes=1, http_port=0)
    c.start()
    yield c
    try:
        c.stop()
    finally:
        with contextlib.suppress(Exception):
            c.kill()  # whatever stop() left running


def run_example(cluster, *command: str) -> None:
    env = {
        **os.environ,
        "QUARTZ_ROUTER": cluster.router_address,
        "QUARTZ_HTTP": cluster.http_address,
        "QUARTZ_API_KEY": cluster.admin_key,
    }
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(command)} did not finish in {TIMEOUT_S} s:\n{exc.stdout}\n{exc.stderr}")
    output = f"--- stdout:\n{proc.stdout}\n--- stderr:\n{proc.stderr}"
    assert proc.returncode == 0, f"{' '.join(command)} exited {proc.returncode}\n{output}"
    assert "OK:" in proc.stdout, proc.stdout


def missing(*tools: str) -> str | None:
    """Why an example cannot run here (a tool not on PATH), or None."""
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


def node_missing() -> str | None:
    if reason := missing("node"):
        return reason
    if not (JS / "node_modules").is_dir():
        return f"{JS / 'node_modules'} missing: run `npm ci` in examples/javascript"
    return None


# skip marks, not pytest.skip() in the test: a skipped example does not start the cluster
CURL_MISSING = missing("bash", "curl", "python3")
NODE_MISSING = node_missing()
needs_curl = pytest.mark.skipif(CURL_MISSING is not None, reason=str(CURL_MISSING))
needs_node = pytest.mark.skipif(NODE_MISSING is not None, reason=str(NODE_MISSING))


@needs_curl
def test_curl_quickstart(cluster):
    run_example(cluster, "bash", str(EXAMPLES / "curl" / "quickstart.sh"))


def test_python_quickstart(cluster):
    run_example(cluster, sys.executable, str(EXAMPLES / "python" / "quickstart.py"))


@needs_node
def test_javascript_http_quickstart(cluster):
    run_example(cluster, "node", str(JS / "http_quickstart.mjs"))


@needs_node
def test_javascript_grpc_quickstart(cluster):
    run_example(cluster, "node", str(JS / "grpc_quickstart.mjs"))
