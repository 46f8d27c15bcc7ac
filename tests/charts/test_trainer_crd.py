"""The chart's ClusterTrainingRuntime, validated strictly against the Trainer CRDs.

Every supported Kubeflow Trainer release's ClusterTrainingRuntime CRD (tests/trainjob/crds)
must accept the rendered runtime with unknown fields rejected, as an API server with
``fieldValidation=Strict`` would; and the runtime must have the replicated job and container
that the TrainJob launcher's manifests refer to.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from components.trainjob import manifest
from tests.trainjob.crd_schema import TRAINER_VERSIONS, strict_errors

FULL_VALUES = Path(__file__).resolve().parent / "values-full.yaml"
VARIANTS = {
    # helm template cannot generate the Postgres password (no cluster to keep it in).
    "trainer": ("--set", "s3.bucket=studies,postgres.auth.password=pw123,trainer.enabled=true"),
    # Every value set, image pull secrets included (they go into the runtime's pod template).
    "full": ("-f", str(FULL_VALUES), "--set", "trainer.enabled=true,trainer.numNodes=4"),
}


def runtime_of(render, variant: str) -> dict:
    result = render(*VARIANTS[variant])
    assert result.returncode == 0, result.stderr
    return result.one("ClusterTrainingRuntime")


@pytest.mark.parametrize("version", TRAINER_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_runtime_validates_strictly_against_the_crd(render, variant, version):
    runtime = runtime_of(render, variant)
    assert strict_errors(runtime, version) == []
    if variant == "full":
        pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]
        assert pod["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


@pytest.mark.parametrize("version", TRAINER_VERSIONS)
def test_the_torch_policy_has_no_num_proc_per_node(render, version):
    """The runtime up to Trainer 2.1 set mlPolicy.torch.numProcPerNode; 2.2 removed the field
    (kubeflow/trainer v2.2.0, pkg/apis/trainer/v1alpha1/trainingruntime_types.go:209,
    TorchMLPolicySource is empty), so the strict check refuses it: the TrainJob sets it."""
    runtime = runtime_of(render, "trainer")
    assert runtime["spec"]["mlPolicy"] == {"numNodes": 2, "torch": {}}
    old = copy.deepcopy(runtime)
    old["spec"]["mlPolicy"]["torch"]["numProcPerNode"] = "auto"
    assert strict_errors(old, version) == [".spec.mlPolicy.torch.numProcPerNode: unknown field"]


def test_runtime_has_what_the_trainjob_refers_to(render):
    """The launcher's runtime patch targets the replicated job ``node``; the Trainer overrides
    image, command and resources of the container ``node`` in the job whose ancestor label is
    ``trainer`` (kubeflow/trainer v2.3.0, pkg/constants/constants.go:66 AncestorTrainer and
    :69 Node)."""
    runtime = runtime_of(render, "trainer")
    assert runtime["metadata"]["name"] == manifest.DEFAULT_RUNTIME
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == manifest.NODE_JOB
    labels = job["template"]["metadata"]["labels"]
    assert labels["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    (container,) = job["template"]["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "node"
