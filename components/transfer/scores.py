"""Cheap transferability scores of the model-selection literature: LogME and LEEP.

Both are pure numpy functions of a model's outputs on the *target* training images; no
training is involved, so they cost one forward pass (the features are shared with kNN and the
linear probe). Higher is better for both.

* **LogME** (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning"; extended version "Ranking and Tuning Pre-trained Models", TPAMI 2022): for each
  class ``k`` a Bayesian linear regression of the one-hot target ``y_k`` on the features
  ``F`` (n x D), with prior ``w ~ N(0, 1/alpha I)`` and noise ``N(0, 1/beta)``. Its log evidence

      L(alpha, beta) = n/2 log beta + D/2 log alpha - n/2 log 2pi - beta/2 ||F m - y||^2
                       - alpha/2 m'm - 1/2 log|A|,
      A = alpha I + beta F'F,  m = beta A^-1 F' y,

  is maximised by the fixed-point iteration of the extended version, written on the SVD
  ``F = U S V'`` (sigma_i = s_i^2, x = U'y, t = alpha/beta):

      gamma = sum_i sigma_i / (sigma_i + t)
      m'm = sum_i sigma_i x_i^2 / (sigma_i + t)^2
      ||F m - y||^2 = sum_i x_i^2 (t / (sigma_i + t))^2 + (||y||^2 - ||x||^2)
      alpha = gamma / m'm,  beta = (n - gamma) / ||F m - y||^2

  until t changes by less than a relative ``tol``. LogME = mean over classes of ``L / n``.
  ``log|A|`` sums over all D eigenvalues (the D - rank(F) zero singular values contribute
  ``log alpha`` each), as the equation says.
* **LEEP** (Nguyen et al. 2020, "LEEP: A New Measure to Evaluate Transferability of Learned
  Representations"): with the source model's class probabilities ``theta(x_i)`` (n x Z), the
  empirical joint ``P(y, z) = 1/n sum_{i: y_i = y} theta(x_i)_z``, the conditional
  ``P(y | z) = P(y, z) / P(z)``, and

      LEEP = 1/n sum_i log( sum_z P(y_i | z) theta(x_i)_z ).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.transfer.checks import labeled_features

#: Score methods of ``aprflow transfer score`` and of the study's ``scores`` regime.
SCORE_METHODS = ("logme", "leep")


@dataclass(frozen=True)
class Evidence:
    """LogME's fixed point for one class.

    Attributes:
        evidence: log evidence divided by n at the fixed point.
        alpha: prior precision.
        beta: noise precision.
        iterations: fixed-point updates made.
    """

    evidence: float
    alpha: float
    beta: float
    iterations: int


def log_evidence(
    n: int,
    dim: int,
    sigma: np.ndarray,
    x2: np.ndarray,
    y_norm2: float,
    alpha: float,
    beta: float,
) -> float:
    """``L(alpha, beta) / n`` of one target column, from the SVD quantities.

    Args:
        n: samples.
        dim: feature width D.
        sigma: squared singular values of F (``min(n, D)`` of them).
        x2: squared projections ``(U'y)_i^2``, aligned with ``sigma``.
        y_norm2: ``||y||^2``.
        alpha: prior precision.
        beta: noise precision.
    """
    t = alpha / beta
    m2 = float((sigma * x2 / (sigma + t) ** 2).sum())
    res2 = float((x2 * (t / (sigma + t)) ** 2).sum()) + (y_norm2 - float(x2.sum()))
    log_det = float(np.log(alpha + beta * sigma).sum()) + (dim - len(sigma)) * np.log(alpha)
    value = (
        n / 2 * np.log(beta)
        + dim / 2 * np.log(alpha)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * res2
        - alpha / 2 * m2
        - log_det / 2
    )
    return float(value / n)


def maximize_evidence(
    n: int,
    dim: int,
    sigma: np.ndarray,
    x: np.ndarray,
    y_norm2: float,
    tol: float = 1e-6,
    max_iter: int = 1000,
) -> Evidence:
    """Runs the extended LogME fixed-point iteration from ``alpha = beta = 1``.

    Args:
        n: samples.
        dim: feature width D.
        sigma: squared singular values of F.
        x: projections ``U'y`` of the target column.
        y_norm2: ``||y||^2``.
        tol: stop when ``|t_new - t| / t <= tol`` (``t = alpha / beta``).
        max_iter: most updates.
    """
    x2 = x**2
    residual_outside = max(y_norm2 - float(x2.sum()), 0.0)  # part of y outside span(U)
    alpha, beta = 1.0, 1.0
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m2 = float((sigma * x2 / (sigma + t) ** 2).sum())
        res2 = float((x2 * (t / (sigma + t)) ** 2).sum()) + residual_outside
        # Tiny floors keep a perfectly fitted or all-zero column finite, as in the paper's code.
        alpha = gamma / max(m2, 1e-12)
        beta = (n - gamma) / max(res2, 1e-12)
        if abs(alpha / beta - t) / t <= tol:
            break
    return Evidence(
        evidence=log_evidence(n, dim, sigma, x2, x2.sum() + residual_outside, alpha, beta),
        alpha=float(alpha),
        beta=float(beta),
        iterations=iterations,
    )


def logme(features: np.ndarray, labels: np.ndarray, tol: float = 1e-6) -> float:
    """LogME of features for a classification target: mean over classes of the maximised
    log evidence per sample (see the module docstring).

    Args:
        features: (n, D) features of the target's training images.
        labels: (n,) integer classes.
        tol: relative tolerance of the fixed-point iteration.

    Returns:
        The score (higher is better; typically negative).

    Raises:
        ValueError: for malformed shapes, NaN features, no rows or fewer than two classes.
    """
    features, labels = labeled_features(features, labels, "LogME", dtype=np.float64)
    n, dim = features.shape
    classes = np.unique(labels)
    if n == 0 or len(classes) < 2:
        raise ValueError(f"LogME needs rows of at least two classes, got classes {classes}")
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    sigma = s**2
    evidences = []
    for c in classes:
        y = (labels == c).astype(np.float64)
        evidences.append(maximize_evidence(n, dim, sigma, u.T @ y, float(y @ y), tol).evidence)
    return float(np.mean(evidences))


def leep(probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP of a source model's class probabilities on a target (Nguyen et al. 2020).

    Args:
        probs: (n, Z) source-class probabilities of the target's training images (rows sum
            to 1, e.g. the softmax of the source classifier).
        labels: (n,) target classes.

    Returns:
        The score, <= 0 (higher is better).

    Raises:
        ValueError: for malformed shapes, NaN or negative probabilities, rows that do not sum
            to 1, or no rows.
    """
    probs, labels = labeled_features(probs, labels, "LEEP", dtype=np.float64)
    if len(probs) == 0:
        raise ValueError("LEEP needs at least one row")
    if (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("LEEP probabilities must be non-negative rows that sum to 1")
    classes, y = np.unique(labels, return_inverse=True)
    joint = np.zeros((len(classes), probs.shape[1]))
    np.add.at(joint, y, probs)
    joint /= len(probs)  # P(y, z)
    marginal = joint.sum(axis=0)  # P(z)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = (probs * conditional[y]).sum(axis=1)  # sum_z P(y_i | z) theta(x_i)_z
    return float(np.log(np.maximum(expected, np.finfo(np.float64).tiny)).mean())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row maximum is subtracted first)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)
