"""Offline tests of where and when the gRPC code is generated: a cache folder
keyed by a hash of the protos (never the source tree), regenerated when a proto
changes, and safe when several processes generate at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import client  # noqa: E402


@pytest.fixture()
def protos(tmp_path) -> Path:
    """A private copy of proto/ that a test may edit."""
    root = tmp_path / "proto"
    for rel in client.PROTOS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(client.PROTO_ROOT / rel, root / rel)
    return root


def test_stubs_are_loaded_from_the_cache_not_the_source_tree():
    assert client.STUBS.parent == client.stubs_root()
    assert client.STUBS.name == client.stubs_key()
    for mod in (client.inf, client.trn, client.inf_grpc, client.trn_grpc):
        path = Path(mod.__file__).resolve()
        assert path.is_relative_to(client.STUBS.resolve()), path
        assert not path.is_relative_to(HERE), path


def test_stubs_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv("TASKCAST_STUBS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert client.stubs_root() == tmp_path / "xdg" / "taskcast" / "python-stubs"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: relative paths are invalid
    assert client.stubs_root() == Path.home() / ".cache" / "taskcast" / "python-stubs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert client.stubs_root() == Path.home() / ".cache" / "taskcast" / "python-stubs"
    monkeypatch.setenv("TASKCAST_STUBS_DIR", str(tmp_path / "stubs"))
    assert client.stubs_root() == tmp_path / "stubs"


def test_generate_from_protos_alone_is_hash_keyed_and_regenerates_on_change(protos, tmp_path):
    root = tmp_path / "cache"
    out = client.generate(proto_root=protos, root=root)
    assert out == root / client.stubs_key(protos) and (out / client._COMPLETE).is_file()
    assert (out / "taskcast/v1/inference_pb2_grpc.py").is_file()
    # Same protos, same code as the copy the client imported.
    assert (out / "taskcast/v1/trainer_pb2.py").read_bytes() == (client.STUBS / "taskcast/v1/trainer_pb2.py").read_bytes()
    # Unchanged protos: reused as is.
    stamp = (out / "taskcast/v1/trainer_pb2.py").stat().st_mtime_ns
    assert client.generate(proto_root=protos, root=root) == out
    assert (out / "taskcast/v1/trainer_pb2.py").stat().st_mtime_ns == stamp
    # A changed proto gets its own folder.
    with open(protos / "taskcast/v1/trainer.proto", "a") as f:
        f.write("\nmessage AddedForTest { string x = 1; }\n")
    changed = client.generate(proto_root=protos, root=root)
    assert changed != out and "class AddedForTest" in (changed / "taskcast/v1/trainer_pb2.pyi").read_text()
    assert sorted(p.name for p in root.iterdir()) == sorted([out.name, changed.name]), "temporary folders left"


def test_generate_force_replaces_in_place(protos, tmp_path):
    root = tmp_path / "cache"
    out = client.generate(proto_root=protos, root=root)
    (out / "taskcast/v1/trainer_pb2.py").write_text("broken")
    assert client.generate(proto_root=protos, root=root, force=True) == out
    assert b"broken" not in (out / "taskcast/v1/trainer_pb2.py").read_bytes()
    assert [p.name for p in root.iterdir()] == [out.name]


def test_incomplete_folder_is_regenerated(protos, tmp_path):
    root = tmp_path / "cache"
    out = root / client.stubs_key(protos)
    (out / "taskcast").mkdir(parents=True)  # e.g. left by a hand-made copy: no completion marker
    assert client.generate(proto_root=protos, root=root) == out
    assert (out / client._COMPLETE).is_file() and (out / "taskcast/v1/trainer_pb2.py").is_file()
    assert [p.name for p in root.iterdir()] == [out.name]


def test_losing_a_generation_race_keeps_the_winners_folder(protos, tmp_path, monkeypatch):
    # Another process renames its complete folder into place between our
    # protoc run and our rename: ours must give way, not fail or mix the two.
    root = tmp_path / "cache"
    key = client.stubs_key(protos)
    real_rename, raced = os.rename, []

    def rename(src, dst):
        if Path(dst).name == key and not raced:
            raced.append(src)
            client.generate(proto_root=protos, root=root)  # the other process, finishing first
        return real_rename(src, dst)

    monkeypatch.setattr(client.os, "rename", rename)
    out = client.generate(proto_root=protos, root=root)
    assert raced and out == root / key and (out / client._COMPLETE).is_file()
    assert [p.name for p in root.iterdir()] == [key], "the loser's temporary folder was left behind"


def test_concurrent_first_imports(tmp_path):
    # Three fresh processes import the client at once into an empty cache.
    env = {**os.environ, "TASKCAST_STUBS_DIR": str(tmp_path / "stubs"), "PYTHONDONTWRITEBYTECODE": "1"}
    code = "import client, sys; print(client.STUBS); print(client.trn.ModelArtifact.DESCRIPTOR.full_name)"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=HERE, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    for out, err, rc in results:
        assert rc == 0, err
        stubs, name = out.split()
        assert Path(stubs) == tmp_path / "stubs" / client.stubs_key() and name == "taskcast.v1.ModelArtifact"
    assert [p.name for p in (tmp_path / "stubs").iterdir()] == [client.stubs_key()]


def test_generate_only_cli(tmp_path):
    env = {**os.environ, "TASKCAST_STUBS_DIR": str(tmp_path / "stubs")}
    res = subprocess.run([str(HERE / "gen.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert str(tmp_path / "stubs" / client.stubs_key()) in res.stdout
