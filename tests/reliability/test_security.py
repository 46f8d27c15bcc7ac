"""Security invariants of the code base: checkpoints never unpickle code, archives never write
outside their target, and a shard with path-traversal member names is read in memory only.

(The credential leak check of a whole study is in test_study.py.)
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    p
    for folder in ("components", "pipelines", "analysis", "tests")
    for p in (ROOT / folder).rglob("*.py")
]


def _calls(pattern: str) -> list[tuple[str, str]]:
    """``(file, call text)`` of every call matching ``pattern`` up to its closing parenthesis."""
    found = []
    for path in SOURCES:
        text = path.read_text()
        for match in re.finditer(pattern, text):
            depth, end = 0, match.end()
            for end in range(match.end() - 1, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            found.append((str(path.relative_to(ROOT)), text[match.start() : end + 1]))
    return found


def test_every_torch_load_is_weights_only():
    calls = [c for c in _calls(r"torch\.load\(") if "test_security.py" not in c[0]]
    assert calls, "the checkpoint loaders are found"
    unsafe = [c for c in calls if "weights_only=True" not in c[1]]
    assert unsafe == []


def test_no_archive_is_extracted_without_the_data_filter():
    calls = [c for c in _calls(r"\.extractall\(|\.extract\(") if "test_security.py" not in c[0]]
    unsafe = [c for c in calls if "filter=" not in c[1]]
    assert unsafe == [], "use tarfile's filter='data' (rejects ../, absolute paths, links)"


def test_traversal_member_names_in_a_shard_write_nothing(tmp_path, monkeypatch):
    from components.data.shards import iter_samples

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("../../escape.cls", "/abs/escape.cls", "ok/0001.cls"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"1"))
    monkeypatch.chdir(tmp_path)
    samples = dict(iter_samples(buffer.getvalue()))
    assert samples["ok/0001"] == {"cls": b"1"}
    assert list(tmp_path.rglob("*")) == [] and not (tmp_path.parent.parent / "escape.cls").exists()
