"""The cluster profile: what the compiled pipeline asks Kubernetes for (GPUs, nodes, taints).

Kubeflow Pipelines fixes node selectors, tolerations, CPU requests and a loop's parallelism at
compile time, so they come from a profile file (``pipelines/configs/cluster.yaml``, or the file
named by ``APRFLOW_CLUSTER_PROFILE`` when compiling); the GPU count per training task is the
run-time pipeline parameter ``gpus_per_trial``. :func:`on_cluster` and :func:`on_gpu_nodes` put
a task of any pipeline on the cluster with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from kfp import dsl, kubernetes
from kfp.dsl.pipeline_channel import PipelineParameterChannel
from kubernetes.utils import parse_quantity

from components.common.errors import AprflowError
from components.common.yamlsafe import load_yaml_file
from components.data.descriptor import CACHE_DIR_ENV, CACHE_LIMIT_ENV

PROFILE_ENV = "APRFLOW_CLUSTER_PROFILE"
DEFAULT_PROFILE = Path(__file__).parent / "configs" / "cluster.yaml"
# The chart's ConfigMap and Secret (charts/aprflow) and the keys each task reads from them.
LAUNCHER_CONFIG_MAP = "aprflow-launcher"
S3_SECRET = "aprflow-s3"
LAUNCHER_KEYS = (
    "APRFLOW_STORE_URI",
    "APRFLOW_S3_ENDPOINT_URL",
    "MLFLOW_TRACKING_URI",
    "AWS_DEFAULT_REGION",
)
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
SHARD_CACHE_MOUNT = "/cache"


class ProfileError(AprflowError):
    """A cluster profile that cannot be compiled."""


@dataclass(frozen=True)
class ClusterProfile:
    """See ``pipelines/configs/cluster.yaml`` for what each key means."""

    accelerator: str = "nvidia.com/gpu"
    gpus_per_node: int = 8
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    train_cpu: int = 8
    train_memory: str = "64Gi"
    shm_size: str = "16Gi"
    max_parallel_tasks: int = 16
    task_retries: int = 3
    shard_cache_size: str = "32Gi"

    def __post_init__(self) -> None:
        for name, low in (
            ("gpus_per_node", 1),
            ("train_cpu", 1),
            ("max_parallel_tasks", 1),
            ("task_retries", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ProfileError(
                    f"cluster profile: {name} must be an integer >= {low}, got {value!r}"
                )
        for name in ("train_memory", "shm_size", "shard_cache_size"):
            try:
                parse_quantity(getattr(self, name))
            except ValueError:
                raise ProfileError(
                    f"cluster profile: {name} {getattr(self, name)!r} is no Kubernetes "
                    "quantity (e.g. 64Gi)"
                ) from None
        for toleration in self.tolerations:
            unknown = set(toleration) - {"key", "operator", "value", "effect", "toleration_seconds"}
            if unknown:
                raise ProfileError(f"cluster profile: toleration keys {sorted(unknown)} unknown")

    @property
    def shard_cache_gb(self) -> int:
        """The shard cache's limit in GB: 90 % of ``shard_cache_size``."""
        return max(1, int(parse_quantity(self.shard_cache_size) * 9 // 10 // 10**9))

    @property
    def train_pod_memory(self) -> str:
        """The training pod's memory: ``train_memory`` plus ``shm_size``, because the files in
        a memory-backed emptyDir (/dev/shm) are charged to the pod's memory limit
        (kubernetes.io/docs/concepts/storage/volumes/#emptydir: "files you write count
        against your container's memory limit")."""
        total = parse_quantity(self.train_memory) + parse_quantity(self.shm_size)
        return f"{int(total) // 2**20}Mi"


def load_profile(path: str | Path | None = None) -> ClusterProfile:
    """The profile at ``path``, else ``$APRFLOW_CLUSTER_PROFILE``, else the committed one."""
    path = Path(path or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE)
    try:
        values = load_yaml_file(path, f"cluster profile {path}") or {}
    except (OSError, yaml.YAMLError) as e:
        raise ProfileError(f"cannot read cluster profile {path}: {e}") from None
    valid = {f.name for f in fields(ClusterProfile)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ProfileError(
            f"cluster profile {path}: unknown key(s) {', '.join(unknown)}; valid keys are "
            f"{', '.join(sorted(valid))}"
        )
    return ClusterProfile(**values)


#: The profile the pipelines are compiled with.
PROFILE: ClusterProfile = load_profile()


def on_cluster(
    task: dsl.PipelineTask,
    cpu: str | PipelineParameterChannel,
    memory: str,
    launcher_config_map: str | PipelineParameterChannel = LAUNCHER_CONFIG_MAP,
    s3_secret: str | PipelineParameterChannel = S3_SECRET,
) -> dsl.PipelineTask:
    """Resources, the launcher config and S3 credentials as environment, and no KFP caching.

    The ConfigMap and Secret names may be pipeline parameters (kfp-kubernetes resolves them when
    the task's pod is created), so one compiled pipeline serves any chart install.
    KFP caching is off because trials are idempotent by their own content hash (a finished
    trial is reused from the store), and a cached plan could point at a deleted MLflow run.
    """
    task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
    task.set_caching_options(False)
    kubernetes.use_config_map_as_env(
        task, launcher_config_map, config_map_key_to_env={k: k for k in LAUNCHER_KEYS}
    )
    kubernetes.use_secret_as_env(task, s3_secret, secret_key_to_env={k: k for k in SECRET_KEYS})
    return task


def on_gpu_nodes(
    task: dsl.PipelineTask, gpus: str | PipelineParameterChannel, profile: ClusterProfile
) -> dsl.PipelineTask:
    """GPUs, GPU nodes, a memory-backed /dev/shm, threads from the CPU request, and retries.

    ``gpus`` is a literal or a ``str`` pipeline parameter: the backend's driver reads a
    run-time GPU count with ``GetStringValue()``, so an ``int`` parameter sets no GPU limit at
    all (pipelines/backend.py, rule runtime-resource-string). The rest is the cluster profile.
    /dev/shm is a Memory emptyDir because a container's default 64 MiB breaks DataLoader
    workers and NCCL; the task's memory must include it (``ClusterProfile.train_pod_memory``).
    OMP_NUM_THREADS (one rank's threads) is the profile's cores per GPU, so torch does not start
    as many threads as the node has cores; the caller requests ``train_cpu x gpus`` cores (the
    apr-study plan task computes it as a string output). A preempted or drained GPU node fails
    the pod: the task is retried with back-off (the 2.17 Argo compiler turns ``set_retry`` into
    the executor's retryStrategy, backend/src/v2/compiler/argocompiler/container.go:577-587,
    614-650), and a retried chunk reuses its finished trials.
    """
    task.set_accelerator_type(profile.accelerator).set_accelerator_limit(gpus)
    if profile.task_retries:
        task.set_retry(
            num_retries=profile.task_retries,
            backoff_duration="60s",
            backoff_factor=2.0,
            backoff_max_duration="1800s",
        )
    for key, value in profile.node_selector.items():
        kubernetes.add_node_selector(task, key, value)
    for toleration in profile.tolerations:
        kubernetes.add_toleration(task, **toleration)
    kubernetes.empty_dir_mount(
        task,
        volume_name="dshm",
        mount_path="/dev/shm",
        medium="Memory",
        size_limit=profile.shm_size,
    )
    task.set_env_variable("OMP_NUM_THREADS", str(profile.train_cpu))
    # The shard cache on a volume whose size the scheduler accounts for: KFP 2.17 cannot set a
    # container's ephemeral-storage request, but a generic ephemeral volume's claim requests
    # storage from the default StorageClass and lives as long as the pod. The cache's own
    # limit leaves a tenth free for partial downloads.
    kubernetes.add_ephemeral_volume(
        task,
        volume_name="shard-cache",
        mount_path=SHARD_CACHE_MOUNT,
        access_modes=["ReadWriteOnce"],
        size=profile.shard_cache_size,
    )
    task.set_env_variable(CACHE_DIR_ENV, SHARD_CACHE_MOUNT)
    task.set_env_variable(CACHE_LIMIT_ENV, str(profile.shard_cache_gb))
    return task
