"""Leakage checked by image content, every budget in the rows, LEEP refused at another input
size, and kNN ties that do not depend on the order of the rows.

The reseeded targets are the built-in sets split with another seed: the same images, other
splits, so most test images of one build are training images of the other.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from components.common.storage import open_store
from components.transfer.cli import main
from components.transfer.errors import TransferError


@pytest.fixture(scope="module")
def digits_two_seeds(tmp_path_factory):
    """``(store_uri, digits split with seed 0, digits split with seed 1)`` at 16 px."""
    from components.data.datasets import prepare_all

    uri = str(tmp_path_factory.mktemp("leakage") / "store")
    return uri, prepare_all(["digits"], 16, 0, uri)[0], prepare_all(["digits"], 16, 1, uri)[0]


def _pixels(store, ref, split: str) -> list[bytes]:
    """Each decoded image's bytes: an independent content key (the images are stored at
    the ref's resolution, so load_split does not resize them)."""
    from components.data.datasets import load_split

    return [image.tobytes() for image in load_split(store, ref, split)[0]]


def test_a_reseeded_build_overlaps_by_content(digits_two_seeds, monkeypatch):
    from components.transfer import leakage

    uri, first, second = digits_two_seeds
    store = open_store(uri)
    assert first.content_hash != second.content_hash  # another version: names cannot tell
    test, train = (
        leakage.split_hashes(store, first, "test"),
        leakage.split_hashes(store, second, "train"),
    )
    assert (len(test), len(train)) == (first.n_test, second.n_train)
    found = leakage.overlap(test, train, "seed 1")
    expected = len(set(_pixels(store, first, "test")) & set(_pixels(store, second, "train")))
    assert found.images == expected
    assert found.images > first.n_test / 2  # 75 % of the images train under another seed
    assert found.fraction == pytest.approx(expected / first.n_test)
    reason = leakage.refusal(found, "trial:x", first, 0.01)
    assert reason.startswith(f"leakage: trial:x: {expected} of the {first.n_test} test images ")
    assert "above max_overlap 1.0%" in reason
    assert leakage.refusal(found, "trial:x", first, 1.0) == ""
    # The same version's own splits are disjoint, and so are two different datasets.
    assert leakage.overlap(test, leakage.split_hashes(store, first, "train"), "").images == 0
    from components.data.datasets import prepare_all

    faces = prepare_all(["faces"], 16, 0, uri)[0]
    assert leakage.overlap(leakage.split_hashes(store, faces, "train"), train, "").images == 0
    # Cached per dataset version: read back from the store without decoding an image.
    assert store.exists(f"{leakage.HASH_PREFIX}/{first.content_hash}/test.bin")
    leakage._MEMO.clear()
    monkeypatch.setattr(leakage, "image_bytes_hash", lambda data: pytest.fail("recomputed"))
    np.testing.assert_array_equal(leakage.split_hashes(store, first, "test"), test)


def test_hash_lists_are_checked_and_bounded(tmp_path, monkeypatch):
    from components.transfer import leakage
    from components.transfer.sources import parse_model_list

    digest = "ab" * 32
    good = leakage.parse_hash_lines(["# a comment\n", "\n", f"{digest}  img/0.png\n"], "l")
    assert good.tolist() == [bytes.fromhex(digest)]
    for lines, message in [
        (["xyz\n"], "l line 1: 'xyz' is not a SHA-256"),
        ([digest[:-2] + "\n"], "not a SHA-256"),
        (["a" * (leakage.MAX_LINE_CHARS + 1)], "longer than"),
    ]:
        with pytest.raises(TransferError, match=message):
            leakage.parse_hash_lines(lines, "l")
    monkeypatch.setattr(leakage, "MAX_SOURCE_HASHES", 2)
    with pytest.raises(TransferError, match="more than 2 hashes"):
        leakage.parse_hash_lines([digest] * 3, "l")
    # A line of one huge word is read in bounded pieces, and refused.
    path = tmp_path / "huge.txt"
    path.write_text("f" * 100_000)
    with pytest.raises(TransferError, match="line 1: longer than"):
        leakage.read_hash_list(path, "huge.txt")
    # The model list names the list per model; credentials in its URI are refused.
    (entry,) = parse_model_list("model,weights,source_hashes\nm,random,/lists/m.sha256\n")
    assert entry.source_hashes == "/lists/m.sha256"
    with pytest.raises(TransferError, match="source_hashes URI of 'm' carries credentials"):
        parse_model_list("model,source_hashes\nm,s3://key:secret@bucket/m.sha256\n")
    for value in (-0.1, 1.5, "x"):
        with pytest.raises(TransferError, match="max_overlap"):
            leakage.check_max_overlap(value)


def _weights(tmp_path, name: str) -> str:
    import timm
    import torch

    from components.transfer.sources import weights_file_bytes

    torch.manual_seed(0)
    path = tmp_path / f"{name}.pth"
    path.write_bytes(weights_file_bytes(timm.create_model(name)))
    return str(path)


def test_a_source_hash_list_refuses_pretrained_weights(tmp_path, digits_two_seeds, capsys):
    """Weights trained elsewhere on digits split with seed 1: their hash list, made by
    'aprflow transfer hashes' from image files, refuses digits split with seed 0 and counts
    the overlap; with the threshold at 1 the pair runs and the overlap is still reported."""
    from PIL import Image

    from components.data.datasets import load_split
    from components.transfer.sources import ModelEntry
    from components.transfer.study import SETUP, StudySettings, evaluate_model

    uri, target, source = digits_two_seeds
    store = open_store(uri)
    folder = tmp_path / "source-images"
    folder.mkdir()
    for i, image in enumerate(load_split(store, source, "train")[0]):
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    capsys.readouterr()
    assert main(["hashes", str(folder)]) == 0
    listing = capsys.readouterr().out
    assert len(listing.splitlines()) == source.n_train
    hashes = tmp_path / "source.sha256"
    hashes.write_text(listing)
    expected = len(set(_pixels(store, target, "test")) & set(_pixels(store, source, "train")))

    entry = ModelEntry("test_resnet", _weights(tmp_path, "test_resnet"), "", None, str(hashes))
    settings = StudySettings(regimes=("knn",), input_size=32)
    rows = [r.to_dict() for r in evaluate_model(entry, [target], store, settings)]
    by = {(r["regime"], r["metric"]): r for r in rows}
    assert by[(SETUP, "test_overlap_images")]["value"] == expected
    assert by[(SETUP, "test_overlap_fraction")]["value"] == pytest.approx(expected / 450)
    assert by[(SETUP, "test_overlap_fraction")]["unit"] == "fraction"
    knn = [r for r in rows if r["regime"] == "knn"]
    assert len(knn) == 2 and all(r["status"] == "failed" for r in knn)
    assert knn[0]["status_reason"] == (
        f"leakage: test_resnet: {expected} of the 450 test images of digits "
        f"({target.content_hash}; {expected / 450:.1%}) are among its training images (the "
        f"list {hashes}, {source.n_train} images): above max_overlap 1.0%"
    )
    # The input sides: fed 32 px, weights made for the pretrained_cfg's, target at 16.
    import timm

    made_for = timm.create_model("test_resnet").pretrained_cfg["input_size"][-1]
    assert by[(SETUP, "input_size")]["value"] == 32.0
    assert by[(SETUP, "source_input_size")]["value"] == made_for != 32
    assert by[(SETUP, "input_size_changed")]["value"] == 1.0
    assert by[(SETUP, "target_resolution")]["value"] == 16.0

    rows = evaluate_model(entry, [target], store, dataclasses.replace(settings, max_overlap=1.0))
    statuses = {(r.regime, r.metric): (r.status, r.value) for r in rows}
    assert statuses[(SETUP, "test_overlap_images")] == ("ok", expected)
    assert statuses[("knn", "knn_top1")][0] == "ok"

    # A model with no known source images: the overlap is reported as not checked.
    bare = ModelEntry("test_resnet", "random")
    rows = [r.to_dict() for r in evaluate_model(bare, [target], store, settings)]
    unchecked = next(r for r in rows if r["metric"] == "test_overlap_images")
    assert unchecked["value"] is None and unchecked["status"] == "ok"
    assert unchecked["status_reason"].startswith("not checked: no source images known")
    assert next(r for r in rows if r["metric"] == "source_input_size")["value"] is None


def test_a_trial_is_refused_on_a_reseeded_split_of_its_data(trained_trial, capsys):
    """The acceptance case: the trial trained on faces split with seed 0; faces split with
    seed 1 holds the same images, and the study and the single-backbone command refuse it
    with the count. An input size other than the trial's resolution refuses its LEEP and
    warns."""
    from components.data.datasets import prepare_all
    from components.transfer import leakage
    from components.transfer.sources import ModelEntry
    from components.transfer.study import SETUP, StudySettings, evaluate_model

    uri, trial_id = trained_trial
    store = open_store(uri)
    own = prepare_all(["faces"], 12, 0, uri)[0]
    reseeded = prepare_all(["faces"], 12, 1, uri)[0]
    expected = leakage.overlap(
        leakage.split_hashes(store, reseeded, "test"),
        leakage.split_hashes(store, own, "train"),
        "",
    ).images
    assert expected > reseeded.n_test / 2
    entry = ModelEntry(f"trial:{trial_id}")
    rows = evaluate_model(entry, [own, reseeded], store, StudySettings(regimes=("knn",)))
    by = {(r.dataset, r.regime, r.metric): r for r in rows if r.dataset == "faces"}
    assert by[("faces", SETUP, "source_input_size")].value == 12.0
    # Both targets are named faces: the rows of the refused one follow its setup rows.
    overlaps = [r.value for r in rows if r.metric == "test_overlap_images"]
    assert overlaps == [0.0, float(expected)]
    knn = [r for r in rows if r.regime == "knn"]
    assert [r.status for r in knn] == ["ok", "ok", "failed", "failed"]
    assert knn[2].status_reason.startswith(
        f"leakage: trial:{trial_id}: {expected} of the {reseeded.n_test} test images of faces "
        f"({reseeded.content_hash}; "
    )
    assert f"(the training split of faces ({own.content_hash}))" in knn[2].status_reason

    code = main(
        ["--backbone", f"trial:{trial_id}", "--datasets", "faces", "--resolution", "12"]
        + ["--seed", "1", "--store", uri, "--regimes", "knn"]
    )
    err = capsys.readouterr().err
    assert code != 0
    assert f"error: leakage: trial:{trial_id}: {expected} of the {reseeded.n_test}" in err

    # Fed 16 px, the 12-px trial's LEEP is refused; kNN runs, flagged and warned.
    settings = StudySettings(regimes=("knn", "leep"), input_size=16)
    rows = evaluate_model(entry, [own], store, settings)
    leep = next(r for r in rows if r.regime == "leep")
    assert leep.status == "failed"
    assert leep.status_reason.startswith(
        "leep: refused: the trial's classifier was trained at 12 px and input_size feeds it 16 px"
    )
    assert all(r.status == "ok" for r in rows if r.regime == "knn")
    changed = next(r for r in rows if r.metric == "input_size_changed")
    assert changed.value == 1.0
    assert f"warning: trial:{trial_id} is fed 16 px, its weights were made for 12 px" in (
        capsys.readouterr().err
    )


def test_every_budget_is_in_the_rows_and_the_report(tmp_path, digits_two_seeds):
    """A fine-tune cut by max_steps records its steps, its schedule, the cap, epochs and
    images seen; none of these rows is taken for an accuracy by the analysis; the report
    shows them and says the target is under-trained."""
    from analysis.table import metric_kind
    from components.transfer.report import budgets
    from components.transfer.sources import ModelEntry
    from components.transfer.study import (
        BUDGET_METRICS,
        SETUP_METRICS,
        StudySettings,
        budget_values,
        evaluate_model,
    )

    uri, target, _ = digits_two_seeds
    store = open_store(uri)
    settings = StudySettings(
        regimes=("finetune",),
        input_size=32,
        finetune_max_steps=2,
        recipe_overrides={"lr_grid": [0.1], "weight_decay_grid": [0.0]},
        device="cpu",
    )
    entry = ModelEntry("test_resnet", _weights(tmp_path, "test_resnet"))
    rows = [r.to_dict() for r in evaluate_model(entry, [target], store, settings)]
    values = {r["metric"]: r["value"] for r in rows if r["regime"] == "finetune"}
    assert all(r["status"] == "ok" for r in rows), rows
    n = target.n_train  # refit on train + the validation carved from it: every training image
    schedule = round(20_000 * n / 50_000)  # the recipe: 20k steps at 50,000 images
    assert values["finetune_steps"] == 2 and values["finetune_max_steps"] == 2
    assert values["finetune_schedule_steps"] == schedule
    assert values["finetune_capped"] == 1.0
    assert values["finetune_images_seen"] == 2 * 256
    assert values["finetune_epochs"] == pytest.approx(2 * 256 / n)
    for metric in BUDGET_METRICS + SETUP_METRICS:
        assert metric_kind(metric) is None, metric  # skipped by the APR analysis

    table = budgets(rows)
    (line,) = table["rows"]
    cells = dict(zip(table["columns"], line, strict=True))
    assert cells["fine-tune steps"] == f"2 of {schedule} (cap 2)"
    assert cells["fine-tune images"] == "512" and cells["test overlap"] == "not checked"
    assert cells["input px"] == "32" and cells["target px"] == "16"
    assert any("stopped at the step cap" in note for note in table["notes"])

    # Uncapped, and without a refit: the grid run's budget.
    result = type("Result", (), {})()
    result.__dict__.update(
        refit=False, steps=50, refit_steps=0, schedule_steps=50, batch_size=10, train_images=100
    )
    assert budget_values(result, None) == {
        "finetune_steps": 50.0,
        "finetune_schedule_steps": 50.0,
        "finetune_max_steps": None,
        "finetune_capped": 0.0,
        "finetune_epochs": 5.0,
        "finetune_images_seen": 500.0,
    }


def _tie_broken_by_index(train, train_y, test, test_y, k):
    """The old rule, by brute force: neighbours sorted by (-similarity, index)."""
    from components.transfer.knn import cosine_neighbors

    same = train_y[cosine_neighbors(train, test, k)] == test_y[:, None]
    return same[:, 0].mean(), same.mean()


def test_knn_ties_share_the_credit_whatever_the_row_order():
    """Constructed ties: one-hot features, so similarities are exactly 0 or 1. The scores
    equal the average of the lower-index rule over every order of the training rows, and do
    not change when the rows are shuffled."""
    from components.transfer.knn import knn_evaluate

    eye = np.eye(3, dtype=np.float32)
    train_y = np.array([0, 1, 1, 0, 2, 2])
    train = eye[[0, 0, 0, 1, 1, 2]]  # three images tie at query e0, with classes 0, 1, 1
    test, test_y = eye[[0, 1, 2]], np.array([0, 0, 2])
    for k in (1, 2, 4):
        result = knn_evaluate(train, train_y, test, test_y, k=k)
        orders = [np.array(p) for p in itertools.permutations(range(len(train)))]
        averages = np.mean(
            [_tie_broken_by_index(train[p], train_y[p], test, test_y, k) for p in orders], axis=0
        )
        assert result.top1 == pytest.approx(averages[0])
        assert result.topk_fraction == pytest.approx(averages[1])
    # k = 1: query e0 ties with three images (1 of class 0): 1/3; e1 ties with two (1 of
    # class 0): 1/2; e2 has one nearest image, of its class: 1.
    assert knn_evaluate(train, train_y, test, test_y, k=1).top1 == pytest.approx(
        (1 / 3 + 1 / 2 + 1) / 3
    )
    # Many exact ties (features on a coarse grid): shuffling the rows changes nothing.
    rng = np.random.default_rng(3)
    train, test = rng.integers(0, 2, (60, 4)).astype(float), rng.integers(0, 2, (25, 4))
    train_y, test_y = rng.integers(0, 3, 60), rng.integers(0, 3, 25)
    base = knn_evaluate(train, train_y, test, test_y, k=5)
    for seed in range(5):
        p, q = (
            np.random.default_rng(seed).permutation(60),
            np.random.default_rng(seed).permutation(25),
        )
        shuffled = knn_evaluate(train[p], train_y[p], test[q], test_y[q], k=5, chunk_size=7)
        assert shuffled.top1 == pytest.approx(base.top1, abs=1e-12)
        assert shuffled.topk_fraction == pytest.approx(base.topk_fraction, abs=1e-12)
