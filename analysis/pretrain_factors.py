"""The pretraining-factors study's statistics: which choices about the pretraining data change
how well the features transfer?

Huh, Agrawal, Efros 2016, "What makes ImageNet good for transfer learning?", arXiv
1608.08614, pretrain one CNN on controlled subsets of ImageNet and measure transfer: half the
images per class (500 instead of 1000) or an order of magnitude fewer classes (127 coarse
classes instead of 1000) cost little; features trained on coarse classes still separate fine
classes they never saw (induction); for a fixed budget of images, more classes and more images
per class are compared. Most choices thought critical barely change transfer.

The design here: one architecture pretrained under ``S`` seeds on each *variant* of a pool of
the source's classes (the classes not held out):

* ``reference``: the whole pool with its fine labels;
* ``images_per_class``: the pool with ``N`` training images per class, for each ``N``;
* ``classes``: ``K`` of the pool's classes (all their images), for each ``K``;
* ``labels``: the pool's images under the user's coarse labels (child -> parent map);
* ``budget``: a fixed total of ``T`` images as ``K`` classes x ``T / K`` images, for each
  ``K``.

Every pretrained model is then evaluated on the target datasets (linear probe, fine-tuning:
the transfer study's regimes) and, when classes are held out, on the held-out classes with
their fine labels (kNN, linear probe): the **induction accuracy** of features that never saw
those classes.

**Statistics.** Per (dataset, regime, variant): the mean accuracy over the seeds with a 95 %
Student-t interval (n = seeds). Per factor: the *contrast* between its reference level and its
extreme level (fewest images per class, fewest classes, coarse labels; for the budget, fewest
classes against most), paired by seed (every variant is pretrained under the same seeds, so
the pairing removes what a seed's initialisation shares across variants): the mean difference
with a 95 % Student-t interval over the seeds. A factor *matters* on a measure when that
interval excludes 0.

Pure numpy/scipy (no KFP, no torch, no I/O): ``components/pretrain`` builds the variants,
gathers the results and writes the report (:mod:`analysis.pretrain_factors_report`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analysis.readings import fmt
from analysis.words import plural

QUESTION = (
    "Which choices about the pretraining data (images per class, number of classes, coarse or "
    "fine labels, how a fixed image budget is split) change how well the features transfer?"
)
PAPER = (
    "Huh, Agrawal, Efros 2016, “What makes ImageNet good for transfer learning?”, arXiv "
    "1608.08614: pretraining on ImageNet with fewer images per class, fewer classes, coarse "
    "labels and a fixed image budget, transfer measured on PASCAL and SUN, and the induction "
    "accuracy of coarse-trained features on unseen fine classes"
)
REFERENCE = "reference"
#: The factors in the order the report shows them.
FACTORS = ("images_per_class", "classes", "labels", "budget")
FACTOR_NAMES = {
    "images_per_class": "images per class",
    "classes": "number of classes",
    "labels": "coarse vs fine labels",
    "budget": "fixed budget: classes vs images per class",
}
TARGET, INDUCTION = "target", "induction"
#: The accuracy metric of each transfer regime in the transfer study's table.
REGIME_METRIC = {"knn": "knn_top1", "linear": "linear_top1", "finetune": "top1"}
REGIME_NAMES = {"knn": "kNN", "linear": "linear probe", "finetune": "fine-tuning"}
LOWER, HIGHER, UNRESOLVED = "lower", "higher", "unresolved"
CONFIDENCE = 0.95
#: The range of an accuracy in percent, where its intervals end.
PERCENT = (0.0, 100.0)


@dataclass(frozen=True)
class Variant:
    """One pretraining dataset of the study.

    Attributes:
        name: its dataset name in the store and in the results.
        factor: ``reference`` or one of :data:`FACTORS`.
        level: the factor's setting in words (``60 / class``, ``4 classes``, ``coarse (3)``).
        classes: classes its labels have.
        images_per_class: training images kept per class (0: all the pool's).
    """

    name: str
    factor: str
    level: str
    classes: int
    images_per_class: int = 0

    def __post_init__(self) -> None:
        if self.factor not in (REFERENCE, *FACTORS):
            raise ValueError(f"unknown factor {self.factor!r}: one of {REFERENCE}, {FACTORS}")


@dataclass(frozen=True)
class Layout:
    """The datasets of a pretraining-factors study and how they relate.

    Attributes:
        source: the dataset the pool is drawn from, as the user named it.
        full: the source's build the pool derives from.
        n_classes: the source's number of classes.
        pool_classes: the classes the variants draw on (the source's minus the held-out ones).
        held_out: the held-out classes' dataset (fine labels; '' when none are held out).
        held_out_classes: its classes.
        variants: the reference first, then each factor's levels.
        targets: the transfer targets other than the held-out classes.
        seed: the seed of the class draws.
    """

    source: str
    full: str
    n_classes: int
    pool_classes: tuple[str, ...]
    held_out: str
    held_out_classes: tuple[str, ...]
    variants: tuple[Variant, ...]
    targets: tuple[str, ...]
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.variants or self.variants[0].factor != REFERENCE:
            raise ValueError("a pretraining-factors layout starts with its reference variant")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(
                f"two variants are the same dataset ({', '.join(duplicates)}): give each "
                "factor levels that differ from the reference and from each other"
            )
        overlap = sorted(set(names) & {self.held_out, *self.targets})
        if overlap:
            raise ValueError(f"a target is also a pretraining variant: {', '.join(overlap)}")

    @property
    def reference(self) -> Variant:
        return self.variants[0]

    @property
    def datasets(self) -> list[str]:
        """The pretraining datasets, the reference first."""
        return [v.name for v in self.variants]

    @property
    def transfer_datasets(self) -> list[str]:
        """Where every pretrained model is evaluated: the targets, then the held-out classes."""
        return [*self.targets, *([self.held_out] if self.held_out else [])]

    @property
    def factors(self) -> list[str]:
        """The factors the study varies, in :data:`FACTORS` order."""
        present = {v.factor for v in self.variants}
        return [f for f in FACTORS if f in present]

    def levels(self, factor: str) -> list[Variant]:
        """A factor's levels in the order the report plots them: the reference first (but for
        the budget, which does not contain it), then from the least to the most changed."""
        own = [v for v in self.variants if v.factor == factor]
        if factor == "budget":
            return sorted(own, key=lambda v: -v.classes)
        if factor == "images_per_class":
            own = sorted(own, key=lambda v: -v.images_per_class)
        elif factor == "classes":
            own = sorted(own, key=lambda v: -v.classes)
        return [self.reference, *own]

    def contrast(self, factor: str) -> tuple[Variant, Variant]:
        """(the factor's reference level, its extreme level): fewest images per class, fewest
        classes, coarse labels; for the budget, most classes against fewest."""
        levels = self.levels(factor)
        return levels[0], levels[-1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Layout:
        return cls(
            source=data["source"],
            full=data["full"],
            n_classes=int(data["n_classes"]),
            pool_classes=tuple(data["pool_classes"]),
            held_out=data["held_out"],
            held_out_classes=tuple(data["held_out_classes"]),
            variants=tuple(Variant(**v) for v in data["variants"]),
            targets=tuple(data["targets"]),
            seed=int(data.get("seed", 0)),
        )


def t_interval(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The mean of ``values`` with its Student-t interval (none below 2 values, or when the
    values do not vary: an interval of width 0 would claim a precision the seeds lack),
    clipped to ``bounds`` when given (an accuracy's interval ends at 0 and 100 %)."""
    data = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(data)
    if n == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(data.mean())
    # Equal up to rounding: the difference of two percentages that agree can come out as
    # 1e-15 instead of 0, and an interval that narrow would be reported as resolved.
    if n < 2 or np.allclose(data, mean, rtol=1e-9, atol=1e-9):
        return {"value": mean, "ci_low": None, "ci_high": None, "n": n}
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * data.std(ddof=1) / np.sqrt(n))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"value": mean, "ci_low": low, "ci_high": high, "n": n}


def direction(stat: Mapping[str, Any]) -> str:
    """``lower``/``higher`` when the interval excludes 0, else ``unresolved``."""
    low, high = stat.get("ci_low"), stat.get("ci_high")
    if low is None or high is None:
        return UNRESOLVED
    if high < 0:
        return LOWER
    if low > 0:
        return HIGHER
    return UNRESOLVED


def measures(frame: pd.DataFrame, layout: Layout) -> list[dict[str, str]]:
    """The (dataset, regime) pairs the table has accuracies for: targets first, then the
    held-out classes; regimes in :data:`REGIME_METRIC` order."""
    found = set(zip(frame["dataset"], frame["regime"], strict=True))
    out = []
    for dataset in layout.transfer_datasets:
        role = INDUCTION if dataset == layout.held_out else TARGET
        for regime in REGIME_METRIC:
            if (dataset, regime) in found:
                out.append({"dataset": dataset, "role": role, "regime": regime})
    return out


def _values(frame: pd.DataFrame, dataset: str, regime: str, variant: str) -> dict[int, float]:
    rows = frame[
        (frame["dataset"] == dataset) & (frame["regime"] == regime) & (frame["variant"] == variant)
    ]
    return {int(s): float(v) for s, v in zip(rows["seed"], rows["value"], strict=True)}


def level_rows(frame: pd.DataFrame, layout: Layout, measure: Mapping[str, str]) -> list[dict]:
    """Every variant's mean accuracy (percent) on one measure, with its interval over seeds."""
    rows = []
    for variant in layout.variants:
        values = _values(frame, measure["dataset"], measure["regime"], variant.name)
        stat = t_interval(list(values.values()), bounds=PERCENT)
        rows.append(
            {
                **measure,
                "variant": variant.name,
                "factor": variant.factor,
                "level": variant.level,
                "seeds": sorted(values),
                "values": [values[s] for s in sorted(values)],
                **stat,
            }
        )
    return rows


def contrast_row(
    frame: pd.DataFrame, layout: Layout, factor: str, measure: Mapping[str, str]
) -> dict[str, Any]:
    """The factor's extreme level minus its reference level on one measure, paired by seed."""
    base, extreme = layout.contrast(factor)
    first = _values(frame, measure["dataset"], measure["regime"], base.name)
    second = _values(frame, measure["dataset"], measure["regime"], extreme.name)
    seeds = sorted(set(first) & set(second))
    stat = t_interval([second[s] - first[s] for s in seeds])
    return {
        **measure,
        "factor": factor,
        "reference": base.name,
        "reference_level": base.level,
        "extreme": extreme.name,
        "extreme_level": extreme.level,
        **stat,
        "direction": direction(stat),
    }


def compute_pretrain_factors(
    frame: pd.DataFrame,
    layout: Layout,
    pretrain: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The study's summary.

    Args:
        frame: one row per (variant, seed, dataset, regime) with ``value``, the transfer
            accuracy in percent.
        layout: the study's datasets.
        pretrain: one row per (variant, seed) with ``value``, the pretrained model's accuracy
            (percent) on its own variant's test split (optional).

    Raises:
        ValueError: no accuracy at all, or a column missing.
    """
    needed = {"variant", "seed", "dataset", "regime", "value"}
    if missing := needed - set(frame.columns):
        raise ValueError(f"the transfer table lacks column(s) {', '.join(sorted(missing))}")
    frame = frame[np.isfinite(frame["value"].astype(float))]
    if frame.empty:
        raise ValueError("no transfer accuracy to analyse: every evaluation failed")
    found = measures(frame, layout)
    levels = [row for m in found for row in level_rows(frame, layout, m)]
    contrasts = [contrast_row(frame, layout, f, m) for f in layout.factors for m in found]
    own = []
    if pretrain is not None and not pretrain.empty:
        for variant in layout.variants:
            rows = pretrain[pretrain["variant"] == variant.name]
            stat = t_interval(list(rows["value"]), bounds=PERCENT)
            own.append({"variant": variant.name, **stat})
    seeds = sorted({int(s) for s in frame["seed"]})
    summary = {
        "question": QUESTION,
        "source": layout.source,
        "n_classes": layout.n_classes,
        "pool_classes": len(layout.pool_classes),
        "held_out": layout.held_out,
        "held_out_classes": list(layout.held_out_classes),
        "variants": [asdict(v) for v in layout.variants],
        "factors": layout.factors,
        "n_seeds": len(seeds),
        "measures": found,
        "levels": levels,
        "contrasts": contrasts,
        "pretrain": own,
        "settings": {"confidence": CONFIDENCE, "interval_method": INTERVAL_METHOD},
    }
    summary["answer"] = answer(summary)
    summary["induction"] = induction_sentence(summary)
    summary["metrics"] = flat_metrics(summary)
    return summary


INTERVAL_METHOD = (
    "95 % Student-t intervals over the seeds: of each variant's mean accuracy (clipped to "
    "0-100 %), and of each "
    "factor's contrast (extreme level minus reference level), the differences paired by seed "
    "(every variant is pretrained under the same seeds, so the pairing removes what a seed's "
    "initialisation shares across variants); a factor matters on a measure when its "
    "contrast's interval excludes 0; with one seed there is no interval, nor when every seed "
    "gives the same value"
)


def stat_text(stat: Mapping[str, Any] | None, unit: str = "") -> str:
    """``-3.1 [-5.0, -1.2]`` (points), or ``n/a``."""
    if not stat or stat.get("value") is None:
        return "n/a"
    text = f"{fmt(stat['value'], 1)}{unit}"
    if stat.get("ci_low") is None:
        return text + " (no interval)"
    return f"{text} [{fmt(stat['ci_low'], 1)}, {fmt(stat['ci_high'], 1)}]"


def measure_name(measure: Mapping[str, str]) -> str:
    """``shapes-16px, linear probe``; the held-out classes named as such."""
    where = (
        f"the held-out classes ({measure['dataset']})"
        if measure.get("role") == INDUCTION
        else measure["dataset"]
    )
    return f"{where}, {REGIME_NAMES[measure['regime']]}"


def primary_measure(summary: Mapping[str, Any]) -> dict[str, str] | None:
    """The measure the answer is about: the linear probe on the first target that has it
    (it measures the pretrained features themselves; fine-tuning retrains them, and a short
    fine-tune is noisy), else fine-tuning, else kNN."""
    targets = [m for m in summary["measures"] if m["role"] == TARGET]
    for regime in ("linear", "finetune", "knn"):
        for measure in targets:
            if measure["regime"] == regime:
                return measure
    return None


def _same(measure: Mapping[str, str], row: Mapping[str, Any]) -> bool:
    return row["dataset"] == measure["dataset"] and row["regime"] == measure["regime"]


def answer(summary: Mapping[str, Any]) -> str:
    """Which choices matter on the primary measure, in one sentence with intervals and n."""
    measure = primary_measure(summary)
    n = summary["n_seeds"]
    if measure is None:
        return "No target dataset has a transfer accuracy: see the notes for what failed."
    rows = [c for c in summary["contrasts"] if _same(measure, c)]
    if not rows:
        return f"On {measure_name(measure)}, no factor was varied: the study has one variant."
    parts = [
        f"{FACTOR_NAMES[c['factor']]} ({c['extreme_level']} vs {c['reference_level']}: "
        f"{stat_text(c)} points)"
        for c in rows
    ]
    matter = [c for c in rows if c["direction"] != UNRESOLVED]
    verdict = (
        f"{plural(len(matter), 'choice')} of {len(rows)} changed transfer beyond the seeds' "
        f"noise ({', '.join(FACTOR_NAMES[c['factor']] for c in matter)})"
        if matter
        else f"none of the {len(rows)} choices changed transfer beyond the seeds' noise"
    )
    return (
        f"On {measure_name(measure)}, {verdict}: {'; '.join(parts)} (n = {n} "
        f"{'seed' if n == 1 else 'seeds'} per level, 95 % intervals)."
    )


def induction_sentence(summary: Mapping[str, Any]) -> str:
    """Coarse-trained against fine-trained features on the held-out classes, when measured."""
    held = [m for m in summary["measures"] if m["role"] == INDUCTION]
    labels = [c for c in summary["contrasts"] if c["factor"] == "labels"]
    if not held:
        return "No classes were held out: no induction accuracy."
    if not labels:
        return "No coarse labels were given: no induction comparison (coarse vs fine)."
    parts = []
    for measure in held:
        levels = {
            r["factor"]: r
            for r in summary["levels"]
            if _same(measure, r) and r["factor"] in (REFERENCE, "labels")
        }
        (contrast,) = [c for c in labels if _same(measure, c)]
        fine, coarse = levels[REFERENCE], levels["labels"]
        parts.append(
            f"{REGIME_NAMES[measure['regime']]} {stat_text(coarse)} % with coarse labels "
            f"against {stat_text(fine)} % with fine ones (difference {stat_text(contrast)} "
            "points)"
        )
    return (
        f"Induction on {len(summary['held_out_classes'])} held-out classes never seen in "
        f"pretraining ({summary['held_out']}): " + "; ".join(parts) + "."
    )


def flat_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """Scalar metrics for MLflow and the Kubeflow UI: ``acc/<variant>/<dataset>/<regime>``
    (mean over seeds, percent) and ``delta/<factor>/<dataset>/<regime>`` with ``_ci_low`` and
    ``_ci_high``; undefined values left out."""
    candidates: dict[str, Any] = {"n_seeds": summary["n_seeds"]}
    for row in summary["levels"]:
        candidates[f"acc/{row['variant']}/{row['dataset']}/{row['regime']}"] = row["value"]
    for row in summary["contrasts"]:
        key = f"delta/{row['factor']}/{row['dataset']}/{row['regime']}"
        candidates[key] = row["value"]
        candidates[f"{key}_ci_low"] = row["ci_low"]
        candidates[f"{key}_ci_high"] = row["ci_high"]
    return {
        key: float(value)
        for key, value in candidates.items()
        if value is not None and np.isfinite(value)
    }
