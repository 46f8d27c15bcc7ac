"""The compiled pipelines: up to date, and valid pipeline IR that a Kubeflow backend accepts."""

from pathlib import Path

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from components.common.images import CPU_IMAGE, GPU_IMAGE
from pipelines.cli import COMPILED_DIR, compile_all, main
from pipelines.cluster import LAUNCHER_CONFIG_MAP, S3_SECRET


def test_compiled_yaml_is_what_compile_produces_today(tmp_path):
    fresh = compile_all(tmp_path)
    assert fresh, "no pipeline compiled"
    for path in fresh:
        committed = COMPILED_DIR / path.name
        assert committed.exists(), f"{committed} is missing: run `make compile` and commit it"
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `make compile` and commit it"
        )
    assert sorted(p.name for p in COMPILED_DIR.glob("*.yaml")) == sorted(p.name for p in fresh)


def test_apr_study_ir_is_valid_and_self_contained():
    documents = list(yaml.safe_load_all((COMPILED_DIR / "apr_study.yaml").read_text()))
    spec = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(documents[0], spec)  # strict: unknown fields are an error
    platform = pipeline_spec_pb2.PlatformSpec()
    json_format.ParseDict(documents[1], platform)
    assert spec.pipeline_info.name == "apr-study"
    inputs = spec.root.input_definitions.parameters
    for name in ("n_models", "flops_min", "flops_max", "datasets", "recipe", "epochs", "seed"):
        assert name in inputs, name
    executors = spec.deployment_spec["executors"]
    for name, executor in executors.items():
        container = executor["container"]
        # Training runs in the GPU image (tests/sweep/test_compiled_gpu.py), the rest on CPUs.
        assert container["image"] == (GPU_IMAGE if name == "exec-train-chunk" else CPU_IMAGE), name
        command = " ".join(container["command"])
        assert "pip install" not in command, f"{name} installs packages at run time"
    # The fan-out and fan-in are there.
    loops = [t for t in spec.root.dag.tasks.values() if t.WhichOneof("iterator") is not None]
    assert len(loops) == 1
    assert "kubernetes" in platform.platforms
    executors_config = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors_config) == set(executors)
    for executor in executors_config.values():
        # The names are pipeline parameters (tests/pipelines/test_compile_cluster_names.py)
        # whose defaults are the chart's names.
        config_map = executor["configMapAsEnv"][0]["configMapNameParameter"]
        secret = executor["secretAsEnv"][0]["secretNameParameter"]
        assert config_map["componentInputParameter"].endswith("launcher_config_map")
        assert secret["componentInputParameter"].endswith("s3_secret")
    assert inputs["launcher_config_map"].default_value.string_value == LAUNCHER_CONFIG_MAP
    assert inputs["s3_secret"].default_value.string_value == S3_SECRET


def test_compile_cli(tmp_path, capsys):
    assert main(["compile", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "apr_study.yaml").exists()
    assert str(tmp_path / "apr_study.yaml") in capsys.readouterr().out.splitlines()


def test_committed_files_exist():
    assert Path(COMPILED_DIR / "apr_study.yaml").stat().st_size > 1000


def test_each_seed_reaches_only_what_it_seeds():
    """``seed`` draws the architectures, ``data_seed`` the datasets (their splits, and the
    extra test sets the plan materialises); the plan logs both."""
    spec = next(yaml.safe_load_all((COMPILED_DIR / "apr_study.yaml").read_text()))
    tasks = spec["root"]["dag"]["tasks"]

    def source(task: str, parameter: str) -> str:
        return tasks[task]["inputs"]["parameters"][parameter]["componentInputParameter"]

    assert source("sample-architectures", "seed") == "seed"
    assert source("prepare-datasets", "seed") == "data_seed"
    assert source("plan-study", "seed") == "data_seed"
    assert source("plan-study", "sample_seed") == "seed"
    assert source("analyze-study", "top_k") == "top_k"


def test_transfer_study_hands_its_checks_and_variants_to_the_plan():
    spec = next(yaml.safe_load_all((COMPILED_DIR / "transfer_study.yaml").read_text()))
    plan = spec["root"]["dag"]["tasks"]["plan-transfer-study"]["inputs"]["parameters"]
    for name in ("max_overlap", "logme_variant", "curve_points"):
        assert plan[name] == {"componentInputParameter": name}, name
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["max_overlap"]["defaultValue"] == 0.01
    assert defaults["logme_variant"]["defaultValue"] == "paper"
