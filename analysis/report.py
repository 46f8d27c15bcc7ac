"""End-to-end APR analysis: statistics, figures, ``summary.json``, HTML and Markdown reports."""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import jinja2
import numpy as np
import pandas as pd

from analysis import figures, readings
from analysis.compute import Analysis, compute_analysis
from analysis.files import replaced_folder, write_atomic
from analysis.stats import DEFAULT_RESAMPLES, STAGE_FEATURES, supported_decimals
from analysis.table import MODEL_URL_COLUMN, ResultsTable, load_results
from analysis.words import plural

TEMPLATE_DIR = Path(__file__).parent
# What analyze() writes into its output folder (replaced as a whole; other entries stay).
OUTPUTS = ("figures", "report.html", "report.md", "summary.json")
# Long model lists are cut in the reports (summary.json keeps them all).
MAX_LISTED = 20
# Datasets with per-model panels in the stage profile and architecture scatter figures
# (the reference first, then by name).
DETAILED_DATASETS = 3
# Links of the model table: only web links or relative paths, never javascript: and the like.
LINK_SCHEMES = ("http", "https", "")
# How the reference dataset is marked in tables and figure legends (it is always listed first).
REFERENCE_MARK = " (reference)"
# The fragment of MLflow's page of a registered model version (``#/models/<name>/versions/<v>``):
# the "Best models" table names such a link by the URI that loads it, ``models:/<name>/<v>``.
_MODEL_VERSION_PAGE = re.compile(r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)")


def reference_first(names: Iterable[str], reference: str) -> list[str]:
    """``names`` with the reference dataset first; the others keep their order."""
    names = list(names)
    return [reference, *(n for n in names if n != reference)] if reference in names else names


def marked(name: str, reference: str) -> str:
    """A dataset's name as tables show it: the reference's with :data:`REFERENCE_MARK`."""
    return name + REFERENCE_MARK if name == reference else name


def analyze(
    results: ResultsTable | str | Path | pd.DataFrame,
    out_dir: str | Path,
    reference: str | None = None,
    top_k: int = 15,
    n_bootstrap: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    title: str | None = None,
    regime: str | None = None,
    metric: str | None = None,
    dataset_figures: Mapping[str, str | Path] | None = None,
    dataset_notes: Mapping[str, str] | None = None,
    test_noise: str = "auto",
    test_sizes: Mapping[str, int] | None = None,
    late_links: Callable[[], ResultsTable] | None = None,
) -> dict:
    """Run the whole analysis and write its outputs.

    Writes ``out_dir/figures/*.png``, ``out_dir/report.html`` (self-contained),
    ``out_dir/report.md`` and ``out_dir/summary.json`` into a new folder beside ``out_dir``
    that then replaces it (:func:`analysis.files.replaced_folder`): a failed or killed run
    leaves the previous outputs whole, never some of each. Other files in ``out_dir`` (the
    results table) stay; the outputs of a previous analysis that this one does not write
    (figures of a dataset no longer in the table) go.

    Args:
        results: A loaded table, or anything :func:`analysis.table.load_results` accepts.
        out_dir: Output directory (created if needed).
        reference: Reference dataset; default ``imagenet`` if present, else the dataset
            with the most models (ties: first by name).
        top_k: Number of best models per dataset for overlaps and profiles.
        n_bootstrap: Most bootstrap resamples per comparison for the 95% confidence
            intervals (0: none); fewer once their endpoints are precise (see
            :func:`analysis.compute.compute_analysis`).
        seed: Bootstrap seed.
        title: Report title.
        regime: Primary regime of a table with several (default: the one with most rows).
        metric: Primary metric of a table with several (default: the one with most rows).
        dataset_figures: ``{dataset: PNG path}`` of each dataset's own summary (class
            histogram, sample images), shown in a "Datasets" section and copied to
            ``figures/dataset-<name>.png`` (None: no section).
        dataset_notes: ``{dataset: sentence}`` under each dataset's figure (its counts).
        test_noise: ``"auto"``, ``"binomial"`` or ``"none"``: whether the intervals include
            the noise of the finite test sets (see :func:`analysis.compute.compute_analysis`).
        test_sizes: ``{dataset: images in its test split}`` for that noise.
        late_links: returns ``results`` with the ``model_url`` links made while the
            statistics ran (an APR study logs its best models in a second process); called
            once, after the statistics and figures, before the report is written (None: the
            links of ``results``).

    Returns:
        The summary dict (as written to ``summary.json``).

    Raises:
        ValueError: On invalid input or arguments (nothing is written then).
    """
    table = results if isinstance(results, ResultsTable) else load_results(results)
    analysis = compute_analysis(
        table,
        reference,
        top_k,
        n_bootstrap,
        seed,
        title,
        regime=regime,
        metric=metric,
        test_noise=test_noise,
        test_sizes=test_sizes,
    )
    pngs = render_figures(analysis, table.regime_column or "regime")
    datasets = dataset_sections(dataset_figures or {}, dataset_notes or {})
    pngs |= {d["figure"]: d.pop("png") for d in datasets}
    summary = analysis.summary
    summary["figures"] = {name: f"figures/{name}.png" for name in pngs}
    regime_word = table.regime_column or "regime"
    best = best_models_table(late_links() if late_links else table, analysis, regime_word)
    context = report_context(summary, pngs, model_table(analysis), datasets, regime_word, best)

    with replaced_folder(out_dir, OUTPUTS) as out:
        (out / "figures").mkdir()
        for name, png in pngs.items():
            write_atomic(out / "figures" / f"{name}.png", png)
        write_atomic(out / "report.md", render_template("report.md.j2", context))
        write_atomic(out / "report.html", render_template("report.html.j2", context))
        write_atomic(out / "summary.json", to_json(summary))
    return summary


def render_figures(analysis: Analysis, regime_word: str = "regime") -> dict[str, bytes]:
    """All figures that the data supports, as name -> PNG bytes (the reference dataset
    first and marked; ``regime_word``: see :class:`analysis.readings.Names`)."""
    summary = analysis.summary
    ref = summary["apr"]["reference"]
    names = readings.Names(summary, regime_word)
    order = reference_first(analysis.datasets, ref)
    column = {name: analysis.errors[:, analysis.datasets.index(name)] for name in order}
    finite = {name: v[np.isfinite(v)] for name, v in column.items() if np.isfinite(v).any()}
    pngs = {"ecdf": figures.ecdf_figure({marked(n, ref): v for n, v in finite.items()})}

    panels = []
    for pair in summary["apr"]["targets"].values():
        source = summary["slices"][pair["reference_slice"]]
        key = (pair["regime"], pair["metric"], pair["dataset"])
        if key not in analysis.columns:
            continue  # every row of the target was excluded: nothing to draw
        reference = analysis.columns[(source["regime"], source["metric"], ref)]
        target = analysis.columns[key]
        shared = reference.notna() & target.notna()
        if not shared.any():
            continue
        top_models = {row["model"] for row in pair["reference_top_ranks"]}
        rho = pair["spearman"]
        panels.append(
            {
                "name": names.target(pair),
                "reference": names.side(ref, pair["reference_slice"]),
                "x": reference[shared].to_numpy(),
                "y": target[shared].to_numpy(),
                "top": shared[shared].index.isin(list(top_models)),
                "label": f"ρ = {readings.fmt(rho['value'])}{readings.interval(rho)}, "
                f"n = {pair['n_models']}",
            }
        )
    if panels:
        pngs["apr_scatter"] = figures.apr_scatter_figure(panels)
    if len(analysis.datasets) > 1:
        matrix = _matrix_reference_first(summary["correlation_matrix"], ref)
        pngs["correlation_matrix"] = figures.correlation_heatmap(
            [marked(n, ref) for n in matrix["datasets"]], matrix["spearman"]
        )
    # Per-model detail (one panel per dataset) for the reference and the next datasets by
    # name: a 10-dataset study would need 20 profile and 40 scatter panels, slow to draw
    # and to read. The overview figures (mean profiles, heat map) have every dataset.
    detailed = [name for name in column if name in finite][:DETAILED_DATASETS]
    labels = {
        "d": ("topk_depth_profiles", "depth d_i (blocks)"),
        "w": ("topk_width_profiles", "width w_i (channels)"),
    }
    for prefix, profiles in analysis.profiles.items():
        name, quantity = labels[prefix]
        shown = {marked(d, ref): profiles[d] for d in detailed if d in profiles}
        pngs[name] = figures.stage_profile_figure(shown, quantity)
    if analysis.profiles:
        pngs["topk_mean_profiles"] = figures.mean_profile_figure(
            {
                labels[prefix][1]: {
                    marked(d, ref): profiles[d] for d in reference_first(profiles, ref)
                }
                for prefix, profiles in analysis.profiles.items()
            }
        )
    # The figure shows the stage features (Tuggener et al.); flops/params, nearly constant in
    # a FLOP band, stay in the table unless they are all there is.
    shown = {k: v for k, v in analysis.features.items() if k in STAGE_FEATURES}
    if analysis.features:
        correlations = {
            marked(d, ref): per
            for d, per in _reference_first_items(summary["architecture"]["spearman"], ref)
        }
        pngs["arch_correlation"] = figures.feature_correlation_heatmap(correlations)
        pngs["arch_vs_error"] = figures.architecture_scatter_figure(
            shown or analysis.features,
            {marked(name, ref): column[name] for name in detailed},
            correlations,
        )
    seeds = summary["seed_variance"]
    if seeds["available"]:
        per_model = pd.DataFrame(seeds["per_model"])
        several = per_model["test_set"].nunique() > 1
        # Groups sorted with the reference's first (False sorts before True).
        later = per_model["dataset"] != ref
        stds = per_model.groupby([later, "dataset", "test_set"])["std"]
        pngs["seed_std"] = figures.seed_std_figure(
            {
                (f"{marked(name, ref)} on {test_set}" if several else marked(name, ref)): (
                    group.to_numpy()
                )
                for (_, name, test_set), group in stds
            }
        )
    return pngs


def _reference_first_items(mapping: Mapping[str, object], reference: str) -> list[tuple]:
    """The ``(dataset, value)`` items of ``mapping`` with the reference dataset's first."""
    return [(name, mapping[name]) for name in reference_first(mapping, reference)]


def _matrix_reference_first(matrix: dict, reference: str) -> dict:
    """The dataset x dataset matrix with the reference's row and column first."""
    names = matrix["datasets"]
    order = [names.index(n) for n in reference_first(names, reference)]
    return {
        "datasets": [names[i] for i in order],
        "spearman": [[matrix["spearman"][i][j] for j in order] for i in order],
    }


def _table(table_id: str, records: list[dict]) -> dict:
    """A report table from records: the keys of the first record are the column headers."""
    return {
        "id": table_id,
        "columns": list(records[0]) if records else [],
        "rows": [list(record.values()) for record in records],
    }


def _listed(models: list[str]) -> str:
    shown = ", ".join(models[:MAX_LISTED])
    return shown + (f" … (+{len(models) - MAX_LISTED} more)" if len(models) > MAX_LISTED else "")


class Endpoint(float):
    """An interval endpoint in a report table: shown with the decimals that its Monte-Carlo
    error supports (:func:`analysis.stats.supported_decimals`), sorted by its value."""

    decimals: int

    def __new__(cls, value: float, decimals: int) -> Endpoint:
        endpoint = super().__new__(cls, round(value, decimals))
        endpoint.decimals = decimals
        return endpoint


def _endpoints(stat: dict) -> tuple[Endpoint | None, Endpoint | None]:
    """A statistic's interval endpoints for a table (at most 3 decimals, as other cells)."""
    if stat.get("ci_low") is None:
        return None, None
    decimals = supported_decimals(stat.get("mc_se"))
    return Endpoint(stat["ci_low"], decimals), Endpoint(stat["ci_high"], decimals)


def _pair_record(pair: dict) -> dict:
    """The columns of one pairwise comparison (reference vs target, or slice vs slice)."""
    rho, tau, selection = pair["spearman"], pair["kendall"], pair["selection"]
    rho_low, rho_high = _endpoints(rho)
    tau_low, tau_high = _endpoints(tau)
    return {
        "shared models": pair["n_models"],
        "Spearman ρ": rho["value"],
        "ρ CI low": rho_low,
        "ρ CI high": rho_high,
        "ρ CI MC error": rho.get("mc_se"),
        "ρ p": rho.get("p_value"),
        "Kendall τ": tau["value"],
        "τ CI low": tau_low,
        "τ CI high": tau_high,
        "log-odds r": pair["pearson_logit"]["value"],
        "weighted τ": pair["weighted_tau"]["value"],
        "top-k overlap": pair["top_k"]["value"],
        "chance": pair["top_k"].get("chance"),
        "loss of the pick (points)": selection.get("loss"),
        "resamples": rho.get("n_boot_valid"),
    }


def _describe_record(d: dict) -> dict:
    return {
        "mean error": d["mean_error"],
        "std": d["std_error"],
        "min": d["min_error"],
        "median": d["median_error"],
        "max": d["max_error"],
    }


def report_tables(summary: dict, names: readings.Names | None = None) -> dict:
    """Tables shown in both reports: name -> ``{"id", "columns", "rows"}``. Rows of datasets
    put the reference first, marked; targets and slices have their human names
    (``names``; default: regimes called "regime")."""
    names = names or readings.Names(summary)
    ref = summary["apr"]["reference"]

    def first(mapping: Mapping[str, object]) -> list[tuple]:
        return _reference_first_items(mapping, ref)

    tables = {}
    tables["datasets"] = _table(
        "datasets",
        [
            {"dataset": marked(name, ref), "models": d["n_models"], "excluded": d["n_excluded"]}
            | _describe_record(d)
            | {"best": d.get("best_model", "")}
            for name, d in first(summary["datasets"])
        ],
    )
    tables["apr"] = _table(
        "apr",
        [{"target": names.target(p)} | _pair_record(p) for p in summary["apr"]["targets"].values()],
    )
    primary = summary["settings"]["slice"]
    tables["slices"] = _table(
        "slices",
        [
            {"regime / metric": label, "dataset": marked(name, ref), "models": d["n_models"]}
            | _describe_record(d)
            for label, entry in summary["slices"].items()
            if label != primary
            for name, d in first(entry["datasets"])
        ],
    )
    tables["comparisons"] = _table(
        "comparisons",
        [
            {
                "dataset": marked(c["dataset"], ref),
                "A": names.slices[c["a"]],
                "B": names.slices[c["b"]],
                "kind": c["kind"],
            }
            | _pair_record(c)
            for c in sorted(summary["comparisons"], key=lambda c: c["dataset"] != ref)
        ],
    )
    matrix = _matrix_reference_first(summary["correlation_matrix"], ref)
    shown = [marked(n, ref) for n in matrix["datasets"]]
    tables["matrix"] = _table(
        "matrix",
        [
            {"dataset": name} | dict(zip(shown, row, strict=True))
            for name, row in zip(shown, matrix["spearman"], strict=True)
        ],
    )
    tables["reference_top_ranks"] = {
        names.target(p): _table(
            f"refranks-{i}",
            [
                {
                    "model": r["model"],
                    "reference rank": r["reference_rank"],
                    "target rank": r["target_rank"],
                    "reference error": r["reference_error"],
                    "target error": r["target_error"],
                }
                for r in p["reference_top_ranks"]
            ],
        )
        for i, p in enumerate(summary["apr"]["targets"].values())
        if p["reference_top_ranks"]
    }
    tables["top_k"] = {
        marked(name, ref): _table(f"topk-{i}", rows)
        for i, (name, rows) in enumerate(first(summary["top_k"]))
        if rows
    }
    arch = summary["architecture"]
    if arch["available"] and arch["features"]:
        features = arch["features"]
        tables["architecture"] = _table(
            "architecture",
            [
                {"dataset": marked(name, ref)}
                | {f"ρ {f}": per[f]["value"] for f in features}
                | {f"p {f}": per[f]["p_value"] for f in features}
                for name, per in first(arch["spearman"])
            ],
        )
    seeds = summary["seed_variance"]
    if seeds["available"]:
        tables["seeds"] = _table(
            "seeds",
            [
                {
                    "trained on": marked(name, ref),
                    "test set": test_set,
                    "models with 2+ seeds": spread["n_models"],
                    "mean std": spread["mean_std"],
                    "median std": spread["median_std"],
                    "max std": spread["max_std"],
                }
                for name, d in first(seeds["per_dataset"])
                for test_set, spread in d["test_sets"].items()
            ],
        )
        tables["seed_pairs"] = _table(
            "seed-pairs",
            [
                {
                    "trained on": marked(c["dataset"], ref),
                    "test set A": c["test_sets"][0],
                    "test set B": c["test_sets"][1],
                    "models": c["n_models"],
                    "seeds": c["n_seeds"],
                    "within-model r": c["pooled_within_model_r"],
                    "r CI low": c.get("pooled_ci", {}).get("ci_low"),
                    "r CI high": c.get("pooled_ci", {}).get("ci_high"),
                    "mean per-model r": c["mean_per_model_r"],
                    "mean std A": c["mean_std_a"],
                    "mean std B": c["mean_std_b"],
                }
                for c in sorted(seeds["test_set_pairs"], key=lambda c: c["dataset"] != ref)
            ],
        )
    exclusions = summary["exclusions"]
    tables["excluded"] = _table(
        "excluded",
        [
            {
                "model": r["model"],
                "dataset": marked(r["dataset"], ref),
                "regime / metric": r["slice"],
                "seed": r["seed"],
                "status": r["status"],
                "reason": r["reason"],
            }
            for r in sorted(exclusions["rows"], key=lambda r: r["dataset"] != ref)
        ],
    )
    tables["absent"] = _table(
        "absent",
        [
            {
                "dataset": marked(name, ref),
                "models without a result": len(models),
                "models": _listed(models),
            }
            for name, models in first(exclusions["models_without_result"])
        ],
    )
    return tables


def _safe_link(url: str) -> str | None:
    """``url`` if it is a web link or a relative path, else None (never a script link)."""
    return url if url and urlsplit(url).scheme.lower() in LINK_SCHEMES else None


def model_table(analysis: Analysis) -> dict:
    """Every model of the primary slice for the report's sortable, filterable table.

    Returns:
        ``{"columns", "numeric", "rows", "links", "n"}``: one row per model with its error
        and rank (1 = best) on each dataset (the reference first) and its architecture
        columns; ``links`` maps a
        row's dataset columns to the model's tracked run on that dataset (``run_url``).
    """
    table = analysis.table
    arch = table.architectures().reindex(analysis.models)
    urls = table.run_urls()
    datasets = reference_first(analysis.datasets, analysis.summary["apr"]["reference"])
    columns, numeric, values = ["model"], [False], [analysis.models.tolist()]
    for name in datasets:
        errors = analysis.errors[:, analysis.datasets.index(name)]
        ranks = pd.Series(errors).rank(method="min").to_numpy()
        columns += [f"{name} error", f"{name} rank"]
        numeric += [True, True]
        values += [_rounded(errors, 4), _rounded(ranks, 0)]
    for col in table.arch_columns:
        columns.append(col)
        numeric.append(True)
        values.append(_rounded(arch[col].to_numpy(dtype=float), 4))
    rows = [list(row) for row in zip(*values, strict=True)]
    links = []
    for model in analysis.models:
        row_links = {}
        for i, name in enumerate(datasets):
            url = _safe_link(urls.get((model, name), ""))
            if url:
                row_links[str(1 + 2 * i)] = url
        links.append(row_links)
    return {
        "columns": columns,
        "numeric": numeric,
        "rows": rows,
        "links": links if any(links) else [],
        "n": len(rows),
    }


def best_models_table(
    table: ResultsTable, analysis: Analysis, regime_word: str = "regime"
) -> dict | None:
    """The results that link to a logged model (``model_url``: an APR study's best models per
    dataset, registered in MLflow), for the reports' "Best models" table.

    Each result is ranked among every usable result of its dataset on the primary slice's
    metric, over all regimes and seeds (1 = best; ties share the better rank): the order in
    which a study picks the trials whose models it logs, so a model that failed to log leaves
    a gap in the ranks instead of moving the next one up.

    Args:
        table: the whole results table (every regime, metric and seed).
        analysis: the analysis of its primary slice (the metric and the reference dataset).
        regime_word: how the table names a regime (its regime column).

    Returns:
        None when the table has no ``model_url`` column (the section is left out), else
        ``{"columns", "rows", "unlinked"}``: rows of the datasets' linked results, best first
        and the reference's first, each ``{"cells", "url", "text"}`` (``url`` None for a link
        that is not a web link, which is not rendered); ``unlinked`` names the datasets without
        any link (every dataset when the column is empty: nothing was logged).
    """
    if MODEL_URL_COLUMN not in table.frame.columns:
        return None
    reference = analysis.summary["apr"]["reference"]
    rows = table.frame[table.frame["metric"] == analysis.table.metric_column].copy()
    rows["rank"] = rows.groupby("dataset")["error"].rank(method="min").astype(int)
    linked = rows[rows[MODEL_URL_COLUMN] != ""]
    several_regimes = rows["regime"].nunique() > 1
    several_seeds = table.has_seed and rows["seed"].nunique() > 1
    columns = ["dataset", "rank", "model"]
    columns += [regime_word] if several_regimes else []
    columns += ["seed"] if several_seeds else []
    columns += ["error", "logged model"]
    records = []
    datasets = reference_first(sorted(rows["dataset"].unique()), reference)
    for name in datasets:
        ordered = linked[linked["dataset"] == name].sort_values(
            ["rank", "model", "regime", *(["seed"] if table.has_seed else [])]
        )
        for row in ordered.to_dict("records"):
            cells = [marked(name, reference), row["rank"], row["model"]]
            cells += [row["regime"]] if several_regimes else []
            cells += [row["seed"]] if several_seeds else []
            url = _safe_link(row[MODEL_URL_COLUMN])
            records.append(
                {"cells": [*cells, row["error"]], "url": url, "text": _model_link_text(url)}
            )
    unlinked = [name for name in datasets if name not in set(linked["dataset"])]
    return {"columns": columns, "rows": records, "unlinked": unlinked}


def _model_link_text(url: str | None) -> str:
    """``models:/<name>/<version>`` for MLflow's page of a registered version, else a word."""
    if url is None:
        return "not a web link"
    page = _MODEL_VERSION_PAGE.fullmatch(urlsplit(url).fragment)
    if page is None:
        return "logged model"
    return f"models:/{unquote(page['name'])}/{unquote(page['version'])}"


def _rounded(values: np.ndarray, digits: int) -> list:
    """Floats for the model table's JSON: rounded, NaN as None (vectorised: 15k models)."""
    rounded = np.round(np.asarray(values, dtype=float), digits)
    cells = rounded.astype(object)
    cells[~np.isfinite(rounded)] = None
    return cells.tolist()


def script_json(data: dict) -> str:
    """JSON to embed in a ``<script type="application/json">``: ``</`` cannot close it."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def dataset_sections(figures: Mapping[str, str | Path], notes: Mapping[str, str]) -> list[dict]:
    """One entry per dataset with a summary figure: name, figure name, note and PNG bytes.

    Raises:
        ValueError: when a figure file cannot be read (before anything is written).
    """
    sections = []
    for name, path in sorted(figures.items()):
        try:
            png = Path(path).read_bytes()
        except OSError as e:
            raise ValueError(f"dataset figure of {name!r} cannot be read: {e}") from None
        # File names from dataset names, which this package does not check.
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        sections.append(
            {"name": name, "figure": f"dataset-{slug}", "note": notes.get(name, ""), "png": png}
        )
    return sections


def report_context(
    summary: dict,
    pngs: dict[str, bytes],
    models: dict,
    datasets: list[dict] | None = None,
    regime_word: str = "regime",
    best_models: dict | None = None,
) -> dict:
    """Everything the report templates need (``datasets``: see :func:`dataset_sections`;
    ``regime_word``: the table's regime column, how the sentences name a regime;
    ``best_models``: see :func:`best_models_table`, None leaves the section out)."""
    names = readings.Names(summary, regime_word)
    return {
        "summary": summary,
        "dataset_summaries": datasets or [],
        "tables": report_tables(summary, names),
        "models": models,
        "models_json": script_json(models),
        "best_models": best_models,
        "readings": {
            "answers": readings.answer_readings(summary, names),
            "few_models": readings.few_models_reading(summary),
            "ecdf": readings.ecdf_reading(summary),
            "apr": readings.apr_readings(summary, names),
            "matrix": readings.matrix_reading(summary),
            "architecture": readings.architecture_readings(summary),
            "seeds": readings.seed_readings(summary),
        },
        "images": {name: base64.b64encode(png).decode("ascii") for name, png in pngs.items()},
    }


def _cell(value) -> str:
    """Table cell text: interval endpoints with their supported decimals (:class:`Endpoint`),
    other floats with 3 decimals (3 significant digits when very large or small), None as
    ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, Endpoint):
        return f"{value:.{value.decimals}f}"
    if isinstance(value, float):
        # Large counts (FLOPs) and tiny p-values would read as "1e+09"/"0.000" otherwise.
        if abs(value) >= 1000 or 0 < abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.3f}"
    return str(value)


def template_environment(template_dir: Path) -> jinja2.Environment:
    """The Jinja environment of every report's templates in ``template_dir``: HTML templates
    autoescaped, an undefined name an error, block tags trimmed, and the ``md`` filter (a
    value as a Markdown table cell)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md"] = lambda value: str(value).replace("|", "\\|").replace("\n", " ")
    return env


def render_in(template_dir: Path, name: str, context: dict) -> str:
    """Renders template ``name`` of ``template_dir`` (:func:`template_environment`)."""
    return template_environment(template_dir).get_template(name).render(**context)


def render_template(name: str, context: dict) -> str:
    """Render a template shipped in the package (HTML templates are autoescaped), with the
    APR report's number formats."""
    env = template_environment(TEMPLATE_DIR)
    env.filters["cell"] = _cell
    env.filters["plural"] = plural
    env.filters["md"] = lambda value: _cell(value).replace("|", "\\|").replace("\n", " ")
    # A Markdown link's target: "(", ")" and spaces would end it early.
    env.filters["md_url"] = lambda url: quote(url, safe=":/?#@!$&'*+,;=%")
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
