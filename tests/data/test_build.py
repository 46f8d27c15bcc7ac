"""Building user datasets: ImageFolder, WebDataset, manifests and torchvision files, local and on
the loopback S3 server, with broken input skipped and counted or refused in one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from imagesets import CLASSES, PER_CLASS, encoded, make_image_folder, make_webdataset, picture

from components.common.storage import StoreError, open_store
from components.data.build import build_dataset, list_named, load_manifest, load_split
from components.data.descriptor import DatasetDescriptor, DatasetError, SplitRule
from components.data.shards import iter_samples


def _build(store, source: str, name: str = "mine", replace: bool = False, **kwargs):
    descriptor = DatasetDescriptor(name=name, source=source, **kwargs)
    return build_dataset(store, descriptor, print, replace=replace)


def _reasons(manifest: dict) -> dict[str, str]:
    return {s["file"]: s["reason"] for s in manifest["skipped"]}


def test_image_folder_counts_skips_and_manifest(tmp_path, image_folder):
    store = open_store(str(tmp_path / "store"))
    ref = _build(store, str(image_folder))
    manifest = load_manifest(store, ref)
    assert manifest["class_names"] == list(CLASSES)  # the empty class is dropped
    assert (ref.n_train, ref.n_val, ref.n_test) == (21, 3, 6)  # 10/class: 7 + 1 + 2
    for split, n in (("train", 7), ("val", 1), ("test", 2)):
        assert manifest["splits"][split]["per_class"] == dict.fromkeys(CLASSES, n)
    reasons = _reasons(manifest)
    assert reasons["circle/broken.png"].startswith("corrupt or unreadable image")
    assert reasons["square/notes.txt"] == "not an image file: extension .txt"
    assert reasons["stripes/copy.png"] == "duplicate: same bytes as stripes/000.png"
    assert reasons["empty/"].startswith("empty class")
    assert manifest["n_skipped"] == 4
    assert manifest["skipped_by_reason"]["corrupt or unreadable image"] == 1
    assert manifest["imbalance"] == 1.0
    assert manifest["image_size"]["width"] == {"min": 20, "max": 20, "mean": 20.0}
    assert len(manifest["checksum"]) == 64 and manifest["seed"] == 0
    assert store.get_bytes(manifest["summary"]["png"]).startswith(b"\x89PNG")
    assert b"stripes/copy.png" in store.get_bytes(manifest["summary"]["html"])
    x, y = load_split(store, ref, "train")
    assert x.shape == (21, 20, 20, 3) and np.bincount(y).tolist() == [7, 7, 7]
    # Shards are WebDataset-style: key.png|jpg + key.cls, the stored bytes are the originals.
    shard = store.get_bytes(manifest["splits"]["test"]["shards"][0]["key"])
    samples = list(iter_samples(shard))
    assert len(samples) == 6 and all(set(p) in ({"png", "cls"}, {"jpg", "cls"}) for _, p in samples)


def test_same_inputs_are_not_rebuilt_and_changes_are(tmp_path, image_folder):
    store = open_store(str(tmp_path / "store"))
    ref = _build(store, str(image_folder))
    keys = store.list("datasets/")
    lines = []
    again = build_dataset(
        store, DatasetDescriptor(name="mine", source=str(image_folder)), lines.append
    )
    assert again == ref and store.list("datasets/") == keys
    assert "already built" in lines[0]
    elsewhere = _build(open_store(str(tmp_path / "other")), str(image_folder))
    assert elsewhere.content_hash == ref.content_hash, "deterministic bytes"
    seeded = _build(store, str(image_folder), split=SplitRule(seed=1), replace=True)
    assert seeded.content_hash != ref.content_hash
    (image_folder / "circle" / "new.png").write_bytes(encoded(picture("circle", 50)))
    grown = _build(store, str(image_folder), replace=True)
    assert (
        grown.manifest_key != ref.manifest_key and grown.n_train + grown.n_val + grown.n_test == 31
    )
    assert [r["ref"]["manifest_key"] for r in list_named(store)] == [grown.manifest_key]


def test_given_splits_and_val_carved_from_train(tmp_path):
    root = tmp_path / "tree"
    # ImageNet's layout: val is the evaluation set. A copy of a train image in val is dropped.
    make_image_folder(root / "train", per_class=6)
    make_image_folder(root / "val", per_class=2, start=6)
    (root / "val" / "circle" / "leak.png").write_bytes((root / "train/circle/000.png").read_bytes())
    store = open_store(str(tmp_path / "store"))
    ref = _build(store, str(root))
    manifest = load_manifest(store, ref)
    assert manifest["given_splits"]["test"].startswith("the source's 'val' split")
    assert (ref.n_test, ref.n_val, ref.n_train) == (6, 3, 15)  # 2 val/class as test; 1/class val
    reasons = _reasons(manifest)
    assert reasons["val/circle/leak.png"] == (
        "duplicate: same bytes as train/circle/000.png in split train"
    )
    with pytest.raises(DatasetError, match="no train/val/test splits"):
        _build(store, str(make_image_folder(tmp_path / "flat")), split=SplitRule(mode="given"))


def test_webdataset_shards(tmp_path, shard_pattern):
    store = open_store(str(tmp_path / "store"))
    ref = _build(store, shard_pattern, classes=CLASSES)
    manifest = load_manifest(store, ref)
    assert manifest["class_names"] == list(CLASSES)
    assert ref.n_train + ref.n_val + ref.n_test == 3 * PER_CLASS
    reasons = _reasons(manifest)
    assert reasons["shard-000000.tar:bad-0000"].startswith("corrupt or unreadable image")
    assert reasons["shard-000001.tar:nolabel-0000"].startswith("no label")
    assert reasons["shard-000002.tar:outside-0000"] == "label outside the class list: 7"
    assert manifest["n_skipped"] == 3
    # Without a class list every .cls index is a class: the stray label 7 has one image.
    with pytest.raises(DatasetError, match="class '7' has 1 image"):
        _build(store, shard_pattern, name="numbered")


def test_csv_and_parquet_manifests(tmp_path, image_folder):
    import pandas as pd

    rows = [
        {"path": f"{kind}/{i:03d}.{'jpg' if i % 2 else 'png'}", "label": kind}
        for kind in CLASSES
        for i in range(PER_CLASS)
    ]
    rows[0]["path"] = "circle/missing.png"
    table = pd.DataFrame(rows)
    table.to_csv(image_folder / "labels.csv", index=False)
    table.assign(path=[str(image_folder / p) for p in table.path]).to_parquet(
        tmp_path / "labels.parquet"
    )
    store = open_store(str(tmp_path / "store"))
    for source in (image_folder / "labels.csv", tmp_path / "labels.parquet"):
        ref = _build(store, str(source), name=source.suffix.strip("."))
        manifest = load_manifest(store, ref)
        assert ref.n_train + ref.n_val + ref.n_test == 3 * PER_CLASS - 1
        assert _reasons(manifest)[
            "circle/missing.png"
            if source.suffix == ".csv"
            else str(image_folder / "circle/missing.png")
        ].startswith("cannot be read")
    (tmp_path / "bad.csv").write_text("file_name,y\na.png,1\n")
    with pytest.raises(DatasetError, match="needs a path column.*it has file_name, y"):
        _build(store, str(tmp_path / "bad.csv"))


def _fake_mnist(root: Path, n_train: int = 30, n_test: int = 10) -> None:
    """MNIST's idx files (torchvision reads them without a checksum), with real digits' shapes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    # digits.target[:30] is 0..9 three times: every class in both parts; test images mirrored.
    for prefix, n, flip in (("train", n_train, False), ("t10k", n_test, True)):
        images = np.stack(
            [np.kron(digits.images[i], np.ones((4, 4)))[2:30, 2:30] * 15 for i in range(n)]
        ).astype(np.uint8)
        images = images[:, :, ::-1] if flip else images
        labels = digits.target[:n].astype(np.uint8)
        header = np.array([2051, n, 28, 28], dtype=">i4").tobytes()
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.copy().tobytes())
        header = np.array([2049, n], dtype=">i4").tobytes()
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())


def test_torchvision_dataset_from_local_files(tmp_path):
    _fake_mnist(tmp_path / "tv")
    store = open_store(str(tmp_path / "store"))
    ref = _build(store, f"torchvision:MNIST:{tmp_path / 'tv'}", split=SplitRule(val_fraction=0))
    manifest = load_manifest(store, ref)
    assert manifest["class_names"][:2] == ["0 - zero", "1 - one"]
    assert (ref.n_train, ref.n_test) == (30, 10)
    assert manifest["image_size"]["width"]["max"] == 28


def test_torchvision_missing_files_say_where(tmp_path):
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(
        DatasetError, match=r"CIFAR10 files are missing under .*cifar-10-batches-py"
    ):
        _build(store, f"torchvision:CIFAR10:{tmp_path}")
    with pytest.raises(DatasetError, match="has no dataset class 'NoSuch'"):
        _build(store, f"torchvision:NoSuch:{tmp_path}")
    assert not store.list("datasets/")


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        ("missing", {}, "source directory .* does not exist"),
        ("few", {}, "class 'circle' has 2 image.*needs at least 3 per class"),
        ("folder", {"classes": ("circle", "square", "empty")}, "empty of the class list have no"),
        ("one_class", {}, "needs at least 2"),
        ("folder", {"source": "torchvision:MNIST"}, "use torchvision:CLASS:ROOT"),
    ],
)
def test_bad_input_is_refused_with_nothing_written(tmp_path, setup, kwargs, message):
    root = tmp_path / "src"
    if setup == "few":
        make_image_folder(root, per_class=2)
    elif setup == "folder":
        make_image_folder(root)
    elif setup == "one_class":
        make_image_folder(root)
        for kind in CLASSES[1:]:
            for path in (root / kind).iterdir():
                path.unlink()
    store = open_store(str(tmp_path / "store"))
    descriptor = {"name": "bad", "source": str(root)} | kwargs
    with pytest.raises(DatasetError, match=message):
        build_dataset(store, DatasetDescriptor(**descriptor), print)
    assert not store.list("datasets/")


def test_interrupted_upload_leaves_no_dataset(tmp_path, image_folder):
    store = open_store(str(tmp_path / "store"))
    real_put = store.put_bytes
    calls = []

    def failing_put(key, data):
        calls.append(key)
        if len(calls) == 2:
            raise StoreError("connection reset")
        return real_put(key, data)

    store.put_bytes = failing_put
    with pytest.raises(StoreError):
        _build(store, str(image_folder))
    assert not [k for k in store.list("datasets/") if k.endswith("manifest.json")]
    assert list_named(store) == []
    store.put_bytes = real_put
    ref = _build(store, str(image_folder))  # the next build completes under the same key
    assert ref.n_train == 21


def _upload(client, bucket: str, root: Path, prefix: str) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        client.put_object(
            Bucket=bucket, Key=f"{prefix}/{path.relative_to(root)}", Body=path.read_bytes()
        )


def test_sources_and_store_on_s3(tmp_path, s3_env):
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["APRFLOW_S3_ENDPOINT_URL"])
    _upload(client, s3_env, make_image_folder(tmp_path / "folder"), "raw/folder")
    make_webdataset(tmp_path / "wds")
    _upload(client, s3_env, tmp_path / "wds", "raw/wds")
    store = open_store(f"s3://{s3_env}/aprflow")
    local = open_store(str(tmp_path / "local"))
    folder_ref = _build(store, f"s3://{s3_env}/raw/folder")
    assert folder_ref.content_hash == _build(local, str(tmp_path / "folder")).content_hash
    reasons = _reasons(load_manifest(store, folder_ref))
    assert reasons["circle/broken.png"].startswith("corrupt")
    assert "empty/" not in reasons and len(reasons) == 3  # S3 has no empty folders
    wds_ref = _build(
        store, f"s3://{s3_env}/raw/wds/shard-{{000000..000002}}.tar", "w", classes=CLASSES
    )
    assert wds_ref.n_train + wds_ref.n_val + wds_ref.n_test == 3 * PER_CLASS
    assert {r["ref"]["name"] for r in list_named(store)} == {"mine", "w"}
    with pytest.raises(DatasetError, match="no files under s3://"):
        _build(store, f"s3://{s3_env}/raw/nothing-here")
    with pytest.raises(StoreError, match="s3://no-such-bucket"):
        _build(store, "s3://no-such-bucket/raw")
