"""TLS for clients (issue 13): a router started with --tls-cert/--tls-key serves gRPC and HTTP
over TLS only; the SDK connects with ca_cert=, and plaintext is refused."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest

from quartz_cluster.client import QuartzClient
from quartz_cluster.errors import Unavailable
from quartz_cluster.procs import RouterProcess

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


@pytest.fixture(scope="module")
def tls_router(tmp_path_factory):
    from quartz_cluster.cluster import LocalCluster

    base = tmp_path_factory.mktemp("tls")
    cert, key = base / "router.crt", base / "router.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    cluster = LocalCluster(base / "cluster", nodes=1)
    cluster.start()
    router = RouterProcess(
        "rtls",
        cluster.etcd.endpoint,
        base / "rtls.json",
        base / "rtls.log",
        cluster_dir=cluster.cluster_dir,
        extra_args=["--tls-cert", str(cert), "--tls-key", str(key)],
        tls_ca=cert,
    )
    router.start()
    yield cluster, router, cert
    router.kill()
    cluster.kill()


def test_grpc_over_tls_with_the_ca_and_plaintext_refused(tls_router):
    cluster, router, cert = tls_router
    with QuartzClient(router.address, api_key=cluster.admin_key, ca_cert=str(cert), timeout=30) as c:
        c.create_collection("secure", dim=2, shards=1, replication_factor=1)
        assert [i.name for i in c.list_collections()] == ["secure"]
        assert c.whoami().role == "admin"
    with (
        pytest.raises(Unavailable),
        QuartzClient(router.address, api_key=cluster.admin_key, timeout=3) as plain,
    ):
        plain.list_collections()


def test_http_over_tls_with_the_ca_and_plaintext_refused(tls_router):
    cluster, router, cert = tls_router
    req = urllib.request.Request(
        f"https://{router.http_address}/v1/collections",
        headers={"authorization": f"Bearer {cluster.admin_key}"},
    )
    context = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(req, context=context, timeout=30) as r:
        assert r.status == 200 and "collections" in json.loads(r.read())
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://{router.http_address}/healthz", timeout=5).read()
