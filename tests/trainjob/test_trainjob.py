"""The TrainJob launcher: manifests checked offline (strictly, against the Trainer CRDs of
every supported release in crds/), the launch loop against a loopback stand-in of the
Kubernetes API.

The stand-in serves the custom-objects endpoints the real ``kubernetes`` client calls (create,
get, delete of trainer.kubeflow.org/v1alpha1 trainjobs), flips a TrainJob to the condition a
test asks for after a few reads and, for Complete, writes the trial's result.json into the
store as the TrainJob's rank 0 would. A deleted TrainJob stays readable for a few GETs (the
garbage collector removing its JobSet first) and a create of its name answers 409 meanwhile,
as the API server does. It does not run a Trainer controller, pods or torchrun: that needs a
cluster with Kubeflow Trainer.
"""

import dataclasses
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from components.common.images import GPU_IMAGE
from components.common.storage import LocalStore
from components.data.descriptor import DatasetRef
from components.train.recipes import resolve_recipe
from components.trainjob import manifest
from pipelines.cluster import LAUNCHER_KEYS, SECRET_KEYS, ClusterProfile
from tests.trainjob.crd_schema import TRAINER_VERSIONS, strict_errors

TRIAL = "0397236fa8e13a60"
STUDY = "apr-demo-7bc56b9bad"
RESULT = {"trial_id": TRIAL, "status": "ok", "top1_error": 12.5}
GPU_PROFILE = ClusterProfile(
    node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute",
         "toleration_seconds": 60},
    ],
)  # fmt: skip


def build(**options):
    return manifest.trainjob_manifest(TRIAL, STUDY, "team-a", GPU_IMAGE, 4, 8, **options)


def plan(store, engine="deepspeed", gpus=1):
    """Stores a planned trial under TRIAL (what plan_study writes; its content is not trained)."""
    from components.train.plan import trial_key
    from components.train.trial import Trial

    faces = DatasetRef("faces", "datasets/faces/manifest.json", "0" * 16, 10, 8, 100, 10)
    trial = Trial(spec={}, dataset=faces, recipe=resolve_recipe("apr_tiny", {}), seed=0,
                  engine=engine, gpus=gpus)  # fmt: skip
    store.put_json(trial_key(TRIAL), trial.to_dict())


# --- the manifest ------------------------------------------------------------------------------


def test_manifest_runs_the_gpu_image_on_every_node_with_the_runs_config():
    job = build(launcher_config_map="my-launcher", s3_secret="my-s3", kfp_run_id="run-1")
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    assert job["metadata"]["name"] == f"aprflow-{TRIAL}"
    assert job["metadata"]["namespace"] == "team-a"
    assert job["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "aprflow-torch-distributed",
    }
    trainer = job["spec"]["trainer"]
    assert trainer["image"] == GPU_IMAGE
    assert trainer["command"] == ["torchrun", "--module", "components.trainjob.node"]
    assert trainer["args"] == [
        "--trial-id", TRIAL, "--study-id", STUDY, "--kfp-run-id", "run-1",
    ]  # fmt: skip
    assert trainer["numNodes"] == 4
    assert trainer["numProcPerNode"] == 8  # one process per GPU
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert trainer["resourcesPerNode"]["requests"]["nvidia.com/gpu"] == "8"
    refs = {e["name"]: e["valueFrom"] for e in trainer["env"]}
    assert set(refs) == set(LAUNCHER_KEYS) | set(SECRET_KEYS)
    for key in LAUNCHER_KEYS:
        assert refs[key] == {"configMapKeyRef": {"name": "my-launcher", "key": key}}
    for key in SECRET_KEYS:
        assert refs[key] == {"secretKeyRef": {"name": "my-s3", "key": key}}


def test_manifest_parts_are_valid_kubernetes_objects():
    """The env and resources deserialize into the kubernetes client's core/v1 models and
    serialize back unchanged (field names and types the API server accepts)."""
    trainer = build()["spec"]["trainer"]
    api = k8s.ApiClient()
    deserialize = api._ApiClient__deserialize
    env = deserialize(trainer["env"], "list[V1EnvVar]")
    assert all(isinstance(e, k8s.V1EnvVar) and e.value_from is not None for e in env)
    resources = deserialize(trainer["resourcesPerNode"], "V1ResourceRequirements")
    assert api.sanitize_for_serialization(env) == trainer["env"]
    assert api.sanitize_for_serialization(resources) == trainer["resourcesPerNode"]


def test_cpu_only_trainjob_has_no_gpu_resources_or_gpu_placement():
    job = manifest.trainjob_manifest(TRIAL, STUDY, "ns", GPU_IMAGE, 2, 0, profile=GPU_PROFILE)
    assert "nvidia.com/gpu" not in json.dumps(job["spec"]["trainer"]["resourcesPerNode"])
    # One process per node: the torch plugin's `auto` would start one per requested CPU.
    assert job["spec"]["trainer"]["numProcPerNode"] == 1
    (patch,) = job["spec"]["runtimePatches"]
    assert node_pod_patch(patch) == {}  # no GPU node selector or taints for a CPU job


def node_pod_patch(patch):
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == "node"  # the runtime's replicated job (trainer-runtime.yaml)
    return job["template"]["spec"]["template"]["spec"]


def test_node_pods_get_the_profiles_gpu_placement_and_the_service_account():
    job = build(profile=GPU_PROFILE, service_account="default-editor")
    (patch,) = job["spec"]["runtimePatches"]
    assert patch["manager"] == "aprflow.org/trainjob-launcher"
    pod = node_pod_patch(patch)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute",
         "tolerationSeconds": 60},
    ]  # fmt: skip
    assert pod["serviceAccountName"] == "default-editor"
    # The tolerations are core/v1 Tolerations (camelCase, typed), as the pod spec needs them.
    api = k8s.ApiClient()
    tolerations = api._ApiClient__deserialize(pod["tolerations"], "list[V1Toleration]")
    assert tolerations[1].toleration_seconds == 60
    assert api.sanitize_for_serialization(tolerations) == pod["tolerations"]


def test_gpu_resource_is_the_profiles_accelerator():
    job = build(profile=ClusterProfile(accelerator="amd.com/gpu"))
    resources = job["spec"]["trainer"]["resourcesPerNode"]
    assert resources["limits"]["amd.com/gpu"] == resources["requests"]["amd.com/gpu"] == "8"
    assert "nvidia.com/gpu" not in json.dumps(resources)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"trial_id": "Not-A-Hash"}, "not a hex content hash"),
        ({"num_nodes": 0}, "num_nodes must be >= 1"),
        ({"gpus_per_node": -1}, "gpus per node must be >= 0"),
    ],
)
def test_bad_manifest_input(kwargs, needle):
    arguments = {"trial_id": TRIAL, "study_id": STUDY, "namespace": "ns", "image": GPU_IMAGE,
                 "num_nodes": 2, "gpus_per_node": 1} | kwargs  # fmt: skip
    with pytest.raises(ValueError, match=needle):
        manifest.trainjob_manifest(**arguments)


def test_name_is_a_dns_label_and_stable():
    name = manifest.trainjob_name("f" * 64)
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 40
    assert manifest.trainjob_name(TRIAL) == manifest.trainjob_name(TRIAL)


# --- strictly against the Trainer CRDs ---------------------------------------------------------

MANIFESTS = {
    "gpu": lambda: build(launcher_config_map="l", s3_secret="s", kfp_run_id="run-1"),
    "gpu-profile-account": lambda: build(profile=GPU_PROFILE, service_account="default-editor"),
    "cpu": lambda: manifest.trainjob_manifest(TRIAL, STUDY, "ns", GPU_IMAGE, 2, 0),
}


def test_both_supported_trainer_releases_are_fixtures():
    assert TRAINER_VERSIONS == ["v2.2.0", "v2.3.0"]


@pytest.mark.parametrize("version", TRAINER_VERSIONS)
@pytest.mark.parametrize("variant", MANIFESTS)
def test_manifest_validates_strictly_against_the_trainjob_crd(version, variant):
    assert strict_errors(MANIFESTS[variant](), version) == []


@pytest.mark.parametrize("version", TRAINER_VERSIONS)
def test_the_strict_check_rejects_what_the_api_server_would(version):
    """Unknown fields at any depth (what plain JSON Schema misses), wrong types and missing
    required fields are each reported."""
    job = build(profile=GPU_PROFILE)
    job["spec"]["trainer"]["numProcPerNode"] = "auto"  # an integer since Trainer 2.2
    job["spec"]["podTemplateOverrides"] = []  # Trainer 2.1's field, gone in 2.2
    pod = node_pod_patch(job["spec"]["runtimePatches"][0])
    pod["tolerations"][0]["tolerationseconds"] = 5  # a misspelt field deep in a list
    pod["hostNetwork"] = True  # a PodSpec field, but not one a runtime patch may set
    job["metadata"]["label"] = {}
    del job["spec"]["runtimeRef"]["name"]
    assert sorted(strict_errors(job, version)) == sorted([
        ".metadata.label: unknown field",
        ".spec.podTemplateOverrides: unknown field",
        ".spec.runtimePatches[0].trainingRuntimeSpec.template.spec.replicatedJobs[0].template"
        ".spec.template.spec.hostNetwork: unknown field",
        ".spec.runtimePatches[0].trainingRuntimeSpec.template.spec.replicatedJobs[0].template"
        ".spec.template.spec.tolerations[0].tolerationseconds: unknown field",
        ".spec.runtimeRef: 'name' is a required property",
        ".spec.trainer.numProcPerNode: 'auto' is not of type 'integer'",
    ])  # fmt: skip


# --- the launch loop against a stand-in API -----------------------------------------------------

PATH = re.compile(
    r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/(?P<ns>[^/]+)/trainjobs(/(?P<name>[^/]+))?$"
)


class FakeTrainer:
    """Custom-objects endpoints for trainjobs; a job finishes after ``reads`` GETs; a deleted
    job still answers ``linger`` GETs (and blocks its name: 409 on create), then 404."""

    def __init__(self, store, outcome="Complete", reads=2, status_code=None, linger=0):
        self.store, self.outcome, self.reads, self.status_code = store, outcome, reads, status_code
        self.linger = linger
        self.objects: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.gets: dict[str, int] = {}
        self.deleting: dict[str, int] = {}  # name: GETs it still answers
        self.delete_bodies: list[dict] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        configuration = k8s.Configuration()
        configuration.host = f"http://127.0.0.1:{self._server.server_port}"
        return k8s.CustomObjectsApi(k8s.ApiClient(configuration))

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def finish(self, name):
        from components.train.trial import result_key

        job = self.objects[name]
        job["status"] = {"conditions": [
            {"type": "Created", "status": "True"},
            {"type": self.outcome, "status": "True", "reason": self.outcome,
             "message": "trainer node-0 exited with code 1" if self.outcome == "Failed" else ""},
        ]}  # fmt: skip
        if self.outcome == "Complete":  # what rank 0 of the TrainJob writes
            self.store.put_json(result_key(TRIAL), RESULT)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method):
                match = PATH.match(self.path.split("?")[0])
                fake.calls.append((method, self.path))
                if fake.status_code:
                    return self._reply(
                        fake.status_code, {"kind": "Status", "code": fake.status_code}
                    )
                if match is None:
                    return self._reply(404, {"kind": "Status", "code": 404})
                name = match["name"]
                if method == "POST":
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    name = body["metadata"]["name"]
                    if name in fake.objects:
                        return self._reply(409, {"kind": "Status", "code": 409})
                    fake.objects[name] = body
                    return self._reply(201, body)
                if name not in fake.objects:
                    return self._reply(404, {"kind": "Status", "code": 404})
                if method == "DELETE":
                    length = int(self.headers.get("Content-Length") or 0)
                    fake.delete_bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                    fake.objects[name]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
                    fake.deleting[name] = fake.linger
                    return self._reply(200, {"kind": "Status", "status": "Success"})
                if name in fake.deleting:  # the garbage collector is still at work
                    if fake.deleting[name] == 0:
                        del fake.deleting[name], fake.objects[name]
                        return self._reply(404, {"kind": "Status", "code": 404})
                    fake.deleting[name] -= 1
                    return self._reply(200, fake.objects[name])
                fake.gets[name] = fake.gets.get(name, 0) + 1
                if fake.gets[name] >= fake.reads and "status" not in fake.objects[name]:
                    fake.finish(name)
                return self._reply(200, fake.objects[name])

            def do_POST(self):
                self._route("POST")

            def do_GET(self):
                self._route("GET")

            def do_DELETE(self):
                self._route("DELETE")

        return Handler


def run(api, store, **kwargs):
    """Launches the planned deepspeed trial TRIAL on 2 nodes x 1 GPU."""
    from components.train.plan import trial_key
    from components.trainjob import launch

    if not store.exists(trial_key(TRIAL)):
        plan(store)
    return launch.launch_trial(
        TRIAL, STUDY, GPU_IMAGE, 2, 1, namespace="team-a", store=store, api=api, poll_s=0.01,
        **kwargs,
    )  # fmt: skip


def test_launch_creates_waits_and_reads_the_result(tmp_path, capsys):
    store = LocalStore(tmp_path)
    fake = FakeTrainer(store, reads=3)
    with fake as api:
        assert run(api, store, s3_secret="my-s3") == RESULT
    (created,) = fake.objects.values()
    expected = manifest.trainjob_manifest(
        TRIAL, STUDY, "team-a", GPU_IMAGE, 2, 1, s3_secret="my-s3"
    )
    assert {k: v for k, v in created.items() if k != "status"} == expected
    posted = [c for c in fake.calls if c[0] == "POST"]
    assert posted == [("POST", "/apis/trainer.kubeflow.org/v1alpha1/namespaces/team-a/trainjobs")]
    assert fake.gets[f"aprflow-{TRIAL}"] == 3  # polled until Complete
    assert strict_errors(expected, TRAINER_VERSIONS[-1]) == []  # what the API server got
    assert f"aprflow-{TRIAL}: 2 nodes x 1 GPUs" in capsys.readouterr().err
    env = {e["name"]: e for e in created["spec"]["trainer"]["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "my-s3"


def test_a_finished_trial_needs_no_trainjob(tmp_path):
    from components.train.trial import result_key

    store = LocalStore(tmp_path)
    store.put_json(result_key(TRIAL), RESULT)
    fake = FakeTrainer(store)
    with fake as api:
        assert run(api, store) == RESULT
    assert fake.calls == []


def test_a_running_trainjob_is_waited_for_not_created_twice(tmp_path):
    store = LocalStore(tmp_path)
    fake = FakeTrainer(store, reads=2)
    fake.objects[f"aprflow-{TRIAL}"] = build()
    with fake as api:
        assert run(api, store) == RESULT
    assert [c[0] for c in fake.calls].count("DELETE") == 0
    assert len(fake.objects) == 1


def failed_trainjob():
    old = build()
    old["status"] = {"conditions": [{"type": "Failed", "status": "True", "message": "OOM"}]}
    return old


def test_creating_while_the_old_trainjob_is_deleted_conflicts(tmp_path):
    """Why the launcher waits: in the stand-in, as in the API server, a TrainJob being deleted
    keeps its name, and a create right after the DELETE answers 409."""
    fake = FakeTrainer(LocalStore(tmp_path), linger=3)
    fake.objects[f"aprflow-{TRIAL}"] = failed_trainjob()
    args = (manifest.GROUP, manifest.VERSION, "team-a", manifest.PLURAL)
    with fake as api:
        api.delete_namespaced_custom_object(*args, f"aprflow-{TRIAL}")
        with pytest.raises(ApiException) as e:
            api.create_namespaced_custom_object(*args, build())
    assert e.value.status == 409


def test_a_failed_trainjob_is_replaced_once_it_is_gone(tmp_path):
    store = LocalStore(tmp_path)
    fake = FakeTrainer(store, reads=1, linger=3)
    fake.objects[f"aprflow-{TRIAL}"] = failed_trainjob()
    with fake as api:
        assert run(api, store) == RESULT
    methods = [c[0] for c in fake.calls]
    # create (409), read (Failed), delete, read while it lingers x 3, read (404), create.
    assert methods[:8] == ["POST", "GET", "DELETE", "GET", "GET", "GET", "GET", "POST"]
    assert fake.delete_bodies == [{"propagationPolicy": "Foreground"}]
    (replacement,) = fake.objects.values()
    assert "deletionTimestamp" not in replacement["metadata"]  # the new TrainJob, not the old


def test_a_trainjob_that_is_never_deleted_is_a_clear_error(tmp_path):
    from components.trainjob import launch

    fake = FakeTrainer(LocalStore(tmp_path), linger=10**6)
    fake.objects[f"aprflow-{TRIAL}"] = failed_trainjob()
    ticks = iter(range(100))
    with fake as api, pytest.raises(launch.TrainJobError) as e:
        api.delete_namespaced_custom_object(
            manifest.GROUP, manifest.VERSION, "team-a", manifest.PLURAL, f"aprflow-{TRIAL}"
        )
        launch.wait_deleted(api, "team-a", f"aprflow-{TRIAL}", timeout_s=3, poll_s=0,
                            clock=lambda: next(ticks), sleep=lambda _: None)  # fmt: skip
    assert "was not deleted within 3 s" in str(e.value)
    assert f"get trainjob aprflow-{TRIAL} -o yaml" in str(e.value)
    assert [c[0] for c in fake.calls].count("GET") == 3  # polled until the deadline


@pytest.mark.parametrize(
    ("engine", "gpus", "needle"),
    [
        ("torch", 1, "engine 'torch' trains in one process, but 2 nodes x 1 processes make 2"),
        ("deepspeed", 4, "planned for 4 processes, but 2 nodes x 1 make 2"),
    ],
)
def test_a_trial_that_cannot_train_in_the_world_creates_nothing(tmp_path, engine, gpus, needle):
    from components.trainjob import launch

    store = LocalStore(tmp_path)
    plan(store, engine=engine, gpus=gpus)
    fake = FakeTrainer(store)
    with fake as api, pytest.raises(launch.TrainJobError, match=needle):
        run(api, store)
    assert fake.calls == [] and fake.objects == {}


def test_world_sizes_a_trial_can_train_in():
    from components.train.trial import Trial
    from components.trainjob import launch

    faces = DatasetRef("faces", "datasets/faces/manifest.json", "0" * 16, 10, 8, 100, 10)
    recipe = resolve_recipe("apr_tiny", {})
    torch_trial = Trial(spec={}, dataset=faces, recipe=recipe, seed=0)
    launch.check_world(torch_trial, 1, 1)  # one process: the torch engine's case
    launch.check_world(torch_trial, 1, 0)
    deepspeed = dataclasses.replace(torch_trial, engine="deepspeed")
    launch.check_world(deepspeed, 4, 8)  # planned for one GPU, runs in any world
    launch.check_world(dataclasses.replace(deepspeed, gpus=16), 2, 8)
    with pytest.raises(launch.TrainJobError):
        launch.check_world(torch_trial, 2, 0)  # two CPU nodes are two processes too


def test_failed_trainjob_is_one_clear_error(tmp_path):
    from components.trainjob import launch

    store = LocalStore(tmp_path)
    with FakeTrainer(store, outcome="Failed") as api, pytest.raises(launch.TrainJobError) as e:
        run(api, store)
    message = str(e.value)
    assert f"TrainJob team-a/aprflow-{TRIAL} failed: trainer node-0 exited with code 1" in message
    assert "kubectl -n team-a logs" in message


def test_forbidden_explains_the_role(tmp_path):
    from components.trainjob import launch

    store = LocalStore(tmp_path)
    with FakeTrainer(store, status_code=403) as api, pytest.raises(launch.TrainJobError) as e:
        run(api, store)
    assert "HTTP 403" in str(e.value) and "trainer.enabled=true" in str(e.value)


def test_complete_without_result_is_an_error(tmp_path):
    from components.trainjob import launch

    store = LocalStore(tmp_path)
    fake = FakeTrainer(store, reads=1)
    fake.finish = lambda name: fake.objects[name].update(
        status={"conditions": [{"type": "Complete", "status": "True"}]}
    )
    with fake as api, pytest.raises(launch.TrainJobError, match="wrote no .*result.json"):
        run(api, store)


def test_timeout_names_the_trainjob(tmp_path):
    from components.trainjob import launch

    store = LocalStore(tmp_path)
    ticks = iter(range(100))
    fake = FakeTrainer(store, reads=10**6)  # never finishes
    fake.objects[f"aprflow-{TRIAL}"] = build()
    with fake as api, pytest.raises(launch.TrainJobError) as e:
        launch.wait_for(
            api,
            "team-a",
            f"aprflow-{TRIAL}",
            timeout_s=3,
            poll_s=0,
            clock=lambda: next(ticks),
            sleep=lambda _: None,
        )
    assert "did not finish within 3 s" in str(e.value)
    assert f"describe trainjob aprflow-{TRIAL}" in str(e.value)
    assert fake.gets[f"aprflow-{TRIAL}"] == 3  # polled until the deadline, then gave up


def test_namespace_outside_a_pod_is_a_clear_error(tmp_path):
    from components.trainjob import launch

    with pytest.raises(launch.TrainJobError, match="pass namespace"):
        launch.current_namespace(tmp_path / "absent")
    (tmp_path / "namespace").write_text("team-b\n")
    assert launch.current_namespace(tmp_path / "namespace") == "team-b"


# --- the KFP component ----------------------------------------------------------------------------


def test_component_compiles_into_a_pipeline_with_the_cpu_image(tmp_path):
    from kfp import compiler, dsl

    from components.common.images import CPU_IMAGE
    from components.trainjob.component import train_trial_multinode

    @dsl.pipeline(name="multinode")
    def multinode(trial: dict = {"trial_id": TRIAL, "study_id": STUDY}):  # noqa: B006
        train_trial_multinode(
            trial=trial, num_nodes=2, gpus_per_node=8, runtime="aprflow-torch-distributed",
            launcher_config_map="aprflow-launcher", s3_secret="aprflow-s3", store_uri="",
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            cluster_profile=dataclasses.asdict(GPU_PROFILE), service_account="default-editor",
        )  # fmt: skip

    path = tmp_path / "multinode.yaml"
    compiler.Compiler().compile(multinode, str(path))
    spec = yaml.safe_load(path.read_text())
    (executor,) = spec["deploymentSpec"]["executors"].values()
    assert executor["container"]["image"] == CPU_IMAGE
    assert "launch_trial" in " ".join(executor["container"]["command"])
    (task,) = spec["root"]["dag"]["tasks"].values()
    parameters = task["inputs"]["parameters"]
    assert parameters["cluster_profile"]["runtimeValue"]["constant"] == dataclasses.asdict(
        GPU_PROFILE
    )
    assert parameters["service_account"]["runtimeValue"]["constant"] == "default-editor"


def test_node_of_a_missing_trial_is_one_error_line(tmp_path, monkeypatch, capsys):
    from components.trainjob import node

    monkeypatch.setenv("RANK", "1")  # a non-zero rank reads the planned trial itself
    code = node.main(["--trial-id", TRIAL, "--study-id", STUDY, "--store-uri", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and TRIAL in err[0], err
