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


def test_features_are_standardised_on_the_fitting_data():
    """Rescaling or shifting a feature changes nothing: each fit standardises its inputs."""
    rng = np.random.default_rng(4)
    x, y = blobs(rng, 240, classes=3, dim=6, spread=1.5)
    plain = linear_probe(x[:180], y[:180], x[180:], y[180:], Cs=[1e-3, 1e-1, 10.0])
    skewed = x * np.array([1e4, 1e-3, 1.0, 50.0, 1.0, 1.0]) + 1e3
    scaled = linear_probe(skewed[:180], y[:180], skewed[180:], y[180:], Cs=[1e-3, 1e-1, 10.0])
    assert scaled.grid == pytest.approx(plain.grid)
    assert (scaled.C, scaled.accuracy) == (plain.C, pytest.approx(plain.accuracy))
    assert plain.accuracy > 0.6  # chance is 1/3


def test_refit_matches_scikit_learn_on_all_training_data():
    """The test accuracy is that of scikit-learn's model refit with the chosen C on the
    training and validation images together."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(6)
    x, y = blobs(rng, 300, classes=4, dim=8, spread=1.0)
    result = linear_probe(
        x[:150], y[:150], x[200:], y[200:], val_features=x[150:200], val_labels=y[150:200]
    )
    scaler = StandardScaler().fit(x[:200])
    model = LogisticRegression(C=result.C, max_iter=1000).fit(scaler.transform(x[:200]), y[:200])
    expected = (model.predict(scaler.transform(x[200:])) == y[200:]).mean()
    assert result.accuracy == pytest.approx(expected)


def test_too_few_iterations_are_reported_as_not_converged():
    rng = np.random.default_rng(7)
    x, y = blobs(rng, 200, classes=3, spread=1.0)
    assert not linear_probe(x[:150], y[:150], x[150:], y[150:], Cs=[1e3], max_iter=1).converged
    assert linear_probe(x[:150], y[:150], x[150:], y[150:], Cs=[1e3]).converged


def test_string_labels_and_a_test_class_unseen_in_training():
    rng = np.random.default_rng(8)
    x, y = blobs(rng, 240, classes=3, spread=5.0)
    names = np.array(["cat", "dog", "owl"])[y]
    test_names = names[180:].copy()
    test_names[:3] = "newt"  # never predicted: those three count as errors
    result = linear_probe(x[:180], names[:180], x[180:], test_names)
    assert result.accuracy == pytest.approx(57 / 60)


def test_given_validation_split_chooses_C_and_is_refit_with():
    rng = np.random.default_rng(5)
    x, y = blobs(rng, 300, spread=2.0)
    result = linear_probe(
        x[:200], y[:200], x[250:], y[250:], val_features=x[200:250], val_labels=y[200:250]
    )
    assert (result.n_train, result.n_val, result.n_test) == (250, 50, 50)
    assert list(result.grid) == [float(c) for c in np.logspace(-6, 6, 13)]
    assert result.accuracy >= 0.9
