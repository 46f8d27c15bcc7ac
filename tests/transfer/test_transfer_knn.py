"""Cosine kNN: against a brute-force loop, known answers, ties, and bad input."""

import numpy as np
import pytest

from components.transfer.knn import cosine_neighbors, knn_evaluate, l2_normalize


def brute_force(train, train_y, test, test_y, k):
    """One query at a time: sort training rows by (-cosine, index)."""
    neighbors = []
    for q in test:
        sims = [float(np.dot(q, t) / (np.linalg.norm(q) * np.linalg.norm(t))) for t in train]
        neighbors.append(sorted(range(len(train)), key=lambda i: (-sims[i], i))[:k])
    neighbors = np.array(neighbors)
    same = train_y[neighbors] == test_y[:, None]
    return neighbors, same[:, 0].mean(), same.mean()


@pytest.mark.parametrize("k", [1, 3, 5, 40])
@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_matches_brute_force(k, chunk_size):
    rng = np.random.default_rng(k * 100 + chunk_size)
    train, test = rng.normal(size=(40, 8)), rng.normal(size=(23, 8))
    train_y, test_y = rng.integers(0, 3, 40), rng.integers(0, 3, 23)
    expected, top1, fraction = brute_force(train, train_y, test, test_y, k)
    np.testing.assert_array_equal(cosine_neighbors(train, test, k, chunk_size), expected)
    result = knn_evaluate(train, train_y, test, test_y, k=k, chunk_size=chunk_size)
    assert result.top1 == pytest.approx(top1)
    assert result.topk_fraction == pytest.approx(fraction)
    assert (result.k, result.n_train, result.n_test) == (k, 40, 23)


def test_ties_go_to_the_lower_training_index():
    # One-hot rows: cosine similarities are exactly 0 or 1, so ties are exact.
    eye = np.eye(3, dtype=np.float32)
    train = eye[[2, 0, 1, 0, 0, 2, 1, 0]]
    test = eye[[0, 1, 2]]
    neighbors = cosine_neighbors(train, test, k=5)
    np.testing.assert_array_equal(neighbors[0], [1, 3, 4, 7, 0])  # four exact 1s, then a 0
    np.testing.assert_array_equal(neighbors[1], [2, 6, 0, 1, 3])
    np.testing.assert_array_equal(neighbors[2], [0, 5, 1, 2, 3])
    # Scaling a row does not change cosine neighbours.
    np.testing.assert_array_equal(cosine_neighbors(train * 7.5, test, k=5), neighbors)


def test_separable_features_score_one():
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10
    train_y, test_y = np.repeat(np.arange(4), 20), np.repeat(np.arange(4), 5)
    train = centres[train_y] + rng.normal(0, 0.1, (80, 4))
    test = centres[test_y] + rng.normal(0, 0.1, (20, 4))
    result = knn_evaluate(train, train_y, test, test_y)
    assert result.top1 == 1.0
    assert result.topk_fraction == 1.0
    assert result.metrics() == {"knn_top1": 1.0, "knn_top5_fraction": 1.0}


def test_random_labels_score_near_chance():
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(2000, 16)), rng.normal(size=(1000, 16))
    result = knn_evaluate(train, rng.integers(0, 10, 2000), test, rng.integers(0, 10, 1000))
    assert abs(result.top1 - 0.1) < 0.04
    assert abs(result.topk_fraction - 0.1) < 0.03


def test_top5_fraction_is_not_top5_accuracy():
    # The nearest neighbour matches, the other four do not: top-1 1.0, fraction 0.2 (a usual
    # top-5 accuracy would be 1.0).
    train = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 0.2], [1.0, 0.3], [1.0, 0.4], [-1, 0]])
    train_y = np.array([0, 1, 1, 1, 1, 0])
    result = knn_evaluate(train, train_y, np.array([[1.0, 0.0]]), np.array([0]), k=5)
    assert result.top1 == 1.0
    assert result.topk_fraction == pytest.approx(0.2)


def test_zero_rows_stay_zero_and_are_scored():
    features = l2_normalize(np.array([[0.0, 0.0], [3.0, 4.0]]))
    np.testing.assert_allclose(features, [[0, 0], [0.6, 0.8]], rtol=1e-6)
    result = knn_evaluate(np.zeros((3, 2)), np.array([0, 1, 1]), np.zeros((1, 2)), [0], k=3)
    # All similarities 0: the three images tie for nearest and share the credit (1 of 3).
    assert result.top1 == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.zeros((4, 3)), np.arange(4), np.ones((2, 3)), np.arange(2), 5), "k must be"),
        ((np.zeros((4, 3)), np.arange(4), np.ones((2, 3)), np.arange(2), 0), "k must be"),
        ((np.zeros((4, 3)), np.arange(4), np.ones((2, 2)), np.arange(2), 1), "differ in width"),
        ((np.zeros((4, 3)), np.arange(3), np.ones((2, 3)), np.arange(2), 1), "one label per"),
        ((np.zeros(4), np.arange(4), np.ones((2, 3)), np.arange(2), 1), "2-D"),
        ((np.zeros((4, 3)), np.arange(4), np.ones((0, 3)), np.arange(0), 1), "no test"),
        ((np.full((4, 3), np.nan), np.arange(4), np.ones((2, 3)), np.arange(2), 1), "NaN"),
    ],
)
def test_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        knn_evaluate(*args[:4], k=args[4])


def test_default_chunks_bound_memory_by_the_training_set(monkeypatch):
    """Without a chunk size, queries per chunk shrink as the training set grows (at most
    CHUNK_ELEMENTS similarities at once), with the brute-force answer."""
    import components.transfer.knn as knn

    seen = []
    original = knn._top_k_rows
    monkeypatch.setattr(knn, "CHUNK_ELEMENTS", 120)  # 40 training rows -> 3 queries a chunk
    monkeypatch.setattr(knn, "_top_k_rows", lambda s, k: seen.append(s.shape) or original(s, k))
    rng = np.random.default_rng(9)
    train, test = rng.normal(size=(40, 8)), rng.normal(size=(10, 8))
    train_y, test_y = rng.integers(0, 3, 40), rng.integers(0, 3, 10)
    expected, _, _ = brute_force(train, train_y, test, test_y, 5)
    np.testing.assert_array_equal(cosine_neighbors(train, test, 5), expected)
    assert seen == [(3, 40), (3, 40), (3, 40), (1, 40)]
