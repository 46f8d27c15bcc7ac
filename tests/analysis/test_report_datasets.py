"""The report's "Datasets" section: each dataset's own summary figure (class histogram and
samples, written by its build) embedded with its counts; the analyze task gathers them."""

from __future__ import annotations

import base64
import io

import pandas as pd
import pytest
from PIL import Image

FRAME = pd.DataFrame(
    {
        "model": list("abcde") * 2,
        "dataset": ["pets"] * 5 + ["digits"] * 5,
        "error": [10, 20, 30, 40, 50, 12, 18, 35, 41, 60.0],
    }
)


def _png(path, colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_report_embeds_each_datasets_figure_and_counts(tmp_path):
    from analysis import analyze

    pngs = {"pets": _png(tmp_path / "p.png", "red"), "digits": _png(tmp_path / "d.png", "blue")}
    out = tmp_path / "out"
    summary = analyze(
        FRAME,
        out,
        n_bootstrap=0,
        dataset_figures={"pets": tmp_path / "p.png", "digits": tmp_path / "d.png"},
        dataset_notes={"pets": "24 images in 3 classes (18 train, 3 validation, 3 test)"},
    )
    html = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    assert '<h2 id="dataset-summaries">Datasets</h2>' in html and "\n## Datasets\n" in markdown
    for name, png in pngs.items():
        assert f"<h3>{name}</h3>" in html
        assert f'id="fig-dataset-{name}"' in html
        assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in html
        assert (out / "figures" / f"dataset-{name}.png").read_bytes() == png
        assert f"](figures/dataset-{name}.png)" in markdown
        assert summary["figures"][f"dataset-{name}"] == f"figures/dataset-{name}.png"
    assert "<p>24 images in 3 classes (18 train, 3 validation, 3 test)</p>" in html
    assert "**pets**: 24 images in 3 classes" in markdown
    # The section comes before the error distributions.
    assert html.index("dataset-summaries") < html.index('id="datasets"')


def test_no_figures_no_section_and_an_unreadable_one_is_refused(tmp_path):
    from analysis import analyze

    analyze(FRAME, tmp_path / "plain", n_bootstrap=0)
    assert "dataset-summaries" not in (tmp_path / "plain" / "report.html").read_text()
    with pytest.raises(ValueError, match="dataset figure of 'pets' cannot be read"):
        analyze(FRAME, tmp_path / "bad", n_bootstrap=0, dataset_figures={"pets": tmp_path / "x"})
    assert not (tmp_path / "bad").exists()


def test_analyze_task_gathers_each_study_datasets_summary(tmp_path):
    from components.analyze.run import dataset_summaries
    from components.common.storage import open_store
    from components.data.datasets import materialize
    from components.train.plan import save_plan
    from components.train.recipes import resolve_recipe
    from components.train.trial import Trial

    store = open_store(str(tmp_path / "store"))
    faces = materialize(store, "faces", resolution=8)
    trials = [
        Trial(spec={"m": i}, dataset=faces, recipe=resolve_recipe("apr_tiny"), seed=0)
        for i in range(2)
    ]
    ids = save_plan(store, "s", trials)
    table = pd.DataFrame(
        {
            "model": ["0123456789abcdef", "fedcba9876543210"],  # two AnyNets' spec hashes
            "dataset": ["faces", "faces"],
            "trial_id": ids,
            "flops": [150e6, 250e6],
            "flops_trained": [1.25e6, None],  # the second trial failed before it was built
        }
    )
    folder = tmp_path / "figures"
    folder.mkdir()
    figures, notes = dataset_summaries(store, table, folder)
    manifest = store.get_json(faces.manifest_key)
    assert list(figures) == ["faces"]
    assert figures["faces"].read_bytes() == store.get_bytes(manifest["summary"]["png"])
    assert notes["faces"].startswith(
        "Trained at 8 px with the small-input stem (stride 1): 1.2 to 1.2 M multiply-adds per "
        "image (150 to 250 M at 224 px, the band sampled). "
        "200 images in 2 classes (150 train, 0 validation, 50 test; most/fewest training "
        f"images per class {manifest['imbalance']}), trained at 8 px from the memory input; "
        "0 source file(s) skipped"
    )
