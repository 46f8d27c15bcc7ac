"""The TrainJob (trainer.kubeflow.org/v1alpha1) that trains one aprflow trial on several nodes.

Pure functions from a trial to the manifest; ``launch.py`` submits it. Every node runs
``torchrun --module components.trainjob.node``: the chart's ClusterTrainingRuntime (torch policy)
gives torchrun its node count, processes per node, rank and master address (PET_* variables),
torchrun gives each process RANK/WORLD_SIZE/MASTER_ADDR, and the DeepSpeed engine joins that
process group.

Written for Kubeflow Trainer v2.2 and v2.3 (their CRDs are the test fixtures in
tests/trainjob/crds): pod settings the TrainJob adds to the runtime's template go in
``spec.runtimePatches`` (v2.2 replaced v2.1's ``podTemplateOverrides`` with it).
"""

from __future__ import annotations

import re
from typing import Any

from pipelines.cluster import (
    LAUNCHER_CONFIG_MAP,
    LAUNCHER_KEYS,
    PROFILE,
    S3_SECRET,
    SECRET_KEYS,
    ClusterProfile,
)

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
KIND = "TrainJob"
DEFAULT_RUNTIME = "aprflow-torch-distributed"
NODE_MODULE = "components.trainjob.node"
TRIAL_LABEL = "aprflow.org/trial-id"
STUDY_LABEL = "aprflow.org/study-id"
# The runtime's replicated job (charts/aprflow/templates/trainer-runtime.yaml) whose pods the
# runtime patch changes.
NODE_JOB = "node"
# Owner of this launcher's entry in spec.runtimePatches (a list map keyed by manager:
# kubeflow/trainer v2.3.0, pkg/apis/trainer/v1alpha1/trainjob_types.go:124, RuntimePatches).
PATCH_MANAGER = "aprflow.org/trainjob-launcher"
# TrainJob names become JobSet, Job and Service names: a DNS-1035 label, and short enough for
# the suffixes the Trainer and JobSet controllers append.
_MAX_NAME = 40


def trainjob_name(trial_id: str) -> str:
    """``aprflow-<trial id>``: one TrainJob per trial, so a retried task finds its job again."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", trial_id):
        raise ValueError(f"trial id {trial_id!r} is not a hex content hash")
    return f"aprflow-{trial_id}"[:_MAX_NAME]


def _label_value(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63].strip("-._")


def resources_per_node(
    gpus: int, cpu: str, memory: str, accelerator: str = PROFILE.accelerator
) -> dict[str, dict[str, str]]:
    """Requests (and GPU limits, which Kubernetes requires to equal requests) of one node."""
    if gpus < 0:
        raise ValueError(f"gpus per node must be >= 0, not {gpus}")
    requests = {"cpu": cpu, "memory": memory}
    limits = {"memory": memory}
    if gpus:
        requests[accelerator] = limits[accelerator] = str(gpus)
    return {"requests": requests, "limits": limits}


def processes_per_node(gpus_per_node: int) -> int:
    """torchrun processes on each node: one per GPU, one on a CPU-only node.

    Set on every TrainJob: the torch plugin's default ``auto`` starts one process per requested
    CPU on a node without GPUs (kubeflow/trainer v2.3.0,
    pkg/runtime/framework/plugins/torch/torch.go:121-135, EnforceMLPolicy), which would split
    a CPU trial into as many ranks as cores.
    """
    return max(gpus_per_node, 1)


def pod_patch(
    gpus_per_node: int, profile: ClusterProfile, service_account: str = ""
) -> dict[str, Any]:
    """The ``spec.runtimePatches`` entry that puts the node pods where the trial's GPUs are.

    With GPUs, the cluster profile's node selector and tolerations (the ones the pipeline's GPU
    tasks get, :func:`pipelines.cluster.on_gpu_nodes`); and the ServiceAccount the pods run as
    ('' = the namespace's default). Fields of the PodSpecPatch that Trainer v2.2 and v2.3 accept
    (kubeflow/trainer v2.3.0, pkg/apis/trainer/v1alpha1/trainjob_types.go:390-447); the
    controller merges the patch into the runtime's JobSet template with a strategic merge patch
    (pkg/runtime/core/trainingruntime.go:251, mergeRuntimePatches).
    """
    pod: dict[str, Any] = {}
    if gpus_per_node and profile.node_selector:
        pod["nodeSelector"] = dict(profile.node_selector)
    if gpus_per_node and profile.tolerations:
        pod["tolerations"] = [_toleration(t) for t in profile.tolerations]
    if service_account:
        pod["serviceAccountName"] = service_account
    job = {"name": NODE_JOB, "template": {"spec": {"template": {"spec": pod}}}}
    spec = {"replicatedJobs": [job]}
    return {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": spec}}}


def _toleration(toleration: dict[str, Any]) -> dict[str, Any]:
    # The profile spells tolerations as kfp.kubernetes.add_toleration's arguments (snake_case);
    # a pod spec's Toleration has tolerationSeconds.
    names = {"toleration_seconds": "tolerationSeconds"}
    return {names.get(key, key): value for key, value in toleration.items()}


def trial_env(
    launcher_config_map: str = LAUNCHER_CONFIG_MAP, s3_secret: str = S3_SECRET
) -> list[dict[str, Any]]:
    """The same environment the pipeline's tasks get: launcher ConfigMap + S3 Secret keys."""
    env = [
        {"name": key, "valueFrom": {"configMapKeyRef": {"name": launcher_config_map, "key": key}}}
        for key in LAUNCHER_KEYS
    ]
    env += [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": s3_secret, "key": key}}}
        for key in SECRET_KEYS
    ]
    return env


def trainjob_manifest(
    trial_id: str,
    study_id: str,
    namespace: str,
    image: str,
    num_nodes: int,
    gpus_per_node: int,
    cpu_per_node: str = "8",
    memory_per_node: str = "32Gi",
    runtime: str = DEFAULT_RUNTIME,
    launcher_config_map: str = LAUNCHER_CONFIG_MAP,
    s3_secret: str = S3_SECRET,
    kfp_run_id: str = "",
    profile: ClusterProfile = PROFILE,
    service_account: str = "",
) -> dict[str, Any]:
    """The TrainJob for one planned trial.

    Args:
        trial_id, study_id: the planned trial (``list_trials`` item).
        namespace: where the run's Secret and ConfigMap live.
        image: every node's image (images.json's GPU image).
        num_nodes: nodes (pods) of the job; gpus_per_node: the profile's accelerator per node
            (0: CPU); torchrun starts :func:`processes_per_node` processes on each.
        cpu_per_node, memory_per_node: requests of each node.
        runtime: the ClusterTrainingRuntime (the chart's ``trainer.runtimeName``).
        launcher_config_map, s3_secret: the run's ConfigMap and Secret names.
        kfp_run_id: tagged on the trial's MLflow run.
        profile: the cluster profile: accelerator resource, node selector and tolerations.
        service_account: the ServiceAccount of the node pods ('' = the namespace's default);
            the run's account, so that the nodes reach the store as its tasks do (IRSA).
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, not {num_nodes}")
    args = ["--trial-id", trial_id, "--study-id", study_id]
    if kfp_run_id:
        args += ["--kfp-run-id", kfp_run_id]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": trainjob_name(trial_id),
            "namespace": namespace,
            "labels": {
                TRIAL_LABEL: _label_value(trial_id),
                STUDY_LABEL: _label_value(study_id),
                "app.kubernetes.io/part-of": "aprflow",
            },
        },
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": "ClusterTrainingRuntime", "name": runtime},
            "trainer": {
                "image": image,
                "command": ["torchrun", "--module", NODE_MODULE],
                "args": args,
                "numNodes": num_nodes,
                "numProcPerNode": processes_per_node(gpus_per_node),
                "resourcesPerNode": resources_per_node(
                    gpus_per_node, cpu_per_node, memory_per_node, profile.accelerator
                ),
                "env": trial_env(launcher_config_map, s3_secret),
            },
            "runtimePatches": [pod_patch(gpus_per_node, profile, service_account)],
        },
    }


def condition(trainjob: dict[str, Any]) -> tuple[str, str] | None:
    """``("Complete" | "Failed", message)`` once the TrainJob has finished, else None."""
    for entry in (trainjob.get("status") or {}).get("conditions") or []:
        if entry.get("type") in ("Complete", "Failed") and entry.get("status") == "True":
            message = entry.get("message") or entry.get("reason") or ""
            return entry["type"], message
    return None
