"""Cheap transferability scores of the model-selection literature: LogME and LEEP.

Both are pure numpy functions of a model's outputs on the *target* training images; no
training is involved, so they cost one forward pass (the features are shared with kNN and the
linear probe). Higher is better for both.

* **LogME** (You, Liu, Wang, Long 2021, "LogME: Practical Assessment of Pre-trained Models for
  Transfer Learning", arXiv 2102.11005; extended version "Ranking and Tuning Pre-trained
  Models", TPAMI 2022, arXiv 2110.10545): for each class ``k`` a Bayesian linear regression
  of the one-hot target ``y_k`` on the features ``F`` (n x D), with prior
  ``w ~ N(0, 1/alpha I)`` and noise ``N(0, 1/beta)``. Its log evidence

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
  ``log alpha`` each), as the equation says: ``variant="paper"``, the default.

  **The reference implementation differs when n < D** (github.com/thuml/LogME, ``LogME.py``
  at commit 56551ca, ``_fit_fixed_point``, lines 100-158, the class's default ``_fit``, line
  160): its ``log|A|`` (lines 136 and 146) sums ``log(alpha + beta sigma_i)`` over the k
  singular values of its SVD only, k = n when n <= D (``np.linalg.svd(f,
  full_matrices=False)``, line 110) and the numerical rank (singular values above 1e-10 of
  the eigen-decomposition of F'F, ``truncated_svd``, lines 48-57) when n > D, while keeping
  ``D/2 log alpha``. At the same (alpha, beta) its evidence per sample is therefore the
  paper's plus ``(D - k) log(alpha) / (2 n)``: the same for full-rank features with n > D
  (exactly dependent columns usually leave singular values near 1e-8 ||F|| through F'F,
  above the cut-off, so they still count), another number and another maximiser when n < D:
  3.54 against -0.51 for random features with n = 12, D = 30, and 2.44 against 0.23 with
  n = 40, D = 64 (models of different widths D are shifted differently, so rankings can
  change). Its earlier ICML version (``_fit_icml``, lines 77-98) takes the SVD of the D x D
  matrix F'F and sums over all D eigenvalues, like the paper. The fixed point differs in
  smaller ways too: ``alpha = gamma / (m'm + 1e-5)``, ``beta = (n - gamma) / (||F m - y||^2
  + 1e-5)`` (lines 132-133; here floors of 1e-12); at most 11 updates (line 127), stopping
  at a relative change of t <= 1e-3 (line 142; here ``tol``, 1e-6, and 1000 updates); the
  evidence is taken at the last (alpha, beta) with m'm and ``||F m - y||^2`` of the t before
  the last update (lines 144-149; here all at the final t); the part of y outside span(U) is
  not clamped at 0 (line 124); and the classes are 0..max(y) (line 118; here the classes
  present, the same when every class occurs). ``variant="reference"`` follows the reference
  in all of these, to reproduce published LogME numbers; at n > D with full-rank features
  the two variants agree to about 1e-8.
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
#: LogME variants (see the module docstring): the paper's evidence, or thuml/LogME's code.
LOGME_VARIANTS = ("paper", "reference")
# The reference implementation's constants (thuml/LogME, LogME.py at commit 56551ca): the
# rank cut-off of its truncated SVD (line 52), the term added to m'm and ||Fm - y||^2 in the
# updates (lines 132-133), its update count (line 127) and relative tolerance on t (line 142).
_REFERENCE_RANK_CUTOFF = 1e-10
_REFERENCE_EPSILON = 1e-5
_REFERENCE_UPDATES = 11
_REFERENCE_TOL = 1e-3


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


def reference_evidence(
    n: int, dim: int, sigma: np.ndarray, x: np.ndarray, y_norm2: float
) -> Evidence:
    """LogME's fixed point for one class as thuml/LogME computes it (``LogME.py`` at commit
    56551ca, ``_fit_fixed_point``, lines 122-150): its epsilons, update count and tolerance,
    the evidence with the m'm and residual of the t before the last update, and ``log|A|``
    over the singular values given only (see the module docstring).

    Args:
        n: samples.
        dim: feature width D.
        sigma: squared singular values the reference keeps (:func:`logme` picks them).
        x: projections ``U'y`` of the target column.
        y_norm2: ``||y||^2``.
    """
    x2 = x**2
    outside = y_norm2 - float(x2.sum())  # not clamped at 0 (line 124)
    alpha, beta = 1.0, 1.0
    iterations = 0
    for iterations in range(1, _REFERENCE_UPDATES + 1):  # noqa: B007 - the count is reported
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m2 = float((sigma * x2 / (t + sigma) ** 2).sum())
        res2 = float((x2 / (1 + sigma / t) ** 2).sum()) + outside
        alpha = gamma / (m2 + _REFERENCE_EPSILON)
        beta = (n - gamma) / (res2 + _REFERENCE_EPSILON)
        if abs(alpha / beta - t) / t <= _REFERENCE_TOL:
            break
    value = (
        dim / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - 0.5 * float(np.log(alpha + beta * sigma).sum())
        - beta / 2 * res2
        - alpha / 2 * m2
        - n / 2 * np.log(2 * np.pi)
    )
    return Evidence(float(value / n), float(alpha), float(beta), iterations)


def _reference_svd(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(U, s)`` as the reference computes them: the thin SVD of F when n <= D (line 110),
    else its ``truncated_svd`` (lines 48-57): the eigen-decomposition of F'F, whose singular
    values above 1e-10 (the numerical rank) are kept, ``U = F V / s``."""
    n, dim = features.shape
    if n <= dim:
        u, s, _ = np.linalg.svd(features, full_matrices=False)
        return u, s
    _, eigen, vh = np.linalg.svd(features.T @ features)
    s = np.sqrt(eigen)
    rank = int((s > _REFERENCE_RANK_CUTOFF).sum())
    return (features @ vh.T)[:, :rank] / s[:rank], s[:rank]


def logme(
    features: np.ndarray, labels: np.ndarray, tol: float = 1e-6, variant: str = "paper"
) -> float:
    """LogME of features for a classification target: mean over classes of the maximised
    log evidence per sample (see the module docstring).

    Args:
        features: (n, D) features of the target's training images.
        labels: (n,) integer classes.
        tol: relative tolerance of the fixed-point iteration (``paper``; the reference
            variant uses the reference's own, 1e-3 and at most 11 updates).
        variant: ``paper`` (``log|A|`` over all D eigenvalues, as the evidence equation
            says) or ``reference`` (thuml/LogME's ``LogME.py``, to reproduce its numbers;
            it differs when n < D).

    Returns:
        The score (higher is better; typically negative with the paper's evidence).

    Raises:
        ValueError: for malformed shapes, NaN features, no rows, fewer than two classes or
            an unknown variant.
    """
    if variant not in LOGME_VARIANTS:
        raise ValueError(
            f"unknown LogME variant {variant!r}: choose from {', '.join(LOGME_VARIANTS)}"
        )
    features, labels = labeled_features(features, labels, "LogME", dtype=np.float64)
    n, dim = features.shape
    classes = np.unique(labels)
    if n == 0 or len(classes) < 2:
        raise ValueError(f"LogME needs rows of at least two classes, got classes {classes}")
    if variant == "reference":
        u, s = _reference_svd(features)
    else:
        u, s, _ = np.linalg.svd(features, full_matrices=False)
    sigma = s**2
    evidences = []
    for c in classes:
        y = (labels == c).astype(np.float64)
        if variant == "reference":
            fixed = reference_evidence(n, dim, sigma, u.T @ y, float(y @ y))
        else:
            fixed = maximize_evidence(n, dim, sigma, u.T @ y, float(y @ y), tol)
        evidences.append(fixed.evidence)
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
