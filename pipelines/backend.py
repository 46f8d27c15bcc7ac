"""What a Kubeflow Pipelines backend does with a compiled pipeline, and kfp.local does not.

kfp.local runs a pipeline's Python functions; on a cluster, the backend's drivers read the
compiled IR and decide what each pod gets. The rules below were read in the backend's source
at tag ``2.17.0`` of kubeflow/pipelines (the kfp version this project pins) and are applied to
every compiled pipeline by ``tests/pipelines/test_backend_conformance.py``:

- ``parameter-kind``: a task input receives a value of the kind its source declares (a loop
  item is converted to the item type the loop component declares, ``STRING`` = JSON text), and
  the driver refuses a value whose kind differs from a non-``STRING`` input's type.
- ``runtime-resource-string``: a run-time resource (GPU count and type, CPU, memory) is read
  from the task's inputs with ``GetStringValue()``: a non-string parameter reads as ``""``,
  which sets no GPU limit, or fails to parse as a CPU or memory quantity.
- ``raw-placeholder-in-json``: the launcher substitutes ``{{$.inputs.parameters['x']}}``
  inside the executor input's JSON text without escaping; a user's string with ``"`` or ``\\``
  there breaks the JSON the component reads.
- ``executor-input-size``: the executor input reaches the container as one command-line
  argument, and Linux refuses an argument over 128 KiB (``MAX_ARG_STRLEN``).

:func:`pod_count` counts the pods a run creates (drivers included), and
:func:`largest_executor_input` sizes the executor inputs for given arguments, for
``aprflow run --dry-run``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BACKEND = "kubeflow/pipelines@2.17.0"
#: Linux's limit on one argv string (``MAX_ARG_STRLEN`` = 32 pages of 4 KiB).
MAX_ARGUMENT_BYTES = 128 * 1024
PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")


@dataclass(frozen=True)
class Rule:
    """A backend behaviour and where in the backend's source it is."""

    name: str
    source: str


RULES = {
    rule.name: rule
    for rule in (
        Rule(
            "parameter-kind",
            "backend/src/v2/driver/resolve.go:202-250 (handleParamTypeValidationAndConversion:"
            " STRING converts any value to JSON text, other types refuse another kind with"
            " typeMismatch), 290-298 (an iteration's item)",
        ),
        Rule(
            "runtime-resource-string",
            "backend/src/v2/driver/resolve.go:818-831 (resolvePodSpecInputRuntimeParameter:"
            " GetStringValue), driver.go:173-197 and 360-445 (getPodResource, accelerator)",
        ),
        Rule(
            "raw-placeholder-in-json",
            "backend/src/v2/component/launcher_v2.go:1051-1073 (compileCmdAndArgs substitutes"
            " placeholders in the executor input's JSON), 1139-1145 (getPlaceholders: a string"
            " value as it is, unescaped)",
        ),
        Rule(
            "executor-input-size",
            "backend/src/v2/driver/container.go:313-325 (the executor input written into the"
            " container command after --executor_input); Linux MAX_ARG_STRLEN = 128 KiB",
        ),
    )
}

# The kind of value (protobuf Value) each parameter type is, as the driver compares them.
_KIND_OF_TYPE = {
    "STRING": "string",
    "NUMBER_INTEGER": "number",
    "NUMBER_DOUBLE": "number",
    "BOOLEAN": "bool",
    "LIST": "list",
    "STRUCT": "struct",
    "TASK_FINAL_STATUS": "struct",
    "TASK_CONFIG": "struct",
}
_RESOURCE_FIELDS = (
    "resourceCpuLimit",
    "resourceCpuRequest",
    "resourceMemoryLimit",
    "resourceMemoryRequest",
)


@dataclass(frozen=True)
class Violation:
    """A place in a compiled pipeline that the backend would reject or mishandle."""

    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule} [{BACKEND} {RULES[self.rule].source}]: {self.where}: {self.message}"


class PipelineIR:
    """A compiled pipeline (the YAML ``aprflow compile`` writes): pipeline spec + platform."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.components: dict[str, Any] = spec.get("components", {})
        self.executors: dict[str, Any] = spec.get("deploymentSpec", {}).get("executors", {})

    @classmethod
    def load(cls, path: str | Path) -> PipelineIR:
        return cls(next(yaml.safe_load_all(Path(path).read_text())))

    @property
    def name(self) -> str:
        return self.spec["pipelineInfo"]["name"]

    def component(self, name: str) -> dict[str, Any]:
        return self.spec["root"] if name == "root" else self.components[name]

    def dags(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every DAG component, the root first, as (name, component)."""
        yield "root", self.spec["root"]
        for name, component in self.components.items():
            if "dag" in component:
                yield name, component

    def input_types(self, component: str) -> dict[str, str]:
        parameters = self.component(component).get("inputDefinitions", {}).get("parameters", {})
        return {name: p["parameterType"] for name, p in parameters.items()}

    def output_type(self, component: str, key: str) -> str:
        spec = self.component(component)
        return spec["outputDefinitions"]["parameters"][key]["parameterType"]


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "list", dict: "struct"}.get(type(value), "null")


def _source_kind(ir: PipelineIR, dag: str, spec: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, description) of the value a task input receives, or None when unknown."""
    if "parameterExpressionSelector" in spec:
        return None  # a field of a struct: its kind is known at run time only
    if "componentInputParameter" in spec:
        name = spec["componentInputParameter"]
        declared = ir.input_types(dag)[name]
        return _KIND_OF_TYPE[declared], f"{dag} input {name!r} ({declared})"
    if "taskOutputParameter" in spec:
        producer = spec["taskOutputParameter"]["producerTask"]
        key = spec["taskOutputParameter"]["outputParameterKey"]
        callee = ir.component(dag)["dag"]["tasks"][producer]["componentRef"]["name"]
        declared = ir.output_type(callee, key)
        return _KIND_OF_TYPE[declared], f"output {key!r} of {producer} ({declared})"
    if "runtimeValue" in spec:
        constant = spec["runtimeValue"]["constant"]
        return _json_kind(constant), f"constant {json.dumps(constant)[:60]}"
    if "taskFinalStatus" in spec:
        return "struct", "a task's final status"
    return None


def check_parameter_kinds(ir: PipelineIR) -> list[Violation]:
    """Every task input whose source's kind a non-STRING input refuses."""
    found = []
    for dag, component in ir.dags():
        for task_name, task in component["dag"]["tasks"].items():
            callee = task["componentRef"]["name"]
            declared = ir.input_types(callee)
            for name, spec in task.get("inputs", {}).get("parameters", {}).items():
                expected = declared.get(name)
                source = _source_kind(ir, dag, spec)
                if expected in (None, "STRING") or source is None:
                    continue
                kind, description = source
                if kind != _KIND_OF_TYPE[expected]:
                    found.append(
                        Violation(
                            "parameter-kind",
                            f"{ir.name}: {dag} task {task_name} input {name!r}",
                            f"receives a {kind} from {description}, but {callee} declares "
                            f"{expected}: the driver fails the task before its pod starts",
                        )
                    )
    return found


def _resource_placeholders(executor: dict[str, Any]) -> dict[str, str]:
    """{resource field: parameter name} of an executor's run-time resources."""
    resources = executor.get("container", {}).get("resources", {})
    values = {field: resources.get(field, "") for field in _RESOURCE_FIELDS}
    accelerator = resources.get("accelerator", {})
    values["accelerator.resourceCount"] = accelerator.get("resourceCount", "")
    values["accelerator.resourceType"] = accelerator.get("resourceType", "")
    found = {}
    for field, value in values.items():
        match = PLACEHOLDER.fullmatch(str(value))
        if match:
            found[field] = match.group(1)
    return found


def check_runtime_resources(ir: PipelineIR) -> list[Violation]:
    """Every run-time resource placeholder whose value does not reach the pod as a string.

    The value is the task's input of that name: converted to text when the component declares
    it ``STRING``, else of its source's kind (the SDK passes ``pipelinechannel--x`` inputs
    undeclared, as the pipeline parameter's type).
    """
    found = []
    for dag, component in ir.dags():
        for task_name, task in component["dag"]["tasks"].items():
            callee_name = task["componentRef"]["name"]
            callee = ir.component(callee_name)
            executor = ir.executors.get(callee.get("executorLabel"), {})
            inputs = task.get("inputs", {}).get("parameters", {})
            for field, parameter in _resource_placeholders(executor).items():
                if ir.input_types(callee_name).get(parameter) == "STRING":
                    continue
                source = _source_kind(ir, dag, inputs.get(parameter, {}))
                if source is not None and source[0] == "string":
                    continue
                what = f"a {source[0]} from {source[1]}" if source else "no value"
                found.append(
                    Violation(
                        "runtime-resource-string",
                        f"{ir.name}: {dag} task {task_name} {field}",
                        f"reads input {parameter!r}, {what}: the driver reads it as a string "
                        "and gets '' (no GPU limit is set; a CPU or memory quantity fails to "
                        "parse); make it a str pipeline parameter",
                    )
                )
    return found


def _placeholders_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return PLACEHOLDER.findall(value)
    if isinstance(value, list):
        return [p for item in value for p in _placeholders_in(item)]
    if isinstance(value, dict):
        return [p for item in value.values() for p in _placeholders_in(item)]
    return []


def check_raw_placeholders(ir: PipelineIR) -> list[Violation]:
    """Every constant into which the launcher would paste a user's value unescaped.

    A placeholder inside a list or dict constant is pasted into JSON text whatever its type (a
    number arrives as a string, a string with ``"`` breaks the JSON). A whole-string constant
    is pasted into a JSON string: safe for numbers and booleans; a string parameter is exempt
    only when the task's executor also reads it as a resource quantity, which the driver parses
    (and refuses) before the pod starts.
    """
    found = []
    for dag, component in ir.dags():
        for task_name, task in component["dag"]["tasks"].items():
            callee = ir.component(task["componentRef"]["name"])
            quantities = set(
                _resource_placeholders(ir.executors.get(callee.get("executorLabel"), {})).values()
            )
            inputs = task.get("inputs", {}).get("parameters", {})
            for name, spec in inputs.items():
                constant = spec.get("runtimeValue", {}).get("constant")
                for parameter in _placeholders_in(constant):
                    source = _source_kind(ir, dag, inputs.get(parameter, {}))
                    kind = source[0] if source else "unknown"
                    embedded = not isinstance(constant, str)
                    if embedded or (kind == "string" and parameter not in quantities):
                        found.append(
                            Violation(
                                "raw-placeholder-in-json",
                                f"{ir.name}: {dag} task {task_name} input {name!r}",
                                f"the {kind} {parameter!r} is pasted unescaped into the "
                                "executor input's JSON; pass it as an input of its own",
                            )
                        )
    return found


def check(ir: PipelineIR) -> list[Violation]:
    """Every violation of the structural rules (the size rule needs arguments: see
    :func:`largest_executor_input`)."""
    return check_parameter_kinds(ir) + check_runtime_resources(ir) + check_raw_placeholders(ir)


# ---------------------------------------------------------------------------------------------
# Pods and executor-input sizes of a run


def pod_count(ir: PipelineIR, iterations: Mapping[str, int]) -> int:
    """Pods a run creates when every task runs once (retries add pods), drivers included.

    The 2.17 Argo compiler gives the root DAG a driver pod, every container task a driver pod
    and an executor pod, every sub-DAG a driver pod, and a loop one driver pod for the loop
    and one for each iteration (backend/src/v2/compiler/argocompiler/dag.go:150-175, 236-262,
    360-440; container.go:186-274).

    Args:
        ir: the compiled pipeline.
        iterations: items of each loop, by the loop task's name.
    """

    def pods(component: dict[str, Any]) -> int:
        total = 0
        for task_name, task in component["dag"]["tasks"].items():
            callee = ir.component(task["componentRef"]["name"])
            inner = pods(callee) if "dag" in callee else 2
            if "parameterIterator" in task or "artifactIterator" in task:
                if task_name not in iterations:
                    raise ValueError(f"pod_count: give the item count of loop {task_name!r}")
                total += 1 + iterations[task_name] * (1 + inner)
            else:
                total += inner + (1 if "dag" in callee else 0)
        return total

    return 1 + pods(ir.spec["root"])


def _artifact(name: str) -> dict[str, Any]:
    # As long as the backend's URIs get: bucket, pipeline, run id, task, execution id.
    uri = f"s3://mlpipeline/v2/artifacts/pipeline-name/{'0' * 36}/task-name/{'0' * 36}/{name}"
    return {"artifacts": [{"name": name, "type": {"schemaTitle": "system.Artifact"}, "uri": uri}]}


def executor_input_sizes(
    ir: PipelineIR,
    arguments: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, Any]],
) -> dict[str, int]:
    """Bytes of each container task's executor input (its largest iteration for a loop).

    Args:
        ir: the compiled pipeline.
        arguments: pipeline arguments (defaults fill the rest).
        outputs: every container task's output parameters, by task name; a loop's items are
            the output it iterates over, and a ``dsl.Collected`` output is one value per
            item.

    Raises:
        ValueError: an output that ``outputs`` does not give.
    """
    root_inputs = ir.spec["root"].get("inputDefinitions", {}).get("parameters", {})
    context = {n: p.get("defaultValue") for n, p in root_inputs.items()} | dict(arguments)
    sizes: dict[str, int] = {}

    def output_of(dag: dict[str, Any], producer: str, key: str, dag_context: dict) -> Any:
        callee = ir.component(dag["dag"]["tasks"][producer]["componentRef"]["name"])
        if "dag" not in callee:
            if producer not in outputs or key not in outputs[producer]:
                raise ValueError(f"executor_input_sizes: give output {key!r} of {producer!r}")
            return outputs[producer][key]
        # A loop's collected output: one value of the inner task per iteration.
        source = callee["dag"]["outputs"]["parameters"][key]["valueFromParameter"]
        item = output_of(callee, source["producerSubtask"], source["outputParameterKey"], {})
        task = dag["dag"]["tasks"][producer]
        items = value_of(dag, task["inputs"]["parameters"][_items_input(task)], dag_context)
        return [item] * len(items)

    def value_of(dag: dict[str, Any], spec: dict[str, Any], dag_context: dict) -> Any:
        if "componentInputParameter" in spec:
            return dag_context.get(spec["componentInputParameter"])
        if "taskOutputParameter" in spec:
            out = spec["taskOutputParameter"]
            return output_of(dag, out["producerTask"], out["outputParameterKey"], dag_context)
        if "runtimeValue" in spec:
            return spec["runtimeValue"]["constant"]
        return None

    def walk(dag: dict[str, Any], dag_context: dict) -> None:
        for task_name, task in dag["dag"]["tasks"].items():
            callee = ir.component(task["componentRef"]["name"])
            values = {
                name: value_of(dag, spec, dag_context)
                for name, spec in task.get("inputs", {}).get("parameters", {}).items()
            }
            if "parameterIterator" in task:
                iterator = task["parameterIterator"]
                items = values.get(_items_input(task)) or [None]
                values[iterator["itemInput"]] = max(items, key=lambda i: len(json.dumps(i)))
            if "dag" in callee:
                walk(callee, values)
                continue
            artifacts = callee.get("inputDefinitions", {}).get("artifacts", {})
            out = callee.get("outputDefinitions", {})
            executor_input = {
                "inputs": {
                    "parameterValues": values,
                    "artifacts": {name: _artifact(name) for name in artifacts},
                },
                "outputs": {
                    "parameters": {
                        key: {"outputFile": f"/tmp/kfp_outputs/{key}"}
                        for key in out.get("parameters", {})
                    },
                    "artifacts": {name: _artifact(name) for name in out.get("artifacts", {})},
                    "outputFile": "/tmp/kfp_outputs/output_metadata.json",
                },
            }
            size = len(json.dumps(executor_input, separators=(",", ":")).encode())
            sizes[task_name] = max(size, sizes.get(task_name, 0))

    walk(ir.spec["root"], context)
    return sizes


def _items_input(task: dict[str, Any]) -> str:
    return task["parameterIterator"]["items"]["inputParameter"]


def largest_executor_input(
    ir: PipelineIR, arguments: Mapping[str, Any], outputs: Mapping[str, Mapping[str, Any]]
) -> tuple[str, int]:
    """(task, bytes) of the largest executor input (see :func:`executor_input_sizes`)."""
    sizes = executor_input_sizes(ir, arguments, outputs)
    task = max(sizes, key=sizes.__getitem__)
    return task, sizes[task]


def study_backend_line(
    arguments: Mapping[str, Any],
    n_trials: int,
    n_chunks: int,
    pipeline: str = "apr-study",
    n_transfer_chunks: int = 0,
) -> str:
    """What the backend runs for a study of ``n_trials`` trials in ``n_chunks`` chunks
    (``apr-study``, or ``seed-study``: the same plan, chunk and training tasks;
    ``pretrain-factors`` adds a transfer loop of ``n_transfer_chunks`` chunks): pods (drivers
    included) and the largest executor input against Linux's limit.

    The values are those the tasks will pass: a study id as long as the plan's, MLflow's
    32-character run id, one loop item per chunk and one trial count per chunk task.
    """
    from pipelines.cli import compiled_path

    ir = PipelineIR.load(compiled_path(pipeline))
    study_id = f"{arguments['study_name']}-{'0' * 10}"  # as long as plan.study_id makes it
    outputs = {
        "plan-study": {"study_id": study_id, "parent_run_id": "0" * 32},
        "list-chunks": {"Output": [{"study_id": study_id, "chunk": i} for i in range(n_chunks)]},
        "train-chunk": {"Output": -(-n_trials // n_chunks)},  # a chunk's trial count
    }
    transfer_id = f"{study_id}-transfer-{'0' * 10}"  # as components.pretrain.run names it
    outputs |= {
        "plan-pretrain-transfer": {"Output": transfer_id},
        "list-transfer-chunks": {
            "Output": [
                {"study_id": transfer_id, "chunk": i, "parent_run_id": "0" * 32}
                for i in range(n_transfer_chunks)
            ]
        },
        "transfer-chunk": {"Output": f"studies/{transfer_id}/results/chunk-00000.csv"},
    }
    root = ir.spec["root"]["dag"]["tasks"]
    iterations = {
        name: n_transfer_chunks if _loop_source(task) == "list-transfer-chunks" else n_chunks
        for name, task in root.items()
        if "parameterIterator" in task
    }
    pods = pod_count(ir, iterations)
    task, size = largest_executor_input(ir, arguments, outputs)
    return (
        f"backend ({BACKEND}): {pods} pods, drivers included; largest executor input "
        f"{size:,} bytes ({task}), limit {MAX_ARGUMENT_BYTES:,}"
    )


def _loop_source(task: dict[str, Any]) -> str:
    """The task whose output a loop iterates over."""
    spec = task["inputs"]["parameters"][_items_input(task)]
    return spec.get("taskOutputParameter", {}).get("producerTask", "")
