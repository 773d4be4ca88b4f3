"""The example client's retries, against in-process grpcio servers that answer
UNAVAILABLE: safe calls (Predict, Recommend, GetModel, the trainer's reads,
health) are retried with backoff within a budget; Train, Promote and Rollback
never are. Also: the admin token's flag has one documented name, the one the
Rust client, the trainer, scripts/run.sh and the docs use.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory

sys.path.insert(0, str(Path(__file__).resolve().parent))
import client  # noqa: E402
from test_transport import serve  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def empty_answer(rpc: str):
    """The empty response message of `Service.Method`."""
    service, method = rpc.split(".")
    module = client.inf if service == "Inference" else client.trn
    out = module.DESCRIPTOR.services_by_name[service].methods_by_name[method].output_type
    return message_factory.GetMessageClass(out)()


def unavailable_for(n: int, rpc: str):
    """An RPC body that answers UNAVAILABLE to its first `n` calls, then the empty answer."""
    seen = {"calls": 0}
    lock = threading.Lock()

    def fn(request, context):
        with lock:
            seen["calls"] += 1
            k = seen["calls"]
        if k <= n:
            context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")
        return empty_answer(rpc)

    return fn


def always(code: grpc.StatusCode):
    def fn(request, context):
        context.abort(code, "no")

    return fn


def count(rec, rpc: str) -> int:
    return sum(r == rpc for r, _, _ in rec.calls)


def test_safe_calls_are_retried_on_unavailable():
    # Two servers, as inference and the trainer are: gRPC keeps one retry
    # budget per server name, and each stays above its half here.
    inference = {"Predict": unavailable_for(2, "Inference.Predict"), "Recommend": unavailable_for(1, "Inference.Recommend"),
                 "GetModel": unavailable_for(1, "Inference.GetModel")}
    trainer = {"ListModels": unavailable_for(1, "Trainer.ListModels"), "ModelReport": unavailable_for(2, "Trainer.ModelReport"),
               "GetTrainingRun": unavailable_for(1, "Trainer.GetTrainingRun")}
    with serve(inference=inference) as (iport, irec), serve(trainer=trainer) as (tport, trec):
        with client.TaskcastClient(f"127.0.0.1:{iport}", f"127.0.0.1:{tport}", reader_token="rd") as tc:
            started = time.monotonic()
            tc.predict("u", client.example_history(), client.example_candidates())
            tc.recommend("u", client.example_history(), client.example_candidates())
            tc.get_model()
            tc.list_models()
            tc.model_report()
            tc.get_training_run("r1")
            took = time.monotonic() - started
    assert count(irec, "Inference.Predict") == 3
    assert count(irec, "Inference.Recommend") == 2
    assert count(irec, "Inference.GetModel") == 2
    assert count(trec, "Trainer.ListModels") == 2
    assert count(trec, "Trainer.ModelReport") == 3
    assert count(trec, "Trainer.GetTrainingRun") == 2
    # Backoff, not a tight loop (8 retries at a randomised 0-0.1, 0-0.2 s),
    # and nowhere near the calls' deadline.
    assert took < 5, took


def test_attempts_are_bounded_and_other_codes_are_not_retried():
    overrides = {"Predict": always(grpc.StatusCode.UNAVAILABLE), "GetModel": always(grpc.StatusCode.INTERNAL),
                 "Recommend": always(grpc.StatusCode.INVALID_ARGUMENT)}
    with serve(inference=overrides) as (port, rec):
        with client.TaskcastClient(f"127.0.0.1:{port}") as tc:
            with pytest.raises(grpc.RpcError) as e:
                tc.predict("u", client.example_history(), client.example_candidates())
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            for call in (tc.get_model, lambda: tc.recommend("u", [], client.example_candidates())):
                with pytest.raises(grpc.RpcError):
                    call()
    assert count(rec, "Inference.Predict") == client.RETRY_POLICY["maxAttempts"]
    assert count(rec, "Inference.GetModel") == 1
    assert count(rec, "Inference.Recommend") == 1


@pytest.mark.parametrize("rpc", ["Train", "Promote", "Rollback"])
def test_train_promote_rollback_are_never_retried(rpc):
    with serve(trainer={rpc: always(grpc.StatusCode.UNAVAILABLE)}) as (port, rec):
        with client.TaskcastClient(trainer=f"127.0.0.1:{port}", token="adm") as tc:
            call = {"Train": tc.train, "Promote": lambda: tc.promote("v1"), "Rollback": tc.rollback}[rpc]
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert count(rec, f"Trainer.{rpc}") == 1


def test_the_retry_budget_stops_retries_when_the_server_is_down():
    """retryThrottling: with every attempt failing, the tokens run out and
    calls go out once each, instead of four times."""
    with serve(inference={"GetModel": always(grpc.StatusCode.UNAVAILABLE)}) as (port, rec):
        with client.TaskcastClient(f"127.0.0.1:{port}") as tc:
            for _ in range(20):
                with pytest.raises(grpc.RpcError):
                    tc.get_model()
    attempts = count(rec, "Inference.GetModel")
    # Unthrottled that would be 80. The budget (10 tokens, retries only above
    # 5) allows a handful of retries before every call is a single attempt.
    assert 20 < attempts <= 20 + 6, attempts


def test_the_policy_covers_exactly_the_safe_methods():
    config = json.loads(client.RETRY_SERVICE_CONFIG)
    (mc,) = config["methodConfig"]
    named = {f"{n['service'].split('.')[-1]}.{n['method']}" for n in mc["name"]}
    assert mc["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    unsafe = {"Trainer.Train", "Trainer.Promote", "Trainer.Rollback"}
    # Every RPC of the protos is either retried or one of the three that change state.
    assert named == (set(client.ROLE) - unsafe) | {"Health.Check"}
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}


def test_token_flags_have_one_name_everywhere():
    """--admin-token-file / --reader-token-file / --replica-token-file (and
    --X-token): the Python and Rust clients' flags, what scripts/run.sh prints,
    the docs and deploy/k8s/secrets/README.md. `--token-file` and `--token`
    still work in both clients, unadvertised."""
    helptext = client.build_parser().format_help()
    for role in ("admin", "reader", "replica"):
        assert f"--{role}-token-file" in helptext and f"--{role}-token " in helptext, role
    assert "--token-file" not in helptext and "--token " not in helptext
    args = client.build_parser().parse_args(["--token-file", "f", "model"])
    assert args.admin_token_file == "f"
    documents = [ROOT / "README.md", ROOT / "scripts" / "run.sh", ROOT / "deploy" / "k8s" / "secrets" / "README.md",
                 *sorted((ROOT / "docs").glob("*.md")), ROOT / "RELIABILITY.md"]
    for path in documents:
        text = path.read_text()
        # `--admin-token-file` holds no `--token`: only the old names match.
        stale = re.findall(r"--token(?:-file)?(?![\w-])", text)
        assert not stale, f"{path.relative_to(ROOT)} names {stale}"
