"""Cosine k-nearest-neighbour evaluation of fixed features, as in the kNN ranking of
pretrained timm backbones by the cosine similarity of their embeddings.

Every test image is a query against the training images: features are L2-normalised, the
neighbours are the training images of highest cosine similarity. Two scores, both in [0, 1]:

* ``top1``: share of queries whose nearest neighbour has the query's class.
* ``topk_fraction`` (``knn_top5_fraction`` for k = 5): the mean over queries of the *fraction*
  of the k nearest neighbours that have the query's class. This is not the usual top-5
  accuracy (at least one of five right): one matching neighbour out of five scores 0.2.

No vote is taken (top-1 is the nearest neighbour's class, the fraction counts every class), so
only ties in similarity need a rule. **Ties share the credit**: when the k-th largest
similarity of a query is shared by ``t`` training images of which ``m`` have the query's class,
and ``a`` images are strictly more similar, the ``k - a`` places left count ``(k - a) * m / t``
matches: the expected score over every way of breaking the tie. Top-1 is the case k = 1 (the
nearest images tie: the share of them with the query's class). The scores so depend on the
features alone, not on the order of the training rows, e.g. a model whose features are all
zero scores the class frequencies of the training set, not the class of its first image. Ties
are exact equalities of the computed float32 similarities; the matrix product gives identical
feature vectors identical similarities (checked by permuting the rows in the tests).
:func:`cosine_neighbors`, which lists neighbour indices, breaks ties towards the lower training
index.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from components.transfer.checks import labeled_features

EPS = 1e-12
#: Similarity entries per query chunk when no chunk size is given: 2**25 float32 (128 MiB);
#: the top-k selection of a chunk holds a few arrays of that shape, so 100k training rows x
#: any number of queries stay under ~1 GiB beside the features.
CHUNK_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class KnnResult:
    """Scores of a cosine kNN evaluation.

    Attributes:
        top1: share of test images whose nearest training image has their class.
        topk_fraction: mean share of the k nearest training images that have the query's class.
        k: neighbours per query.
        n_train: training images (the neighbour pool).
        n_test: test images (the queries).
    """

    top1: float
    topk_fraction: float
    k: int
    n_train: int
    n_test: int

    def metrics(self) -> dict[str, float]:
        """The scores under their table names: ``knn_top1``, ``knn_top{k}_fraction``."""
        return {"knn_top1": self.top1, f"knn_top{self.k}_fraction": self.topk_fraction}


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Returns float32 rows scaled to unit L2 norm (all-zero rows stay zero).

    Raises:
        ValueError: when ``features`` is not 2-D.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (n, dim), got shape {features.shape}")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, EPS)


def _top_k_rows(similarity: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k largest values, largest first, ties to lower indices.

    O(n_cols) per row: a partition finds each row's k-th largest value, a stable (radix) sort
    of the candidate mask lists the candidates in index order, and only those are sorted.
    """
    n_rows, n_cols = similarity.shape
    if k == n_cols:
        return np.argsort(-similarity, axis=1, kind="stable")
    kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1 : k]
    candidate = similarity >= kth  # at least k per row; more when the k-th value is tied
    width = int(candidate.sum(axis=1).max())
    columns = np.argsort(~candidate, axis=1, kind="stable")[:, :width]  # ascending index
    values = np.take_along_axis(similarity, columns, axis=1)
    values = np.where(np.take_along_axis(candidate, columns, axis=1), values, -np.inf)
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(columns, order, axis=1)


def _similarity_chunks(
    train_features: np.ndarray, test_features: np.ndarray, k: int, chunk_size: int | None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(first query, cosine similarities of chunk_size queries x every training row)``.

    Raises:
        ValueError: for non-2-D features, mismatched feature widths, or a bad k or chunk size.
    """
    train = l2_normalize(train_features)
    test = l2_normalize(test_features)
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"train and test features differ in width: {train.shape[1]} vs {test.shape[1]}"
        )
    if not 1 <= k <= len(train):
        raise ValueError(
            f"k must be between 1 and the number of training images ({len(train)}), got {k}"
        )
    if chunk_size is None:
        chunk_size = max(1, min(1024, CHUNK_ELEMENTS // max(1, len(train))))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, len(test), chunk_size):
        yield start, test[start : start + chunk_size] @ train.T


def _shared_matches(similarity: np.ndarray, same: np.ndarray, k: int) -> np.ndarray:
    """Per row, the matches (``same``) among the k most similar columns, a tie at the k-th
    similarity sharing the places left (see the module docstring). O(n_cols) per row."""
    kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1 : k]
    above = similarity > kth
    tied = similarity == kth  # holds the k-th value itself: never empty
    places = k - above.sum(axis=1)
    return (above & same).sum(axis=1) + places * (tied & same).sum(axis=1) / tied.sum(axis=1)


def cosine_neighbors(
    train_features: np.ndarray, test_features: np.ndarray, k: int, chunk_size: int | None = None
) -> np.ndarray:
    """Indices of each test row's k most cosine-similar training rows.

    Similarities are computed as a matrix product of L2-normalised features, ``chunk_size``
    queries at a time (memory: chunk_size x n_train floats; default: as many queries as fit
    :data:`CHUNK_ELEMENTS`, at most 1024).

    Args:
        train_features: (n_train, dim) features of the neighbour pool.
        test_features: (n_test, dim) features of the queries.
        k: neighbours per query, 1 <= k <= n_train.
        chunk_size: queries per matrix product (None: from :data:`CHUNK_ELEMENTS`).

    Returns:
        int64 array (n_test, k): training indices, most similar first; ties go to the lower
        training index.

    Raises:
        ValueError: for non-2-D features, mismatched feature widths, or a bad k or chunk size.
    """
    out = np.empty((len(test_features), k), dtype=np.int64)
    for start, similarity in _similarity_chunks(train_features, test_features, k, chunk_size):
        out[start : start + len(similarity)] = _top_k_rows(similarity, k)
    return out


def knn_evaluate(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    k: int = 5,
    chunk_size: int | None = None,
) -> KnnResult:
    """Cosine kNN top-1 and top-k fraction of test images against training images.

    Args:
        train_features: (n_train, dim) features of the training images.
        train_labels: (n_train,) their classes.
        test_features: (n_test, dim) features of the test images.
        test_labels: (n_test,) their classes.
        k: neighbours for the fraction score (5 gives that ranking's "top-5").
        chunk_size: queries per matrix product (None: bounded by :data:`CHUNK_ELEMENTS`).

    Returns:
        The scores; see the module docstring for their definitions and the rule for ties
        (tied neighbours share the credit, whatever the order of the rows).

    Raises:
        ValueError: for malformed shapes, NaN features, no test images, or k > n_train.
    """
    train_features, train_labels = labeled_features(train_features, train_labels, "train")
    test_features, test_labels = labeled_features(test_features, test_labels, "test")
    if len(test_features) == 0:
        raise ValueError("no test features to evaluate")
    top1, topk = np.empty(len(test_features)), np.empty(len(test_features))
    for start, similarity in _similarity_chunks(train_features, test_features, k, chunk_size):
        stop = start + len(similarity)
        same = train_labels[None, :] == test_labels[start:stop, None]
        top1[start:stop] = _shared_matches(similarity, same, 1)
        topk[start:stop] = _shared_matches(similarity, same, k) / k
    return KnnResult(
        top1=float(top1.mean()),
        topk_fraction=float(topk.mean()),
        k=k,
        n_train=len(train_features),
        n_test=len(test_features),
    )
