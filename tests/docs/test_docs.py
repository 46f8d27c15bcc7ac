"""The documentation: the site builds strictly, the README stays short, the repository stands
alone, and the tables that restate code (recipes, study parameters) agree with it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
README_MAX_LINES = 150
# Folders that are not the repository's own text: environments, outputs, caches, the built site.
SKIPPED_DIRS = {".venv", "runs", "mlruns", "site", "build", "dist", "node_modules", "fixtures"}
SOURCE_SUFFIXES = {".py", ".md", ".yaml", ".yml"}
# References to notes or paths outside the repository. Written with a character class so that
# this file does not match itself.
OUTSIDE_REFERENCE = re.compile(r"SEED[S]|shared[/]")
ISSUE_REFERENCE = re.compile(r"\bissue\s*#?\d+", re.IGNORECASE)
# A repository path in code format (`components/train/trial.py`, `tests/train/`), as the pages
# name files; placeholders (`<name>`, `*`, `{a,b}`) are patterns, not paths.
REPOSITORY_PATH = re.compile(
    r"`((?:analysis|charts|components|docs|images|pipelines|recipes|requirements|tests)/[^`\s]*)`"
)


def _repository_files(suffixes: set[str]) -> list[Path]:
    files = []
    for folder, subfolders, names in os.walk(ROOT):
        # Pruned in place, so that os.walk never enters the virtual environment.
        subfolders[:] = [d for d in subfolders if d not in SKIPPED_DIRS and not d.startswith(".")]
        files += [Path(folder, name) for name in names if Path(name).suffix in suffixes]
    return files


# `aprflow ...` in a page: in a code block or span, or after a shell prompt; up to a comment.
INVOCATION = re.compile(r"(?:^|`|\$ )\s*(aprflow [^`#|]*)")
needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason="mkdocs is not installed (pip install -e '.[dev]')",
)


@needs_mkdocs
def test_site_builds_strictly(tmp_path):
    """Broken links or anchors, a missing page or a failing CLI-reference hook fail the build."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # no end-of-life banner in the output
    )
    assert result.returncode == 0, result.stderr[-4000:]
    cli = (tmp_path / "reference" / "cli" / "index.html").read_text()
    for command in (
        "aprflow run",
        "aprflow data build",
        "aprflow transfer study",
        "aprflow analyze",
    ):
        assert f'id="{command.replace(" ", "-")}"' in cli, f"the CLI reference lacks {command}"
    assert str(ROOT) not in cli, "the CLI reference holds the path of this checkout"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_readme_links_lead_to_files():
    """The README is read on the repository host, outside the site: its links are paths."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert targets, "the README links to no page"
    missing = [t for t in targets if "://" not in t and not (ROOT / t).is_file()]
    assert not missing, missing


def _documentation_pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_paths_named_in_the_documentation_exist():
    missing = [
        f"{page.relative_to(ROOT)}: {path}"
        for page in _documentation_pages()
        for path in (m.split("::")[0] for m in REPOSITORY_PATH.findall(page.read_text()))
        if not any(c in path for c in "<*{…") and not (ROOT / path).exists()
    ]
    assert not missing, missing


@needs_mkdocs
def test_options_in_the_documentation_exist():
    """Every `--option` of an `aprflow ...` command in the README and the pages is one its
    parser takes (the parsers of the generated CLI reference)."""
    spec = importlib.util.spec_from_file_location(
        "cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py"
    )
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    # The parser of each command and sub-command: `aprflow data build` is ("data", "build").
    parsers = {tuple(parser.prog.split()[1:]): parser for parser in hook.all_parsers()}
    unknown = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for line in page.read_text().replace("\\\n", " ").splitlines():
            for invocation in INVOCATION.findall(line):
                words = invocation.split()[1:]
                depth = max(n for n in range(len(words) + 1) if tuple(words[:n]) in parsers)
                parser = parsers[tuple(words[:depth])]
                options = {o for action in parser._actions for o in action.option_strings}
                for word in words[depth:]:
                    option = word.strip("[]()'\",;").split("=")[0]
                    if option.startswith("--") and option not in options:
                        unknown.append(f"{page.relative_to(ROOT)}: {option} in {invocation}")
    assert not unknown, unknown


def test_nothing_refers_outside_the_repository():
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _repository_files(SOURCE_SUFFIXES)
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE_REFERENCE.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_documentation_cites_no_issue_numbers():
    hits = [
        f"{page.relative_to(ROOT)}: {match.group()}"
        for page in _documentation_pages()
        for match in ISSUE_REFERENCE.finditer(page.read_text())
    ]
    assert not hits, hits


def test_the_reference_checks_can_fail():
    assert OUTSIDE_REFERENCE.search("see SEED" + "S 003")
    assert OUTSIDE_REFERENCE.search("../shared" + "/x")
    assert ISSUE_REFERENCE.search("as issue #12 asked") and not ISSUE_REFERENCE.search("issues")
    assert REPOSITORY_PATH.findall("see `components/x.py` and `pip install`") == ["components/x.py"]


def test_recipe_table_matches_the_recipe_files():
    from components.train.recipes import RECIPES

    page = (ROOT / "docs" / "recipes.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| (\d+) \| ([^|]+) \| ([^|]+) \|", page, re.M)
    assert {name for name, *_ in rows} == set(RECIPES), "docs/recipes.md lists other recipes"
    for name, epochs, batch, optimizer, lr in rows:
        recipe = RECIPES[name]
        assert int(batch) == recipe.batch_size, name
        assert optimizer.split()[0].lower() == recipe.opt, name
        if epochs.strip().isdigit():  # finetune/scratch count steps, not epochs
            assert int(epochs) == recipe.epochs, name
        if lr.strip() != "grid":
            assert float(lr) == pytest.approx(recipe.lr), name


def test_apr_study_page_lists_every_pipeline_parameter():
    from pipelines.apr_study import apr_study

    page = (ROOT / "docs" / "studies" / "apr-study.md").read_text()
    listed = re.search(r"`(study_name, [^`]+)`", page).group(1)
    names = [name.strip() for name in listed.split(",")]
    assert names == list(apr_study.component_spec.inputs), "docs/studies/apr-study.md"
