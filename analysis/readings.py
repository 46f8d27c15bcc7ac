"""Plain-language readings of the summary, shared by the HTML and Markdown reports."""

from __future__ import annotations

# Upper bounds of |correlation| for each strength word (conventional, coarse bands).
STRENGTH_BANDS = ((0.1, "no"), (0.3, "weak"), (0.5, "moderate"), (0.7, "strong"))


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
    """`` [low, high]`` of a statistic with a bootstrap CI, or an empty string."""
    if stat.get("ci_low") is None:
        return ""
    return f" [{fmt(stat['ci_low'])}, {fmt(stat['ci_high'])}]"


def correlation_sentence(symbol: str, stat: dict, reference: str) -> str:
    """E.g. ``Spearman ρ = 0.62 [0.41, 0.77]: strong agreement with the reference``."""
    value = stat["value"]
    if value is None:
        return f"{symbol} is undefined: {stat['reason']}."
    if abs(value) < STRENGTH_BANDS[0][0]:
        verdict = f"no agreement with {reference}"
    elif value > 0:
        verdict = f"{strength(value)} agreement with {reference}"
    else:
        verdict = f"{strength(value)} disagreement with {reference} (rankings reversed)"
    text = f"{symbol} = {fmt(value)}{interval(stat)}: {verdict}"
    low, high = stat.get("ci_low"), stat.get("ci_high")
    if low is not None and low < 0 < high:
        text += "; the 95% interval includes 0, so even the sign is uncertain"
    return text + "."


def apr_readings(summary: dict) -> dict[str, list[str]]:
    """Sentences per target dataset about its agreement with the reference."""
    ref = summary["apr"]["reference"]
    readings = {}
    for name, pair in summary["apr"]["targets"].items():
        if pair.get("reason"):
            readings[name] = [f"No comparison with {ref}: {pair['reason']}."]
            continue
        lines = [
            correlation_sentence("Spearman ρ", pair["spearman"], ref),
            correlation_sentence("Log-odds Pearson r", pair["pearson_logit"], ref),
        ]
        top, tau, wtau = pair["top_k"], pair["kendall"]["value"], pair["weighted_tau"]["value"]
        shared = round(top["value"] * top["k"])
        lines.append(
            f"{shared} of the {top['k']} best models on {ref} are also among the {top['k']} "
            f"best on {name} (overlap {fmt(top['value'])}; {fmt(top['chance'])} expected by "
            "chance)."
        )
        if wtau - tau > 0.1:
            focus = "the best models agree more than the ranking as a whole"
        elif tau - wtau > 0.1:
            focus = "the best models agree less than the ranking as a whole"
        else:
            focus = "the best models agree about as much as the ranking as a whole"
        lines.append(f"Weighted Kendall τ = {fmt(wtau)} vs plain τ = {fmt(tau)}: {focus}.")
        missing = len(pair["missing_on_target"]) + len(pair["missing_on_reference"])
        if missing:
            lines.append(
                f"{missing} model(s) with a result on only one of the two datasets are left "
                "out of this comparison."
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
            f"(mean std over {d['n_models']} model(s) with 2+ seeds)."
        )
    for pair in seeds["test_set_pairs"]:
        a, b = pair["test_sets"]
        r = pair["pooled_within_model_r"]
        where = (
            f"checkpoints trained on {pair['dataset']} ({pair['n_models']} model(s), "
            f"{pair['n_seeds']} seeds in all)"
        )
        if r is None:
            lines.append(f"{a} vs {b} for the {where}: correlation undefined: {pair['reason']}.")
            continue
        lines.append(
            f"{a} vs {b} for the same {where}: {strength(r)} relation between a seed's error "
            f"on one and on the other (within-model r = {fmt(r)}; std across seeds "
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
    """A one-word-ish answer from a rank correlation: yes / partly / no (reversed)."""
    value = stat["value"]
    if value >= 0.5:
        word = "Yes"
    elif value >= STRENGTH_BANDS[0][0]:
        word = "Partly"
    elif value > -STRENGTH_BANDS[0][0]:
        word = "No"
    else:
        word = "No, the ranking is reversed"
    low, high = stat.get("ci_low"), stat.get("ci_high")
    if low is not None and low < 0 < high:
        word += " (the interval includes 0: not even the sign is certain)"
    return word


def answer_sentence(pair: dict, reference: str, target: str) -> str:
    """The answer for one comparison (shown after the target's name): verdict, rho with
    interval and n, and what choosing by the reference costs on the target."""
    rho = pair["spearman"]
    if rho["value"] is None:
        return f"no answer, {pair['reason']}."
    pick = pair["selection"]
    k = pair["top_k"]["k"]
    return (
        f"{answer_word(rho)}, Spearman ρ = {fmt(rho['value'])}{interval(rho)} over "
        f"n = {pair['n_models']} models. Picking {pick['pick']}, the best on {reference}, "
        f"costs {fmt(pick['loss'])} points of error on {target} against the best there "
        f"(rank {pick['pick_rank']} of {pair['n_models']}); the top {k} on {reference} are "
        f"{fmt(pick['top_k_mean_loss'])} points behind on average."
    )


def answer_readings(summary: dict) -> dict:
    """The report's opening: the question, one answer per target, and the method."""
    ref = summary["apr"]["reference"]
    settings = summary["settings"]
    answers = {}
    for name, pair in summary["apr"]["targets"].items():
        # A target of another slice names the slice its reference was taken from.
        source = ref if pair["slice"] == settings["slice"] else f"{ref} ({pair['reference_slice']})"
        answers[name] = answer_sentence(pair, source, name)
    comparisons = {}
    for c in summary["comparisons"]:
        line = answer_sentence(c, c["a"], c["b"])
        back = c.get("reverse_selection")
        if back is not None:
            line += (
                f" Picking the best on {c['b']} instead costs {fmt(back['loss'])} points on "
                f"{c['a']} "
                f"(rank {back['pick_rank']})."
            )
        comparisons[f"{c['dataset']}: {c['a']} vs {c['b']}"] = line
    return {
        "question": f"Do architectures that rank well on {ref} rank well on the other datasets?",
        "answers": answers,
        "comparisons": comparisons,
        "method": (
            f"Rank correlations over the models both sides share; errors in percent "
            f"({settings['slice']}). Intervals: {settings['interval_method']}. "
            "“Points” are percentage points of error."
        ),
    }
