"""Offline tests of how the example client talks to servers, against in-process
grpcio servers: which calls carry which token, TLS for https:// (a throwaway
CA and certificates made with the openssl CLI), deadlines on every call and
stream, and the trainer channel's receive limit.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import client  # noqa: E402
from client import ADMIN, READER, REPLICA, inf, inf_grpc, trn, trn_grpc  # noqa: E402

MIB = 2**20


# ------------------------------------------------------------------ fake servers


class Recorder:
    """What each call brought: (rpc, authorization header or None, seconds left before its deadline or None)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, float | None]] = []

    def note(self, rpc: str, context) -> None:
        md = dict(context.invocation_metadata())
        self.calls.append((rpc, md.get("authorization"), context.time_remaining()))

    def auth_by_rpc(self) -> dict[str, set]:
        out: dict[str, set] = defaultdict(set)
        for rpc, auth, _ in self.calls:
            out[rpc].add(auth)
        return dict(out)


def recording_servicer(base: type, module, rec: Recorder, overrides: dict | None = None):
    """An instance of the generated servicer `base` whose every method records
    the call and answers an empty message (one message for a stream), except
    those in `overrides` (name -> function(request, context))."""
    service = module.DESCRIPTOR.services_by_name[base.__name__.removesuffix("Servicer")]
    attrs = {}
    for m in service.methods:
        rpc, out_cls = f"{service.name}.{m.name}", message_factory.GetMessageClass(m.output_type)
        custom = (overrides or {}).get(m.name)
        if m.server_streaming:
            def fn(self, request, context, rpc=rpc, out_cls=out_cls, custom=custom):
                rec.note(rpc, context)
                yield from (custom(request, context) if custom else [out_cls()])
        else:
            def fn(self, request, context, rpc=rpc, out_cls=out_cls, custom=custom):
                rec.note(rpc, context)
                return custom(request, context) if custom else out_cls()
        attrs[m.name] = fn
    return type(f"Recording{service.name}", (base,), attrs)()


class RecordingHealth(health_pb2_grpc.HealthServicer):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def Check(self, request, context):
        self.rec.note("Health.Check", context)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@contextmanager
def serve(inference: dict | None = None, trainer: dict | None = None, creds=None):
    """One server with Inference, Trainer and Health; yields (port, recorder)."""
    rec = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    inf_grpc.add_InferenceServicer_to_server(recording_servicer(inf_grpc.InferenceServicer, inf, rec, inference), server)
    trn_grpc.add_TrainerServicer_to_server(recording_servicer(trn_grpc.TrainerServicer, trn, rec, trainer), server)
    health_pb2_grpc.add_HealthServicer_to_server(RecordingHealth(rec), server)
    port = (server.add_secure_port("127.0.0.1:0", creds) if creds else server.add_insecure_port("127.0.0.1:0"))
    server.start()
    try:
        yield port, rec
    finally:
        server.stop(grace=None)


def call_everything(tc: client.TaskcastClient) -> None:
    hist, cands = client.example_history(), client.example_candidates()
    tc.predict("u", hist, cands)
    tc.recommend("u", hist, cands)
    tc.get_model()
    tc.train()
    tc.promote("v1")
    tc.rollback()
    tc.get_training_run("r1")
    list(tc.watch_training_run("r1"))
    tc.list_models()
    tc.model_report()
    tc.get_fleet()
    tc.watch_models_first()
    tc.report_replica("r1", "v1")
    tc.health("inference")
    tc.health("trainer")


def block_until_cancelled(context, cap: float = 10.0) -> None:
    """Until the client gives up; at most `cap` seconds, so a client without a
    deadline makes the test fail instead of hanging."""
    end = time.monotonic() + cap
    while context.is_active() and time.monotonic() < end:
        time.sleep(0.05)


# ------------------------------------------------------------------ tokens


def test_each_token_goes_only_on_its_roles_calls():
    with serve() as (port, rec):
        addr = f"127.0.0.1:{port}"
        with client.TaskcastClient(addr, addr, token="adm", reader_token="rd", replica_token="rep") as tc:
            call_everything(tc)
    auth = rec.auth_by_rpc()
    # Every RPC of the protos was called, and health on both servers.
    assert set(auth) == set(client.ROLE) | {"Health.Check"}
    assert sum(rpc == "Health.Check" for rpc, _, _ in rec.calls) == 2
    # Inference and health: never a token.
    for rpc in ("Inference.Predict", "Inference.Recommend", "Inference.GetModel", "Health.Check"):
        assert auth[rpc] == {None}, rpc
    # Admin calls: the admin token only.
    for rpc in ("Trainer.Train", "Trainer.Promote", "Trainer.Rollback"):
        assert auth[rpc] == {"Bearer adm"}, rpc
    for rpc in ("Trainer.ListModels", "Trainer.GetTrainingRun", "Trainer.WatchTrainingRun", "Trainer.ModelReport",
                "Trainer.GetFleet"):
        assert auth[rpc] == {"Bearer rd"}, rpc
    assert auth["Trainer.WatchModels"] == auth["Trainer.ReportReplica"] == {"Bearer rep"}
    # The admin token appears nowhere else.
    assert {rpc for rpc, a, _ in rec.calls if a == "Bearer adm"} == {"Trainer.Train", "Trainer.Promote",
                                                                     "Trainer.Rollback"}


def test_admin_token_alone_is_sent_on_admin_calls_only():
    # Given only the admin token, the Python client sends it on admin calls alone: read calls go
    # without one (a trainer with a reader token refuses them; pass --reader-token-file).
    with serve() as (port, rec):
        addr = f"127.0.0.1:{port}"
        with client.TaskcastClient(addr, addr, token="adm") as tc:
            call_everything(tc)
    carrying = {rpc for rpc, a, _ in rec.calls if a is not None}
    assert carrying == {"Trainer.Train", "Trainer.Promote", "Trainer.Rollback"}
    assert {a for _, a, _ in rec.calls} == {None, "Bearer adm"}


def test_no_tokens_no_authorization_header():
    with serve() as (port, rec):
        addr = f"127.0.0.1:{port}"
        with client.TaskcastClient(addr, addr) as tc:
            call_everything(tc)
    assert rec.calls and all(a is None for _, a, _ in rec.calls)


def test_cli_tokens_from_files_flags_and_env(tmp_path, monkeypatch, capsys):
    for var in ("ADMIN", "READER", "REPLICA"):
        monkeypatch.delenv(f"TASKCAST_{var}_TOKEN", raising=False)
        monkeypatch.delenv(f"TASKCAST_{var}_TOKEN_FILE", raising=False)
    (tmp_path / "admin").write_text("from-file\n")
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("TASKCAST_READER_TOKEN", "reader-from-env")
    monkeypatch.setenv("TASKCAST_ADMIN_TOKEN", "admin-from-env")  # the file flag wins over it
    with serve() as (port, rec):
        base = ["--inference", f"127.0.0.1:{port}", "--trainer", f"http://127.0.0.1:{port}",
                "--admin-token-file", str(tmp_path / "admin"), "--replica-token", "rep-flag"]
        for cmd in (["train"], ["models"], ["run", "r1"], ["watch-models"], ["model"],
                    ["predict", "--user", "u"], ["health", "trainer"], ["health", "inference"]):
            assert client.main(base + cmd) == 0, cmd
        assert client.main(["--trainer", f"127.0.0.1:{port}", "--reader-token-file", str(tmp_path / "empty"),
                            "models"]) == 2
        assert "reader token file" in capsys.readouterr().err
    assert rec.auth_by_rpc() == {
        "Trainer.Train": {"Bearer from-file"},
        "Trainer.ListModels": {"Bearer reader-from-env"},
        "Trainer.GetTrainingRun": {"Bearer reader-from-env"},
        "Trainer.WatchModels": {"Bearer rep-flag"},
        "Inference.GetModel": {None}, "Inference.Predict": {None}, "Health.Check": {None},
    }


# ------------------------------------------------------------------ deadlines


def test_every_call_and_stream_has_a_deadline():
    with serve() as (port, rec):
        addr = f"127.0.0.1:{port}"
        with client.TaskcastClient(addr, addr, timeout=7, wait_timeout=123) as tc:
            call_everything(tc)
    assert rec.calls
    for rpc, _, left in rec.calls:
        assert left is not None, f"{rpc} was sent without a deadline"
        want = {"Trainer.WatchTrainingRun": 123, "Trainer.WatchModels": client.DEFAULT_FIRST_ARTIFACT_TIMEOUT}.get(rpc, 7)
        # The wire format rounds a timeout up to a coarser unit (123 s arrives as ~124 s).
        assert want - 2 < left <= want + 1.5, (rpc, left, want)


def test_unary_deadline_expires():
    def slow(request, context):
        block_until_cancelled(context)
        return inf.ModelInfo()

    with serve(inference={"GetModel": slow}) as (port, _):
        start = time.monotonic()
        with client.TaskcastClient(f"127.0.0.1:{port}", timeout=0.3) as tc:
            with pytest.raises(grpc.RpcError) as err:
                tc.get_model()
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - start < 5


def _run_that(ends: bool):
    def train(request, context):
        return trn.TrainingRun(id="run-42", state="RUNNING")

    def watch(request, context):
        yield trn.TrainingRun(id=request.id, state="RUNNING", phase="fitting")
        if ends:
            yield trn.TrainingRun(id=request.id, state="SUCCEEDED", phase="done")
        else:
            block_until_cancelled(context)

    return {"Train": train, "WatchTrainingRun": watch}


def test_train_wait_gives_up_after_wait_timeout(capsys):
    with serve(trainer=_run_that(ends=False)) as (port, _):
        start = time.monotonic()
        rc = client.main(["--trainer", f"127.0.0.1:{port}", "train", "--wait", "--wait-timeout", "0.5"])
        elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    assert rc == 1 and elapsed < 5
    assert "DEADLINE_EXCEEDED" in err and "run-42" in err and "--wait-timeout 0.5 s" in err, err
    assert '"state": "RUNNING"' in out, "the states seen before the deadline are printed"


def test_train_wait_prints_every_state_until_the_end(capsys):
    with serve(trainer=_run_that(ends=True)) as (port, _):
        assert client.main(["--trainer", f"127.0.0.1:{port}", "train", "--wait"]) == 0
    out = capsys.readouterr().out
    assert out.index('"state": "RUNNING"') < out.index('"state": "SUCCEEDED"')


def test_watch_models_first_artifact_deadline(capsys):
    def never(request, context):
        block_until_cancelled(context)
        return iter(())

    with serve(trainer={"WatchModels": never}) as (port, _):
        assert client.main(["--trainer", f"127.0.0.1:{port}", "watch-models", "--first-timeout", "0.4"]) == 1
    assert "DEADLINE_EXCEEDED" in capsys.readouterr().err


def test_timeouts_must_be_positive():
    with pytest.raises(ValueError):
        client.TaskcastClient("127.0.0.1:1", timeout=0)
    with pytest.raises(ValueError):
        client.TaskcastClient("127.0.0.1:1", wait_timeout=None)
    with pytest.raises(SystemExit):
        client.build_parser().parse_args(["train", "--wait", "--wait-timeout", "0"])


# ------------------------------------------------------------------ receive limit


def test_trainer_channel_takes_artifacts_over_4_mib(capsys):
    big = bytes(5 * MIB)

    def artifact(request, context):
        yield trn.ModelArtifact(version="big", onnx=big)

    def models(request, context):
        return trn.ListModelsResponse(models=[trn.ModelVersion(version="v", reason="x" * (5 * MIB))])

    with serve(trainer={"WatchModels": artifact, "ListModels": models}) as (port, _):
        addr = f"127.0.0.1:{port}"
        with client.TaskcastClient(trainer=addr) as tc:
            assert len(tc.watch_models_first().onnx) == len(big)
            assert len(tc.list_models().models[0].reason) == 5 * MIB
        # gRPC's default limit is what the client used to have: it refuses the artifact.
        with client.TaskcastClient(trainer=addr, max_receive_bytes=4 * MIB) as tc:
            with pytest.raises(grpc.RpcError) as err:
                tc.watch_models_first()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert client.main(["--trainer", addr, "watch-models"]) == 0
    assert f"onnx: {len(big)} bytes" in capsys.readouterr().out
    assert client.DEFAULT_MAX_RECEIVE_BYTES >= 256 * MIB


# ------------------------------------------------------------------ addresses and TLS


def test_parse_address():
    assert client.parse_address("https://trainer.example:50052/") == ("trainer.example:50052", True)
    assert client.parse_address("grpcs://h:1") == ("h:1", True)
    assert client.parse_address("http://127.0.0.1:50051") == ("127.0.0.1:50051", False)
    assert client.parse_address("127.0.0.1:50051") == ("127.0.0.1:50051", None)
    assert client.parse_address("dns:///inference.ns.svc.cluster.local:50051") == (
        "dns:///inference.ns.svc.cluster.local:50051", None)


def test_dns_targets_still_work_plaintext():
    with serve() as (port, rec):
        with client.TaskcastClient(inference=f"dns:///127.0.0.1:{port}") as tc:
            tc.get_model()
    assert [rpc for rpc, _, _ in rec.calls] == ["Inference.GetModel"]


def test_tls_material_without_a_tls_address_is_refused(tmp_path, capsys):
    # A CA for plaintext addresses is most likely a mistaken URL: refused, not ignored.
    ca = tmp_path / "ca.pem"
    ca.write_text("not used")
    for addrs in (("http://127.0.0.1:1", None), ("127.0.0.1:1", "dns:///127.0.0.1:2")):
        with pytest.raises(ValueError, match="no address uses TLS"):
            client.TaskcastClient(*addrs, ca_file=ca)
    with client.TaskcastClient(inference="http://127.0.0.1:1", tls=True) as tc:
        with pytest.raises(ValueError, match="TLS was asked for"):
            tc.get_model()
    with pytest.raises(ValueError, match="key_file"):
        client.TaskcastClient(inference="https://127.0.0.1:1", cert_file=ca)
    assert client.main(["--inference", "127.0.0.1:1", "--trainer", "127.0.0.1:2", "--ca-file", str(ca),
                        "model"]) == 2
    assert client.main(["--inference", "https://127.0.0.1:1", "--ca-file", str(tmp_path / "missing"),
                        "model"]) == 2
    assert "error:" in capsys.readouterr().err


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI not found (needed to make test certificates)")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=taskcast test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=taskcast {name}",
                 cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial",
                 str(abs(hash(name)) % 10**9 + 2), "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
                 cwd=d)
    return d


def _server_creds(pki: Path, mutual: bool = False):
    return grpc.ssl_server_credentials(
        [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes() if mutual else None, require_client_auth=mutual)


def test_https_with_ca_file_verifies_and_works(pki, capsys):
    with serve(creds=_server_creds(pki)) as (port, rec):
        url = f"https://127.0.0.1:{port}"
        with client.TaskcastClient(url, url, token="adm", ca_file=pki / "ca.pem", timeout=5) as tc:
            assert tc.health("inference") == "SERVING"
            tc.train()
        assert client.main(["--inference", url, "--ca-file", str(pki / "ca.pem"), "model"]) == 0
        # A gRPC name with --tls: dns:/// stays usable over TLS.
        assert client.main(["--inference", f"dns:///127.0.0.1:{port}", "--tls", "--ca-file", str(pki / "ca.pem"),
                            "health", "inference"]) == 0
    assert [rpc for rpc, _, _ in rec.calls] == ["Health.Check", "Trainer.Train", "Inference.GetModel",
                                                "Health.Check"]
    assert "SERVING" in capsys.readouterr().out


def test_server_name_is_what_the_certificate_is_checked_against(pki):
    """An address that is not the certificate's name (a `kubectl port-forward` to
    localhost, a Service's virtual IP): --server-name names what to verify."""
    with serve(creds=_server_creds(pki)) as (port, rec):
        url = f"https://127.0.0.1:{port}"
        with client.TaskcastClient(url, ca_file=pki / "ca.pem", server_name="localhost", timeout=5) as tc:
            tc.get_model()
        # A name the certificate does not carry is refused, though the address is in it.
        with client.TaskcastClient(url, ca_file=pki / "ca.pem", server_name="trainer.example", timeout=5) as tc:
            with pytest.raises(grpc.RpcError) as err:
                tc.get_model()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        assert client.main(["--inference", url, "--ca-file", str(pki / "ca.pem"), "--server-name", "localhost",
                            "model"]) == 0
    assert [rpc for rpc, _, _ in rec.calls] == ["Inference.GetModel", "Inference.GetModel"]
    with pytest.raises(ValueError, match="no address uses TLS"):
        client.TaskcastClient("http://127.0.0.1:1", server_name="localhost")


def test_https_without_the_ca_is_not_trusted_and_never_plaintext(pki, capsys):
    with serve(creds=_server_creds(pki)) as (port, rec):
        # System roots only: the test CA is not among them, so the handshake fails.
        with client.TaskcastClient(f"https://127.0.0.1:{port}", timeout=5) as tc:
            with pytest.raises(grpc.RpcError) as err:
                tc.get_model()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        # The TLS handshake ran and refused the certificate (not a plaintext attempt).
        assert "CERTIFICATE_VERIFY_FAILED" in err.value.details()
        # And a CLI user gets the same, not a silent plaintext retry.
        assert client.main(["--inference", f"https://127.0.0.1:{port}", "--timeout", "5", "model"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert rec.calls == [], "no request may reach the server over an unverified connection"


def test_http_to_a_tls_port_fails(pki):
    with serve(creds=_server_creds(pki)) as (port, rec):
        with client.TaskcastClient(f"http://127.0.0.1:{port}", timeout=5) as tc:
            with pytest.raises(grpc.RpcError) as err:
                tc.get_model()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert rec.calls == []


def test_plaintext_client_against_tls_server_does_not_downgrade_https(pki):
    # The reverse: https:// to a plaintext server fails rather than speaking plaintext.
    with serve() as (port, rec):
        with client.TaskcastClient(f"https://127.0.0.1:{port}", ca_file=pki / "ca.pem", timeout=5) as tc:
            with pytest.raises(grpc.RpcError) as err:
                tc.get_model()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert rec.calls == []


def test_mutual_tls_client_certificate(pki):
    with serve(creds=_server_creds(pki, mutual=True)) as (port, rec):
        url = f"https://127.0.0.1:{port}"
        with client.TaskcastClient(url, ca_file=pki / "ca.pem", cert_file=pki / "client.pem",
                                   key_file=pki / "client.key", timeout=5) as tc:
            tc.get_model()
        with client.TaskcastClient(url, ca_file=pki / "ca.pem", timeout=5) as tc:
            with pytest.raises(grpc.RpcError) as err:
                tc.get_model()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [rpc for rpc, _, _ in rec.calls] == ["Inference.GetModel"]


def test_system_roots_come_from_the_trust_store(tmp_path, monkeypatch):
    bundle = tmp_path / "roots.pem"
    bundle.write_bytes(b"-----BEGIN CERTIFICATE-----\n...\n")
    monkeypatch.delenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert client.system_root_certificates() == bundle.read_bytes()
    monkeypatch.setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", str(bundle))
    assert client.system_root_certificates() is None  # gRPC reads that file itself


def test_channels_open_on_first_use_only(pki):
    # An unused, misconfigured address must not stop the other from working.
    with serve(creds=_server_creds(pki)) as (port, rec):
        with client.TaskcastClient(f"https://127.0.0.1:{port}", trainer="http://127.0.0.1:1", tls=True,
                                   ca_file=pki / "ca.pem", timeout=5) as tc:
            tc.get_model()
            with pytest.raises(ValueError, match="plaintext"):
                tc.list_models()
    assert [rpc for rpc, _, _ in rec.calls] == ["Inference.GetModel"]


def test_tls_trainer_beside_plaintext_inference(pki):
    # A CA for the trainer does not stop a plaintext inference address from working.
    with serve(creds=_server_creds(pki)) as (tls_port, tls_rec), serve() as (plain_port, plain_rec):
        with client.TaskcastClient(f"127.0.0.1:{plain_port}", f"https://127.0.0.1:{tls_port}",
                                   ca_file=pki / "ca.pem", timeout=5) as tc:
            tc.get_model()
            tc.list_models()
    assert [rpc for rpc, _, _ in plain_rec.calls] == ["Inference.GetModel"]
    assert [rpc for rpc, _, _ in tls_rec.calls] == ["Trainer.ListModels"]


def test_threads_share_one_channel():
    with serve() as (port, rec):
        with client.TaskcastClient(f"127.0.0.1:{port}") as tc:
            threads = [threading.Thread(target=tc.get_model) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(tc._channels) == 1
    assert len(rec.calls) == 4
