"""Plain-language readings of the summary, shared by the HTML and Markdown reports."""

from __future__ import annotations

import math
import re

from analysis.stats import MC_TOLERANCE, MIN_RELIABLE_MODELS, supported_decimals
from analysis.table import OWN_TEST_SET, split_evaluation
from analysis.words import plural

# Upper bounds of |correlation| for each strength word (conventional, coarse bands).
STRENGTH_BANDS = ((0.1, "no"), (0.3, "weak"), (0.5, "moderate"), (0.7, "strong"))
# Words of metric names written as they are spelled in prose.
METRIC_WORDS = {"knn": "kNN", "logme": "LogME", "leep": "LEEP", "acc": "accuracy", "err": "error"}
# The sections of summary["warnings"] (statistics over few models), in words.
FEW_MODELS_SECTIONS = {
    "apr": "comparisons with the reference",
    "comparisons": "comparisons across regimes and metrics",
    "correlation_matrix": "dataset × dataset correlations",
    "architecture": "architecture correlations",
}
# Statistics named per section in the warning; the rest are counted.
FEW_MODELS_LISTED = 5


def strength(value: float) -> str:
    """A word for the size of a correlation: no/weak/moderate/strong/very strong."""
    for bound, word in STRENGTH_BANDS:
        if abs(value) < bound:
            return word
    return "very strong"


def fmt(value: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals, or ``n/a`` for a missing value."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def interval(stat: dict) -> str:
    """`` [low, high]`` of a statistic with a bootstrap CI, or an empty string.

    The endpoints have the decimals their Monte-Carlo error supports (:func:`analysis.stats.
    supported_decimals`), 1 to 2, and `` ±error`` follows them when that error is above the
    tolerance the method promises (the resample bound stopped it first): ``[-0.1, 0.6]
    ±0.02``. One decimal at least, for a correlation in whole numbers (``[-0, 1]``) reads as
    a typo; the ``±`` says what the last digit is worth.
    """
    if stat.get("ci_low") is None:
        return ""
    mc_se = stat.get("mc_se")
    digits = min(2, max(1, supported_decimals(mc_se)))
    # + 0.0 turns a -0.0 that rounds from a small negative value into 0.0.
    low, high = (round(stat[key], digits) + 0.0 for key in ("ci_low", "ci_high"))
    text = f" [{fmt(low, digits)}, {fmt(high, digits)}]"
    if mc_se is not None and mc_se > MC_TOLERANCE:
        text += f" ±{mc_error(mc_se)}"
    return text


def mc_error(mc_se: float) -> str:
    """A Monte-Carlo standard error rounded up to one significant digit (``0.0123`` ->
    ``0.02``), so the printed precision never claims more than the estimate."""
    digits = max(0, -math.floor(math.log10(mc_se)))
    # Rounded first: 0.05 * 100 is 5.000000000000001, whose ceiling would be 6.
    return f"{math.ceil(round(mc_se * 10**digits, 9)) / 10**digits:.{digits}f}"


def few_models_reading(summary: dict) -> str | None:
    """The warning about the statistics that rest on fewer than ``MIN_RELIABLE_MODELS``
    models (``summary["warnings"]``), or None when there are none."""
    found = summary.get("warnings") or []
    if not found:
        return None
    parts = []
    for section, words in FEW_MODELS_SECTIONS.items():
        entries = [w for w in found if w["section"] == section]
        if entries:
            listed = ", ".join(
                f"{w['name']} ({w['n_models']})" for w in entries[:FEW_MODELS_LISTED]
            )
            more = len(entries) - FEW_MODELS_LISTED
            parts.append(f"{words}: {listed}" + (f" and {more} more" if more > 0 else ""))
    return (
        f"{plural(len(found), 'statistic')} rest on fewer than "
        f"{summary['settings']['min_reliable_models']} models ({'; '.join(parts)}; models in "
        "brackets). With so few models a correlation moves in coarse steps with single models "
        "and its 95% interval is wide: read these as indicative."
    )


def relation(stat: dict) -> tuple[int, str | None]:
    """What a correlation's 95% interval supports: its sign and its strength.

    The sign is +1 when the whole interval lies above 0, -1 when it lies below 0, and 0 when
    it includes 0 ("no clear relation", whatever the point estimate). The strength word is
    the one of the interval's end nearest 0, "at least weak" to "very strong", so that it
    holds over the whole interval; None when that end is below the "weak" band (the sign is
    certain, the size may be negligible). Without an interval (no bootstrap) the point
    estimate stands for it, its own strength word without "at least", and a value below
    the "weak" band counts as no relation.

    Returns:
        ``(sign, word)``.
    """
    value = stat["value"]
    low, high = stat.get("ci_low"), stat.get("ci_high")
    if low is None or high is None:
        if abs(value) < STRENGTH_BANDS[0][0]:
            return 0, None
        return (1 if value > 0 else -1), strength(value)
    if low > 0:
        sign, nearest = 1, low
    elif high < 0:
        sign, nearest = -1, -high
    else:
        return 0, None
    word = strength(nearest)
    if word == STRENGTH_BANDS[0][1]:
        return sign, None
    return sign, word if word == "very strong" else f"at least {word}"


def correlation_sentence(symbol: str, stat: dict, reference: str) -> str:
    """E.g. ``Spearman ρ = 0.62 [0.41, 0.77]: at least moderate agreement with imagenet``
    (the verdict follows the interval: :func:`relation`)."""
    if stat["value"] is None:
        return f"{symbol} is undefined: {stat['reason']}."
    sign, word = relation(stat)
    if sign == 0:
        verdict = f"no clear relation with {reference}"
        if stat.get("ci_low") is not None:
            verdict += " (the 95% interval includes 0)"
    elif sign > 0:
        verdict = f"{word or 'possibly negligible'} agreement with {reference}"
    else:
        verdict = f"{word or 'possibly negligible'} disagreement with {reference}"
        verdict += " (rankings reversed)"
    return f"{symbol} = {fmt(stat['value'])}{interval(stat)}: {verdict}."


def metric_words(metric: str) -> str:
    """A metric name in words: ``top5_error`` -> ``top-5 error``, ``top1`` -> ``top-1
    accuracy``, ``knn_top1`` -> ``kNN top-1 accuracy``, ``top1_error@imagenet_v2`` ->
    ``top-1 error on imagenet_v2``."""
    base, test_set = split_evaluation(metric)
    words = [METRIC_WORDS.get(w, re.sub(r"^top(\d+)$", r"top-\1", w)) for w in base.split("_")]
    if re.fullmatch(r"top\d+", base.split("_")[-1]):
        words.append("accuracy")  # "top1" alone is read as an accuracy (analysis.table)
    text = " ".join(words)
    return text if test_set == OWN_TEST_SET else f"{text} on {test_set}"


def slice_name(regime: str, metric: str, regime_word: str = "regime") -> str:
    """A ``(regime, metric)`` slice in words, e.g. ``top-5 error, recipe apr_tiny``
    (``regime_word``: the name of the table's regime column)."""
    words = metric_words(metric)
    return f"{words}, {regime_word} {regime}" if regime else words


class Names:
    """Human names of the datasets and slices of one summary, for the reports' sentences.

    Args:
        summary: The analysis summary.
        regime_word: The table's regime column (``recipe``, ``regime``, ``method``).
    """

    def __init__(self, summary: dict, regime_word: str = "regime") -> None:
        self.primary = summary["settings"]["slice"]
        self.regime_word = regime_word
        self.parts = summary["slices"]  # label -> {"regime", "metric", ...}
        self.slices = {
            label: slice_name(entry["regime"], entry["metric"], regime_word)
            for label, entry in summary["slices"].items()
        }

    def side(self, dataset: str, label: str) -> str:
        """A dataset in a slice: its name in the primary slice, else ``dataset (slice)``."""
        return dataset if label == self.primary else f"{dataset} ({self.slices[label]})"

    def target(self, pair: dict) -> str:
        """A target of the reference comparison (``summary["apr"]["targets"]`` entry)."""
        return self.side(pair["dataset"], pair["slice"])

    def comparison(self, c: dict) -> str:
        """A slice comparison (``summary["comparisons"]`` entry), naming only what differs:
        the metrics of one regime, the regimes of one metric, or both."""
        a, b = self.parts[c["a"]], self.parts[c["b"]]
        if a["regime"] == b["regime"]:
            within = f", {self.regime_word} {a['regime']}" if a["regime"] else ""
            metrics = f"{metric_words(a['metric'])} vs {metric_words(b['metric'])}"
            return f"{c['dataset']}{within}: {metrics}"
        if a["metric"] == b["metric"]:
            return (
                f"{c['dataset']}, {metric_words(a['metric'])}: {self.regime_word} "
                f"{a['regime']} vs {b['regime']}"
            )
        return f"{c['dataset']}: {self.slices[c['a']]} vs {self.slices[c['b']]}"

    def reason(self, pair: dict, first: str, second: str, min_models: int) -> str:
        """Why a comparison has no statistics, with human names (``first``, ``second``)."""
        if pair["n_models"] < min_models:
            return (
                f"only {plural(pair['n_models'], 'model')} shared by {first} and {second}; "
                f"need {min_models}"
            )
        text = pair["reason"]
        for label, name in self.slices.items():
            text = text.replace(f"({label})", f"({name})")
        return text


def apr_readings(summary: dict, names: Names) -> dict[str, list[str]]:
    """Sentences per target (by its human name) about its agreement with the reference."""
    ref = summary["apr"]["reference"]
    min_models = summary["settings"]["min_models"]
    readings = {}
    for pair in summary["apr"]["targets"].values():
        name = names.target(pair)
        source = names.side(ref, pair["reference_slice"])
        if pair.get("reason"):
            reason = names.reason(pair, source, name, min_models)
            readings[name] = [f"No comparison with {source}: {reason}."]
            continue
        lines = [
            correlation_sentence("Spearman ρ", pair["spearman"], source),
            correlation_sentence("Log-odds Pearson r", pair["pearson_logit"], source),
        ]
        top, tau, wtau = pair["top_k"], pair["kendall"]["value"], pair["weighted_tau"]["value"]
        shared = round(top["value"] * top["k"])
        lines.append(
            f"{shared} of the {top['k']} best models on {source} are also among the "
            f"{top['k']} best on {name} (overlap {fmt(top['value'])}; {fmt(top['chance'])} "
            "expected by chance)."
        )
        if wtau - tau > 0.1:
            focus = "the best models agree more than the ranking as a whole"
        elif tau - wtau > 0.1:
            focus = "the best models agree less than the ranking as a whole"
        else:
            focus = "the best models agree about as much as the ranking as a whole"
        lines.append(f"Weighted Kendall τ = {fmt(wtau)} vs plain τ = {fmt(tau)}: {focus}.")
        if pair.get("warning"):
            lines.append(f"Warning: {pair['warning']}.")
        missing = len(pair["missing_on_target"]) + len(pair["missing_on_reference"])
        if missing:
            lines.append(
                f"{plural(missing, 'model')} with a result on only one of the two datasets "
                f"{'is' if missing == 1 else 'are'} left out of this comparison."
            )
        readings[name] = lines
    return readings


def ecdf_reading(summary: dict) -> str:
    """Which dataset is hardest/easiest and how spread the errors are."""
    described = {n: d for n, d in summary["datasets"].items() if d["n_models"] > 0}
    easiest = min(described, key=lambda n: described[n]["median_error"])
    hardest = max(described, key=lambda n: described[n]["median_error"])
    widest = max(described, key=lambda n: described[n]["q75_error"] - described[n]["q25_error"])
    iqr = described[widest]["q75_error"] - described[widest]["q25_error"]
    return (
        f"Median error ranges from {fmt(described[easiest]['median_error'])}% on {easiest} to "
        f"{fmt(described[hardest]['median_error'])}% on {hardest}. The spread between "
        f"architectures is widest on {widest} (interquartile range {fmt(iqr)} points): there "
        "the choice of architecture matters most."
    )


def matrix_reading(summary: dict) -> str:
    """The most and least similar pair of datasets."""
    matrix = summary["correlation_matrix"]
    names, rho = matrix["datasets"], matrix["spearman"]
    pairs = [
        (rho[i][j], names[i], names[j])
        for i in range(len(names))
        for j in range(i + 1, len(names))
        if rho[i][j] is not None
    ]
    if not pairs:
        return "No pair of datasets shares enough models for a rank correlation."
    high, low = max(pairs), min(pairs)
    return (
        f"The most similar rankings are {high[1]} and {high[2]} (ρ = {fmt(high[0])}); the "
        f"least similar are {low[1]} and {low[2]} (ρ = {fmt(low[0])})."
    )


def architecture_readings(summary: dict) -> list[str]:
    """Per feature, the range of its correlation with error across datasets."""
    arch = summary["architecture"]
    if not arch["available"]:
        return [f"Architecture analysis skipped: {arch['reason']}."]
    lines = []
    if arch.get("left_out"):
        left_out = arch["left_out"]
        lines.append(
            f"Left out of these correlations: {', '.join(left_out['models'])} "
            f"({left_out['reason']})."
        )
    for feature in arch["features"]:
        values = {
            name: per[feature]["value"]
            for name, per in arch["spearman"].items()
            if per[feature]["value"] is not None
        }
        if not values:
            continue
        low = min(values, key=values.get)
        high = max(values, key=values.get)
        label = feature.replace("_", " ")
        lines.append(
            f"{label}: ρ with error from {fmt(values[low])} ({low}) to {fmt(values[high])} "
            f"({high}); negative means larger {label} goes with lower error."
        )
    return lines


def seed_readings(summary: dict) -> list[str]:
    """Seed-to-seed spread per dataset and test set, and the ResNet-strikes-back statistic:
    how the errors of the same checkpoints on two test sets co-vary across seeds."""
    seeds = summary["seed_variance"]
    if not seeds["available"]:
        return [f"Seed analysis skipped: {seeds['reason']}."]
    lines = []
    for name, d in seeds["per_dataset"].items():
        spreads = ", ".join(
            f"{fmt(spread['mean_std'], 3)} points on {test_set}"
            for test_set, spread in d["test_sets"].items()
        )
        lines.append(
            f"{name}: a model's error varies across seeds by {spreads} "
            f"(mean std over {plural(d['n_models'], 'model')} with 2+ seeds)."
        )
    for pair in seeds["test_set_pairs"]:
        a, b = pair["test_sets"]
        r = pair["pooled_within_model_r"]
        where = (
            f"checkpoints trained on {pair['dataset']} ({plural(pair['n_models'], 'model')}, "
            f"{plural(pair['n_seeds'], 'seed')} in all)"
        )
        if r is None:
            lines.append(f"{a} vs {b} for the {where}: correlation undefined: {pair['reason']}.")
            continue
        lines.append(
            f"{a} vs {b} for the same {where}: {strength(r)} relation between a seed's error "
            f"on one and on the other (within-model r = {fmt(r)}"
            f"{interval(pair.get('pooled_ci', {}))}; std across seeds "
            f"{fmt(pair['mean_std_a'], 3)} on {a}, {fmt(pair['mean_std_b'], 3)} on {b})."
        )
    if not seeds["test_set_pairs"]:
        lines.append(
            "No checkpoint was evaluated on a second test set (a trial's test_sets), so the "
            "correlation between two test sets across seeds (ResNet strikes back: ImageNet-val "
            "vs ImageNet-V2) is not computed."
        )
    return lines


def answer_word(stat: dict) -> str:
    """The answer from a rank correlation, as far as its interval supports it
    (:func:`relation`): ``Yes: at least strong agreement``, ``Partly: ...``, ``No clear
    relation`` or ``No, the ranking is reversed: ...``."""
    sign, word = relation(stat)
    if sign == 0:
        return "No clear relation"
    if sign < 0:
        return "No, the ranking is reversed" + (f": {word} disagreement" if word else "")
    if word is None:
        return "Partly: agreement of uncertain size"
    # "strong" and "very strong" (|ρ| >= 0.5) answer yes; weak and moderate, partly.
    return f"{'Yes' if 'strong' in word else 'Partly'}: {word} agreement"


def answer_sentence(pair: dict, reference: str, target: str, names: Names, min_models: int) -> str:
    """The answer for one comparison (shown after the target's name): verdict, rho with
    interval and n, and what choosing by the reference costs on the target."""
    rho = pair["spearman"]
    if rho["value"] is None:
        return f"no answer, {names.reason(pair, reference, target, min_models)}."
    pick = pair["selection"]
    k = pair["top_k"]["k"]
    few = f", fewer than {MIN_RELIABLE_MODELS}: indicative only" if pair.get("warning") else ""
    return (
        f"{answer_word(rho)} (Spearman ρ = {fmt(rho['value'])}{interval(rho)}, "
        f"n = {plural(pair['n_models'], 'model')}{few}). Picking {pick['pick']}, the best on "
        f"{reference}, costs {fmt(pick['loss'])} points of error on {target} against the best "
        f"there (rank {pick['pick_rank']} of {pair['n_models']}); the top {k} on {reference} "
        f"are {fmt(pick['top_k_mean_loss'])} points behind on average."
    )


def answer_readings(summary: dict, names: Names) -> dict:
    """The report's opening: the question, one answer per target (by its human name), and
    the method."""
    ref = summary["apr"]["reference"]
    settings = summary["settings"]
    min_models = settings["min_models"]
    answers = {}
    for pair in summary["apr"]["targets"].values():
        # A target of another slice names the slice its reference was taken from.
        source = names.side(ref, pair["reference_slice"])
        target = names.target(pair)
        answers[target] = answer_sentence(pair, source, target, names, min_models)
    comparisons = {}
    for c in summary["comparisons"]:
        a, b = names.side(c["dataset"], c["a"]), names.side(c["dataset"], c["b"])
        line = answer_sentence(c, a, b, names, min_models)
        back = c.get("reverse_selection")
        if back is not None:
            line += (
                f" Picking the best on {b} instead costs {fmt(back['loss'])} points on {a} "
                f"(rank {back['pick_rank']})."
            )
        comparisons[names.comparison(c)] = line
    return {
        "question": f"Do architectures that rank well on {ref} rank well on the other datasets?",
        "answers": answers,
        "comparisons": comparisons,
        "method": (
            f"Rank correlations over the models both sides share; errors in percent "
            f"({names.slices[settings['slice']]}). Verdicts follow the 95% interval: "
            "“no clear relation” when it includes 0, and a strength that its end nearest 0 "
            "reaches (|ρ| from 0.1 weak, 0.3 moderate, 0.5 strong, 0.7 very strong); “yes” "
            f"from strong. Intervals: {settings['interval_method']}. “Points” are percentage "
            "points of error."
        ),
        "mirrors": (
            "It mirrors Tuggener, Schmidhuber, Stadelmann 2021, “Is it enough to optimize CNN "
            "architectures on ImageNet?”, arXiv 2103.09108: their APR plots (each model's error "
            "on ImageNet against its error on a target dataset) with Spearman's ρ per dataset, "
            "and their eCDFs of test error; here the reference plays ImageNet's part."
        ),
    }
