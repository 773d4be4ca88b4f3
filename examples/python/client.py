#!/usr/bin/env python3
"""Taskcast example client: a small library and CLI for every RPC of taskcast.v1.

Library:

    from client import TaskcastClient, example_history, candidate
    with TaskcastClient(inference="localhost:50051", trainer="https://trainer.example:50052",
                        token=os.environ.get("TASKCAST_ADMIN_TOKEN"),
                        reader_token=os.environ.get("TASKCAST_READER_TOKEN")) as tc:
        resp = tc.predict("learner-1", example_history(),
                          [candidate("t1", "fractions", "medium")])

Credentials, one bearer token per trainer role, each sent only on that role's
RPCs and only when given (ROLE below): admin (Train, Promote, Rollback; --token,
--token-file, $TASKCAST_ADMIN_TOKEN), reader (ListModels, GetTrainingRun,
WatchTrainingRun, ModelReport; --reader-token, --reader-token-file,
$TASKCAST_READER_TOKEN), replica (WatchModels; --replica-token,
--replica-token-file, $TASKCAST_REPLICA_TOKEN). Inference RPCs and health
checks never carry a token.

Addresses (default $TASKCAST_INFERENCE_ADDR / $TASKCAST_TRAINER_ADDR, then
localhost:50051 / localhost:50052): `https://host:port` is TLS, verified
against the system roots or --ca-file (plus --cert-file/--key-file for a client
certificate); `http://host:port` and bare `host:port` are plaintext; gRPC names
such as dns:///host:port are used as they are (plaintext, or TLS with --tls).
There is no fallback from TLS to plaintext. In Kubernetes, give inference as
dns:///inference.<namespace>.svc.cluster.local:50051: the headless Service
resolves to every replica and calls are balanced round-robin over them.

Deadlines: every unary call has --timeout (default 10 s); `train --wait` is
bounded by --wait-timeout (default 600 s) and `watch-models` by --first-timeout
(default 60 s). The trainer channel accepts messages up to --max-receive-mib
(default 256 MiB): model artifacts grow with the number of learners and gRPC's
default 4 MiB would refuse them.

    python client.py predict --user u1 --candidate t1:fractions:medium
    python client.py recommend --user u1 --candidate a:fractions:easy --candidate b:algebra:hard
    python client.py model | train [--family linear] [--wait] | run ID | models | promote VERSION [--canary PCT] | fleet
    python client.py rollback | watch-models | report | health {inference,trainer}

The gRPC code is generated from proto/ on first import into a cache folder,
${TASKCAST_STUBS_DIR:-${XDG_CACHE_HOME:-~/.cache}/taskcast/python-stubs}/<key>,
where <key> hashes the .proto files and the protobuf / grpcio-tools versions:
changed protos get a fresh folder, and concurrent first uses are safe (each
generates into a temporary folder and renames it into place). Nothing is
written to the source tree. gen.sh (or `client.py --generate-only`) does the
same explicitly and prints the folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import ssl
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Iterator, Sequence

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTOS = ["taskcast/v1/inference.proto", "taskcast/v1/trainer.proto"]
_COMPLETE = ".complete"  # written last inside a generated folder, before it is renamed into place


def stubs_root() -> Path:
    """The folder holding one generated-code folder per proto hash."""
    if os.environ.get("TASKCAST_STUBS_DIR"):
        return Path(os.environ["TASKCAST_STUBS_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    return base / "taskcast" / "python-stubs"


def stubs_key(proto_root: Path = PROTO_ROOT) -> str:
    """Hash of the .proto files and of the generator / runtime versions (the
    generated code checks the protobuf version it was made for at import)."""
    from google.protobuf import __version__ as protobuf_version
    from grpc_tools.grpc_version import VERSION as tools_version

    h = hashlib.sha256(f"protobuf {protobuf_version}\0grpcio-tools {tools_version}\0".encode())
    for rel in PROTOS:
        h.update(rel.encode() + b"\0" + (proto_root / rel).read_bytes() + b"\0")
    return h.hexdigest()[:24]


def generate(force: bool = False, proto_root: Path = PROTO_ROOT, root: Path | None = None) -> Path:
    """Runs grpcio-tools' protoc over proto/ into <root>/<stubs_key()> unless
    that folder is already complete; returns the folder."""
    root = Path(root) if root is not None else stubs_root()
    out = root / stubs_key(proto_root)
    if not force and (out / _COMPLETE).is_file():
        return out
    import importlib.resources

    from grpc_tools import protoc

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=root))
    try:
        # The well-known types (timestamp.proto) ship inside grpc_tools.
        well_known = str(importlib.resources.files("grpc_tools") / "_proto")
        args = ["protoc", f"-I{proto_root}", f"-I{well_known}", f"--python_out={tmp}",
                f"--grpc_python_out={tmp}", f"--pyi_out={tmp}", *PROTOS]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        (tmp / _COMPLETE).write_text("\n".join(PROTOS) + "\n")
        try:
            os.rename(tmp, out)  # atomic: readers see no folder or a complete one
        except OSError:
            if not force and (out / _COMPLETE).is_file():
                return out  # a concurrent first use won the race; its folder is as good
            # Forced, or a damaged folder without the marker: move it aside, then retry.
            old = root / f".{out.name}.old-{uuid.uuid4().hex}"
            try:
                os.rename(out, old)
            except FileNotFoundError:
                pass
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed
    return out


STUBS = generate()
sys.path.insert(0, str(STUBS))

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from taskcast.v1 import inference_pb2 as inf  # noqa: E402
from taskcast.v1 import inference_pb2_grpc as inf_grpc  # noqa: E402
from taskcast.v1 import trainer_pb2 as trn  # noqa: E402
from taskcast.v1 import trainer_pb2_grpc as trn_grpc  # noqa: E402

DEFAULT_INFERENCE = "localhost:50051"
DEFAULT_TRAINER = "localhost:50052"
DEFAULT_TIMEOUT = 10.0  # seconds, every unary call
DEFAULT_WAIT_TIMEOUT = 600.0  # seconds, WatchTrainingRun (train --wait)
DEFAULT_FIRST_ARTIFACT_TIMEOUT = 60.0  # seconds, the first WatchModels message
# The trainer channel's receive limit. A ModelArtifact carries the ONNX model,
# whose learner / item tables grow with the data; gRPC's default 4 MiB refuses
# such messages with RESOURCE_EXHAUSTED.
DEFAULT_MAX_RECEIVE_BYTES = 256 * 1024 * 1024

ADMIN, READER, REPLICA = "admin", "reader", "replica"
# The trainer role whose token each RPC carries; None: no token is ever sent
# (inference and grpc.health.v1 calls too). Every RPC in the protos is listed.
ROLE: dict[str, str | None] = {
    "Inference.Predict": None, "Inference.Recommend": None, "Inference.GetModel": None,
    "Trainer.Train": ADMIN, "Trainer.Promote": ADMIN, "Trainer.Rollback": ADMIN,
    "Trainer.ListModels": READER, "Trainer.GetTrainingRun": READER,
    "Trainer.WatchTrainingRun": READER, "Trainer.ModelReport": READER, "Trainer.GetFleet": READER,
    "Trainer.WatchModels": REPLICA, "Trainer.ReportReplica": REPLICA,
}


# Calls that change nothing, so running one twice is harmless: retried on
# UNAVAILABLE (a replica stopping, a connection closed by the server's maximum
# connection age, a trainer restarting). Train, Promote and Rollback are
# never retried: a Train that reached the trainer before the connection
# dropped would start a second run. Read-only streams are retried only until
# their first message (gRPC's rule: once a response has begun, no retry).
SAFE_METHODS: dict[str, list[str]] = {
    "taskcast.v1.Inference": ["Predict", "Recommend", "GetModel"],
    "taskcast.v1.Trainer": ["ListModels", "GetTrainingRun", "WatchTrainingRun", "ModelReport", "WatchModels",
                            "GetFleet", "ReportReplica"],
    "grpc.health.v1.Health": ["Check"],
}
# Up to 4 attempts, 0.1 s, 0.2 s, 0.4 s (at most 1 s) apart, randomised by gRPC,
# all inside the call's one deadline. The budget (retryThrottling): each
# failed attempt costs a token, each success earns back 0.1, and retries stop
# while fewer than half of the 10 tokens are left, so a server that is down
# gets about one call per call made, not four.
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
RETRY_SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": svc, "method": m} for svc, methods in SAFE_METHODS.items() for m in methods],
        "retryPolicy": RETRY_POLICY,
    }],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
})


def parse_address(addr: str) -> tuple[str, bool | None]:
    """(gRPC target, TLS?) for host:port, an http(s):// URL (as the Rust services
    print them) or a gRPC name such as dns:///host:port (kept as it is).
    TLS is True for https:// and grpcs://, False for http:// and grpc://, None
    (the caller decides; plaintext unless asked for TLS) without a scheme."""
    for scheme, tls in (("https://", True), ("grpcs://", True), ("http://", False), ("grpc://", False)):
        if addr.startswith(scheme):
            return addr[len(scheme):].rstrip("/"), tls
    return addr.rstrip("/"), None


def _target(addr: str) -> str:
    return parse_address(addr)[0]


def system_root_certificates() -> bytes | None:
    """PEM roots of the system trust store (OpenSSL's default CA file, which
    honours $SSL_CERT_FILE). None lets gRPC use $GRPC_DEFAULT_SSL_ROOTS_FILE_PATH
    or the roots bundled with grpcio."""
    if os.environ.get("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"):
        return None
    paths = ssl.get_default_verify_paths()
    for f in (paths.cafile, paths.openssl_cafile):
        if f and os.path.isfile(f):
            return Path(f).read_bytes()
    return None


def timestamp(when: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(dt.timezone.utc))
    return ts


def attempt(topic: str, difficulty: str, correct: bool, seconds: float,
            completed_at: dt.datetime | None = None, item_id: str = "") -> inf.Attempt:
    a = inf.Attempt(topic=topic, difficulty=difficulty, correct=correct, seconds=seconds, item_id=item_id)
    if completed_at is not None:
        a.completed_at.CopyFrom(timestamp(completed_at))
    return a


def candidate(task_id: str, topic: str, difficulty: str = "", item_id: str = "") -> inf.Candidate:
    return inf.Candidate(task_id=task_id, topic=topic, difficulty=difficulty, item_id=item_id)


def example_history(now: dt.datetime | None = None) -> list[inf.Attempt]:
    """A plausible learner: solid on fractions, shaky on algebra; oldest first as the API requires."""
    now = now or dt.datetime(2025, 1, 15, 12, 0, tzinfo=dt.timezone.utc)
    rows = [
        ("fractions", "easy", True, 35.0),
        ("fractions", "medium", True, 52.0),
        ("algebra", "easy", True, 61.0),
        ("fractions", "medium", False, 88.0),
        ("algebra", "medium", False, 140.0),
        ("fractions", "hard", True, 95.0),
        ("algebra", "medium", True, 118.0),
        ("geometry", "easy", True, 0.0),  # 0 = time not recorded
    ]
    start = now - dt.timedelta(minutes=10 * len(rows))
    return [attempt(t, d, c, s, start + dt.timedelta(minutes=10 * i), item_id=f"{t}-{i}")
            for i, (t, d, c, s) in enumerate(rows)]


def example_candidates() -> list[inf.Candidate]:
    return [candidate("task-a", "fractions", "hard"), candidate("task-b", "algebra", "medium"),
            candidate("task-c", "geometry", "easy"), candidate("task-d", "probability", "medium")]


class TaskcastClient:
    """Thin, typed wrapper over the Inference and Trainer stubs.

    Tokens: `token` (admin), `reader_token` and `replica_token` are each sent as
    `authorization: Bearer <token>` on the RPCs of their role only (ROLE), and
    only when given; inference and health calls carry none.

    Transport: see parse_address. `tls=True` asks for TLS on addresses without a
    scheme (dns:///...); `ca_file` replaces the system roots; `cert_file` and
    `key_file` present a client certificate; `server_name` is the name the
    server's certificate is checked against (and sent as SNI) when the address
    is not that name: a `kubectl port-forward` to localhost, or a Service's
    address (TLS material with no TLS address is refused). Channels open on first use, so an address that is never
    called is never dialled.

    Deadlines: `timeout` on every unary call, `wait_timeout` on
    watch_training_run; watch_models_first takes its own.
    """

    def __init__(self, inference: str | None = None, trainer: str | None = None,
                 token: str | None = None, timeout: float = DEFAULT_TIMEOUT, *,
                 reader_token: str | None = None, replica_token: str | None = None,
                 wait_timeout: float = DEFAULT_WAIT_TIMEOUT, tls: bool = False,
                 ca_file: str | os.PathLike | None = None, cert_file: str | os.PathLike | None = None,
                 key_file: str | os.PathLike | None = None, server_name: str | None = None,
                 max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES) -> None:
        for name, value in (("timeout", timeout), ("wait_timeout", wait_timeout)):
            if not value or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if (cert_file is None) != (key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")
        if (ca_file is not None or cert_file is not None or server_name) and not tls and not any(
                parse_address(a)[1] for a in (inference, trainer) if a):
            # Most likely meant for TLS; refuse rather than send tokens in plaintext.
            raise ValueError("a CA, client certificate or server name was given, but no address uses TLS: "
                             "write it as https://host:port (or pass --tls for a gRPC name)")
        self.timeout = timeout
        self.wait_timeout = wait_timeout
        self.max_receive_bytes = max_receive_bytes
        self._addrs = {"inference": inference, "trainer": trainer}
        self._tokens = {ADMIN: token or None, READER: reader_token or None, REPLICA: replica_token or None}
        self._tls = tls
        # Read now, so a wrong path fails at once rather than at the first call.
        self._ca = Path(ca_file).read_bytes() if ca_file is not None else None
        self._cert = Path(cert_file).read_bytes() if cert_file is not None else None
        self._key = Path(key_file).read_bytes() if key_file is not None else None
        self._server_name = server_name or None
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def _channel(self, which: str) -> grpc.Channel:
        with self._lock:
            if which in self._channels:
                return self._channels[which]
            addr = self._addrs[which]
            if not addr:
                raise ValueError(f"no {which} address given")
            target, scheme_tls = parse_address(addr)
            if scheme_tls is False and self._tls:
                raise ValueError(f"{which} address {addr} is plaintext (http://), but TLS was asked for; "
                                 f"write it as https://{target}")
            use_tls = bool(scheme_tls) or self._tls
            # round_robin: one connection per address the target resolves to, each
            # call on the next. With `dns:///inference.<namespace>.svc.cluster.local:50051`
            # (a headless Service: one address per ready replica) calls spread over
            # every replica; with a single address it is the same as the default.
            options: list[tuple[str, object]] = [
                ("grpc.lb_policy_name", "round_robin"),
                # Safe calls are retried on UNAVAILABLE (RETRY_SERVICE_CONFIG); the
                # config is ours, not one a DNS TXT record could replace.
                ("grpc.enable_retries", 1),
                ("grpc.service_config", RETRY_SERVICE_CONFIG),
                ("grpc.service_config_disable_resolution", 1),
            ]
            if which == "trainer":
                options.append(("grpc.max_receive_message_length", self.max_receive_bytes))
            if use_tls:
                if self._server_name:
                    options.append(("grpc.ssl_target_name_override", self._server_name))
                creds = grpc.ssl_channel_credentials(
                    root_certificates=self._ca if self._ca is not None else system_root_certificates(),
                    private_key=self._key, certificate_chain=self._cert)
                ch = grpc.secure_channel(target, creds, options=options)
            else:
                ch = grpc.insecure_channel(target, options=options)
            self._channels[which] = ch
            return ch

    def close(self) -> None:
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()

    def __enter__(self) -> "TaskcastClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _metadata(self, rpc: str) -> tuple[tuple[str, str], ...]:
        role = ROLE[rpc]
        token = self._tokens[role] if role else None
        return (("authorization", f"Bearer {token}"),) if token else ()

    def _kw(self, rpc: str, timeout: float | None = None) -> dict:
        return {"timeout": self.timeout if timeout is None else timeout, "metadata": self._metadata(rpc)}

    @property
    def inference(self) -> inf_grpc.InferenceStub:
        return inf_grpc.InferenceStub(self._channel("inference"))

    @property
    def trainer(self) -> trn_grpc.TrainerStub:
        return trn_grpc.TrainerStub(self._channel("trainer"))

    # --- Inference (no token)
    def predict(self, user_id: str, history: Sequence[inf.Attempt], candidates: Sequence[inf.Candidate],
                explain: bool = False) -> inf.PredictResponse:
        req = inf.PredictRequest(user_id=user_id, history=history, candidates=candidates, explain=explain)
        return self.inference.Predict(req, **self._kw("Inference.Predict"))

    def recommend(self, user_id: str, history: Sequence[inf.Attempt], candidates: Sequence[inf.Candidate],
                  target_p_correct: float = 0.0, time_budget_seconds: float = 0.0, limit: int = 0,
                  explain: bool = False) -> inf.RecommendResponse:
        req = inf.RecommendRequest(user_id=user_id, history=history, candidates=candidates, explain=explain,
                                   target_p_correct=target_p_correct,
                                   time_budget_seconds=time_budget_seconds, limit=limit)
        return self.inference.Recommend(req, **self._kw("Inference.Recommend"))

    def get_model(self) -> inf.ModelInfo:
        return self.inference.GetModel(inf.GetModelRequest(), **self._kw("Inference.GetModel"))

    # --- Trainer: admin
    def train(self, family: str = "", force: bool = False) -> trn.TrainingRun:
        return self.trainer.Train(trn.TrainRequest(family=family, force=force), **self._kw("Trainer.Train"))

    def promote(self, version: str, canary_percent: int = 0) -> trn.ModelVersion:
        """Makes `version` active; with canary_percent (1-99), starts a canary of it
        instead (the trainer then judges it on live outcomes; Promote without a
        percent or Rollback ends it early)."""
        return self.trainer.Promote(trn.PromoteRequest(version=version, canary_percent=canary_percent),
                                    **self._kw("Trainer.Promote"))

    def rollback(self) -> trn.ModelVersion:
        return self.trainer.Rollback(trn.RollbackRequest(), **self._kw("Trainer.Rollback"))

    # --- Trainer: reader
    def get_training_run(self, run_id: str) -> trn.TrainingRun:
        return self.trainer.GetTrainingRun(trn.GetTrainingRunRequest(id=run_id),
                                           **self._kw("Trainer.GetTrainingRun"))

    def watch_training_run(self, run_id: str, timeout: float | None = None) -> Iterator[trn.TrainingRun]:
        """Yields the run's states until it ends (the server closes the stream).
        The whole stream is bounded by `timeout` (default: the client's
        wait_timeout); past it the iteration raises RpcError DEADLINE_EXCEEDED
        (the run itself goes on in the trainer)."""
        timeout = self.wait_timeout if timeout is None else timeout
        if not timeout or timeout <= 0:
            raise ValueError(f"watch_training_run needs a positive timeout, not {timeout!r}")
        yield from self.trainer.WatchTrainingRun(trn.GetTrainingRunRequest(id=run_id),
                                                 **self._kw("Trainer.WatchTrainingRun", timeout))

    def list_models(self, limit: int = 0) -> trn.ListModelsResponse:
        return self.trainer.ListModels(trn.ListModelsRequest(limit=limit), **self._kw("Trainer.ListModels"))

    def model_report(self, version: str = "", last_days: int = 0, last_rows: int = 0,
                     stuck_window: int = 0) -> trn.ModelReportResponse:
        """Live figures per served version from the predictions stored on completed tasks."""
        return self.trainer.ModelReport(trn.ModelReportRequest(
            version=version, last_days=last_days, last_rows=last_rows, stuck_window=stuck_window),
            **self._kw("Trainer.ModelReport"))

    def get_fleet(self) -> trn.Fleet:
        """The inference replicas as the trainers last heard of them: version, state, last refusal."""
        return self.trainer.GetFleet(trn.GetFleetRequest(), **self._kw("Trainer.GetFleet"))

    # --- Trainer: replica
    def report_replica(self, replica: str, version: str = "", sha256: str = "", refused_version: str = "",
                       refused_reason: str = "") -> trn.ReplicaReportAck:
        """What a replica serves and its last refusal (replicas send this themselves; for tools and tests)."""
        return self.trainer.ReportReplica(trn.ReplicaReport(
            replica=replica, version=version, sha256=sha256, refused_version=refused_version,
            refused_reason=refused_reason), **self._kw("Trainer.ReportReplica"))

    def watch_models_first(self, subscriber: str = "python-example",
                           timeout: float = DEFAULT_FIRST_ARTIFACT_TIMEOUT) -> trn.ModelArtifact:
        """The first WatchModels message (the active model), then the stream is
        cancelled. `timeout` bounds the wait for (and transfer of) that message."""
        stream = self.trainer.WatchModels(trn.WatchModelsRequest(subscriber=subscriber),
                                          **self._kw("Trainer.WatchModels", timeout))
        try:
            for artifact in stream:
                return artifact
            raise RuntimeError("WatchModels ended without sending the active model")
        finally:
            stream.cancel()

    # --- grpc.health.v1 (no token)
    def health(self, which: str = "inference", service: str = "") -> str:
        """Status name (SERVING, NOT_SERVING, ...) of `which` server ("inference" or "trainer")."""
        if which not in self._addrs:
            raise ValueError(f"health of {which!r}: expected 'inference' or 'trainer'")
        resp = health_pb2_grpc.HealthStub(self._channel(which)).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout, metadata=())
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


# ------------------------------------------------------------------ CLI


def _to_json(msg) -> str:
    # Fields at their default are printed too: `"time_modeled": false` is an
    # answer (the seconds are prior estimates), not a missing field.
    return json_format.MessageToJson(msg, preserving_proto_field_name=True, indent=2,
                                     always_print_fields_with_no_presence=True)


def _parse_candidate(text: str) -> inf.Candidate:
    parts = text.split(":")
    if not 2 <= len(parts) <= 4:
        raise argparse.ArgumentTypeError("candidate is TASK_ID:TOPIC[:DIFFICULTY[:ITEM_ID]]")
    return candidate(*parts)


def _load_history(path: str | None) -> list[inf.Attempt]:
    """JSON list of Attempt objects (proto JSON), or the built-in example history."""
    if not path:
        return example_history()
    with open(path) as f:
        return [json_format.ParseDict(a, inf.Attempt()) for a in json.load(f)]


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a positive number of seconds, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Taskcast gRPC example client",
                                epilog="Addresses: https://host:port is TLS (system roots or --ca-file); "
                                       "http://host:port and host:port are plaintext.")
    p.add_argument("--inference", default=os.environ.get("TASKCAST_INFERENCE_ADDR", DEFAULT_INFERENCE))
    p.add_argument("--trainer", default=os.environ.get("TASKCAST_TRAINER_ADDR", DEFAULT_TRAINER))
    for role, rpcs in ((ADMIN, "Train, Promote, Rollback"),
                       (READER, "ListModels, GetTrainingRun, WatchTrainingRun, ModelReport"),
                       (REPLICA, "WatchModels")):
        # The same names as the Rust client's and the trainer's own flags.
        flag, env = f"--{role}-token", f"TASKCAST_{role.upper()}_TOKEN"
        p.add_argument(flag, dest=f"{role}_token",
                       help=f"{role} bearer token, sent on {rpcs} only (default ${env}; "
                            "a command-line value is visible to other local users, prefer the file)")
        p.add_argument(f"{flag}-file", dest=f"{role}_token_file",
                       help=f"read the {role} token from this file (default ${env}_FILE)")
    # The admin flags' old names, kept working for existing scripts but no longer shown.
    p.add_argument("--token", dest="admin_token", help=argparse.SUPPRESS)
    p.add_argument("--token-file", dest="admin_token_file", help=argparse.SUPPRESS)
    p.add_argument("--tls", action="store_true",
                   help="TLS for addresses without a scheme (host:port, dns:///...); https:// always is")
    p.add_argument("--ca-file", help="PEM roots to verify the servers with, instead of the system roots")
    p.add_argument("--cert-file", help="PEM client certificate (mutual TLS; with --key-file)")
    p.add_argument("--key-file", help="PEM private key of --cert-file")
    p.add_argument("--server-name",
                   help="name to verify the servers' TLS certificates against, when the address is not that "
                        "name (e.g. trainer, through `kubectl port-forward` to localhost)")
    p.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT,
                   help=f"deadline of each unary call, seconds (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--max-receive-mib", type=int, default=DEFAULT_MAX_RECEIVE_BYTES // 2**20,
                   help="largest message accepted from the trainer, MiB (default %(default)s)")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("predict", "recommend"):
        s = sub.add_parser(name)
        s.add_argument("--user", required=True)
        s.add_argument("--history", help="JSON file with a list of attempts (default: built-in example)")
        s.add_argument("--candidate", action="append", type=_parse_candidate,
                       help="TASK_ID:TOPIC[:DIFFICULTY[:ITEM_ID]], repeatable (default: examples)")
        s.add_argument("--explain", action="store_true")
        if name == "recommend":
            s.add_argument("--target", type=float, default=0.0)
            s.add_argument("--budget", type=float, default=0.0, help="time budget in seconds")
            s.add_argument("--limit", type=int, default=0)
    sub.add_parser("model", help="GetModel")
    s = sub.add_parser("train", help="Train (admin token)")
    s.add_argument("--family", default="")
    s.add_argument("--force", action="store_true")
    s.add_argument("--wait", action="store_true", help="stream the run until it ends (reader token)")
    s.add_argument("--wait-timeout", type=_seconds, default=DEFAULT_WAIT_TIMEOUT,
                   help=f"give up waiting after this many seconds (default {DEFAULT_WAIT_TIMEOUT:g})")
    s = sub.add_parser("run", help="GetTrainingRun")
    s.add_argument("id")
    s = sub.add_parser("models", help="ListModels")
    s.add_argument("--limit", type=int, default=0)
    s = sub.add_parser("report", help="ModelReport: live figures per served version")
    s.add_argument("--version", default="")
    s.add_argument("--last-days", type=int, default=0)
    s.add_argument("--last-rows", type=int, default=0)
    s.add_argument("--stuck-window", type=int, default=0)
    sub.add_parser("fleet", help="GetFleet: each inference replica's version and state")
    s = sub.add_parser("promote", help="Promote (admin token); --canary PERCENT starts a canary instead")
    s.add_argument("version")
    s.add_argument("--canary", type=int, default=0, metavar="PERCENT",
                   help="serve VERSION to this share of learners (1-99) until the trainer judges it")
    sub.add_parser("rollback", help="Rollback (admin token)")
    s = sub.add_parser("watch-models", help="first WatchModels message (the active model), without the ONNX bytes")
    s.add_argument("--subscriber", default="python-cli")
    s.add_argument("--first-timeout", type=_seconds, default=DEFAULT_FIRST_ARTIFACT_TIMEOUT,
                   help=f"deadline for the first artifact, seconds (default {DEFAULT_FIRST_ARTIFACT_TIMEOUT:g})")
    s = sub.add_parser("health")
    s.add_argument("which", choices=["inference", "trainer"])
    s.add_argument("--service", default="")
    return p


def resolve_token(role: str, value: str | None, path: str | None) -> str | None:
    """--X-token-file, else --X-token, else $TASKCAST_X_TOKEN_FILE, else $TASKCAST_X_TOKEN; None when
    none is set (then no authorization header is sent)."""
    env = f"TASKCAST_{role.upper()}_TOKEN"
    path = path or (None if value else os.environ.get(f"{env}_FILE"))
    if path:
        token = Path(path).read_text().strip()
        if not token:
            raise ValueError(f"{role} token file {path} is empty")
        return token
    return value or os.environ.get(env) or None


class WaitTimeout(Exception):
    """train --wait: the run did not end within --wait-timeout."""

    def __init__(self, message: str, states: list) -> None:
        super().__init__(message)
        self.states = states


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--generate-only"]:
        print(f"generated into {generate(force=True)}")
        return 0
    args = build_parser().parse_args(argv)
    try:
        tokens = {role: resolve_token(role, getattr(args, f"{role}_token"), getattr(args, f"{role}_token_file"))
                  for role in (ADMIN, READER, REPLICA)}
        tc = TaskcastClient(args.inference, args.trainer, token=tokens[ADMIN], timeout=args.timeout,
                            reader_token=tokens[READER], replica_token=tokens[REPLICA], tls=args.tls,
                            ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file,
                            server_name=args.server_name,
                            max_receive_bytes=args.max_receive_mib * 2**20)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tc:
        try:
            out, rc = _run(tc, args), 0
        except WaitTimeout as e:
            out, rc = e.states, 1
            print(f"error: {e}", file=sys.stderr)
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    for msg in out if isinstance(out, list) else [out]:
        print(msg if isinstance(msg, str) else _to_json(msg))
    return rc


def _run(tc: TaskcastClient, a: argparse.Namespace):
    if a.cmd in ("predict", "recommend"):
        history, cands = _load_history(a.history), a.candidate or example_candidates()
        if a.cmd == "predict":
            return tc.predict(a.user, history, cands, explain=a.explain)
        return tc.recommend(a.user, history, cands, a.target, a.budget, a.limit, explain=a.explain)
    if a.cmd == "model":
        return tc.get_model()
    if a.cmd == "train":
        run = tc.train(a.family, a.force)
        if not a.wait:
            return run
        states: list = []
        try:
            for state in tc.watch_training_run(run.id, timeout=a.wait_timeout):
                states.append(state)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            raise WaitTimeout(f"DEADLINE_EXCEEDED: training run {run.id} did not end within --wait-timeout "
                              f"{a.wait_timeout:g} s; it goes on in the trainer (`client.py run {run.id}` "
                              "shows it)", states) from e
        return states
    if a.cmd == "run":
        return tc.get_training_run(a.id)
    if a.cmd == "models":
        return tc.list_models(a.limit)
    if a.cmd == "fleet":
        return tc.get_fleet()
    if a.cmd == "report":
        return tc.model_report(a.version, a.last_days, a.last_rows, a.stuck_window)
    if a.cmd == "promote":
        return tc.promote(a.version, a.canary)
    if a.cmd == "rollback":
        return tc.rollback()
    if a.cmd == "watch-models":
        art = tc.watch_models_first(a.subscriber, timeout=a.first_timeout)
        size = len(art.onnx)
        art.ClearField("onnx")
        return [_to_json(art), f"onnx: {size} bytes"]
    if a.cmd == "health":
        return tc.health(a.which, a.service)
    raise AssertionError(a.cmd)


if __name__ == "__main__":
    sys.exit(main())
