"""The reports' wording: verdicts that follow the interval, the reference dataset first and
marked, human names for slices, proper plurals, wide tables that scroll in their box."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

# (statistic, supported sign and strength, answer). The boundaries: an interval entirely
# above 0, one that includes 0 (touching it counts), one entirely below 0; a strength word
# only as far as the end nearest 0 reaches.
VERDICTS = [
    ({"value": -0.13, "ci_low": -0.29, "ci_high": 0.05}, (0, None), "No clear relation"),
    ({"value": 0.2, "ci_low": 0.0, "ci_high": 0.4}, (0, None), "No clear relation"),
    ({"value": -0.2, "ci_low": -0.4, "ci_high": 0.0}, (0, None), "No clear relation"),
    (
        {"value": 0.3, "ci_low": 0.05, "ci_high": 0.5},
        (1, None),
        "Partly: agreement of uncertain size",
    ),
    (
        {"value": 0.3, "ci_low": 0.1, "ci_high": 0.5},
        (1, "at least weak"),
        "Partly: at least weak agreement",
    ),
    (
        {"value": 0.62, "ci_low": 0.41, "ci_high": 0.77},
        (1, "at least moderate"),
        "Partly: at least moderate agreement",
    ),
    (
        {"value": 0.6, "ci_low": 0.5, "ci_high": 0.7},
        (1, "at least strong"),
        "Yes: at least strong agreement",
    ),
    (
        {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9},
        (1, "very strong"),
        "Yes: very strong agreement",
    ),
    ({"value": -0.2, "ci_low": -0.4, "ci_high": -0.02}, (-1, None), "No, the ranking is reversed"),
    (
        {"value": -0.6, "ci_low": -0.8, "ci_high": -0.35},
        (-1, "at least moderate"),
        "No, the ranking is reversed: at least moderate disagreement",
    ),
    # Without a bootstrap the point estimate stands for the interval.
    ({"value": 0.05}, (0, None), "No clear relation"),
    (
        {"value": 0.45, "ci_low": None, "ci_high": None},
        (1, "moderate"),
        "Partly: moderate agreement",
    ),
    (
        {"value": -0.75},
        (-1, "very strong"),
        "No, the ranking is reversed: very strong disagreement",
    ),
]


@pytest.mark.parametrize(("stat", "supported", "answer"), VERDICTS)
def test_verdict_follows_the_interval(stat, supported, answer):
    from analysis import readings

    assert readings.relation(stat) == supported
    assert readings.answer_word(stat) == answer


def test_an_interval_across_zero_is_no_clear_relation_not_a_reversal():
    from analysis import readings

    stat = {"value": -0.13, "ci_low": -0.29, "ci_high": 0.05}
    assert readings.correlation_sentence("Spearman ρ", stat, "imagenet") == (
        "Spearman ρ = -0.13 [-0.29, 0.05]: no clear relation with imagenet "
        "(the 95% interval includes 0)."
    )
    below = {"value": -0.5, "ci_low": -0.7, "ci_high": -0.32}
    assert readings.correlation_sentence("r", below, "x") == (
        "r = -0.50 [-0.70, -0.32]: at least moderate disagreement with x (rankings reversed)."
    )


@pytest.mark.parametrize(
    ("metric", "words"),
    [
        ("top1_error", "top-1 error"),
        ("top5_error", "top-5 error"),
        ("top1", "top-1 accuracy"),
        ("knn_top1", "kNN top-1 accuracy"),
        ("knn_top5_fraction", "kNN top-5 fraction"),
        ("top1_error@imagenet_v2", "top-1 error on imagenet_v2"),
        ("logme", "LogME"),
        ("val_acc", "val accuracy"),
    ],
)
def test_metric_names_in_words(metric, words):
    from analysis import readings

    assert readings.metric_words(metric) == words


def test_plural():
    from analysis.words import noun, plural

    assert [plural(n, "model") for n in (0, 1, 2)] == ["0 models", "1 model", "2 models"]
    assert plural(1, "analysis", "analyses") == "1 analysis"
    assert plural(3, "analysis", "analyses") == "3 analyses"
    assert (noun(1, "column"), noun(2, "column")) == ("column", "columns")


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory) -> tuple[dict, str, str]:
    """The reference, ``zoo``, sorts last by name; two seeds give the seed tables."""
    from analysis import analyze
    from analysis.synthetic import synthetic_results

    table = synthetic_results(n_models=30, n_datasets=3, n_seeds=2, n_failed=2, seed=3)
    table["dataset"] = table["dataset"].replace({"imagenet": "zoo"})
    out = tmp_path_factory.mktemp("zoo")
    summary = analyze(table, out, reference="zoo", top_k=5, n_bootstrap=50, title="Zoo")
    return summary, (out / "report.md").read_text(), (out / "report.html").read_text()


def test_reference_comes_first_and_is_marked_in_every_table(zoo_run):
    import json

    from analysis import report

    summary, md, html = zoo_run
    tables = report.report_tables(summary)
    checked = []
    for name, table in tables.items():
        for t in table.values() if name in ("top_k", "reference_top_ranks") else [table]:
            names = [
                row[t["columns"].index(c)]
                for row in t["rows"]
                for c in t["columns"]
                if c in ("dataset", "trained on")
            ]
            if "zoo (reference)" in names:
                assert names[0] == "zoo (reference)", name
                assert "zoo" not in names, f"{name}: the reference unmarked"
                checked.append(name)
    assert {"datasets", "matrix", "architecture", "seeds", "excluded"} <= set(checked)
    matrix = tables["matrix"]
    assert matrix["columns"][:3] == ["dataset", "zoo (reference)", "ds01"]
    assert list(tables["top_k"])[0] == "zoo (reference)"
    assert "| zoo (reference) | 30 |" in md.split("## Error distribution per dataset")[1][:400]
    # The model table and the sections in HTML: the reference's columns first.
    data = json.loads(html.split('id="model-data">')[1].split("</script>")[0])
    assert data["columns"][1:3] == ["zoo error", "zoo rank"]
    assert html.index("<summary>zoo (reference)</summary>") < html.index("<summary>ds01</summary>")


def test_answer_block_names_slices_in_words(tmp_path):
    from analysis import analyze

    rng = np.random.default_rng(5)
    a = 20 + 3 * rng.normal(size=12)
    frame = pd.DataFrame(
        {
            "model": [f"m{i}" for i in range(12)] * 2,
            "dataset": "imagenet",
            "recipe": ["apr_tiny"] * 12 + ["rsb_a3"] * 12,
            "top1_error": np.concatenate([a, a + rng.normal(size=12)]),
            "top5_error": np.concatenate([a / 3, a / 3 + rng.normal(size=12)]),
        }
    )
    analyze(frame, tmp_path, n_bootstrap=20, title="Recipes")
    html = (tmp_path / "report.html").read_text()
    answer = html.split('<section id="answer">')[1].split("</section>")[0]
    assert "apr_tiny/top5_error" not in answer and "rsb_a3/" not in answer
    assert "<b>imagenet, recipe apr_tiny: top-1 error vs top-5 error</b>" in answer
    assert "<b>imagenet, top-5 error: recipe apr_tiny vs rsb_a3</b>" in answer
    assert "the best on imagenet (top-5 error, recipe apr_tiny)" in answer
    md = (tmp_path / "report.md").read_text()
    assert "**imagenet, recipe rsb_a3: top-1 error vs top-5 error**" in md


def test_counts_read_as_proper_plurals(tmp_path):
    from analysis import analyze

    frame = pd.DataFrame(
        {
            "model": list("abcde") * 2,
            "dataset": ["x"] * 5 + ["y"] * 5,
            "error": [1, 2, 3, 4, 5.0, 2, 1, 4, 3, None],
            "status": ["ok"] * 9 + ["failed"],
        }
    )
    analyze(frame, tmp_path, reference="x", n_bootstrap=0, title="Plurals")
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "(s)" not in md and "(s)" not in html
    assert "1 row excluded." in md
    assert "1 model with a result on only one of the two datasets is left out" in md
    assert (
        "**y**: Yes: strong agreement (Spearman ρ = 0.60, n = 4 models, fewer than 10: "
        "indicative only)" in md
    )
    assert "1 row is excluded from every statistic" in re.sub(r"\s+", " ", html)


class _TablePlaces(HTMLParser):
    """For each <table>, whether an enclosing <div> has the class ``scroll``."""

    def __init__(self) -> None:
        super().__init__()
        self.divs: list[bool] = []
        self.tables: list[bool] = []

    def handle_starttag(self, tag, attrs):
        if tag == "div":
            self.divs.append("scroll" in (dict(attrs).get("class") or "").split())
        elif tag == "table":
            self.tables.append(any(self.divs))

    def handle_endtag(self, tag):
        if tag == "div" and self.divs:
            self.divs.pop()


def scrolls_in_box(html: str) -> bool:
    """Every table sits in a ``.scroll`` box and the page's CSS lets that box scroll."""
    css = html.split("<style>")[1].split("</style>")[0]
    places = _TablePlaces()
    places.feed(html)
    return (
        bool(places.tables)
        and all(places.tables)
        and bool(re.search(r"\.scroll\s*\{[^}]*overflow-x:\s*auto", css))
    )


def test_wide_tables_scroll_inside_their_box(zoo_run, tmp_path):
    from components.transfer.compare import compare
    from components.transfer.report import write_report

    assert scrolls_in_box(zoo_run[2])
    row = {"model": "m", "dataset": "d", "regime": "knn", "metric": "knn_top1", "value": 0.5}
    rows = [row | {"status": "ok", "unit": "fraction", "seconds": 1.0, "status_reason": ""}]
    html = write_report(tmp_path / "t.html", "T", rows, compare(rows), [])
    assert scrolls_in_box(html)
