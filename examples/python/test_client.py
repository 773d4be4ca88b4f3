"""Tests for the example client.

Offline (always run): the code generated from proto/ imports, the client covers
every RPC and gives each a token role, and against an in-process fake server it
sends the admin token on admin calls only and takes only the first WatchModels
message. test_transport.py (tokens per role, TLS, deadlines, receive limit) and
test_stubs.py (the generated-code cache) hold the rest of the offline tests.

Live (run by the Rust end-to-end harness, which starts the real services and
sets TASKCAST_INFERENCE_ADDR / TASKCAST_TRAINER_ADDR, and TASKCAST_ADMIN_TOKEN
when the trainer is started with one; TASKCAST_READER_TOKEN and
TASKCAST_REPLICA_TOKEN when it has those roles): real assertions on real
responses. Skipped only when the addresses are unset.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import client  # noqa: E402  (generates the stubs into the cache on first import)
from client import inf, inf_grpc, trn, trn_grpc  # noqa: E402

INFERENCE_ADDR = os.environ.get("TASKCAST_INFERENCE_ADDR")
TRAINER_ADDR = os.environ.get("TASKCAST_TRAINER_ADDR")
ADMIN_TOKEN = os.environ.get("TASKCAST_ADMIN_TOKEN")
READER_TOKEN = os.environ.get("TASKCAST_READER_TOKEN")
REPLICA_TOKEN = os.environ.get("TASKCAST_REPLICA_TOKEN")

needs_inference = pytest.mark.skipif(not INFERENCE_ADDR, reason="TASKCAST_INFERENCE_ADDR not set (set by the e2e harness)")
needs_trainer = pytest.mark.skipif(not TRAINER_ADDR, reason="TASKCAST_TRAINER_ADDR not set (set by the e2e harness)")

# Each RPC in the protos -> the client method that calls it.
CLIENT_METHOD = {
    "Inference.Predict": "predict", "Inference.Recommend": "recommend", "Inference.GetModel": "get_model",
    "Trainer.Train": "train", "Trainer.GetTrainingRun": "get_training_run",
    "Trainer.WatchTrainingRun": "watch_training_run", "Trainer.ListModels": "list_models",
    "Trainer.Promote": "promote", "Trainer.Rollback": "rollback", "Trainer.WatchModels": "watch_models_first",
    "Trainer.ModelReport": "model_report", "Trainer.GetFleet": "get_fleet",
    "Trainer.ReportReplica": "report_replica",
}


# ------------------------------------------------------------------ offline


def test_generated_code_matches_protos():
    rpcs = {f"{s.name}.{m.name}" for mod in (inf, trn) for s in mod.DESCRIPTOR.services_by_name.values()
            for m in s.methods}
    # A new RPC in the protos must get a client method (and an entry above).
    assert rpcs == set(CLIENT_METHOD)
    for rpc, method in CLIENT_METHOD.items():
        assert callable(getattr(client.TaskcastClient, method)), rpc
    assert inf.DESCRIPTOR.package == "taskcast.v1"
    # ... and a decision on which token it carries, if any.
    assert set(client.ROLE) == rpcs
    assert {rpc for rpc, role in client.ROLE.items() if role is None} == {
        "Inference.Predict", "Inference.Recommend", "Inference.GetModel"}


def test_example_history_is_oldest_first_and_valid():
    hist = client.example_history()
    times = [a.completed_at.ToDatetime() for a in hist]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(a.seconds >= 0 and math.isfinite(a.seconds) for a in hist)
    req = inf.PredictRequest(user_id="u", history=hist, candidates=client.example_candidates())
    assert inf.PredictRequest.FromString(req.SerializeToString()) == req


def test_target_accepts_urls():
    assert client._target("http://127.0.0.1:50051/") == "127.0.0.1:50051"
    assert client._target("https://trainer.example:50052") == "trainer.example:50052"
    assert client._target("localhost:50052") == "localhost:50052"
    assert client._target("dns:///inference.ns.svc.cluster.local:50051") == (
        "dns:///inference.ns.svc.cluster.local:50051")


def _auth(context) -> str:
    return dict(context.invocation_metadata()).get("authorization", "<none>")


class _FakeInference(inf_grpc.InferenceServicer):
    """Echoes the authorization header as the model version."""

    def GetModel(self, request, context):
        return inf.ModelInfo(version=_auth(context))


class _FakeTrainer(trn_grpc.TrainerServicer):
    def __init__(self):
        self.sent = 0

    def Train(self, request, context):
        return trn.TrainingRun(id=_auth(context))

    def ListModels(self, request, context):
        return trn.ListModelsResponse(models=[trn.ModelVersion(version=_auth(context))])

    def WatchModels(self, request, context):
        for i in range(1000):  # endless for practical purposes; the client must stop after one
            if not context.is_active():
                return
            self.sent += 1
            yield trn.ModelArtifact(version=f"v{i}", onnx=b"x")


@pytest.fixture()
def fake_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trainer = _FakeTrainer()
    inf_grpc.add_InferenceServicer_to_server(_FakeInference(), server)
    trn_grpc.add_TrainerServicer_to_server(trainer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", trainer
    finally:
        server.stop(grace=None)


def test_admin_token_is_sent_on_admin_calls_only(fake_server):
    addr, _ = fake_server
    with client.TaskcastClient(inference=addr, trainer=addr, token="s3cret") as tc:
        assert tc.train().id == "Bearer s3cret"
        assert tc.get_model().version == "<none>", "inference calls carry no token"
        assert tc.list_models().models[0].version == "<none>", "read calls carry the reader token only"
    with client.TaskcastClient(inference=addr, trainer=addr, token="s3cret", reader_token="r34d") as tc:
        assert tc.list_models().models[0].version == "Bearer r34d"
    with client.TaskcastClient(inference=f"http://{addr}", trainer=addr) as tc:
        assert tc.get_model().version == "<none>"
        assert tc.train().id == "<none>"


def test_watch_models_first_takes_one_message(fake_server):
    addr, trainer = fake_server
    with client.TaskcastClient(trainer=addr) as tc:
        assert tc.watch_models_first().version == "v0"
    assert trainer.sent < 1000, "stream was not cancelled"


def test_cli_reports_rpc_errors(capsys):
    # Nothing listens on port 1: the CLI must fail cleanly with the gRPC code.
    assert client.main(["--inference", "127.0.0.1:1", "--timeout", "2", "model"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


# ------------------------------------------------------------------ live


@pytest.fixture(scope="module")
def live():
    with client.TaskcastClient(INFERENCE_ADDR, TRAINER_ADDR, token=ADMIN_TOKEN, reader_token=READER_TOKEN,
                               replica_token=REPLICA_TOKEN, timeout=30) as tc:
        yield tc


@needs_inference
def test_inference_health_serving(live):
    assert live.health("inference") == "SERVING"


@needs_inference
def test_predict(live):
    cands = client.example_candidates()
    resp = live.predict("learner-1", client.example_history(), cands, explain=True)
    assert resp.model_version
    assert [p.task_id for p in resp.predictions] == [c.task_id for c in cands], "not in candidate order"
    for p in resp.predictions:
        assert 0.0 <= p.p_correct <= 1.0, p
        assert 0.0 <= p.seconds_low <= p.seconds <= p.seconds_high, p
        assert all(math.isfinite(x) for x in (p.p_correct, p.seconds, p.seconds_low, p.seconds_high))
        effects = [abs(r.effect) for r in p.reasons]
        assert effects == sorted(effects, reverse=True), "reasons must be largest |effect| first"
    by_id = {p.task_id: p for p in resp.predictions}
    # "probability" never appears in the history; "fractions" does.
    assert by_id["task-d"].cold_start and not by_id["task-a"].cold_start


@needs_inference
def test_predict_rejects_empty_user_id(live):
    with pytest.raises(grpc.RpcError) as err:
        live.predict("", client.example_history(), client.example_candidates())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id" in err.value.details()


@needs_inference
def test_recommend(live):
    cands = client.example_candidates()
    resp = live.recommend("learner-1", client.example_history(), cands)
    assert resp.model_version
    assert resp.target_p_correct == pytest.approx(0.7)  # 0 means the default
    gaps = [abs(p.p_correct - resp.target_p_correct) for p in resp.predictions]
    assert gaps == sorted(gaps), "best (closest to target) first"
    assert {p.task_id for p in resp.predictions} <= {c.task_id for c in cands}
    assert resp.total_seconds == pytest.approx(sum(p.seconds for p in resp.predictions))
    limited = live.recommend("learner-1", client.example_history(), cands, target_p_correct=0.5, limit=2)
    assert len(limited.predictions) <= 2 and limited.target_p_correct == pytest.approx(0.5)


@needs_inference
def test_get_model(live):
    info = live.get_model()
    assert info.version and info.family and info.feature_schema
    assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)
    assert info.history_window > 0 and len(info.features) > 0


@needs_trainer
def test_trainer_health_serving(live):
    assert live.health("trainer") == "SERVING"


@needs_trainer
def test_list_models_and_watch_first(live):
    models = live.list_models().models
    assert models, "the registry holds at least the active model"
    created = [m.created_at.ToDatetime() for m in models]
    assert created == sorted(created, reverse=True), "newest first"
    assert sum(m.state == "active" for m in models) == 1
    art = live.watch_models_first("pytest")
    assert art.version and art.onnx
    assert hashlib.sha256(art.onnx).hexdigest() == art.sha256
    (active,) = [m for m in models if m.state == "active"]
    assert art.version == active.version
    assert len(live.list_models(limit=1).models) == 1


@needs_trainer
def test_model_report(live):
    # A read RPC: the reader token when the trainer has that role, else none.
    # The harness's backend stores no predictions, so the report may list no
    # version; the window comes back as applied.
    with client.TaskcastClient(trainer=TRAINER_ADDR, reader_token=READER_TOKEN) as reader:
        resp = reader.model_report(last_days=30)
    if READER_TOKEN:
        # The admin token is not a reader token, and nothing is sent without one.
        with client.TaskcastClient(trainer=TRAINER_ADDR, token=ADMIN_TOKEN) as admin_only:
            with pytest.raises(grpc.RpcError) as err:
                admin_only.model_report(last_days=30)
            assert err.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    assert resp.last_days == 30 and resp.stuck_window == 5
    assert resp.generated_at.seconds > 0
    assert all(v.version and v.rows > 0 for v in resp.versions)
    with pytest.raises(grpc.RpcError) as err:
        live.model_report(stuck_window=1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "stuck_window" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        live.model_report(version="no-such-version")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@needs_trainer
def test_get_training_run_unknown_id(live):
    with pytest.raises(grpc.RpcError) as err:
        live.get_training_run("no-such-run")
    assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


@needs_trainer
@pytest.mark.skipif(not ADMIN_TOKEN, reason="TASKCAST_ADMIN_TOKEN not set")
def test_admin_rpcs(live):
    # Without the token the admin RPCs are refused.
    with client.TaskcastClient(trainer=TRAINER_ADDR, token="wrong-token") as anon:
        with pytest.raises(grpc.RpcError) as err:
            anon.train()
        assert err.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    run = live.train()
    assert run.id and run.state in {"RUNNING", "SUCCEEDED", "REJECTED", "FAILED"}
    assert live.get_training_run(run.id).id == run.id
    # Wait for the run to end so it cannot promote behind the caller's back.
    states = [r.state for r in live.watch_training_run(run.id, timeout=300)]
    assert states and states[-1] in {"SUCCEEDED", "REJECTED", "FAILED"}, states
    with pytest.raises(grpc.RpcError) as err:
        live.promote("no-such-version")
    assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT,
                                grpc.StatusCode.FAILED_PRECONDITION)
