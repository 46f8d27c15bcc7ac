"""The tracking code and its tests against the next MLflow minor release after the pinned one.

The test takes the newest release X.(Y+1).* of mlflow (X.Y.* being the pin of
requirements/runtime.lock) on the package index pip is configured with, the one `make install`
installs from (the Makefile calls plain ``pip install``). In a plain virtual environment in a
temporary folder (no system site packages, so nothing of the pinned MLflow can leak in), it
installs that release with what the tracking code and its tests import (the base, `cluster`
and `train` dependencies of pyproject.toml, and pytest), every other package at the version of
the locks; then it runs tests/common/test_tracking.py and tests/tracking/ there (but this
module and the browser test), with the checkout on PYTHONPATH.

It skips, saying what the index holds, when no such release can be installed from the index:
none is published yet, or a release's own parts (mlflow-skinny, mlflow-tracing, which each
release pins at its version) are missing there.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The distributions of one MLflow release: mlflow pins the other two at its own version.
MLFLOW_PARTS = ("mlflow", "mlflow-skinny", "mlflow-tracing")
TESTS = ["tests/common/test_tracking.py", "tests/tracking"]
NOT_RUN = ["tests/tracking/test_mlflow_ui_browser.py", "tests/tracking/test_mlflow_next_minor.py"]
MISSING = re.compile(r"No matching distribution found for ([A-Za-z0-9_.-]+)==([^\s)]+)")


def pinned_mlflow() -> tuple[int, int]:
    """``(major, minor)`` of the mlflow pin in requirements/runtime.lock."""
    lock = (ROOT / "requirements" / "runtime.lock").read_text()
    match = re.search(r"^mlflow==(\d+)\.(\d+)\.", lock, re.MULTILINE)
    if match is None:
        raise ValueError("requirements/runtime.lock pins no mlflow==X.Y.Z")
    return int(match[1]), int(match[2])


def index_versions(package: str) -> list[str]:
    """The releases of ``package`` on the configured package index, newest first."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", package],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    match = re.search(r"^Available versions: (.+)$", result.stdout, re.MULTILINE)
    if match is None:
        if "No matching distribution found" in result.stderr:
            return []
        raise RuntimeError(f"`pip index versions {package}` failed: {result.stderr[-2000:]}")
    return match[1].split(", ")


def next_minor_releases(versions: list[str], pinned: tuple[int, int]) -> list[str]:
    """The final releases of minor version ``pinned[1] + 1`` among ``versions``, newest first."""
    from packaging.version import Version

    major, minor = pinned
    found = [Version(v) for v in versions]
    chosen = [v for v in found if v.release[:2] == (major, minor + 1) and not v.is_prerelease]
    return [str(v) for v in sorted(chosen, reverse=True)]


def requirements() -> list[str]:
    """What the tracking code and its tests import, from pyproject.toml: the base, `cluster`
    and `train` dependencies but mlflow and the project's own extras, and pytest."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras["cluster"], *extras["train"]]
    wanted += [r for r in extras["dev"] if re.match(r"pytest\b", r)]
    return [r for r in wanted if not r.startswith(("aprflow[", "mlflow"))]


def write_constraints(path: Path) -> Path:
    """The pins of both locks but MLflow's, as a pip constraints file."""
    pins = []
    for lock in ("runtime.lock", "dev.lock"):
        for line in (ROOT / "requirements" / lock).read_text().splitlines():
            name = line.split("==")[0].strip().lower()
            if "==" in line and not line.startswith(("#", "-")) and name not in MLFLOW_PARTS:
                pins.append(line.strip())
    path.write_text("\n".join(pins) + "\n")
    return path


def run(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def install(venv: Path, version: str, constraints: Path) -> subprocess.CompletedProcess:
    """Creates the plain venv (once) and installs ``mlflow==version`` and :func:`requirements`
    into it, with the pip release of this environment (the Makefile's pin)."""
    python = venv / "bin" / "python"
    if not python.exists():
        created = run([sys.executable, "-m", "venv", str(venv)], timeout=300)
        assert created.returncode == 0, created.stderr
        pip = f"pip=={importlib.metadata.version('pip')}"
        upgraded = run([str(python), "-m", "pip", "install", "--quiet", pip], timeout=300)
        assert upgraded.returncode == 0, upgraded.stderr[-3000:]
    command = [str(python), "-m", "pip", "install", "--quiet", "-c", str(constraints)]
    return run([*command, f"mlflow=={version}", *requirements()], timeout=1800)


@pytest.mark.extended
def test_tracking_tests_pass_with_the_next_mlflow_minor(tmp_path):
    pinned = pinned_mlflow()
    available = index_versions("mlflow")
    candidates = next_minor_releases(available, pinned)
    if not candidates:
        pytest.skip(
            f"no mlflow {pinned[0]}.{pinned[1] + 1}.x on the package index (newest releases: "
            f"{', '.join(available[:5])})"
        )
    venv = tmp_path / "venv"
    constraints = write_constraints(tmp_path / "constraints.txt")
    missing = {}
    start = time.monotonic()
    for version in candidates:
        installed = install(venv, version, constraints)
        if installed.returncode == 0:
            break
        match = MISSING.search(installed.stderr)
        if match is None or match[1].lower() not in MLFLOW_PARTS:
            pytest.fail(f"mlflow {version} does not install with the locks:\n{installed.stderr}")
        # A release whose own parts the index lacks is no release to test against.
        missing[version] = f"{match[1]}=={match[2]}"
    else:
        parts = sorted({spec.split("==")[0] for spec in missing.values()})
        held = "; ".join(f"{part}: {', '.join(index_versions(part)[:5])}" for part in parts)
        pytest.skip(
            f"mlflow {', '.join(candidates)} is on the package index, but not the parts it pins: "
            f"{', '.join(f'{v} needs {spec}' for v, spec in missing.items())} (newest on the "
            f"index: mlflow: {', '.join(available[:5])}; {held})"
        )
    install_s = time.monotonic() - start
    python = str(venv / "bin" / "python")
    shown = run([python, "-c", "import mlflow; print(mlflow.__version__)"], timeout=120)
    assert shown.stdout.strip() == version, shown.stderr[-2000:]

    env = os.environ | {"PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [python, "-m", "pytest", *TESTS, *(f"--ignore={path}" for path in NOT_RUN)]
    command += ["-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'pytest'}"]
    start = time.monotonic()
    tested = run(command, timeout=3600, cwd=ROOT, env=env)
    summary = tested.stdout.strip().splitlines()[-1] if tested.stdout.strip() else ""
    print(
        f"mlflow {version} (pinned {pinned[0]}.{pinned[1]}.x): installed in {install_s:.0f} s; "
        f"tracking tests: {summary} ({time.monotonic() - start:.0f} s)"
    )
    assert tested.returncode == 0, f"{tested.stdout[-6000:]}\n{tested.stderr[-3000:]}"
