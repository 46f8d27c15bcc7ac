"""The compiled pipeline takes the Secret and ConfigMap names from pipeline parameters.

Every task's ``secretAsEnv`` / ``configMapAsEnv`` must name its Secret / ConfigMap through a
parameter that reaches the pipeline's own ``s3_secret`` / ``launcher_config_map`` inputs, also
from inside the ``ParallelFor`` sub-DAG (the sub-DAG must declare the input and its parent must
feed it: kubeflow/pipelines#13078 was a driver failing exactly there). The defaults are the
chart's names, so a default chart install needs no arguments.
"""

import pytest
import yaml

from pipelines.cli import COMPILED_DIR, compile_all
from pipelines.cluster import LAUNCHER_CONFIG_MAP, S3_SECRET

CHART_VALUES = COMPILED_DIR.parents[1] / "charts" / "aprflow" / "values.yaml"
NAME_PARAMETERS = {"secretAsEnv": "s3_secret", "configMapAsEnv": "launcher_config_map"}


def _load(path):
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _dag_of_executor(spec: dict) -> dict[str, tuple[str, str]]:
    """executor label -> (name of the DAG component holding its task, task name)."""
    dags = {"root": spec["root"]} | {
        name: comp for name, comp in spec["components"].items() if "dag" in comp
    }
    found = {}
    for dag_name, dag in dags.items():
        for task_name, task in dag["dag"]["tasks"].items():
            component = spec["components"][task["componentRef"]["name"]]
            if "executorLabel" in component:
                found[component["executorLabel"]] = (dag_name, task_name)
    return found


def _resolve_to_pipeline_input(spec: dict, dag_name: str, parameter: str) -> str:
    """Follows a DAG input parameter up to the root and returns the pipeline parameter's name.

    Raises AssertionError when a DAG on the way does not declare or receive the parameter.
    """
    while dag_name != "root":
        dag = spec["components"][dag_name]
        assert parameter in dag["inputDefinitions"]["parameters"], (
            f"{dag_name} uses {parameter} but does not declare it as an input"
        )
        parents = [
            (name, task)
            for name, comp in [("root", spec["root"]), *spec["components"].items()]
            if "dag" in comp
            for task in comp["dag"]["tasks"].values()
            if task["componentRef"]["name"] == dag_name
        ]
        assert len(parents) == 1, f"{dag_name} is used by {len(parents)} tasks"
        parent_name, task = parents[0]
        source = task["inputs"]["parameters"][parameter]
        assert "componentInputParameter" in source, f"{dag_name}.{parameter} is not a DAG input"
        dag_name, parameter = parent_name, source["componentInputParameter"]
    assert parameter in spec["root"]["inputDefinitions"]["parameters"], parameter
    return parameter


@pytest.fixture(scope="module")
def compiled():
    return _load(COMPILED_DIR / "apr_study.yaml")


def _check_names_are_parameters(spec: dict, executors: dict) -> None:
    where = _dag_of_executor(spec)
    assert executors.keys() == where.keys()
    for label, config in executors.items():
        dag_name, task_name = where[label]
        for field, pipeline_parameter in NAME_PARAMETERS.items():
            (entry,) = config[field]
            kind = field.replace("AsEnv", "")  # secret / configMap
            reference = entry[f"{kind}NameParameter"]
            assert set(reference) == {"componentInputParameter"}, (
                f"{task_name}: {field} name is {reference}, not a parameter"
            )
            # No constant name beside the parameter (the deprecated field).
            assert f"{kind}Name" not in entry
            resolved = _resolve_to_pipeline_input(
                spec, dag_name, reference["componentInputParameter"]
            )
            assert resolved == pipeline_parameter, f"{task_name}: {field} -> {resolved}"


def test_every_task_takes_secret_and_config_map_names_from_pipeline_parameters(compiled):
    spec, executors = compiled
    in_loop = [dag for dag, _ in _dag_of_executor(spec).values() if dag != "root"]
    assert in_loop, "the trial fan-out should put at least one task inside a sub-DAG"
    _check_names_are_parameters(spec, executors)


def test_name_parameters_default_to_the_charts_names(compiled):
    spec, _ = compiled
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    values = yaml.safe_load(CHART_VALUES.read_text())
    assert parameters["s3_secret"]["defaultValue"] == S3_SECRET == values["s3"]["secretName"]
    assert (
        parameters["launcher_config_map"]["defaultValue"]
        == LAUNCHER_CONFIG_MAP
        == values["launcher"]["configMapName"]
    )
    for name in NAME_PARAMETERS.values():
        assert parameters[name]["parameterType"] == "STRING"


def test_the_check_fails_on_a_constant_name(tmp_path):
    """The check above can fail: a task in a loop that names its Secret by a constant."""
    from kfp import compiler, dsl, kubernetes

    from components.common.images import CPU_IMAGE

    @dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
    def noop() -> str:
        return ""

    @dsl.pipeline(name="constant-secret")
    def constant_secret(s3_secret: str = S3_SECRET, launcher_config_map: str = "x"):
        with dsl.ParallelFor([1, 2]):
            task = noop()
            kubernetes.use_config_map_as_env(task, launcher_config_map, {"A": "A"})
            kubernetes.use_secret_as_env(task, "aprflow-s3", secret_key_to_env={"A": "A"})

    path = tmp_path / "constant.yaml"
    compiler.Compiler().compile(constant_secret, str(path))
    with pytest.raises(AssertionError, match="not a parameter"):
        _check_names_are_parameters(*_load(path))


def test_compiled_names_survive_a_fresh_compile(tmp_path):
    compile_all(tmp_path)
    assert _load(tmp_path / "apr_study.yaml") == _load(COMPILED_DIR / "apr_study.yaml")
