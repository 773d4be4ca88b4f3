"""Static checks of the Dockerfiles. They keep the images in step with the
manifests and the services' flags: the same ports, user, paths and build
command. The from-source Dockerfiles need BuildKit and a registry, neither of
which this machine has; their runtime stage is also in the runtime-only
variants (*.runtime.Dockerfile), which deploy/tests/run_manifests.py builds
with podman and runs, so these checks pin the two runtime stages together."""

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
    "trainer-svc": ({50052, 9102}, {"/opt/onnxruntime/libonnxruntime.so", "/data"},
                    ["serve", "--listen", "0.0.0.0:50052", "--metrics-listen", "0.0.0.0:9102",
                     "--ort-lib", "/opt/onnxruntime/libonnxruntime.so"]),
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


def args_defaults(instrs) -> dict[str, str]:
    """ARG defaults, each expanded with the ones before it."""
    out = {}
    for word, rest in instrs:
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            out[k] = expand(v, out)
    return out


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def stages(instrs):
    """Split into stages: list of (FROM args with ARG defaults expanded, [instructions])."""
    result = []
    args = args_defaults(instrs)
    for word, rest in instrs:
        if word == "FROM":
            result.append((expand(rest, args), []))
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

    builder = next(s for s in st if re.search(r"rust:1\.95-bookworm", s[0]))
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


@pytest.mark.parametrize("short", ["inference", "trainer"])
def test_ort_stage_uses_setup_script(short):
    text = (DOCKER / f"{short}.Dockerfile").read_text()
    assert "scripts/setup-ort.sh" in text and (ROOT / "scripts/setup-ort.sh").is_file()


@pytest.mark.parametrize("short", ["inference", "trainer"])
def test_base_images_are_build_arguments(short):
    """A machine without the default registries points them at images it has."""
    instrs = instructions(DOCKER / f"{short}.Dockerfile")
    froms = [r for w, r in instrs if w == "FROM"]
    assert all("${" in f for f in froms), froms
    assert {"RUST_IMAGE", "PYTHON_IMAGE", "RUNTIME_IMAGE"} <= set(args_defaults(instrs))
    assert args_defaults(instrs)["RUNTIME_IMAGE"] == "gcr.io/distroless/cc-debian12:nonroot"


def _runtime_stage(path: Path):
    """The last stage's instructions, with COPY reduced to (destination, --chown)."""
    out = []
    for w, r in stages(instructions(path))[-1][1]:
        if w == "COPY":
            args = r.split()
            chown = [a for a in args if a.startswith("--chown=")]
            out.append(("COPY", args[-1], tuple(chown)))
        else:
            out.append((w, " ".join(r.split())))
    return out


@pytest.mark.parametrize("short", ["inference", "trainer"])
def test_runtime_only_variant_is_the_same_runtime_stage(short):
    """What run_manifests.py builds and runs is what the release Dockerfile ships."""
    full, variant = DOCKER / f"{short}.Dockerfile", DOCKER / f"{short}.runtime.Dockerfile"
    assert _runtime_stage(full) == _runtime_stage(variant)
    assert stages(instructions(full))[-1][0] == stages(instructions(variant))[-1][0]
    # Only the runtime stage: nothing to compile, nothing to RUN.
    assert len(stages(instructions(variant))) == 1
    assert not any(w == "RUN" for w, _ in instructions(variant))


def test_runtime_check_catches_a_drift(tmp_path):
    drifted = tmp_path / "x.runtime.Dockerfile"
    drifted.write_text((DOCKER / "trainer.runtime.Dockerfile").read_text().replace("EXPOSE 50052 9102", "EXPOSE 50052"))
    assert _runtime_stage(DOCKER / "trainer.Dockerfile") != _runtime_stage(drifted)


@pytest.mark.parametrize("short", ["inference", "trainer"])
def test_dockerignore_keeps_context_small(short):
    ignored = (DOCKER / f"{short}.Dockerfile.dockerignore").read_text().split()
    for entry in ("target", ".git", ".venv", ".ort"):
        assert entry in ignored
    # models/ and proto/ must stay in the context.
    assert not any(e.startswith(("models", "proto", "scripts")) for e in ignored)
