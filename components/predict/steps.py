"""The ``apr-predict`` pipeline's steps: plan, select (after the scores), analyze (after the
training); each one function the KFP components call.

Store layout: the cheap scores are a transfer study of their own
(``studies/<study_name>-scores-<hash>/``: its plan and one results table per chunk, reused by
any prediction over the same population, target and scores; features are cached per model and
dataset version in ``transfer/features/``). The prediction is ``studies/<study_id>/``:
``predict_plan.json`` (settings, population, training setup, target), ``predictions.json``
(every predictor's ranking, the consensus, the chosen architectures), the training study's own
files (``trials.json``, ``chunks.json``, ``study.json``: the target trials are planned as a
study's, so ``components.train``'s chunk tasks train them, and a trial already in the store is
reused), and the report (``report.html``, ``report.md``, ``summary.json``, ``figures/``).

MLflow: one parent run per prediction (experiment ``study_name``, tag ``aprflow.kind =
predict``) holding the settings as ``config.<key>`` params, the summary metrics and the report;
nested under it, one run per (model, target, score) from the score tasks, one per target trial
from the training tasks, and one per predictor (tag ``aprflow.predictor``) with its taus,
intervals, regret and cost.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from components.common import tracking
from components.common.hashing import content_hash
from components.common.progress import report
from components.common.storage import open_store
from components.predict.population import (
    PopulationModel,
    TrainingSetup,
    load_population,
    training_setup,
)
from components.predict.settings import PredictError, PredictSettings, check_k
from components.transfer.features import TRIAL_PREFIX


def plan_key(study: str) -> str:
    return f"studies/{study}/predict_plan.json"


def predictions_key(study: str) -> str:
    return f"studies/{study}/predictions.json"


def plan(
    settings: PredictSettings,
    store_uri: str | None,
    tracking_uri: str | None,
    kfp_run_id: str = "",
    config: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Reads the population, plans its cheap scores on the target (a transfer study) and opens
    the prediction's MLflow parent run.

    Args:
        config: the pipeline's arguments, logged to the parent run as ``config.<key>``.

    Returns:
        ``{"study_id", "scores_study_id", "parent_run_id"}``.

    Raises:
        PredictError: for an unknown population, too few architectures for ``k``.
    """
    from components.train.run import study_key
    from components.transfer.steps import plan as plan_scores
    from components.transfer.steps import plan_key as scores_plan_key
    from components.transfer.study import StudySettings

    store = open_store(store_uri)
    store.check()
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_tracking(uri, tracking.wait_budget())
    models, trials, left_out = load_population(
        store, settings.population, settings.source_datasets, settings.target
    )
    setup = training_setup(models, trials)
    check_k(settings.k, len(setup.specs))
    resolution = settings.target_resolution or setup.resolution
    model_list = "model\n" + "".join(f"{TRIAL_PREFIX}{m.trial_id}\n" for m in models)
    # The cheap regimes use no seed: the scores study keeps the default one, so predictions
    # with other seeds or budgets reuse its tables.
    scores = plan_scores(
        f"{settings.study_name}-scores",
        model_list,
        [settings.target],
        resolution,
        StudySettings(regimes=settings.scores, device=settings.device),
        store_uri,
        settings.feature_chunk_size,
        None,  # no parent of its own: its runs nest under the prediction's
        kfp_run_id,
    )
    scores_id = scores["study_id"]
    target = store.get_json(scores_plan_key(scores_id))["refs"][0]
    identity = {"settings": settings.to_dict(), "scores": scores_id, "setup": setup.to_dict()}
    study = f"{settings.study_name}-{content_hash(identity, length=10)}"
    sources = sorted({m.source for m in models})
    record = {
        "study_id": study,
        "settings": settings.to_dict(),
        "scores_study_id": scores_id,
        "target": target,
        "resolution": resolution,
        "population": [m.to_dict() for m in models],
        "left_out": left_out,
        "setup": setup.to_dict(),
    }
    store.put_json(plan_key(study), record)
    params = {
        "population.models": len(models),
        "population.architectures": len(setup.specs),
        "population.sources": ",".join(sources),
        "target.version": target["content_hash"],
        "scores_study_id": scores_id,
        "store_uri": store.uri,
    }
    parent = tracking.start_study_run(
        uri,
        settings.study_name,
        study,
        params,
        kfp_run_id,
        config=config or settings.to_dict(),
        tags={"aprflow.kind": "predict"},
    )
    if not store.exists(study_key(study)):
        # The record a study's training tasks read (components.train.run.plan_study writes the
        # same): its trials log under the prediction's parent run.
        store.put_json(
            study_key(study),
            {
                "study_id": study,
                "name": settings.study_name,
                "parent_run_id": parent,
                "trials": settings.k * len(setup.seeds),
                "started_at": time.time(),
            },
        )
    report(
        "predict",
        f"{study}: {len(models)} trained models ({len(setup.specs)} architectures on "
        f"{', '.join(sources)}) predict {settings.target}; {settings.k} to train; scores in "
        f"{scores_id}; MLflow parent run {parent}",
    )
    return {"study_id": study, "scores_study_id": scores_id, "parent_run_id": parent}


def _failed_scores(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, dict[str, Any]]:
    """Per score, how many population models have no value and the first reason."""
    failed: dict[str, dict[str, Any]] = {}
    for key in keys:
        regime, metric = key.split("/")
        bad = [
            r
            for r in rows
            if (r["regime"], r["metric"]) == (regime, metric) and r["status"] != "ok"
        ]
        if bad:
            failed[key] = {"count": len(bad), "reason": bad[0]["status_reason"]}
    return failed


def select(
    study: str,
    store_uri: str | None,
    chunk_size: int = 0,
    max_parallel_tasks: int = 16,
    trial_timeout_s: int = 0,
    gpus_per_trial: int = 1,
) -> str:
    """Predicts every ranking from the scores, chooses ``k`` architectures stratified over the
    predicted ranking and plans their training on the target as a study's trials.

    Args:
        gpus_per_trial: the training tasks' GPUs per trial (checked against the population's).

    Returns:
        The study id (the training tasks' study).
    """
    from components.data.descriptor import DatasetRef
    from components.predict.predictors import (
        consensus,
        predict,
        score_keys,
        score_seconds,
        stratified_choice,
    )
    from components.train.chunk import check_trial_timeout, save_chunks
    from components.train.plan import save_plan
    from components.transfer.steps import gather

    store = open_store(store_uri)
    record = store.get_json(plan_key(study))
    settings = PredictSettings.from_dict(record["settings"])
    rows = gather(record["scores_study_id"], store)
    models = [PopulationModel(**m) for m in record["population"]]
    keys = score_keys(settings.scores)
    predictions = predict(models, rows, keys, settings.seed)
    ranking = consensus(predictions, keys)
    check_k(settings.k, len(ranking))
    try:
        check_trial_timeout(trial_timeout_s)
    except ValueError as e:
        raise PredictError(str(e)) from None
    chosen = stratified_choice(ranking, settings.k, settings.seed)
    setup = TrainingSetup.from_dict(record["setup"])
    setup.check_gpus(gpus_per_trial)
    trials = setup.target_trials(chosen, DatasetRef(**record["target"]))
    ids = save_plan(store, study, trials)
    chunks = save_chunks(store, study, trials, chunk_size, max_parallel_tasks, trial_timeout_s)
    per_arch = len(setup.seeds)
    store.put_json(
        predictions_key(study),
        {
            "predictions": predictions,
            "consensus": ranking,
            "chosen": chosen,
            "trial_ids": {
                arch: ids[i * per_arch : (i + 1) * per_arch] for i, arch in enumerate(chosen)
            },
            "score_seconds": {key: score_seconds(rows, key) for key in keys},
            "failed_scores": _failed_scores(rows, keys),
        },
    )
    report(
        "predict",
        f"{len(predictions)} predictors over {len(ranking)} architectures; training {len(chosen)} "
        f"on {record['target']['name']} ({chunks['summary']})",
    )
    return study


def trained_errors(
    store, trial_ids: dict[str, list[str]]
) -> tuple[dict[str, float], dict[str, float], dict[str, str], set[str]]:
    """Per chosen architecture: mean top-1 error over its ``ok`` trials, their summed wall
    seconds, why it has no error (every trial failed), and the devices that trained them."""
    from components.train.definition import result_key

    errors, seconds, failed, devices = {}, {}, {}, set()
    for arch, ids in trial_ids.items():
        results = [store.get_json(result_key(trial_id)) for trial_id in ids]
        seconds[arch] = sum(float(r.get("wall_time_s") or 0.0) for r in results)
        devices |= {str(r.get("device_used")) for r in results if r.get("device_used")}
        ok = [float(r["top1_error"]) for r in results if r["status"] == "ok"]
        if ok:
            errors[arch] = sum(ok) / len(ok)
        else:
            failed[arch] = results[0].get("reason", "")
    return errors, seconds, failed, devices


def costs(
    record: dict[str, Any], predicted: dict[str, Any], seconds: dict[str, float]
) -> dict[str, Any]:
    """Each predictor's measured seconds against training: the k on the target (measured),
    the whole population on the target (k's mean per architecture x architectures: exact when
    k is all of them) and the population on its sources (measured when it trained)."""
    n_arch = len(record["setup"]["specs"])
    trained = sum(seconds.values())
    per_arch = trained / len(seconds) if seconds else 0.0
    population = n_arch * per_arch
    predictors = {}
    for key in predicted["predictions"]:
        spent = predicted["score_seconds"].get(key, 0.0)
        predictors[key] = {
            "seconds": spent,
            "share_of_population_training": spent / population if population else None,
            # The source ranking and random cost nothing beyond what was trained.
            "measured": key in predicted["score_seconds"],
        }
    return {
        "predictors": predictors,
        "k_training_seconds": trained,
        "population_on_target_seconds": population,
        "population_on_target_exact": len(seconds) == n_arch,
        "population_on_sources_seconds": sum(m["seconds"] for m in record["population"]),
    }


def evaluate_all(
    record: dict[str, Any], predicted: dict[str, Any], trained: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """Every predictor against the trained architectures (:mod:`components.predict.agreement`),
    the cheap scores also against the source ranking."""
    from components.predict.agreement import evaluate, random_null, versus_source
    from components.predict.predictors import RANDOM, score_keys, source_baseline

    settings = PredictSettings.from_dict(record["settings"])
    predictions = predicted["predictions"]
    out = {}
    for key, goodness in predictions.items():
        if key == RANDOM:
            out[key] = random_null(trained, settings.random_draws, settings.seed, goodness)
        else:
            out[key] = evaluate(key, goodness, trained, settings.n_bootstrap, settings.seed)
    base = source_baseline(predictions)
    for key in score_keys(settings.scores):
        if key in out:
            out[key]["versus_source"] = versus_source(
                predictions[key],
                predictions[base],
                trained,
                settings.n_bootstrap,
                settings.seed,
                (key, base),
            )
    return out


def _log_predictors(
    uri: str, parent: str, study: str, summary: dict[str, Any], kfp_run_id: str
) -> dict[str, float]:
    """One nested run per predictor; returns the parent's summary metrics."""
    metrics_out: dict[str, float] = {}
    for key, result in summary["predictors"].items():
        metrics: dict[str, float] = {}
        for stat in ("kendall", "weighted_tau"):
            for part in ("value", "ci_low", "ci_high"):
                value = (result.get(stat) or {}).get(part)
                if value is not None:
                    metrics[f"{stat}{'' if part == 'value' else '_' + part}"] = float(value)
        if result.get("regret"):
            metrics["regret"] = float(result["regret"]["value"])
        metrics["seconds"] = float(summary["costs"]["predictors"][key]["seconds"])
        metrics["n_models"] = float(result["n_models"])
        metrics_out |= {f"{name}/{key}": value for name, value in metrics.items()}
        log = tracking.TrialLog(
            parent_run_id=parent,
            trial_id=content_hash({"study": study, "predictor": key}),
            run_name=f"predictor-{key.replace('/', '-')}",
            params={"predictor": key, "target": summary["target"], "k": summary["k"]},
            metrics=metrics,
            tags={tracking.KFP_RUN_TAG: kfp_run_id, "aprflow.predictor": key},
        )
        tracking.log_trial_run(uri, log, adopt_task_run=False)
    return metrics_out


def analyze(
    study: str,
    store_uri: str | None,
    tracking_uri: str | None,
    parent_run_id: str,
    out_dir: str | Path,
    kfp_run_id: str = "",
) -> dict[str, Any]:
    """Scores every predictor against the trained architectures, writes the report
    (``report.html``, ``report.md``, ``summary.json``, ``figures/``) to ``out_dir`` and the
    store, logs one nested run per predictor and closes the parent run.

    Returns:
        The summary (``summary.json``).
    """
    from components.predict.report import write_report
    from components.train.run import study_key

    store = open_store(store_uri)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_tracking(uri, tracking.wait_budget())
    started = store.get_json(study_key(study))["started_at"]
    tracking.replay_queue(store, study, uri, strict=True)
    record = store.get_json(plan_key(study))
    predicted = store.get_json(predictions_key(study))
    settings = PredictSettings.from_dict(record["settings"])
    trained, seconds, failed, devices = trained_errors(store, predicted["trial_ids"])
    if len(trained) < 3:
        raise PredictError(
            f"only {len(trained)} of the {settings.k} chosen architectures trained on "
            f"{settings.target}: no ranking to compare ({failed})"
        )
    summary = {
        "study_id": study,
        "target": settings.target,
        "k": settings.k,
        "n_trained": len(trained),
        "settings": settings.to_dict(),
        "population": {
            "models": len(record["population"]),
            "architectures": len(record["setup"]["specs"]),
            "sources": sorted({m["source"] for m in record["population"]}),
            "left_out": record["left_out"],
            "setup_shared_by": record["setup"]["shared_by"],
            "recipe": record["setup"]["recipe"]["name"],
            "epochs": record["setup"]["recipe"]["epochs"],
            "seeds": record["setup"]["seeds"],
            "resolution": record["resolution"],
        },
        "chosen": predicted["chosen"],
        "trained": trained,
        "failed_training": failed,
        "failed_scores": predicted["failed_scores"],
        "devices": sorted(devices),
        "predictors": evaluate_all(record, predicted, trained),
        "costs": costs(record, predicted, seconds),
        "predictions": predicted["predictions"],
        "consensus": predicted["consensus"],
    }
    out = Path(out_dir)
    write_report(out, summary)
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        store.put_file(f"studies/{study}/{path.relative_to(out).as_posix()}", path)
    metrics = _log_predictors(uri, parent_run_id, study, summary, kfp_run_id)
    tracking.finish_study_run(uri, parent_run_id, metrics, out)
    report("predict", f"report at {store.key_uri(f'studies/{study}/report.html')}", started)
    return summary
