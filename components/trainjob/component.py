"""KFP component: train one trial on several nodes through a Kubeflow Trainer v2 TrainJob.

For trials larger than one node. ``apr-study`` does not call it for ``gpus_per_trial > 1``: its
training task already holds that many GPUs of one node (``gpus_per_trial`` is at most the
profile's ``gpus_per_node``) and runs torchrun inside its own pod, so a TrainJob started from
there would allocate a second set of GPUs while the task's own stay idle (see README.md).
"""

from kfp import dsl
from kfp.dsl import Metrics, Output

from components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def train_trial_multinode(
    trial: dict,
    num_nodes: int,
    gpus_per_node: int,
    runtime: str,
    launcher_config_map: str,
    s3_secret: str,
    store_uri: str,
    kfp_run_id: str,
    cluster_profile: dict,
    metrics: Output[Metrics],
    service_account: str = "",
    timeout_hours: float = 168.0,
) -> str:
    """Creates the trial's TrainJob, waits for it, and returns the trial id (like train_trial).

    The TrainJob's nodes run the GPU image (images.json) and log the trial's MLflow run from
    rank 0; this task only orchestrates, so it runs in the small CPU image with 1 CPU. Its pod
    needs the Kubernetes API: the run's ServiceAccount must be bound to the chart's trainjobs
    Role (trainer.enabled, rbac.extraSubjects).

    Args:
        trial: a ``list_trials`` item.
        num_nodes, gpus_per_node: size of the TrainJob.
        runtime: the ClusterTrainingRuntime (chart: trainer.runtimeName).
        launcher_config_map, s3_secret: the run's ConfigMap and Secret (pipeline parameters).
        store_uri: '' means the environment's.
        kfp_run_id: tagged on the trial's MLflow run.
        cluster_profile: the compiling pipeline's ``dataclasses.asdict(PROFILE)``: the nodes'
            accelerator resource, node selector and tolerations (fixed at compile time, like
            the GPU tasks' own).
        service_account: the node pods' ServiceAccount, the run's ('' = the namespace's
            default).
        timeout_hours: give up waiting after this long.
    """
    from components.common.images import GPU_IMAGE
    from components.common.storage import open_store
    from components.trainjob.launch import launch_trial
    from pipelines.cluster import ClusterProfile

    result = launch_trial(
        trial["trial_id"],
        trial["study_id"],
        GPU_IMAGE,
        int(num_nodes),
        int(gpus_per_node),
        store=open_store(store_uri or None),
        timeout_s=float(timeout_hours) * 3600,
        runtime=runtime,
        launcher_config_map=launcher_config_map,
        s3_secret=s3_secret,
        kfp_run_id=kfp_run_id,
        profile=ClusterProfile(**cluster_profile),
        service_account=service_account,
    )
    metrics.log_metric("trial_ok", 1.0 if result["status"] == "ok" else 0.0)
    for key in ("top1_error", "flops", "params", "wall_time_s"):
        if result.get(key) is not None:
            metrics.log_metric(key, float(result[key]))
    return trial["trial_id"]
