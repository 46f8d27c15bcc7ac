"""The compiled pipelines follow the Kubeflow Pipelines 2.17 backend's rules (pipelines/backend.py).

kfp.local applies none of these rules, so the end-to-end tests cannot see a pipeline the
backend would refuse. Each rule cites the backend source it was read from (kubeflow/pipelines
at tag 2.17.0); each test below also shows the rule failing on a pipeline that breaks it.
"""

# No `from __future__ import annotations`: KFP reads the components' annotations as types.
import json
from pathlib import Path

import pytest
from kfp import compiler, dsl

from pipelines.backend import (
    MAX_ARGUMENT_BYTES,
    PLACEHOLDER,
    RULES,
    PipelineIR,
    check,
    executor_input_sizes,
    largest_executor_input,
    pod_count,
)
from pipelines.cli import COMPILED_DIR

COMPILED = sorted(COMPILED_DIR.glob("*.yaml"))


def _compile(pipeline, tmp_path: Path) -> PipelineIR:
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return PipelineIR.load(path)


@dsl.component(base_image="python:3.11")
def _bare_list() -> list:
    return [{"chunk": 0}]


@dsl.component(base_image="python:3.11")
def _typed_list() -> list[dict]:
    return [{"chunk": 0}]


@dsl.component(base_image="python:3.11")
def _takes_dict(chunk: dict) -> int:
    return int(chunk["chunk"])


@dsl.component(base_image="python:3.11")
def _takes_ids(ids: list, name: str) -> None:
    print(len(ids), name)


@pytest.mark.parametrize("path", COMPILED, ids=[p.stem for p in COMPILED])
def test_committed_pipelines_follow_every_rule(path):
    violations = check(PipelineIR.load(path))
    assert not violations, "\n".join(map(str, violations))


def test_a_bare_list_loop_source_fails_with_the_rule_and_its_source(tmp_path):
    @dsl.pipeline(name="bare-list")
    def bare_list():
        with dsl.ParallelFor(_bare_list().output) as item:
            _takes_dict(chunk=item)

    (violation,) = check(_compile(bare_list, tmp_path))
    assert violation.rule == "parameter-kind"
    assert "receives a string" in violation.message and "declares STRUCT" in violation.message
    assert "kubeflow/pipelines@2.17.0 backend/src/v2/driver/resolve.go:202-250" in str(violation)

    @dsl.pipeline(name="typed-list")
    def typed_list():
        with dsl.ParallelFor(_typed_list().output) as item:
            _takes_dict(chunk=item)

    assert check(_compile(typed_list, tmp_path)) == []


def test_an_int_gpu_count_parameter_fails_and_a_string_one_passes(tmp_path):
    @dsl.pipeline(name="int-gpus")
    def int_gpus(gpus: int = 1):
        _takes_dict(chunk={"chunk": 0}).set_accelerator_type(
            "nvidia.com/gpu"
        ).set_accelerator_limit(gpus)

    violations = check(_compile(int_gpus, tmp_path))
    assert [v.rule for v in violations] == ["runtime-resource-string"]
    assert "accelerator.resourceCount" in violations[0].where
    assert "resolve.go:818-831" in str(violations[0])

    @dsl.pipeline(name="str-gpus")
    def str_gpus(gpus: str = "1"):
        _takes_dict(chunk={"chunk": 0}).set_accelerator_type(
            "nvidia.com/gpu"
        ).set_accelerator_limit(gpus)

    assert check(_compile(str_gpus, tmp_path)) == []


def test_a_user_string_inside_a_dict_constant_is_flagged(tmp_path):
    @dsl.pipeline(name="embedded")
    def embedded(study_name: str = "demo"):
        _takes_dict(chunk={"chunk": 0, "study_name": study_name})

    ir = _compile(embedded, tmp_path)
    (violation,) = check(ir)
    assert violation.rule == "raw-placeholder-in-json"
    # Why: the launcher pastes the value into the executor input's JSON text as it is
    # (launcher_v2.go getPlaceholders/compileCmdAndArgs), so a name with a quote breaks it.
    task = ir.spec["root"]["dag"]["tasks"]["takes-dict"]
    executor_input = json.dumps({"parameterValues": {"chunk": _constant(task, "chunk")}})
    pasted = PLACEHOLDER.sub(lambda _: 'my "best" study', executor_input)
    with pytest.raises(json.JSONDecodeError):
        json.loads(pasted)


def _constant(task: dict, name: str):
    return task["inputs"]["parameters"][name]["runtimeValue"]["constant"]


def test_the_size_rule_sees_trial_ids_passed_to_one_task(tmp_path):
    """The design the study had: every trial id gathered into the analysis task's input."""

    @dsl.pipeline(name="ids")
    def ids_pipeline(study_name: str = "demo"):
        with dsl.ParallelFor(_typed_list().output) as item:
            chunk = _takes_dict(chunk=item)
        _takes_ids(ids=dsl.Collected(chunk.output), name=study_name)

    ir = _compile(ids_pipeline, tmp_path)
    ids = [f"{i:024x}" for i in range(50)]
    outputs = {
        "typed-list": {"Output": [{"chunk": i} for i in range(300)]},
        "takes-dict": {"Output": ids},
    }
    task, size = largest_executor_input(ir, {}, outputs)
    # 300 chunks x 50 ids (15,000 trials) of 24 characters: over Linux's limit.
    assert task == "takes-ids" and size > MAX_ARGUMENT_BYTES
    with pytest.raises(ValueError, match="give output 'Output' of 'typed-list'"):
        executor_input_sizes(ir, {}, {})


def test_a_paper_scale_study_stays_far_under_the_argument_limit():
    """500 models x 9 datasets x 3 seeds: the largest executor input, every task counted."""
    from pipelines.sweep import planned_chunks

    arguments = {
        "study_name": "tuggener-2021-anynetx-a",
        "n_models": 500,
        "datasets": [f"dataset-{i}" for i in range(9)],
        "train_seeds": [0, 1, 2],
        "chunk_size": 10,
    }
    n_trials, n_chunks = planned_chunks(arguments)
    assert (n_trials, n_chunks) == (13_500, 1_350)
    ir = PipelineIR.load(COMPILED_DIR / "apr_study.yaml")
    study_id = "tuggener-2021-anynetx-a-0123456789"
    outputs = {
        "plan-study": {"study_id": study_id, "parent_run_id": "0" * 32},
        "list-chunks": {"Output": [{"study_id": study_id, "chunk": i} for i in range(n_chunks)]},
        "train-chunk": {"Output": 10},
    }
    sizes = executor_input_sizes(ir, arguments, outputs)
    assert set(sizes) == {
        "prepare-datasets",
        "sample-architectures",
        "plan-study",
        "list-chunks",
        "train-chunk",
        "analyze-study",
    }
    # The analysis task gathers one number per chunk, not the trial ids.
    assert max(sizes.values()) < MAX_ARGUMENT_BYTES // 4, sizes
    # Root driver, 5 tasks outside the loop (driver + executor), the loop's driver, and a
    # driver plus the task's two pods per chunk.
    assert pod_count(ir, {"for-loop-1": n_chunks}) == 1 + 5 * 2 + 1 + n_chunks * 3


def test_every_rule_names_its_backend_source():
    for rule in RULES.values():
        assert rule.source.startswith("backend/src/v2/"), rule


def test_dry_run_prints_pods_and_the_largest_executor_input(capsys):
    from pipelines.cli import main

    code = main(
        [
            "run",
            "apr-study",
            "--config",
            "pipelines/configs/apr_study.toy.yaml",
            "--dry-run",
            "--set",
            "chunk_size=2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "24 trials in 12 chunks: 12 training tasks" in out
    assert (
        f"backend (kubeflow/pipelines@2.17.0): {1 + 10 + 1 + 12 * 3} pods, drivers included" in out
    )
    assert "limit 131,072" in out


def test_the_most_chunks_the_limits_allow_stay_under_the_argument_limit():
    """LIMITS["chunks"] training tasks of the largest trial count the limits table allows."""
    from components.common.limits import LIMITS, MAX_CHUNKS

    n_trials = LIMITS["n_models"].high * LIMITS["datasets"].high * LIMITS["train_seeds"].high
    ir = PipelineIR.load(COMPILED_DIR / "apr_study.yaml")
    study_id = f"{'s' * 100}-0123456789"  # the longest study name
    outputs = {
        "plan-study": {"study_id": study_id, "parent_run_id": "0" * 32},
        "list-chunks": {"Output": [{"study_id": study_id, "chunk": i} for i in range(MAX_CHUNKS)]},
        "train-chunk": {"Output": int(n_trials // MAX_CHUNKS)},
    }
    task, size = largest_executor_input(ir, {"study_name": "s" * 100}, outputs)
    assert task == "analyze-study" and size < MAX_ARGUMENT_BYTES, (task, size)
