#!/usr/bin/env python3
"""Taskcast example client: a small library and CLI for every RPC of taskcast.v1.

Library:

    from client import TaskcastClient, example_history, candidate
    with TaskcastClient(inference="localhost:50051", trainer="localhost:50052",
                        token=os.environ.get("TASKCAST_ADMIN_TOKEN")) as tc:
        resp = tc.predict("learner-1", example_history(),
                          [candidate("t1", "fractions", "medium")])

CLI (addresses default to $TASKCAST_INFERENCE_ADDR / $TASKCAST_TRAINER_ADDR,
then localhost:50051 / localhost:50052; the admin token to
$TASKCAST_ADMIN_TOKEN or --token-file). In Kubernetes, give inference as
dns:///inference.<namespace>.svc.cluster.local:50051: the headless Service
resolves to every replica and calls are balanced round-robin over them.

    python client.py predict --user u1 --candidate t1:fractions:medium
    python client.py recommend --user u1 --candidate a:fractions:easy --candidate b:algebra:hard
    python client.py model | train [--family linear] | run ID | models | promote VERSION
    python client.py rollback | watch-models | health {inference,trainer}

The gRPC code is generated from proto/ into gen/ (git-ignored) on first import
when missing or older than the .proto files; gen.sh does the same explicitly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator, Sequence

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
GEN = HERE / "gen"
PROTOS = ["taskcast/v1/inference.proto", "taskcast/v1/trainer.proto"]


def generate(force: bool = False) -> Path:
    """Runs grpcio-tools' protoc over proto/ into gen/ if missing or stale."""
    outputs = [GEN / p.replace(".proto", "_pb2.py") for p in PROTOS]
    outputs += [GEN / p.replace(".proto", "_pb2_grpc.py") for p in PROTOS]
    newest_src = max((PROTO_ROOT / p).stat().st_mtime for p in PROTOS)
    if not force and all(o.exists() and o.stat().st_mtime >= newest_src for o in outputs):
        return GEN
    import importlib.resources

    from grpc_tools import protoc

    # The well-known types (timestamp.proto) ship inside grpc_tools.
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    GEN.mkdir(exist_ok=True)
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={GEN}",
            f"--grpc_python_out={GEN}", f"--pyi_out={GEN}", *PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return GEN


generate()
sys.path.insert(0, str(GEN))

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


def _target(addr: str) -> str:
    """Accepts host:port, an http(s):// URL (as the Rust services print them), or
    a gRPC name such as dns:///host:port (kept as it is)."""
    for scheme in ("http://", "https://", "grpc://"):
        if addr.startswith(scheme):
            addr = addr[len(scheme):]
    return addr.rstrip("/")


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

    `token` is sent as `authorization: Bearer <token>` on every call (the admin
    RPCs Train, Promote and Rollback need it; the others ignore it).
    """

    def __init__(self, inference: str | None = None, trainer: str | None = None,
                 token: str | None = None, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channels: list[grpc.Channel] = []
        self._inference_ch = self._open(inference) if inference else None
        self._trainer_ch = self._open(trainer) if trainer else None

    def _open(self, addr: str) -> grpc.Channel:
        # round_robin: one connection per address the target resolves to, each
        # call on the next. With `dns:///inference.<namespace>.svc.cluster.local:50051`
        # (a headless Service: one address per ready replica) calls spread over
        # every replica; with a single address it is the same as the default.
        ch = grpc.insecure_channel(_target(addr), options=[("grpc.lb_policy_name", "round_robin")])
        self._channels.append(ch)
        return ch

    def close(self) -> None:
        for ch in self._channels:
            ch.close()

    def __enter__(self) -> "TaskcastClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _kw(self) -> dict:
        return {"timeout": self.timeout, "metadata": self._metadata}

    @property
    def inference(self) -> inf_grpc.InferenceStub:
        if self._inference_ch is None:
            raise ValueError("no inference address given")
        return inf_grpc.InferenceStub(self._inference_ch)

    @property
    def trainer(self) -> trn_grpc.TrainerStub:
        if self._trainer_ch is None:
            raise ValueError("no trainer address given")
        return trn_grpc.TrainerStub(self._trainer_ch)

    # --- Inference
    def predict(self, user_id: str, history: Sequence[inf.Attempt], candidates: Sequence[inf.Candidate],
                explain: bool = False) -> inf.PredictResponse:
        req = inf.PredictRequest(user_id=user_id, history=history, candidates=candidates, explain=explain)
        return self.inference.Predict(req, **self._kw())

    def recommend(self, user_id: str, history: Sequence[inf.Attempt], candidates: Sequence[inf.Candidate],
                  target_p_correct: float = 0.0, time_budget_seconds: float = 0.0, limit: int = 0,
                  explain: bool = False) -> inf.RecommendResponse:
        req = inf.RecommendRequest(user_id=user_id, history=history, candidates=candidates, explain=explain,
                                   target_p_correct=target_p_correct,
                                   time_budget_seconds=time_budget_seconds, limit=limit)
        return self.inference.Recommend(req, **self._kw())

    def get_model(self) -> inf.ModelInfo:
        return self.inference.GetModel(inf.GetModelRequest(), **self._kw())

    # --- Trainer
    def train(self, family: str = "", force: bool = False) -> trn.TrainingRun:
        return self.trainer.Train(trn.TrainRequest(family=family, force=force), **self._kw())

    def get_training_run(self, run_id: str) -> trn.TrainingRun:
        return self.trainer.GetTrainingRun(trn.GetTrainingRunRequest(id=run_id), **self._kw())

    def watch_training_run(self, run_id: str, timeout: float | None = None) -> Iterator[trn.TrainingRun]:
        """Yields the run's states until it ends (the server closes the stream)."""
        yield from self.trainer.WatchTrainingRun(trn.GetTrainingRunRequest(id=run_id),
                                                 timeout=timeout, metadata=self._metadata)

    def list_models(self, limit: int = 0) -> trn.ListModelsResponse:
        return self.trainer.ListModels(trn.ListModelsRequest(limit=limit), **self._kw())

    def model_report(self, version: str = "", last_days: int = 0, last_rows: int = 0,
                     stuck_window: int = 0) -> trn.ModelReportResponse:
        """Live figures per served version from the predictions stored on completed tasks."""
        return self.trainer.ModelReport(trn.ModelReportRequest(
            version=version, last_days=last_days, last_rows=last_rows, stuck_window=stuck_window), **self._kw())

    def promote(self, version: str) -> trn.ModelVersion:
        return self.trainer.Promote(trn.PromoteRequest(version=version), **self._kw())

    def rollback(self) -> trn.ModelVersion:
        return self.trainer.Rollback(trn.RollbackRequest(), **self._kw())

    def watch_models_first(self, subscriber: str = "python-example") -> trn.ModelArtifact:
        """The first WatchModels message (the active model), then the stream is cancelled."""
        stream = self.trainer.WatchModels(trn.WatchModelsRequest(subscriber=subscriber), **self._kw())
        try:
            return next(iter(stream))
        finally:
            stream.cancel()

    # --- grpc.health.v1
    def health(self, which: str = "inference", service: str = "") -> str:
        """Status name (SERVING, NOT_SERVING, ...) of `which` server ("inference" or "trainer")."""
        ch = {"inference": self._inference_ch, "trainer": self._trainer_ch}[which]
        if ch is None:
            raise ValueError(f"no {which} address given")
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), **self._kw())
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Taskcast gRPC example client")
    p.add_argument("--inference", default=os.environ.get("TASKCAST_INFERENCE_ADDR", DEFAULT_INFERENCE))
    p.add_argument("--trainer", default=os.environ.get("TASKCAST_TRAINER_ADDR", DEFAULT_TRAINER))
    p.add_argument("--token", default=os.environ.get("TASKCAST_ADMIN_TOKEN"), help="admin bearer token")
    p.add_argument("--token-file", help="read the admin token from this file")
    p.add_argument("--timeout", type=float, default=10.0)
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
    s = sub.add_parser("train")
    s.add_argument("--family", default="")
    s.add_argument("--force", action="store_true")
    s.add_argument("--wait", action="store_true", help="stream the run until it ends")
    s = sub.add_parser("run", help="GetTrainingRun")
    s.add_argument("id")
    s = sub.add_parser("models", help="ListModels")
    s.add_argument("--limit", type=int, default=0)
    s = sub.add_parser("report", help="ModelReport: live figures per served version")
    s.add_argument("--version", default="")
    s.add_argument("--last-days", type=int, default=0)
    s.add_argument("--last-rows", type=int, default=0)
    s.add_argument("--stuck-window", type=int, default=0)
    s = sub.add_parser("promote")
    s.add_argument("version")
    sub.add_parser("rollback")
    s = sub.add_parser("watch-models", help="first WatchModels message (the active model), without the ONNX bytes")
    s.add_argument("--subscriber", default="python-cli")
    s = sub.add_parser("health")
    s.add_argument("which", choices=["inference", "trainer"])
    s.add_argument("--service", default="")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--generate-only"]:
        print(f"generated into {generate(force=True)}")
        return 0
    args = build_parser().parse_args(argv)
    token = args.token
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
    with TaskcastClient(args.inference, args.trainer, token=token, timeout=args.timeout) as tc:
        try:
            out = _run(tc, args)
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    for msg in out if isinstance(out, list) else [out]:
        print(msg if isinstance(msg, str) else _to_json(msg))
    return 0


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
        return list(tc.watch_training_run(run.id)) if a.wait else run
    if a.cmd == "run":
        return tc.get_training_run(a.id)
    if a.cmd == "models":
        return tc.list_models(a.limit)
    if a.cmd == "report":
        return tc.model_report(a.version, a.last_days, a.last_rows, a.stuck_window)
    if a.cmd == "promote":
        return tc.promote(a.version)
    if a.cmd == "rollback":
        return tc.rollback()
    if a.cmd == "watch-models":
        art = tc.watch_models_first(a.subscriber)
        size = len(art.onnx)
        art.ClearField("onnx")
        return [_to_json(art), f"onnx: {size} bytes"]
    if a.cmd == "health":
        return tc.health(a.which, a.service)
    raise AssertionError(a.cmd)


if __name__ == "__main__":
    sys.exit(main())
