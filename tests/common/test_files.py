"""Atomic writes: an error names the caller's path, never the temporary file written first."""

import errno

import pytest

from components.common.files import atomic_write_bytes, atomic_write_text


def test_a_missing_folder_is_named_by_the_callers_path(tmp_path):
    target = tmp_path / "missing" / "specs.jsonl"
    with pytest.raises(FileNotFoundError) as raised:
        atomic_write_text(target, "x")
    assert raised.value.filename == str(target) and ".tmp" not in str(raised.value)


def test_a_failed_write_leaves_no_temporary_file_and_keeps_the_old_bytes(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    target.write_bytes(b"old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("components.common.files.os.fsync", full_disk)
    with pytest.raises(OSError) as raised:
        atomic_write_bytes(target, b"new")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
