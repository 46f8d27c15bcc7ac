"""The transfer study: model sources, cached features, long results table, failures, fine-tune.

Weights files are randomly initialised tiny timm models saved with torch.save (no download
is possible here); the target is the built-in digits set at 16 px, fed at 32 px.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np
import pytest

from components.common.storage import open_store
from components.transfer.cli import main
from components.transfer.errors import TransferError


def _weights(tmp_path, name: str, seed: int) -> str:
    import timm
    import torch

    from components.transfer.sources import weights_file_bytes

    torch.manual_seed(seed)
    path = tmp_path / f"{name}-{seed}.pth"
    path.write_bytes(weights_file_bytes(timm.create_model(name)))
    return str(path)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from components.data.datasets import prepare_all

    store_uri = str(tmp_path_factory.mktemp("transfer-study") / "store")
    return store_uri, prepare_all(["digits"], 16, 0, store_uri)[0]


def test_model_list_parsing():
    from components.transfer.sources import ModelEntry, parse_model_list

    entries = parse_model_list(
        "# unit: percent\nmodel,weights,source_dataset,source_top1\n"
        "resnet50,/w/r50.pth,imagenet,80.4\ntrial:abc,,,\n"
    )
    assert entries[0] == ModelEntry("resnet50", "/w/r50.pth", "imagenet", 80.4)
    assert entries[1] == ModelEntry("trial:abc")
    fraction = parse_model_list("model,source_top1,unit\nx,0.5,fraction\n")
    assert fraction[0].source_top1 == 50.0
    for text, message in [
        ("model,source_top1\nx,80\n", "unit of source_top1"),
        ("# unit: percent\nmodel,source_top1\nx,180\n", "outside"),
        ("model,colour\nx,red\n", "unknown column"),
        ("name\nx\n", "'model' column"),
        ("model\nx\nx\n", "twice"),
    ]:
        with pytest.raises(TransferError, match=message):
            parse_model_list(text)


def test_weights_from_a_file_and_the_pretrained_cfg(tmp_path, digits):
    import torch

    from components.transfer.sources import ModelEntry, load_model

    store = open_store(digits[0])
    path = _weights(tmp_path, "test_resnet", 1)
    loaded = load_model(ModelEntry("test_resnet", path), store)
    saved = torch.load(path, weights_only=True)
    for key, value in loaded.model.state_dict().items():  # the file's weights, not random ones
        assert torch.equal(value, saved[key]), key
    cfg = loaded.model.pretrained_cfg
    assert loaded.data_config["input_size"] == cfg["input_size"]
    assert loaded.data_config["interpolation"] == cfg["interpolation"]
    assert loaded.data_config["crop_pct"] == cfg["crop_pct"]
    assert tuple(loaded.data_config["mean"]) == tuple(cfg["mean"])
    with pytest.raises(TransferError, match="no weights at /nowhere/w.pth"):
        load_model(ModelEntry("test_resnet", "/nowhere/w.pth"), store)
    with pytest.raises(TransferError, match="--allow-download"):
        load_model(ModelEntry("test_resnet", "hub"), store)


def test_s3_weights(tmp_path, s3_env):
    import boto3

    from components.transfer.sources import ModelEntry, load_model

    path = _weights(tmp_path, "test_resnet", 2)
    client = boto3.client("s3", endpoint_url=os.environ["APRFLOW_S3_ENDPOINT_URL"])
    client.upload_file(path, s3_env, "ckpt/r.pth")
    store = open_store(str(tmp_path / "store"))
    loaded = load_model(
        ModelEntry("test_resnet", f"s3://{s3_env}/ckpt/r.pth"), store, cache_dir=tmp_path / "c"
    )
    local = load_model(ModelEntry("test_resnet", path), store)
    assert loaded.weights_hash == local.weights_hash
    with pytest.raises(TransferError, match=f"no weights at s3://{s3_env}/ckpt/none.pth"):
        load_model(ModelEntry("test_resnet", f"s3://{s3_env}/ckpt/none.pth"), store)


def test_study_table_cache_and_failures(tmp_path, digits, capsys):
    """Two models with weights files, one with missing weights, one unknown, one whose input
    size is rejected: the table has every row, failures with their reasons."""
    import torch

    from components.transfer.sources import ModelEntry, load_model
    from components.transfer.study import StudySettings, feature_key

    store_uri, ref = digits
    models = tmp_path / "models.csv"
    models.write_text(
        "# unit: percent\nmodel,weights,source_dataset,source_top1\n"
        f"test_resnet,{_weights(tmp_path, 'test_resnet', 1)},imagenet,70\n"
        f"test_convnext,{_weights(tmp_path, 'test_convnext', 1)},imagenet,75\n"
        "resnet18,/nowhere/r18.pth,imagenet,69.8\n"
        "no_such_net,random,,\n"
    )
    args = [
        "study",
        "--models",
        str(models),
        "--datasets",
        "digits",
        "--resolution",
        "16",
        "--input-size",
        "32",
        "--regimes",
        "knn",
        "logme",
        "leep",
        "--store",
        store_uri,
        "--out-dir",
        str(tmp_path / "out"),
        "--bootstrap",
        "0",
    ]
    assert main(args) == 0, capsys.readouterr().err
    # The study says where its report is: report.html at the top of --out-dir.
    assert f"report: {tmp_path / 'out' / 'report.html'}\n" in capsys.readouterr().out
    assert "Does a cheap score predict" in (tmp_path / "out" / "report.html").read_text()
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    by = {(r["model"], r["dataset"], r["regime"], r["metric"]): r for r in rows}
    # 3 source rows; 4 metrics x 4 models on digits; 6 setup rows per model loaded (2).
    assert len(rows) == 3 + 4 * 4 + 6 * 2
    assert by[("test_resnet", "imagenet", "source", "top1")]["value"] == "0.7"
    for model in ("test_resnet", "test_convnext"):
        for metric in ("knn_top1", "knn_top5_fraction"):
            row = by[(model, "digits", "knn", metric)]
            assert row["status"] == "ok" and row["unit"] == "fraction"
            assert 0.3 < float(row["value"]) <= 1.0  # well above chance (0.1) on digits
            assert float(row["seconds"]) > 0
        assert float(by[(model, "digits", "leep", "leep")]["value"]) < 0
    missing = by[("resnet18", "digits", "knn", "knn_top1")]
    assert (missing["status"], missing["status_reason"]) == (
        "failed",
        "no weights at /nowhere/r18.pth",
    )
    assert "unknown timm model" in by[("no_such_net", "digits", "logme", "logme")]["status_reason"]

    # The kNN numbers are those of the cached features (the cache key has the weights hash).
    from components.transfer.knn import knn_evaluate
    from components.transfer.study import _splits, split_features

    store = open_store(store_uri)
    entry = ModelEntry("test_resnet", _weights(tmp_path, "test_resnet", 1))
    loaded = load_model(entry, store, input_size=32)
    assert store.exists(feature_key(loaded, ref.content_hash, "train"))
    splits = _splits(store, ref)
    settings = StudySettings(regimes=("knn",), input_size=32)
    feats = {
        s: split_features(loaded, store, ref, s, *splits[s], settings, torch.device("cpu"))
        for s in ("train", "test")
    }
    assert feats["train"][1] and feats["test"][1]  # both from the cache
    knn = knn_evaluate(
        feats["train"][0].features,
        feats["train"][0].labels,
        feats["test"][0].features,
        feats["test"][0].labels,
    )
    assert float(by[("test_resnet", "digits", "knn", "knn_top1")]["value"]) == pytest.approx(
        knn.top1
    )

    # The analysis reads the table directly.
    from analysis import load_results

    table = load_results(tmp_path / "out" / "results.csv")
    assert {"logme", "leep"} <= set(table.skipped_metrics)  # scores: compared in compare.py


def test_one_class_target_and_rejected_input_size(tmp_path, digits):
    from components.transfer.sources import ModelEntry
    from components.transfer.study import StudySettings, evaluate_model

    store_uri, ref = digits
    store = open_store(store_uri)
    single = dataclasses.replace(ref, name="single", num_classes=1)
    settings = StudySettings(regimes=("knn", "logme"), input_size=8)
    entry = ModelEntry("test_vit", _weights(tmp_path, "test_vit", 0))
    rows = [r.to_dict() for r in evaluate_model(entry, [single, ref], store, settings)]
    reasons = {(r["dataset"], r["status"], r["status_reason"]) for r in rows}
    assert ("single", "failed", "target single has 1 class: nothing to rank") in reasons
    on_digits = [r for r in rows if r["dataset"] == "digits" and r["regime"] != "setup"]
    assert len(on_digits) == 3 and all(r["status"] == "failed" for r in on_digits)
    assert "divisible by patch size" in on_digits[0]["status_reason"]


def test_finetune_improves_on_its_starting_point(tmp_path, digits):
    """A tiny pretrained-from-file model with a new head starts near chance on digits and
    fine-tuning for 30 steps lifts its test accuracy far above that; the reported accuracy
    is the refit's on train + val with the configuration chosen on val."""
    import torch

    from components.transfer.finetune import finetune
    from components.transfer.sources import ModelEntry, eval_transform, load_model, prepare_images
    from components.transfer.study import _splits

    store_uri, ref = digits
    store = open_store(store_uri)
    loaded = load_model(
        ModelEntry("test_resnet", _weights(tmp_path, "test_resnet", 1)), store, input_size=32
    )
    transform = eval_transform(loaded.data_config)
    tensors = {
        s: (prepare_images(x, transform), torch.as_tensor(y))
        for s, (x, y) in _splits(store, ref).items()
    }
    result = finetune(
        loaded.model,
        10,
        tensors["train"],
        tensors["val"],
        tensors["test"],
        overrides={"lr_grid": [0.1], "weight_decay_grid": [0.0]},
        max_steps=30,
        device="cpu",
    )
    assert result.steps == 30 and set(result.grid) == {(0.1, 0.0)}
    assert result.initial_accuracy < 0.3
    # Both the grid run (train only) and the reported refit on train + val learned.
    assert result.grid_accuracy > result.initial_accuracy + 0.3
    assert result.refit and result.refit_steps == 30
    assert result.accuracy > result.initial_accuracy + 0.3
    assert result.accuracy != result.grid_accuracy  # another run: more data, other batches


def test_recipe_overrides_are_checked_before_a_study_starts(capsys):
    from components.transfer.study import StudySettings

    settings = StudySettings(regimes=("finetune",), recipe_overrides={"lr_grid": [0.05]})
    assert settings.recipe_overrides == {"lr_grid": [0.05]}
    for overrides, message in [
        ({"lr": -1.0}, "recipe finetune: .*lr"),
        ({"learning_rate": 0.1}, "recipe finetune: .*learning_rate"),
        ({"mixup": 2.0}, "recipe finetune: .*mixup"),
    ]:
        with pytest.raises(TransferError, match=message):
            StudySettings(regimes=("knn", "finetune"), recipe_overrides=overrides)
    # The command line's --set reaches the same check, in one line, before anything runs.
    argv = ["study", "--models", "m.csv", "--datasets", "digits", "--regimes", "scratch"]
    code = main([*argv, "--set", "recipe.lr=-1"])
    assert code != 0
    assert "recipe field 'lr' must be > 0" in capsys.readouterr().err


def test_score_vs_finetune_comparison():
    """Kendall tau and weighted tau of a score that orders five models as fine-tuning does
    are 1; reversed, -1; cost ratio from the seconds column."""
    from components.transfer.compare import compare

    rows = []
    for i, model in enumerate("abcde"):
        base = {"model": model, "dataset": "t", "unit": "", "status": "ok", "status_reason": ""}
        rows += [
            base
            | {"regime": "finetune", "metric": "top1", "value": 0.5 + i / 10, "seconds": 100.0},
            base | {"regime": "logme", "metric": "logme", "value": float(i), "seconds": 1.0},
            base | {"regime": "leep", "metric": "leep", "value": -float(i), "seconds": 2.0},
            base
            | {
                "regime": "source",
                "metric": "top1",
                "value": 0.6 + i / 20,
                "seconds": 0.0,
                "dataset": "imagenet",
            },
        ]
    result = compare(rows, n_bootstrap=200)["targets"]["t"]
    logme, leep = (
        result["scores_vs_finetune"]["logme/logme"],
        result["scores_vs_finetune"]["leep/leep"],
    )
    assert logme["kendall"]["value"] == pytest.approx(1.0)
    assert logme["weighted_tau"]["value"] == pytest.approx(1.0)
    assert leep["kendall"]["value"] == pytest.approx(-1.0)
    assert logme["cost_ratio"] == pytest.approx(0.01)
    assert logme["kendall"]["ci_low"] <= 1.0 and logme["kendall"]["n_boot_valid"] > 100
    vs_source = result["regimes_vs_source"]["imagenet"]["finetune/top1"]
    assert vs_source["spearman"]["value"] == pytest.approx(1.0)
    json.dumps(result)  # JSON-safe for the report and MLflow
    assert np.isfinite(vs_source["pearson_logit"]["value"])


def test_trial_is_never_scored_on_another_split_of_its_own_data(trained_trial):
    """A trial trained on faces (split seed 0) is scored on that version of faces, and refused
    on faces re-split with seed 1, whose test split may hold its training images."""
    from components.data.datasets import prepare_all
    from components.transfer.sources import ModelEntry
    from components.transfer.study import StudySettings, evaluate_model

    store_uri, trial_id = trained_trial
    store = open_store(store_uri)
    same = prepare_all(["faces"], 12, 0, store_uri)[0]
    other = prepare_all(["faces"], 12, 1, store_uri)[0]
    assert same.content_hash != other.content_hash
    entry = ModelEntry(f"trial:{trial_id}")
    settings = StudySettings(regimes=("knn",))
    rows = [r.to_dict() for r in evaluate_model(entry, [same], store, settings)]
    assert [r["status"] for r in rows if r["regime"] == "knn"] == ["ok", "ok"]
    source = next(r for r in rows if r["regime"] == "source")
    assert source["dataset"] == "faces" and 0 < source["value"] <= 1
    rows = [r.to_dict() for r in evaluate_model(entry, [other], store, settings)]
    knn = [r for r in rows if r["regime"] == "knn"]
    assert all(r["status"] == "failed" for r in knn)
    assert "are among its training images" in knn[0]["status_reason"]  # by content


def test_trials_all_lists_every_finished_trial(trained_trial):
    from components.transfer.sources import ModelEntry, expand_trials

    store_uri, trial_id = trained_trial
    entries = expand_trials(
        [ModelEntry("trials:all"), ModelEntry("x", "random")], open_store(store_uri)
    )
    assert entries == [ModelEntry(f"trial:{trial_id}"), ModelEntry("x", "random")]
