"""A small kubelet for the manifest run test (run_manifests.py).

It takes the objects `kubectl kustomize` renders and runs each pod the way a
kubelet would, with the real binaries or the real images:

* every pod gets its own network namespace with its own IP on a bridge, so
  the services listen on exactly the ports the manifests declare and
  several replicas of one Deployment never clash; Service names resolve
  through the pod's /etc/hosts (`ip netns exec` bind-mounts
  /etc/netns/<ns>/hosts over it; podman gets the same file mounted): a
  headless Service's to its pods' IPs, as cluster DNS answers; a ClusterIP
  Service's to its virtual IP, an address of the node that every pod
  routes through, where a stand-in for kube-proxy (ServiceProxy) forwards
  each new connection to one of the Service's ready endpoints, picked at
  random, on its targetPort;
* the harness itself enters the "node" namespace that holds the bridge,
  like the kubelet, and runs the probes from there;
* containers start with the manifest's command/args (else the image's
  ENTRYPOINT/CMD), the environment resolved from env, envFrom, ConfigMaps,
  Secrets and the downward API, the volumes as the pod mounts them, and the
  pod's user, group, fsGroup and no_new_privs; with the process runtime,
  from `/` in an empty environment (`env -i`, plus the image's ENV as the
  container would have it), with every path under a mount or an image
  file remapped into a temporary root;
* init containers run to completion, in order, before the main container;
* a pod is a ready endpoint once the harness saw its readiness probe pass
  (`Pod.ready`) and while its containers run: stopping or killing a
  container takes it out at once, as the kubelet's report would.

Everything started is tracked and ended by `Cluster.close()`, which the
test calls even on failure: processes by their process group, containers by
name, namespaces by name (after `ip netns pids` says nothing is left in them).
"""

from __future__ import annotations

import base64
import ctypes
import http.client
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
CLONE_NEWNET = 0x40000000
# podman's settings for this kind of machine (no ulimit raising, cgroupfs,
# runc), without touching /etc/containers: see the file.
os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy" / "podman" / "containers.conf"))

# Pod network: a /24 on a bridge inside the node namespace, all of it inside
# namespaces this test makes and deletes (nothing is routed off the machine).
SUBNET = "10.244.{n}."
NODE_HOST = 1
# ClusterIP Services' virtual IPs: a service CIDR of their own, held by the
# node namespace (pods reach it through their default route, the node).
SERVICE_SUBNET = "10.96.{n}."
RUNTIME_LETTER = {"process": "x", "podman": "c"}


def sh(*cmd: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, timeout=timeout, **kw)


# ----------------------------------------------------------------- images


@dataclass
class ImageConfig:
    """What a runtime Dockerfile puts in the image: files, user, ENV, ENTRYPOINT, CMD."""

    files: dict[str, str]  # absolute path in the image -> source relative to the build context
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    user: str


def _instructions(path: Path) -> list[tuple[str, str]]:
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and line.lstrip().startswith("#"):
            continue
        cont = line.endswith("\\")
        buf += (line[:-1].rstrip() + " ") if cont else line
        if not cont:
            if buf.strip():
                word, _, rest = buf.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def image_config(dockerfile: Path) -> ImageConfig:
    files, env, entry, cmd, user = {}, {}, [], [], ""
    for word, rest in _instructions(dockerfile):
        if word == "COPY":
            args = [a for a in rest.split() if not a.startswith("--")]
            src, dest = args[0], args[-1]
            files[dest] = src
        elif word == "ENV":
            for tok in shlex.split(rest):
                k, _, v = tok.partition("=")
                env[k] = v
        elif word == "ENTRYPOINT":
            entry = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "USER":
            user = rest
    return ImageConfig(files, entry, cmd, env, user)


def dockerfile_for(image: str) -> Path:
    """taskcast/inference-svc:dev, registry.example.com/taskcast/trainer-svc:0.1.0 -> runtime Dockerfile."""
    repo = image.rsplit("/", 1)[-1].split(":")[0].split("@")[0]
    path = DOCKER / f"{repo.removesuffix('-svc')}.runtime.Dockerfile"
    if not path.is_file():
        raise AssertionError(f"no runtime Dockerfile for image {image} ({path.name})")
    return path


def normalize_image(image: str) -> str:
    """The fully qualified name a kubelet (containerd) pulls for `image`."""
    name, tag = image, "latest"
    if "@" not in image and ":" in image.rsplit("/", 1)[-1]:
        name, tag = image.rsplit(":", 1)
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return f"{name}:{tag}"


# ----------------------------------------------------------------- manifests


class ManifestError(AssertionError):
    """The rendered objects would not start as a pod (a missing reference, a bad port name)."""


@dataclass
class Container:
    name: str
    image: str
    command: list[str] | None
    args: list[str] | None
    env: dict[str, str]
    mounts: list[dict]
    ports: dict[str, int]  # name (or str(port)) -> containerPort
    probes: dict[str, dict]
    user: int
    group: int
    read_only_root: bool
    no_new_privs: bool
    spec: dict

    def port(self, ref) -> int:
        if isinstance(ref, int):
            return ref
        if ref.isdigit():
            return int(ref)
        if ref not in self.ports:
            raise ManifestError(f"{self.name}: port name {ref!r} is no containerPort name")
        return self.ports[ref]


@dataclass
class Pod:
    name: str
    workload: str
    labels: dict[str, str]
    init: list[Container]
    containers: list[Container]
    volumes: dict[str, dict]
    fs_group: int | None
    grace: int
    ip: str = ""
    netns: str = ""
    # Passed its readiness probe since its containers last started (set by
    # the harness, which runs the probes); cleared when one is stopped or killed.
    ready: bool = False


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion ($$ escapes; unknown references stay as written)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


class Objects:
    """Rendered objects plus the Secrets an operator created out of band."""

    def __init__(self, docs: list[dict], namespace: str, extra_secrets: dict[str, dict[str, str]] | None = None):
        self.docs = docs
        self.namespace = namespace
        self.config_maps = {d["metadata"]["name"]: dict(d.get("data", {})) for d in docs if d["kind"] == "ConfigMap"}
        self.secrets: dict[str, dict[str, str]] = {}
        for d in docs:
            if d["kind"] == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
                data.update(d.get("stringData", {}))
                self.secrets[d["metadata"]["name"]] = data
        for name, data in (extra_secrets or {}).items():
            if name in self.secrets:
                raise ManifestError(f"Secret {name} is both rendered and created out of band")
            self.secrets[name] = dict(data)

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict:
        (hit,) = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        return hit

    def _lookup(self, kind: str, name: str, key: str | None, optional: bool):
        store = self.config_maps if kind == "configMap" else self.secrets
        if name not in store:
            if optional:
                return None
            raise ManifestError(f"{kind} {name} does not exist in namespace {self.namespace}")
        if key is None:
            return store[name]
        if key not in store[name]:
            if optional:
                return None
            raise ManifestError(f"{kind} {name} has no key {key}")
        return store[name][key]

    def container(self, c: dict, pod_name: str, pod_spec: dict) -> Container:
        env: dict[str, str] = {}
        for ef in c.get("envFrom", []):
            prefix = ef.get("prefix", "")
            for kind in ("configMap", "secret"):
                ref = ef.get(f"{kind}Ref")
                if ref:
                    data = self._lookup(kind, ref["name"], None, ref.get("optional", False)) or {}
                    env.update({prefix + k: v for k, v in data.items()})
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = _expand(e["value"], env)
            elif "valueFrom" in e:
                vf = e["valueFrom"]
                if "configMapKeyRef" in vf or "secretKeyRef" in vf:
                    kind = "configMap" if "configMapKeyRef" in vf else "secret"
                    ref = vf[f"{kind}KeyRef"]
                    v = self._lookup(kind, ref["name"], ref["key"], ref.get("optional", False))
                    if v is not None:
                        env[e["name"]] = v
                elif "fieldRef" in vf:
                    path = vf["fieldRef"]["fieldPath"]
                    env[e["name"]] = {"metadata.name": pod_name, "metadata.namespace": self.namespace}[path]
                else:
                    raise ManifestError(f"{c['name']}: unsupported valueFrom {vf}")
            else:
                env[e["name"]] = ""
        psc = pod_spec.get("securityContext", {})
        sc = c.get("securityContext", {})
        user = sc.get("runAsUser", psc.get("runAsUser"))
        group = sc.get("runAsGroup", psc.get("runAsGroup", user))
        if user is None:
            raise ManifestError(f"{c['name']}: no runAsUser (the image's USER would decide)")
        ports = {}
        for p in c.get("ports", []):
            ports[str(p["containerPort"])] = p["containerPort"]
            if "name" in p:
                ports[p["name"]] = p["containerPort"]
        return Container(
            name=c["name"], image=c["image"], command=c.get("command"),
            args=[_expand(a, env) for a in c["args"]] if "args" in c else None,
            env=env, mounts=c.get("volumeMounts", []), ports=ports,
            probes={k: c[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in c},
            user=user, group=group, read_only_root=bool(sc.get("readOnlyRootFilesystem")),
            no_new_privs=sc.get("allowPrivilegeEscalation") is False, spec=c)

    def pods(self, deployment: str, count: int) -> list[Pod]:
        dep = self.one("Deployment", deployment)
        tmpl = dep["spec"]["template"]
        spec = tmpl["spec"]
        out = []
        for i in range(count):
            name = f"{deployment}-{i}"
            out.append(Pod(
                name=name, workload=deployment, labels=dict(tmpl["metadata"].get("labels", {})),
                init=[self.container(c, name, spec) for c in spec.get("initContainers", [])],
                containers=[self.container(c, name, spec) for c in spec["containers"]],
                volumes={v["name"]: v for v in spec.get("volumes", [])},
                fs_group=spec.get("securityContext", {}).get("fsGroup"),
                grace=spec.get("terminationGracePeriodSeconds", 30)))
        return out


def selector_matches(selector: dict, labels: dict) -> bool:
    if selector.get("matchExpressions"):
        for e in selector["matchExpressions"]:
            val = labels.get(e["key"])
            ok = {"In": val in e.get("values", []), "NotIn": val not in e.get("values", []),
                  "Exists": e["key"] in labels, "DoesNotExist": e["key"] not in labels}[e["operator"]]
            if not ok:
                return False
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    return all(labels.get(k) == v for k, v in match.items())


# ----------------------------------------------------------------- the node


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


class TcpRelay:
    """Listens on (host, port) in the current network namespace and forwards each
    connection to what `connect()` opens: the machine's PostgreSQL, opened from
    the machine's own namespace (an external database host the pods reach over
    the pod network), or one of a Service's endpoints (ServiceProxy). When
    either side ends or resets, both are shut down, so a client sees its
    backend go away as it would without the relay."""

    def __init__(self, host: str, port: int, connect):
        self.connect = connect
        self.sock = socket.create_server((host, port), reuse_port=False)
        self.sock.settimeout(0.5)
        self.closed = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while not self.closed.is_set():
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                break
            threading.Thread(target=self._open, args=(client,), daemon=True).start()

    def _open(self, client: socket.socket) -> None:
        """Connects one client upstream on a thread of its own (a slow connect
        holds up no other client), then pipes both ways."""
        try:
            upstream = self.connect()
        except Exception:  # noqa: BLE001  (refused, unreachable, no endpoint: the client's connection closes)
            client.close()
            return
        # Blocking from here on: an idle connection (a pooled database session,
        # the one holding the training lock, a model stream between models)
        # must not time out in the relay, which would end it for both sides.
        client.settimeout(None)
        upstream.settimeout(None)
        self.conns += [client, upstream]
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.thread.join(timeout=2)


class ServiceProxy:
    """kube-proxy's part for one ClusterIP Service: its virtual IP answers on
    each Service port, and each new connection goes to the targetPort of one
    of the Service's ready endpoints, picked at random as kube-proxy's
    iptables rules pick them, looked up afresh per connection as kube-proxy
    follows the EndpointSlices. With no ready endpoint the connection is
    closed at once (kube-proxy rejects it). An established connection stays
    with its endpoint until one side closes it; when that endpoint dies, the
    client's connection ends too, and its next one goes to another endpoint."""

    def __init__(self, name: str, vip: str, ports: list[dict], pods: list[Pod], cluster: "Cluster"):
        self.name, self.vip, self.pods, self.cluster = name, vip, pods, cluster
        # Service port -> {pod name: container port}: a named targetPort is
        # looked up in each pod's containers, as the EndpointSlice controller does.
        self.targets: dict[int, dict[str, int]] = {}
        for sp in ports:
            target = str(sp.get("targetPort", sp["port"]))
            for p in pods:
                found = [c.ports[target] for c in p.containers if target in c.ports]
                if not found:
                    raise ManifestError(f"Service {name}: targetPort {target} is no port of {p.name}")
                self.targets.setdefault(sp["port"], {})[p.name] = found[0]
        self.relays = [TcpRelay(vip, port, lambda port=port: self._connect(port)) for port in self.targets]

    def endpoints(self) -> list[Pod]:
        return [p for p in self.pods if self.cluster.endpoint_ready(p)]

    def _connect(self, port: int) -> socket.socket:
        ready = self.endpoints()
        if not ready:
            raise ConnectionRefusedError(f"Service {self.name} has no ready endpoint")
        pod = random.choice(ready)
        return socket.create_connection((pod.ip, self.targets[port][pod.name]), timeout=5)


@dataclass
class Running:
    """One started container: a process (group) or a podman container."""

    pod: Pod
    container: Container
    log: Path
    proc: subprocess.Popen | None = None
    podman_name: str | None = None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        out = sh("podman", "inspect", "--format", "{{.State.Running}}", self.podman_name, check=False)
        return out.stdout.strip() == "true"

    def exit_code(self) -> int | None:
        if self.proc is not None:
            return self.proc.poll()
        out = sh("podman", "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", self.podman_name, check=False)
        running, _, code = out.stdout.strip().partition(" ")
        return None if running == "true" or not code else int(code)

    def logs(self) -> str:
        if self.podman_name is not None and self.proc is None:
            out = sh("podman", "logs", self.podman_name, check=False)
            return out.stdout + out.stderr
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Cluster:
    """Network namespaces, volumes and the containers started in them."""

    def __init__(self, work: Path, runtime: str, stage: Path, subnet: int = 0):
        assert runtime in ("process", "podman"), runtime
        self.work = work
        self.runtime = runtime
        self.stage = stage  # bin/, lib/, models/, data/: what the images are built from
        self.id = f"tcm{os.getpid() % 100000}{RUNTIME_LETTER[runtime]}{subnet}"
        self.prefix = SUBNET.format(n=200 + subnet)
        self.node_ip = self.prefix + str(NODE_HOST)
        self.service_prefix = SERVICE_SUBNET.format(n=subnet)
        self.node_ns = f"{self.id}-node"
        self.namespaces: list[str] = []
        self.running: list[Running] = []
        self.hosts: dict[str, list[str]] = {}
        self.relays: list[TcpRelay] = []
        self.services: dict[str, ServiceProxy] = {}
        self._next_ip = 10
        self._next_vip = 10
        self._home_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        self._entered = False
        # A thread that stays in the machine's namespace (started before
        # enter_node): what must reach the machine's loopback runs there.
        self._host = ThreadPoolExecutor(max_workers=1, thread_name_prefix="host-netns")
        self._host.submit(lambda: None).result()
        work.mkdir(parents=True, exist_ok=True)
        os.chmod(work, 0o755)
        self._netns_add(self.node_ns)
        ip = ["ip", "-n", self.node_ns]
        sh(*ip, "link", "set", "lo", "up")
        sh(*ip, "link", "add", "br0", "type", "bridge")
        sh(*ip, "addr", "add", f"{self.node_ip}/24", "dev", "br0")
        sh(*ip, "link", "set", "br0", "up")

    # --- namespaces
    def _netns_add(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)

    def enter_node(self) -> None:
        """Moves this thread (and every thread or process it starts from now on)
        into the node namespace: probes and the harness's gRPC calls come from
        there, like a kubelet's."""
        _setns(f"/run/netns/{self.node_ns}")
        self._entered = True

    def leave_node(self) -> None:
        if self._entered:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.setns(self._home_ns, CLONE_NEWNET)
            self._entered = False

    def add_host(self, ns: str) -> str:
        """A pod network namespace with an address on the node's bridge."""
        n = self._next_ip
        self._next_ip += 1
        addr = self.prefix + str(n)
        self._netns_add(ns)
        veth = f"{self.id[:9]}v{n}"
        sh("ip", "-n", self.node_ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", self.node_ns, "link", "set", veth, "master", "br0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", self.node_ip)
        return addr

    def in_host(self, fn, *args, **kwargs):
        """Runs fn in the machine's own network namespace (a subprocess started
        there inherits it)."""
        return self._host.submit(fn, *args, **kwargs).result()

    def relay_host_port(self, port: int, host_addr: tuple[str, int]) -> str:
        """The node's address answers on `port` for host_addr on the machine's
        loopback (call after enter_node)."""
        assert self._entered
        connect = lambda: self.in_host(socket.create_connection, host_addr, 5)  # noqa: E731
        self.relays.append(TcpRelay(self.node_ip, port, connect))
        return self.node_ip

    def add_service(self, svc: dict, pods: list[Pod]) -> ServiceProxy:
        """A ClusterIP Service: a virtual IP on the node and kube-proxy's
        forwarding behind it, to the pods among `pods` its selector picks
        (call after enter_node)."""
        assert self._entered
        name = svc["metadata"]["name"]
        vip = self.service_prefix + str(self._next_vip)
        self._next_vip += 1
        sh("ip", "-n", self.node_ns, "addr", "add", f"{vip}/32", "dev", "br0")
        selected = [p for p in pods if selector_matches(svc["spec"]["selector"], p.labels)]
        proxy = ServiceProxy(name, vip, svc["spec"]["ports"], selected, self)
        self.services[name] = proxy
        self.relays += proxy.relays
        return proxy

    def current(self, pod: Pod) -> list[Running]:
        """The latest start of each of the pod's (non-init) containers."""
        latest: dict[str, Running] = {}
        for r in self.running:
            if r.pod is pod and r.container in pod.containers:
                latest[r.container.name] = r
        return list(latest.values())

    def endpoint_ready(self, pod: Pod) -> bool:
        """Whether the Service's EndpointSlice lists `pod` as ready: readiness
        passed since its containers started, and every one still runs (the
        kubelet reports an exited container at once)."""
        if not pod.ready:
            return False
        current = self.current(pod)
        return len(current) == len(pod.containers) and all(r.alive() for r in current)

    def _write_etc(self, ns: str, pod_name: str, ip: str) -> Path:
        d = Path("/etc/netns") / ns
        d.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback", f"{ip} {pod_name}"]
        for name, addrs in sorted(self.hosts.items()):
            lines += [f"{a} {name}" for a in addrs]
        (d / "hosts").write_text("\n".join(lines) + "\n")
        # No nameserver: a name the hosts file lacks fails at once, as in a
        # cluster without that Service.
        (d / "resolv.conf").write_text("options timeout:1 attempts:1\n")
        return d

    def set_hosts(self, hosts: dict[str, list[str]]) -> None:
        """Names every pod started from now on resolves (cluster DNS)."""
        self.hosts = {k: list(v) for k, v in hosts.items()}

    def refresh_hosts(self, pods: list[Pod]) -> None:
        for p in pods:
            self._write_etc(p.netns, p.name, p.ip)

    # --- volumes
    def _pod_dir(self, pod: Pod) -> Path:
        d = self.work / "pods" / pod.name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def volume_dir(self, pod: Pod, vol_name: str) -> Path:
        """The host folder behind a pod volume, made as the kubelet would (fsGroup-owned)."""
        vol = pod.volumes.get(vol_name)
        if vol is None:
            raise ManifestError(f"{pod.name}: volumeMount of undeclared volume {vol_name}")
        if "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"]["claimName"]
            d = self.work / "claims" / claim  # outlives the pod, like the PV
        else:
            d = self._pod_dir(pod) / "volumes" / vol_name
        if d.is_dir():
            return d
        d.mkdir(parents=True)
        gid = pod.fs_group if pod.fs_group is not None else 0
        if "secret" in vol or "configMap" in vol or "projected" in vol:
            if "projected" in vol:
                # Several Secrets/ConfigMaps in one folder; a source names
                # its object as `name` whatever its kind.
                mode = vol["projected"].get("defaultMode", 0o644)
                sources = [(kind, src[kind]["name"], src[kind]) for src in vol["projected"]["sources"]
                           for kind in ("secret", "configMap") if kind in src]
                if len(sources) != len(vol["projected"]["sources"]):
                    raise ManifestError(f"{pod.name}: volume {vol_name}: unsupported projected source")
            else:
                kind = "secret" if "secret" in vol else "configMap"
                src = vol[kind]
                mode = src.get("defaultMode", 0o644)
                sources = [(kind, src["secretName"] if kind == "secret" else src["name"], src)]
            for kind, name, src in sources:
                data = self.objects._lookup(kind, name, None, src.get("optional", False)) or {}
                items = src.get("items") or [{"key": k, "path": k} for k in data]
                for it in items:
                    if it["key"] not in data:
                        raise ManifestError(f"{kind} {name} has no key {it['key']}")
                    f = d / it["path"]
                    if f.exists():
                        raise ManifestError(f"{pod.name}: volume {vol_name}: two sources write {it['path']}")
                    f.parent.mkdir(parents=True, exist_ok=True)
                    f.write_text(data[it["key"]])
                    os.chown(f, 0, gid)
                    os.chmod(f, it.get("mode", mode))
            os.chown(d, 0, gid)
            os.chmod(d, 0o755)
        elif "emptyDir" in vol or "persistentVolumeClaim" in vol:
            os.chown(d, 0, gid)
            os.chmod(d, 0o2775 if pod.fs_group is not None else 0o777)
        else:
            raise ManifestError(f"{pod.name}: volume {vol_name}: unsupported type {sorted(vol)}")
        return d

    # --- starting
    objects: Objects

    def _proc_argv(self, pod: Pod, c: Container) -> tuple[list[str], dict[str, str]]:
        """argv and environment of a container run as a plain process."""
        img = image_config(dockerfile_for(c.image))
        root = self._pod_dir(pod) / "root" / c.name
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        # The image's files, where the image has them.
        for dest, src in img.files.items():
            target = root / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(self.stage / src, target)
        # The pod's volumes, where the container mounts them.
        mounts = {}
        for m in c.mounts:
            target = root / m["mountPath"].lstrip("/")
            if target.is_symlink() and target.resolve().is_dir():
                target.unlink()  # a folder of the image is the mount point (trainer's /data)
            elif target.is_symlink() or target.exists():
                raise ManifestError(f"{c.name}: mount {m['mountPath']} hides a file of the image")
            target.parent.mkdir(parents=True, exist_ok=True)
            src = self.volume_dir(pod, m["name"])
            if m.get("subPath"):
                src = src / m["subPath"]
            os.symlink(src, target)
            mounts[m["mountPath"]] = m
        for d in sorted({str(p) for p in root.rglob("*") if p.is_dir() and not p.is_symlink()}):
            os.chmod(d, 0o755)
        os.chmod(root, 0o755)
        prefixes = sorted(set(img.files) | set(mounts) | {os.path.dirname(p) for p in img.files}, key=len, reverse=True)
        prefixes = [p for p in prefixes if p not in ("", "/")]

        # One pass, longest prefix first, so a remapped path (itself under /tmp)
        # is never remapped again.
        pattern = re.compile(r"(?<![A-Za-z0-9_.\-])(" + "|".join(map(re.escape, prefixes)) + r")(?=/|$|\?|:|,)")

        def remap(s: str) -> str:
            return pattern.sub(lambda m: str(root) + m.group(1), s) if prefixes else s

        entry = c.command if c.command is not None else img.entrypoint
        args = c.args if c.args is not None else ([] if c.command is not None else img.cmd)
        argv = [remap(a) for a in entry + args]
        exe = Path(argv[0])
        if not exe.is_absolute() or not str(exe).startswith(str(root)):
            raise ManifestError(f"{c.name}: command {entry[:1]} is not a file of image {c.image}")
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME": pod.name}
        env.update(img.env)
        env.update({k: remap(v) for k, v in c.env.items()})
        return argv, env

    def _podman_argv(self, pod: Pod, c: Container, name: str, detach: bool) -> list[str]:
        etc = Path("/etc/netns") / pod.netns
        argv = ["podman", "run", "--runtime", "runc", "--pull=never", "--name", name,
                "--network", f"ns:/run/netns/{pod.netns}", "--hostname", pod.name,
                "--user", f"{c.user}:{c.group}", "--cap-drop", "ALL",
                "-v", f"{etc / 'hosts'}:/etc/hosts:ro", "-v", f"{etc / 'resolv.conf'}:/etc/resolv.conf:ro"]
        argv.append("--detach" if detach else "--rm")
        if pod.fs_group is not None:
            argv += ["--group-add", str(pod.fs_group)]
        if c.no_new_privs:
            argv += ["--security-opt", "no-new-privileges"]
        if c.read_only_root:
            # No tmpfs on /tmp, /run, /var/tmp: the pod spec must bring its own.
            argv += ["--read-only", "--read-only-tmpfs=false"]
        for m in c.mounts:
            src = self.volume_dir(pod, m["name"])
            if m.get("subPath"):
                src = src / m["subPath"]
            argv += ["-v", f"{src}:{m['mountPath']}" + (":ro" if m.get("readOnly") else "")]
        for k, v in c.env.items():
            argv += ["--env", f"{k}={v}"]
        if c.command is not None:
            argv += ["--entrypoint", json.dumps(c.command)]
        argv.append(normalize_image(c.image))
        if c.args is not None:
            argv += c.args
        elif c.command is not None:
            pass  # a command without args drops the image's CMD, as in Kubernetes
        return argv

    def _launch(self, pod: Pod, c: Container, detach: bool) -> Running:
        starts = sum(1 for r in self.running if r.pod is pod and r.container is c)
        log = self._pod_dir(pod) / f"{c.name}{f'.{starts}' if starts else ''}.log"
        if self.runtime == "podman":
            name = f"{self.id}-{pod.name}-{c.name}-{starts}"
            sh("podman", "rm", "--force", "--ignore", name, check=False)
            argv = self._podman_argv(pod, c, name, detach)
            r = Running(pod, c, log, podman_name=name)
            self.running.append(r)
            if detach:
                out = sh(*argv, check=False, timeout=120)
                if out.returncode != 0:
                    raise AssertionError(f"podman run {name} failed:\n{out.stderr}")
            else:
                with open(log, "w") as f:
                    r.proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd="/",
                                              start_new_session=True)
            return r
        argv, env = self._proc_argv(pod, c)
        groups = ["--groups", str(pod.fs_group)] if pod.fs_group is not None else ["--clear-groups"]
        priv = ["setpriv", f"--reuid={c.user}", f"--regid={c.group}", *groups,
                "--inh-caps=-all", "--bounding-set=-all"]
        if c.no_new_privs:
            priv.append("--no-new-privs")
        full = ["ip", "netns", "exec", pod.netns, *priv, "env", "-i",
                *[f"{k}={v}" for k, v in env.items()], *argv]
        with open(log, "w") as f:
            f.write("# " + shlex.join(full) + "\n")
            f.flush()
            proc = subprocess.Popen(full, stdout=f, stderr=subprocess.STDOUT, cwd="/",
                                    start_new_session=True, env={})
        r = Running(pod, c, log, proc=proc)
        self.running.append(r)
        return r

    def create_pod(self, pod: Pod) -> None:
        pod.netns = f"{self.id}-{pod.name}"
        pod.ip = self.add_host(pod.netns)
        self._write_etc(pod.netns, pod.name, pod.ip)

    def start_pod(self, pod: Pod, init_timeout: float = 180) -> list[Running]:
        """Runs the init containers to completion, then starts the containers."""
        if not pod.netns:
            self.create_pod(pod)
        for c in pod.init:
            r = self._launch(pod, c, detach=False)
            try:
                code = r.proc.wait(timeout=init_timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"init container {pod.name}/{c.name} still running after {init_timeout}s:\n{r.logs()[-3000:]}")
            if code != 0:
                raise AssertionError(f"init container {pod.name}/{c.name} exited {code}:\n{r.logs()[-3000:]}")
        return [self._launch(pod, c, detach=True) for c in pod.containers]

    def stop(self, r: Running, grace: float) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code
        (None if it had to be killed). A terminating pod leaves its Services'
        endpoints first."""
        r.pod.ready = False
        if r.podman_name is not None and r.proc is None:
            if r.alive():
                sh("podman", "stop", "--time", str(int(grace)), r.podman_name, check=False, timeout=grace + 30)
            code = r.exit_code()
            return None if code in (137,) else code
        p = r.proc
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                return p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
                return None
        return p.returncode

    def kill(self, r: Running) -> int | None:
        """SIGKILL, no SIGTERM and no grace (a crash, the OOM killer, `kill -9`);
        returns the exit code once it is gone."""
        r.pod.ready = False
        if r.podman_name is not None and r.proc is None:
            sh("podman", "kill", "--signal", "KILL", r.podman_name, check=False, timeout=60)
            sh("podman", "wait", r.podman_name, check=False, timeout=60)
            return r.exit_code()
        try:
            os.killpg(r.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return r.proc.wait(timeout=10)

    def restart(self, r: Running) -> Running:
        """Starts the container `r` ran again in the same pod (same network
        namespace, IP and volumes), as the kubelet restarts an exited
        container of a restartPolicy Always pod; init containers do not run
        again. The pod is ready again once the harness saw readiness pass."""
        assert not r.alive(), f"{r.pod.name}/{r.container.name} still runs"
        return self._launch(r.pod, r.container, detach=True)

    def kill_pod(self, pod: Pod) -> dict[str, int | None]:
        codes = {}
        for r in self.current(pod):
            codes[r.container.name] = self.stop(r, pod.grace)
        return codes

    def exec_in(self, ns: str, *argv: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd="/")

    def listening(self, pod: Pod) -> set[int]:
        out = self.exec_in(pod.netns, "ss", "-Hltn", timeout=20)
        ports = set()
        for line in out.stdout.splitlines():
            local = line.split()[3]
            ports.add(int(local.rsplit(":", 1)[1]))
        return ports

    def close(self) -> list[str]:
        """Ends everything this cluster started; returns what had to be forced."""
        forced = []
        for r in reversed(self.running):
            try:
                if r.podman_name is not None:
                    if r.proc is not None and r.proc.poll() is None:
                        os.killpg(r.proc.pid, signal.SIGKILL)
                        r.proc.wait(timeout=10)
                    if r.proc is None:
                        r.log.write_text(r.logs())  # kept for TASKCAST_KEEP_LOGS
                    sh("podman", "rm", "--force", "--time", "2", "--ignore", r.podman_name, check=False, timeout=60)
                elif r.proc.poll() is None:
                    forced.append(f"{r.pod.name}/{r.container.name}")
                    os.killpg(r.proc.pid, signal.SIGKILL)
                    r.proc.wait(timeout=10)
            except Exception as e:  # keep cleaning up
                forced.append(f"{r.pod.name}/{r.container.name}: {e}")
        for relay in self.relays:
            relay.close()
        self.leave_node()
        self._host.shutdown(wait=True)
        for ns in reversed(self.namespaces):
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                forced.append(f"pid {pid} left in {ns}")
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        self.namespaces.clear()
        return forced


def remove_stale(prefix: str = "tcm") -> None:
    """Deletes namespaces a killed earlier run left behind (their pid is gone)."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0]
        m = re.match(rf"{prefix}(\d+)[xc]\d-", name)
        if m and not any(Path(f"/proc/{pid}").exists() for pid in [m.group(1)]):
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", name, check=False)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
    if shutil.which("podman"):
        names = sh("podman", "ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
        for name in names:
            m = re.match(rf"{prefix}(\d+)c\d-", name)
            if m and not Path(f"/proc/{m.group(1)}").exists():
                sh("podman", "rm", "--force", "--time", "2", name, check=False, timeout=60)


# ----------------------------------------------------------------- probes


def probe_once(pod: Pod, c: Container, probe: dict) -> tuple[bool, str]:
    """One probe from the node, as the kubelet sends it; (success, detail)."""
    timeout = probe.get("timeoutSeconds", 1)
    if "grpc" in probe:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        port = c.port(probe["grpc"]["port"])
        with grpc.insecure_channel(f"{pod.ip}:{port}") as ch:
            try:
                resp = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=timeout)
            except grpc.RpcError as e:
                return False, f"grpc {port}: {e.code().name}"
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            return resp.status == health_pb2.HealthCheckResponse.SERVING, f"grpc {port}: {name}"
    if "httpGet" in probe:
        h = probe["httpGet"]
        port = c.port(h["port"])
        try:
            conn = http.client.HTTPConnection(pod.ip, port, timeout=timeout)
            conn.request("GET", h.get("path", "/"))
            status = conn.getresponse().status
            conn.close()
        except OSError as e:
            return False, f"http {port}{h.get('path', '/')}: {e}"
        return 200 <= status < 400, f"http {port}{h.get('path', '/')}: {status}"
    if "tcpSocket" in probe:
        port = c.port(probe["tcpSocket"]["port"])
        try:
            socket.create_connection((pod.ip, port), timeout=timeout).close()
            return True, f"tcp {port}: open"
        except OSError as e:
            return False, f"tcp {port}: {e}"
    raise ManifestError(f"unsupported probe {sorted(probe)}")


def wait_probe(r: Running, kind: str, limit: float) -> str:
    """Probes until success, within the probe's own budget (capped at `limit`)."""
    probe = r.container.probes[kind]
    budget = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    deadline = time.monotonic() + min(budget, limit)
    detail = ""
    while True:
        if not r.alive():
            raise AssertionError(f"{r.pod.name}/{r.container.name} exited ({r.exit_code()}) during {kind}:\n{r.logs()[-4000:]}")
        ok, detail = probe_once(r.pod, r.container, probe)
        if ok:
            return detail
        if time.monotonic() > deadline:
            raise AssertionError(f"{r.pod.name}/{r.container.name} {kind} failing after {min(budget, limit):.0f}s: {detail}\n{r.logs()[-4000:]}")
        time.sleep(min(1.0, probe.get("periodSeconds", 10)))


def scrape(ip: str, port: int, path: str = "/metrics") -> str:
    conn = http.client.HTTPConnection(ip, port, timeout=5)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    assert resp.status == 200, (ip, port, resp.status)
    return body


def metric_samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample in a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def metric_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return names


def sum_samples(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for key, value in metric_samples(text).items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
        if all(got.get(k) == v for k, v in labels.items()):
            total += value
    return total
