"""Dataset names and class names: a name is bound once (rebinding takes ``--replace``, never a
concurrent build), built-in names are reserved, a subset cannot take its parent's name; a dataset
needs 2 classes; a file or class name that a store key or a one-line listing cannot hold is
skipped and counted, and an unusable class name never becomes a class."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from data.imagesets import CLASSES, encoded, picture
from faults import aprflow_env

from components.common.storage import open_store
from components.data.build import build_dataset, load_manifest, named_dataset
from components.data.cli import main
from components.data.descriptor import DatasetDescriptor, DatasetError, DatasetRef

BIDI = "\u202e"  # RIGHT-TO-LEFT OVERRIDE


def _folder(root: Path, start: int = 0, per_class: int = 4, classes=CLASSES) -> Path:
    """``root/<class>/<i>.png``: ``per_class`` small images per class, numbered from ``start``
    (another ``start`` gives other images, so other content)."""
    for kind in classes:
        (root / kind).mkdir(parents=True)
        for i in range(start, start + per_class):
            picture(kind, i, size=10).save(root / kind / f"{i}.png")
    return root


def _data(capsys, *argv: str, store: Path) -> tuple[int, str, list[str]]:
    """``aprflow data ARGV --store STORE --json -q``: (exit status, stdout, stderr lines)."""
    code = main([*argv, "--store", str(store), "--json", "-q"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def _printed_ref(out: str) -> dict:
    """The dataset a build printed, or the last of a subset's."""
    printed = json.loads(out)
    return printed[-1] if isinstance(printed, list) else printed


def _dataset_ref(out: str) -> DatasetRef:
    return DatasetRef(**_printed_ref(out))


def _bound(store: Path, name: str) -> dict | None:
    record = named_dataset(open_store(str(store)), name)
    return None if record is None else record["ref"]


def _refused(code: int, err: list[str], *phrases: str) -> None:
    assert code == 1 and len(err) == 1 and err[0].startswith("error: "), err
    for phrase in phrases:
        assert phrase in err[0], err


def test_a_name_is_bound_once_and_replace_rebinds(tmp_path, capsys):
    store = tmp_path / "store"
    first, other = _folder(tmp_path / "first"), _folder(tmp_path / "other", start=10)
    code, out, _ = _data(capsys, "build", "pets", "--from", str(first), store=store)
    assert code == 0
    bound = _printed_ref(out)
    assert _bound(store, "pets") == bound

    # The same content again (also from a copy elsewhere: another build key): exit 0, unchanged.
    copy = _folder(tmp_path / "copy")
    for source in (first, copy):
        code, out, _ = _data(capsys, "build", "pets", "--from", str(source), store=store)
        assert code == 0 and _printed_ref(out) == bound and _bound(store, "pets") == bound

    code, _, err = _data(capsys, "build", "pets", "--from", str(other), store=store)
    _refused(code, err, "dataset name 'pets'", "is bound to", str(first), "--replace")
    assert _bound(store, "pets") == bound, "the name still points at the first build"

    code, out, _ = _data(capsys, "build", "pets", "--from", str(other), "--replace", store=store)
    assert code == 0
    rebound = _printed_ref(out)
    assert rebound["content_hash"] != bound["content_hash"]
    assert _bound(store, "pets") == rebound
    code, _, _ = _data(capsys, "list", store=store)
    assert code == 0


def test_a_subset_is_bound_once_and_never_under_its_parents_name(tmp_path, capsys):
    store = tmp_path / "store"
    _data(capsys, "build", "pets", "--from", str(_folder(tmp_path / "src")), store=store)
    parent = _bound(store, "pets")
    for extra in ([], ["--replace"]):
        code, _, err = _data(
            capsys, "subset", "pets", "--n-classes", "2", "--name", "pets", *extra, store=store
        )
        _refused(code, err, "cannot be named 'pets'", "unreachable")
        assert _bound(store, "pets") == parent

    # --draws names NAME-d0, NAME-d1: one of them is the parent's, so none is built.
    _data(capsys, "build", "pets-d1", "--from", str(_folder(tmp_path / "src2")), store=store)
    code, _, err = _data(
        capsys, "subset", "pets-d1", "--n-classes", "2", "--draws", "2", "--name", "pets",
        store=store,
    )  # fmt: skip
    _refused(code, err, "cannot be named 'pets-d1'")
    assert _bound(store, "pets-d0") is None

    coarse = tmp_path / "coarse.json"
    coarse.write_text(json.dumps({"circle": "round", "square": "angular", "stripes": "angular"}))
    code, out, _ = _data(capsys, "subset", "pets", "--n-classes", "2", "--name", "two", store=store)
    assert code == 0
    two = _printed_ref(out)
    code, _, err = _data(
        capsys, "subset", "pets", "--coarse", str(coarse), "--name", "two", store=store
    )
    _refused(code, err, "dataset name 'two'", "derived:pets", "--replace")
    assert _bound(store, "two") == two
    args = ["subset", "pets", "--coarse", str(coarse), "--name", "two", "--replace"]
    code, out, _ = _data(capsys, *args, store=store)
    assert code == 0 and _bound(store, "two") == _printed_ref(out) != two


def test_built_in_names_are_reserved(tmp_path, capsys):
    store = tmp_path / "store"
    source = _folder(tmp_path / "src")
    for name in ("digits", "faces", "shapes"):
        code, _, err = _data(capsys, "build", name, "--from", str(source), store=store)
        _refused(code, err, f"{name!r} is the name of a built-in dataset")
    _data(capsys, "build", "pets", "--from", str(source), store=store)
    code, _, err = _data(
        capsys, "subset", "pets", "--n-classes", "2", "--name", "digits", store=store
    )
    _refused(code, err, "'digits' is the name of a built-in dataset")
    assert [_bound(store, n) for n in ("digits", "faces", "shapes")] == [None] * 3


def test_a_build_that_finishes_second_is_refused(tmp_path):
    """Build B runs from start to end while build A is between its manifest and its name
    (hooked into A's last progress line): A is refused, also with ``replace``."""
    store = open_store(str(tmp_path / "store"))
    sources = [str(_folder(tmp_path / f"s{n}", start=10 * n)) for n in range(4)]

    def build(source: str, during=None, replace: bool = False):
        def progress(line: str) -> None:
            if during is not None and line.startswith("pets: "):  # the build's summary line
                during()

        descriptor = DatasetDescriptor(name="pets", source=source)
        return build_dataset(store, descriptor, progress, replace=replace)

    with pytest.raises(DatasetError, match="was bound to .* by another build while this one ran"):
        build(sources[0], during=lambda: build(sources[1]))
    winner = named_dataset(store, "pets")
    assert winner["descriptor"]["source"] == sources[1]

    with pytest.raises(DatasetError, match="by another build while this one ran"):
        build(sources[2], during=lambda: build(sources[3], replace=True), replace=True)
    assert named_dataset(store, "pets")["descriptor"]["source"] == sources[3]


def test_two_concurrent_builds_of_one_name_one_wins(tmp_path):
    store = tmp_path / "store"
    sources = [_folder(tmp_path / "a"), _folder(tmp_path / "b", start=10)]
    logs = [(tmp_path / f"{n}.out", tmp_path / f"{n}.err") for n in "ab"]
    processes = []
    for source, (out, err) in zip(sources, logs, strict=True):
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            command = [sys.executable, "-m", "components.data", "build", "pets"]
            command += ["--from", str(source), "--store", str(store), "--json", "-q"]
            processes.append(
                subprocess.Popen(command, env=aprflow_env(), stdout=stdout, stderr=stderr)
            )
    codes = [p.wait(timeout=120) for p in processes]
    assert sorted(codes) == [0, 1], codes
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    errors = logs[loser][1].read_text().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: dataset name 'pets'"), errors
    assert "--replace" in errors[0]
    printed = _printed_ref(logs[winner][0].read_text())
    record = named_dataset(open_store(str(store)), "pets")
    assert record["ref"] == printed and record["descriptor"]["source"] == str(sources[winner])


# --- classes and class names ---------------------------------------------------------------


def test_fewer_than_two_classes_are_refused(tmp_path, capsys):
    store = tmp_path / "store"
    source = _folder(tmp_path / "src")
    code, _, err = _data(
        capsys, "build", "one", "--from", str(source), "--classes", "circle", store=store
    )
    _refused(code, err, "1 class", "at least 2")
    single = _folder(tmp_path / "single", classes=("circle",))
    code, _, err = _data(capsys, "build", "one", "--from", str(single), store=store)
    _refused(code, err, "1 class(es)", "at least 2")
    assert _bound(store, "one") is None

    _data(capsys, "build", "pets", "--from", str(source), store=store)
    coarse = tmp_path / "coarse.json"
    coarse.write_text(json.dumps(dict.fromkeys(CLASSES, "shape")))
    code, _, err = _data(
        capsys, "subset", "pets", "--coarse", str(coarse), "--name", "x", store=store
    )
    _refused(code, err, "keeps 1 class", "at least 2")
    code, _, err = _data(capsys, "subset", "pets", "--n-classes", "1", "--name", "x", store=store)
    _refused(code, err, "at least 2 classes")
    assert _bound(store, "x") is None


def test_unusable_file_and_folder_names_are_skipped_and_counted(tmp_path, capsys):
    store = tmp_path / "store"
    source = _folder(tmp_path / "src")
    picture("circle", 50, size=10).save(source / "circle" / "new\nline.png")
    (source / "back\\slash").mkdir()
    for i in range(4):
        picture("square", 60 + i, size=10).save(source / "back\\slash" / f"{i}.png")
    code, out, err = _data(capsys, "build", "pets", "--from", str(source), store=store)
    assert code == 0, err
    manifest = load_manifest(open_store(str(store)), _dataset_ref(out))
    assert manifest["class_names"] == list(CLASSES)
    assert manifest["skipped_by_reason"]["unusable file name"] == 5
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert reasons["circle/new\\nline.png"] == "unusable file name: it holds '\\n'"
    assert reasons["back\\slash/0.png"] == "unusable file name: it holds '\\\\'"
    assert all("\n" not in s["file"] for s in manifest["skipped"]), "one line per skipped file"


def _shard(path: Path, labels: dict[str, int]) -> str:
    """A WebDataset shard: for each label (a class name in ``.cls``), that many images."""
    with tarfile.open(path, "w") as tar:
        n = 0
        for label, count in labels.items():
            for _ in range(count):
                kind = CLASSES[n % len(CLASSES)]
                for suffix, data in (("png", encoded(picture(kind, n))), ("cls", label.encode())):
                    info = tarfile.TarInfo(f"sample-{n:04d}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                n += 1
    return str(path)


UNUSABLE_LABELS = ["", "  ", "nul\x00byte", f"{BIDI}gpj.exe", "two\nlines", "iso\u2066late"]


def test_unusable_class_names_never_become_classes(tmp_path, capsys):
    store = tmp_path / "store"
    shard = _shard(
        tmp_path / "shard.tar", {"circle": 4, "square": 4} | dict.fromkeys(UNUSABLE_LABELS, 1)
    )
    code, out, err = _data(capsys, "build", "wds", "--from", shard, store=store)
    assert code == 0, err
    manifest = load_manifest(open_store(str(store)), _dataset_ref(out))
    assert manifest["class_names"] == ["circle", "square"]
    assert manifest["skipped_by_reason"]["unusable class name"] == len(UNUSABLE_LABELS)
    reasons = [s["reason"] for s in manifest["skipped"]]
    assert reasons.count("unusable class name: empty") == 2
    assert "unusable class name: 'nul\\x00byte' holds '\\x00'" in reasons
    assert "unusable class name: '\\u202egpj.exe' holds '\\u202e'" in reasons
    for skipped in manifest["skipped"]:
        assert not {BIDI, "\n", "\x00"} & set(skipped["file"] + skipped["reason"]), skipped

    # An ImageFolder class folder so named: its files are skipped, the class is not made.
    source = _folder(tmp_path / "src")
    (source / f"{BIDI}tac").mkdir()
    for i in range(4):
        picture("circle", 70 + i, size=10).save(source / f"{BIDI}tac" / f"{i}.png")
    code, out, _ = _data(capsys, "build", "folder", "--from", str(source), store=store)
    manifest = load_manifest(open_store(str(store)), _dataset_ref(out))
    assert code == 0 and manifest["class_names"] == list(CLASSES)
    assert manifest["skipped_by_reason"] == {"unusable class name": 4}, manifest[
        "skipped_by_reason"
    ]

    # Only one usable class left: refused as a one-class dataset.
    shard = _shard(tmp_path / "one.tar", {"circle": 4, "two\nlines": 4})
    code, _, err = _data(capsys, "build", "one", "--from", shard, store=store)
    _refused(code, err, "1 class(es)", "at least 2")

    # A class name the user writes (class list, coarse map) is refused, not skipped.
    code, _, err = _data(
        capsys, "build", "listed", "--from", str(source), "--classes", "circle", f"{BIDI}tac",
        store=store,
    )  # fmt: skip
    _refused(code, err, "unusable class name: '\\u202etac'")
    coarse = tmp_path / "coarse.json"
    coarse.write_text(json.dumps({"circle": "round", "square": "nul\x00", "stripes": "round"}))
    code, _, err = _data(
        capsys, "subset", "folder", "--coarse", str(coarse), "--name", "c", store=store
    )
    _refused(code, err, "coarse map of 'folder'", "holds '\\x00'")
    assert [_bound(store, n) for n in ("one", "listed", "c")] == [None] * 3
