"""The chart for cluster set-ups (existing Secret, IRSA, Trainer, MLflow plugin), rendered
and validated offline.

Variants: the defaults, an existing S3 Secret, keyless S3 (IRSA) with runs on the chart's
ServiceAccount, the Kubeflow Trainer runtime (GPU nodes), and the KFP MLflow plugin on. Every
manifest is validated against the Kubernetes 1.33 schemas (strict); the ClusterTrainingRuntime,
a CRD that kubernetes-validate cannot know, by its structure and the kubernetes client's object
model here, and strictly against the Trainer CRDs in test_trainer_crd.py.
"""

from __future__ import annotations

import kubernetes_validate
import pytest
from kubernetes import client as k8s

from components.common.images import GPU_IMAGE
from pipelines.cluster import LAUNCHER_CONFIG_MAP, S3_SECRET

K8S_VERSION = "1.33.0"
BASE = ("--set", "s3.bucket=studies")
IRSA_ROLE = "arn:aws:iam::123456789012:role/aprflow"
VARIANTS = {
    "default": BASE,
    "existing-secret": (*BASE, "--set", "s3.existingSecret=my-s3"),
    "irsa": (
        *BASE,
        "--set-string",
        f"serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={IRSA_ROLE}",
        "--set",
        "rbac.runnerClusterRole=kubeflow-edit",
    ),
    "gpu-runtime": (
        *BASE,
        "--set",
        "trainer.enabled=true,trainer.numNodes=4,rbac.extraSubjects={default-editor}",
    ),
    "mlflow-plugin": (*BASE, "--set", "mlflow.kfpPlugin.enabled=true"),
}
CUSTOM_KINDS = {"ClusterTrainingRuntime"}


def ok(result):
    assert result.returncode == 0, result.stderr
    return result


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_validates_against_kubernetes_schemas(render, variant):
    docs = ok(render(*VARIANTS[variant])).docs
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - message
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {exc.path}")


def test_default_install_matches_the_pipeline_parameter_defaults(render):
    result = ok(render(*VARIANTS["default"]))
    result.one("Secret", S3_SECRET)
    result.one("ConfigMap", LAUNCHER_CONFIG_MAP)
    assert "ClusterTrainingRuntime" not in {d["kind"] for d in result.docs}


def test_existing_secret_is_used_everywhere_and_the_run_command_names_it(render, notes):
    result = ok(render(*VARIANTS["existing-secret"]))
    names = {d["metadata"]["name"] for d in result.find("Secret")}
    assert S3_SECRET not in names and "my-s3" not in names  # the chart creates no S3 Secret
    container = pod_spec(result.one("Deployment"))["containers"][0]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env_of(container)[key]["valueFrom"]["secretKeyRef"]["name"] == "my-s3"
    text = notes(*VARIANTS["existing-secret"])
    assert "apr_study.yaml s3_secret=my-s3 key=value" in text
    assert "--set s3_secret=my-s3" in text
    assert "launcher_config_map=" not in text.split("Start a run with", 1)[1]


def test_irsa_gives_mlflow_and_runs_the_annotated_account(render):
    result = ok(render(*VARIANTS["irsa"]))
    account = result.one("ServiceAccount", "aprflow-pipeline")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == IRSA_ROLE
    # Runs on this account need a token (Argo's executor, KFP's launcher); the chart's own
    # pods turn it off.
    assert account["automountServiceAccountToken"] is True
    mlflow = pod_spec(result.one("Deployment"))
    assert mlflow["serviceAccountName"] == "aprflow-pipeline"
    assert mlflow["automountServiceAccountToken"] is False
    (runner,) = [b for b in result.find("RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"]
    assert runner["roleRef"]["name"] == "kubeflow-edit"
    assert runner["subjects"] == [
        {"kind": "ServiceAccount", "name": "aprflow-pipeline", "namespace": "kubeflow"}
    ]
    assert runner["metadata"]["namespace"] == "kubeflow"  # namespaced grant only
    assert not {d["kind"] for d in result.docs} & {"ClusterRole", "ClusterRoleBinding"}


def _runtime(render) -> dict:
    return ok(render(*VARIANTS["gpu-runtime"])).one("ClusterTrainingRuntime")


def test_trainer_runtime_runs_the_gpu_image_on_every_node(render):
    runtime = _runtime(render)
    assert runtime["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert "namespace" not in runtime["metadata"]  # cluster-scoped
    assert runtime["metadata"]["name"] == "aprflow-torch-distributed"
    # Processes per node come from each TrainJob (Trainer 2.2 has no torch.numProcPerNode).
    assert runtime["spec"]["mlPolicy"] == {"numNodes": 4, "torch": {}}
    jobs = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert [j["name"] for j in jobs] == ["node"]  # no separate launcher with another image
    (job,) = jobs
    # The step whose image, command and resources a TrainJob's `trainer` overrides.
    assert job["template"]["metadata"]["labels"] == {
        "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"
    }
    pod = job["template"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "node"
    # The chart's default; the TrainJob launcher sets images.json's GPU image on each TrainJob.
    assert container["image"] == "ghcr.io/aprflow/aprflow-gpu:0.1.0"
    assert GPU_IMAGE.rsplit(":", 1)[0].rsplit("@", 1)[0].endswith("/aprflow-gpu")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    # The pod template is a valid core/v1 PodSpec (the kubernetes client's object model, then
    # the Kubernetes schema of a Pod around it).
    api = k8s.ApiClient()
    model = api._ApiClient__deserialize(pod, "V1PodSpec")
    assert model.containers[0].image == container["image"]
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod},
        K8S_VERSION,
        strict=True,
    )


def test_trainer_role_binds_the_runner(render):
    result = ok(render(*VARIANTS["gpu-runtime"]))
    role = result.one("Role")
    (rule,) = role["rules"]
    assert rule["resources"] == ["trainjobs"] and "create" in rule["verbs"]
    subjects = [s["name"] for s in result.one("RoleBinding")["subjects"]]
    assert subjects == ["aprflow-pipeline", "default-editor"]


def test_second_release_can_skip_the_cluster_scoped_runtime(render):
    result = ok(render(*VARIANTS["gpu-runtime"], "--set", "trainer.createRuntime=false"))
    assert result.find("ClusterTrainingRuntime") == []
    result.one("Role")


def test_mlflow_sizing_for_a_hundred_writers(render):
    result = ok(render(*VARIANTS["default"]))
    deploy = result.one("Deployment")
    assert deploy["spec"]["replicas"] == 2
    container = pod_spec(deploy)["containers"][0]
    args = container["args"]
    workers = int(args[args.index("--workers") + 1])
    env = env_of(container)
    pool = int(env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]["value"])
    overflow = int(env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"]["value"])
    assert (workers, pool, overflow) == (4, 5, 10)
    postgres = pod_spec(result.one("StatefulSet"))["containers"][0]
    assert postgres["args"] == ["-c", "max_connections=200", "-c", "shared_buffers=512MB"]
    max_connections = int(postgres["args"][1].split("=")[1])
    # A rolling update adds one pod: (2 + 1) x 4 x 15 = 180 <= 200 - 10 reserved.
    assert (2 + 1) * workers * (pool + overflow) <= max_connections - 10


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--set", "mlflow.workers=8"), "360 Postgres connections exceeds postgres.maxConnections"),
        (("--set", "postgres.maxConnections=100"), "180 Postgres connections"),
        (("--set", "mlflow.dbPool.size=0"), "size"),
        (("--set", "postgres.sharedBuffers=lots"), "sharedBuffers"),
        (("--set", "trainer.numProcPerNode=many"), "numProcPerNode"),
        (("--set", "trainer.enabled=maybe"), "enabled"),
        (("--set", "rbac.runnerClusterRole=Not Valid"), "runnerClusterRole"),
    ],
)
def test_bad_cluster_values_fail_at_install_time(render, args, needle):
    result = render(*BASE, *args)
    assert result.returncode != 0, f"accepted {args}"
    assert needle in result.stderr, result.stderr


def test_external_database_is_not_limited_by_the_bundled_postgres(render):
    ok(
        render(
            *BASE,
            "--set",
            "postgres.enabled=false,externalDatabase.existingSecret=db,mlflow.workers=16",
        )
    )


def test_mlflow_plugin_notes_point_the_plugin_at_this_server(notes):
    on = notes(*VARIANTS["mlflow-plugin"])
    assert '"endpoint": "http://aprflow-mlflow.kubeflow.svc.cluster.local:5000"' in on
    assert "plugins.mlflow" not in notes(*VARIANTS["default"])
