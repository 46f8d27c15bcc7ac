"""The transfer-study pipeline end to end through kfp.local at toy scale: a timm model with a
weights file and one of our trials, on the built-in digits set, cheap scores and a short
fine-tune, nested MLflow runs under one parent."""

from __future__ import annotations

import csv
import json
import re

import pytest
from helpers import kfp_local_session

pytestmark = [
    pytest.mark.slow,  # five kfp.local subprocess tasks, each importing torch: ~1 min
    pytest.mark.filterwarnings("ignore:.*non-Python base image"),
]


def test_transfer_study_locally(trained_trial, tmp_path):
    import mlflow
    import timm
    import torch

    from components.transfer.sources import weights_file_bytes
    from pipelines.transfer_study import transfer_study

    store_uri, trial_id = trained_trial
    torch.manual_seed(0)
    weights = tmp_path / "test_resnet.pth"
    weights.write_bytes(weights_file_bytes(timm.create_model("test_resnet")))
    models = tmp_path / "models.csv"
    models.write_text(
        "# unit: percent\nmodel,weights,source_dataset,source_top1\n"
        f"test_resnet,{weights},imagenet,61.5\n"
        f"trial:{trial_id},,,\n"
        "resnet18,/nowhere/r18.pth,imagenet,69.8\n"
    )
    with kfp_local_session(store_uri, tmp_path):
        task = transfer_study(
            model_list=str(models),
            study_name="toy-transfer",
            datasets=["digits"],
            resolution=16,
            regimes=["knn", "logme", "leep", "finetune"],
            input_size=32,
            finetune_max_steps=3,
            recipe_overrides={"lr_grid": [0.05], "weight_decay_grid": [0.0]},
            chunk_size=2,
            n_bootstrap=50,
            device="cpu",
        )
        tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study_id = task.outputs["study_id"]
    assert study_id.startswith("toy-transfer-")

    from components.common.storage import open_store

    store = open_store(store_uri)
    text = store.get_bytes(f"studies/{study_id}/results.csv").decode()
    rows = list(csv.DictReader(text.splitlines()))
    by = {(r["model"], r["regime"], r["metric"]): r for r in rows if r["dataset"] == "digits"}
    trial = f"trial:{trial_id}"
    for model in ("test_resnet", trial):
        for regime, metric in [("knn", "knn_top1"), ("logme", "logme"), ("finetune", "top1")]:
            assert by[(model, regime, metric)]["status"] == "ok", by[(model, regime, metric)]
    assert by[("resnet18", "knn", "knn_top1")]["status_reason"] == "no weights at /nowhere/r18.pth"
    # The trial's source accuracy comes from its own result (faces), the others' from the list.
    sources = {r["model"]: r for r in rows if r["regime"] == "source"}
    assert sources["test_resnet"]["value"] == "0.615"
    assert sources[trial]["dataset"] == "faces"
    assert len(store.list(f"studies/{study_id}/results/")) == 2  # 3 models in chunks of 2
    # Fine-tuned accuracy from the refit on train + val with the configuration chosen on val.
    assert by[("test_resnet", "finetune", "finetune_refit")]["value"] == "1.0"
    # The recipe override (a grid of one, outside the recipe's own) reached the fine-tune.
    assert by[("test_resnet", "finetune", "finetune_lr")]["value"] == "0.05"
    assert by[("test_resnet", "finetune", "finetune_weight_decay")]["value"] == "0.0"
    report_html = store.get_bytes(f"studies/{study_id}/report.html").decode()
    assert "Does a cheap score predict fine-tuned accuracy on digits?" in report_html
    # The digits scatter and the fine-tune learning curves (their side table in the store).
    images = re.findall(r'<img alt="(\w+)" src="data:image/png;base64,', report_html)
    assert {"scores_vs_finetune_digits", "learning_curves"} <= set(images), images
    assert store.exists(f"studies/{study_id}/curves.csv")
    # The comparison beside the report, so `aprflow run` copies it into runs/<study_id>/.
    comparison = json.loads(store.get_bytes(f"studies/{study_id}/comparison.json"))
    assert comparison["targets"]["digits"]["scores_vs_finetune"]["knn/knn_top1"]["n_models"] == 2

    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name("toy-transfer")
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 3 * 4  # models x regimes on one target
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    logged = mlflow.MlflowClient().list_artifacts(parents[0].info.run_id, "report")
    assert "report/report.html" in {a.path for a in logged}
