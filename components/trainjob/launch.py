"""Create a trial's TrainJob, wait for its Complete/Failed condition, read the trial's result.

Kubernetes access goes through the official client (``CustomObjectsApi``): in a pod the
in-cluster ServiceAccount (the KFP run's account, which the chart's Role allows to create,
watch and delete ``trainjobs`` with ``trainer.enabled``), elsewhere the kubeconfig.
Idempotent like a trial: the TrainJob is named after the trial, a finished trial's result is
returned without a TrainJob, a TrainJob that exists is waited for, and a Failed one is replaced
once (a retried KFP task retries the trial): deleted in the foreground and created again only
once the API server no longer has it, since a TrainJob that is being deleted still holds its
name (a create would answer 409 Conflict) until the garbage collector has removed its JobSet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.common.errors import AprflowError
from components.common.progress import report
from components.common.storage import ArtifactStore, open_store
from components.train.definition import Trial, result_key
from components.train.plan import load_trial
from components.trainjob.manifest import (
    GROUP,
    PLURAL,
    VERSION,
    condition,
    processes_per_node,
    trainjob_manifest,
)

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# How long a replaced TrainJob may take to go away (its JobSet, Jobs and pods first: their
# termination grace period, 30 s by default, plus the garbage collector's work).
DELETE_TIMEOUT_S = 600.0


class TrainJobError(AprflowError):
    """The TrainJob could not be created, failed, or did not finish in time."""


def current_namespace(path: Path = IN_CLUSTER_NAMESPACE) -> str:
    """The pod's namespace (where the KFP run and its Secret/ConfigMap are)."""
    try:
        return path.read_text().strip()
    except OSError:
        raise TrainJobError(
            f"cannot tell the namespace ({path} is unreadable outside a pod): pass namespace"
        ) from None


def custom_objects_api():
    """``CustomObjectsApi`` from the in-cluster config, else the kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as e:
            raise TrainJobError(f"no Kubernetes API access (in-cluster or kubeconfig): {e}") from e
    return client.CustomObjectsApi()


def _explain(action: str, error: Exception) -> TrainJobError:
    status = getattr(error, "status", None)
    hint = ""
    if status == 403:
        hint = (
            "; the run's ServiceAccount needs the chart's trainjobs Role "
            "(helm ... --set trainer.enabled=true --set rbac.extraSubjects={pipeline-runner})"
        )
    elif status == 404:
        hint = (
            "; is Kubeflow Trainer v2 installed (kubectl get crd trainjobs.trainer.kubeflow.org)?"
        )
    reason = getattr(error, "reason", None) or str(error)
    return TrainJobError(f"cannot {action}: HTTP {status} {reason}{hint}")


def check_world(trial: Trial, num_nodes: int, gpus_per_node: int) -> None:
    """Refuses a TrainJob whose processes could not train ``trial`` together.

    Raises:
        TrainJobError: engine ``torch`` in more than one process (it has no gradient
            all-reduce: every rank would train its share of each batch alone and rank 0 would
            record the result as ok), or a trial planned for several GPUs in another world
            size (``run_trial`` would refuse it on every node, components/train/trial.py).
    """
    world = num_nodes * processes_per_node(gpus_per_node)
    if trial.engine == "torch" and world > 1:
        raise TrainJobError(
            f"engine 'torch' trains in one process, but {num_nodes} nodes x "
            f"{processes_per_node(gpus_per_node)} processes make {world}: plan the study with "
            "engine deepspeed for a multi-node trial"
        )
    if trial.gpus > 1 and trial.gpus != world:
        raise TrainJobError(
            f"the trial is planned for {trial.gpus} processes, but {num_nodes} nodes x "
            f"{processes_per_node(gpus_per_node)} make {world}"
        )


def wait_deleted(
    api,
    namespace: str,
    name: str,
    timeout_s: float = DELETE_TIMEOUT_S,
    poll_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Polls until a GET of the TrainJob answers 404 (deleted, dependents included).

    Raises:
        TrainJobError: on another API error or after ``timeout_s``.
    """
    from kubernetes.client.exceptions import ApiException

    deadline = clock() + timeout_s
    while True:
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return
            raise _explain(f"read TrainJob {namespace}/{name}", e) from None
        if clock() >= deadline:
            raise TrainJobError(
                f"failed TrainJob {namespace}/{name} was not deleted within {timeout_s:.0f} s; "
                f"see kubectl -n {namespace} get trainjob {name} -o yaml (finalizers)"
            )
        sleep(poll_s)


def _create(api, manifest: dict[str, Any], poll_s: float) -> dict[str, Any]:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        return api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as e:
        if e.status != 409:
            raise _explain(f"create TrainJob {namespace}/{name}", e) from None
    try:
        existing = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as e:
        raise _explain(f"read TrainJob {namespace}/{name}", e) from None
    finished = condition(existing)
    if finished is None or finished[0] == "Complete":
        return existing  # running (a retried task) or done: wait for / use it
    # Failed before: replace it once, so a retried KFP task retries the trial. Foreground
    # deletion keeps the TrainJob until its JobSet and pods are gone, so that the new one's
    # JobSet never meets the old one's (same names); the create waits for that.
    try:
        api.delete_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body=client.V1DeleteOptions(propagation_policy="Foreground"),
        )
    except ApiException as e:
        if e.status != 404:
            raise _explain(f"delete failed TrainJob {namespace}/{name}", e) from None
    wait_deleted(api, namespace, name, poll_s=poll_s)
    try:
        return api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as e:
        raise _explain(f"replace failed TrainJob {namespace}/{name}", e) from None


def wait_for(
    api,
    namespace: str,
    name: str,
    timeout_s: float,
    poll_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, str]:
    """Polls the TrainJob until its Complete or Failed condition is True.

    Returns:
        ``(condition type, message)``.

    Raises:
        TrainJobError: on an API error or after ``timeout_s``.
    """
    from kubernetes.client.exceptions import ApiException

    deadline = clock() + timeout_s
    started = time.time()
    while True:
        try:
            trainjob = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as e:
            raise _explain(f"read TrainJob {namespace}/{name}", e) from None
        finished = condition(trainjob)
        if finished is not None:
            return finished
        if clock() >= deadline:
            raise TrainJobError(
                f"TrainJob {namespace}/{name} did not finish within {timeout_s:.0f} s; see "
                f"kubectl -n {namespace} describe trainjob {name}"
            )
        report("trainjob", f"{name}: running", started)
        sleep(poll_s)


def launch_trial(
    trial_id: str,
    study_id: str,
    image: str,
    num_nodes: int,
    gpus_per_node: int,
    namespace: str | None = None,
    store: ArtifactStore | None = None,
    api=None,
    timeout_s: float = 7 * 24 * 3600,
    poll_s: float = 10.0,
    **manifest_options: Any,
) -> dict[str, Any]:
    """Trains one planned trial as a TrainJob and returns its ``result.json``.

    A trial whose result exists is returned at once (no TrainJob). ``manifest_options`` go to
    :func:`components.trainjob.manifest.trainjob_manifest` (runtime, cpu/memory per node, the
    run's ConfigMap/Secret names, kfp_run_id, cluster profile, service account).

    Raises:
        TrainJobError: the trial cannot train in this world size (:func:`check_world`; before
            anything is created), or the TrainJob could not be created, failed, timed out, or
            completed without writing the trial's result.
    """
    store = store or open_store()
    key = result_key(trial_id)
    if store.exists(key):
        return store.get_json(key)
    check_world(load_trial(store, trial_id), num_nodes, gpus_per_node)
    namespace = namespace or current_namespace()
    api = api or custom_objects_api()
    manifest = trainjob_manifest(
        trial_id, study_id, namespace, image, num_nodes, gpus_per_node, **manifest_options
    )
    name = manifest["metadata"]["name"]
    _create(api, manifest, poll_s)
    report("trainjob", f"{name}: {num_nodes} nodes x {gpus_per_node} GPUs for trial {trial_id}")
    kind, message = wait_for(api, namespace, name, timeout_s, poll_s)
    if kind == "Failed":
        raise TrainJobError(
            f"TrainJob {namespace}/{name} failed: {message or 'no message'}; see "
            f"kubectl -n {namespace} logs -l jobset.sigs.k8s.io/jobset-name={name}"
        )
    if not store.exists(key):
        raise TrainJobError(
            f"TrainJob {namespace}/{name} completed but wrote no {store.key_uri(key)}: its nodes "
            "must use the same artifact store (the launcher ConfigMap's APRFLOW_STORE_URI)"
        )
    return store.get_json(key)
