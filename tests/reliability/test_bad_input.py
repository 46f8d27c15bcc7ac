"""Bad input sweep: every case ends in one ``error: ...`` line, exit status 1 (2 for a usage
error), no traceback, and nothing under the store's final keys or the output paths.

Each case runs ``pipelines.cli.main`` (the ``aprflow`` entry point) in this process with a fresh
store and MLflow database (``local_env``); an exception that escapes it counts as a traceback,
exit 0 as accepted. Figures: ``pytest tests/reliability/test_bad_input.py -s`` prints
``bad inputs: N tried, C clear, T traceback, A accepted``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipelines.cli import main

FIXTURES = Path(__file__).parents[1] / "analysis" / "fixtures"
TALLY = {"clear": 0, "traceback": 0, "accepted": 0}
# Usage errors found after parsing (exit status 2, like argparse's own ``PROG: error: ...``):
# an unknown --set key, a --set that is not key=value or whose value is not YAML.
USAGE_ERRORS = {"key-unknown", "set-not-key-value", "set-bad-yaml", "study_name-control"}


def _spec(**changes) -> dict:
    from components.sample.samplers import sample_specs

    spec = sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict()
    return spec | changes


def _files(tmp: Path) -> dict[str, Path]:
    """Input files that the cases name: broken configs, specs and tables."""
    files = {
        "binary": b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 10,
        "list.yaml": b"- n_models: 2\n",
        "broken.yaml": b"n_models: [1,\n",
        "depth.json": json.dumps(_spec(depths=[-1, 1, 1, 1])).encode(),
        "notspec.json": b"[1, 2]",
        "specs.jsonl": json.dumps({"spec": _spec()}).encode() + b"\n",
        "empty.csv": b"",
        "columns.csv": b"a,b\n1,2\n",
        "fraction.csv": b"model,dataset,top1_error\nm1,d1,0.5\nm2,d1,0.4\n",
        "afile": b"x",
    }
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    (tmp / "adir").mkdir()
    return {name: tmp / name for name in [*files, "adir"]}


def _run(*sets: str, dry: bool = True) -> list[str]:
    return ["run", "apr-study", *(f"--set={s}" for s in sets), *(["--dry-run"] if dry else [])]


# (case id, argv builder taking the files, extra environment)
CASES: list[tuple[str, object, dict[str, str]]] = [
    # --- aprflow run: config values (items 5, 6, 7, 10, 11) ---
    ("n_models-zero", lambda f: _run("n_models=0"), {}),
    ("n_models-negative", lambda f: _run("n_models=-3"), {}),
    ("n_models-1e9", lambda f: _run("n_models=1000000000"), {}),
    ("n_models-text", lambda f: _run("n_models=abc"), {}),
    ("n_models-list", lambda f: _run("n_models=[1,2]"), {}),
    ("n_models-bool", lambda f: _run("n_models=true"), {}),
    ("epochs-negative", lambda f: _run("epochs=-1"), {}),
    ("epochs-1e6", lambda f: _run("epochs=1000000"), {}),
    ("epochs-float", lambda f: _run("epochs=1.5"), {}),
    ("resolution-4", lambda f: _run("resolution=4"), {}),
    ("resolution-negative", lambda f: _run("resolution=-16"), {}),
    ("resolution-100000", lambda f: _run("resolution=100000"), {}),
    ("datasets-duplicate", lambda f: _run("datasets=[digits,digits]"), {}),
    ("datasets-empty", lambda f: _run("datasets=[]"), {}),
    ("datasets-unknown", lambda f: _run("datasets=[nosuch]"), {}),
    ("datasets-nested", lambda f: _run("datasets=[[digits]]"), {}),
    ("datasets-number", lambda f: _run("datasets=[1]"), {}),
    ("train_seeds-text", lambda f: _run("train_seeds=[a]"), {}),
    ("train_seeds-empty", lambda f: _run("train_seeds=[]"), {}),
    ("train_seeds-negative", lambda f: _run("train_seeds=[-1]"), {}),
    ("train_seeds-float", lambda f: _run("train_seeds=[1.5]"), {}),
    ("seed-negative", lambda f: _run("seed=-1"), {}),
    ("seed-text", lambda f: _run("seed=abc"), {}),
    ("study_name-traversal", lambda f: _run("study_name=../../etc"), {}),
    ("study_name-empty", lambda f: _run("study_name="), {}),
    ("study_name-slash", lambda f: _run("study_name=a/b"), {}),
    ("study_name-absolute", lambda f: _run("study_name=/etc"), {}),
    ("study_name-control", lambda f: _run("study_name=a\x01b"), {}),
    (
        "study_name-newline",
        lambda f: ["run", "apr-study", "--set", "study_name=a\nb", "--dry-run"],
        {},
    ),
    ("study_name-long", lambda f: _run("study_name=" + "x" * 300), {}),
    ("flops-zero", lambda f: _run("flops_min=0"), {}),
    ("flops-inverted", lambda f: _run("flops_min=5e8", "flops_max=1e8"), {}),
    ("flops-unreachable", lambda f: _run("flops_min=1e3", "flops_max=2e3"), {}),
    ("space-unknown", lambda f: _run("space=nosuch"), {}),
    ("recipe-unknown", lambda f: _run("recipe=nosuch"), {}),
    ("engine-unknown", lambda f: _run("engine=nosuch"), {}),
    ("reference-not-a-dataset", lambda f: _run("reference=faces", "datasets=[digits]"), {}),
    ("key-unknown", lambda f: _run("foo=1"), {}),
    ("set-not-key-value", lambda f: ["run", "apr-study", "--set", "nokeyvalue", "--dry-run"], {}),
    ("set-bad-yaml", lambda f: _run("datasets=[a,"), {}),
    ("store_uri-scheme", lambda f: _run("store_uri=gs://bucket/x"), {}),
    ("store_uri-no-bucket", lambda f: _run("store_uri=s3:///x"), {}),
    ("store_uri-credentials", lambda f: _run("store_uri=s3://AKIA:secret@bucket/x"), {}),
    ("store_uri-a-file", lambda f: _run(f"store_uri={f['afile']}/store"), {}),
    ("tracking_uri-credentials", lambda f: _run("tracking_uri=http://u:pw@127.0.0.1:9"), {}),
    ("tracking_uri-unreachable", lambda f: _run("tracking_uri=http://127.0.0.1:9"), {}),
    ("tracking_uri-scheme", lambda f: _run("tracking_uri=ftp://host/x"), {}),
    (
        "s3-endpoint-invalid",
        lambda f: _run("store_uri=s3://bucket/x"),
        {"APRFLOW_S3_ENDPOINT_URL": "not a url"},
    ),
    (
        "s3-attempts-invalid",
        lambda f: _run("store_uri=s3://bucket/x"),
        {"APRFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9", "APRFLOW_S3_MAX_ATTEMPTS": "x"},
    ),
    (
        "s3-endpoint-unreachable",
        lambda f: _run("store_uri=s3://bucket/x"),
        {"APRFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9", "APRFLOW_S3_MAX_ATTEMPTS": "1"},
    ),
    # --- aprflow run: files and folders ---
    ("config-missing", lambda f: ["run", "apr-study", "--config", "/nonexistent.yaml"], {}),
    ("config-binary", lambda f: ["run", "apr-study", "--config", str(f["binary"])], {}),
    ("config-directory", lambda f: ["run", "apr-study", "--config", str(f["adir"])], {}),
    ("config-list", lambda f: ["run", "apr-study", "--config", str(f["list.yaml"])], {}),
    ("config-broken-yaml", lambda f: ["run", "apr-study", "--config", str(f["broken.yaml"])], {}),
    ("runs-dir-a-file", lambda f: [*_run(dry=False), "--runs-dir", str(f["afile"])], {}),
    ("runs-dir-unreachable", lambda f: [*_run(dry=False), "--runs-dir", "/proc/aprflow"], {}),
    ("pipeline-unknown", lambda f: ["run", "nosuch"], {}),
    ("command-unknown", lambda f: ["nosuch"], {}),
    # --- aprflow compile ---
    ("compile-out-a-file", lambda f: ["compile", "--out-dir", str(f["afile"])], {}),
    ("compile-out-unreachable", lambda f: ["compile", "--out-dir", "/proc/aprflow"], {}),
    # --- aprflow sample ---
    ("sample-num-classes-0", lambda f: _sample(f, "--num-classes", "0"), {}),
    ("sample-out-a-directory", lambda f: _sample(f, out=f["adir"]), {}),
    ("sample-out-unreachable", lambda f: _sample(f, out="/proc/aprflow/x.jsonl"), {}),
    ("sample-n-0", lambda f: _sample(f, n="0"), {}),
    ("sample-n-1e9", lambda f: _sample(f, n="1000000000"), {}),
    ("sample-flops-unreachable", lambda f: _sample(f, "--flops", "1e3:2e3"), {}),
    ("sample-flops-text", lambda f: _sample(f, "--flops", "abc"), {}),
    ("sample-space-unknown", lambda f: ["sample", "--space", "x", "--n", "1", "--out", "o"], {}),
    ("sample-max-tries-0", lambda f: _sample(f, "--max-tries", "0"), {}),
    ("sample-max-tries-negative", lambda f: _sample(f, "--max-tries", "-5"), {}),
    (
        "sample-max-tries-huge-no-band",
        lambda f: _sample(f, "--flops", "1e3:2e3", "--max-tries", "10000000000"),
        {},
    ),
    # --- aprflow data ---
    ("data-resolution-100000", lambda f: ["data", "digits", "--resolution", "100000"], {}),
    ("data-resolution-4", lambda f: ["data", "digits", "--resolution", "4"], {}),
    ("data-resolution-negative", lambda f: ["data", "digits", "--resolution", "-16"], {}),
    ("data-unknown", lambda f: ["data", "nosuch"], {}),
    ("data-seed-negative", lambda f: ["data", "digits", "--seed", "-1"], {}),
    # --- aprflow train ---
    ("train-spec-missing", lambda f: _train("/nonexistent.json"), {}),
    ("train-spec-depth-negative", lambda f: _train(f["depth.json"]), {}),
    ("train-spec-binary", lambda f: _train(f["binary"]), {}),
    ("train-spec-not-a-spec", lambda f: _train(f["notspec.json"]), {}),
    ("train-spec-index", lambda f: _train(f["specs.jsonl"], "--index", "5"), {}),
    (
        "train-dataset-unknown",
        lambda f: ["train", "--spec", str(f["specs.jsonl"]), "--dataset", "nosuch"],
        {},
    ),
    ("train-epochs-negative", lambda f: _train(f["specs.jsonl"], "--epochs", "-1"), {}),
    ("train-epochs-1e6", lambda f: _train(f["specs.jsonl"], "--epochs", "1000000"), {}),
    ("train-resolution-4", lambda f: _train(f["specs.jsonl"], "--resolution", "4"), {}),
    ("train-seed-negative", lambda f: _train(f["specs.jsonl"], "--seed", "-1"), {}),
    # --- aprflow analyze: results tables ---
    ("analyze-missing", lambda f: ["analyze", "/nonexistent.csv", "--out-dir", str(f["adir"])], {}),
    ("analyze-empty", lambda f: ["analyze", str(f["empty.csv"]), "--out-dir", "o"], {}),
    ("analyze-binary", lambda f: ["analyze", str(f["binary"]), "--out-dir", "o"], {}),
    ("analyze-columns", lambda f: ["analyze", str(f["columns.csv"]), "--out-dir", "o"], {}),
    ("analyze-fractions", lambda f: ["analyze", str(f["fraction.csv"]), "--out-dir", "o"], {}),
    ("analyze-out-a-file", lambda f: _analyze("--out-dir", str(f["afile"])), {}),
    ("analyze-out-unreachable", lambda f: _analyze("--out-dir", "/proc/aprflow"), {}),
    ("analyze-reference-unknown", lambda f: _analyze("--out-dir", "o", "--reference", "x"), {}),
]


def _sample(files, *extra: str, n: str = "2", out: Path | str | None = None) -> list[str]:
    out = out or files["adir"].parent / "specs-out.jsonl"
    flops = [] if "--flops" in extra else ["--flops", "150e6:250e6"]
    return ["sample", "--space", "anynetx_a", "--n", n, *flops, "--out", str(out), *extra]


def _train(spec, *extra: str) -> list[str]:
    return ["train", "--spec", str(spec), "--dataset", "digits", "--resolution", "8", *extra]


def _analyze(*extra: str) -> list[str]:
    return ["analyze", str(FIXTURES / "timm_top1.csv"), "--bootstrap", "0", *extra]


def _written(root: Path, before: set[Path]) -> list[str]:
    """Files created under ``root`` since ``before`` (the cases' inputs)."""
    return (
        sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        if False
        else [
            str(p.relative_to(root))
            for p in sorted(root.rglob("*"))
            if p.is_file() and p not in before
        ]
    )


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case, local_env, monkeypatch, capsys):
    name, argv, env = case
    monkeypatch.chdir(local_env)
    monkeypatch.setenv("APRFLOW_S3_MAX_ATTEMPTS", "1")  # an unreachable endpoint fails at once
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    inputs = local_env / "inputs"
    inputs.mkdir()
    files = _files(inputs)
    before = set(local_env.rglob("*"))
    tic = time.monotonic()
    try:
        code = main(argv(files))
    except Exception:  # noqa: BLE001 - an escaped exception is what this test counts
        TALLY["traceback"] += 1
        raise
    seconds = time.monotonic() - tic
    err = capsys.readouterr().err.strip().splitlines()
    if code == 0:
        TALLY["accepted"] += 1
    elif (
        code not in (1, 2)
        or not err
        or "internal error" in err[-1]
        or "Traceback" in "\n".join(err)
    ):
        TALLY["traceback"] += 1
    else:
        TALLY["clear"] += 1
    usage = name in USAGE_ERRORS or (bool(err) and ": error: " in err[-1])  # argparse's line
    assert code == (2 if usage else 1), f"{name}: exit {code}, stderr {err}"
    assert "Traceback" not in "\n".join(err) and "internal error" not in err[-1], err
    assert err[-1].startswith("error: ") or ": error: " in err[-1], err
    assert seconds < 30, f"{name} took {seconds:.0f} s: absurd values must be refused up front"
    assert _written(local_env, before) == [], f"{name} wrote files"


def test_debug_shows_the_traceback(local_env, monkeypatch):
    monkeypatch.chdir(local_env)
    with pytest.raises(Exception, match="n_models"):
        main(["--debug", *_run("n_models=0")])


def test_tally():
    """Prints the sweep's figures (run after the cases: pytest keeps file order)."""
    tried = sum(TALLY.values())
    print(
        f"\nbad inputs: {tried} tried, {TALLY['clear']} clear, {TALLY['traceback']} traceback, "
        f"{TALLY['accepted']} accepted"
    )
    assert TALLY["clear"] == tried
