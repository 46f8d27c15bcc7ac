"""The HTML report in a real headless browser: it loads, shows its tables and images, and
its sort script runs without an error and sorts."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import CHROMIUM, chromium_command

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)"
)

# Appended to a copy of the report: clicks the header of the "models" column of the dataset
# table twice and records the resulting orders, so the dumped DOM shows that sorting works.
SORT_PROBE = """
<script>
(function () {
  var table = document.getElementById("table-datasets");
  function column() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return parseFloat(r.cells[3].getAttribute("data-value"));
    }).join(",");
  }
  var th = table.tHead.rows[0].cells[3];
  th.click();
  document.body.setAttribute("data-probe-ascending", column());
  th.click();
  document.body.setAttribute("data-probe-descending", column());
})();
</script>
</body>"""


def dump_dom(html_path, tmp_path) -> str:
    result = subprocess.run(
        chromium_command(tmp_path / "profile", "--dump-dom", html_path.as_uri()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_report_loads_with_tables_images_and_working_sort(synthetic_run, tmp_path):
    summary, out = synthetic_run
    html = (out / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", SORT_PROBE))
    dom = dump_dom(probe, tmp_path)

    n_tables = html.count('class="sortable"')
    # Set by the report's own script as its last statement: absent if it threw.
    assert f'data-sort-ready="{n_tables}"' in dom
    assert dom.count("<img") == len(summary["figures"])
    for table_id in ("datasets", "apr", "matrix", "architecture", "seeds", "excluded"):
        assert f'id="table-{table_id}"' in dom

    means = sorted(d["mean_error"] for d in summary["datasets"].values())
    ascending = [float(v) for v in dom.split('data-probe-ascending="')[1].split('"')[0].split(",")]
    descending = [
        float(v) for v in dom.split('data-probe-descending="')[1].split('"')[0].split(",")
    ]
    assert ascending == pytest.approx(means)
    assert descending == pytest.approx(means[::-1])


# Filters the model table to d1 >= 8, sorts it by the imagenet error, and records the shown
# model ids, their errors and the count line.
MODEL_PROBE = """
<script>
(function () {
  var table = document.getElementById("table-models");
  var filter = document.getElementById("model-filter");
  filter.value = "d1>=8";
  filter.dispatchEvent(new Event("input"));
  var headers = table.tHead.rows[0].cells, column = -1;
  for (var i = 0; i < headers.length; i++) {
    if (headers[i].textContent === "imagenet error") { column = i; }
  }
  headers[column].click();
  var rows = Array.prototype.map.call(table.tBodies[0].rows, function (r) {
    return r.cells[0].textContent + ":" + r.cells[column].textContent;
  });
  document.body.setAttribute("data-probe-models", rows.join(","));
  var count = document.getElementById("model-count").textContent;
  document.body.setAttribute("data-probe-count", count);
})();
</script>
</body>"""


def test_model_table_filters_and_sorts(synthetic_run, tmp_path):
    summary, out = synthetic_run
    html = (out / "report.html").read_text()
    data = json.loads(html.split('id="model-data">')[1].split("</script>")[0])
    probe = tmp_path / "models.html"
    probe.write_text(html.replace("</body>", MODEL_PROBE))
    dom = dump_dom(probe, tmp_path)
    assert f'data-models-ready="{summary["input"]["n_models"]}"' in dom

    d1, error = data["columns"].index("d1"), data["columns"].index("imagenet error")
    kept = sorted((row[error], row[0]) for row in data["rows"] if row[d1] >= 8)
    shown = dom.split('data-probe-models="')[1].split('"')[0].split(",")
    assert [s.split(":")[0] for s in shown] == [model for _, model in kept]
    assert [float(s.split(":")[1]) for s in shown] == pytest.approx([e for e, _ in kept], abs=0.006)
    count = dom.split('data-probe-count="')[1].split('"')[0]
    assert count == f"{len(kept)} of {len(data['rows'])} models match"
