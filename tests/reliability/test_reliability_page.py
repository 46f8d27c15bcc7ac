"""Every row of the reliability table (docs/reliability.md) names the tests that prove it.

A guarantee the documentation gives stays tested: a row without a test file, a test file that
was renamed or deleted, or a ``-k`` filter that no longer selects a test fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
PAGE = ROOT / "docs" / "reliability.md"
TEST_PATH = re.compile(r"tests/[\w/]+(?:\.py)?")  # a test file or a folder of them
KEYWORD = re.compile(r"-k\s+(?:\"([^\"]+)\"|'([^']+)'|(\S+))")


def reliability_rows(page: str) -> list[list[str]]:
    """The table rows (cells) of the reliability page's fault table."""
    rows = []
    for line in page.splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == "fault":  # the header
            continue
        rows.append(cells)
    return rows


def _test_names(paths: list[Path]) -> set[str]:
    names = set()
    for path in paths:
        names |= set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.MULTILINE))
    return names


def test_every_reliability_row_names_existing_tests():
    rows = reliability_rows(PAGE.read_text())
    assert len(rows) >= 10, "the reliability table is missing or was cut"
    for cells in rows:
        proof = cells[-1]
        if proof == "all of the above":
            continue
        paths = [ROOT / p for p in TEST_PATH.findall(proof)]
        assert paths, f"reliability row {cells[0]!r} names no test file"
        for path in paths:
            assert path.exists(), f"reliability row {cells[0]!r}: {path} does not exist"
        files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("test_*.py")))]
        names = _test_names(files)
        assert names, f"reliability row {cells[0]!r}: its files hold no test"
        for match in KEYWORD.finditer(proof):
            expression = next(g for g in match.groups() if g)
            words = [w for w in re.findall(r"\w+", expression) if w not in {"and", "or", "not"}]
            assert any(w in name for w in words for name in names), (
                f"reliability row {cells[0]!r}: -k {expression!r} selects no test"
            )


def test_the_check_fails_on_a_row_without_a_test():
    page = "| fault | outcome | command |\n| --- | --- | --- |\n| x | y | z |\n"
    (cells,) = reliability_rows(page)
    assert not TEST_PATH.findall(cells[-1])
