"""Class similarity matrices against a literal transcription of Parikh & Aggarwal's
Algorithm 1 (the O(N^2 d) double loop), shard merging and the result object."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from dcsi.exceptions import InvalidParameterError
from dcsi.similarity.class_cosine import (
    ClassStats,
    class_distance_sums,
    class_similarity,
    class_stats,
    compute_class_similarity,
    cosine_from_stats,
    most_similar_pairs,
    sqeuclidean_from_stats,
)


def _dist(metric, u, v):
    if metric == "cosine":
        return 1.0 - float(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))
    if metric == "euclidean":
        return float(np.sqrt(np.sum((u - v) ** 2)))
    if metric == "sqeuclidean":
        return float(np.sum((u - v) ** 2))
    if metric == "manhattan":
        return float(np.sum(np.abs(u - v)))
    raise AssertionError(metric)


def _algorithm1(f_list, metric):
    """Literal Algorithm 1: for every pair of classes, average the distance over all
    image pairs; on the diagonal skip the self-pairs (our documented diagonal)."""
    nc = len(f_list)
    sim_mat = []
    for i in range(nc):
        sim_row = []
        for j in range(nc):
            sum_dist = 0.0
            count = 0
            for a, s1 in enumerate(f_list[i]):
                for b, s2 in enumerate(f_list[j]):
                    if i == j and a == b:
                        continue
                    sum_dist += _dist(metric, s1, s2)
                    count += 1
            sim_row.append(sum_dist / count if count else np.nan)
        sim_mat.append(sim_row)
    out = np.array(sim_mat)
    # the product reports cosine as a similarity: 1 - mean cosine distance
    return 1.0 - out if metric == "cosine" else out


def _data(rng, n=40, d=7, k=4):
    x = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n)
    y[:k] = np.arange(k)  # every class present
    y[k : 2 * k] = np.arange(k)  # at least two images per class
    x += rng.normal(size=(k, d))[y]
    return x, y


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "sqeuclidean", "manhattan"])
def test_matrix_equals_literal_algorithm1(rng, metric):
    x, y = _data(rng)
    f_list = [x[y == c] for c in range(4)]
    expected = _algorithm1(f_list, metric)
    got = class_similarity(x, y, metric)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    # the test can fail: a wrong diagonal convention is caught
    assert not np.allclose(np.diag(got), 0.0)


@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
def test_blockwise_independent_of_block_size(rng, metric):
    x, y = _data(rng, n=53)
    ref = class_similarity(x, y, metric, block_size=1000)
    for bs in (1, 7, 16):
        np.testing.assert_allclose(
            class_similarity(x, y, metric, block_size=bs), ref, rtol=0, atol=1e-10
        )


@pytest.mark.parametrize(
    "alias,name", [("l1", "manhattan"), ("l2", "euclidean"), ("cityblock", "manhattan")]
)
def test_aliases(rng, alias, name):
    x, y = _data(rng, n=20)
    np.testing.assert_allclose(class_similarity(x, y, alias), class_similarity(x, y, name))


def test_shards_merge_to_one_pass(rng):
    x, y = _data(rng, n=60)
    k = 4
    whole = class_stats(x, y, k)
    cuts = [0, 13, 14, 37, 60]
    parts = [class_stats(x[a:b], y[a:b], k) for a, b in itertools.pairwise(cuts)]
    merged = parts[0]
    for p in parts[1:]:
        merged = merged + p
    np.testing.assert_allclose(merged.sums, whole.sums, atol=1e-12)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_allclose(cosine_from_stats(merged), class_similarity(x, y), atol=1e-12)
    np.testing.assert_allclose(
        sqeuclidean_from_stats(merged), class_similarity(x, y, "sqeuclidean"), atol=1e-10
    )


@pytest.mark.parametrize("metric", ["manhattan", "euclidean", "sqeuclidean"])
def test_distance_sums_merge_over_shard_pairs(rng, metric):
    x, y = _data(rng, n=45)
    k = 4
    shards = [(x[:20], y[:20]), (x[20:], y[20:])]
    total = sum(
        class_distance_sums(xa, ya, xb, yb, metric=metric, n_classes=k, block_size=6)
        for xa, ya in shards
        for xb, yb in shards
    )
    n = np.bincount(y, minlength=k).astype(float)
    mean = total / np.outer(n, n)
    np.fill_diagonal(mean, np.diag(total) / (n * (n - 1)))
    np.testing.assert_allclose(mean, class_similarity(x, y, metric), atol=1e-10)


def test_classstats_merge_shape_mismatch(rng):
    x, y = _data(rng, n=20)
    with pytest.raises(InvalidParameterError, match="Cannot merge ClassStats of shapes"):
        _ = class_stats(x, y, 4) + class_stats(x, y, 5)


def test_single_image_class_gives_nan_diagonal(rng):
    x = rng.normal(size=(5, 3))
    y = np.array([0, 0, 0, 0, 1])
    for metric in ("cosine", "sqeuclidean", "manhattan"):
        S = class_similarity(x, y, metric)
        assert np.isnan(S[1, 1]) and np.isfinite(S[0, 1])


def test_result_to_dict_is_json_and_has_no_nan(rng):
    x = rng.normal(size=(5, 3))
    y = np.array([0, 0, 0, 0, 1])
    res = compute_class_similarity(x, y, metric="l1", classes=["a", "b"])
    d = res.to_dict()
    assert set(d) == {"matrix", "diagonal", "params"}
    assert d["matrix"][1][1] is None
    assert d["params"]["metric"] == "manhattan"
    assert "self-pairs excluded" in d["diagonal"]
    json.dumps(d, allow_nan=False)
    res2 = compute_class_similarity(x, y, metric="cosine")
    assert res2.kind == "similarity" and res2.matrix.shape == (2, 2)
    assert res2.to_dict()["params"]["features"] == "unit-normalised"


def test_n_classes_keeps_empty_classes(rng):
    x, y = _data(rng, n=20)
    S = class_similarity(x, y, n_classes=6)
    assert S.shape == (6, 6)
    assert np.all(np.isnan(S[4:, :])) and np.all(np.isfinite(S[:4, :4]))


def test_most_similar_pairs():
    S = np.array([[1.0, 0.2, 0.9], [0.2, 1.0, 0.5], [0.9, 0.5, 1.0]])
    assert most_similar_pairs(S, n=2, classes=["a", "b", "c"]) == [("a", "c", 0.9), ("b", "c", 0.5)]
    assert most_similar_pairs(S, n=1, kind="distance") == [(0, 1, 0.2)]
    with pytest.raises(InvalidParameterError, match="must be a square matrix"):
        most_similar_pairs(S[:2])


def test_errors(rng):
    x, y = _data(rng, n=20)
    with pytest.raises(InvalidParameterError, match="The 'metric' parameter of class_similarity"):
        class_similarity(x, y, "chebyshev")
    with pytest.raises(InvalidParameterError, match="must be a 2-D array"):
        class_similarity(x[0], y)
    with pytest.raises(InvalidParameterError, match="one label per row"):
        class_similarity(x, y[:-1])
    with pytest.raises(InvalidParameterError, match="n_classes=2"):
        class_similarity(x, y, n_classes=2)
    with pytest.raises(InvalidParameterError, match="NaN or infinite"):
        class_similarity(np.full((3, 2), np.nan), np.array([0, 1, 1]))
    with pytest.raises(InvalidParameterError, match="must be a distance"):
        class_distance_sums(x, y, x, y, metric="cosine", n_classes=4)
    with pytest.raises(InvalidParameterError, match="must have the same dimension"):
        class_distance_sums(x, y, x[:, :2], y, metric="l1", n_classes=4)
    with pytest.raises(InvalidParameterError, match="needs ClassStats with raw_sums"):
        sqeuclidean_from_stats(ClassStats(np.zeros((2, 2)), np.ones(2, dtype=np.int64)))
    with pytest.raises(InvalidParameterError, match="'block_size' parameter"):
        class_similarity(x, y, "l1", block_size=0)


def test_class_stats_in_blocks_match_one_block(rng):
    """Float64 copies of one block at a time (10^6 x 1,280 features would need 20 GiB
    whole), the same sums to rounding."""
    from dcsi.similarity import class_cosine

    X = rng.standard_normal((1000, 16)).astype(np.float32)
    y = rng.integers(0, 4, 1000)
    whole = class_cosine.class_stats(X, y, block_rows=1000)
    blocks = class_cosine.class_stats(X, y, block_rows=128)
    np.testing.assert_allclose(blocks.sums, whole.sums, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(blocks.raw_sums, whole.raw_sums, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(blocks.sq_norms, whole.sq_norms, rtol=1e-12)
    np.testing.assert_array_equal(blocks.counts, whole.counts)


def _same_bits(a, b):
    for name in ("sums", "counts", "raw_sums", "sq_norms"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name


@pytest.mark.parametrize("given", [(), (0,), (1, 3), (0, 1, 2, 3, 4)])
def test_class_stats_partials_merge_bit_for_bit(rng, given):
    """Blocks computed elsewhere (block_stats on the same rows, as the Ray actors do)
    and the rest computed here add up to the same bits as one class_stats pass."""
    from dcsi.similarity.class_cosine import block_stats, class_stats

    x = rng.standard_normal((300, 24)).astype(np.float32)
    y = rng.integers(0, 5, 300)
    whole = class_stats(x, y, 5, block_rows=64)
    partials = {
        j: block_stats(x[j * 64 : (j + 1) * 64].copy(), y[j * 64 : (j + 1) * 64], 5) for j in given
    }
    _same_bits(class_stats(x, y, 5, block_rows=64, partials=partials), whole)


def test_stats_block_rows_are_whole_batches():
    from dcsi.similarity.class_cosine import stats_block_rows

    assert stats_block_rows(64) == 1024
    assert stats_block_rows(100) == 1000
    assert stats_block_rows(5000) == 5000


def test_class_stats_bad_block_rows():
    from dcsi.similarity.class_cosine import class_stats

    with pytest.raises(InvalidParameterError, match="'block_rows' parameter of class_stats"):
        class_stats(np.ones((3, 2)), np.array([0, 1, 0]), block_rows=0)
    wrong = {0: class_stats(np.ones((3, 5)), np.array([0, 1, 0]))}
    with pytest.raises(InvalidParameterError, match="'partials' parameter of class_stats"):
        class_stats(np.ones((3, 2)), np.array([0, 1, 0]), partials=wrong)
