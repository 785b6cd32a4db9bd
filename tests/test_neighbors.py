"""The one exact radius / nearest-neighbour search, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from dcsi.exceptions import DataError
from dcsi.neighbors import (
    link_radius,
    nearest_distances,
    nearest_lower_bounds,
    pair_distances,
    prepare_rows,
    projection_basis,
    radius_pairs,
)


def _rows(rng, n=60, d=12, near=20):
    base = rng.standard_normal((n, d))
    X = np.concatenate([base, base[:near] + 0.05 * rng.standard_normal((near, d))])
    return prepare_rows(X, center="none")


def _distances(A, B):
    return 1.0 - A.astype(np.float64) @ B.astype(np.float64).T


@pytest.mark.parametrize("n_components", [None, 4])
def test_pairs_within_one_set_match_brute_force(rng, n_components):
    F = _rows(rng)
    thr = 0.01
    D = _distances(F, F)
    i, j = np.nonzero(np.triu(thr >= D, 1))
    ref = set(zip(i.tolist(), j.tolist()))
    pairs, dist = radius_pairs(F, threshold=thr, n_components=n_components, block_size=7)
    assert set(map(tuple, pairs.tolist())) == ref and len(ref) >= 10
    assert np.all(pairs[:, 0] < pairs[:, 1])
    np.testing.assert_allclose(dist, np.maximum(D[pairs[:, 0], pairs[:, 1]], 0), atol=1e-5)


@pytest.mark.parametrize("n_components", [None, 3])
def test_pairs_between_two_sets_match_brute_force(rng, n_components):
    F = _rows(rng, n=50, near=25)
    A, B = F[50:], F[:50]  # the near copies against the originals
    thr = 0.02
    D = _distances(A, B)
    ref = set(zip(*map(np.ndarray.tolist, np.nonzero(thr >= D))))
    pairs, dist = radius_pairs(A, B, threshold=thr, n_components=n_components, block_size=4)
    assert set(map(tuple, pairs.tolist())) == ref and len(ref) >= 10
    np.testing.assert_allclose(dist, np.maximum(D[pairs[:, 0], pairs[:, 1]], 0), atol=1e-5)
    assert radius_pairs(A[:0], B, threshold=thr)[0].shape == (0, 2)


def test_nearest_bounds_and_exact_distances(rng):
    F = _rows(rng, n=40, near=0)
    A, B = F[:10], F[10:]
    exact = _distances(A, B).min(axis=1)
    np.testing.assert_allclose(nearest_distances(A, B, block_size=7), exact, atol=1e-6)
    lower = nearest_lower_bounds(A, B, n_components=3, block_size=4)
    assert np.all(lower <= np.sqrt(2 * np.maximum(exact, 0)) + 1e-5)


def test_projection_never_lengthens_and_radius_has_slack(rng):
    F = _rows(rng)
    basis = projection_basis(F, 5)
    np.testing.assert_allclose(basis.T @ basis, np.eye(5), atol=1e-5)
    diff = F[:30] - F[30:60]
    assert np.all(np.linalg.norm(diff @ basis, axis=1) <= np.linalg.norm(diff, axis=1) + 1e-6)
    assert link_radius(0.01) > np.sqrt(0.02)


def test_too_loose_threshold_is_refused(rng):
    with pytest.raises(DataError, match="far too loose"):
        radius_pairs(
            prepare_rows(np.ones((50, 3)) + 0.01 * rng.random((50, 3))),
            threshold=1.0,
            max_candidates=10,
        )


def test_unit_rows_scales_rows_to_one_and_keeps_zero_rows():
    from dcsi.neighbors import unit_rows

    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    u = unit_rows(x)
    assert u.dtype == np.float32
    np.testing.assert_allclose(u, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], rtol=0, atol=1e-7)
    assert unit_rows(x, np.float64).dtype == np.float64


def test_pair_distances_against_a_loop_and_the_same_in_any_block(rng):
    """Against a float64 dot product pair by pair (1e-12); the blocks of pairs change
    no bit of any value."""
    A = rng.normal(size=(40, 9)).astype(np.float32)
    B = rng.normal(size=(30, 9)).astype(np.float32)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    a, b = rng.integers(0, 40, 500), rng.integers(0, 30, 500)
    b[:5], a[:5] = 0, 0
    B[0] = A[0]  # identical rows: 0, clipped rather than a rounding below it
    loop = [
        max(1.0 - float(A[i].astype(np.float64) @ B[j].astype(np.float64)), 0.0)
        for i, j in zip(a, b)
    ]
    got = pair_distances(A, B, a, b)
    assert got.dtype == np.float64 and np.allclose(got, loop, rtol=0, atol=1e-12)
    assert got[0] >= 0.0
    for block in (1, 7, 64, 10_000):
        assert np.array_equal(pair_distances(A, B, a, b, block=block), got)
    assert pair_distances(A, B, a[:0], b[:0]).shape == (0,)


def test_cross_reference_topk_matches_brute_force(rng):
    from dcsi.neighbors import cross_reference_topk, unit_rows

    train = unit_rows(rng.standard_normal((40, 6)), np.float32)
    test = unit_rows(rng.standard_normal((9, 6)), np.float32)
    nbrs, dist, ref_tr = cross_reference_topk(test, train, 5)
    D = np.maximum(1.0 - test.astype(np.float64) @ train.astype(np.float64).T, 0.0)
    np.testing.assert_array_equal(nbrs, np.argsort(D, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(dist, np.sort(D, axis=1)[:, :5], atol=1e-12)
    T = np.maximum(1.0 - train.astype(np.float64) @ train.astype(np.float64).T, 0.0)
    np.fill_diagonal(T, np.inf)
    np.testing.assert_allclose(ref_tr, np.sort(T, axis=1)[:, 4], atol=1e-6)
