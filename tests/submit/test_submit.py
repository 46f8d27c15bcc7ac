"""aprflow upload / submit against a loopback stand-in of the KFP API (tests/submit/kfp_api.py).

The real kfp.Client and kfp CLI send the requests; the stand-in records them. A real Kubeflow
Pipelines backend (spec validation, RBAC, running the pipeline) is needed for the rest.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines import submit
from pipelines.cli import COMPILED_DIR, main
from pipelines.cluster import PROFILE, load_profile
from tests.submit.kfp_api import API, FakeKfpApi

STUDY = COMPILED_DIR / "apr_study.yaml"


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch, tmp_path):
    monkeypatch.delenv(submit.TOKEN_ENV, raising=False)
    monkeypatch.delenv(submit.TOKEN_PATH_ENV, raising=False)
    monkeypatch.setattr(submit, "DEFAULT_TOKEN_PATH", str(tmp_path / "absent-token"))
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json


# --- pure parts --------------------------------------------------------------------------------


def test_version_name_is_the_content_hash(tmp_path):
    copy = tmp_path / "apr_study.yaml"
    shutil.copy(STUDY, copy)
    name = submit.version_name("aprflow-apr-study", copy)
    assert name == submit.version_name("aprflow-apr-study", STUDY)
    assert name.startswith("aprflow-apr-study-") and len(name.rsplit("-", 1)[1]) == 12
    copy.write_text(copy.read_text() + "\n# changed\n")
    assert submit.version_name("aprflow-apr-study", copy) != name
    assert submit.pipeline_name_of(STUDY) == "aprflow-apr-study"


def test_token_discovery_order(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("projected-token\n")
    assert submit.discover_token({}) is None  # no env, default path absent (fixture)
    assert submit.discover_token({submit.TOKEN_PATH_ENV: str(token_file)}) == "projected-token"
    assert (
        submit.discover_token({submit.TOKEN_ENV: "env", submit.TOKEN_PATH_ENV: str(token_file)})
        == "env"
    )
    with pytest.raises(submit.SubmitError, match="no such token file"):
        submit.discover_token({submit.TOKEN_PATH_ENV: str(tmp_path / "typo")})


def test_in_cluster_default_token_path(monkeypatch, tmp_path):
    default = tmp_path / "kubeflow" / "pipelines" / "token"
    default.parent.mkdir(parents=True)
    default.write_text("sa-token")
    monkeypatch.setattr(submit, "DEFAULT_TOKEN_PATH", str(default))
    assert submit.discover_token({}) == "sa-token"


def test_submit_dry_run_builds_typed_arguments(capsys):
    code = main(
        [
            "submit",
            "apr-study",
            "--dry-run",
            "--set",
            "n_models=4",
            "--set",
            "datasets=[digits,faces]",
            "--set",
            "s3_secret=my-s3",
        ]
    )
    assert code == 0
    arguments = json.loads(capsys.readouterr().out)
    assert arguments["n_models"] == 4
    assert arguments["datasets"] == ["digits", "faces"]
    assert arguments["s3_secret"] == "my-s3"
    assert arguments["launcher_config_map"] == "aprflow-launcher"


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        # An unknown --set key is a usage error (2); a bad value, a failure (1).
        (["submit", "apr-study", "--dry-run", "--set", "nope=1"], 2, "unknown config key 'nope'"),
        (["submit", "apr-study", "--dry-run", "--set", "n_models=many"], 1, "must be an int"),
        (["submit", "apr-study"], 1, "no Kubeflow Pipelines host"),
        (
            ["submit", "apr-study", "--dry-run", "--set", "s3_secret=My_S3"],
            1,
            "s3_secret='My_S3' is not a Kubernetes object name",
        ),
        (["upload", "--host", "ml-pipeline:8888"], 1, "must start with http"),
        (["upload", "--host", "http://127.0.0.1:9", "/nonexistent"], 1, "no such file or folder"),
    ],
)
def test_bad_input_is_one_error_line(argv, code, needle, capsys, monkeypatch):
    monkeypatch.delenv(submit.HOST_ENV, raising=False)
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


# --- against the stand-in API ------------------------------------------------------------------


def test_upload_is_idempotent_and_versions_by_content(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "compiled"
    folder.mkdir()
    shutil.copy(STUDY, folder / "apr_study.yaml")
    monkeypatch.setenv(submit.TOKEN_ENV, "t0k3n")
    with FakeKfpApi(required_token="t0k3n") as api:
        argv = ["upload", "--host", api.url, str(folder)]
        assert main(argv) == 0
        assert "(uploaded)" in capsys.readouterr().out
        (create,) = api.calls("POST", f"{API}/pipelines/create")
        body = create["json"]
        version = submit.version_name("aprflow-apr-study", folder / "apr_study.yaml")
        assert body["pipeline"]["display_name"] == "aprflow-apr-study"
        assert body["pipeline_version"]["display_name"] == version
        spec_docs = list(yaml.safe_load_all(STUDY.read_text()))
        assert body["pipeline_version"]["pipeline_spec"] == {
            "pipeline_spec": spec_docs[0],
            "platform_spec": spec_docs[1],
        }
        calls = [r for r in api.requests if not r["path"].endswith("/healthz")]
        assert all(r["headers"].get("authorization") == "Bearer t0k3n" for r in calls)

        # Same file again: nothing is created.
        assert main(argv) == 0
        assert "unchanged, already uploaded" in capsys.readouterr().out
        assert len(api.calls("POST", f"{API}/pipelines/create")) == 1
        assert api.calls("POST", f"{API}/pipelines/upload_version") == []

        # A changed pipeline: a new version of the same pipeline, named by its new hash.
        changed = folder / "apr_study.yaml"
        changed.write_text(changed.read_text() + "\n# changed\n")
        assert main(argv) == 0
        (upload,) = api.calls("POST", f"{API}/pipelines/upload_version")
        assert upload["query"]["name"] == [submit.version_name("aprflow-apr-study", changed)]
        assert upload["query"]["pipelineid"] == [next(iter(api.pipelines))]
        assert b"apr-study" in upload["raw"]  # the multipart body carries the file
        assert len(api.pipelines) == 1
        assert len(next(iter(api.versions.values()))) == 2


def test_upload_without_token_gets_a_hint(capsys):
    with FakeKfpApi(required_token="needed") as api:
        assert main(["upload", "--host", api.url, str(STUDY)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Kubeflow Pipelines refused to upload apr_study.yaml")
    assert "HTTP 403" in err and submit.TOKEN_ENV in err and "kfpToken" in err


def test_submit_sends_parameters_service_account_and_namespace(capsys):
    with FakeKfpApi() as api:
        code = main(
            [
                "submit",
                "apr-study",
                "--host",
                api.url,
                "--namespace",
                "team-a",
                "--experiment",
                "apr",
                "--service-account",
                "aprflow-pipeline",
                "--set",
                "n_models=4",
                "--set",
                "datasets=[digits,faces]",
                "--set",
                "s3_secret=my-s3",
                "--set",
                "gpus_per_trial=2",
                "--set",
                "engine=deepspeed",
            ]
        )
        assert code == 0, capsys.readouterr().err
        (create_experiment,) = api.calls("POST", f"{API}/experiments")
        assert create_experiment["json"]["display_name"] == "apr"
        assert create_experiment["json"]["namespace"] == "team-a"
        (run,) = api.calls("POST", f"{API}/runs")
    body = run["json"]
    assert body["service_account"] == "aprflow-pipeline"
    assert body["experiment_id"] == create_experiment_id(api)
    parameters = body["runtime_config"]["parameters"]
    assert parameters["n_models"] == 4
    assert parameters["datasets"] == ["digits", "faces"]
    assert parameters["s3_secret"] == "my-s3"
    # A string parameter, so that the backend can take the GPU limit from it; the preflight
    # checked it as the number 2.
    assert parameters["gpus_per_trial"] == "2"
    # The CPU request left at its default is scaled with the GPUs before the run is sent.
    assert parameters["task_cpu"] == str(2 * PROFILE.train_cpu)
    ((pipeline_id, (version,)),) = api.versions.items()
    assert api.pipelines[pipeline_id]["namespace"] == "team-a"
    assert body["pipeline_version_reference"] == {
        "pipeline_id": pipeline_id,
        "pipeline_version_id": version["pipeline_version_id"],
    }
    (run_id,) = api.runs
    name = submit.version_name("aprflow-apr-study", STUDY)
    assert (
        f"run {run_id} of pipeline aprflow-apr-study version {name} started in experiment apr"
        in capsys.readouterr().out
    )


def test_runs_start_from_the_uploaded_version_not_an_inline_package(capsys):
    """Two submits: one upload, one version, two runs that both reference it (the UI links
    each run to the version); no run carries the pipeline spec itself. kfp.Client.run_pipeline
    sends ``pipeline_version_reference`` (kubeflow/pipelines sdk/python/kfp/client/client.py at
    kfp 2.17.0, ``_create_job_config``, line 973)."""
    with FakeKfpApi() as api:
        argv = ["submit", "apr-study", "--host", api.url, "--run-name", "smoke"]
        assert main(argv) == 0, capsys.readouterr().err
        assert main(argv) == 0, capsys.readouterr().err
        (create,) = api.calls("POST", f"{API}/pipelines/create")
        runs = api.calls("POST", f"{API}/runs")
    assert api.calls("POST", f"{API}/pipelines/upload_version") == []
    assert create["json"]["pipeline_version"]["display_name"] == submit.version_name(
        "aprflow-apr-study", STUDY
    )
    ((pipeline_id, (version,)),) = api.versions.items()
    assert len(runs) == 2
    for run in runs:
        body = run["json"]
        assert body["display_name"] == "smoke"
        assert body["pipeline_version_reference"] == {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": version["pipeline_version_id"],
        }
        assert "pipeline_spec" not in body


def test_submit_uploads_under_the_prefix_the_upload_job_uses(capsys):
    """A pipeline uploaded by `aprflow upload --prefix team-` is the one `submit --prefix
    team-` runs: found by name, not uploaded again."""
    with FakeKfpApi() as api:
        assert main(["upload", "--host", api.url, "--prefix", "team-", str(STUDY)]) == 0
        argv = ["submit", "apr-study", "--host", api.url, "--prefix", "team-"]
        assert main(argv) == 0, capsys.readouterr().err
        (run,) = api.calls("POST", f"{API}/runs")
    ((pipeline_id, (version,)),) = api.versions.items()
    assert api.pipelines[pipeline_id]["display_name"] == "team-apr-study"
    assert (
        run["json"]["pipeline_version_reference"]["pipeline_version_id"]
        == (version["pipeline_version_id"])
    )


# The sweep settings a cluster run cannot work with; each is refused by the study's preflight.
TOO_MANY_GPUS = load_profile().gpus_per_node + 1
BAD_SWEEPS = [
    (["gpus_per_trial=0"], "gpus_per_trial must be an integer >= 1, got 0"),
    (
        [f"gpus_per_trial={TOO_MANY_GPUS}", "engine=deepspeed"],
        f"gpus_per_trial={TOO_MANY_GPUS} is more than a node of the cluster profile has",
    ),
    (["gpus_per_trial=2", "engine=torch"], "gpus_per_trial=2 needs engine=deepspeed"),
    (["trials_per_gpu=0"], "config key 'trials_per_gpu' must be in [1, 64], got 0"),
    (["chunk_size=-1"], "chunk_size must be a whole number of trials >= 1, or 0"),
    (["device=tpu"], "device 'tpu': choose from auto, cuda, cpu"),
]


@pytest.mark.parametrize(("sets", "needle"), BAD_SWEEPS)
def test_submit_refuses_what_run_refuses_before_sending_anything(
    sets, needle, tmp_path, local_env, capsys
):
    overrides = [arg for pair in sets for arg in ("--set", pair)]
    with FakeKfpApi() as api:
        assert main(["submit", "apr-study", "--host", api.url, *overrides]) == 1
        submitted = capsys.readouterr().err.strip().splitlines()
        assert main(["submit", "apr-study", "--dry-run", *overrides]) == 1
        dry_run = capsys.readouterr()
    assert api.requests == []  # not even the health probe of kfp.Client
    assert len(submitted) == 1 and submitted[0].startswith("error: ") and needle in submitted[0]
    assert dry_run.err.strip().splitlines() == submitted and dry_run.out == ""
    runs = tmp_path / "runs"
    assert main(["run", "apr-study", "--runs-dir", str(runs), "--dry-run", *overrides]) == 1
    assert capsys.readouterr().err.strip().splitlines() == submitted
    assert not runs.exists()


def create_experiment_id(api: FakeKfpApi) -> str:
    (experiment,) = api.experiments.values()
    return experiment["experiment_id"]


def test_kfp_cli_run_create_with_json_list_parameters(tmp_path):
    """The cluster install page's `kfp run create -e EXP -f apr_study.yaml key=value`."""
    with FakeKfpApi() as api:
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "kfp"),
                "--endpoint",
                api.url,
                "run",
                "create",
                "-e",
                "apr",
                "-f",
                str(STUDY),
                "n_models=4",
                'datasets=["digits", "faces"]',
                "train_seeds=[0, 1]",
                "s3_secret=my-s3",
            ],
            capture_output=True,
            text=True,
            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
            timeout=120,
        )
        (run,) = api.calls("POST", f"{API}/runs")
    parameters = run["json"]["runtime_config"]["parameters"]
    assert parameters["datasets"] == ["digits", "faces"], result.stderr
    assert parameters["train_seeds"] == [0, 1]
    assert parameters["n_models"] == 4
    assert parameters["s3_secret"] == "my-s3"


def test_upload_returns_the_ids_the_api_gave(tmp_path):
    with FakeKfpApi() as api:
        client = submit.connect(api.url, None, None)
        name = submit.pipeline_name_of(STUDY)
        first = submit.upload(client, STUDY, name)
        second = submit.upload(client, STUDY, name)
        ((pipeline_id, versions),) = api.versions.items()
    assert first.created and not second.created
    assert first.pipeline_id == second.pipeline_id == pipeline_id
    assert first.version_id == second.version_id == versions[0]["pipeline_version_id"]
    assert first.version_name == versions[0]["display_name"] == submit.version_name(name, STUDY)
