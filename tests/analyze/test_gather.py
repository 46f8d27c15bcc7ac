"""Gathering trial results into the tidy table, and the Markdown for the Kubeflow UI."""

from components.analyze.run import embed_figures, gather_results, result_row, top_k_for
from components.common.storage import open_store

SPEC = {
    "depths": [1, 2, 3, 4],
    "widths": [8, 16, 24, 32],
    "bottleneck_ratios": [1.0, 1.0, 2.0, 4.0],
    "group_widths": [1, 2, 4, 8],
}


def _result(trial_id: str, status: str, error: float | None) -> dict:
    return {
        "trial_id": trial_id,
        "spec": SPEC,
        "dataset": {"name": "digits"},
        "recipe": {"name": "apr_tiny"},
        "seed": 0,
        "status": status,
        "reason": "" if status == "ok" else "loss became nan",
        "top1_error": error,
        "flops": 1e8,
        "params": 1e5,
        "wall_time_s": 1.0,
    }


def test_row_has_the_analysis_columns():
    row = result_row(_result("t1", "ok", 12.5))
    assert row["dataset"] == "digits" and row["top1_error"] == 12.5 and row["status"] == "ok"
    assert [row[f"d{i}"] for i in range(1, 5)] == [1, 2, 3, 4]
    assert [row[f"g{i}"] for i in range(1, 5)] == [1, 2, 4, 8]
    assert row["model"] == result_row(_result("t2", "ok", 1.0))["model"], "model = spec hash"


def test_missing_result_is_a_failed_row(tmp_path):
    store = open_store(str(tmp_path))
    store.put_json("trials/t1/result.json", _result("t1", "diverged", None))
    planned = _result("t2", "ok", None)
    trial = {k: planned[k] for k in ("spec", "dataset", "recipe", "seed")}
    store.put_json("trials/t2/trial.json", trial)
    table = gather_results(store, ["t1", "t2"])
    assert list(table["status"]) == ["diverged", "failed"]
    assert "wrote no result" in table["status_reason"][1]


def test_markdown_figures_become_data_uris(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "ecdf.png").write_bytes(b"\x89PNG")
    text = embed_figures("see ![eCDF](figures/ecdf.png) and [x](other.md)", tmp_path)
    assert text == "see ![eCDF](data:image/png;base64,iVBORw==) and [x](other.md)"


def test_top_k_is_a_quarter_within_bounds():
    assert [top_k_for(n) for n in (3, 8, 40, 500)] == [2, 2, 10, 15]
