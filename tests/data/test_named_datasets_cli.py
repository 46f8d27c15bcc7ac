"""A dataset built under a name is used by that name on the train and transfer CLIs."""

from __future__ import annotations

import json

import numpy as np
from imagesets import CLASSES, picture

from components.common.storage import open_store
from components.data.build import named_dataset
from components.data.cli import main as data_main
from components.sample.samplers import sample_specs
from components.transfer.cli import main as transfer_main


def _tiny_folder(root, per_class: int = 8):
    for kind in CLASSES:
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            picture(kind, i, size=10).save(root / kind / f"{i}.png")
    return root


def test_built_name_on_train_and_transfer_clis(tmp_path, capsys, monkeypatch):
    from components.train.cli import main as train_main

    monkeypatch.setenv("APRFLOW_DATA_WORKERS", "0")  # stream decoded in this process
    store_uri = str(tmp_path / "store")
    folder = _tiny_folder(tmp_path / "pets-src")
    assert data_main(["build", "pets", "--from", str(folder), "--store", store_uri]) == 0
    built = named_dataset(open_store(store_uri), "pets")["ref"]
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict())
    )
    capsys.readouterr()

    code = train_main(
        ["--spec", str(spec), "--dataset", "pets", "--resolution", "8", "--epochs", "1"]
        + ["--input", "stream", "--recipe", "apr_short_randaug", "--store", store_uri]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)  # the result alone on stdout
    assert result["status"] == "ok"
    assert result["dataset"]["name"] == "pets"
    assert result["dataset"]["content_hash"] == built["content_hash"]
    assert (result["dataset"]["resolution"], result["dataset"]["input"]) == (8, "stream")
    assert result["recipe"]["auto_augment"] == "rand-m7-mstd0.5"  # RandAugment on the stream

    out_csv = tmp_path / "transfer.csv"
    code = transfer_main(
        ["--backbone", f"trial:{result['trial_id']}", "--datasets", "pets"]
        + ["--regimes", "knn", "--k", "3", "--resolution", "8", "--store", store_uri]
        + ["--out", str(out_csv)]
    )
    assert code == 0, capsys.readouterr().err
    rows = np.loadtxt(out_csv, delimiter=",", skiprows=1, dtype=str)
    assert {(r[1], r[3]) for r in rows} == {
        (d, m) for d in ("pets",) for m in ("knn_top1", "knn_top3_fraction")
    }


def test_unknown_name_is_one_error_line(tmp_path, capsys):
    from components.train.cli import main as train_main

    store_uri = str(tmp_path / "store")
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict())
    )
    assert train_main(["--spec", str(spec), "--dataset", "cats", "--store", store_uri]) == 1
    assert (
        transfer_main(
            ["--backbone", "timm:resnet18", "--datasets", "cats"] + ["--store", store_uri]
        )
        == 1
    )
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2
    for err in errors:
        assert err.startswith("error: unknown or missing dataset(s) cats")
        assert "aprflow data build NAME --from URI" in err
    assert not (tmp_path / "store" / "datasets").exists()
