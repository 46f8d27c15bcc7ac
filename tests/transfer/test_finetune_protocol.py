"""Kornblith et al.'s fixed-step protocol and the learning curves of fine-tune and scratch.

Kornblith, Shlens, Le 2019, "Do Better ImageNet Models Transfer Better?", arXiv 1805.08974:
20,000 steps at batch 256 on every target (Section 4.2, Appendix A.5); fine-tuned networks
converge faster than the same architecture from scratch (Section 4.6).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _data(n: int, seed: int):
    """3-class images whose class shifts the mean: learnable in a few steps, not at once."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=generator)
    x = torch.randn(n, 3, 32, 32, generator=generator) + 0.5 * y[:, None, None, None].float()
    return x, y


def test_fixed_policy_trains_the_reference_steps_on_every_size():
    from components.train.recipes import RECIPES, Recipe, resolve_recipe
    from components.transfer.finetune import scaled_steps

    kornblith = RECIPES["finetune_kornblith"]
    # The paper's smallest and largest training sets (2,040 and 75,750 images), and more.
    assert [scaled_steps(kornblith, n) for n in (2_040, 75_750, 10**6)] == [20_000] * 3
    assert scaled_steps(RECIPES["finetune"], 2_040) == 816, "the default scales: 20k x 2040/50k"
    assert scaled_steps(kornblith, 2_040, max_steps=50) == 50, "the cap applies after the policy"
    # The policy is a fine-tune field: a trainer's Recipe has none, and refuses it.
    assert "steps_policy" not in {f.name for f in dataclasses.fields(Recipe)}
    with pytest.raises(ValueError, match="steps_policy: a field of the fine-tune recipes"):
        resolve_recipe("apr_short", {"steps_policy": "fixed"})
    with pytest.raises(ValueError, match="'steps_policy' must be one of scaled, fixed"):
        resolve_recipe("finetune", {"steps_policy": "epochs"})


def test_the_kornblith_recipe_is_finetune_with_the_fixed_policy():
    from components.train.recipes import RECIPES, resolve_recipe

    kornblith = RECIPES["finetune_kornblith"]
    fixed = resolve_recipe("finetune", {"steps_policy": "fixed"})
    assert dataclasses.replace(fixed, name="finetune_kornblith") == kornblith
    assert (kornblith.reference_steps, kornblith.batch_size) == (20_000, 256)
    assert (kornblith.opt, kornblith.momentum, kornblith.sched) == ("sgd", 0.9, "cosine")
    header = (ROOT / "recipes" / "finetune_kornblith.yaml").read_text().split("\nepochs:")[0]
    for source in ("arXiv 1805.08974", "Section 4.2", "Appendix A.5", "NOT the paper's grid"):
        assert source in header, source


def test_curve_steps():
    from components.transfer.finetune import curve_steps

    assert curve_steps(20_000, 10) == [0, *range(2_000, 20_001, 2_000)]
    assert curve_steps(3, 10) == [0, 1, 2, 3], "fewer steps than points: every step"
    assert curve_steps(7, 2) == [0, 4, 7]  # round(3.5) = 4 (to even)
    assert curve_steps(500, 0) == []


def test_recording_a_curve_leaves_the_training_unchanged():
    """The same start trained with and without a curve ends with identical weights; the curve
    holds the accuracy at the requested steps, its last point that of the trained model."""
    import timm
    import torch

    from components.transfer.finetune import Curve, accuracy, train_steps

    torch.manual_seed(0)
    start = timm.create_model("test_resnet", num_classes=3)
    train, test = _data(64, 1), _data(48, 2)
    options = dict(
        steps=6, lr=0.05, weight_decay=1e-4, batch_size=16, momentum=0.9, hflip=True, seed=3
    )
    plain, _ = train_steps(copy.deepcopy(start), *train, device="cpu", **options)
    curve = Curve(*test, eval_batch_size=32, at=[0, 3, 6])
    traced, engine = train_steps(copy.deepcopy(start), *train, device="cpu", curve=curve, **options)
    for (name, a), b in zip(plain.state_dict().items(), traced.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [s for s, _ in curve.points] == [0, 3, 6]
    assert curve.points[-1][1] == accuracy(traced, engine, *test, 32)
    assert len({a for _, a in curve.points}) > 1, "the accuracy moved over the steps"


def test_finetune_records_the_reported_runs_curve_and_policy():
    import timm
    import torch

    from components.transfer.finetune import MAX_CURVE_POINTS, finetune

    torch.manual_seed(0)
    model = timm.create_model("test_resnet")
    train, val, test = _data(96, 4), _data(48, 5), _data(48, 6)
    options = dict(overrides={"lr_grid": [0.05], "weight_decay_grid": [0.0]}, device="cpu")

    refit = finetune(model, 3, train, val, test, max_steps=8, curve_points=4, **options)
    assert refit.steps_policy == "scaled" and refit.refit_steps == 8
    assert [s for s, _ in refit.curve] == [0, 2, 4, 6, 8]
    assert refit.curve[0][1] == refit.initial_accuracy  # the same start, the same test split
    assert refit.curve[-1][1] == refit.accuracy
    none = finetune(model, 3, train, val, test, max_steps=8, **options)
    assert none.curve == [] and none.accuracy == refit.accuracy

    fixed = {"overrides": options["overrides"] | {"steps_policy": "fixed"}, "device": "cpu"}
    grid = finetune(model, 3, train, val, test, max_steps=5, curve_points=2, refit=False, **fixed)
    assert grid.steps_policy == "fixed" and grid.steps == 5
    assert grid.schedule_steps == 20_000, "the fixed policy's schedule, before the cap"
    assert [s for s, _ in grid.curve] == [0, 2, 5]  # round(2.5) = 2
    assert grid.curve[-1][1] == grid.accuracy == grid.grid_accuracy

    with pytest.raises(ValueError, match=rf"curve_points must be in \[0, {MAX_CURVE_POINTS}\]"):
        finetune(model, 3, train, val, test, curve_points=MAX_CURVE_POINTS + 1, **options)


def _records():
    """Two models on one target: fine-tune ahead of scratch early, both curves complete."""
    curves = {
        ("m1", "finetune"): [(0, 0.1), (10, 0.6), (20, 0.8)],
        ("m1", "scratch"): [(0, 0.1), (10, 0.2), (20, 0.5)],
        ("m2", "finetune"): [(0, 0.2), (10, 0.7), (20, 0.9)],
        ("m2", "scratch"): [(0, 0.1), (10, 0.3), (20, 0.7)],
    }
    return [
        {"model": m, "dataset": "digits", "regime": r, "step": s, "top1": a}
        for (m, r), points in curves.items()
        for s, a in points
    ]


def test_curves_side_table_figure_and_sentence(tmp_path):
    from components.transfer.curves import (
        CURVE_COLUMNS,
        convergence_sentences,
        curve_figure,
        curve_records,
        curves_to_csv,
        parse_curves,
    )
    from components.transfer.study import Row

    rows = [
        Row("m1", "digits", "finetune", "top1", 0.8, curve=((0, 0.1), (10, 0.6), (20, 0.8))),
        Row("m1", "digits", "finetune", "finetune_lr", 0.05),
    ]
    records = curve_records(rows)
    assert [r["step"] for r in records] == [0, 10, 20]
    assert "curve" not in rows[0].to_dict(), "the curve is a side table, not a column"
    text = curves_to_csv(_records())
    assert text.splitlines()[0] == ",".join(CURVE_COLUMNS)
    assert parse_curves(text) == _records()

    # Medians at step 10: fine-tune (0.6, 0.7) -> 0.65, scratch (0.2, 0.3) -> 0.25; at 20:
    # 0.85 against 0.6.
    assert convergence_sentences(_records()) == [
        "On digits, fine-tuned models reach a median test top-1 of 0.650 at step 10 against "
        "0.250 from scratch, and 0.850 against 0.600 at step 20 (n = 2 models with both "
        "curves)."
    ]
    only_finetune = [r for r in _records() if r["regime"] == "finetune"]
    assert convergence_sentences(only_finetune) == []

    png = curve_figure(_records(), tmp_path / "figures" / "learning_curves.png")
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert curve_figure([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from components.data.datasets import prepare_all

    store_uri = str(tmp_path_factory.mktemp("protocol") / "store")
    return store_uri, prepare_all(["digits"], 16, 0, store_uri)[0]


def test_a_study_writes_curves_and_the_report_draws_them(tmp_path, digits, capsys):
    """One weights file on digits, fine-tune and scratch for 4 steps with 2 curve points: the
    side table holds both curves (their last points are the reported top1), the report shows
    the figure and the sentence."""
    import timm
    import torch

    from components.transfer.cli import main
    from components.transfer.sources import weights_file_bytes

    store_uri, _ = digits
    torch.manual_seed(1)
    weights = tmp_path / "test_resnet.pth"
    weights.write_bytes(weights_file_bytes(timm.create_model("test_resnet")))
    models = tmp_path / "models.csv"
    models.write_text(f"model,weights,source_dataset,source_top1\ntest_resnet,{weights},,\n")
    out = tmp_path / "out"
    argv = ["study", "--models", str(models), "--datasets", "digits", "--resolution", "16"]
    argv += ["--input-size", "32", "--regimes", "finetune", "scratch", "--store", store_uri]
    argv += ["--finetune-max-steps", "4", "--curve-points", "2", "--set", "recipe.lr_grid=[0.05]"]
    argv += ["--set", "recipe.weight_decay_grid=[0.0]", "--bootstrap", "0", "--out-dir", str(out)]
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    curves = list(csv.DictReader((out / "curves.csv").open()))
    results = list(csv.DictReader((out / "results.csv").open()))
    for regime in ("finetune", "scratch"):
        points = [r for r in curves if r["regime"] == regime]
        assert [int(r["step"]) for r in points] == [0, 2, 4]
        top1 = next(r for r in results if (r["regime"], r["metric"]) == (regime, "top1"))
        assert float(points[-1]["top1"]) == float(top1["value"])
    html = (out / "report.html").read_text()
    assert "Convergence: fine-tune vs scratch" in html
    assert 'alt="learning_curves" src="data:image/png;base64,' in html
    assert "On digits, fine-tuned models reach a median test top-1 of" in html
