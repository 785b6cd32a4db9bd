"""Rank-revealing QR column selection against a direct scipy reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from dcsi.exceptions import InvalidParameterError
from dcsi.rrqr import numerical_rank, r_factor, select_columns


def _reference(W: np.ndarray, tau: float, tol: float):
    """Direct pivoted QR of W; m by checking every prefix with np.linalg.cond."""
    _, R, P = scipy.linalg.qr(W, pivoting=True, mode="economic")
    conds = [np.linalg.cond(W[:, P[:m]]) for m in range(1, W.shape[1] + 1)]
    m = max([m for m, c in zip(range(1, W.shape[1] + 1), conds) if c < tau], default=0)
    d = np.abs(np.diag(R))
    rank = int(np.sum(d > tol * d[0]))
    return P, m, rank


def _dependent(rng, n, d, rank, noise):
    """n x d with `rank` independent directions + tiny noise: cond crosses tau."""
    base = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d))
    scales = np.geomspace(1, 10, d)
    return base * scales + noise * rng.standard_normal((n, d))


@pytest.mark.parametrize("noise", [1e-6, 1e-8])
def test_matches_direct_pivoted_qr(rng, noise):
    W = _dependent(rng, 400, 30, 20, noise)
    P, m, rank = _reference(W, 1e5, 1e-5)
    got = select_columns(W, tau=1e5, rank_tol=1e-5)
    assert got.m == m and got.m_tau == m
    assert got.numerical_rank == rank
    np.testing.assert_array_equal(got.columns, P[:m])
    np.testing.assert_array_equal(got.permutation[:m], P[:m])
    assert got.cond_selected < 1e5
    np.testing.assert_allclose(got.cond_selected, np.linalg.cond(W[:, P[:m]]), rtol=1e-6)
    assert 1 <= m < 30  # the test data really cross tau


def test_two_stage_equals_direct_and_streamed(rng):
    W = rng.standard_normal((600, 25)) * np.geomspace(1, 100, 25)
    a = select_columns(W, two_stage=True)
    b = select_columns(W, two_stage=False)
    c = select_columns(iter([W[:100], W[100:350], W[350:]]))
    for x in (b, c):
        np.testing.assert_array_equal(a.columns, x.columns)
        assert a.m == x.m and a.numerical_rank == x.numerical_rank
        np.testing.assert_allclose(a.cond_full, x.cond_full, rtol=1e-6)
    np.testing.assert_allclose(a.cond_full, np.linalg.cond(W), rtol=1e-6)


def test_ill_conditioned_uses_householder_path(rng):
    # cond(W) > 1e5: the Cholesky shortcut must not be used; result still exact
    W = _dependent(rng, 500, 20, 12, 1e-9)
    P, m, rank = _reference(W, 1e5, 1e-5)
    got = select_columns(W, tau=1e5, rank_tol=1e-5)
    np.testing.assert_array_equal(got.columns, P[:m])
    assert got.numerical_rank == rank == 12


def test_r_factor_reproduces_gram(rng):
    W = rng.standard_normal((300, 12))
    R, n = r_factor([W[:50], W[50:]])
    assert n == 300 and R.shape == (12, 12)
    np.testing.assert_allclose(R.T @ R, W.T @ W, rtol=1e-10, atol=1e-9)


def test_skipped_when_n_not_above_d(rng):
    W = rng.standard_normal((10, 40))
    got = select_columns(W)
    assert got.skipped and got.m == 40 and len(got.columns) == 40
    assert got.numerical_rank == 10
    assert got.to_dict()["cond_full"] is None  # rank deficient: infinite -> None


def test_numerical_rank_formula():
    assert numerical_rank(np.array([10.0, 1.0, 1e-5, 1e-7]), 1e-5) == 2
    assert numerical_rank(np.array([0.0, 0.0]), 1e-5) == 0


def test_to_dict_is_json_ready(rng):
    import json

    d = select_columns(rng.standard_normal((50, 5))).to_dict()
    json.dumps(d, allow_nan=False)
    assert set(d) >= {"m", "numerical_rank", "cond_selected", "cond_full", "tau"}


def test_errors():
    with pytest.raises(
        InvalidParameterError, match="'tau' parameter of select_columns must be a float > 1"
    ):
        select_columns(np.eye(3), tau=0.5)
    with pytest.raises(InvalidParameterError, match="'rank_tol' parameter"):
        select_columns(np.eye(3), rank_tol=2.0)
    with pytest.raises(InvalidParameterError, match="must be a 2-D array"):
        select_columns(np.ones(3))
    with pytest.raises(ValueError, match="at least one non-empty block"):
        r_factor([])
