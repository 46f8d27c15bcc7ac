"""The transfer study's report.html: the answer sentences carry comparison.json's numbers,
every scatter plot is embedded, every result row (failures with their reason) is listed."""

from __future__ import annotations

import base64
import json
import re

from components.common.storage import open_store

MODELS = ("m0", "m1", "m2", "m3", "m4")
FINETUNE = (0.55, 0.62, 0.60, 0.71, 0.80)
KNN = (0.30, 0.41, 0.35, 0.33, 0.52)
LOGME = (-1.2, -0.9, -1.0, -0.4, -0.5)


def _rows() -> list[dict]:
    rows = []
    for dataset, shift in (("digits", 0.0), ("faces", 0.05)):
        for i, model in enumerate(MODELS):
            base = {"model": model, "dataset": dataset, "status": "ok", "status_reason": ""}
            rows += [
                base | {"regime": "finetune", "metric": "top1", "value": FINETUNE[i] - shift},
                base | {"regime": "finetune", "metric": "finetune_refit", "value": 1.0},
                base | {"regime": "knn", "metric": "knn_top1", "value": KNN[i] + shift},
                base | {"regime": "logme", "metric": "logme", "value": LOGME[i]},
            ]
            for row in rows[-4:]:
                row |= {"unit": "fraction" if "top1" in row["metric"] else "", "seconds": 2.0}
                if row["regime"] == "finetune":
                    row["seconds"] = 40.0 + i
    rows += [
        {
            "model": m,
            "dataset": "imagenet",
            "regime": "source",
            "metric": "top1",
            "unit": "fraction",
        }
        | {"value": 0.6 + i / 20, "seconds": 0.0, "status": "ok", "status_reason": ""}
        for i, m in enumerate(MODELS)
    ]
    rows.append(
        {"model": "broken", "dataset": "digits", "regime": "knn", "metric": "knn_top1"}
        | {"value": None, "unit": "fraction", "seconds": 0.0, "status": "failed"}
        | {"status_reason": "no weights at /nowhere/broken.pth"}
    )
    return rows


def test_report_answers_with_the_comparison_numbers(tmp_path):
    from components.transfer.report import endpoints, number
    from components.transfer.steps import analyze, chunk_key, plan_key
    from components.transfer.study import rows_to_csv

    store_uri = str(tmp_path / "store")
    store = open_store(store_uri)
    study_id = "fixed-0123456789"
    store.put_json(plan_key(study_id), {"study_id": study_id, "chunks": [[0]]})
    store.put_bytes(chunk_key(study_id, 0), rows_to_csv(_rows()).encode())

    result = analyze(study_id, store_uri, tmp_path / "out", n_bootstrap=100)

    page = tmp_path / "out" / "report.html"
    assert result["report"] == str(page)
    html = page.read_text()
    assert store.get_bytes(f"studies/{study_id}/report.html").decode() == html
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert comparison == json.loads(json.dumps(result["comparison"]))
    text = re.sub(r"\s+", " ", html)
    # The question, then one sentence per target and score, then the cost.
    assert text.index("Does a cheap score predict fine-tuned accuracy on digits?") < text.index(
        "On digits, kNN top-1 "
    )
    for dataset in ("digits", "faces"):
        knn = comparison["targets"][dataset]["scores_vs_finetune"]["knn/knn_top1"]
        kendall, weighted = knn["kendall"], knn["weighted_tau"]
        # The verdict follows the interval: 5 models leave room for no relation at all.
        if kendall["ci_low"] > 0:
            verdict = "ranks the models like fine-tuned top-1"
        elif kendall["ci_high"] < 0:
            verdict = "ranks the models in reverse of fine-tuned top-1"
        else:
            verdict = "shows no clear relation to fine-tuned top-1"
        assert (
            f"On {dataset}, kNN top-1 {verdict}: Kendall "
            f"τ = {number(kendall['value'])} (95% CI {endpoints(kendall)}) and weighted "
            f"τ = {number(weighted['value'])} (95% CI {endpoints(weighted)}), "
            "n = 5 models. Caution: only 5 models (fewer than 10)" in text
        )
        logme = comparison["targets"][dataset]["scores_vs_finetune"]["logme/logme"]
        assert re.search(r"LogME (ranks|shows)[^:]* fine-tuned top-1: Kendall τ = ", text)
        assert number(logme["kendall"]["value"]) in text
        assert "LEEP" not in text.split("Not measured in this study:")[0]  # not run
        assert "Not measured in this study: kNN top-5 fraction, LEEP, the linear probe" in text
        assert "LogME costs 2 s per model" in text and "kNN top-1 costs 2 s" in text
        ratio = knn["cost_ratio"]
        assert f"costs 2 s per model (median) against 42 s for the fine-tune, {ratio:.2%}" in text
        by_source = comparison["targets"][dataset]["regimes_vs_source"]
        pearson = by_source["imagenet"]["finetune/top1"]["pearson_logit"]
        assert re.search(
            f"On {dataset}, fine-tuned top-1 vs source accuracy on imagenet: "
            f"(no clear|[a-z ]* (positive|negative)) relation, log-odds Pearson "
            f"r = {number(pearson['value'])}",
            text,
        )
    assert kendall["value"] not in (1.0, -1.0)  # a real ranking, not a trivial one
    assert "then refit on train + validation" in text
    # One embedded image per scatter plot, the same bytes as the PNG beside the report.
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    # The scatter plots and Kornblith et al.'s averaged log-odds figure.
    assert len(images) == len(result["figures"]) == 3
    for figure in result["figures"]:
        with open(figure, "rb") as f:
            assert base64.b64encode(f.read()).decode() in images
    # Every row, the failure with its reason; the APR report linked.
    results_table = text.split('<table class="results">')[1].split("</table>")[0]
    assert results_table.count("<tr") == 1 + len(_rows())
    assert "no weights at /nowhere/broken.pth" in text
    assert result["apr_report"] and 'href="apr/report.html"' in html
    assert (tmp_path / "out" / "apr" / "report.html").exists()
