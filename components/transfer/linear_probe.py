"""Fixed-feature linear probe, the first regime of Kornblith, Shlens, Le 2019, arXiv 1805.08974.

Multinomial logistic regression (L-BFGS, L2 penalty, no augmentation) on standardised
penultimate-layer features. The inverse regularisation strength C is chosen on a validation
split over a log-spaced grid (1e-6 .. 1e6); the model is then refit with that C on the
training data (training + validation images) and scored once on the test set.

The validation split is the dataset version's own ``val`` split when it has one (pass it as
``val_features``/``val_labels``); otherwise a stratified share of the training set is held out
with a seed the caller derives from the dataset version (never from a transfer seed).

Each fit is scikit-learn's ``StandardScaler`` + ``LogisticRegression(C=C)`` (lbfgs, which
minimises ``1/2 ||W||^2 + C sum_i -log softmax(W x_i + b)_y_i``, the bias not penalised).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from components.transfer.checks import labeled_features

#: Default grid of C values: 1e-6 .. 1e6, one per decade (Kornblith et al. searched 1e-6..1e5).
DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-6, 6, 13))


@dataclass(frozen=True)
class LinearProbeResult:
    """Outcome of a linear probe.

    Attributes:
        accuracy: test accuracy in [0, 1] of the model refit on all training data.
        C: the chosen inverse L2 regularisation strength.
        grid: validation accuracy of every C tried, in grid order.
        n_train: training images (including the validation split).
        n_val: images of the validation split.
        n_test: test images.
        converged: whether every fit converged within ``max_iter`` (no ``ConvergenceWarning``).
    """

    accuracy: float
    C: float
    grid: dict[float, float] = field(default_factory=dict)
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    converged: bool = True

    def metrics(self) -> dict[str, float]:
        """The scores under their table names: ``linear_top1`` and the chosen ``linear_C``."""
        return {"linear_top1": self.accuracy, "linear_C": self.C}


def _fit_score(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    C: float,
    max_iter: int,
) -> tuple[float, bool]:
    """Standardises on the fitting data, fits scikit-learn's ``LogisticRegression`` and
    returns ``(accuracy on eval, converged)``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # lbfgs fits the multinomial model for more than two classes; the bias is not penalised.
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    # A fit that stops early (iteration limit or a failed line search) warns: that becomes
    # ``converged`` (one flag per probe rather than a warning per fit); other warnings pass.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x_fit, y_fit)
    converged = True
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            converged = False
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return float((model.predict(x_eval) == y_eval).mean()), converged


def linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    Cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 1000,
    val_features: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
) -> LinearProbeResult:
    """Logistic-regression probe with C chosen on a validation split.

    Args:
        train_features: (n_train, dim) features of the training images.
        train_labels: (n_train,) their classes (at least two classes).
        test_features: (n_test, dim) features of the test images.
        test_labels: (n_test,) their classes.
        Cs: candidate inverse regularisation strengths (positive); ties in validation
            accuracy go to the smallest C (the strongest regularisation).
        val_fraction: without ``val_features``: share of the training set held out
            (stratified) to choose C.
        seed: without ``val_features``: seed of that held-out share (derive it from the
            dataset version so that the split is the data's, not the experiment's).
        max_iter: lbfgs iterations per fit.
        val_features: (n_val, dim) features of the dataset's own validation split.
        val_labels: (n_val,) their classes.

    Returns:
        Test accuracy, the chosen C and the validation accuracy of every C.

    Raises:
        ValueError: for malformed shapes, NaN features, fewer than two classes, a class too
            small to appear in both the fitting and the validation split, or a bad grid.
    """
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    x_train, y_train = labeled_features(train_features, train_labels, "train", dtype=np.float64)
    x_test, y_test = labeled_features(test_features, test_labels, "test", dtype=np.float64)
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"train and test features differ in width: {x_train.shape[1]} vs {x_test.shape[1]}"
        )
    if len(x_test) == 0:
        raise ValueError("no test features to evaluate")
    Cs = sorted(float(c) for c in Cs)
    if not Cs or Cs[0] <= 0:
        raise ValueError(f"Cs must be a non-empty list of positive values, got {Cs}")
    classes, counts = np.unique(y_train, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"a linear probe needs at least two classes, got {classes.tolist()}")
    if val_features is not None:
        x_val, y_val = labeled_features(val_features, val_labels, "val", dtype=np.float64)
        if len(x_val) == 0 or x_val.shape[1] != x_train.shape[1]:
            raise ValueError(f"validation features of shape {x_val.shape} do not fit")
        x_fit, y_fit = x_train, y_train
        x_train, y_train = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    else:
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if counts.min() < 2:
            small = classes[counts < 2].tolist()
            raise ValueError(
                f"classes {small} have fewer than 2 training images: cannot carve a stratified "
                "validation split"
            )
        try:
            x_fit, x_val, y_fit, y_val = train_test_split(
                x_train, y_train, test_size=val_fraction, random_state=seed, stratify=y_train
            )
        except ValueError as e:
            raise ValueError(
                f"cannot carve a stratified {val_fraction:.0%} validation split from "
                f"{len(y_train)} training images of {len(classes)} classes: {e}"
            ) from None
    grid, converged = {}, True
    # One BLAS thread: these products are small, and multi-threaded BLAS beside torch's
    # thread pool made the fits ~40x slower on a 2-core machine.
    with threadpool_limits(limits=1, user_api="blas"):
        for C in Cs:
            grid[C], ok = _fit_score(x_fit, y_fit, x_val, y_val, C, max_iter)
            converged &= ok
        best = max(grid.values())
        chosen = next(C for C in Cs if grid[C] == best)  # smallest C among the best
        accuracy, ok = _fit_score(x_train, y_train, x_test, y_test, chosen, max_iter)
    return LinearProbeResult(
        accuracy=accuracy,
        C=chosen,
        grid=grid,
        n_train=len(y_train),
        n_val=len(y_val),
        n_test=len(y_test),
        converged=converged and ok,
    )
