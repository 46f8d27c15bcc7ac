"""The fan-outs the study pipelines share: a plan's chunks, one GPU task per chunk in a loop
bounded by the cluster profile.

    list_chunks ─ ParallelFor(chunk, parallelism=profile) ─ train_chunk
    list_transfer_chunks ─ ParallelFor(chunk of models) ─ transfer_chunk

Called inside a ``@dsl.pipeline`` function after the task that wrote the study's
``chunks.json``; the caller gathers the chunks' trial counts with
``dsl.Collected(train.outputs["Output"])`` for its analysis task.
"""

from __future__ import annotations

from collections.abc import Callable

from kfp import dsl

from components.train.component import list_chunks, train_chunk
from components.transfer.component import list_transfer_chunks, transfer_chunk
from pipelines.cluster import PROFILE, on_gpu_nodes


def train_chunks(
    on_cluster: Callable[..., dsl.PipelineTask],
    study_id,
    store_uri,
    tracking_uri,
    trials_per_gpu,
    max_attempts,
    gpus_per_trial,
    task_cpu,
) -> dsl.PipelineTask:
    """Adds the fan-out to the pipeline being defined and returns the loop's training task.

    Args:
        on_cluster: the pipeline's ``cluster.on_cluster`` with its ConfigMap and Secret bound.
        study_id: the study whose ``chunks.json`` the plan wrote (a task output).
        store_uri, tracking_uri, trials_per_gpu, max_attempts, gpus_per_trial, task_cpu: the
            pipeline's parameters of the same names (``train_chunk``'s arguments).
    """
    chunks = on_cluster(list_chunks(study_id=study_id, store_uri=store_uri), "500m", "512Mi")
    with dsl.ParallelFor(chunks.output, parallelism=PROFILE.max_parallel_tasks) as chunk:
        train = on_cluster(
            train_chunk(
                chunk=chunk,
                store_uri=store_uri,
                tracking_uri=tracking_uri,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                trials_per_gpu=trials_per_gpu,
                max_attempts=max_attempts,
                gpus_per_trial=gpus_per_trial,
                task_cpu=task_cpu,
            ),
            task_cpu,
            PROFILE.train_pod_memory,
        )
        on_gpu_nodes(train, gpus_per_trial, PROFILE)
    return train


def transfer_chunks(
    on_cluster: Callable[..., dsl.PipelineTask], study_id, parent_run_id, store_uri, tracking_uri
) -> dsl.PipelineTask:
    """The transfer fan-out (features and scores of a transfer study's models, one GPU task per
    chunk of models) added to the pipeline being defined; returns the loop's task, whose
    outputs the caller gathers with ``dsl.Collected(task.output)``.

    Args:
        on_cluster: the pipeline's ``cluster.on_cluster`` with its ConfigMap and Secret bound.
        study_id, parent_run_id: the transfer study planned before (task outputs).
        store_uri, tracking_uri: the pipeline's parameters.
    """
    chunks = on_cluster(
        list_transfer_chunks(study_id=study_id, parent_run_id=parent_run_id, store_uri=store_uri),
        "500m",
        "512Mi",
    )
    with dsl.ParallelFor(chunks.output, parallelism=PROFILE.max_parallel_tasks) as chunk:
        evaluate = on_cluster(
            transfer_chunk(
                chunk=chunk,
                store_uri=store_uri,
                tracking_uri=tracking_uri,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            str(PROFILE.train_cpu),
            PROFILE.train_pod_memory,
        )
        on_gpu_nodes(evaluate, "1", PROFILE)
    return evaluate
