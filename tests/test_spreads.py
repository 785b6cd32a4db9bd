"""Directional class spreads (dcsi.similarity.spreads) against a loop over pairs."""

from __future__ import annotations

import numpy as np
import pytest

from dcsi.exceptions import InvalidParameterError
from dcsi.similarity.class_cosine import class_similarity, class_stats
from dcsi.similarity.spreads import class_spreads, spread_sums, spreads_from_sums


def _reference(x, y, k):
    """Pair by pair and image by image: each image of class a minus the mean of the
    *other* images of its class, projected on the unit vector from class b's mean to
    that leave-one-out mean; the squares summed and scaled by (n - 1) / n^2."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    V = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            ia, ib = np.flatnonzero(y == a), np.flatnonzero(y == b)
            if a == b or len(ia) < 2 or len(ib) == 0:
                continue
            total = 0.0
            for i in ia:
                rest = u[ia[ia != i]].mean(0)
                diff = rest - u[ib].mean(0)
                if np.linalg.norm(diff) > 0:
                    total += float((u[i] - rest) @ (diff / np.linalg.norm(diff))) ** 2
            V[a, b] = total * (len(ia) - 1) / len(ia) ** 2
    return V


@pytest.mark.parametrize("block_rows", [1, 7, 4096])
def test_class_spreads_match_loops(rng, block_rows):
    x = rng.normal(size=(60, 9)) + 0.5
    y = rng.integers(0, 4, 60)
    y[:2] = [4, 5]  # class 4 has one image (no spread), class 6 none
    y[2:] = np.where(y[2:] >= 4, 0, y[2:])
    got = class_spreads(x, y, n_classes=7, block_rows=block_rows)
    np.testing.assert_allclose(got, _reference(x, y, 7), rtol=1e-10, atol=1e-15)
    assert np.all(got[4] == 0) and np.all(got[6] == 0) and np.all(np.diag(got) == 0)


def test_spreads_are_at_most_the_total_spread(rng):
    """Each projection is at most |x_i - mu_a^(-i)| = n / (n - 1) |x_i - mu_a|, so V is
    at most the trace of the class covariance, which for unit rows is 1 - S_cc (S's
    diagonal over pairs of distinct images)."""
    x = np.abs(rng.normal(size=(90, 16))) + 0.2
    y = np.repeat(np.arange(3), 30)
    V = class_spreads(x, y)
    total = 1.0 - np.diag(class_similarity(x, y))
    assert np.all(total[:, None] + 1e-12 >= V)
    assert np.all(V[~np.eye(3, dtype=bool)] > 0)


def test_spread_sums_add_over_blocks_and_centres_can_be_given(rng):
    x = rng.normal(size=(40, 5))
    y = rng.integers(0, 3, 40)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    centres = np.stack([u[y == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(class_stats(x, y, 3).centres, centres, rtol=1e-12)
    n = np.bincount(y)
    whole = spread_sums(x, y, centres, n)
    parts = spread_sums(x[:13], y[:13], centres, n) + spread_sums(x[13:], y[13:], centres, n)
    np.testing.assert_allclose(parts, whole, rtol=1e-12)
    V = spreads_from_sums(whole, n)
    np.testing.assert_allclose(class_spreads(x, y, centres=centres), V, rtol=1e-12)
    np.testing.assert_allclose(class_spreads(x, y), V, rtol=1e-10)


def test_classes_with_one_centre_have_no_direction():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    V = class_spreads(x, np.array([0, 0, 1, 1]))
    np.testing.assert_array_equal(V, np.zeros((2, 2)))


def test_spread_along_the_line_not_across(rng):
    """Two classes spread widely across the line joining them and little along it (the
    same 1,000 rows, shifted: their centres differ along the third axis only)."""
    a = np.stack([np.ones(1000), rng.normal(0, 0.2, 1000), rng.normal(0, 0.001, 1000)], 1)
    x = np.vstack([a, a + np.array([0.0, 0.0, 0.02])])
    y = np.repeat([0, 1], 1000)
    V = class_spreads(x, y)
    total = 1.0 - np.diag(class_similarity(x, y))
    assert V[0, 1] < 0.01 * total[0] and V[1, 0] < 0.01 * total[1]


def test_class_spreads_errors(rng):
    x = rng.normal(size=(6, 3))
    with pytest.raises(InvalidParameterError, match="2-D array"):
        class_spreads(x[0], np.zeros(3, int))
    with pytest.raises(InvalidParameterError, match="length 6 \\(one label per row\\)"):
        class_spreads(x, np.zeros(5, int))
    with pytest.raises(InvalidParameterError, match=r"holds class id 2, but n_classes=2"):
        class_spreads(x, np.array([0, 1, 2, 0, 1, 2]), n_classes=2)
    with pytest.raises(InvalidParameterError, match=r"'centres' .* shape \(2, 3\)"):
        class_spreads(x, np.array([0, 1] * 3), centres=np.zeros((2, 4)))
