"""Static checks of the Dockerfiles (no Docker engine on the dev machine or CI,
so they are not built here). They keep the images in step with the manifests
and the services' flags: the same ports, user, paths and build command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"

IMAGES = {
    # crate: (ports, paths the runtime image must contain, flags CMD must pass)
    "inference-svc": ({50051, 9101}, {"/models/bootstrap.onnx", "/opt/onnxruntime/libonnxruntime.so"},
                      ["--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9101",
                       "--model", "/models/bootstrap.onnx", "--trainer", "http://trainer:50052",
                       "--ort-lib", "/opt/onnxruntime/libonnxruntime.so"]),
    "trainer-svc": ({50052, 9102}, set(),
                    ["serve", "--listen", "0.0.0.0:50052", "--metrics-listen", "0.0.0.0:9102"]),
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuations joined."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and line.lstrip().startswith("#"):
            continue
        buf += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            if buf.strip():
                word, _, rest = buf.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def stages(instrs):
    """Split into stages: list of (FROM args, [instructions])."""
    result = []
    for word, rest in instrs:
        if word == "FROM":
            result.append((rest, []))
        elif result:
            result[-1][1].append((word, rest))
    return result


@pytest.mark.parametrize("crate", sorted(IMAGES))
def test_dockerfile(crate):
    short = crate.removesuffix("-svc")
    path = DOCKER / f"{short}.Dockerfile"
    ports, paths, flags = IMAGES[crate]
    st = stages(instructions(path))
    assert len(st) >= 2, "multi-stage build expected"

    builder = next(s for s in st if re.search(r"rust:\$\{RUST_VERSION\}-bookworm|rust:1\.95-bookworm", s[0]))
    assert "ARG RUST_VERSION=1.95" in path.read_text()
    runs = " ".join(r for w, r in builder[1] if w == "RUN")
    assert f"cargo build --release --locked -p {crate}" in runs

    runtime_from, runtime = st[-1]
    # glibc-based (ONNX Runtime needs glibc >= 2.28) and shell-less.
    assert "distroless/cc-debian12" in runtime_from
    assert not any(w == "RUN" for w, _ in runtime), "runtime stage has no shell to RUN in"
    assert ("USER", "65532:65532") in runtime
    exposed = {int(p.split("/")[0]) for w, r in runtime if w == "EXPOSE" for p in r.split()}
    assert exposed == ports

    copied = set()
    for w, r in runtime:
        if w == "COPY":
            args = [a for a in r.split() if not a.startswith("--")]
            copied.add(args[-1])
            if "--from=" not in r:
                # Sources copied from the build context must exist in the repository.
                for src in args[:-1]:
                    assert (ROOT / src).exists(), f"COPY source {src} missing from the repo"
    assert f"/usr/local/bin/{crate}" in copied
    assert paths <= copied, paths - copied

    (entry,) = [json.loads(r) for w, r in runtime if w == "ENTRYPOINT"]
    assert entry == [f"/usr/local/bin/{crate}"]
    (cmd,) = [json.loads(r) for w, r in runtime if w == "CMD"]
    assert cmd[: len(flags)] == flags


def test_ort_stage_uses_setup_script():
    text = (DOCKER / "inference.Dockerfile").read_text()
    assert "scripts/setup-ort.sh" in text and (ROOT / "scripts/setup-ort.sh").is_file()


@pytest.mark.parametrize("short", ["inference", "trainer"])
def test_dockerignore_keeps_context_small(short):
    ignored = (DOCKER / f"{short}.Dockerfile.dockerignore").read_text().split()
    for entry in ("target", ".git", ".venv", ".ort"):
        assert entry in ignored
    # models/ and proto/ must stay in the context.
    assert not any(e.startswith(("models", "proto", "scripts")) for e in ignored)
