"""LogME and LEEP against values worked out by hand from the papers' equations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.transfer.cli import main
from components.transfer.scores import leep, log_evidence, logme, maximize_evidence


def test_logme_closed_form():
    """n = 4 samples, one feature f = (1, 1, -1, -1), classes y = (0, 0, 1, 1).

    For class 0 the target column is y0 = (1, 1, 0, 0); with a = f'f = 4, b = f'y0 = 2,
    c = y0'y0 = 2 and t = alpha / beta, s = t + a:
        m = b / s,  gamma = a / s,  ||f m - y0||^2 = c - 2 b^2 / s + a b^2 / s^2.
    The fixed point alpha = gamma / m^2, beta = (n - gamma) / ||f m - y0||^2 with
    beta = alpha / t gives (2 s^2 - 8 s + 16) / (s (s - 4)) = (4 s - 4) / s, so
    2 s^2 - 12 s = 0: s = 6, t = 2, alpha = 6, beta = 3, m = 1/3, gamma = 2/3,
    ||f m - y0||^2 = 10/9, log|A| = log(6 + 3 * 4) = log 18. The evidence:
        L = 2 log 3 + 1/2 log 6 - 2 log 2 pi - 3/2 * 10/9 - 6/2 * 1/9 - 1/2 log 18
          = 3/2 log 3 - 2 log 2 pi - 2.
    Class 1 has b = -2, the same b^2, hence the same L; LogME = L / n.
    """
    features = np.array([[1.0], [1.0], [-1.0], [-1.0]])
    labels = np.array([0, 0, 1, 1])
    expected = (1.5 * np.log(3) - 2 * np.log(2 * np.pi) - 2) / 4
    assert logme(features, labels) == pytest.approx(expected, abs=1e-9)

    u, s, _ = np.linalg.svd(features, full_matrices=False)
    fixed = maximize_evidence(4, 1, s**2, u.T @ np.array([1.0, 1, 0, 0]), 2.0)
    assert fixed.alpha == pytest.approx(6, rel=1e-5)
    assert fixed.beta == pytest.approx(3, rel=1e-5)


def _direct_evidence(features, y, alpha, beta):
    """The evidence equation with the matrices themselves (no SVD), divided by n."""
    n, dim = features.shape
    a = alpha * np.eye(dim) + beta * features.T @ features
    m = beta * np.linalg.solve(a, features.T @ y)
    return (
        n / 2 * np.log(beta)
        + dim / 2 * np.log(alpha)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * np.sum((features @ m - y) ** 2)
        - alpha / 2 * m @ m
        - np.linalg.slogdet(a)[1] / 2
    ) / n


@pytest.mark.parametrize("n, dim", [(40, 5), (6, 10)])  # n > D and n < D (zero eigenvalues)
def test_svd_evidence_equals_the_matrix_equation_and_is_maximal(n, dim):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n, dim))
    y = (features[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(float)
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    sigma, x = s**2, u.T @ y
    for alpha, beta in [(0.5, 2.0), (3.0, 0.7)]:
        assert log_evidence(n, dim, sigma, x**2, y @ y, alpha, beta) == pytest.approx(
            _direct_evidence(features, y, alpha, beta), abs=1e-10
        )
    if n < dim:  # the evidence may grow without bound (alpha or beta -> infinity) here
        return
    fixed = maximize_evidence(n, dim, sigma, x, float(y @ y), tol=1e-10)
    for da, db in [(1.05, 1), (0.95, 1), (1, 1.05), (1, 0.95)]:  # a maximum: moving loses
        moved = _direct_evidence(features, y, fixed.alpha * da, fixed.beta * db)
        assert moved < fixed.evidence


def test_logme_ranks_informative_features_above_noise():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 30)
    good = np.eye(3)[labels] * 3 + rng.normal(size=(90, 3))
    noise = rng.normal(size=(90, 3))
    assert logme(good, labels) > logme(noise, labels)


def test_leep_closed_form():
    """Two images, source probabilities (0.75, 0.25) and (0.25, 0.75), target classes 0, 1.

    P(y, z) = [[0.375, 0.125], [0.125, 0.375]], P(z) = (0.5, 0.5),
    P(y | z) = [[0.75, 0.25], [0.25, 0.75]]; for each image
    sum_z P(y_i | z) theta_z = 0.75 * 0.75 + 0.25 * 0.25 = 0.625, so LEEP = log 0.625.
    """
    probs = np.array([[0.75, 0.25], [0.25, 0.75]])
    assert leep(probs, np.array([0, 1])) == pytest.approx(np.log(0.625), abs=1e-12)
    # Perfectly predictive source classes: P(y | z) is the identity, LEEP = log 1 = 0.
    assert leep(np.eye(2), np.array([1, 0])) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: logme(np.ones((4, 2)), np.zeros(4)), "at least two classes"),
        (lambda: logme(np.ones(4), np.zeros(4)), "2-D"),
        (lambda: leep(np.array([[0.5, 0.6]]), np.array([0])), "sum to 1"),
        (lambda: leep(np.array([[np.nan, 1.0]]), np.array([0])), "NaN"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_score_cli(tmp_path, capsys):
    features, labels = tmp_path / "F.npy", tmp_path / "Y.npy"
    np.save(features, np.array([[1.0], [1.0], [-1.0], [-1.0]]))
    np.save(labels, np.array([0, 0, 1, 1]))
    args = ["--features", str(features), "--labels", str(labels)]
    assert main(["score", "logme", *args, "--json"]) == 0
    value = json.loads(capsys.readouterr().out)["logme"]
    assert value == pytest.approx((1.5 * np.log(3) - 2 * np.log(2 * np.pi) - 2) / 4)
    assert main(["score", "logme", *args]) == 0
    assert capsys.readouterr().out == f"logme {value:.6g}\n"

    probs = tmp_path / "P.npy"
    np.save(probs, np.array([[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.25, 0.75]]))
    assert main(["score", "leep", "--labels", str(labels), "--probs", str(probs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"leep": pytest.approx(np.log(0.625))}

    assert main(["score", "leep", *args]) == 1
    assert capsys.readouterr().err.startswith("error: leep needs --probs")
    assert main(["score", "logme", "--features", "nope.npy", "--labels", "x"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["score", "--method", "logme", *args]) == 2  # a usage error: the score is named
    assert "unrecognized arguments: --method" in capsys.readouterr().err
