"""Trained models in MLflow: logged with ``mlflow.pytorch`` on their trial's run and registered.

A model is logged in PyTorch's ``pt2`` format (``torch.export``): MLflow loads it without
unpickling code (its archive is checked pickle-free and read with ``weights_only``;
mlflow/mlflow v3.17.2: mlflow/pytorch/__init__.py, ``_load_model``, lines 971-980), with a
signature and an input example, a dynamic batch size, and the pin of this environment's torch
(no requirement inference, which loads the model in a subprocess).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.common.tracking.client import open_client, ui_base, with_retries

# The tag on a trial's run that holds its logged model's URI (``models:/<id>``).
MODEL_TAG = "aprflow.logged_model"
# Version tags of a registered model (the rank among the study's models on its dataset).
RANK_TAG = "aprflow.rank"


@dataclass(frozen=True)
class LoggedModel:
    """A trial's model in MLflow.

    Attributes:
        model_uri: ``models:/<model id>``, what ``mlflow.pytorch.load_model`` takes.
        name: the registered model's name.
        version: its version.
        url: the registered version's page in the MLflow UI.
    """

    model_uri: str
    name: str
    version: str
    url: str


def registered_name(study: str, dataset: str) -> str:
    """The registered model of a study's best models on ``dataset``: ``<study>-<dataset>``."""
    return f"{study}-{dataset}"


def model_url(uri: str, name: str, version: str) -> str:
    """The page of a registered model version in the MLflow UI (see :func:`ui_base`)."""
    return f"{ui_base(uri)}/#/models/{name}/versions/{version}"


def log_trial_model(
    uri: str,
    run_id: str,
    model,
    example,
    name: str,
    tags: Mapping[str, Any],
) -> LoggedModel:
    """Logs ``model`` (a ``torch.nn.Module`` in eval mode) on the trial run ``run_id`` and
    registers it as a new version of ``name``, with ``tags`` on the version; a model already
    logged on that run (its :data:`MODEL_TAG`) is returned as it is, so a re-run of the
    analysis adds no version.

    Args:
        uri: tracking URI (the registry's too).
        run_id: the trial's run.
        model: the network; its input is ``example``'s shape with any batch size.
        example: a float32 tensor batch of at least 2 inputs (the signature's and the input
            example's).
        name: the registered model.
        tags: version tags (rank, top-1 error, trial id).
    """
    return with_retries(
        lambda: _log_trial_model(uri, run_id, model, example, name, tags),
        f"logging the model of run {run_id}",
    )


def _log_trial_model(uri, run_id, model, example, name, tags) -> LoggedModel:
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    client = open_client(uri)
    run = client.get_run(run_id)
    model_uri = run.data.tags.get(MODEL_TAG)
    if model_uri is None:
        mlflow.set_tracking_uri(uri)  # mlflow.pytorch logs to the process' tracking URI
        # ... and, with no active run, creates the logged model in the process' current
        # experiment, not the run's (mlflow/mlflow v3.17.2: mlflow/tracking/fluent.py,
        # _create_logged_model, lines 2681-2686): the run's page would list no model.
        mlflow.set_experiment(experiment_id=run.info.experiment_id)
        with torch.no_grad():
            output = model(example)
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            run_id=run_id,
            signature=infer_signature(example.numpy(), output.numpy()),
            input_example=example.numpy(),
            serialization_format="pt2",
            # Without the local label (+cu130): pip cannot resolve it from PyPI.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            # Loading it back to serve the example costs seconds per model; the example is
            # the signature's, which the model's own forward just produced.
            validate_serving_input=False,
        )
        model_uri = info.model_uri
        client.set_tag(run_id, MODEL_TAG, model_uri)
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if versions:
        version = versions[0]
    else:
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name)
        # A server needs the logged model's id beside its models:/ URI.
        model_id = model_uri.removeprefix("models:/")
        version = client.create_model_version(name, model_uri, run_id=run_id, model_id=model_id)
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, str(value))
    return LoggedModel(model_uri, name, str(version.version), model_url(uri, name, version.version))
