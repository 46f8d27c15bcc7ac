"""Input checks shared by the kNN evaluation and the linear probe."""

from __future__ import annotations

import numpy as np


def labeled_features(
    features: np.ndarray, labels: np.ndarray, name: str, dtype: type | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(features, labels)`` as arrays after checking that they fit together.

    Args:
        features: ``(n, dim)`` feature rows.
        labels: ``(n,)`` class labels, one per row.
        name: what the pair is ("train", "test"), for the error message.
        dtype: convert the features to this dtype (None keeps theirs).

    Raises:
        ValueError: for a wrong shape, a label count that differs from the row count, or a NaN
            or infinite feature.
    """
    features = np.asarray(features, dtype=dtype)
    labels = np.asarray(labels)
    if features.ndim != 2:
        raise ValueError(f"{name} features must be 2-D (n, dim), got shape {features.shape}")
    if labels.ndim != 1 or len(labels) != len(features):
        raise ValueError(
            f"{name} labels must be 1-D with one label per feature row: got labels of shape "
            f"{labels.shape} for {len(features)} rows"
        )
    if not np.isfinite(features).all():
        raise ValueError(f"{name} features contain NaN or infinite values")
    return features, labels
