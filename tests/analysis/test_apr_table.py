"""Loading and validation of the results table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def tidy(**columns) -> pd.DataFrame:
    base = {"model": ["a", "b", "c"], "dataset": ["x", "x", "x"]}
    return pd.DataFrame(base | columns)


def test_timm_fixture_skips_comment_lines_and_reads_percent_accuracy(timm_csv):
    from analysis.table import load_results

    table = load_results(timm_csv)
    assert table.metric_column == "top1"
    assert (table.metric_kind, table.scale, table.scale_source) == (
        "accuracy",
        "percent",
        "header line",
    )
    assert len(table.frame) == 240 and table.frame["dataset"].nunique() == 6
    raw = pd.read_csv(timm_csv, comment="#")
    np.testing.assert_allclose(table.frame["error"], 100.0 - raw["top1"], atol=1e-9)


@pytest.mark.parametrize(
    ("column", "values", "scale", "expected", "source"),
    [
        ("top1_error", [10.0, 20.0, 30.0], None, [10.0, 20.0, 30.0], "inferred"),
        ("error", [0.1, 0.2, 0.3], "fraction", [10.0, 20.0, 30.0], "given"),
        ("accuracy", [0.9, 0.8, 0.7], "fraction", [10.0, 20.0, 30.0], "given"),
        ("top1", [90.0, 80.0, 70.0], None, [10.0, 20.0, 30.0], "inferred"),
        # Sub-1 % errors stay sub-1 % (not 40 % where it was 0.4 %).
        ("top1_error", [0.4, 0.2, 0.9], "percent", [0.4, 0.2, 0.9], "given"),
        ("top1", [99.6, 99.8, 99.1], None, [0.4, 0.2, 0.9], "inferred"),
    ],
)
def test_metric_normalised_to_error_percent(column, values, scale, expected, source):
    from analysis.table import load_results

    table = load_results(tidy(**{column: values}), scale=scale)
    np.testing.assert_allclose(table.frame["error"], expected, atol=1e-9)
    assert table.scale_source.startswith(source)


@pytest.mark.parametrize("column", ["top1_error", "accuracy"])
def test_values_all_in_unit_interval_without_a_unit_are_refused(column):
    from analysis.table import load_results

    with pytest.raises(ValueError, match=f"unit of '{column}' in .* is ambiguous") as caught:
        load_results(tidy(**{column: [0.4, 0.2, 0.9]}))
    message = str(caught.value)
    assert "\n" not in message and "--scale" in message and "# unit: percent" in message


def test_unit_header_lines_and_unit_column(tmp_path):
    from analysis.table import load_results

    path = tmp_path / "r.csv"
    path.write_text("# unit: percent\nmodel,dataset,top1_error\na,x,0.4\nb,x,0.2\nc,x,0.9\n")
    table = load_results(path)
    assert (table.scale, table.scale_source) == ("percent", "header line")
    assert table.frame["error"].tolist() == [0.4, 0.2, 0.9]

    path.write_text(
        "# unit top1_error: fraction\nmodel,dataset,top1_error\na,x,0.4\nb,x,0.2\nc,x,0.9\n"
    )
    np.testing.assert_allclose(load_results(path).frame["error"], [40.0, 20.0, 90.0])

    frame = tidy(top1_error=[0.4, 0.2, 0.9], unit=["percent"] * 3)
    table = load_results(frame)
    assert (table.scale, table.scale_source) == ("percent", "unit column")
    assert table.frame["error"].tolist() == [0.4, 0.2, 0.9]


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (
            tidy(top1_error=[0.4, 0.2, 0.9], unit=["percent"] * 3),
            {"scale": "fraction"},
            "conflicting units",
        ),
        (
            tidy(top1_error=[0.4, 0.2, 0.9], unit=["percent", "fraction", "percent"]),
            {},
            "several units",
        ),
        (tidy(top1_error=[0.4, 0.2, 0.9], unit=["%"] * 3), {}, "unknown value"),
    ],
)
def test_inconsistent_units_are_refused(frame, kwargs, message):
    from analysis.table import load_results

    with pytest.raises(ValueError, match=message):
        load_results(frame, **kwargs)


def test_unknown_unit_in_header_line_is_refused(tmp_path):
    from analysis.table import load_results

    path = tmp_path / "r.csv"
    path.write_text("# unit: permille\nmodel,dataset,top1_error\na,x,4\n")
    with pytest.raises(ValueError, match="unit 'permille'"):
        load_results(path)


def long_table() -> pd.DataFrame:
    """3 models x 2 datasets: a kNN score and fine-tuned accuracy, one unusable metric."""
    rows = []
    for i, model in enumerate(("a", "b", "c")):
        for dataset in ("cifar", "pets"):
            rows += [
                {
                    "model": model,
                    "dataset": dataset,
                    "method": "knn",
                    "metric": "knn_top1",
                    "value": 0.5 + 0.1 * i,
                },
                {
                    "model": model,
                    "dataset": dataset,
                    "method": "finetune",
                    "metric": "top1",
                    "value": 0.7 + 0.05 * i,
                },
                {
                    "model": model,
                    "dataset": dataset,
                    "method": "linear",
                    "metric": "linear_C",
                    "value": 100.0,
                },
            ]
    return pd.DataFrame(rows)


def test_long_table_is_read_per_regime_and_metric():
    from analysis.table import load_results

    table = load_results(long_table(), scale="fraction")
    assert table.layout == "long"
    assert table.slices == [("finetune", "top1"), ("knn", "knn_top1")]
    assert table.skipped_metrics == {
        "linear_C": "neither an error nor an accuracy (name without 'err', 'acc' or 'top')"
    }
    knn = table.slice("knn", "knn_top1")
    models, datasets, errors = knn.error_matrix()
    assert models.tolist() == ["a", "b", "c"] and datasets == ["cifar", "pets"]
    np.testing.assert_allclose(errors[:, 0], [50.0, 40.0, 30.0])
    assert knn.metric_kind == "accuracy" and knn.scale_source == "given"
    with pytest.raises(ValueError, match="2 metrics"):
        _ = table.metric_column
    with pytest.raises(ValueError, match=r"2 \(regime, metric\) slices"):
        table.error_matrix()


def test_long_table_units_per_metric_and_duplicates():
    from analysis.table import load_results

    frame = long_table()
    table = load_results(frame, scale={"knn_top1": "fraction", "top1": "fraction"})
    assert {m: u.scale for m, u in table.units.items()} == {
        "knn_top1": "fraction",
        "top1": "fraction",
    }
    with pytest.raises(ValueError, match="unit of 'knn_top1'"):
        load_results(frame, scale={"top1": "fraction"})
    doubled = pd.concat([frame, frame.head(1)])
    with pytest.raises(ValueError, match="duplicate"):
        load_results(doubled, scale="fraction")


def test_regime_column_separates_recipes_of_one_architecture():
    from analysis.table import load_results

    frame = pd.DataFrame(
        {
            "model": ["a", "b", "a", "b"],
            "dataset": "imagenet",
            "recipe": ["A1", "A1", "A2", "A2"],
            "top1_error": [20.0, 21.0, 22.0, 21.5],
        }
    )
    table = load_results(frame)
    assert table.slices == [("A1", "top1_error"), ("A2", "top1_error")]
    assert table.slice("A2", "top1_error").frame["error"].tolist() == [22.0, 21.5]


def test_source_name_of_an_in_memory_table():
    from analysis.table import load_results

    frame = tidy(top1_error=[10.0, 20.0, 30.0])
    assert load_results(frame).source == "in-memory table"
    assert load_results(frame, name="s3://b/studies/x/results.csv").source.startswith("s3://")


def test_metric_argument_picks_column_and_kind():
    from analysis.table import load_results

    table = load_results(tidy(top5=[99.0, 98.0, 97.0], top1=[1, 2, 3]), metric="top5")
    assert table.metric_kind == "accuracy"
    np.testing.assert_allclose(table.frame["error"], [1.0, 2.0, 3.0])


def test_status_rows_are_excluded_with_reason():
    from analysis.table import load_results

    frame = tidy(
        top1_error=[10.0, None, 30.0],
        status=["ok", "diverged", None],
        status_reason=["", "loss NaN", ""],
    )
    table = load_results(frame)
    assert table.frame["model"].tolist() == ["a", "c"]
    assert table.excluded.to_dict("records") == [
        {
            "model": "b",
            "dataset": "x",
            "regime": "",
            "metric": "top1_error",
            "seed": None,
            "status": "diverged",
            "reason": "loss NaN",
        }
    ]


def test_empty_metric_on_ok_row_is_an_explicit_exclusion():
    from analysis.table import load_results

    table = load_results(tidy(top1_error=[10.0, np.nan, 30.0]))
    assert table.excluded["status"].tolist() == ["missing_metric"]


def test_parquet_round_trip(tmp_path):
    from analysis.table import load_results

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
    from analysis.table import load_results

    with pytest.raises(ValueError, match=message):
        load_results(frame)


def test_duplicates_allowed_across_seeds_but_not_within():
    from analysis.table import load_results

    frame = pd.DataFrame(
        {"model": ["a", "a"], "dataset": ["x", "x"], "seed": [0, 1], "error": [1.0, 2.0]}
    )
    assert len(load_results(frame).frame) == 2
    frame["seed"] = 0
    with pytest.raises(ValueError, match="duplicate"):
        load_results(frame)


def test_given_scale_out_of_range_and_bad_names(tmp_path):
    from analysis.table import load_results

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
    from analysis.table import load_results

    frame = pd.DataFrame(
        {"model": ["a", "a"], "dataset": ["x", "y"], "error": [1.0, 2.0], "d1": [1, 2]}
    )
    with pytest.raises(ValueError, match="architecture columns must be identical"):
        load_results(frame)


def test_wide_table_reads_evaluation_columns_as_metrics_of_the_same_rows():
    from analysis.table import load_results

    frame = tidy(
        top1_error=[10.0, 20.0, 30.0],
        top5_error=[2.0, None, 6.0],
        **{"top1_error@v2": [15.0, 25.0, 35.0], "wall_time_s": [1.0, 2.0, 3.0]},
        status=["ok", "ok", "diverged"],
    )
    table = load_results(frame, scale="percent")
    assert table.primary_metric == "top1_error" and table.n_input_rows == 3
    assert table.slices == [("", "top1_error"), ("", "top1_error@v2"), ("", "top5_error")]
    by_metric = table.frame.groupby("metric")["error"].apply(list).to_dict()
    assert by_metric == {
        "top1_error": [10.0, 20.0],
        "top1_error@v2": [15.0, 25.0],
        "top5_error": [2.0],
    }
    # The diverged row is excluded once, under the primary metric; b's empty top-5 cell means
    # "not evaluated" (no exclusion), while an empty primary cell is a missing metric.
    assert table.excluded[["model", "metric", "status"]].values.tolist() == [
        ["c", "top1_error", "diverged"]
    ]
    frame.loc[0, "top1_error"] = None
    missing = load_results(frame, scale="percent").excluded
    assert missing[["model", "metric", "status"]].values.tolist() == [
        ["a", "top1_error", "missing_metric"],
        ["c", "top1_error", "diverged"],
    ]
    # Named columns: only those, the first is the primary one.
    named = load_results(frame, metric=["top1_error@v2", "top1_error"], scale="percent")
    assert named.primary_metric == "top1_error@v2" and len(named.units) == 2
    with pytest.raises(ValueError, match=r"metric column \['nope'\] not in"):
        load_results(frame, metric=["top1_error", "nope"], scale="percent")
