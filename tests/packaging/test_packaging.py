"""Packaging: version ranges in pyproject.toml, exact pins in requirements/*.lock, the extras,
py.typed in the wheel, and the analysis installed and run in a venv without torch."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = REPO_ROOT / "requirements" / "runtime.lock"
DEV_LOCK = REPO_ROOT / "requirements" / "dev.lock"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]["name"]
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
# A lock line: one distribution at one exact version.
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][A-Za-z0-9.!+-]*$")
# The one pip option of dev.lock: runtime.lock's pins constrain the packages both share.
DEV_LOCK_OPTIONS = ("-c runtime.lock",)
# The training stack that `pip install aprflow` (the analysis) must not pull in.
TRAINING_STACK = (
    "torch", "torchvision", "timm", "mlflow", "mlflow-skinny", "deepspeed", "kfp",
    "kfp-kubernetes", "kubernetes", "boto3", "scikit-learn", "scikit-image",
)  # fmt: skip
TRAINING_MODULES = (
    "torch", "torchvision", "timm", "mlflow", "deepspeed", "kfp", "kfp_server_api", "kubernetes",
    "boto3", "botocore", "sklearn", "skimage",
)  # fmt: skip
TYPED_PACKAGES = ("components", "pipelines", "analysis")
# pip's words for an index it cannot reach (connection refused, no DNS, timeouts).
UNREACHABLE = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Max retries exceeded",
    "ConnectTimeout",
    "ReadTimeout",
)


def _load_runtime_lock() -> ModuleType:
    """images/runtime_lock.py: the project's requirements and their closure in this venv."""
    spec = importlib.util.spec_from_file_location(
        "runtime_lock", REPO_ROOT / "images" / "runtime_lock.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runtime_lock = _load_runtime_lock()


def _pins(path: Path) -> dict[str, str]:
    """Canonical name -> exact version of a lock file's pins."""
    lines = runtime_lock.parse_pins(path.read_text())
    return {name: line.split("==", 1)[1] for name, line in lines.items()}


def _requirements(extras: tuple[str, ...] = ()) -> list[Requirement]:
    return [Requirement(raw) for raw in runtime_lock.project_requirements(extras)]


def _all_direct_requirements() -> list[tuple[str, Requirement]]:
    """(table, requirement) for the base dependencies and every extra, self-references aside."""
    tables = {"dependencies": PYPROJECT["project"]["dependencies"], **EXTRAS}
    return [
        (table, Requirement(raw))
        for table, raws in tables.items()
        for raw in raws
        if canonicalize_name(Requirement(raw).name) != PROJECT
    ]


def test_the_extras_are_there():
    assert {"cluster", "train", "deepspeed", "all", "dev", "analysis"} <= EXTRAS.keys()
    names = {e: {canonicalize_name(Requirement(r).name) for r in EXTRAS[e]} for e in EXTRAS}
    assert {"kfp", "kfp-kubernetes", "kubernetes"} <= names["cluster"]
    assert names["deepspeed"] == {"deepspeed"}
    assert {"pytest", "ruff", "moto", "mkdocs", "mkdocs-material"} <= names["dev"]
    all_names = {canonicalize_name(r.name) for r in _requirements(("all",))}
    assert {"torch", "timm", "mlflow", "deepspeed", "kfp", "numpy"} <= all_names
    assert not {"pytest", "ruff", "mkdocs"} & all_names


@pytest.mark.parametrize(
    "table, requirement", _all_direct_requirements(), ids=lambda x: str(x).split(";")[0]
)
def test_pyproject_has_ranges_that_hold_the_locked_version(table, requirement):
    operators = {s.operator for s in requirement.specifier}
    assert not operators & {"==", "==="}, f"exact pin in pyproject.toml [{table}]: {requirement}"
    assert operators & {">=", "~="}, f"no lower bound: {requirement}"
    assert operators & {"<", "~="}, f"no upper bound: {requirement}"
    locked = _pins(RUNTIME_LOCK) | (_pins(DEV_LOCK) if table == "dev" else {})
    name = canonicalize_name(requirement.name)
    assert name in locked, f"[{table}] {requirement.name} is in no lock file"
    assert requirement.specifier.contains(locked[name]), (
        f"[{table}] {requirement} excludes the locked {name}=={locked[name]}"
    )


@pytest.mark.parametrize("path", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_lock_files_hold_exact_pins_only(path):
    options = DEV_LOCK_OPTIONS if path == DEV_LOCK else ()
    lines = [x.strip() for x in path.read_text().splitlines()]
    entries = [x for x in lines if x and not x.startswith("#") and x not in options]
    bad = [x for x in entries if not PIN.match(x)]
    assert not bad, f"{path.name}: not name==version: {bad}"
    names = [canonicalize_name(x.split("==")[0]) for x in lines if PIN.match(x)]
    assert len(names) == len(set(names)), f"{path.name} pins a package twice"
    assert len(names) > 40


def test_runtime_and_dev_locks_do_not_overlap():
    both = _pins(RUNTIME_LOCK).keys() & _pins(DEV_LOCK).keys()
    assert not both, f"pinned in both lock files: {sorted(both)}"


def test_runtime_lock_is_the_closure_of_the_all_extra():
    """runtime.lock holds exactly what `pip install .[all]` installs (dependency metadata of this
    venv, which `make install` built from the locks): nothing missing, nothing left over."""
    closure = runtime_lock.closure(runtime_lock.project_requirements(("all",)))
    locked = _pins(RUNTIME_LOCK).keys()
    assert not closure - locked, f"add to runtime.lock: {sorted(closure - locked)}"
    assert not locked - closure, f"runtime.lock pins what nothing needs: {sorted(locked - closure)}"


def test_dev_lock_is_what_the_dev_extra_adds():
    base = set(runtime_lock.project_requirements())
    dev_roots = [r for r in runtime_lock.project_requirements(("dev",)) if r not in base]
    closure = runtime_lock.closure(dev_roots) - _pins(RUNTIME_LOCK).keys()
    locked = _pins(DEV_LOCK).keys()
    assert not closure - locked, f"add to dev.lock: {sorted(closure - locked)}"
    assert not locked - closure, f"dev.lock pins what nothing needs: {sorted(locked - closure)}"


def test_base_dependencies_leave_out_the_training_stack():
    for extras in ((), ("analysis",)):
        closure = runtime_lock.closure(runtime_lock.project_requirements(extras))
        assert {"numpy", "scipy", "pandas", "matplotlib", "jinja2"} <= closure
        assert not closure & set(TRAINING_STACK), (extras, sorted(closure & set(TRAINING_STACK)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of its sources (no build/ in the work tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for package in (*TYPED_PACKAGES, "recipes"):
        shutil.copytree(
            REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(tmp / "dist"), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = (tmp / "dist").glob("aprflow-*.whl")
    return built


def test_wheel_ships_py_typed(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in TYPED_PACKAGES:
        assert (REPO_ROOT / package / "py.typed").is_file()
        assert f"{package}/py.typed" in names, f"{package}/py.typed not in the wheel"
    assert "recipes/rsb_a1.yaml" in names and "analysis/report.html.j2" in names


# Runs in the torch-free venv: every module of the analysis, then a whole analysis.
ANALYSIS_WITHOUT_TORCH = """
import importlib, importlib.util, pkgutil, sys
import analysis
assert 'site-packages' in analysis.__file__, analysis.__file__
assert importlib.util.find_spec('torch') is None, 'torch is installed in the venv'
for module in pkgutil.walk_packages(analysis.__path__, 'analysis.'):
    if not module.name.endswith('__main__'):
        importlib.import_module(module.name)
loaded = sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[1].split(','))
assert not loaded, loaded
from analysis.synthetic import synthetic_results
analysis.analyze(synthetic_results(n_models=40, n_datasets=3), 'out', n_bootstrap=0)
print('ok')
"""


@pytest.mark.slow  # a venv with numpy, scipy, pandas and matplotlib: ~20 s from pip's sources
def test_analysis_runs_in_a_venv_without_torch(tmp_path: Path, wheel: Path):
    """`pip install aprflow` (the base dependencies, at their runtime.lock pins) runs the analysis:
    installed with --no-deps, and `pip check` proves that the pins are all it needs."""
    base = runtime_lock.closure(runtime_lock.project_requirements())
    lines = runtime_lock.parse_pins(RUNTIME_LOCK.read_text())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # This venv's pip installs into the new one (--python): no pip bootstrap there.
    pip = [sys.executable, "-m", "pip", "--python", python]
    install = subprocess.run(
        [*pip, "install", "--quiet", "--no-compile", "--no-deps", str(wheel)]
        + sorted(lines[name] for name in base),
        capture_output=True,
        text=True,
    )
    if install.returncode != 0 and any(word in install.stderr for word in UNREACHABLE):
        pytest.skip(f"the package index is unreachable: {install.stderr.strip()[-300:]}")
    assert install.returncode == 0, install.stderr
    check = subprocess.run([*pip, "check"], capture_output=True, text=True)
    assert check.returncode == 0, f"the base pins miss a dependency:\n{check.stdout}"

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [python, "-c", ANALYSIS_WITHOUT_TORCH, ",".join(TRAINING_MODULES)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the work tree: the installed wheel is imported
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "report.html").is_file()
    # The module's and the console script's command line (no torch, no kfp behind --help).
    for command in ([python, "-m", "analysis"], [str(venv / "bin" / "aprflow"), "analyze"]):
        usage = subprocess.run(
            [*command, "--help"], capture_output=True, text=True, cwd=tmp_path, env=env
        )
        assert usage.returncode == 0, f"{command}: {usage.stderr}"
        assert "usage:" in usage.stdout
