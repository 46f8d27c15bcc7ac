"""End-to-end APR analysis: statistics, figures, ``summary.json``, HTML and Markdown reports."""

from __future__ import annotations

import base64
import json
import math
import os
import tempfile
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from analysis import figures, readings
from analysis.compute import Analysis, compute_analysis
from analysis.stats import STAGE_FEATURES
from analysis.table import ResultsTable, load_results

TEMPLATE_DIR = Path(__file__).parent
# Long model lists are cut in the reports (summary.json keeps them all).
MAX_LISTED = 20


def analyze(
    results: ResultsTable | str | Path | pd.DataFrame,
    out_dir: str | Path,
    reference: str | None = None,
    top_k: int = 15,
    n_bootstrap: int = 1000,
    seed: int = 0,
    title: str | None = None,
) -> dict:
    """Run the whole analysis and write its outputs.

    Writes ``out_dir/figures/*.png``, ``out_dir/report.html`` (self-contained),
    ``out_dir/report.md`` and, last, ``out_dir/summary.json``, each through a temporary
    file and a rename, so a failed run never leaves a half-written summary.

    Args:
        results: A loaded table, or anything :func:`analysis.table.load_results` accepts.
        out_dir: Output directory (created if needed).
        reference: Reference dataset; default ``imagenet`` if present, else the dataset
            with the most models (ties: first by name).
        top_k: Number of best models per dataset for overlaps and profiles.
        n_bootstrap: Bootstrap resamples for the 95% confidence intervals (0: none).
        seed: Bootstrap seed.
        title: Report title.

    Returns:
        The summary dict (as written to ``summary.json``).

    Raises:
        ValueError: On invalid input or arguments (nothing is written then).
    """
    table = results if isinstance(results, ResultsTable) else load_results(results)
    analysis = compute_analysis(table, reference, top_k, n_bootstrap, seed, title)
    pngs = render_figures(analysis)
    summary = analysis.summary
    summary["figures"] = {name: f"figures/{name}.png" for name in pngs}
    context = report_context(summary, pngs)

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name, png in pngs.items():
        write_atomic(out / "figures" / f"{name}.png", png)
    write_atomic(out / "report.md", render_template("report.md.j2", context).encode())
    write_atomic(out / "report.html", render_template("report.html.j2", context).encode())
    write_atomic(out / "summary.json", to_json(summary).encode())
    return summary


def render_figures(analysis: Analysis) -> dict[str, bytes]:
    """All figures that the data supports, as name -> PNG bytes."""
    summary = analysis.summary
    column = {name: analysis.errors[:, i] for i, name in enumerate(analysis.datasets)}
    finite = {name: v[np.isfinite(v)] for name, v in column.items() if np.isfinite(v).any()}
    pngs = {"ecdf": figures.ecdf_figure(finite)}

    ref = summary["apr"]["reference"]
    panels = []
    for name, pair in summary["apr"]["targets"].items():
        shared = np.isfinite(column[ref]) & np.isfinite(column[name])
        if not shared.any():
            continue
        top_models = {row["model"] for row in pair["reference_top_ranks"]}
        rho = pair["spearman"]
        panels.append(
            {
                "name": name,
                "x": column[ref][shared],
                "y": column[name][shared],
                "top": np.isin(analysis.models[shared], list(top_models)),
                "label": f"ρ = {readings.fmt(rho['value'])}{readings.interval(rho)}, "
                f"n = {pair['n_models']}",
            }
        )
    if panels:
        pngs["apr_scatter"] = figures.apr_scatter_figure(ref, panels)
    if len(analysis.datasets) > 1:
        matrix = summary["correlation_matrix"]
        pngs["correlation_matrix"] = figures.correlation_heatmap(
            matrix["datasets"], matrix["spearman"]
        )
    labels = {
        "d": ("topk_depth_profiles", "depth d_i (blocks)"),
        "w": ("topk_width_profiles", "width w_i (channels)"),
    }
    for prefix, profiles in analysis.profiles.items():
        name, quantity = labels[prefix]
        pngs[name] = figures.stage_profile_figure(profiles, quantity)
    # The figure shows the stage features (Tuggener et al.); flops/params, nearly constant in
    # a FLOP band, stay in the table unless they are all there is.
    shown = {k: v for k, v in analysis.features.items() if k in STAGE_FEATURES}
    if analysis.features:
        pngs["arch_vs_error"] = figures.architecture_scatter_figure(
            shown or analysis.features,
            {name: v for name, v in column.items() if name in finite},
            summary["architecture"]["spearman"],
        )
    seeds = summary["seed_variance"]
    if seeds["available"]:
        stds = pd.DataFrame(seeds["per_model"]).groupby("dataset")["std"]
        pngs["seed_std"] = figures.seed_std_figure({name: group.to_numpy() for name, group in stds})
    return pngs


def _table(table_id: str, columns: list[str], rows: list[list]) -> dict:
    return {"id": table_id, "columns": columns, "rows": rows}


def _listed(models: list[str]) -> str:
    shown = ", ".join(models[:MAX_LISTED])
    return shown + (f" … (+{len(models) - MAX_LISTED} more)" if len(models) > MAX_LISTED else "")


def report_tables(summary: dict) -> dict:
    """Tables shown in both reports: name -> ``{"id", "columns", "rows"}``."""
    tables = {}
    tables["datasets"] = _table(
        "datasets",
        ["dataset", "models", "excluded", "mean error", "std", "min", "median", "max", "best"],
        [
            [
                name,
                d["n_models"],
                d["n_excluded"],
                d["mean_error"],
                d["std_error"],
                d["min_error"],
                d["median_error"],
                d["max_error"],
                d.get("best_model", ""),
            ]
            for name, d in summary["datasets"].items()
        ],
    )
    tables["apr"] = _table(
        "apr",
        [
            "target",
            "shared models",
            "Spearman ρ",
            "ρ CI low",
            "ρ CI high",
            "ρ p",
            "Kendall τ",
            "τ CI low",
            "τ CI high",
            "log-odds r",
            "weighted τ",
            "top-k overlap",
            "chance",
        ],
        [
            [
                name,
                p["n_models"],
                p["spearman"]["value"],
                p["spearman"].get("ci_low"),
                p["spearman"].get("ci_high"),
                p["spearman"].get("p_value"),
                p["kendall"]["value"],
                p["kendall"].get("ci_low"),
                p["kendall"].get("ci_high"),
                p["pearson_logit"]["value"],
                p["weighted_tau"]["value"],
                p["top_k"]["value"],
                p["top_k"].get("chance"),
            ]
            for name, p in summary["apr"]["targets"].items()
        ],
    )
    matrix = summary["correlation_matrix"]
    tables["matrix"] = _table(
        "matrix",
        ["dataset", *matrix["datasets"]],
        [[name, *row] for name, row in zip(matrix["datasets"], matrix["spearman"], strict=True)],
    )
    tables["reference_top_ranks"] = {
        name: _table(
            f"refranks-{i}",
            ["model", "reference rank", "target rank", "reference error", "target error"],
            [
                [
                    r["model"],
                    r["reference_rank"],
                    r["target_rank"],
                    r["reference_error"],
                    r["target_error"],
                ]
                for r in p["reference_top_ranks"]
            ],
        )
        for i, (name, p) in enumerate(summary["apr"]["targets"].items())
        if p["reference_top_ranks"]
    }
    tables["top_k"] = {
        name: _table(f"topk-{i}", list(rows[0]), [list(r.values()) for r in rows])
        for i, (name, rows) in enumerate(summary["top_k"].items())
        if rows
    }
    arch = summary["architecture"]
    if arch["available"] and arch["features"]:
        features = arch["features"]
        tables["architecture"] = _table(
            "architecture",
            ["dataset", *(f"ρ {f}" for f in features), *(f"p {f}" for f in features)],
            [
                [name, *(per[f]["value"] for f in features), *(per[f]["p_value"] for f in features)]
                for name, per in arch["spearman"].items()
            ],
        )
    seeds = summary["seed_variance"]
    if seeds["available"]:
        tables["seeds"] = _table(
            "seeds",
            ["dataset", "models with 2+ seeds", "mean std", "median std", "max std"],
            [
                [name, d["n_models"], d["mean_std"], d["median_std"], d["max_std"]]
                for name, d in seeds["per_dataset"].items()
            ],
        )
        tables["seed_pairs"] = _table(
            "seed-pairs",
            [
                "dataset A",
                "dataset B",
                "models",
                "runs",
                "pooled within-model r",
                "mean per-model r",
            ],
            [
                [
                    *c["datasets"],
                    c["n_models"],
                    c["n_points"],
                    c["pooled_within_model_r"],
                    c["mean_per_model_r"],
                ]
                for c in seeds["cross_dataset"]
            ],
        )
    exclusions = summary["exclusions"]
    tables["excluded"] = _table(
        "excluded",
        ["model", "dataset", "seed", "status", "reason"],
        [
            [r["model"], r["dataset"], r["seed"], r["status"], r["reason"]]
            for r in exclusions["rows"]
        ],
    )
    tables["absent"] = _table(
        "absent",
        ["dataset", "models without a result", "models"],
        [
            [name, len(models), _listed(models)]
            for name, models in exclusions["models_without_result"].items()
        ],
    )
    return tables


def report_context(summary: dict, pngs: dict[str, bytes]) -> dict:
    """Everything the report templates need."""
    return {
        "summary": summary,
        "tables": report_tables(summary),
        "readings": {
            "ecdf": readings.ecdf_reading(summary),
            "apr": readings.apr_readings(summary),
            "matrix": readings.matrix_reading(summary),
            "architecture": readings.architecture_readings(summary),
            "seeds": readings.seed_readings(summary),
        },
        "images": {name: base64.b64encode(png).decode("ascii") for name, png in pngs.items()},
    }


def _cell(value) -> str:
    """Table cell text: floats with 3 decimals (3 significant digits when very large or
    small), None as ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        # Large counts (FLOPs) and tiny p-values would read as "1e+09"/"0.000" otherwise.
        if abs(value) >= 1000 or 0 < abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.3f}"
    return str(value)


def render_template(name: str, context: dict) -> str:
    """Render a template shipped in the package (HTML templates are autoescaped)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cell"] = _cell
    env.filters["md"] = lambda value: _cell(value).replace("|", "\\|").replace("\n", " ")
    env.tests["numeric"] = lambda value: (
        isinstance(value, int | float) and not isinstance(value, bool)
    )
    return env.get_template(name).render(**context)


def _jsonable(value):
    """Python scalars for JSON: numpy types converted, NaN/inf become None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(summary: dict) -> str:
    """Serialise the summary; fails loudly rather than writing a NaN."""
    return json.dumps(_jsonable(summary), indent=1, allow_nan=False, ensure_ascii=False)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        # mkstemp creates the file owner-only; reports are meant to be read by others.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
