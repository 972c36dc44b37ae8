"""deploy/ checked with the tools its users run, offline: every Kubernetes manifest against the
Kubernetes schemas (kubernetes-validate, strict), the ServiceMonitor (a CRD, which those schemas
do not have) against the Services it scrapes, checkov over the manifests and the Containerfile
with the documented skip list, promtool over the alert rules and their unit tests, and
systemd-analyze over the units. Also: every flag a manifest gives a quartz process exists in
cli.py, and every alert has a runbook anchor in docs/deploy.md.

kubernetes-validate and checkov live in .venv-deploy (scripts/setup.sh), promtool comes from
Debian's prometheus package; a test skips only when its tool is not installed at all.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
SYSTEMD = DEPLOY / "systemd"
DOCS = ROOT / "docs" / "deploy.md"
DEPLOY_VENV = ROOT / ".venv-deploy" / "bin"
# The oldest and the newest Kubernetes minor that the pinned kubernetes-validate bundles schemas
# for and that deploy/k8s supports (gRPC probes are GA from 1.27).
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# Kinds whose schemas are not part of Kubernetes (CRDs): validated by test_servicemonitor below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
QUARTZ_IMAGE = "quartzdb:"
TIMEOUT_S = 120


def tool(name: str) -> str:
    """The path of a tool: .venv-deploy/bin first, then PATH; skip when it is not installed."""
    path = DEPLOY_VENV / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it)")
    return found


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S, **kwargs)


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))


def documents() -> list[tuple[Path, dict]]:
    out = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


def pod_spec(doc: dict) -> dict | None:
    kind = doc["kind"]
    if kind == "Pod":
        return doc["spec"]
    if kind in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
        return doc["spec"]["template"]["spec"]
    return None


def containers() -> list[tuple[str, dict]]:
    out = []
    for path, doc in documents():
        spec = pod_spec(doc)
        if spec is not None:
            for c in spec.get("initContainers", []) + spec["containers"]:
                out.append((f"{path.name}: {doc['kind']}/{doc['metadata']['name']}/{c['name']}", c))
    return out


# --------------------------------------------------------------------------- Kubernetes schemas


def test_manifests_exist_for_every_part():
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in documents()}
    for expected in [
        ("StatefulSet", "quartz-etcd"),
        ("StatefulSet", "quartz-node"),
        ("Deployment", "quartz-router"),
        ("Deployment", "quartz-coordinator"),
        ("PodDisruptionBudget", "quartz-etcd"),
        ("PodDisruptionBudget", "quartz-node"),
        ("PodDisruptionBudget", "quartz-router"),
        ("PodDisruptionBudget", "quartz-coordinator"),
        ("NetworkPolicy", "quartz-default-deny-ingress"),
        ("Secret", "quartz-cluster-secret"),
        ("Secret", "quartz-router-tls"),
        ("ServiceMonitor", "quartz"),
    ]:
        assert expected in kinds, f"no {expected[0]} {expected[1]} under deploy/k8s"
    for _, doc in documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "quartz", f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version, tmp_path):
    """Strict: an unknown field is an error, not ignored. A document of a kind without a schema
    only warns in kubernetes-validate, so any warning fails here too (a typo in an apiVersion
    would otherwise pass); the CRDs are left out and checked by test_servicemonitor."""
    exe = tool("kubernetes-validate")
    files = []
    for i, (path, doc) in enumerate(documents()):
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        one = tmp_path / f"{i:03d}-{path.stem}-{doc['kind']}.yaml"
        one.write_text(yaml.safe_dump(doc))
        files.append(str(one))
    assert len(files) >= 20
    out = run([exe, "--strict", "--kubernetes-version", version, *files])
    text = out.stdout + out.stderr
    problems = [line for line in text.splitlines() if not line.startswith("INFO ")]
    assert out.returncode == 0 and not problems, "\n".join(problems) or text
    assert text.count("INFO ") == len(files), text


def test_servicemonitor_scrapes_named_ports_of_existing_services():
    """The ServiceMonitor is a CRD: check it by hand against the Prometheus Operator's v1 API
    (the fields used) and against the Services it must find."""
    services = [doc for _, doc in documents() if doc["kind"] == "Service"]
    monitors = [doc for _, doc in documents() if doc["kind"] == "ServiceMonitor"]
    assert monitors
    scraped_jobs = set()
    for m in monitors:
        assert m["apiVersion"] == "monitoring.coreos.com/v1"
        spec = m["spec"]
        assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
        assert spec["namespaceSelector"] == {"matchNames": ["quartz"]}
        chosen = [s for s in services if selects(spec["selector"], s["metadata"]["labels"])]
        assert chosen, f"ServiceMonitor {m['metadata']['name']} selects no Service"
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "scheme", "interval", "tlsConfig"}
            assert endpoint["scheme"] in ("http", "https")
            assert endpoint["path"] == "/metrics"
            assert re.fullmatch(r"[0-9]+s", endpoint["interval"])
            for s in chosen:
                ports = {p["name"] for p in s["spec"]["ports"]}
                assert endpoint["port"] in ports, f"{s['metadata']['name']} has no port {endpoint['port']}"
                scraped_jobs.add(s["metadata"]["name"])  # the job label defaults to the Service name
            if endpoint["scheme"] == "https":
                ca = endpoint["tlsConfig"]["ca"]["secret"]
                secret = secret_by_name(ca["name"])
                assert ca["key"] in secret["stringData"]
    assert {"quartz-node", "quartz-coordinator", "quartz-router"} <= scraped_jobs


def selects(selector: dict, labels: dict) -> bool:
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def secret_by_name(name: str) -> dict:
    return next(doc for _, doc in documents() if doc["kind"] == "Secret" and doc["metadata"]["name"] == name)


# --------------------------------------------------------------------------- what the pods run


def quartz_commands() -> list[tuple[str, list[str], dict]]:
    """(where, argv after `quartz`, env) of every container that runs a quartz process."""
    out = []
    for where, c in containers():
        if c["image"].startswith(QUARTZ_IMAGE) and "command" not in c:
            out.append((where, c["args"], {e["name"] for e in c.get("env", [])}))
    return out


def test_every_flag_given_to_a_quartz_process_exists():
    from quartz_cluster.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    commands = quartz_commands()
    assert {args[0] for _, args, _ in commands} == {"node", "router", "coordinator", "bootstrap"}
    for where, args, env in commands:
        known = set(subparsers[args[0]]._option_string_actions)
        argv = []
        for arg in args:
            flag = arg.split("=", 1)[0]
            # exactly: argparse would also take an abbreviation of a flag
            assert not flag.startswith("-") or flag in known, f"{where}: quartz {args[0]} has no flag {flag}"
            argv.append(re.sub(r"\$\(([A-Z_]+)\)", lambda m: "x" if m.group(1) != "CPU_LIMIT" else "2", arg))
            # Kubernetes leaves $(VAR) as it is when the container has no such variable
            for var in re.findall(r"\$\(([A-Z_]+)\)", arg):
                assert var in env, f"{where}: {arg} names $({var}), which the container does not set"
        try:
            parsed = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: quartz {shlex.join(argv)} does not parse (see stderr)")
        assert parsed.cluster_dir == "/etc/quartz/cluster" and not getattr(parsed, "no_auth", False), where
        assert parsed.etcd or "QUARTZ_ETCD" in env, f"{where}: quartz {args[0]} is not told where etcd is"


def test_every_variable_a_container_names_is_set():
    """Kubernetes expands $(VAR) in command and args from the container's env, and leaves an
    unknown one as it is: etcd would then advertise a URL with "$(POD_NAME)" in it."""
    for where, c in containers():
        env = {e["name"] for e in c.get("env", [])}
        for arg in c.get("command", []) + c.get("args", []):
            for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                assert var in env, f"{where}: {arg!r} names $({var}), which the container does not set"


def test_pods_are_locked_down():
    """What the restricted Pod Security Standard and the brief ask of every pod (checkov checks
    most of it too; this names the container when one slips)."""
    for path, doc in documents():
        spec = pod_spec(doc)
        if spec is None:
            continue
        name = f"{path.name}: {doc['kind']}/{doc['metadata']['name']}"
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), name
            if doc["kind"] != "Job":
                assert "livenessProbe" in c and "readinessProbe" in c, name
            if c["image"].startswith(QUARTZ_IMAGE) and doc["kind"] != "Job":
                mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
                assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"


def test_network_policy_seals_the_internal_plane():
    """Default deny, then: node gRPC only from routers, coordinators and nodes; etcd only from
    members; routers open on 7000 and 8080 only; metrics ports from Prometheus only."""
    policies = {
        doc["metadata"]["name"]: doc["spec"] for _, doc in documents() if doc["kind"] == "NetworkPolicy"
    }
    deny = policies["quartz-default-deny-ingress"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny

    def admitted(policy: str, port: int) -> list[dict]:
        rules = [r for r in policies[policy]["ingress"] if port in {p["port"] for p in r["ports"]}]
        assert rules, f"{policy}: nothing may reach port {port}"
        return rules

    def components(rule: dict) -> set[str]:
        out = set()
        for peer in rule["from"]:
            assert "namespaceSelector" not in peer and "ipBlock" not in peer, rule
            sel = peer["podSelector"]
            if "matchLabels" in sel:
                out.add(sel["matchLabels"]["app.kubernetes.io/component"])
            for expr in sel.get("matchExpressions", []):
                if expr["key"] == "app.kubernetes.io/component":
                    out |= set(expr["values"])
        return out

    (node_grpc,) = admitted("quartz-node", 7100)
    assert components(node_grpc) == {"router", "coordinator", "node"}
    etcd_client = admitted("quartz-etcd", 2379)
    assert set().union(*(components(r) for r in etcd_client)) == {
        "router",
        "coordinator",
        "node",
        "bootstrap",
        "admin",
        "etcd",
    }
    (etcd_peer,) = admitted("quartz-etcd", 2380)
    assert components(etcd_peer) == {"etcd"}
    (router,) = policies["quartz-router"]["ingress"]
    assert "from" not in router and {p["port"] for p in router["ports"]} == {7000, 8080}
    for policy, port in [("quartz-node", 9100), ("quartz-coordinator", 9101), ("quartz-etcd", 2381)]:
        (rule,) = admitted(policy, port)
        (peer,) = rule["from"]
        assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}, policy
        assert "namespaceSelector" in peer, policy
    # every workload is selected by a policy of its own besides the default deny
    selected = {
        s["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") for s in policies.values()
    }
    assert {"router", "node", "coordinator", "etcd"} <= selected


def test_the_image_recipe_installs_every_runtime_file(tmp_path):
    """deploy/Containerfile runs `pip install .` (not editable): every file of the package that
    git tracks must be in the wheel, or the image lacks it (static files need package-data)."""
    out = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = tmp_path.glob("quartz_cluster-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = run(["git", "ls-files", "quartz_cluster"], cwd=ROOT)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: cannot tell which files the package ships")
    missing = [f for f in tracked.stdout.split() if f not in names]
    assert not missing, f"not in the wheel (the image would lack them): {missing[:20]}"
    text = (DEPLOY / "Containerfile").read_text()
    assert re.search(r"^FROM python:3\.12-slim", text, re.M)
    assert re.search(r"^USER 10001", text, re.M)


# --------------------------------------------------------------------------- checkov


def checkov_skips() -> dict[str, str]:
    """deploy/.checkov.yaml's skip-check entries and the reason written on each one's line."""
    skips = {}
    for line in (DEPLOY / ".checkov.yaml").read_text().splitlines():
        m = re.match(r"\s+-\s+(CKV2?_[A-Z0-9_]+)\s*(?:#\s*(.*))?$", line)
        if m:
            skips[m.group(1)] = (m.group(2) or "").strip()
    return skips


def test_every_checkov_skip_has_a_reason_here_and_in_the_docs():
    config = yaml.safe_load((DEPLOY / ".checkov.yaml").read_text())
    skips = checkov_skips()
    assert sorted(skips) == sorted(config["skip-check"])
    docs = DOCS.read_text()
    section = docs.split("## checkov skips", 1)[1].split("\n## ", 1)[0]
    for check, reason in skips.items():
        assert len(reason) > 20, f"{check}: no reason on its line in deploy/.checkov.yaml"
        assert re.search(rf"`{check}`", section), f"{check} is not explained in docs/deploy.md#checkov-skips"


def checkov(args: list[str]) -> dict:
    exe = tool("checkov")
    out = run([exe, *args, "--config-file", str(DEPLOY / ".checkov.yaml"), "--output", "json"])
    assert out.returncode in (0, 1), out.stdout[-2000:] + out.stderr[-3000:]
    reports = json.loads(out.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed, passed = [], 0
    for r in reports:
        if "results" not in r:  # an empty report: nothing of that framework found
            continue
        passed += len(r["results"]["passed_checks"])
        failed += [
            f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
            for c in r["results"]["failed_checks"]
        ]
    return {"passed": passed, "failed": failed, "returncode": out.returncode}


def test_checkov_finds_nothing_outside_the_skip_list():
    result = checkov(["--directory", str(K8S), "--framework", "kubernetes"])
    assert not result["failed"], "\n".join(result["failed"])
    assert result["passed"] > 300, result
    print(f"checkov kubernetes: {result['passed']} passed, {len(checkov_skips())} checks skipped by config")


def test_checkov_passes_the_containerfile(tmp_path):
    """checkov's dockerfile runner only picks up files named Dockerfile*: it scans a copy."""
    shutil.copy(DEPLOY / "Containerfile", tmp_path / "Dockerfile")
    result = checkov(["--directory", str(tmp_path), "--framework", "dockerfile"])
    assert not result["failed"], "\n".join(result["failed"])
    assert result["passed"] > 20, result
    print(f"checkov dockerfile: {result['passed']} passed")


# --------------------------------------------------------------------------- Prometheus rules


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for g in groups for rule in g["rules"] if "alert" in rule]


def test_promtool_checks_the_rules():
    out = run([tool("promtool"), "check", "rules", str(PROMETHEUS / "alerts.yml")])
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


def test_promtool_unit_tests_pass():
    out = run([tool("promtool"), "test", "rules", str(PROMETHEUS / "alerts_test.yml")])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_is_tested_firing_and_quiet():
    """Each alert has a unit test in which it fires, and the healthy-cluster test expects none."""
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired, quiet = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    healthy = next(t for t in tests if "healthy" in t["name"])
    in_healthy = {case["alertname"] for case in healthy["alert_rule_test"] if not case["exp_alerts"]}
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts no unit test makes fire"
    assert names - in_healthy == set(), "alerts the healthy-cluster test does not check"
    for required in [
        "QuartzNodeDown",
        "QuartzShardUnderReplicated",
        "QuartzReplicationLag",
        "QuartzHighErrorRate",
        "QuartzNodeDiskNearlyFull",
        "QuartzNodeNotWritable",
        "QuartzBackupMissed",
    ]:
        assert required in names


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_has_a_runbook_entry():
    docs = DOCS.read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", docs, re.M)}
    for rule in alert_rules():
        ann = rule["annotations"]
        assert ann.get("summary") and ann.get("description"), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        url = ann["runbook_url"]
        assert url.startswith("docs/deploy.md#"), url
        anchor = url.split("#", 1)[1]
        assert anchor == rule["alert"].lower(), url
        assert anchor in anchors, f"docs/deploy.md has no heading for #{anchor}"


# --------------------------------------------------------------------------- systemd


def test_systemd_units_verify(tmp_path):
    """systemd-analyze verify needs no running systemd; it does need the ExecStart binary, so it
    checks copies whose /opt/quartz/bin/quartz points at this checkout's. Its warnings (an
    unknown key, a bad value) exit 0, so any output fails."""
    exe = tool("systemd-analyze")
    quartz = Path(sys.executable).parent / "quartz"
    if not quartz.exists():
        pytest.skip(f"{quartz} is not installed")
    units = []
    for unit in sorted(SYSTEMD.glob("*.service")):
        text = unit.read_text()
        assert "ExecStart=/opt/quartz/bin/quartz " in text, unit.name
        for option in (
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=",
        ):
            assert f"\n{option}\n" in text, f"{unit.name}: {option}"
        name = unit.name.replace("@.service", "@n1.service")  # a template is verified as an instance
        (tmp_path / name).write_text(text.replace("/opt/quartz/bin/quartz", str(quartz)))
        units.append(str(tmp_path / name))
    assert len(units) == 3
    out = run([exe, "verify", *units], cwd=tmp_path)
    if "Failed to" in out.stderr and "bus" in out.stderr:
        pytest.skip(f"systemd-analyze verify does not work here: {out.stderr.strip()[:200]}")
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr
