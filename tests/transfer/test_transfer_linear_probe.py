"""Linear probe: separable vs random data, the C search, and bad input."""

import numpy as np
import pytest

from components.transfer.linear_probe import DEFAULT_CS, linear_probe


def blobs(rng, n, classes=3, dim=10, spread=4.0):
    y = np.arange(n) % classes
    centres = rng.normal(0, spread, (classes, dim))
    return centres[y] + rng.normal(0, 1, (n, dim)), y


def test_separable_data_is_learned():
    rng = np.random.default_rng(0)
    x, y = blobs(rng, 300)
    result = linear_probe(x[:240], y[:240], x[240:], y[240:], seed=0)
    assert result.accuracy >= 0.95
    assert list(result.grid) == sorted(DEFAULT_CS)
    assert result.C in result.grid
    assert result.grid[result.C] == max(result.grid.values())
    assert (result.n_train, result.n_val, result.n_test) == (240, 48, 60)
    assert result.metrics() == {"linear_top1": result.accuracy, "linear_C": result.C}


def test_random_labels_are_near_chance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 20))
    y = rng.integers(0, 4, 600)
    result = linear_probe(x[:400], y[:400], x[400:], y[400:], Cs=[1e-3, 1e-1, 10.0])
    assert result.accuracy < 0.4  # chance is 0.25
    assert set(result.grid) == {1e-3, 1e-1, 10.0}


def test_ties_choose_the_strongest_regularisation():
    rng = np.random.default_rng(2)
    x, y = blobs(rng, 200, classes=2, spread=50.0)  # every C separates these perfectly
    result = linear_probe(x[:150], y[:150], x[150:], y[150:], Cs=[100.0, 0.01, 1.0])
    assert result.grid == {0.01: 1.0, 1.0: 1.0, 100.0: 1.0}
    assert result.C == 0.01
    assert result.accuracy == 1.0


@pytest.mark.parametrize(
    ("train_y", "kwargs", "message"),
    [
        (np.zeros(20, dtype=int), {}, "at least two classes"),
        (np.r_[np.zeros(19, dtype=int), 1], {}, "fewer than 2"),
        (np.arange(20) % 2, {"Cs": []}, "positive"),
        (np.arange(20) % 2, {"Cs": [0.0, 1.0]}, "positive"),
        (np.arange(20) % 2, {"val_fraction": 1.5}, "val_fraction"),
    ],
)
def test_bad_input(train_y, kwargs, message):
    x = np.random.default_rng(3).normal(size=(20, 4))
    with pytest.raises(ValueError, match=message):
        linear_probe(x, train_y, x[:5], train_y[:5], **kwargs)


def test_shape_errors():
    x = np.zeros((10, 4))
    y = np.arange(10) % 2
    with pytest.raises(ValueError, match="differ in width"):
        linear_probe(x, y, np.zeros((3, 5)), y[:3])
    with pytest.raises(ValueError, match="one label per"):
        linear_probe(x, y[:9], x, y)


@pytest.mark.parametrize("C", [1e-2, 1.0, 100.0])
def test_fit_matches_scikit_learn(C):
    """Same standardised features, same C: the same weights and predictions as sklearn."""
    from sklearn.linear_model import LogisticRegression

    from components.transfer.linear_probe import fit_logistic

    rng = np.random.default_rng(4)
    x, y = blobs(rng, 150, classes=3, dim=6, spread=1.5)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    w, b, converged = fit_logistic(x, y, 3, C, max_iter=5000)
    reference = LogisticRegression(C=C, solver="lbfgs", max_iter=5000, tol=1e-10).fit(x, y)
    assert converged
    np.testing.assert_allclose(w, reference.coef_.T, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(b, reference.intercept_, rtol=1e-3, atol=1e-4)
    assert ((x @ w + b).argmax(axis=1) == reference.predict(x)).all()


def test_given_validation_split_chooses_C_and_is_refit_with():
    rng = np.random.default_rng(5)
    x, y = blobs(rng, 300, spread=2.0)
    result = linear_probe(
        x[:200], y[:200], x[250:], y[250:], val_features=x[200:250], val_labels=y[200:250]
    )
    assert (result.n_train, result.n_val, result.n_test) == (250, 50, 50)
    assert list(result.grid) == [float(c) for c in np.logspace(-6, 6, 13)]
    assert result.accuracy >= 0.9
