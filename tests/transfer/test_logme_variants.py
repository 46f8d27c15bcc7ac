"""LogME's two variants: the paper's evidence and the reference implementation's.

The reference is github.com/thuml/LogME, ``LogME.py`` at commit
56551ca94a3295bcc37e6a01b1291911af985f07, method ``_fit_fixed_point`` (lines 100-158), the
default ``_fit`` of its ``LogME`` class (line 160). Its expected values here are worked out by
hand or recomputed from its steps with the matrices themselves (no SVD), not with the code
under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.transfer.cli import main
from components.transfer.scores import logme


def test_hand_derived_values_of_both_variants_at_n_below_d():
    """n = 2 images, D = 3 features F = [[1, 0, 0], [0, 1, 0]], classes (0, 1).

    Class 0: y = (1, 0); the thin SVD has U = I, sigma = (1, 1), x = U'y = (1, 0), nothing of
    y outside span(U). Both variants start at alpha = beta = 1 (t = 1): gamma = 1/2 + 1/2 = 1,
    m'm = 1 * 1 / 2^2 = 1/4, ||F m - y||^2 = 1 * (1/2)^2 = 1/4.

    Paper: alpha = gamma / m'm = 4, beta = (n - gamma) / ||Fm - y||^2 = 4, t = 1 again: the
    fixed point. A = 4 I + 4 F'F has eigenvalues 8, 8 and 4 (the third dimension, no data):
        L = 3/2 log 4 + log 4 - log 2pi - 4/2 * 1/4 - 4/2 * 1/4 - 1/2 (2 log 8 + log 4)
          = log 2 - 1 - log 2pi = -1 - log pi,   LogME = L / n = (-1 - log pi) / 2.

    Reference: its update adds 1e-5 to both denominators (LogME.py lines 132-133):
    a = alpha = beta = 1 / (1/4 + 1e-5), t = 1 again, so it stops after one update (line 142).
    Its evidence (lines 144-149) keeps D/2 log alpha but sums log(alpha + beta sigma) over the
    two singular values only (line 146), with m'm and ||Fm - y||^2 of that update (1/4):
        L = 3/2 log a + log a - 1/2 * 2 log 2a - a/2 * 1/4 - a/2 * 1/4 - log 2pi
          = 3/2 log a - log 2 - a/4 - log 2pi,   LogME = L / 2.
    Class 1 is the mirror image (same numbers), so LogME is the class value. The gap is
    (D - n) log(alpha) / (2 n) = log(4) / 4 at a = 4, up to the 1e-5 terms.
    """
    features = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = np.array([0, 1])
    paper = (-1 - np.log(np.pi)) / 2
    a = 1 / (0.25 + 1e-5)
    reference = (1.5 * np.log(a) - np.log(2) - a / 4 - np.log(2 * np.pi)) / 2
    assert logme(features, labels) == pytest.approx(paper, abs=1e-12)
    assert logme(features, labels, variant="reference") == pytest.approx(reference, abs=1e-12)
    assert reference - paper == pytest.approx(np.log(4) / 4, abs=1e-4)


def _reference_by_matrices(features: np.ndarray, labels: np.ndarray) -> float:
    """The reference's ``_fit_fixed_point`` (lines 100-158) for n <= D, each step written with
    A = alpha I + beta F'F and m = beta A^-1 F'y instead of the SVD: gamma = tr(beta F'F A^-1),
    and its log|A| without the D - n eigenvalues that equal alpha (line 146 sums over the n
    singular values of the thin SVD, line 110)."""
    n, dim = features.shape
    gram = features.T @ features
    evidences = []
    for c in range(int(labels.max()) + 1):  # line 118: classes 0..max(y)
        y = (labels == c).astype(float)
        alpha, beta = 1.0, 1.0
        for _ in range(11):  # line 127
            t = alpha / beta
            a = alpha * np.eye(dim) + beta * gram
            m = beta * np.linalg.solve(a, features.T @ y)
            gamma = np.trace(beta * gram @ np.linalg.inv(a))
            m2, res2 = m @ m, np.sum((features @ m - y) ** 2)
            alpha = gamma / (m2 + 1e-5)  # line 132
            beta = (n - gamma) / (res2 + 1e-5)  # line 133
            if abs(alpha / beta - t) / t <= 1e-3:  # line 142
                break
        log_det = np.linalg.slogdet(alpha * np.eye(dim) + beta * gram)[1] - (dim - n) * np.log(
            alpha
        )
        evidence = (
            dim / 2 * np.log(alpha)
            + n / 2 * np.log(beta)
            - log_det / 2
            - beta / 2 * res2
            - alpha / 2 * m2
            - n / 2 * np.log(2 * np.pi)
        )  # lines 144-149, with m'm and ||Fm - y||^2 of the last update
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def test_reference_variant_follows_the_reference_steps_on_random_features():
    rng = np.random.default_rng(3)
    labels = np.arange(9) % 3
    features = rng.normal(size=(9, 16)) + np.eye(3)[labels] @ rng.normal(size=(3, 16))
    expected = _reference_by_matrices(features, labels)
    assert logme(features, labels, variant="reference") == pytest.approx(expected, abs=1e-8)
    # The paper's evidence is another number here: n = 9 < D = 16.
    assert abs(logme(features, labels) - expected) > 0.1


@pytest.mark.parametrize("n, dim", [(200, 8), (60, 20), (500, 32)])
def test_the_variants_agree_when_n_exceeds_d(n, dim):
    """Full-rank features with n > D: both sum log|A| over all D eigenvalues; what is left of
    the reference's differences (1e-5 terms, its 1e-3 tolerance) moves the score by < 1e-6."""
    rng = np.random.default_rng(n)
    labels = np.arange(n) % 4
    features = rng.normal(size=(n, dim)) + np.eye(4)[labels] @ rng.normal(size=(4, dim))
    paper, reference = logme(features, labels), logme(features, labels, variant="reference")
    assert reference == pytest.approx(paper, abs=1e-6)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown LogME variant 'icml': choose from paper"):
        logme(np.eye(4), np.array([0, 0, 1, 1]), variant="icml")


def test_score_command_and_study_setting(tmp_path, capsys):
    from components.transfer.errors import TransferError
    from components.transfer.study import StudySettings

    features, labels = tmp_path / "F.npy", tmp_path / "Y.npy"
    np.save(features, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    np.save(labels, np.array([0, 1]))
    args = ["score", "logme", "--features", str(features), "--labels", str(labels), "--json"]
    assert main([*args, "--variant", "reference"]) == 0
    a = 1 / (0.25 + 1e-5)
    expected = (1.5 * np.log(a) - np.log(2) - a / 4 - np.log(2 * np.pi)) / 2
    assert json.loads(capsys.readouterr().out) == {"logme": pytest.approx(expected, abs=1e-12)}
    assert main(args) == 0  # the paper's by default
    assert json.loads(capsys.readouterr().out)["logme"] == pytest.approx((-1 - np.log(np.pi)) / 2)
    assert main([*args, "--variant", "icml"]) == 2
    assert "invalid choice: 'icml'" in capsys.readouterr().err

    assert StudySettings(logme_variant="reference").logme_variant == "reference"
    with pytest.raises(TransferError, match="unknown logme_variant 'x': choose from paper"):
        StudySettings(logme_variant="x")
