"""Loading and validation of the results table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.table import load_results


def tidy(**columns) -> pd.DataFrame:
    base = {"model": ["a", "b", "c"], "dataset": ["x", "x", "x"]}
    return pd.DataFrame(base | columns)


def test_timm_fixture_skips_comment_lines_and_reads_percent_accuracy(timm_csv):
    table = load_results(timm_csv)
    assert table.metric_column == "top1"
    assert (table.metric_kind, table.scale, table.scale_source) == (
        "accuracy",
        "percent",
        "detected",
    )
    assert len(table.frame) == 240 and table.frame["dataset"].nunique() == 6
    raw = pd.read_csv(timm_csv, comment="#")
    np.testing.assert_allclose(table.frame["error"], 100.0 - raw["top1"], atol=1e-9)


@pytest.mark.parametrize(
    ("column", "values", "scale", "expected"),
    [
        ("top1_error", [10.0, 20.0, 30.0], None, [10.0, 20.0, 30.0]),
        ("error", [0.1, 0.2, 0.3], None, [10.0, 20.0, 30.0]),
        ("accuracy", [0.9, 0.8, 0.7], None, [10.0, 20.0, 30.0]),
        ("top1", [90.0, 80.0, 70.0], None, [10.0, 20.0, 30.0]),
        # Percent errors that happen to be below 1 must be forced.
        ("error", [0.1, 0.2, 0.3], "percent", [0.1, 0.2, 0.3]),
    ],
)
def test_metric_normalised_to_error_percent(column, values, scale, expected):
    table = load_results(tidy(**{column: values}), scale=scale)
    np.testing.assert_allclose(table.frame["error"], expected)
    assert table.scale_source == ("forced" if scale else "detected")


def test_metric_argument_picks_column_and_kind():
    table = load_results(tidy(top5=[99.0, 98.0, 97.0], top1=[1, 2, 3]), metric="top5")
    assert table.metric_kind == "accuracy"
    np.testing.assert_allclose(table.frame["error"], [1.0, 2.0, 3.0])


def test_status_rows_are_excluded_with_reason():
    frame = tidy(
        top1_error=[10.0, None, 30.0],
        status=["ok", "diverged", None],
        status_reason=["", "loss NaN", ""],
    )
    table = load_results(frame)
    assert table.frame["model"].tolist() == ["a", "c"]
    assert table.excluded.to_dict("records") == [
        {"model": "b", "dataset": "x", "seed": None, "status": "diverged", "reason": "loss NaN"}
    ]


def test_empty_metric_on_ok_row_is_an_explicit_exclusion():
    table = load_results(tidy(top1_error=[10.0, np.nan, 30.0]))
    assert table.excluded["status"].tolist() == ["missing_metric"]


def test_parquet_round_trip(tmp_path):
    path = tmp_path / "r.parquet"
    tidy(top1_error=[1.0, 2.0, 3.0], seed=[0, 0, 0], d1=[1, 2, 3]).to_parquet(path)
    table = load_results(path)
    assert table.has_seed and table.arch_columns == ("d1",)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"model": [], "dataset": [], "error": []}), "empty"),
        (pd.DataFrame({"model": ["a"], "error": [1.0]}), "lacks required column"),
        (tidy(loss=[1.0, 2.0, 3.0]), "no metric column"),
        (tidy(top1=["90", "eighty", "70"]), "non-numeric"),
        (tidy(top1=[90.0, 180.0, 70.0]), "outside"),
        (tidy(top1=[90.0, 80.0, 70.0], status=["ok", "crashed", "ok"]), "unknown value"),
        (tidy(top1=[90.0, 80.0, 70.0], d1=[1, "x", 2]), "non-numeric"),
        (
            pd.DataFrame({"model": ["a", "a"], "dataset": ["x", "x"], "top1": [1.0, 2.0]}),
            "duplicate",
        ),
        (tidy(top1=[1.0, 2.0, 3.0], status=["failed"] * 3), "no usable row"),
        (tidy(top1=[1.0, 2.0, 3.0], seed=[0, None, 1]), "seed"),
    ],
)
def test_bad_input_raises_clear_value_error(frame, message):
    with pytest.raises(ValueError, match=message):
        load_results(frame)


def test_duplicates_allowed_across_seeds_but_not_within():
    frame = pd.DataFrame(
        {"model": ["a", "a"], "dataset": ["x", "x"], "seed": [0, 1], "error": [1.0, 2.0]}
    )
    assert len(load_results(frame).frame) == 2
    frame["seed"] = 0
    with pytest.raises(ValueError, match="duplicate"):
        load_results(frame)


def test_forced_scale_out_of_range_and_bad_names(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        load_results(tidy(top1=[90.0, 80.0, 70.0]), scale="fraction")
    with pytest.raises(ValueError, match="scale must be"):
        load_results(tidy(top1=[0.9, 0.8, 0.7]), scale="permille")
    with pytest.raises(ValueError, match="not in"):
        load_results(tidy(top1=[0.9, 0.8, 0.7]), metric="top5")
    with pytest.raises(ValueError, match="does not exist"):
        load_results(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("# only a comment\n")
    with pytest.raises(ValueError, match="empty"):
        load_results(empty)


def test_architecture_must_agree_across_rows_of_a_model():
    frame = pd.DataFrame(
        {"model": ["a", "a"], "dataset": ["x", "y"], "error": [1.0, 2.0], "d1": [1, 2]}
    )
    with pytest.raises(ValueError, match="architecture columns must be identical"):
        load_results(frame)
