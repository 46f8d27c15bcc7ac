"""Every statistic against a direct scipy/numpy computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    """Two correlated error vectors with ties on both sides (rounded to 0.5)."""
    rng = np.random.default_rng(3)
    x = rng.normal(30, 5, size=25)
    y = 0.6 * x + rng.normal(0, 3, size=25)
    return np.round(x * 2) / 2, np.round(y * 2) / 2


def test_ecdf_counts_strictly_smaller_errors():
    from analysis import stats

    errors = np.array([3.0, 1.0, 2.0, 2.0])
    grid = np.array([0.5, 1.0, 2.0, 2.5, 3.0, 3.5])
    expected = [np.mean(errors < e) for e in grid]
    np.testing.assert_allclose(stats.ecdf(errors, grid), expected)


def test_describe_matches_numpy():
    from analysis import stats

    values = np.array([5.0, 1.0, np.nan, 3.0, 9.0])
    d = stats.describe(values)
    finite = values[np.isfinite(values)]
    assert d["n_models"] == 4
    assert d["median_error"] == pytest.approx(np.median(finite))
    assert d["q25_error"] == pytest.approx(np.percentile(finite, 25))
    assert d["std_error"] == pytest.approx(np.std(finite))
    assert stats.describe(np.array([np.nan]))["reason"]


def test_vectorised_bootstrap_equals_scipy_loop_on_same_indices(pair):
    from scipy import stats as sps

    from analysis import stats

    x, y = pair
    idx = stats.Bootstrap(n_resamples=60, seed=1).indices(x.size, "a", "b")
    counts = stats.resample_counts(idx, x.size)
    spearman = stats.bootstrap_spearman(x, y, counts)
    kendall = stats.bootstrap_kendall(x, y, counts)
    lx, ly = stats.logit_accuracy(x)[0], stats.logit_accuracy(y)[0]
    pearson = stats.bootstrap_pearson(lx, ly, counts)
    for b, rows in enumerate(idx):
        assert spearman[b] == pytest.approx(sps.spearmanr(x[rows], y[rows]).statistic, abs=1e-12)
        assert kendall[b] == pytest.approx(sps.kendalltau(x[rows], y[rows]).statistic, abs=1e-12)
        assert pearson[b] == pytest.approx(sps.pearsonr(lx[rows], ly[rows]).statistic, abs=1e-12)


@pytest.mark.parametrize("n", [7, 300])
def test_fast_kendall_equals_scipy_with_heavy_ties(n):
    """Few distinct values (many ties in x, in y and in both) and resamples with copies."""
    from scipy import stats as sps

    from analysis import stats

    rng = np.random.default_rng(n)
    x = rng.integers(0, 6, size=n).astype(float)
    y = np.where(rng.random(n) < 0.5, x, rng.integers(0, 4, size=n)).astype(float)
    idx = rng.integers(0, n, size=(40, n))
    tau = stats.bootstrap_kendall(x, y, stats.resample_counts(idx, n))
    expected = [sps.kendalltau(x[rows], y[rows]).statistic for rows in idx]
    np.testing.assert_allclose(tau, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [2, 7, 32])
def test_pairwise_kendall_equals_the_inversion_count_exactly(n):
    """Up to PAIRWISE_MAX_MODELS models Kendall's tau comes from every pair at once: the same
    value as the inversion count, for one ranking and for a ranking per resample, with ties
    in x, in y, in both and copies of one model."""
    from analysis import stats

    assert n <= stats.PAIRWISE_MAX_MODELS
    rng = np.random.default_rng(n)
    x = rng.integers(0, 5, size=n).astype(float)
    y = np.where(rng.random(n) < 0.5, x, rng.integers(0, 4, size=n)).astype(float)
    counts = stats.resample_counts(rng.integers(0, n, size=(300, n)), n)
    noisy = stats.Measured(rng.uniform(5, 60, n), 20).draw(rng, 300)
    for a, b in ((x, y), (noisy, y), (x, noisy), (noisy, noisy[::-1])):
        pairwise = stats._pairwise_kendall(a, b, counts)
        np.testing.assert_array_equal(pairwise, stats._inversion_kendall(a, b, counts))
        np.testing.assert_array_equal(stats.bootstrap_kendall(a, b, counts), pairwise)
    assert np.isfinite(pairwise).any()


def test_statistics_in_blocks_are_the_statistics_of_the_whole_batch(monkeypatch):
    """Bootstrap.samples computes a batch's statistics in cache-sized blocks of resamples (and
    the pairwise Kendall's tau its pairs in blocks): the values do not depend on the block."""
    from analysis import stats

    rng = np.random.default_rng(3)
    x, y = rng.uniform(5, 60, 8), rng.uniform(5, 60, 8)
    data = [stats.Measured(x, 50), y]
    functions = {
        "spearman": lambda counts, a, b: stats.bootstrap_spearman(a, b, counts),
        "kendall": lambda counts, a, b: stats.bootstrap_kendall(a, b, counts),
    }
    bootstrap = stats.Bootstrap(n_resamples=3000, tolerance=0.0)
    whole = bootstrap.samples(functions, 8, "a", "b", data=data)
    monkeypatch.setattr(stats, "BLOCK_ELEMENTS", 40)
    monkeypatch.setattr(stats, "BLOCK_ROWS", 3)
    blocks = bootstrap.samples(functions, 8, "a", "b", data=data)
    for key in functions:
        assert whole[key].shape == (3000,)
        np.testing.assert_array_equal(blocks[key], whole[key])


def test_weighted_inversion_count_equals_brute_force():
    from analysis import stats

    rng = np.random.default_rng(8)
    ranks = rng.integers(0, 37, size=50)
    weights = rng.integers(0, 4, size=(5, 50)).astype(float)
    expected = [
        sum(w[i] * w[j] for i in range(50) for j in range(i + 1, 50) if ranks[i] > ranks[j])
        for w in weights
    ]
    np.testing.assert_array_equal(stats._inversions(ranks, weights), expected)


def test_bootstrap_draws_what_the_precision_needs():
    from analysis import stats

    statistic = {"mean": lambda counts: counts @ values / counts.sum(axis=1)}
    rng = np.random.default_rng(0)
    values = rng.normal(size=5000)
    # sd of the mean of 5000 N(0,1) ~ 0.014: the endpoints' error at 200 resamples ~ 0.003.
    early = stats.Bootstrap(1000, 0, tolerance=0.02).samples(statistic, 5000, "a")
    assert early["mean"].size == stats.PILOT_RESAMPLES
    full = stats.Bootstrap(1000, 0, tolerance=0).samples(statistic, 5000, "a")
    assert full["mean"].size == 1000
    # The pilot is the start of the same stream: early stopping never changes its resamples.
    np.testing.assert_array_equal(full["mean"][: early["mean"].size], early["mean"])
    # Rounds until the tolerance is reached, and not much beyond: half would not do.
    tight = stats.Bootstrap(100_000, 0, tolerance=0.0005).samples(statistic, 5000, "a")["mean"]
    assert stats.endpoint_se(tight) <= 0.0005 < stats.endpoint_se(tight[: tight.size // 2])
    # A cap below what the tolerance needs stops there.
    capped = stats.Bootstrap(1000, 0, tolerance=0.0005).samples(statistic, 5000, "a")["mean"]
    assert capped.size == 1000 and stats.endpoint_se(capped) > 0.0005
    assert stats.Bootstrap(0, 0).samples(statistic, 5000, "a")["mean"].size == 0


def test_degenerate_resample_gives_nan_and_is_dropped_from_the_interval():
    from analysis import stats

    x, y = np.array([1.0, 2.0, 3.0]), np.array([3.0, 1.0, 2.0])
    idx = np.array([[0, 0, 0], [0, 1, 2], [2, 1, 0]])
    counts = stats.resample_counts(idx, 3)
    rho = stats.bootstrap_spearman(x, y, counts)
    assert np.isnan(rho[0]) and np.isfinite(rho[1:]).all()
    assert np.isnan(stats.bootstrap_kendall(x, y, counts)[0])
    ci = stats.percentile_ci(rho)
    assert ci["n_boot_valid"] == 2
    assert ci["ci_low"] == pytest.approx(np.percentile(rho[1:], 2.5))


def test_bootstrap_interval_covers_the_truth_in_most_repetitions():
    """Coverage sanity: a 95% interval of a known correlation misses only rarely."""
    from analysis import stats

    rng = np.random.default_rng(0)
    cov = [[1.0, 0.7], [0.7, 1.0]]
    # Spearman rho of a bivariate normal with Pearson correlation r.
    truth = 6 / np.pi * np.arcsin(0.7 / 2)
    hits = 0
    for rep in range(40):
        sample = rng.multivariate_normal([0, 0], cov, size=200)
        counts = stats.resample_counts(stats.Bootstrap(400, rep).indices(200, "x", "y"), 200)
        ci = stats.percentile_ci(stats.bootstrap_spearman(sample[:, 0], sample[:, 1], counts))
        hits += ci["ci_low"] <= truth <= ci["ci_high"]
    assert hits >= 33


def test_pair_statistics_match_scipy(pair):
    from scipy import stats as sps

    from analysis import stats

    x, y = pair
    x[3] = 100.0  # 0 % accuracy: the logit must stay finite via clipping
    models = np.array([f"m{i:02d}" for i in range(x.size)])
    result = stats.pair_statistics(models, x, y, ("ref", "tgt"), 5, stats.Bootstrap(100, 0))
    assert result["spearman"]["value"] == pytest.approx(sps.spearmanr(x, y).statistic)
    assert result["spearman"]["p_value"] == pytest.approx(sps.spearmanr(x, y).pvalue)
    assert result["kendall"]["value"] == pytest.approx(sps.kendalltau(x, y).statistic)
    assert result["kendall"]["p_value"] == pytest.approx(sps.kendalltau(x, y).pvalue)
    acc_x = np.clip(1 - x / 100, 1e-4, 1 - 1e-4)
    acc_y = np.clip(1 - y / 100, 1e-4, 1 - 1e-4)
    r = sps.pearsonr(np.log(acc_x / (1 - acc_x)), np.log(acc_y / (1 - acc_y)))
    assert result["pearson_logit"]["value"] == pytest.approx(r.statistic)
    assert result["pearson_logit"]["n_clipped"] == 1
    assert result["weighted_tau"]["value"] == pytest.approx(
        sps.weightedtau(100 - x, 100 - y).statistic
    )
    # The interval: percentiles of scipy's statistic on the pair's resamples (100 <= pilot).
    idx = stats.Bootstrap(100, 0).indices(x.size, "ref", "tgt")
    for key, function in (("spearman", sps.spearmanr), ("kendall", sps.kendalltau)):
        replicates = [function(x[rows], y[rows]).statistic for rows in idx]
        low, high = np.percentile(replicates, [2.5, 97.5])
        assert result[key]["ci_low"] == pytest.approx(low, abs=1e-12)
        assert result[key]["ci_high"] == pytest.approx(high, abs=1e-12)
        assert result[key]["n_boot_valid"] == 100


def test_top_k_overlap_and_reference_ranks():
    from analysis import stats

    models = np.array(["a", "b", "c", "d", "e", "f"])
    ref = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    target = np.array([6.0, 1.0, 2.0, 5.0, 3.0, 4.0])
    result = stats.top_k_agreement(models, ref, target, 3)
    # top-3 on ref = {a, b, c}; on target = {b, c, e}
    assert result["top_k"]["value"] == pytest.approx(2 / 3)
    assert result["top_k"]["shared"] == ["b", "c"]
    assert result["top_k"]["chance"] == pytest.approx(0.5)
    assert [(r["model"], r["target_rank"]) for r in result["reference_top_ranks"]] == [
        ("a", 6),
        ("b", 1),
        ("c", 2),
    ]
    assert stats.top_k_agreement(models, ref, target, 50)["top_k"]["k"] == 6
    # Picking by ref chooses a (6.0 on target); the best on target is b (1.0).
    assert result["selection"] == {
        "pick": "a",
        "pick_error": 6.0,
        "pick_rank": 6,
        "best": "b",
        "best_error": 1.0,
        "loss": 5.0,
        "top_k_mean_loss": (6.0 + 1.0 + 2.0) / 3 - 1.0,
    }


def test_pair_statistics_report_missing_models_and_too_few_shared():
    from analysis import stats

    models = np.array(["a", "b", "c", "d"])
    ref = np.array([1.0, 2.0, np.nan, 4.0])
    target = np.array([1.0, np.nan, 3.0, 2.0])
    result = stats.pair_statistics(models, ref, target, ("r", "t"), 2, stats.Bootstrap(10, 0))
    assert result["missing_on_target"] == ["b"] and result["missing_on_reference"] == ["c"]
    assert result["n_models"] == 2
    assert result["spearman"]["value"] is None and "need 3" in result["reason"]

    constant = stats.pair_statistics(
        models, np.ones(4), np.arange(4.0), ("r", "t"), 2, stats.Bootstrap(10, 0)
    )
    assert "same value on r" in constant["reason"]


def test_correlation_matrix_matches_pairwise_spearman():
    from analysis import stats

    rng = np.random.default_rng(2)
    errors = rng.normal(size=(30, 4))
    errors[:28, 3] = np.nan  # only 2 models on the last dataset
    errors[5, 1] = np.nan
    names = ["a", "b", "c", "d"]
    result = stats.correlation_matrix(errors, names)
    frame = pd.DataFrame(errors, columns=names)
    expected = frame.corr(method="spearman")
    for i in range(3):
        for j in range(3):
            assert result["spearman"][i][j] == pytest.approx(expected.iloc[i, j])
    assert result["spearman"][0][3] is None and result["reason"]
    assert result["n_shared"][0][1] == 29
    assert {tuple(u["datasets"]) for u in result["undefined"]} == {
        ("a", "d"),
        ("b", "d"),
        ("c", "d"),
    }


def test_architecture_features_and_correlations():
    from scipy import stats as sps

    from analysis import stats

    rng = np.random.default_rng(4)
    arch = pd.DataFrame(
        rng.integers(1, 16, size=(20, 8)), columns=[f"{p}{s}" for p in "dw" for s in range(1, 5)]
    )
    features = stats.architecture_features(arch, ("d", "w"))
    assert set(features) == {"cum_depth", "cum_width"}
    np.testing.assert_array_equal(features["cum_depth"], arch[["d1", "d2", "d3", "d4"]].sum(axis=1))
    errors = rng.normal(size=20)
    errors[0] = np.nan
    result = stats.feature_correlations(features, errors, "x")
    expected = sps.spearmanr(features["cum_width"][1:], errors[1:])
    assert result["cum_width"]["value"] == pytest.approx(expected.statistic)
    assert result["cum_width"]["p_value"] == pytest.approx(expected.pvalue)
    assert result["cum_width"]["n_models"] == 19


def seed_study_frame() -> pd.DataFrame:
    """3 models x 2 trained datasets x 6 seeds; each checkpoint evaluated on its test split,
    its validation split and (imagenet only) a second test set ``v2``. Across datasets the
    test errors of one seed number are identical (a perfect but meaningless correlation, the
    statistic this study must not compute); within a checkpoint, v2 is noisier than test."""
    rng = np.random.default_rng(5)
    rows = []
    for m in range(3):
        shared = rng.normal(size=6)
        for dataset in ("imagenet", "cifar10"):
            for s in range(6):
                checkpoint = {"model": f"m{m}", "dataset": dataset, "seed": s}
                test = 20 + m + shared[s]
                evaluations = {"top1_error": test, "top1_error@val": test + rng.normal(0, 0.1)}
                if dataset == "imagenet":
                    evaluations["top1_error@v2"] = 30 + m + 2 * rng.normal()
                rows += [checkpoint | {"metric": k, "error": v} for k, v in evaluations.items()]
    return pd.DataFrame(rows)


def test_seed_study_correlates_test_sets_of_the_same_checkpoints_as_scipy():
    from scipy import stats as sps

    from analysis import stats

    frame = seed_study_frame()
    evaluations = {"test": "top1_error", "val": "top1_error@val", "v2": "top1_error@v2"}
    result = stats.seed_study(frame, evaluations)
    long = frame.assign(test_set=frame["metric"].map({v: k for k, v in evaluations.items()}))
    expected = long.groupby(["model", "dataset", "test_set"])["error"].std()
    assert len(result["per_model"]) == 3 * 2 * 2 + 3  # v2 on imagenet only
    for record in result["per_model"]:
        key = (record["model"], record["dataset"], record["test_set"])
        assert record["std"] == pytest.approx(expected[key]) and record["n_seeds"] == 6
    imagenet = result["per_dataset"]["imagenet"]
    assert imagenet["test_set"] == "test" and imagenet["n_models"] == 3
    assert imagenet["mean_std"] == pytest.approx(
        expected.xs(("imagenet", "test"), level=(1, 2)).mean()
    )
    assert imagenet["test_sets"]["v2"]["mean_std"] == pytest.approx(
        expected.xs(("imagenet", "v2"), level=(1, 2)).mean()
    )
    assert set(result["per_dataset"]["cifar10"]["test_sets"]) == {"test", "val"}

    pairs = {(p["dataset"], *p["test_sets"]): p for p in result["test_set_pairs"]}
    # Pairs of test sets within one trained dataset only: never imagenet vs cifar10.
    assert set(pairs) == {
        ("imagenet", "test", "val"),
        ("imagenet", "test", "v2"),
        ("imagenet", "val", "v2"),
        ("cifar10", "test", "val"),
    }
    wide = frame[frame["dataset"] == "imagenet"].pivot_table(
        index=["model", "seed"], columns="metric", values="error"
    )
    pair = pairs[("imagenet", "test", "v2")]
    assert pair["n_models"] == 3 and pair["n_seeds"] == 18
    for model in ("m0", "m1", "m2"):
        x, y = wide.loc[model, "top1_error"], wide.loc[model, "top1_error@v2"]
        r, p = sps.pearsonr(x, y)
        assert pair["per_model"][model]["pearson_r"] == pytest.approx(r)
        assert pair["per_model"][model]["p_value"] == pytest.approx(p)
        assert pair["per_model"][model]["std_a"] == pytest.approx(x.std(ddof=1))
        assert pair["per_model"][model]["std_b"] == pytest.approx(y.std(ddof=1))
    centred = wide - wide.groupby(level="model").transform("mean")
    pooled = sps.pearsonr(centred["top1_error"], centred["top1_error@v2"]).statistic
    assert pair["pooled_within_model_r"] == pytest.approx(pooled)
    assert abs(pooled) < 0.9  # not the identical-seed-number correlation of the old statistic
    assert pair["mean_std_b"] > 1.0 > pair["mean_std_a"]  # v2 spreads more, as constructed


def test_seed_study_of_one_model_is_its_pearson_r():
    """RSB's case: one architecture, n seeds, two test sets: the pooled within-model r is the
    plain Pearson r of the two error vectors."""
    from scipy import stats as sps

    from analysis import stats

    frame = seed_study_frame()
    frame = frame[(frame["model"] == "m1") & (frame["dataset"] == "imagenet")]
    result = stats.seed_study(frame, {"test": "top1_error", "v2": "top1_error@v2"})
    (pair,) = result["test_set_pairs"]
    wide = frame.pivot_table(index="seed", columns="metric", values="error")
    expected = sps.pearsonr(wide["top1_error"], wide["top1_error@v2"]).statistic
    assert pair["pooled_within_model_r"] == pytest.approx(expected)
    assert pair["mean_per_model_r"] == pytest.approx(expected)
    assert pair["n_seeds"] == 6 and pair["n_models"] == 1


def test_seed_study_correlation_has_a_bootstrap_interval_over_checkpoints():
    """RSB's question with an interval: 40 seeds of one model whose errors on two test sets
    share part of their seed noise (true r = 0.5)."""
    from analysis import stats

    rng = np.random.default_rng(11)
    shared, own_a, own_b = rng.normal(size=(3, 40))
    rows = []
    for s in range(40):
        base = {"model": "m", "dataset": "imagenet", "seed": s}
        rows.append(base | {"metric": "top1_error", "error": 20 + shared[s] + own_a[s]})
        rows.append(base | {"metric": "top1_error@v2", "error": 30 + shared[s] + own_b[s]})
    frame = pd.DataFrame(rows)
    evaluations = {"test": "top1_error", "v2": "top1_error@v2"}
    assert "pooled_ci" not in stats.seed_study(frame, evaluations)["test_set_pairs"][0]
    (pair,) = stats.seed_study(frame, evaluations, stats.Bootstrap(seed=3))["test_set_pairs"]
    ci = pair["pooled_ci"]
    # An independent percentile bootstrap of the 40 (test, v2) pairs.
    x, y = 20 + shared + own_a, 30 + shared + own_b
    draws = rng.integers(0, 40, size=(20_000, 40))
    rs = [np.corrcoef(x[d], y[d])[0, 1] for d in draws]
    low, high = np.percentile(rs, [2.5, 97.5])
    assert ci["ci_low"] == pytest.approx(low, abs=0.02)
    assert ci["ci_high"] == pytest.approx(high, abs=0.02)
    assert ci["ci_low"] < pair["pooled_within_model_r"] < ci["ci_high"]
    assert ci["mc_se"] <= stats.MC_TOLERANCE * 1.5 and ci["resamples"] >= stats.PILOT_RESAMPLES


def test_metric_names_are_valid_mlflow_keys():
    from analysis.compute import metric_name

    assert metric_name("spearman_rho", "ImageNet-A (v2)+x..y") == "spearman_rho/ImageNet-A _v2__x.y"


def test_seed_study_without_repeated_seeds_on_the_primary_test_set_says_why():
    from analysis import stats

    frame = seed_study_frame()
    # Only seed 0 has a test error; every seed has a v2 error.
    frame = frame[(frame["metric"] != "top1_error") | (frame["seed"] == 0)]
    result = stats.seed_study(frame, {"test": "top1_error", "v2": "top1_error@v2"})
    imagenet = result["per_dataset"]["imagenet"]
    assert imagenet["mean_std"] is None and "2+ seeds on test" in imagenet["reason"]
    assert imagenet["test_sets"]["v2"]["n_models"] == 3
    assert result["test_set_pairs"] == []
