"""Offline tests of charts/aprflow: helm lint/template, Kubernetes schemas, values schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pipelines import cluster

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "aprflow"
FULL_VALUES = Path(__file__).resolve().parent / "values-full.yaml"

# A concrete Kubernetes version whose schemas kubernetes-validate ships (strict mode:
# unknown fields are errors).
K8S_VERSION = "1.33.0"

DEFAULT = ("--set", "s3.bucket=studies")
FULL = ("-f", str(FULL_VALUES))
STANDARD_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/component",
)
# What the pipeline injects into every task (pipelines/cluster.py) is what the chart provides.
LAUNCHER_KEYS = set(cluster.LAUNCHER_KEYS)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
UPLOAD_JOB = "aprflow-pipeline-upload-r1"  # one Job per Helm revision
MIGRATION_JOB = "aprflow-mlflow-db-upgrade"

VARIANTS = {
    "defaults": (),
    "bucket": DEFAULT,
    "full": FULL,
    "credentials": (
        "--set",
        "s3.accessKeyId=AKIA,s3.secretAccessKey=secret,s3.endpointUrl=http://minio:9000",
        "--set",
        "postgres.auth.password=pw123,pipelineUpload.kfpToken=true",
    ),
    "no-mlflow": (
        "--set",
        "mlflow.enabled=false,launcher.mlflowTrackingUri=https://mlflow.example.com",
    ),
    "minimal": (
        "--set",
        "serviceAccount.create=false,rbac.create=false,pipelineUpload.enabled=false",
    ),
}


def ok(result):
    assert result.returncode == 0, result.stderr
    return result


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# --- helm lint -------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [(), FULL], ids=["defaults", "full"])
def test_helm_lint_strict(helm, args):
    result = helm("lint", "--strict", str(CHART_DIR), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


# --- rendering and Kubernetes schemas --------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_manifests_validate_against_kubernetes_schemas(render, variant):
    docs = ok(render(*VARIANTS[variant])).docs
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - message
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {exc.path}")


def test_default_render_has_every_component(render):
    result = ok(render())
    kinds = sorted(d["kind"] for d in result.docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "Secret",  # S3
            "Secret",  # Postgres
            "ConfigMap",  # launcher
            "ConfigMap",  # S3 settings
            "Service",  # MLflow
            "Service",  # Postgres
            "Deployment",
            "StatefulSet",
            "Job",  # pipeline upload
            "Job",  # MLflow schema migration (pre-upgrade hook)
            "PodDisruptionBudget",  # MLflow
        ]
    )
    sts = result.one("StatefulSet")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "8Gi"
    }


def test_full_values_external_postgres_existing_secret_no_upload(render):
    result = ok(render(*FULL, namespace="ml"))
    kinds = {d["kind"] for d in result.docs}
    assert "StatefulSet" not in kinds
    # No upload Job; the schema migration Job reads the external database's Secret.
    (job,) = result.find("Job")
    migration_env = env_of(pod_spec(job)["containers"][0])
    assert migration_env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-db",
        "key": "connection-uri",
    }
    assert result.find("Secret") == []  # existing S3 secret, external database
    assert {d["metadata"]["name"] for d in result.find("ConfigMap")} == {
        "aprflow-launcher",
        "aprflow-s3-config",
    }
    deploy = result.one("Deployment", "apr-mlflow")
    assert deploy["spec"]["replicas"] == 2
    container = pod_spec(deploy)["containers"][0]
    env = env_of(container)
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-db",
        "key": "connection-uri",
    }
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "my-s3-credentials"
    assert env["MLFLOW_S3_ENDPOINT_URL"]["valueFrom"]["configMapKeyRef"]["key"] == (
        "S3_ENDPOINT_URL"
    )
    assert "POSTGRES_PASSWORD" not in env
    assert container["image"] == "registry.example.com/mlflow:3.17.2"
    assert "s3://my-bucket/studies/apr/tracking" in container["args"]
    assert container["args"][-2:] == ["--expose-prometheus", "/tmp/metrics"]
    role = result.one("Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    binding = result.one("RoleBinding")
    assert [s["name"] for s in binding["subjects"]] == [
        "aprflow-runner",
        "pipeline-runner",
        "default-editor",
    ]
    assert all(s["namespace"] == "ml" for s in binding["subjects"])
    launcher = result.one("ConfigMap", "aprflow-launcher")["data"]
    assert launcher["APRFLOW_STORE_URI"] == "s3://my-bucket/studies/apr"
    assert launcher["APRFLOW_S3_ENDPOINT_URL"] == "http://minio-service.kubeflow:9000"
    assert launcher["MLFLOW_TRACKING_URI"] == "http://apr-mlflow.ml.svc.cluster.local:8080"
    assert launcher["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert launcher["APRFLOW_MAX_WORKERS"] == "4"


# --- names, labels, launcher config ----------------------------------------------------------


@pytest.mark.parametrize("release", ["aprflow", "study-7"])
def test_secret_and_configmap_names_default_to_fixed_names(render, release):
    result = ok(render(*DEFAULT, release=release))
    secret = result.one("Secret", cluster.S3_SECRET)["stringData"]
    assert secret.keys() == set(cluster.SECRET_KEYS)
    result.one("ConfigMap", cluster.LAUNCHER_CONFIG_MAP)
    result.one("ServiceAccount", "aprflow-pipeline")


def test_names_are_configurable(render):
    result = ok(render("--set", "s3.secretName=other-s3,launcher.configMapName=other-launcher"))
    result.one("Secret", "other-s3")
    result.one("ConfigMap", "other-launcher")
    deploy = result.one("Deployment")
    env = env_of(pod_spec(deploy)["containers"][0])
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "other-s3"


@pytest.mark.parametrize("variant", ["defaults", "full"])
def test_standard_labels_on_every_resource_and_pod(render, variant):
    result = ok(render(*VARIANTS[variant]))
    for doc in result.docs:
        labels = doc["metadata"]["labels"]
        missing = [k for k in STANDARD_LABELS if k not in labels]
        assert not missing, f"{doc['kind']}/{doc['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/name"] == "aprflow"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if variant == "full":
            assert labels["team"] == "vision"
        if doc["kind"] in WORKLOAD_KINDS:
            pod_labels = doc["spec"]["template"]["metadata"]["labels"]
            assert "app.kubernetes.io/instance" in pod_labels
            selector = doc["spec"].get("selector", {}).get("matchLabels", {})
            assert selector.items() <= pod_labels.items()
            assert "app.kubernetes.io/version" not in selector


def test_launcher_configmap_holds_the_four_keys(render):
    result = ok(render(*DEFAULT, "--set", "s3.prefix=/runs/", release="r1", namespace="team-a"))
    data = result.one("ConfigMap", "aprflow-launcher")["data"]
    assert set(data) == LAUNCHER_KEYS
    assert data["APRFLOW_STORE_URI"] == "s3://studies/runs"
    assert data["APRFLOW_S3_ENDPOINT_URL"] == ""
    assert data["MLFLOW_TRACKING_URI"] == "http://r1-aprflow-mlflow.team-a.svc.cluster.local:5000"
    assert data["AWS_DEFAULT_REGION"] == "us-east-1"
    # The MLflow Service behind the tracking URI exists under that name and port.
    svc = result.one("Service", "r1-aprflow-mlflow")
    assert svc["spec"]["ports"][0]["port"] == 5000


def test_external_tracking_uri_without_bundled_mlflow(render):
    result = ok(render(*VARIANTS["no-mlflow"]))
    assert result.find("Deployment") == []
    data = result.one("ConfigMap", "aprflow-launcher")["data"]
    assert data["MLFLOW_TRACKING_URI"] == "https://mlflow.example.com"


# --- MLflow server, Postgres, upload job, RBAC -----------------------------------------------


def test_mlflow_server_command_probes_and_env(render):
    result = ok(render(*DEFAULT))
    deploy = result.one("Deployment", "aprflow-mlflow")
    container = pod_spec(deploy)["containers"][0]
    argv = container["command"] + container["args"]
    assert argv[:2] == ["mlflow", "server"]
    pairs = dict(zip(argv[2:], argv[3:], strict=False))
    assert pairs["--backend-store-uri"] == "$(MLFLOW_BACKEND_STORE_URI)"
    assert pairs["--artifacts-destination"] == "s3://studies/aprflow/mlflow"
    assert pairs["--host"] == "0.0.0.0"
    assert pairs["--port"] == "5000"
    assert "--serve-artifacts" in argv
    allowed = pairs["--allowed-hosts"].split(",")
    assert "aprflow-mlflow.kubeflow.svc.cluster.local:*" in allowed
    env = env_of(container)
    uri = env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert uri == (
        "postgresql://mlflow:$(POSTGRES_PASSWORD)@aprflow-postgres.kubeflow.svc.cluster.local"
        ":5432/mlflow"
    )
    # $(VAR) expansion only sees variables defined earlier in the list.
    names = [e["name"] for e in container["env"]]
    assert names.index("POSTGRES_PASSWORD") < names.index("MLFLOW_BACKEND_STORE_URI")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "aprflow-s3", "key": key}
    assert "MLFLOW_S3_ENDPOINT_URL" not in env  # AWS S3 by default
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
        assert container[probe]["httpGet"]["port"] == "http"
    assert container["resources"]["requests"]


def test_postgres_password_secret_and_statefulset(render):
    result = ok(render(*DEFAULT, "--set", "postgres.auth.password=s3cret"))
    secret = result.one("Secret", "aprflow-postgres")
    assert secret["stringData"]["password"] == "s3cret"
    sts = result.one("StatefulSet", "aprflow-postgres")
    container = pod_spec(sts)["containers"][0]
    env = env_of(container)
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "aprflow-postgres"
    assert container["readinessProbe"]["exec"]["command"][0] == "sh"


def test_postgres_password_is_required_where_lookup_sees_no_cluster(render):
    """helm template (Argo CD) cannot keep a generated password: the render fails, saying why."""
    result = render(*DEFAULT, postgres_password=None)
    assert result.returncode != 0
    assert "postgres.auth.password or postgres.auth.existingSecret is required" in result.stderr
    assert "helm template" in result.stderr and "Argo CD" in result.stderr


def test_every_render_of_a_gitops_install_is_identical(helm):
    """Two independent `helm template` runs (no cache) give the same manifests, password too."""
    args = ("template", "aprflow", str(CHART_DIR), "-n", "kubeflow", *DEFAULT)
    first = helm(*args, "--set", "postgres.auth.password=gitops-pw")
    second = helm(*args, "--set", "postgres.auth.password=gitops-pw")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    (secret,) = [
        d for d in yaml.safe_load_all(first.stdout) if d and d["kind"] == "Secret"
        and d["metadata"]["name"] == "aprflow-postgres"
    ]  # fmt: skip
    assert secret["stringData"]["password"] == "gitops-pw"


def test_existing_postgres_secret_needs_no_password(render):
    result = ok(render(*DEFAULT, "--set", "postgres.auth.existingSecret=pg-creds",
                       postgres_password=None))  # fmt: skip
    assert [d["metadata"]["name"] for d in result.find("Secret")] == ["aprflow-s3"]
    postgres = pod_spec(result.one("StatefulSet"))["containers"][0]
    mlflow = pod_spec(result.one("Deployment"))["containers"][0]
    migration = pod_spec(result.one("Job", MIGRATION_JOB))["containers"][0]
    for container in (postgres, mlflow, migration):
        ref = env_of(container)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "pg-creds", "key": "password"}


def test_pipeline_upload_job_is_a_plain_job_in_the_small_image(render):
    result = ok(render(*DEFAULT, "--set", "pipelineUpload.kfpHost=http://kfp:8888"))
    job = result.one("Job", UPLOAD_JOB)
    # Not a Helm hook: `helm install --wait` must not block on the upload.
    assert not any(k.startswith("helm.sh/hook") for k in job["metadata"].get("annotations", {}))
    pod = job["spec"]["template"]
    # No mesh by default: no sidecar that would keep the Job from completing.
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert "annotations" not in pod["metadata"]
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["serviceAccountName"] == "aprflow-pipeline"
    assert spec["automountServiceAccountToken"] is False
    container = spec["containers"][0]
    assert container["image"] == "ghcr.io/aprflow/aprflow-upload:0.1.0"
    argv = container["command"] + container["args"]
    assert argv == [
        "python3",
        "-m",
        "pipelines.submit",
        "upload",
        "--host",
        "http://kfp:8888",
        "--prefix",
        "aprflow-",
        "--namespace",
        "kubeflow",
        "/app/pipelines/compiled",
    ]
    assert "KF_PIPELINES_SA_TOKEN_PATH" not in env_of(container)
    # The module and flags the Job calls exist (python -m pipelines.submit upload --help).
    from pipelines.submit import main

    assert main(["upload", "--help"]) == 0


def test_upload_job_token_for_multi_user_kubeflow(render):
    job = ok(render(*DEFAULT, "--set", "pipelineUpload.kfpToken=true")).one("Job", UPLOAD_JOB)
    spec = pod_spec(job)
    container = spec["containers"][0]
    token_dir = "/var/run/secrets/kubeflow/pipelines"
    assert env_of(container)["KF_PIPELINES_SA_TOKEN_PATH"]["value"] == f"{token_dir}/token"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "kfp-token"]
    assert mount["mountPath"] == token_dir
    (volume,) = [v for v in spec["volumes"] if v["name"] == "kfp-token"]
    source = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == "pipelines.kubeflow.org" and source["path"] == "token"


def test_upload_job_creates_namespaced_pipelines_in_the_release_namespace(render, monkeypatch):
    """The Job's own command line, run against a stand-in KFP API, creates pipelines owned by the
    release (profile) namespace: what a namespace's editors may create in multi-user KFP.

    The v2beta1 API takes the owner as the pipeline's ``namespace`` (kfp 2.17.0
    kfp/client/client.py:1414, ``Client.upload_pipeline(..., namespace=None)``, forwards it to
    the same API); aprflow's upload sets it on ``V2beta1Pipeline`` (pipelines/submit.py, upload).
    """
    from pipelines.submit import main
    from tests.submit.kfp_api import FakeKfpApi

    job = ok(render(*DEFAULT, namespace="team-a")).one("Job", UPLOAD_JOB)
    container = pod_spec(job)["containers"][0]
    argv = container["command"][3:] + container["args"]  # after `python3 -m pipelines.submit`
    assert argv[argv.index("--namespace") + 1] == "team-a"
    compiled = str(Path(__file__).resolve().parents[2] / "pipelines" / "compiled")
    monkeypatch.delenv("APRFLOW_KFP_TOKEN", raising=False)
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)
    with FakeKfpApi() as api:
        argv[argv.index("--host") + 1] = api.url
        argv[argv.index("/app/pipelines/compiled")] = compiled
        assert main(argv) == 0
    assert api.pipelines
    assert {p["namespace"] for p in api.pipelines.values()} == {"team-a"}
    # Shared pipelines (no namespace) when turned off.
    shared = ok(render(*DEFAULT, "--set", "pipelineUpload.namespaced=false")).one("Job", UPLOAD_JOB)
    assert "--namespace" not in pod_spec(shared)["containers"][0]["args"]


def test_upload_job_disabled(render):
    result = ok(render(*DEFAULT, "--set", "pipelineUpload.enabled=false"))
    assert [d["metadata"]["name"] for d in result.find("Job")] == [MIGRATION_JOB]


# --- MLflow schema migration, disruption budget, Istio -----------------------------------------


def test_mlflow_schema_migration_is_a_pre_upgrade_hook_with_the_server_database_env(render):
    result = ok(render(*DEFAULT))
    job = result.one("Job", MIGRATION_JOB)
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    spec = pod_spec(job)
    (container,) = spec["containers"]
    # The CLI of the pinned MLflow: `mlflow db upgrade URL` (mlflow/db.py, upgrade).
    from mlflow.db import commands

    assert [p.name for p in commands.commands["upgrade"].params] == ["url"]
    assert container["command"] + container["args"] == [
        "mlflow", "db", "upgrade", "$(MLFLOW_BACKEND_STORE_URI)",
    ]  # fmt: skip
    server_pod = pod_spec(result.one("Deployment", "aprflow-mlflow"))
    (server,) = server_pod["containers"]
    assert container["image"] == server["image"]
    for key in ("serviceAccountName", "securityContext", "automountServiceAccountToken"):
        assert spec[key] == server_pod[key], key
    # The same database env, in the same order ($(POSTGRES_PASSWORD) is defined before use).
    database_keys = ("POSTGRES_PASSWORD", "MLFLOW_BACKEND_STORE_URI")
    assert [e for e in container["env"] if e["name"] in database_keys] == [
        e for e in server["env"] if e["name"] in database_keys
    ]
    assert [e["name"] for e in container["env"] if e["name"] in database_keys] == list(
        database_keys
    )
    assert spec["restartPolicy"] == "Never"
    # Argo CD runs it in the Sync phase after Postgres (wave 0), before the servers.
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    deployment = result.one("Deployment", "aprflow-mlflow")["metadata"]["annotations"]
    waves = (
        int(annotations["argocd.argoproj.io/sync-wave"]),
        int(deployment["argocd.argoproj.io/sync-wave"]),
    )
    assert 0 < waves[0] < waves[1]


@pytest.mark.parametrize(
    "values", ["mlflow.dbUpgrade.enabled=false", VARIANTS["no-mlflow"][1]], ids=["off", "no-mlflow"]
)
def test_no_schema_migration_when_disabled_or_without_mlflow(render, values):
    result = ok(render(*DEFAULT, "--set", values))
    assert result.find("Job", MIGRATION_JOB) == []


def test_mlflow_disruption_budget(render):
    pdb = ok(render(*DEFAULT)).one("PodDisruptionBudget", "aprflow-mlflow")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    deploy = ok(render(*DEFAULT)).one("Deployment", "aprflow-mlflow")
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    # A single replica gets none: minAvailable 1 would block every drain of its node.
    single = ok(render(*DEFAULT, "--set", "mlflow.replicaCount=1"))
    assert single.find("PodDisruptionBudget") == []
    off = ok(render(*DEFAULT, "--set", "mlflow.pdb.enabled=false"))
    assert off.find("PodDisruptionBudget") == []


def test_mlflow_disruption_budget_must_leave_a_pod_to_evict(render):
    result = render(*DEFAULT, "--set", "mlflow.pdb.minAvailable=2")
    assert result.returncode != 0
    assert "mlflow.pdb.minAvailable (2) must be lower than mlflow.replicaCount (2)" in (
        result.stderr
    )


@pytest.mark.parametrize("inject", [False, True])
def test_one_istio_setting_for_every_pod_of_the_chart(render, inject):
    result = ok(render(*DEFAULT, "--set", f"istio.sidecarInject={str(inject).lower()}"))
    workloads = [d for d in result.docs if d["kind"] in WORKLOAD_KINDS]
    assert {d["metadata"]["name"] for d in workloads} == {
        "aprflow-mlflow", "aprflow-postgres", UPLOAD_JOB, MIGRATION_JOB,
    }  # fmt: skip
    for doc in workloads:
        pod = doc["spec"]["template"]["metadata"]
        assert pod["labels"]["sidecar.istio.io/inject"] == str(inject).lower()
        # A Job's sidecar must stop with its container: a native sidecar does.
        native = pod.get("annotations", {}).get("sidecar.istio.io/nativeSidecar")
        assert native == ("true" if inject and doc["kind"] == "Job" else None)


def test_no_role_unless_aprflow_calls_the_api(render):
    """Pods get the Secret and ConfigMaps from the kubelet: no Role for them by default."""
    result = ok(render(*DEFAULT))
    kinds = {d["kind"] for d in result.docs}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def test_trainer_role_is_namespaced_and_only_trainjobs(render):
    result = ok(
        render(*DEFAULT, "--set", "trainer.enabled=true,rbac.extraSubjects={pipeline-runner}")
    )
    kinds = {d["kind"] for d in result.docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    role = result.one("Role")
    assert role["rules"] == [
        {
            "apiGroups": ["trainer.kubeflow.org"],
            "resources": ["trainjobs"],
            "verbs": ["create", "get", "list", "watch", "delete"],
        }
    ]
    binding = result.one("RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [s["name"] for s in binding["subjects"]] == ["aprflow-pipeline", "pipeline-runner"]


@pytest.mark.parametrize("variant", ["defaults", "credentials"])
def test_pods_run_non_root_with_resources(render, variant):
    result = ok(render(*VARIANTS[variant]))
    workloads = [d for d in result.docs if d["kind"] in WORKLOAD_KINDS]
    assert len(workloads) == 4  # MLflow, Postgres, upload Job, schema migration Job
    for doc in workloads:
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"]["cpu"]
            assert container["resources"]["requests"]["memory"]


# --- values schema -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--set", "mlflow.replicaCount=two"), "replicaCount"),
        (("--set-string", "mlflow.replicaCount=2"), "replicaCount"),
        (("--set", "unknownTopLevel=1"), "unknownTopLevel"),
        (("--set", "mlflow.unknownKey=1"), "unknownKey"),
        (("--set", "s3.bucket=Not_A_Bucket"), "bucket"),
        (("--set", "s3.endpointUrl=minio:9000"), "endpointUrl"),
        (("--set", "mlflow.image.pullPolicy=Sometimes"), "pullPolicy"),
        (("--set", "mlflow.service.type=Ingress"), "type"),
        (("--set", "mlflow.service.port=70000"), "port"),
        (("--set", "postgres.enabled=false"), "existingSecret"),
        (("--set", "mlflow.enabled=false"), "mlflowTrackingUri"),
        (("--set", "postgres.persistence.size=lots"), "size"),
        (("--set", "postgres.auth.password=p@ss/word"), "password"),
        (("--set", "pipelineUpload.enabled=yes"), "enabled"),
        (("--set", "launcher.configMapName=Bad_Name"), "configMapName"),
        (("--set", "mlflow.resources.requests.cpu=lots"), "cpu"),
    ],
)
def test_values_schema_rejects_bad_values(render, args, needle):
    result = render(*args)
    assert result.returncode != 0, f"accepted bad values {args}"
    assert needle in result.stderr, result.stderr


def test_values_schema_accepts_external_database(render):
    ok(render("--set", "postgres.enabled=false,externalDatabase.existingSecret=db"))


def _deref(node: dict, schema: dict) -> dict:
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].split("/")[-1]]
    return node


def _value_paths(values, schema: dict, node: dict | None = None, prefix=()):
    """Paths of documented values: walk values.yaml along the schema and stop at leaves or at
    free-form maps (labels, annotations, resources, security contexts...). Yields
    (path, schema node or None when the schema does not know the key)."""
    node = schema if node is None else node
    if node.get("$ref") == "#/definitions/resources":  # requests/limits: one documented value
        yield prefix, _deref(node, schema)
        return
    node = _deref(node, schema)
    props = node.get("properties")
    if not isinstance(values, dict) or not props or node.get("additionalProperties") is not False:
        yield prefix, node
        return
    for key, value in values.items():
        if key not in props:
            yield (*prefix, key), None
        else:
            yield from _value_paths(value, schema, props[key], (*prefix, key))


def _load():
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    return values, schema


def test_schema_covers_every_value_and_is_closed():
    values, schema = _load()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    paths = list(_value_paths(values, schema))
    missing = [".".join(p) for p, node in paths if node is None]
    assert not missing, f"values without schema: {missing}"
    untyped = [".".join(p) for p, node in paths if "type" not in node and "anyOf" not in node]
    assert not untyped, f"values without a type in the schema: {untyped}"
    # Every closed object in the schema lists its required keys or is all-optional by design.
    assert set(schema["required"]) <= set(values)


def test_values_yaml_is_commented():
    """Every key of values.yaml has a comment right above it or lies in a commented block."""
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    documented_indents: list[int] = []  # indentation of enclosing commented keys
    uncommented = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while documented_indents and documented_indents[-1] >= indent:
            documented_indents.pop()
        prev = lines[i - 1].strip() if i else ""
        if prev.startswith("#"):
            documented_indents.append(indent)
        elif not documented_indents and not line.rstrip().endswith(":"):
            uncommented.append(line.strip())
    assert not uncommented, f"undocumented values: {uncommented}"


def test_readme_documents_every_value():
    values, schema = _load()
    readme = (CHART_DIR / "README.md").read_text()
    undocumented = [
        ".".join(p) for p, _ in _value_paths(values, schema) if f"`{'.'.join(p)}`" not in readme
    ]
    assert not undocumented, f"README values table lacks {undocumented}"
    assert "helm install aprflow charts/aprflow -n kubeflow --set s3.bucket=" in readme
    assert "use_secret_as_env" in readme and "use_config_map_as_env" in readme


def test_notes_render(notes):
    notes = notes(*DEFAULT)
    assert "http://aprflow-mlflow.kubeflow.svc.cluster.local:5000" in notes
    assert "aprflow-launcher" in notes and "aprflow-s3" in notes
