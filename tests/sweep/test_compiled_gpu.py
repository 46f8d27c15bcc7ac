"""The committed compiled pipeline is the cluster one: GPU training tasks in a bounded loop."""

from __future__ import annotations

import pytest
import yaml

from components.common.images import CPU_IMAGE, GPU_IMAGE
from pipelines.cli import COMPILED_DIR
from pipelines.cluster import PROFILE, ProfileError, load_profile


@pytest.fixture(scope="module")
def compiled():
    spec, platform = yaml.safe_load_all((COMPILED_DIR / "apr_study.yaml").read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_training_executor_requests_gpus_in_the_gpu_image(compiled):
    spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    train = executors["exec-train-chunk"]["container"]
    assert train["image"] == GPU_IMAGE
    accelerator = train["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu"
    # The count is the run-time parameter gpus_per_trial.
    assert (
        accelerator["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus_per_trial']}}"
    )
    # The CPU request is the run-time str parameter task_cpu (aprflow scales it with the GPUs).
    assert (
        train["resources"]["resourceCpuRequest"]
        == "{{$.inputs.parameters['pipelinechannel--task_cpu']}}"
    )
    task_cpu = spec["root"]["inputDefinitions"]["parameters"]["task_cpu"]
    assert (task_cpu["parameterType"], task_cpu["defaultValue"]) == (
        "STRING",
        str(PROFILE.train_cpu),
    )
    env = {e["name"]: e["value"] for e in train["env"]}
    assert env["OMP_NUM_THREADS"] == str(PROFILE.train_cpu)
    others = {name: e["container"]["image"] for name, e in executors.items()}
    del others["exec-train-chunk"]
    assert set(others.values()) == {CPU_IMAGE}, "only training needs the GPU image"
    assert all(
        "accelerator" not in e["container"].get("resources", {})
        for n, e in executors.items()
        if n != "exec-train-chunk"
    )


def test_training_pods_land_on_gpu_nodes_with_a_memory_shm(compiled):
    _, kubernetes = compiled
    train = kubernetes["exec-train-chunk"]
    assert train["nodeSelector"]["labels"] == PROFILE.node_selector
    assert train["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert train["emptyDirMounts"] == [
        {
            "volumeName": "dshm",
            "mountPath": "/dev/shm",
            "medium": "Memory",
            "sizeLimit": PROFILE.shm_size,
        }
    ]


def test_one_bounded_loop_with_one_training_task(compiled):
    spec, _ = compiled
    root = spec["root"]["dag"]["tasks"]
    loops = [t for t in root.values() if "iteratorPolicy" in t or "parameterIterator" in t]
    assert len(loops) == 1
    assert loops[0]["iteratorPolicy"]["parallelismLimit"] == PROFILE.max_parallel_tasks
    body = spec["components"][loops[0]["componentRef"]["name"]]["dag"]["tasks"]
    assert list(body) == ["train-chunk"]
    # Outside the loop: data, sample, plan, list-chunks, analyze: pods = 5 + chunks.
    assert len(root) == 6
    assert (
        "pipelinechannel--list-chunks-Output"
        in loops[0]["parameterIterator"]["items"]["inputParameter"]
    )


def test_a_bad_profile_is_one_error(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("max_parallel_tasks: 0\n")
    with pytest.raises(ProfileError, match="max_parallel_tasks must be an integer >= 1"):
        load_profile(path)
    path.write_text("gpu: 1\n")
    with pytest.raises(ProfileError, match="unknown key.*gpu; valid keys are accelerator"):
        load_profile(path)


def test_training_tasks_are_retried_and_their_memory_holds_the_shm(compiled):
    spec, _ = compiled
    loop = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]["train-chunk"]
    assert loop["retryPolicy"] == {
        "maxRetryCount": PROFILE.task_retries,
        "backoffDuration": "60s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "1800s",
    }
    resources = spec["deploymentSpec"]["executors"]["exec-train-chunk"]["container"]["resources"]
    # 64Gi for the trainer + 16Gi of /dev/shm, which counts against the pod's memory limit.
    assert resources["resourceMemoryLimit"] == resources["resourceMemoryRequest"] == "81920Mi"
    assert PROFILE.train_pod_memory == "81920Mi"


def test_a_profile_without_retries_and_a_bad_quantity(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("task_retries: 0\n")
    assert load_profile(path).task_retries == 0
    path.write_text("train_memory: lots\n")
    with pytest.raises(ProfileError, match="train_memory 'lots' is no Kubernetes quantity"):
        load_profile(path)


def test_the_shard_cache_is_a_volume_the_scheduler_accounts_for(compiled):
    spec, kubernetes = compiled
    (volume,) = kubernetes["exec-train-chunk"]["genericEphemeralVolume"]
    assert volume["mountPath"] == "/cache" and volume["size"] == PROFILE.shard_cache_size
    env = {
        e["name"]: e["value"]
        for e in spec["deploymentSpec"]["executors"]["exec-train-chunk"]["container"]["env"]
    }
    # The loader's cache folder and limit: 90 % of the 32Gi volume (34.4 GB) is 30 GB.
    assert env["APRFLOW_SHARD_CACHE"] == "/cache"
    assert env["APRFLOW_SHARD_CACHE_GB"] == "30" == str(PROFILE.shard_cache_gb)


def test_task_cpu_scales_with_the_gpus_unless_given():
    from pipelines.sweep import SweepError, scaled_task_cpu

    default = str(PROFILE.train_cpu)
    assert scaled_task_cpu({"task_cpu": default, "gpus_per_trial": "1"}) == default
    assert scaled_task_cpu({"task_cpu": default, "gpus_per_trial": 4}) == str(4 * PROFILE.train_cpu)
    assert scaled_task_cpu({"task_cpu": "12", "gpus_per_trial": "4"}) == "12"
    for bad in ("0", "abc", "1.5", "500m", "100000"):
        with pytest.raises(SweepError, match="task_cpu must be a whole number of cores"):
            scaled_task_cpu({"task_cpu": bad, "gpus_per_trial": "1"})


def test_local_runs_clear_the_retries_and_put_them_back():
    """kfp.local honours set_retry with minutes of back-off: a local run fails at once."""
    from pipelines.apr_study import apr_study
    from pipelines.local import without_retries

    def policy():
        loop = apr_study.pipeline_spec.components["comp-for-loop-1"]
        return loop.dag.tasks["train-chunk"].retry_policy.max_retry_count

    assert policy() == PROFILE.task_retries
    with without_retries(apr_study):
        assert policy() == 0
    assert policy() == PROFILE.task_retries
