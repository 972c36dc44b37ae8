"""The admin dashboard (/dashboard) in a real browser against a live cluster: headless Chromium
(Debian's `chromium` and `chromium-driver`, driven by Selenium) signs in with the bootstrap admin
key the way a user would; each tab renders real data from the cluster; a key created in the UI
works over HTTP and, once revoked in the UI, is refused (401); a tenant-admin sees only its
tenant. Every wait is an explicit wait on an element or its text (WAIT_S bounds each one: a
deadline, not a speed claim).

Screenshots of every tab go to the test's temp dir; with QUARTZ_DASHBOARD_SCREENSHOTS=<dir>
(docs/img for the docs) they are copied there too."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401

    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER and HAVE_SELENIUM),
    reason="the browser test needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver) and selenium (pip install selenium)",
)

WAIT_S = 60.0  # a bound on each wait for the page (a deadline, not a speed claim)
WIDTH, HEIGHT = 1360, 900
SHOT_HEIGHT_MAX = 3000  # pixels of a screenshot, at most
DIM = 8


def http(cluster, method: str, path: str, key: str | None, body=None) -> tuple[int, dict]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{cluster.http_address}{path}", data, headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def ok(cluster, method: str, path: str, key: str, body=None) -> dict:
    status, out = http(cluster, method, path, key, body)
    assert status in (200, 201), (method, path, status, out)
    assert not out.get("errors"), (method, path, out)  # a write: every point written
    return out


def upsert(cluster, key: str, collection: str, pts: list[dict]) -> None:
    """Written once the primary has them: a new collection's followers may still be catching up
    (its shards are ready when their primary is), which a majority write would have to wait for."""
    body = {"points": pts, "write_consistency": "one"}
    ok(cluster, "PUT", f"/v1/collections/{collection}/points", key, body)


def points(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, DIM)).astype("f4")
    return [
        {"id": f"p{i}", "vector": vecs[i].tolist(), "payload": {"color": "red" if i % 2 else "blue", "n": i}}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from quartz_cluster.cluster import LocalCluster

    saved = {k: os.environ.pop(k, None) for k in ("QUARTZ_API_KEY", "QUARTZ_DATA_DIR")}
    c = LocalCluster(tmp_path_factory.mktemp("dashboard"), nodes=2, node_args=["--memory-max", "1G"])
    try:
        c.start()
        yield c
    finally:
        c.kill()
        for k, v in saved.items():
            if v is not None:
                os.environ[k] = v


@pytest.fixture(scope="module")
def data(cluster):
    """Two tenants with a tenant-admin key each, their collections and points; the admin's own
    collection; searches over HTTP and gRPC (so the latency histograms have something)."""
    admin = cluster.admin_key
    keys = {}
    for tenant in ("acme", "globex"):
        ok(cluster, "POST", "/v1/admin/tenants", admin, {"name": tenant, "plan": "paid"})
        created = ok(
            cluster,
            "POST",
            "/v1/admin/keys",
            admin,
            {"tenant": tenant, "role": "tenant-admin", "description": f"{tenant} admin"},
        )
        keys[tenant] = created["key"]
    acme, globex = keys["acme"], keys["globex"]
    ok(cluster, "POST", "/v1/collections", acme, {"name": "acme-products", "dim": DIM, "shards": 2})
    upsert(cluster, acme, "acme-products", points(40, 1))
    ok(cluster, "POST", "/v1/collections", globex, {"name": "globex-secret", "dim": DIM, "shards": 1})
    upsert(cluster, globex, "globex-secret", points(5, 2))
    ok(cluster, "POST", "/v1/admin/keys", globex, {"role": "read-only", "description": "globex-only-key"})
    ok(cluster, "POST", "/v1/collections", admin, {"name": "docs", "dim": DIM, "shards": 2})
    upsert(cluster, admin, "docs", points(20, 3))
    for i in range(10):
        ok(
            cluster,
            "POST",
            "/v1/collections/acme-products/search",
            acme,
            {"vector": points(1, 10 + i)[0]["vector"]},
        )
    client = cluster.client(timeout=30)
    try:
        for i in range(10):
            client.search("docs", np.random.default_rng(i).normal(size=DIM).astype("f4"), k=3)
    finally:
        client.close()
    return {"admin": admin, "acme": acme, "globex": globex}


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        with contextlib.suppress(Exception):
            driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Where screenshots go: the test's temp dir, copied to $QUARTZ_DASHBOARD_SCREENSHOTS."""
    out = tmp_path_factory.mktemp("screenshots")
    yield out
    target = os.environ.get("QUARTZ_DASHBOARD_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for png in sorted(out.glob("dashboard-*.png")):
            shutil.copy(png, Path(target) / png.name)


# ------------------------------------------------------------------ page helpers


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def wait(driver, what: str, check):
    """Wait until check(driver) is truthy; its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, ignored_exceptions=(Exception,)).until(check, message=what)


def text_of(driver, element_id: str) -> str:
    """An element's rendered text, read in one script (see table_rows)."""
    return driver.execute_script("return document.getElementById(arguments[0]).innerText.trim()", element_id)


def wait_text(driver, element_id: str, text: str) -> str:
    """Wait until the element's text holds `text`; its whole text."""

    def check(d):
        shown = text_of(d, element_id)
        return shown if text in shown else None

    return wait(driver, f"{text!r} in #{element_id}", check)


def table_rows(driver, element_id: str) -> list[list[str]]:
    """The cells' text of a table's body, read in one script (the page may re-render a polled
    table at any time: reading it cell by cell could straddle two renderings)."""
    return driver.execute_script(
        "const t = document.getElementById(arguments[0]);"
        "return [...t.tBodies[0].rows].map(tr => [...tr.cells].map(td => td.textContent.trim()));",
        element_id,
    )


def tab(driver, name: str) -> None:
    by_id(driver, f"tab-{name}").click()
    wait(driver, f"the {name} tab shown", lambda d: by_id(d, f"page-{name}").is_displayed())


def screenshot(driver, shots: Path, name: str) -> None:
    """The whole page, beyond the window (Chrome DevTools: Page.captureScreenshot)."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {
        "x": 0,
        "y": 0,
        "width": size["width"],
        "height": min(size["height"], SHOT_HEIGHT_MAX),
        "scale": 1,
    }
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    (shots / f"dashboard-{name}.png").write_bytes(base64.b64decode(shot["data"]))


def sign_in(driver, cluster, key: str) -> None:
    driver.get(f"http://{cluster.http_address}/dashboard")
    wait(
        driver,
        "the page loaded",
        lambda d: by_id(d, "signin").is_displayed() or by_id(d, "app").is_displayed(),
    )
    if by_id(driver, "app").is_displayed():
        by_id(driver, "signout").click()
        wait(driver, "the sign-in form", lambda d: by_id(d, "signin").is_displayed())
    field = by_id(driver, "apikey")
    field.clear()
    field.send_keys(key)
    by_id(driver, "signin-button").click()
    wait(driver, "signed in", lambda d: by_id(d, "app").is_displayed())


def select(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    wait(
        driver,
        f"option {value!r} in #{element_id}",
        lambda d: any(o.get_attribute("value") == value for o in Select(by_id(d, element_id)).options),
    )
    Select(by_id(driver, element_id)).select_by_value(value)


# ------------------------------------------------------------------ the tests


def test_the_page_is_served_with_a_strict_csp(cluster):
    with urllib.request.urlopen(f"http://{cluster.http_address}/dashboard", timeout=30) as r:
        csp = r.headers["content-security-policy"]
        page = r.read()
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert b"/dashboard/static/app.js" in page


def test_a_bad_key_shows_the_apis_own_message(cluster, browser, shots):
    bad = "qz_" + "0" * 16 + "_" + "0" * 32
    status, problem = http(cluster, "GET", "/v1/whoami", bad)
    assert status == 401
    browser.get(f"http://{cluster.http_address}/dashboard")
    wait(browser, "the sign-in form", lambda d: by_id(d, "signin").is_displayed())
    by_id(browser, "apikey").send_keys(bad)
    by_id(browser, "signin-button").click()
    assert wait_text(browser, "signin-error", problem["detail"]) == problem["detail"]
    assert not by_id(browser, "app").is_displayed()
    screenshot(browser, shots, "signin")


def test_cluster_tab_shows_nodes_shards_lag_and_every_tenants_collections(cluster, data, browser, shots):
    sign_in(browser, cluster, data["admin"])
    wait_text(browser, "identity", "admin")
    tab(browser, "cluster")

    def settled(d):
        """Both nodes reachable, every replica reported (the page polls: a node slow to answer
        one poll shows as unreachable until the next)."""
        nodes = {r[0]: r for r in table_rows(d, "nodes-table")}
        shards = table_rows(d, "shards-table")
        done = (
            set(nodes) == {"n1", "n2"}
            and all(r[2] == "yes" and r[3] == "yes" for r in nodes.values())
            and len(shards) == 5
            and all("unreachable" not in r[6] and "missing" not in r[6] for r in shards)
        )
        return (nodes, shards) if done else None

    nodes, shards = wait(browser, "every node reachable, every replica reported", settled)
    assert sum(int(r[5]) for r in nodes.values()) == (2 + 2 + 1) * 2  # replicas: 5 shards x RF 2
    assert sum(int(r[6]) for r in nodes.values()) == 5  # a primary each
    assert sorted(r[0] for r in shards) == ["acme/acme-products"] * 2 + ["docs"] * 2 + [
        "globex/globex-secret"
    ]
    assert sorted(r[1] for r in shards if r[0] == "docs") == ["0", "1"]
    for r in shards:  # lag column: each replica with its lag in log entries
        assert re.search(r"n1: \d+", r[6]) and re.search(r"n2: \d+", r[6]), r
    collections = {(r[0], r[1]): r for r in table_rows(browser, "all-collections-table")}
    assert collections[("acme", "acme-products")][6] == "40"
    assert collections[("default", "docs")][6] == "20"
    assert ("globex", "globex-secret") in collections
    screenshot(browser, shots, "cluster")


def test_collections_tab_lists_the_tenants_collections_with_points(cluster, data, browser, shots):
    tab(browser, "collections")
    wait(
        browser,
        "docs counted",
        lambda d: [r for r in table_rows(d, "collections-table") if r[0] == "docs" and r[5] == "20"],
    )
    [docs] = [r for r in table_rows(browser, "collections-table") if r[0] == "docs"]
    assert docs[1:5] == [str(DIM), "cosine", "2", "2"]
    assert {r[0] for r in table_rows(browser, "collections-table")} == {"docs"}  # the admin's tenant
    screenshot(browser, shots, "collections")


def test_usage_tab_shows_a_tenants_usage_and_invoice(cluster, data, browser, shots):
    tab(browser, "usage")
    select(browser, "usage-tenant", "acme")
    wait_text(browser, "usage-vectors-written", "40")  # shipped from the router's journal
    ops = wait(
        browser,
        "acme's calls counted",  # the tab reloads every few seconds
        lambda d: (o := {r[0]: r[1] for r in table_rows(d, "usage-ops-table")}).get("search") == "10" and o,
    )
    assert ops["upsert"] == "1" and ops["create_collection"] == "1"
    assert int(text_of(browser, "usage-calls")) >= 12
    wait(browser, "the invoice", lambda d: by_id(d, "invoice-total").text.strip())
    assert len(table_rows(browser, "invoice-table")) >= 1
    assert "acme" in by_id(browser, "invoice-month").text
    screenshot(browser, shots, "usage")


def test_latency_tab_charts_the_searches(cluster, data, browser, shots):
    from selenium.webdriver.common.by import By

    tab(browser, "latency")
    wait_text(browser, "latency-table", "POST /v1/collections/{name}/search")
    rows = {(r[0], r[1]): r for r in table_rows(browser, "latency-table")}
    http_search = rows[("http", "POST /v1/collections/{name}/search")]
    assert int(http_search[2]) >= 10 and all(float(x.replace(",", "")) > 0 for x in http_search[5:8])
    assert ("grpc", "Search") in rows and int(rows[("grpc", "Search")][2]) >= 10
    # the chart is built by polling: a line once two readings are in
    wait(
        browser, "a line in the chart", lambda d: d.find_elements(By.CSS_SELECTOR, "#latency-chart polyline")
    )
    assert "search" in by_id(browser, "latency-op").get_attribute("value").lower()
    screenshot(browser, shots, "latency")


def test_playground_runs_a_search_and_shows_the_hits(cluster, data, browser, shots):
    tab(browser, "playground")
    select(browser, "pg-collection", "docs")
    by_id(browser, "pg-random").click()
    wait(
        browser,
        "a random vector",
        lambda d: len(json.loads(by_id(d, "pg-vector").get_attribute("value"))) == DIM,
    )
    k = by_id(browser, "pg-k")
    k.clear()
    k.send_keys("5")
    by_id(browser, "pg-filter").send_keys('{"must": [{"key": "color", "match": "red"}]}')
    by_id(browser, "pg-run").click()
    wait(browser, "5 hits", lambda d: len([r for r in table_rows(d, "pg-hits") if len(r) == 4]) == 5)
    hits = table_rows(browser, "pg-hits")
    assert all(json.loads(r[3])["color"] == "red" for r in hits)
    assert {r[1] for r in hits} <= {f"p{i}" for i in range(20)}
    assert "5 hits" in by_id(browser, "pg-summary").text
    screenshot(browser, shots, "playground")
    # a bad request shows the API's message naming the field
    vec = by_id(browser, "pg-vector")
    vec.clear()
    vec.send_keys("[1, 2]")
    by_id(browser, "pg-run").click()
    wait_text(browser, "pg-error", "vector: ")


def test_a_key_created_in_the_ui_works_and_once_revoked_is_refused(cluster, data, browser, shots):
    from selenium.webdriver.common.by import By

    tab(browser, "keys")
    select(browser, "keys-tenant", "acme")
    wait_text(browser, "keys-table", "acme admin")
    select(browser, "key-role", "read-write")
    by_id(browser, "key-description").send_keys("made in the dashboard")
    by_id(browser, "key-create").click()
    key = wait(
        browser,
        "the new key shown once",
        lambda d: by_id(d, "new-key").text.strip().startswith("qz_") and by_id(d, "new-key").text.strip(),
    )
    key_id = key.split("_")[1]
    wait_text(browser, "keys-table", key_id)
    status, out = http(cluster, "GET", "/v1/collections", key)
    assert status == 200 and [c["name"] for c in out["collections"]] == ["acme-products"]
    status, out = http(
        cluster, "POST", "/v1/collections/acme-products/search", key, {"vector": [0.1] * DIM, "k": 3}
    )
    assert status == 200 and len(out["hits"]) == 3
    screenshot(browser, shots, "keys")
    by_id(browser, "new-key-hide").click()
    button = browser.find_element(By.CSS_SELECTOR, f'#keys-table button[data-key="{key_id}"]')
    button.click()  # arms it
    wait(
        browser,
        "asked to confirm",
        lambda d: "Confirm" in d.find_element(By.CSS_SELECTOR, f'button[data-key="{key_id}"]').text,
    )
    browser.find_element(By.CSS_SELECTOR, f'button[data-key="{key_id}"]').click()
    wait_text(browser, "keys-status", f"Key {key_id} revoked")
    wait(browser, "gone from the list", lambda d: key_id not in by_id(d, "keys-table").text)
    status, problem = http(cluster, "GET", "/v1/collections", key)
    assert status == 401 and problem["code"] == "UNAUTHENTICATED"


def test_a_tenant_admin_sees_only_its_tenant(cluster, data, browser, shots):
    sign_in(browser, cluster, data["acme"])
    wait_text(browser, "identity", "tenant-admin")
    assert "acme" in by_id(browser, "identity").text
    # its first tab is its collections: acme's only
    wait(browser, "acme counted", lambda d: [r for r in table_rows(d, "collections-table") if r[5] == "40"])
    assert [r[0] for r in table_rows(browser, "collections-table")] == ["acme-products"]
    screenshot(browser, shots, "tenant-admin-collections")
    for name in ("latency", "cluster"):
        tab(browser, name)
        notice = wait_text(browser, f"{name}-notice", "needs a cluster admin key")
        assert "tenant-admin of tenant acme" in notice
        assert not by_id(browser, f"{name}-body").is_displayed()
    screenshot(browser, shots, "tenant-admin-cluster")
    assert table_rows(browser, "nodes-table") == [] and table_rows(browser, "latency-table") == []
    tab(browser, "keys")
    wait_text(browser, "keys-table", "acme admin")
    assert [o.text for o in by_id(browser, "keys-tenant").find_elements("tag name", "option")] == ["acme"]
    assert {r[1] for r in table_rows(browser, "keys-table")} == {"acme"}
    tab(browser, "usage")
    wait_text(browser, "usage-vectors-written", "40")
    assert [o.text for o in by_id(browser, "usage-tenant").find_elements("tag name", "option")] == ["acme"]
    tab(browser, "playground")
    wait(
        browser,
        "acme's collection",
        lambda d: by_id(d, "pg-collection").get_attribute("value") == "acme-products",
    )
    # whatever it clicked through, nothing of another tenant reached the page
    for secret in ("globex", "docs", "default"):
        assert secret not in browser.find_element("tag name", "body").text, secret
    # and the API itself refuses what the page leaves out
    assert http(cluster, "GET", "/v1/admin/cluster", data["acme"])[0] == 403
    assert http(cluster, "GET", "/v1/admin/latency", data["acme"])[0] == 403
    assert http(cluster, "GET", "/v1/admin/keys?tenant=globex", data["acme"])[0] == 403


def test_a_node_that_does_not_answer_is_shown_and_the_page_still_renders(cluster, data, browser, shots):
    sign_in(browser, cluster, data["admin"])
    tab(browser, "cluster")
    wait_text(browser, "nodes-table", "n2")
    [node] = [n for n in cluster.nodes if n.name == "n2"]
    node.pause()  # SIGSTOP: it neither answers nor closes its connections
    try:
        by_id(browser, "cluster-refresh").click()  # asked at once, while its lease may still hold

        def n2_not_answering(d):
            nodes = {r[0]: r for r in table_rows(d, "nodes-table")}
            n1, n2 = nodes.get("n1"), nodes.get("n2")
            # unreachable: it missed this router's deadline; "no": its lease has lapsed too
            if n1 and n2 and n1[3] == "yes" and (n2[3] == "unreachable" or n2[2] == "no"):
                return n2
            return None

        wait(browser, "n2 shown as not answering", n2_not_answering)
        shards = table_rows(browser, "shards-table")
        assert len(shards) == 5 and all(re.search(r"n2: (unreachable|down)", r[6]) for r in shards), shards
        assert all(re.search(r"n1: (\d+|\?)", r[6]) for r in shards), shards
        assert text_of(browser, "cluster-error") == ""
        screenshot(browser, shots, "cluster-unreachable")
    finally:
        node.resume()


def test_sign_out_forgets_the_key_and_no_script_broke_the_rules(cluster, browser):
    by_id(browser, "signout").click()
    wait(browser, "the sign-in form", lambda d: by_id(d, "signin").is_displayed())
    assert browser.execute_script("return sessionStorage.getItem('quartz.dashboard.apiKey')") is None
    browser.refresh()
    wait(browser, "still signed out", lambda d: by_id(d, "signin").is_displayed())
    assert not by_id(browser, "app").is_displayed()
    logs = browser.get_log("browser")
    broken = [
        e["message"] for e in logs if "Content Security Policy" in e["message"] or "Uncaught" in e["message"]
    ]
    assert broken == []
