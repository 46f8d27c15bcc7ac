"""DeepSpeed's CPU op, prebuilt as the images do it, loads for the non-root runtime user.

The CPU image prebuilds deepspeed_shm_comm as uid 10001 (group 0) into TORCH_EXTENSIONS_DIR and
makes the folder group-writable. torch takes a lock file inside the op's build folder at every
load, so the folder must be writable by whoever loads it: this test builds the op the same way
as an unprivileged user, loads it again as an arbitrary uid in group 0 (OpenShift-style), and
shows that a folder that user cannot write fails exactly as the issue reported
(PermissionError on .../deepspeed_shm_comm/lock). Needs root (to switch users with setpriv),
g++ and ninja; it compiles the op once (about a minute on 2 cores).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

RUNTIME_UID = 10001
ARBITRARY_UID = 12345
OUTSIDER_UID = 10002
LOAD = (
    "import os; os.umask(0o002); "  # as the image's build step (group-writable files)
    "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; "
    "import time; t = time.time(); B().load(); print(f'loaded in {time.time() - t:.1f}s')"
)


HEADERS = "import os, sysconfig; open(sysconfig.get_paths()['include'] + '/Python.h').close()"


def _interpreter_for(uid: int) -> str | None:
    """A python of this version that ``uid`` may run and compile against (its Python.h readable;
    this environment's packages come in through PYTHONPATH), or None."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/python{version}"):
        probe = subprocess.run(
            [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                python,
                "-c",
                HEADERS,
            ],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return python
    return None


def _run_as(uid: int, gid: int, groups: str, python: str, extensions: Path, home: Path):
    env = {
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
        "TORCH_EXTENSIONS_DIR": str(extensions),
    }
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", groups, python, "-c", LOAD],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.extended
def test_prebuilt_op_loads_for_the_runtime_user_and_group_0(request):
    if os.geteuid() != 0:
        pytest.skip("needs root to run the load as other users (setpriv)")
    if not (shutil.which("setpriv") and shutil.which("g++") and shutil.which("ninja")):
        pytest.skip("needs setpriv, g++ and ninja")
    python = _interpreter_for(RUNTIME_UID)
    if python is None:
        pytest.skip(
            f"no python{sys.version_info[0]}.{sys.version_info[1]} that uid "
            f"{RUNTIME_UID} may execute"
        )
    # pytest's own tmp folders are private to root: work in a world-searchable one.
    tmp_path = Path(tempfile.mkdtemp(prefix="aprflow-ext-"))
    request.addfinalizer(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
    tmp_path.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir(mode=0o777)
    # The image: /opt/torch_extensions owned by the runtime user and group 0, setgid, 2775.
    extensions = tmp_path / "torch_extensions"
    extensions.mkdir()
    os.chown(extensions, RUNTIME_UID, 0)
    extensions.chmod(0o2775)

    built = _run_as(RUNTIME_UID, 0, "--clear-groups", python, extensions, home)
    assert built.returncode == 0, built.stderr[-2000:]
    subprocess.run(["chmod", "-R", "g=u", str(extensions)], check=True)
    library = next(extensions.rglob("deepspeed_shm_comm*.so"))
    built_at = library.stat().st_mtime_ns

    # An arbitrary uid in group 0 (OpenShift) loads it without rebuilding.
    loaded = _run_as(ARBITRARY_UID, ARBITRARY_UID, "--groups=0", python, extensions, home)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert "loaded in" in loaded.stdout
    assert library.stat().st_mtime_ns == built_at, "the op was rebuilt at load"

    # A user who cannot write the folder (what a root-built, read-only folder amounts to)
    # fails on the op's lock file: the failure the image layout avoids.
    outsider = _run_as(OUTSIDER_UID, OUTSIDER_UID, "--clear-groups", python, extensions, home)
    assert outsider.returncode != 0
    assert "PermissionError" in outsider.stderr and "deepspeed_shm_comm/lock" in outsider.stderr
