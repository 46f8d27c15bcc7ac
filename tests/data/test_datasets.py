"""Built-in datasets and their shards in the store."""

import json

import numpy as np
import pytest

from components.common.storage import open_store
from components.data.datasets import (
    BUILTIN_DATASETS,
    DatasetError,
    load_manifest,
    load_split,
    materialize,
    prepare_all,
    stratified_split,
)


@pytest.mark.parametrize("name", sorted(BUILTIN_DATASETS))
def test_materialize_each_builtin(tmp_path, name):
    store = open_store(str(tmp_path))
    ref = materialize(store, name, resolution=12)
    x_train, y_train = load_split(store, ref, "train")
    x_test, y_test = load_split(store, ref, "test")
    assert x_train.shape[1:] == (12, 12, 3) and x_train.dtype == np.uint8
    assert (len(x_train), len(x_test)) == (ref.n_train, ref.n_test)
    assert set(np.unique(y_train)) == set(range(ref.num_classes)) == set(np.unique(y_test))
    assert x_train.std() > 10, "images are not blank"
    manifest = load_manifest(store, ref)
    assert len(manifest["class_names"]) == ref.num_classes
    assert all(0 < s < 1 for s in manifest["std"])


def test_materialize_is_cached_and_deterministic(tmp_path):
    store = open_store(str(tmp_path / "a"))
    ref = materialize(store, "shapes", 16)
    keys = store.list("datasets/")
    assert materialize(store, "shapes", 16) == ref
    assert store.list("datasets/") == keys
    other = materialize(open_store(str(tmp_path / "b")), "shapes", 16)
    assert other.content_hash == ref.content_hash
    assert materialize(store, "shapes", 16, seed=1).content_hash != ref.content_hash


def test_split_is_stratified():
    labels = np.repeat([0, 1, 2], [40, 8, 4])
    train, test = stratified_split(labels, 0.25, seed=0)
    assert not set(train) & set(test)
    assert len(train) + len(test) == len(labels)
    assert list(np.bincount(labels[test])) == [10, 2, 1]


def test_unknown_dataset_writes_nothing(tmp_path):
    with pytest.raises(DatasetError, match="unknown or missing dataset.*cifar.*choose from digits"):
        prepare_all(["digits", "cifar"], 16, 0, str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()


def test_cli(tmp_path, capsys):
    from components.data.cli import main

    assert main(["faces", "--resolution", "10", "--store", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["num_classes"] == 2
    assert main(["nope", "--store", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: unknown or missing dataset")
