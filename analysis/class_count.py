"""The class-count study's statistics: does the architecture ranking on a few of a dataset's
classes follow the ranking on all of them, and how does that change with the number of
classes?

Tuggener, Schmidhuber, Stadelmann 2021, "Is it enough to optimize CNN architectures on
ImageNet?", arXiv 2103.09108, train the same 500 AnyNetX architectures on ImageNet and on
ImageNet-X, random subsets of 100, 10, 5 and 2 of its classes: the APR of each subset against
ImageNet (their Fig. 7) weakens as classes fall, the correlation of cumulative depth and
cumulative width with error changes with the number of classes (Table 3), and the datasets
whose APR disagrees with ImageNet's agree better with a subset of about their own number of
classes (Fig. 8, the correlation matrix of every dataset and subset).

The design here: the same n architectures trained on the full dataset and on ``D`` seeded
draws of ``K`` classes for each size ``K``; a draw of each size is a prefix of one seeded
class permutation, so the subsets of one draw nest (2 classes within 5 within 10) and the
sizes differ by the number of classes, not by which classes. Per size:

* the APR correlation with the full set (Spearman ρ and Kendall τ-b between each model's
  error on the full set and on the subset), per draw and as the mean over the draws;
* the change from the largest to the smallest size (Δ of the means);
* the Spearman ρ of cumulative depth (Σ d_i) and cumulative width (Σ w_i) with the error
  (Table 3), per draw and as the mean over the draws, beside the full set's;
* the Spearman matrix of the full set, every draw of every size and any other dataset
  trained on the same models (Fig. 8).

**Intervals.** Two things were drawn at random: the architectures (n of the design space) and
the classes (D draws of each size), crossed: every architecture is trained on every draw. Each
bootstrap resample draws n architectures with replacement (the same ones for every dataset,
so each architecture keeps its errors on all datasets together) and, independently, D draw
indices with replacement (the same indices for every size: the draws nest across sizes), then
recomputes each per-draw correlation on the resampled architectures and averages it over the
resampled draws. That is the pigeonhole bootstrap of Owen 2007 ("The pigeonhole bootstrap",
The Annals of Applied Statistics 1(2)) for a two-factor crossed design, slightly conservative
(it counts the interaction of the two factors twice). The 95 % interval is the percentile
interval of those means (:func:`analysis.stats.percentile_ci`); a per-draw interval resamples
the architectures only. With ``D = 1`` the class draw's own variability is not in the
interval: more draws put it there. Where the test-set sizes are known (``test_noise``), every
resample also redraws each architecture's error on each dataset from ``Binomial(n_test,
error) / n_test`` (:class:`analysis.stats.Measured`): a 2-class subset has few test images,
and its errors move in large steps. The resample count is precision-driven as everywhere in
the analysis (:class:`analysis.stats.Bootstrap`).

Pure numpy/scipy (no KFP, no torch, no I/O): ``components/classcount`` gathers the results
and writes the report (:mod:`analysis.class_count_report`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis import stats
from analysis.readings import fmt, interval
from analysis.table import ResultsTable
from analysis.words import plural

QUESTION = (
    "Does the architecture ranking on a few of a dataset's classes follow the ranking on all "
    "of them, and does that agreement fall as the number of classes falls?"
)
PAPER = (
    "Tuggener, Schmidhuber, Stadelmann 2021, “Is it enough to optimize CNN architectures on "
    "ImageNet?”, arXiv 2103.09108: ImageNet-X (100, 10, 5 and 2 random ImageNet classes), "
    "Fig. 7 (the APR of each subset against ImageNet), Table 3 (cumulative depth and width vs "
    "error per subset) and Fig. 8 (the correlation matrix of every dataset and subset)"
)
METHOD_PAPER = (
    "Owen 2007, “The pigeonhole bootstrap”, The Annals of Applied Statistics 1(2) (the "
    "bootstrap of a crossed design: architectures × class draws)"
)
CORRELATIONS = ("spearman", "kendall")
# The architecture features of Table 3 (analysis.stats.STAGE_FEATURES).
TABLE3_FEATURES = ("cum_depth", "cum_width")
#: How the change from the largest to the smallest size reads (the sign of Δ and whether the
#: interval excludes 0).
FALLS, RISES, UNRESOLVED = "falls", "rises", "unresolved"


@dataclass(frozen=True)
class Subset:
    """One class subset of the study.

    Attributes:
        name: its dataset name in the store and the results.
        classes: how many classes it keeps (K).
        draw: which seeded draw of K classes it is (0 ... D - 1).
        class_names: the classes it keeps.
    """

    name: str
    classes: int
    draw: int
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layout:
    """The datasets of a class-count study and how they relate.

    Attributes:
        source: the dataset the subsets are drawn from, as the user named it.
        full: the full set's dataset name in the results (the source itself, or its build
            at the study's resolution for a built-in set).
        n_classes: the full set's number of classes.
        subsets: every subset, by size (largest first), then draw.
        others: further datasets trained on the same models (Fig. 8's other datasets).
        seed: the seed of the class draws.
    """

    source: str
    full: str
    n_classes: int
    subsets: tuple[Subset, ...]
    others: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        sizes = {s.classes for s in self.subsets}
        draws = {size: sorted(s.draw for s in self.subsets if s.classes == size) for size in sizes}
        if not sizes or len({tuple(d) for d in draws.values()}) != 1:
            raise ValueError(
                f"a class-count layout needs the same draws of every size, got {draws}"
            )
        if any(not 2 <= size < self.n_classes for size in sizes):
            raise ValueError(
                f"subset sizes {sorted(sizes)} must lie in [2, {self.n_classes - 1}] "
                f"(the full set has {self.n_classes} classes)"
            )
        names = self.datasets
        if len(set(names)) != len(names):
            raise ValueError(f"a class-count layout names a dataset twice: {names}")

    @property
    def sizes(self) -> list[int]:
        """The subset sizes, largest first."""
        return sorted({s.classes for s in self.subsets}, reverse=True)

    @property
    def draws(self) -> int:
        """Draws of each size."""
        return len(self.of_size(self.sizes[0]))

    def of_size(self, size: int) -> list[Subset]:
        """The subsets of one size, by draw."""
        return sorted((s for s in self.subsets if s.classes == size), key=lambda s: s.draw)

    @property
    def datasets(self) -> list[str]:
        """Every dataset name: the full set, the subsets (largest first, by draw), the others."""
        ordered = [s.name for size in self.sizes for s in self.of_size(size)]
        return [self.full, *ordered, *self.others]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Layout:
        subsets = tuple(
            Subset(s["name"], int(s["classes"]), int(s["draw"]), tuple(s.get("class_names", ())))
            for s in data["subsets"]
        )
        return cls(
            source=data["source"],
            full=data["full"],
            n_classes=int(data["n_classes"]),
            subsets=subsets,
            others=tuple(data.get("others", ())),
            seed=int(data.get("seed", 0)),
        )


@dataclass
class _Draws:
    """Per-draw bootstrap values of several statistics on the same resampled models.

    Attributes:
        samples: key -> ``(B,)`` resampled values (all keys share the model resamples).
        observed: key -> value on the models as observed (NaN where undefined).
        reasons: key -> why the value is undefined.
    """

    samples: dict[str, np.ndarray] = field(default_factory=dict)
    observed: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


class _Ranks:
    """Each column's average ranks within the current batch of resamples
    (:func:`analysis.stats.resampled_ranks`), computed once per batch: the full set's ranks
    serve its Spearman ρ with every subset, a feature's its ρ with every dataset.
    :meth:`analysis.stats.Bootstrap.samples` calls every statistic of a batch with the same
    count matrix and values before it draws the next one."""

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None
        self.ranks: dict[int, np.ndarray] = {}

    def __call__(self, counts: np.ndarray, values: Sequence[np.ndarray], column: int):
        if counts is not self.counts:  # a new batch (the reference keeps its id unique)
            self.counts, self.ranks = counts, {}
        if column not in self.ranks:
            self.ranks[column] = stats.resampled_ranks(values[column], counts)
        return self.ranks[column]


def _draw_statistics(
    pairs: Mapping[str, tuple[str, int, int]],
    data: Sequence[np.ndarray | stats.Measured],
    names: Sequence[str],
    n: int,
    bootstrap: stats.Bootstrap,
    stream: str,
) -> _Draws:
    """Bootstrap distributions of correlations between columns of ``data``, all on the same
    model resamples (:meth:`analysis.stats.Bootstrap.samples`).

    Args:
        pairs: key -> (``"spearman"`` or ``"kendall"``, column a, column b).
        data: per-model columns (errors, as :class:`~analysis.stats.Measured` for test-set
            noise, or architecture features).
        names: a name per column (messages).
        n: models.
        bootstrap: resample settings.
        stream: names the random stream, with ``names``.
    """
    values = [d.values if isinstance(d, stats.Measured) else d for d in data]
    result = _Draws()
    defined = {}
    ranks = _Ranks()
    for key, (kind, a, b) in pairs.items():
        reason = stats.undefined_reason(values[a], values[b], (names[a], names[b]))
        if reason is not None:
            result.observed[key] = float("nan")
            result.reasons[key] = reason
            continue
        if kind == "spearman":
            defined[key] = lambda counts, *v, a=a, b=b: stats.weighted_pearson(
                ranks(counts, v, a), ranks(counts, v, b), counts
            )
        else:
            defined[key] = lambda counts, *v, a=a, b=b: stats.bootstrap_kendall(v[a], v[b], counts)
        result.observed[key] = float(defined[key](np.ones((1, n)), *values)[0])
    if defined:
        result.samples = bootstrap.samples(defined, n, stream, *names, data=data)
    return result


def _mean_over_draws(
    draws: _Draws, keys: Sequence[str], draw_index: np.ndarray
) -> tuple[dict[str, Any], np.ndarray]:
    """The mean over the defined draws of one statistic, its crossed-bootstrap interval, and
    its resampled means (to difference them).

    Args:
        draws: the per-draw statistics.
        keys: the statistic's key of each draw, by draw.
        draw_index: ``(B, D)`` resampled draw indices (columns of ``keys``).
    """
    observed = np.array([draws.observed[k] for k in keys])
    defined = np.isfinite(observed)
    entry: dict[str, Any] = {
        "value": float(observed[defined].mean()) if defined.any() else None,
        "draws_defined": int(defined.sum()),
    }
    rows = draw_index.shape[0]
    if not defined.any():
        undefined = sorted({draws.reasons[k] for k in keys})
        return entry | {"reason": "; ".join(undefined)}, np.full(rows, np.nan)
    samples = np.column_stack(
        [draws.samples[k] if ok else np.zeros(rows) for k, ok in zip(keys, defined, strict=True)]
    )
    # How often each draw is in each resample; undefined draws weigh nothing (left out of the
    # mean as they are of the observed one), and an undrawn draw's NaN must not spread.
    weights = np.zeros(samples.shape)
    np.add.at(weights, (np.arange(rows)[:, None], draw_index), 1.0)
    weights *= defined
    values = np.where(weights > 0, samples, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (weights * values).sum(axis=1) / weights.sum(axis=1)
    if not defined.all():
        entry["undefined_draws"] = [
            {"draw": i, "reason": draws.reasons[k]}
            for i, (k, ok) in enumerate(zip(keys, defined, strict=True))
            if not ok
        ]
    return entry | stats.percentile_ci(means), means


def _per_draw(draws: _Draws, keys: Sequence[str], subsets: Sequence[Subset]) -> list[dict]:
    """Each draw's value and its interval over resampled models (no draw resampling)."""
    rows = []
    for key, subset in zip(keys, subsets, strict=True):
        value = draws.observed[key]
        row = {"draw": subset.draw, "dataset": subset.name}
        if np.isfinite(value):
            row |= {"value": value} | stats.percentile_ci(draws.samples[key])
        else:
            row |= {"value": None, "reason": draws.reasons[key]}
        rows.append(row)
    return rows


def _difference(small: np.ndarray, large: np.ndarray, observed: float | None) -> dict[str, Any]:
    """Δ = small - large with its percentile interval over the shared resamples."""
    if observed is None:
        return {"value": None, "reason": "a mean is undefined"}
    return {"value": observed} | stats.percentile_ci(small - large)


def direction(change: Mapping[str, Any]) -> str:
    """:data:`FALLS` when the whole interval of Δ (smallest size minus largest) lies below 0,
    :data:`RISES` when above, else :data:`UNRESOLVED` (no interval: the point estimate's sign,
    zero unresolved)."""
    value, low, high = change.get("value"), change.get("ci_low"), change.get("ci_high")
    if value is None:
        return UNRESOLVED
    if low is None or high is None:
        return FALLS if value < 0 else RISES if value > 0 else UNRESOLVED
    return FALLS if high < 0 else RISES if low > 0 else UNRESOLVED


def _measured(
    errors: np.ndarray, name: str, sizes: Mapping[str, int]
) -> np.ndarray | stats.Measured:
    """A dataset's errors, as :class:`~analysis.stats.Measured` when its test size is known."""
    return stats.Measured(errors, int(sizes[name])) if name in sizes else errors


def apr_by_size(
    errors: Mapping[str, np.ndarray],
    layout: Layout,
    bootstrap: stats.Bootstrap,
    test_sizes: Mapping[str, int] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The APR correlation of every subset size with the full set, and its change.

    Args:
        errors: dataset name -> errors in percent of the same n models (complete: no NaN).
        layout: the study's datasets.
        bootstrap: resample settings.
        test_sizes: dataset name -> test images, for binomial test-set noise (empty: none).

    Returns:
        ``(sizes, change)``: per size (largest first) ``{"classes", "draws", "n_models",
        "spearman", "kendall"}``, each correlation the mean over draws with its crossed
        interval and ``per_draw``; ``change``: Δ of each mean from the largest size to the
        smallest (``from``, ``to``, ``spearman``, ``kendall``, ``direction`` of Spearman's).
    """
    sizes = test_sizes or {}
    names = [layout.full, *(s.name for size in layout.sizes for s in layout.of_size(size))]
    data = [_measured(np.asarray(errors[name], float), name, sizes) for name in names]
    n = len(errors[layout.full])
    pairs = {
        f"{kind}:{s.name}": (kind, 0, names.index(s.name))
        for size in layout.sizes
        for s in layout.of_size(size)
        for kind in CORRELATIONS
    }
    draws = _draw_statistics(pairs, data, names, n, bootstrap, "class-count apr")
    draw_index = _draw_index(_rows(draws), layout.draws, bootstrap)
    result, means = [], {}
    for size in layout.sizes:
        subsets = layout.of_size(size)
        entry: dict[str, Any] = {"classes": size, "draws": len(subsets), "n_models": n}
        for kind in CORRELATIONS:
            keys = [f"{kind}:{s.name}" for s in subsets]
            entry[kind], means[(size, kind)] = _mean_over_draws(draws, keys, draw_index)
            entry[kind]["per_draw"] = _per_draw(draws, keys, subsets)
        warning = stats.few_models_warning(n)
        if warning:
            entry["warning"] = warning
        result.append(entry)
    large, small = layout.sizes[0], layout.sizes[-1]
    change: dict[str, Any] = {"from": large, "to": small}
    if large != small:
        for kind in CORRELATIONS:
            first, last = result[0][kind]["value"], result[-1][kind]["value"]
            observed = None if first is None or last is None else last - first
            change[kind] = _difference(means[(small, kind)], means[(large, kind)], observed)
        change["direction"] = direction(change["spearman"])
    return result, change


def _rows(draws: _Draws) -> int:
    """How many model resamples were drawn (0: no bootstrap, or nothing defined)."""
    return next(iter(draws.samples.values())).size if draws.samples else 0


def _draw_index(rows: int, n_draws: int, bootstrap: stats.Bootstrap) -> np.ndarray:
    """``(rows, D)`` resampled draw indices from one seeded stream (the first rows are the
    same whatever ``rows`` is)."""
    return bootstrap.generator("class-count draws").integers(0, n_draws, size=(rows, n_draws))


def features_by_size(
    features: Mapping[str, np.ndarray],
    errors: Mapping[str, np.ndarray],
    layout: Layout,
    bootstrap: stats.Bootstrap,
    test_sizes: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Table 3: the Spearman ρ of each architecture feature with the error, on the full set
    and per subset size (mean over draws, crossed interval).

    Args:
        features: feature name -> per-model values (same models as ``errors``, no NaN).
        errors: dataset name -> errors in percent.
        layout: the study's datasets.
        bootstrap: resample settings.
        test_sizes: dataset name -> test images (binomial test-set noise).

    Returns:
        One row per size, the full set first: ``{"classes", "datasets", feature: {...}}``.
    """
    sizes = test_sizes or {}
    feature_names = list(features)
    names = [*feature_names, layout.full]
    names += [s.name for size in layout.sizes for s in layout.of_size(size)]
    data: list[np.ndarray | stats.Measured] = [np.asarray(features[f], float) for f in features]
    data += [_measured(np.asarray(errors[name], float), name, sizes) for name in names[len(data) :]]
    n = len(errors[layout.full])
    pairs = {
        f"{feature}:{name}": ("spearman", i, names.index(name))
        for i, feature in enumerate(feature_names)
        for name in names[len(feature_names) :]
    }
    draws = _draw_statistics(pairs, data, names, n, bootstrap, "class-count features")
    full = Subset(layout.full, layout.n_classes, 0)
    rows_drawn = _rows(draws)
    groups = [(layout.n_classes, [full], np.zeros((rows_drawn, 1), dtype=int))]
    draw_index = _draw_index(rows_drawn, layout.draws, bootstrap)
    groups += [(size, layout.of_size(size), draw_index) for size in layout.sizes]
    rows = []
    for size, subsets, index in groups:
        row: dict[str, Any] = {"classes": size, "datasets": [s.name for s in subsets]}
        for feature in feature_names:
            keys = [f"{feature}:{s.name}" for s in subsets]
            row[feature] = _mean_over_draws(draws, keys, index)[0]
            row[feature]["per_draw"] = _per_draw(draws, keys, subsets)
        rows.append(row)
    return rows


def subset_matrix(errors: pd.DataFrame, layout: Layout) -> dict[str, Any]:
    """Fig. 8: Spearman ρ between every two datasets of the study (full set, every draw of
    every size, the other datasets) on the models they share, and, per other dataset, its
    correlation with the full set and its mean correlation with each size's draws.

    Args:
        errors: models x datasets errors (NaN where a model has no result).
        layout: the study's datasets.
    """
    names = [name for name in layout.datasets if name in errors.columns]
    matrix = stats.correlation_matrix(errors[names].to_numpy(dtype=float), names)
    rho = {
        (a, b): matrix["spearman"][i][j] for i, a in enumerate(names) for j, b in enumerate(names)
    }
    others = []
    for other in (o for o in layout.others if o in names):
        by_size = {}
        for size in layout.sizes:
            values = [rho[(other, s.name)] for s in layout.of_size(size) if s.name in names]
            defined = [v for v in values if v is not None]
            by_size[str(size)] = float(np.mean(defined)) if defined else None
        closest = [(v, int(k)) for k, v in by_size.items() if v is not None]
        full = rho.get((other, layout.full))
        if full is not None:
            closest.append((full, layout.n_classes))
        others.append(
            {
                "dataset": other,
                "full": full,
                "by_size": by_size,
                "best_classes": max(closest)[1] if closest else None,
            }
        )
    return matrix | {"others": others}


def error_frame(table: ResultsTable) -> pd.DataFrame:
    """Models x datasets errors in percent (mean over seeds; NaN where a model has no usable
    result) of a one-slice results table."""
    models, datasets, values = table.error_matrix()
    return pd.DataFrame(values, index=models, columns=datasets)


def _complete(table: ResultsTable, layout: Layout) -> tuple[pd.DataFrame, dict[str, str]]:
    """The errors (models x datasets, mean over seeds) and the models left out of the
    per-size statistics: those without a usable result on the full set or on some subset."""
    errors = error_frame(table)
    needed = [layout.full, *(s.name for s in layout.subsets)]
    missing = [name for name in needed if name not in errors.columns]
    if missing:
        raise ValueError(
            f"the results hold no usable result on {', '.join(missing)}: every model failed "
            "there (see results.csv), so no correlation with the full set exists"
        )
    left_out = {}
    for model, row in errors[needed].iterrows():
        absent = [name for name in needed if not np.isfinite(row[name])]
        if absent:
            left_out[str(model)] = f"no usable result on {', '.join(absent[:5])}"
    return errors, left_out


def compute_class_count(
    table: ResultsTable,
    layout: Layout,
    n_bootstrap: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
    test_sizes: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Every statistic of the class-count study, as a JSON-ready summary.

    Args:
        table: one ``(regime, metric)`` slice of the study's results (top-1 error).
        layout: the study's datasets.
        n_bootstrap: most bootstrap resamples (0: no intervals; at most
            :data:`analysis.stats.MAX_RESAMPLES`).
        seed: the bootstrap's seed.
        test_sizes: dataset name -> test images, for binomial test-set noise in the
            intervals (empty or None: the architectures are resampled only).

    Returns:
        ``question``, ``paper``, the design (``source``, ``full``, ``n_classes``,
        ``class_counts``, ``draws``), ``n_models`` and ``left_out``, ``apr`` (per size),
        ``change``, ``architecture`` (Table 3), ``matrix`` (Fig. 8), ``datasets``,
        ``settings``, ``answer`` (one sentence) and flat ``metrics``.

    Raises:
        ValueError: fewer than 3 architectures with a result on every dataset, or a dataset
            of the layout without any usable result.
    """
    bootstrap = stats.Bootstrap(n_resamples=n_bootstrap, seed=seed)
    sizes = {name: int(n) for name, n in (test_sizes or {}).items() if name in layout.datasets}
    errors, left_out = _complete(table, layout)
    complete = errors.drop(index=list(left_out))
    n = len(complete)
    if n < stats.MIN_MODELS:
        raise ValueError(
            f"only {plural(n, 'architecture')} with a usable result on the full set and every "
            f"subset: the correlations need {stats.MIN_MODELS} (see results.csv for failures)"
        )
    columns = {name: complete[name].to_numpy(dtype=float) for name in complete.columns}
    apr, change = apr_by_size(columns, layout, bootstrap, sizes)
    summary: dict[str, Any] = {
        "schema_version": 1,
        "question": QUESTION,
        "paper": PAPER,
        "source": layout.source,
        "full": layout.full,
        "n_classes": layout.n_classes,
        "class_counts": layout.sizes,
        "draws": layout.draws,
        "n_models": n,
        "models": [str(m) for m in complete.index],
        "left_out": left_out,
        "apr": apr,
        "change": change,
        "architecture": _architecture(table, complete, layout, bootstrap, sizes),
        "matrix": subset_matrix(errors, layout),
        "datasets": _datasets(errors, layout, sizes),
        "settings": {
            "n_bootstrap": n_bootstrap,
            "seed": seed,
            "ci_level": stats.CI_LEVEL,
            "bootstrap_tolerance": bootstrap.tolerance,
            "test_sizes": sizes,
            "test_noise": "binomial" if sizes else "none",
            "interval_method": interval_method(layout.draws, bool(sizes)),
            "layout": layout.to_dict(),
        },
    }
    summary["answer"] = answer(summary)
    summary["metrics"] = flat_metrics(summary)
    return summary


def _architecture(
    table: ResultsTable,
    complete: pd.DataFrame,
    layout: Layout,
    bootstrap: stats.Bootstrap,
    sizes: Mapping[str, int],
) -> dict[str, Any]:
    """Table 3 over the architectures with stage columns (named timm models have none)."""
    groups = table.arch_groups
    if not {"d", "w"} <= set(groups):
        return {
            "available": False,
            "reason": "no stage columns d1..d4 and w1..w4 in the results (named "
            "architectures only)",
        }
    arch = table.architectures().reindex(complete.index)
    features = {
        name: values
        for name, values in stats.architecture_features(arch, groups).items()
        if name in TABLE3_FEATURES
    }
    staged = np.all([np.isfinite(v) for v in features.values()], axis=0)
    if staged.sum() < stats.MIN_MODELS:
        return {
            "available": False,
            "reason": f"only {plural(int(staged.sum()), 'architecture')} with stage columns",
        }
    kept = complete[staged]
    rows = features_by_size(
        {name: values[staged] for name, values in features.items()},
        {name: kept[name].to_numpy(dtype=float) for name in kept.columns},
        layout,
        bootstrap,
        sizes,
    )
    result = {"available": True, "features": list(features), "n_models": int(staged.sum())}
    if not staged.all():
        result["left_out"] = [str(m) for m in complete.index[~staged]]
    return result | {"rows": rows}


def _datasets(
    errors: pd.DataFrame, layout: Layout, sizes: Mapping[str, int]
) -> dict[str, dict[str, Any]]:
    """Per dataset: its role, classes, draw, usable models, mean and range of the error."""
    roles = {layout.full: ("full set", layout.n_classes, None)}
    roles |= {s.name: ("subset", s.classes, s.draw) for s in layout.subsets}
    roles |= {name: ("other", None, None) for name in layout.others}
    result = {}
    for name in layout.datasets:
        role, classes, draw = roles[name]
        entry = {"role": role, "classes": classes, "draw": draw, "n_test": sizes.get(name)}
        values = errors[name].to_numpy(dtype=float) if name in errors.columns else np.array([])
        result[name] = entry | stats.describe(values)
    for subset in layout.subsets:
        result[subset.name]["class_names"] = list(subset.class_names)
    return result


def interval_method(n_draws: int, noise: bool) -> str:
    """How the intervals were computed, in words (the module docstring's method)."""
    draws = (
        f"and, independently, the {n_draws} class draws of each size (the same draw indices "
        "for every size; the draws nest)"
        if n_draws > 1
        else "(one class draw per size: the class choice's own variability is not in the interval)"
    )
    noise_text = (
        "; each architecture's error on each dataset redrawn per resample from "
        "Binomial(n_test, error) / n_test (test-set noise)"
        if noise
        else "; without test-set noise"
    )
    return (
        f"95% percentile bootstrap of the mean over draws: each resample draws the "
        f"architectures with replacement (the same for every dataset) {draws}, recomputes "
        f"each draw's correlation on the resampled architectures and averages it over the "
        f"resampled draws (the pigeonhole bootstrap of a crossed design){noise_text}; a "
        "per-draw interval resamples the architectures only; resamples are drawn until the "
        f"endpoints are precise to {stats.MC_TOLERANCE} (analysis.stats.Bootstrap)"
    )


def stat_text(stat: Mapping[str, Any] | None) -> str:
    """``0.43 [-0.14, 0.86]``, or ``n/a``."""
    if not stat or stat.get("value") is None:
        return "n/a"
    return f"{fmt(stat['value'])}{interval(dict(stat))}"


def answer(summary: Mapping[str, Any]) -> str:
    """The report's answer in one sentence: the APR correlation with the full set at the
    largest and the smallest size, with intervals and n, and which way it moves."""
    apr, change = summary["apr"], summary["change"]
    n, draws = summary["n_models"], summary["draws"]
    where = f"On {summary['source']} ({summary['n_classes']} classes)"
    over = f"mean over {plural(draws, 'draw')} each, n = {n} architectures"
    first = apr[0]
    if len(apr) == 1:
        return (
            f"{where}, the architecture ranking on {first['classes']}-class subsets has "
            f"Spearman ρ = {stat_text(first['spearman'])} with the full set's ({over})."
        )
    last = apr[-1]
    delta = change["spearman"]
    moves = {
        FALLS: "the agreement falls as classes fall: the interval of the change excludes 0",
        RISES: "the agreement rises as classes fall: the interval of the change excludes 0",
        UNRESOLVED: "the interval of the change includes 0: no change is resolved at this n",
    }[change["direction"]]
    return (
        f"{where}, Spearman ρ between the architectures' errors on the full set and on a "
        f"subset is {stat_text(first['spearman'])} at {first['classes']} classes and "
        f"{stat_text(last['spearman'])} at {last['classes']} ({over}); the change Δρ = "
        f"{stat_text(delta)}: {moves}."
    )


def paper_direction(summary: Mapping[str, Any]) -> str:
    """Whether the numbers point the way Tuggener et al. report (weaker with fewer classes)."""
    change = summary["change"]
    if "direction" not in change:
        return "One subset size: no direction to compare with the paper's (give two or more)."
    value = change["spearman"].get("value")
    if value is None:
        return "The change is undefined (see the table): no direction to compare."
    how = (
        "and the interval excludes 0"
        if change["direction"] != UNRESOLVED
        else "on the point estimate only (the interval includes 0)"
    )
    if value == 0:
        return "No change between the sizes: nothing to compare with the paper's direction."
    way = "the paper's way" if value < 0 else "against the paper's finding"
    return (
        f"This points {way}, {how}: Tuggener et al. find the APR of ImageNet-X against "
        "ImageNet weaker the fewer the classes."
    )


def flat_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """Scalar metrics for MLflow and the Kubeflow UI (undefined values left out):
    ``spearman_mean/c<K>``, ``spearman_ci_low/c<K>``, ``kendall_mean/c<K>`` ..., the change
    ``delta_spearman`` and its interval, and Table 3's ``<feature>_rho/c<K>``."""
    candidates: dict[str, Any] = {"n_models": summary["n_models"], "draws": summary["draws"]}
    for entry in summary["apr"]:
        size = entry["classes"]
        for kind in CORRELATIONS:
            stat = entry[kind]
            candidates[f"{kind}_mean/c{size}"] = stat.get("value")
            candidates[f"{kind}_ci_low/c{size}"] = stat.get("ci_low")
            candidates[f"{kind}_ci_high/c{size}"] = stat.get("ci_high")
    for kind in CORRELATIONS:
        stat = summary["change"].get(kind) or {}
        candidates[f"delta_{kind}"] = stat.get("value")
        candidates[f"delta_{kind}_ci_low"] = stat.get("ci_low")
        candidates[f"delta_{kind}_ci_high"] = stat.get("ci_high")
    architecture = summary["architecture"]
    for row in architecture.get("rows", []):
        for feature in architecture["features"]:
            candidates[f"{feature}_rho/c{row['classes']}"] = row[feature].get("value")
    return {
        key: float(value)
        for key, value in candidates.items()
        if value is not None and np.isfinite(value)
    }
