"""apr-predict without training: the bounds, the population read from a store, the predictors,
the choice of k, the agreement statistics, the report and the MLflow parent it logs to.

The population is written as a study's records (trial definitions and results) with made-up
errors; nothing is trained, so the whole file runs in seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.common.limits import LIMITS
from components.common.storage import open_store
from components.predict.settings import PredictError, PredictSettings, check_k

SOURCES = ("digits", "faces")
TARGET = "shapes"


def _settings(**changes) -> PredictSettings:
    values = {"study_name": "apr-predict", "population": "apr-demo", "target": TARGET, "k": 4}
    return PredictSettings(**(values | changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"k": 2}, "train at least 3 architectures"),
        ({"k": 10_001}, "k must be"),
        ({"k": True}, "k must be a whole number"),
        ({"random_draws": 0}, r"random_draws must be in \[1, 100000\]"),
        ({"random_draws": 100_001}, "random_draws"),
        ({"n_bootstrap": int(LIMITS["bootstrap"].high) + 1}, "n_bootstrap"),
        ({"scores": ["knn", "finetune"]}, "unknown or no score"),
        ({"scores": []}, "unknown or no score"),
        ({"source_datasets": ["digits", TARGET]}, "also a source dataset"),
        ({"population": " "}, "population is required"),
        ({"population": "../studies"}, "population '../studies' is not a valid name"),
        ({"target": ""}, "target is required"),
        ({"device": "tpu"}, "device 'tpu'"),
        ({"feature_chunk_size": -1}, "feature_chunk_size must be >= 0"),
        ({"study_name": "../x"}, "study_name"),
        ({"target_resolution": 4}, "target_resolution"),
        ({"source_datasets": [f"d{i}" for i in range(101)]}, "source_datasets"),
    ],
)
def test_every_size_and_name_is_bounded_with_one_clear_line(changes, message):
    with pytest.raises(PredictError, match=message) as caught:
        _settings(**changes)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)


def test_k_is_bounded_by_the_population():
    check_k(8, 8)
    with pytest.raises(PredictError, match="k=9 exceeds the 8 architectures"):
        check_k(9, 8)
    with pytest.raises(PredictError, match="needs at least 3"):
        check_k(3, 2)


# --- a population in a store ------------------------------------------------------------------


def _ref(name: str, classes: int = 10):
    from components.data.descriptor import DatasetRef

    return DatasetRef(
        name=name,
        manifest_key=f"datasets/{name}/manifest.json",
        content_hash=f"hash-{name}",
        num_classes=classes,
        resolution=16,
        n_train=720,
        n_test=300,
    )


def _specs(n: int) -> list[dict]:
    from components.sample.samplers import sample_specs

    return [s.to_dict() for s in sample_specs("anynetx_a", n, (150e6, 250e6), seed=0).specs]


def _write_study(store, name: str, specs: list[dict], errors: dict, started_at: float) -> str:
    """A study's records with made-up results: ``errors[dataset][i]`` for spec i (None: the
    trial failed)."""
    from components.train.plan import plan_trials, save_plan, study_id
    from components.train.recipes import resolve_recipe
    from components.train.run import study_key
    from components.train.trial import result_key

    recipe = resolve_recipe("apr_tiny", {"epochs": 3})
    trials = plan_trials(specs, [_ref(d) for d in errors], recipe, [0])
    study = study_id(name, trials)
    save_plan(store, study, trials)
    store.put_json(study_key(study), {"study_id": study, "name": name, "started_at": started_at})
    for trial in trials:
        error = errors[trial.dataset.name][specs.index(trial.spec)]
        result = {"trial_id": trial.trial_id, "status": "failed", "reason": "test"}
        if error is not None:
            result = {"trial_id": trial.trial_id, "status": "ok", "top1_error": error}
        store.put_json(result_key(trial.trial_id), result | {"wall_time_s": 10.0})
    return study


@pytest.fixture
def population_store(tmp_path):
    store = open_store(str(tmp_path / "store"))
    specs = _specs(5)
    errors = {
        "digits": [10.0, 20.0, 30.0, 40.0, None],
        "faces": [15.0, 12.0, 35.0, 30.0, 50.0],
        TARGET: [60.0, 50.0, 70.0, 80.0, 90.0],
    }
    old = _write_study(store, "apr-demo", specs[:3], {"digits": errors["digits"][:3]}, 1.0)
    study = _write_study(store, "apr-demo", specs, errors, 2.0)
    return store, study, old, specs


def test_the_population_is_a_study_by_id_or_name_or_every_finished_trial(population_store):
    from components.predict.population import load_population, resolve_study

    store, study, old, _ = population_store
    assert resolve_study(store, study) == study
    assert resolve_study(store, old) == old
    assert resolve_study(store, "apr-demo") == study  # the latest of that name
    models, trials, left_out = load_population(store, "apr-demo", SOURCES, TARGET)
    # 5 architectures on two sources, one failed on digits; the target's trials left out.
    assert len(models) == 9 and len(trials) == 9
    assert left_out == {"ended failed": 1, f"trained on the target {TARGET}": 5}
    assert {m.source for m in models} == set(SOURCES)
    everything, _, _ = load_population(store, "trials:all", (), TARGET)
    assert len(everything) == 9  # the old study's trials are the same trials
    only_faces, _, left = load_population(store, study, ("faces",), TARGET)
    assert {m.source for m in only_faces} == {"faces"}
    assert left["trained on digits, not a source dataset"] == 4


def test_a_population_that_cannot_be_read_is_one_line(population_store):
    from components.predict.population import load_population

    store, *_ = population_store
    with pytest.raises(PredictError, match=r"'nope': no such study.*names there: apr-demo"):
        load_population(store, "nope", (), TARGET)
    with pytest.raises(PredictError, match="no finished trial on source dataset.*cifar"):
        load_population(store, "apr-demo", ("cifar",), TARGET)


def test_target_trials_have_the_ids_a_study_of_the_same_recipe_gives_them(population_store):
    """So a target trial trained before (by a study on the target) is reused, not retrained."""
    from components.predict.population import load_population, training_setup
    from components.sample.space import AnyNetSpec
    from components.train.plan import load_trial, load_trial_ids

    store, study, _, specs = population_store
    models, trials, _ = load_population(store, study, SOURCES, TARGET)
    setup = training_setup(models, trials)
    assert setup.seeds == (0,) and setup.resolution == 16 and setup.shared_by == 9
    planned = {
        load_trial(store, t).trial_id
        for t in load_trial_ids(store, study)
        if load_trial(store, t).dataset.name == TARGET
    }
    arch = [AnyNetSpec.from_dict(s).spec_hash() for s in specs]
    made = setup.target_trials(arch, _ref(TARGET))
    assert {t.trial_id for t in made} == planned
    with pytest.raises(PredictError, match="set gpus_per_trial=1"):
        setup.check_gpus(2)


# --- predictors, the choice of k, agreement ---------------------------------------------------


def _models(errors: dict[str, list[float]]):
    from components.predict.population import PopulationModel

    return [
        PopulationModel(f"{source}{i}", f"arch{i}", source, error, 5.0, 0)
        for source, values in errors.items()
        for i, error in enumerate(values)
    ]


def _rows(values: dict[str, float], metric: str = "logme", regime: str = "logme"):
    return [
        {
            "model": f"trial:{trial}",
            "dataset": TARGET,
            "regime": regime,
            "metric": metric,
            "value": value,
            "seconds": 2.0,
            "status": "ok",
            "status_reason": "",
        }
        for trial, value in values.items()
    ]


def test_predictors_rank_within_each_source_then_pool():
    from components.predict.predictors import predict, random_ranking, source_baseline

    models = _models({"digits": [10, 20, 30, 40], "faces": [40, 30, 20, 10]})
    # LogME on the target: from digits models an increasing scale, from faces a tiny one.
    rows = _rows({"digits0": 1.0, "digits1": 2.0, "digits2": 3.0, "digits3": 4.0})
    rows += _rows({"faces0": 0.001, "faces1": 0.002, "faces2": 0.003, "faces3": 0.004})
    out = predict(models, rows, ["logme/logme", "leep/leep"], seed=0)
    assert set(out) == {"logme/logme", "source:digits", "source:faces", "source", "random"}
    # Both sources rank arch3 best: its normalised rank is 1 in each, whatever the scales.
    assert out["logme/logme"] == {"arch0": 0.25, "arch1": 0.5, "arch2": 0.75, "arch3": 1.0}
    assert out["source:digits"]["arch0"] == -10
    # The two sources disagree exactly: the pooled source ranking ties every architecture.
    assert len(set(out["source"].values())) == 1
    assert source_baseline(out) == "source"
    assert out["random"] == random_ranking([f"arch{i}" for i in range(4)], 0)
    assert sorted(out["random"].values()) == [1, 2, 3, 4]
    assert out["random"] != random_ranking([f"arch{i}" for i in range(4)], 1)


def test_the_choice_of_k_is_one_per_stratum_of_the_predicted_order_and_seeded():
    from components.predict.predictors import stratified_choice

    goodness = {f"a{i:02d}": float(-i) for i in range(10)}  # a00 best ... a09 worst
    chosen = stratified_choice(goodness, 3, seed=0)
    strata = [{"a00", "a01", "a02", "a03"}, {"a04", "a05", "a06"}, {"a07", "a08", "a09"}]
    assert [c in s for c, s in zip(chosen, strata, strict=True)] == [True, True, True]
    assert stratified_choice(goodness, 3, seed=0) == chosen
    draws = {tuple(stratified_choice(goodness, 3, seed=s)) for s in range(20)}
    assert len(draws) > 1
    assert stratified_choice(goodness, 10, seed=5) == sorted(goodness)
    with pytest.raises(ValueError, match="between 1 and the 10"):
        stratified_choice(goodness, 11, seed=0)


def test_agreement_tau_regret_and_the_random_null():
    from components.predict.agreement import evaluate, random_null, regret, versus_source

    trained = {f"a{i}": 10.0 + 5 * i for i in range(8)}  # a0 best
    right = {a: -e for a, e in trained.items()}
    reversed_ = {a: e for a, e in trained.items()}
    good = evaluate("right", right, trained, 200, 0)
    assert good["kendall"]["value"] == pytest.approx(1.0)
    assert good["kendall"]["ci_low"] == pytest.approx(1.0)  # every resample agrees
    assert good["n_models"] == 8 and good["regret"]["value"] == 0.0
    bad = evaluate("reversed", reversed_, trained, 200, 0)
    assert bad["kendall"]["value"] == pytest.approx(-1.0)
    assert bad["regret"] == {
        "pick": "a7",
        "pick_error": 45.0,
        "best": "a0",
        "best_error": 10.0,
        "value": 35.0,
    }
    assert regret({}, trained) is None
    null = random_null(trained, 2000, 0, {a: float(i) for i, a in enumerate(trained)})
    assert null["kendall"]["value"] == 0.0
    assert abs(null["kendall"]["mean_of_draws"]) < 0.05
    assert -0.7 < null["kendall"]["ci_low"] < -0.3 and 0.3 < null["kendall"]["ci_high"] < 0.7
    assert null["regret"]["value"] == pytest.approx(np.mean(list(trained.values())) - 10.0)
    same = versus_source(right, right, trained, 200, 0, ("a", "b"))
    assert same["value"] == 0.0 and same["ci_low"] == same["ci_high"] == 0.0
    better = versus_source(right, reversed_, trained, 200, 0, ("a", "b"))
    assert better["value"] == pytest.approx(2.0) and better["ci_low"] > 0


# --- the report -------------------------------------------------------------------------------


def _summary() -> dict:
    """A summary as steps.analyze builds it, from made-up predictions of 6 architectures."""
    from components.predict.steps import costs, evaluate_all

    trained = {f"arch{i}": 50.0 + 4 * i for i in range(6)}
    models = _models({"digits": [10, 12, 11, 20, 30, 25], "faces": [5, 9, 7, 6, 12, 11]})
    record = {
        "settings": _settings(k=6, n_bootstrap=200, random_draws=200).to_dict(),
        "setup": {"specs": {f"arch{i}": {} for i in range(6)}},
        "population": [m.to_dict() for m in models],
    }
    from components.predict.predictors import consensus, predict

    rows = _rows({f"digits{i}": -float(i) + 0.1 * (i == 2) for i in range(6)})
    rows += _rows({f"faces{i}": -float(i) for i in range(6)})
    keys = ["logme/logme"]
    predictions = predict(models, rows, keys, 0)
    predicted = {
        "predictions": predictions,
        "consensus": consensus(predictions, keys),
        "chosen": sorted(trained),
        "score_seconds": {"logme/logme": 24.0},
        "failed_scores": {"leep/leep": {"count": 2, "reason": "LEEP needs the source classifier"}},
    }
    return {
        "study_id": "apr-predict-0123456789",
        "target": TARGET,
        "k": 6,
        "n_trained": 6,
        "settings": record["settings"],
        "population": {
            "models": 12,
            "architectures": 6,
            "sources": list(SOURCES),
            "left_out": {"trained on the target shapes": 6},
            "setup_shared_by": 12,
            "recipe": "apr_tiny",
            "epochs": 3,
            "seeds": [0],
            "resolution": 16,
        },
        "chosen": predicted["chosen"],
        "trained": trained,
        "failed_training": {},
        "failed_scores": predicted["failed_scores"],
        "devices": ["cpu"],
        "predictors": evaluate_all(record, predicted, trained),
        "costs": costs(record, predicted, {a: 20.0 for a in trained}),
        "predictions": predictions,
        "consensus": predicted["consensus"],
    }


def test_the_report_opens_with_the_answer_and_states_n(tmp_path):
    from components.predict.report import write_report

    summary = _summary()
    for result in summary["predictors"].values():  # every predictor and baseline has a tau
        for stat in ("kendall", "weighted_tau"):
            assert np.isfinite(result[stat]["value"]), result
            assert result[stat]["ci_low"] <= result[stat]["ci_high"]
    html = write_report(tmp_path / "report", summary)
    markdown = (tmp_path / "report" / "report.md").read_text()
    answer = markdown.split("\n\n")[1]
    assert answer.startswith("**On shapes, LogME predicts the ranking with τ = 1.00")
    assert "(n = 6), better than the source ranking (τ = " in answer
    assert "n = 6: every τ compares" in markdown
    assert "Yes, on point estimates: LogME τ = 1.00, Δτ = " in markdown
    assert "k = 6: every architecture of the population was trained" in markdown
    assert "LEEP: no value for 2 models (LEEP needs the source classifier)." in markdown
    assert "Tuggener, Schmidhuber, Stadelmann 2021" in markdown
    # Cost: training the population on the target is 6 x 20 s; LogME's 24 s is 20 % of it.
    assert "takes 120 s (measured)" in markdown and "20.0% of training" in markdown
    assert html.count('src="data:image/png;base64,') == 1
    assert (tmp_path / "report" / "figures" / "predicted_vs_trained.png").stat().st_size > 5000
    saved = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert saved["predictors"]["random"]["kendall"]["value"] == 0.0
    assert "On shapes, LogME predicts" in html.split('<p class="answer">')[1]


def test_without_a_usable_score_the_answer_says_so():
    from components.predict.report import closing_note, headline

    summary = _summary()
    del summary["predictors"]["logme/logme"]
    assert headline(summary).startswith("On shapes, no cheap score could rank")
    assert closing_note(summary).startswith("No comparison with the source ranking")


# --- MLflow -----------------------------------------------------------------------------------


def test_the_study_run_is_never_an_older_nested_run_with_the_study_tag(tmp_path):
    """A reused trial's run starts when the trial first trained, before its new study's run,
    and carries the study's tag: a re-run must still find the study's own parent run."""
    from mlflow.tracking import MlflowClient

    from components.common import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = tracking.start_study_run(uri, "apr-predict", "apr-predict-1", {}, tags={})
    log = tracking.TrialLog(
        parent_run_id=parent, trial_id="t0", run_name="reused", started_at=1.0, ended_at=2.0
    )
    child = tracking.log_trial_run(uri, log)
    client = MlflowClient(uri)
    assert client.get_run(child).data.tags[tracking.STUDY_TAG] == "apr-predict-1"
    assert client.get_run(child).info.start_time < client.get_run(parent).info.start_time
    assert tracking.start_study_run(uri, "apr-predict", "apr-predict-1", {}) == parent


# --- the command line -------------------------------------------------------------------------


def test_run_checks_the_population_before_any_task(tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.setenv("APRFLOW_STORE_URI", str(tmp_path / "store"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = ["--config", "pipelines/configs/apr_predict.toy.yaml"]
    code = main(["run", "apr-predict", *config, "--runs-dir", str(tmp_path / "runs")])
    assert code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: population 'apr-demo': no such study id or name in store")
    assert len(error.splitlines()) == 1
    assert main(["run", "apr-predict", *config, "--set", "k=2", "--dry-run"]) == 1
    assert "k=2: train at least 3" in capsys.readouterr().err
    assert main(["run", "apr-predict", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "# population: (required: set it)" in printed and "k: 10" in printed


def test_the_parameter_files_load_and_the_paper_one_asks_for_its_population(capsys):
    from pipelines.cli import main

    paper = ["--config", "pipelines/configs/apr_predict.paper.yaml"]
    assert main(["submit", "apr-predict", *paper, "--dry-run"]) == 1
    assert "population is required" in capsys.readouterr().err
    mine = ["--set", "population=apr-paper-0123456789", "--set", "target=mine"]
    assert main(["submit", "apr-predict", *paper, *mine, "--dry-run", "--json"]) == 0
    arguments = json.loads(capsys.readouterr().out)
    assert arguments["k"] == 50 and arguments["scores"] == ["knn", "logme", "leep"]
    toy = ["--config", "pipelines/configs/apr_predict.toy.yaml", "--print-config", "--json"]
    assert main(["run", "apr-predict", *toy]) == 0
    values = {k: v["value"] for k, v in json.loads(capsys.readouterr().out).items()}
    assert values["k"] == 8 and values["source_datasets"] == ["digits", "faces"]
