"""Collecting the tests imports none of the heavy libraries, and the pipeline registry imports
a pipeline's module only when that pipeline is looked up.

Test modules import torch, timm, DeepSpeed, MLflow, scipy, matplotlib and the pipeline
definitions (whose ``@dsl.pipeline`` builds the whole graph at import) inside the tests and
fixtures that use them, so that ``pytest --collect-only`` and a ``-k`` selection start in
seconds. kfp and pandas are still imported (about half a second each): test modules define
KFP components and DataFrame parameters at module level, and use the constants of
``pipelines.cluster``, which imports kfp.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch",
    "timm",
    "torchvision",
    "deepspeed",
    "mlflow",
    "sqlalchemy",
    "scipy",
    "matplotlib",
    "sklearn",
    "pipelines.apr_study",
    "pipelines.transfer_study",
    "pipelines.apr_predict",
    "pipelines.class_count",
    "pipelines.registry",
)
# Collects the whole suite in this process (plain asserts: rewriting them imports nothing and
# only costs time), then prints the heavy modules that collection imported.
COLLECT = f"""
import json, sys
import pytest
code = pytest.main(["--collect-only", "-q", "--assert=plain", "-p", "no:cacheprovider"])
print(json.dumps({{"code": int(code), "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def test_collection_imports_no_heavy_library():
    result = subprocess.run(
        [sys.executable, "-c", COLLECT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["code"] == 0, f"collection failed:\n{result.stdout[-3000:]}{result.stderr}"
    assert report["heavy"] == [], (
        f"collecting the tests imported {report['heavy']}: import them inside the tests that "
        "use them (python -X importtime -m pytest --collect-only -q -s shows which module)"
    )


def test_looking_up_one_pipeline_imports_only_its_module():
    probe = (
        "import sys\n"
        "from pipelines.names import PIPELINE_NAMES\n"
        "from pipelines.registry import PIPELINES\n"
        "listed = tuple(PIPELINES) == PIPELINE_NAMES and 'apr-study' in PIPELINES\n"
        "imported_early = 'pipelines.apr_study' in sys.modules\n"
        "name = PIPELINES['apr-study'].name\n"
        "print(listed, imported_early, name, 'pipelines.transfer_study' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["True", "False", "apr-study", "False"], result.stderr


def test_the_tasks_around_training_import_no_torch():
    """The plan, list-chunks and analysis tasks and the chunk runner read trials
    (components/train/definition.py) without importing torch: each import of torch costs a
    task seconds, and the chunk's trials get theirs from the fork server. The best-model
    export (components/analyze/models.py) imports it in its own process."""
    modules = [
        "components.train.component",
        "components.train.run",
        "components.train.chunk",
        "components.analyze.run",
        "components.analyze.component",
    ]
    probe = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", "a task around training imports torch again"
