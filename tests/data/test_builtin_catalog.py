"""Built-in datasets are first-class named datasets: listed, described (prepared or not) and
buildable under a name from ``builtin:NAME``; unknown names get the nearest ones."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from components.common.storage import open_store
from components.data.builtin import BUILTIN_DATASETS, load_raw
from components.data.cli import main
from components.data.datasets import builtin_split_counts, load_manifest, materialize
from components.data.descriptor import DatasetError


def _data(capsys, *argv: str, store) -> tuple[int, str, str]:
    code = main([*argv, "--store", str(store)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_digits_are_scikit_learns_read_without_importing_it():
    """digits reads scikit-learn's data file itself (the import costs the dataset task about a
    second): the same images and labels as ``load_digits``, and scikit-learn stays unimported."""
    from sklearn.datasets import load_digits

    raw, bunch = load_raw("digits"), load_digits()
    np.testing.assert_array_equal(raw.images, bunch.images * (255.0 / 16.0))
    np.testing.assert_array_equal(raw.labels, bunch.target)
    assert raw.class_names == tuple(str(n) for n in bunch.target_names)
    code = (
        "import sys; from components.data.builtin import load_raw; load_raw('digits'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(BUILTIN_DATASETS))
def test_what_a_builtin_says_is_what_it_loads(name):
    """The listing reads the metadata instead of loading the images: they must agree."""
    info, raw = BUILTIN_DATASETS[name], load_raw(name)
    assert info.class_names == raw.class_names
    assert [n for _, n in info.class_counts] == np.bincount(raw.labels).tolist()
    assert raw.images.shape[1:3] == (info.image_side, info.image_side)
    assert (raw.images.ndim == 4) == (info.colour == "RGB")


def test_split_counts_are_those_materialised(tmp_path):
    store = open_store(str(tmp_path))
    manifest = load_manifest(store, materialize(store, "faces", 10, seed=3))
    counts = builtin_split_counts("faces")
    for split in ("train", "val", "test"):
        assert counts[split]["n"] == manifest["splits"][split]["n"]
        if counts[split]["n"]:
            assert counts[split]["per_class"] == manifest["splits"][split]["per_class"]


def test_list_and_describe_before_and_after_prepare(tmp_path, capsys):
    store = tmp_path / "store"
    code, out, _ = _data(capsys, "list", store=store)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == set(BUILTIN_DATASETS)
    assert "built-in" in rows["faces"] and rows["faces"].endswith("(prepared on first use)")
    assert rows["faces"].split()[2:6] == ["2", "150", "0", "50"]

    code, out, _ = _data(capsys, "describe", "faces", store=store)
    assert code == 0
    assert "Labeled Faces in the Wild" in out and "licence" in out
    assert "not prepared in" in out and "non-face" in out
    assert not store.exists(), "describing a built-in set writes nothing"

    code, out, _ = _data(capsys, "prepare", "faces", "--resolution", "12", "--json", store=store)
    (ref,) = json.loads(out)
    code, out, _ = _data(capsys, "describe", "faces", "--json", store=store)
    assert code == 0
    described = json.loads(out)
    assert described["builtin"] and described["source"] == "builtin:faces"
    assert described["class_names"] == ["non-face", "face"]
    assert described["splits"]["train"]["n"] == ref["n_train"]
    assert described["prepared"] == [
        {
            "resolution": 12,
            "seed": 0,
            "test_fraction": 0.25,
            "content_hash": ref["content_hash"],
            "manifest_key": ref["manifest_key"],
        }
    ]
    code, out, _ = _data(capsys, "describe", "faces", store=store)
    assert f"12px, seed 0: content {ref['content_hash']}, manifest {ref['manifest_key']}" in out

    code, out, _ = _data(capsys, "list", "--json", store=store)
    listed = {entry["name"]: entry for entry in json.loads(out)}
    assert [p["resolution"] for p in listed["faces"]["prepared"]] == [12]
    assert listed["digits"]["prepared"] == [] and listed["digits"]["num_classes"] == 10
    code, out, _ = _data(capsys, "list", store=store)
    assert "builtin:faces (prepared at 12 px)" in out


def test_build_a_named_dataset_from_a_builtin(tmp_path, capsys):
    store = tmp_path / "store"
    code, out, err = _data(capsys, "build", "my-faces", "--from", "builtin:faces", store=store)
    assert code == 0, err
    assert out.startswith("my-faces: ") and "2 classes, 25px" in out  # its own size
    code, out, err = _data(
        capsys,
        "build",
        "faces16",
        "--from",
        "builtin:faces",
        "--resolution",
        "16",
        "--json",
        store=store,
    )
    assert code == 0, err
    ref = json.loads(out)
    assert ref["resolution"] == 16 and ref["n_val"] > 0  # the build's own split rule

    code, out, _ = _data(capsys, "list", "--json", store=store)
    listed = {entry["name"]: entry for entry in json.loads(out)}
    assert listed["my-faces"]["source"] == "builtin:faces" and not listed["my-faces"]["builtin"]
    assert listed["faces"]["prepared"] == [], "a named build is not the built-in set's"
    code, out, _ = _data(capsys, "describe", "faces16", store=store)
    assert code == 0 and out.startswith("faces16  (builtin:faces)")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["describe", "digitz"], "no dataset 'digitz' in "),
        (["prepare", "shapez"], "unknown or missing dataset(s) shapez: did you mean shapes"),
        (["build", "x", "--from", "builtin:facez"], "unknown built-in dataset 'facez'"),
    ],
)
def test_unknown_names_suggest_the_nearest(argv, message, tmp_path, capsys):
    code, out, err = _data(capsys, *argv, store=tmp_path / "store")
    assert code == 1 and out == ""
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert "did you mean" in err


def test_debug_raises_for_the_traceback(tmp_path):
    """``--debug`` before or after the sub-command: the error escapes with its traceback."""
    for argv in (["--debug", "describe", "digitz"], ["describe", "digitz", "--debug"]):
        with pytest.raises(DatasetError, match="did you mean digits"):
            main([*argv, "--store", str(tmp_path)])
