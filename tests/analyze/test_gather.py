"""Gathering trial results into the tidy table, and the Markdown for the Kubeflow UI."""

import pytest

from components.common.storage import open_store

SPEC = {
    "depths": [1, 2, 3, 4],
    "widths": [8, 16, 24, 32],
    "bottleneck_ratios": [1.0, 1.0, 2.0, 4.0],
    "group_widths": [1, 2, 4, 8],
}


def _result(trial_id: str, status: str, error: float | None) -> dict:
    return {
        "trial_id": trial_id,
        "spec": SPEC,
        "dataset": {"name": "digits"},
        "recipe": {"name": "apr_tiny"},
        "seed": 0,
        "status": status,
        "reason": "" if status == "ok" else "loss became nan",
        "top1_error": error,
        "flops": 1e8,
        "params": 1e5,
        "wall_time_s": 1.0,
    }


def test_row_has_the_analysis_columns():
    from components.analyze.run import result_row

    row = result_row(_result("t1", "ok", 12.5))
    assert row["dataset"] == "digits" and row["top1_error"] == 12.5 and row["status"] == "ok"
    assert [row[f"d{i}"] for i in range(1, 5)] == [1, 2, 3, 4]
    assert [row[f"g{i}"] for i in range(1, 5)] == [1, 2, 4, 8]
    assert row["model"] == result_row(_result("t2", "ok", 1.0))["model"], "model = spec hash"


def test_missing_result_is_a_failed_row(tmp_path):
    from components.analyze.run import gather_results

    store = open_store(str(tmp_path))
    store.put_json("trials/t1/result.json", _result("t1", "diverged", None))
    planned = _result("t2", "ok", None)
    trial = {k: planned[k] for k in ("spec", "dataset", "recipe", "seed")}
    store.put_json("trials/t2/trial.json", trial)
    table = gather_results(store, ["t1", "t2"])
    assert list(table["status"]) == ["diverged", "failed"]
    assert "wrote no result" in table["status_reason"][1]


def test_markdown_figures_become_data_uris(tmp_path):
    from components.analyze.run import embed_figures

    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "ecdf.png").write_bytes(b"\x89PNG")
    text = embed_figures("see ![eCDF](figures/ecdf.png) and [x](other.md)", tmp_path)
    assert text == "see ![eCDF](data:image/png;base64,iVBORw==) and [x](other.md)"


def test_top_k_is_a_quarter_within_bounds():
    from components.analyze.run import top_k_for

    assert [top_k_for(n) for n in (3, 8, 40, 500)] == [2, 2, 10, 15]


def _evaluated(trial_id: str, seed: int, test: float, v2: float, model_depth: int = 1) -> dict:
    """A result as the trainer writes it: top-5, evaluations on test, val and a second
    test set of the same classes, per-epoch history."""
    result = _result(trial_id, "ok", test)
    result["spec"] = SPEC | {"depths": [model_depth, 2, 3, 4]}
    result["seed"] = seed
    result["dataset"] = {"name": "imagenet"}
    result["top5_error"] = test / 4
    result["evaluations"] = {
        "test": {"top1_error": test, "top5_error": test / 4, "loss": 1.0},
        "val": {"top1_error": test + 0.5, "top5_error": test / 4 + 0.5, "loss": 1.1},
        "imagenet_v2": {"top1_error": v2, "top5_error": v2 / 4, "loss": 1.5},
    }
    return result


def test_row_carries_each_evaluation_as_a_column():
    from components.analyze.run import result_row

    row = result_row(_evaluated("t1", 0, 20.0, 31.0))
    assert row["top1_error"] == 20.0 and row["top5_error"] == 5.0
    assert row["top1_error@val"] == 20.5 and row["top5_error@val"] == 5.5
    assert row["top1_error@imagenet_v2"] == 31.0 and row["top5_error@imagenet_v2"] == 7.75
    assert row["unit"] == "percent"
    # A result without evaluations keeps the columns it always had (plus its unit).
    plain = result_row(_result("t2", "ok", 12.5))
    assert not {k for k in plain if k.startswith("top5") or "@" in k}


def test_study_analysis_compares_test_sets_of_the_same_checkpoints(tmp_path):
    """The gathered table of a seed study (one model per depth, 6 seeds, each checkpoint on
    test and ImageNet-V2) gives the seed study on the same checkpoints, exact against scipy,
    and the APR comparison test vs V2 (and top-1 vs top-5) over the same models."""
    import numpy as np
    import pandas as pd
    import pytest
    from scipy import stats as sps

    from analysis import analyze, load_results
    from components.analyze.run import result_row

    rng = np.random.default_rng(3)
    results = [
        _evaluated(f"d{d}s{s}", s, 20 + d + rng.normal(), 30 + 1.5 * d + 2 * rng.normal(), d)
        for d in range(1, 9)
        for s in range(6)
    ]
    table = pd.DataFrame([result_row(r) for r in results])
    summary = analyze(load_results(table), tmp_path, n_bootstrap=0, top_k=3)
    assert summary["settings"]["metric"] == "top1_error"
    seeds = summary["seed_variance"]
    assert seeds["evaluations"] == {
        "test": "top1_error",
        "imagenet_v2": "top1_error@imagenet_v2",
        "val": "top1_error@val",
    }
    pairs = {tuple(p["test_sets"]): p for p in seeds["test_set_pairs"]}
    pair = pairs[("test", "imagenet_v2")]
    assert pair["dataset"] == "imagenet" and pair["n_models"] == 8 and pair["n_seeds"] == 48
    wide = table.set_index(["model", "seed"])[["top1_error", "top1_error@imagenet_v2"]]
    centred = wide - wide.groupby(level="model").transform("mean")
    expected = sps.pearsonr(centred["top1_error"], centred["top1_error@imagenet_v2"]).statistic
    assert pair["pooled_within_model_r"] == pytest.approx(expected)
    key = "seed_pair_r/imagenet/test vs imagenet_v2"
    assert summary["metrics"][key] == pytest.approx(expected)
    comparisons = {(c["a"], c["b"]): c for c in summary["comparisons"]}
    v2 = comparisons[("apr_tiny/top1_error", "apr_tiny/top1_error@imagenet_v2")]
    means = table.groupby("model")[["top1_error", "top1_error@imagenet_v2"]].mean()
    rho = sps.spearmanr(means["top1_error"], means["top1_error@imagenet_v2"]).statistic
    assert v2["kind"] == "metrics" and v2["spearman"]["value"] == pytest.approx(rho)
    assert ("apr_tiny/top1_error", "apr_tiny/top5_error") in comparisons
    report = (tmp_path / "report.md").read_text()
    assert "test vs imagenet_v2 for the same checkpoints trained on imagenet (8 models," in report


@pytest.mark.slow
def test_real_trials_on_two_test_sets_give_the_seed_study(tmp_path):
    """Three seeds of one model trained by the real trainer, each evaluated on faces' test split
    and on the same split under another name: gathered and analysed, the two test sets of the
    same checkpoints correlate exactly (r = 1) with equal spreads, and nothing pairs datasets."""
    from dataclasses import replace

    from analysis import analyze, load_results
    from components.analyze.run import gather_results
    from components.data.datasets import materialize
    from components.train.recipes import resolve_recipe
    from components.train.trial import Trial, run_trial

    store = open_store(str(tmp_path / "store"))
    spec = SPEC | {"depths": [1, 1, 1, 1]}  # tiny: the statistic, not the model, is tested
    faces = materialize(store, "faces", resolution=12)
    again = replace(faces, name="faces_again")
    # Batch 32: at 16, one epoch left all three seeds predicting one class (equal errors).
    recipe = resolve_recipe("apr_tiny", {"epochs": 1, "batch_size": 32})
    ids = []
    for seed in (0, 1, 2):
        trial = Trial(spec=spec, dataset=faces, recipe=recipe, seed=seed, test_sets=(again,))
        store.put_json(f"trials/{trial.trial_id}/trial.json", trial.to_dict())
        assert run_trial(store, trial, progress=lambda _: None)["status"] == "ok"
        ids.append(trial.trial_id)
    table = gather_results(store, ids)
    assert "top1_error@faces_again" in set(table)
    assert not {"top5_error", "top5_error@faces_again"} & set(table)  # 2 classes: no top-5
    summary = analyze(load_results(table), tmp_path / "out", n_bootstrap=0, top_k=2)
    seeds = summary["seed_variance"]
    (pair,) = [p for p in seeds["test_set_pairs"] if p["test_sets"] == ["test", "faces_again"]]
    errors = table["top1_error"]
    assert errors.nunique() > 1, "the seeds give different checkpoints (training is seeded)"
    assert pair["pooled_within_model_r"] == pytest.approx(1.0)
    assert pair["mean_std_a"] == pytest.approx(errors.std()) == pytest.approx(pair["mean_std_b"])
    assert pair["n_seeds"] == 3 and pair["dataset"] == "faces"
