"""Derived datasets (class subsets, per-class budgets, coarse labels) checked by counting, and
the ``aprflow data`` command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.common.storage import open_store
from components.data.build import build_dataset, load_manifest, load_split, named_dataset
from components.data.cli import main
from components.data.descriptor import (
    DatasetDescriptor,
    DatasetError,
    DatasetRef,
    ImagePolicy,
    SubsetRule,
)
from components.data.subsets import choose_classes, subset_descriptor


@pytest.fixture
def digits_store(tmp_path):
    """The real digits (10 classes) built under the name 'd10' at 8 px."""
    store = open_store(str(tmp_path / "store"))
    descriptor = DatasetDescriptor(name="d10", source="builtin:digits", image=ImagePolicy(8))
    ref = build_dataset(store, descriptor, print)
    return store, ref


def _subset(store, name, **rule):
    return build_dataset(store, subset_descriptor(name, "d10", SubsetRule(**rule)), print)


def test_class_draws_nest_and_differ():
    draws = {k: set(choose_classes(100, SubsetRule(classes=k, seed=3))) for k in (2, 5, 10)}
    assert draws[2] < draws[5] < draws[10]
    independent = [set(choose_classes(100, SubsetRule(classes=k, nested=False))) for k in (5, 10)]
    assert not independent[0] <= independent[1] or len(independent[0]) == 5
    draw_1 = set(choose_classes(100, SubsetRule(classes=10, seed=3, draw=1)))
    assert draw_1 != draws[10] and len(draw_1) == 10
    assert choose_classes(100, SubsetRule(classes=10, seed=3)) == sorted(draws[10])


def test_class_subset_counts(digits_store):
    store, parent = digits_store
    parent_manifest = load_manifest(store, parent)
    ref = _subset(store, "d10-k3", classes=3, seed=1)
    manifest = load_manifest(store, ref)
    kept = manifest["class_names"]
    assert len(kept) == 3 and set(kept) <= set(parent_manifest["class_names"])
    for split in ("train", "val", "test"):
        expected = sum(parent_manifest["splits"][split]["per_class"][c] for c in kept)
        assert manifest["splits"][split]["n"] == expected
        assert manifest["splits"][split]["per_class"] == {
            c: parent_manifest["splits"][split]["per_class"][c] for c in kept
        }
    x, y = load_split(store, ref, "train")
    assert sorted(set(y.tolist())) == [0, 1, 2] and x.shape[1:] == (8, 8, 3)
    assert manifest["descriptor"]["source"] == "derived:d10"
    assert manifest["descriptor"]["subset"]["classes"] == 3
    again = _subset(store, "d10-k3", classes=3, seed=1)
    assert again == ref, "cached by parent and rule"

    # --held-out: the 7 classes the same draw leaves out, with all their images.
    argv = ["subset", "d10", "--n-classes", "3", "--seed", "1", "--held-out", "--name", "rest"]
    assert main([*argv, "--store", store.uri]) == 0
    rest = load_manifest(store, DatasetRef(**named_dataset(store, "rest")["ref"]))
    assert set(rest["class_names"]) == set(parent_manifest["class_names"]) - set(kept)
    assert rest["descriptor"]["subset"]["held_out"] is True
    assert rest["splits"]["test"]["per_class"] == {
        c: parent_manifest["splits"]["test"]["per_class"][c] for c in rest["class_names"]
    }


def test_per_class_budget_and_coarse_labels(digits_store):
    store, parent = digits_store
    parent_manifest = load_manifest(store, parent)
    ref = _subset(store, "d10-n20", per_class=20, seed=0)
    manifest = load_manifest(store, ref)
    assert set(manifest["splits"]["train"]["per_class"].values()) == {20}
    assert manifest["splits"]["test"] == {
        **manifest["splits"]["test"],
        "per_class": parent_manifest["splits"]["test"]["per_class"],
    }
    other = _subset(store, "d10-n20b", per_class=20, seed=1)
    assert other.content_hash != ref.content_hash, "another seed, other images"

    parity = tuple((str(d), "even" if d % 2 == 0 else "odd") for d in range(10))
    coarse = load_manifest(store, _subset(store, "d10-parity", coarse=parity))
    assert coarse["class_names"] == ["even", "odd"]
    for split in ("train", "test"):
        per_class = parent_manifest["splits"][split]["per_class"]
        assert coarse["splits"][split]["per_class"]["even"] == sum(
            per_class[str(d)] for d in range(0, 10, 2)
        )
    with pytest.raises(DatasetError, match="leaves class.*without a parent"):
        _subset(store, "bad", coarse=parity[:8])
    with pytest.raises(DatasetError, match="has .* training images: --per-class 5000"):
        _subset(store, "bad", per_class=5000)
    with pytest.raises(DatasetError, match="exceeds the parent's 10 classes"):
        _subset(store, "bad", classes=11)
    with pytest.raises(DatasetError, match="no dataset 'nope'"):
        build_dataset(store, subset_descriptor("x", "nope", SubsetRule(classes=2)), print)


def test_cli_build_describe_subset_list(tmp_path, image_folder, capsys):
    store = str(tmp_path / "store")
    assert main(["build", "pets", "--from", str(image_folder), "--store", store, "--json"]) == 0
    captured = capsys.readouterr()
    ref = json.loads(captured.out)  # the result alone on stdout
    assert ref["num_classes"] == 3 and ref["n_train"] == 21
    assert "[data] pets:" in captured.err  # progress on stderr

    assert main(["describe", "pets", "--store", store]) == 0
    table = capsys.readouterr().out
    assert "circle" in table and "skipped files: 4" in table and "broken.png" in table
    assert main(["describe", "pets", "--json", "--store", store]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["val"]["n"] == 3

    (tmp_path / "map.json").write_text(json.dumps({"circle": "round", "square": "angular"}))
    args = ["subset", "pets", "--coarse", str(tmp_path / "map.json"), "--name", "c"]
    assert main([*args, "--store", store]) == 1
    assert "stripes" in capsys.readouterr().err
    args = ["subset", "pets", "--n-classes", "2", "--draws", "2", "--seed", "4", "--name", "k2"]
    assert main([*args, "--store", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["k2-d0", "k2-d1"]
    assert all("2 classes" in line for line in lines)

    assert main(["list", "--json", "--store", store]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(listed) == {"pets", "k2-d0", "k2-d1", "digits", "faces", "shapes", "shapes_v2"}
    assert listed["k2-d0"]["num_classes"] == 2 and listed["k2-d0"]["source"] == "derived:pets"
    assert not listed["pets"]["builtin"] and listed["digits"]["builtin"]
    assert main(["list", "--store", store]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["name", "kind", "classes", "train", "val", "test", "source"]
    assert [row.split()[:2] for row in rows[1:]] == [
        ["k2-d0", "built"],
        ["k2-d1", "built"],
        ["pets", "built"],
        ["digits", "built-in"],
        ["faces", "built-in"],
        ["shapes", "built-in"],
        ["shapes_v2", "built-in"],
    ]


def test_cli_errors_are_one_line(tmp_path, capsys):
    store = str(tmp_path / "store")
    cases = [
        (["build", "Bad Name", "--from", str(tmp_path)], "invalid dataset name"),
        (["build", "x", "--from", str(tmp_path / "none")], "does not exist"),
        (["build", "x", "--from", str(tmp_path), "--split", "val=2"], "split fractions"),
        (["describe", "pest"], "no dataset 'pest'"),
        (["subset", "nope", "--n-classes", "2", "--name", "y"], "no dataset 'nope'"),
        (["nope"], "unknown or missing dataset(s) nope"),
    ]
    for argv, message in cases:
        assert main([*argv, "--store", store]) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    for option, value in (("--resolution", "4"), ("--resolution", "100000"), ("--seed", "-1")):
        # argparse: usage line + error line, exit 2
        assert main(["build", "x", "--from", str(tmp_path), option, value, "--store", store]) == 2
        assert "expected an integer in" in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "store").exists()


def test_cli_prepare_keeps_the_original_form(tmp_path, capsys):
    assert main(["faces", "--resolution", "10", "--store", str(tmp_path), "--json"]) == 0
    (ref,) = json.loads(capsys.readouterr().out)
    assert ref["num_classes"] == 2 and ref["resolution"] == 10 and ref["input"] == "memory"
    assert np.isclose(ref["n_train"] / (ref["n_train"] + ref["n_test"]), 0.75)
    # The common options may come first; a near miss of a sub-command is a usage error.
    assert main(["-q", "faces", "--resolution", "10", "--store", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("faces: 150 train") and captured.err == ""
    assert main(["describ", "faces", "--store", str(tmp_path)]) == 2
    assert "invalid choice: 'describ'" in capsys.readouterr().err
