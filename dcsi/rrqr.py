"""Rank-revealing (column-pivoted) QR column selection, Yousefzadeh's Algorithm 1 step 2.

Given a matrix ``W`` (rows: images, columns: wavelet coefficients), a column-pivoted QR
``W P = Q R`` orders the columns so that the most linearly independent come first.  The
selection keeps the largest ``m`` such that ``cond(W[:, P[:m]]) < tau``.

Two facts make this cheap and exact:

* ``cond(W[:, P[:m]]) == cond(R[:m, :m])`` (``Q`` has orthonormal columns), and the
  condition number of a leading block never decreases as ``m`` grows (singular values
  interlace), so ``m`` is found by bisection over the leading blocks of ``R``.
* When ``n >> d`` the pivoted QR of ``W`` itself is BLAS-2 bound; a plain (blocked,
  BLAS-3) QR of ``W`` first, streamed over row blocks (``R`` of ``[R_prev; block]``), and
  then a pivoted QR of the small ``d x d`` factor gives the same pivots, because column
  pivoting only looks at column norms and inner products, which an orthogonal factor
  preserves.  When ``W`` is well conditioned (``cond(W) < CHOLESKY_MAX_COND``) the
  first factor is the Cholesky factor of ``W^T W`` (one BLAS-3 product, CholeskyQR),
  which is several times faster and accurate to about ``eps cond(W)^2``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import numpy as np

from dcsi._json import to_jsonable
from dcsi._progress import progress
from dcsi._validation import check_array, check_float

__all__ = ["ColumnSelection", "numerical_rank", "r_factor", "select_columns"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColumnSelection:
    """The result of :func:`select_columns`.

    Attributes
    ----------
    columns : ndarray of shape (m,), int64
        Selected column indices of ``W``, most independent first (``P[:m]``).
    permutation : ndarray of shape (d,), int64
        The full pivot order ``P``.
    r_diagonal : ndarray of shape (d,), float64
        ``|R_ii|`` of the pivoted factor, non-increasing.
    m : int
        Number of selected columns (``n_columns`` when skipped).
    m_tau : int
        Largest ``m`` with ``cond(W[:, P[:m]]) < tau`` (computed even when skipped).
    numerical_rank : int
        ``#{i : |R_ii| > rank_tol * |R_00|}``.
    rank_tol : float
    tau : float
    cond_selected : float
        ``cond(W[:, P[:m]])`` (2-norm), ``< tau``.
    cond_full : float
        ``cond(W)``; ``inf`` when ``W`` is rank deficient.
    n_rows, n_columns : int
        Shape of ``W``.
    skipped : bool
        True when ``n_rows <= n_columns``: as in the paper, no columns are dropped then
        (``columns`` is every column in pivot order); rank and conditions are reported.
    """

    columns: np.ndarray
    permutation: np.ndarray
    r_diagonal: np.ndarray
    m: int
    m_tau: int
    numerical_rank: int
    rank_tol: float
    tau: float
    cond_selected: float
    cond_full: float
    n_rows: int
    n_columns: int
    skipped: bool

    def to_dict(self) -> dict:
        """JSON-ready summary (no column lists; infinite conditions as ``None``)."""
        return to_jsonable(
            {
                "m": int(self.m),
                "m_tau": int(self.m_tau),
                "numerical_rank": int(self.numerical_rank),
                "rank_tol": float(self.rank_tol),
                "tau": float(self.tau),
                "cond_selected": float(self.cond_selected),
                "cond_full": float(self.cond_full),
                "n_rows": int(self.n_rows),
                "n_columns": int(self.n_columns),
                "skipped": bool(self.skipped),
            }
        )


def r_factor(blocks: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
    """Triangular factor ``R`` of the row-stacked blocks, streamed (TSQR).

    Parameters
    ----------
    blocks : iterable of ndarray of shape (b_i, d)
        Row blocks of ``W``; only one block and a ``d x d`` factor are held at a time.

    Returns
    -------
    R : ndarray of shape (min(n, d), d), float64
        Upper triangular with ``R.T @ R == W.T @ W`` (up to rounding).
    n : int
        Total number of rows seen.
    """
    import scipy.linalg

    r: np.ndarray | None = None
    n = 0
    for block in blocks:
        b = np.asarray(block, dtype=np.float64)
        if b.ndim != 2 or b.shape[0] == 0:
            continue
        n += b.shape[0]
        stacked = b if r is None else np.vstack([r, b])
        r = scipy.linalg.qr(stacked, mode="r", overwrite_a=True, check_finite=False)[0]
        r = r[: min(r.shape)]
    if r is None:
        raise ValueError("r_factor needs at least one non-empty block")
    return r, n


#: Largest cond(W) for which R is taken from the Cholesky factor of W^T W (CholeskyQR):
#: its relative error is about eps * cond(W)^2 <= 1e-6 then; otherwise the streamed
#: Householder QR (TSQR) is used.
CHOLESKY_MAX_COND = 1e5


def _cholesky_r(blocks: Iterable[np.ndarray]) -> tuple[np.ndarray | None, int]:
    """``R`` from the Cholesky factor of the Gram matrix of the row blocks (None when
    ill-conditioned), and the number of rows seen."""
    gram: np.ndarray | None = None
    n = 0
    for block in progress(blocks, desc="column selection", unit="block"):
        b = np.asarray(block, dtype=np.float64)
        gram = b.T @ b if gram is None else gram + b.T @ b
        n += b.shape[0]
    if gram is None:
        raise ValueError("_cholesky_r needs at least one block")
    d = gram.shape[0]
    try:
        r = np.linalg.cholesky(gram).T
    except np.linalg.LinAlgError:
        return None, n
    if not np.all(np.isfinite(r)) or _cond_triangular(r, d) >= CHOLESKY_MAX_COND:
        return None, n
    return r, n


def _row_blocks(W: np.ndarray, step: int) -> Iterable[np.ndarray]:
    """Row blocks of ``step`` rows of ``W`` (converted one at a time by the caller)."""
    return (W[i : i + step] for i in range(0, W.shape[0], step))


def _cond_triangular(r: np.ndarray, m: int) -> float:
    if m == 0:
        return 1.0
    s = np.linalg.svd(r[:m, :m], compute_uv=False)
    return float(s[0] / s[-1]) if s[-1] > 0 else float("inf")


def numerical_rank(r_diagonal: np.ndarray, tol: float) -> int:
    """``#{i : |R_ii| > tol * |R_00|}`` for the diagonal of a pivoted ``R``."""
    d = np.abs(np.asarray(r_diagonal, dtype=np.float64))
    if d.size == 0 or d[0] == 0:
        return 0
    return int(np.count_nonzero(d > tol * d[0]))


def select_columns(
    W: np.ndarray | Iterable[np.ndarray] | Callable[[], Iterable[np.ndarray]],
    *,
    tau: float = 1e5,
    rank_tol: float = 1e-5,
    two_stage: bool | None = None,
) -> ColumnSelection:
    """Select the most independent columns of ``W`` with condition number below ``tau``.

    Parameters
    ----------
    W : ndarray of shape (n, d), an iterable of row blocks of shape (b_i, d), or a callable
        Rows are images, columns features (wavelet coefficients).  Blocks are streamed
        through :func:`r_factor`, so ``W`` need not fit in memory.  A callable returns
        a fresh iterable of the row blocks each time it is called: ``R`` comes from the
        Cholesky factor of the streamed Gram matrix when ``W`` is well conditioned
        (one pass, as for an ndarray), from :func:`r_factor` otherwise (a second pass).
    tau : float, default=1e5
        Largest allowed condition number of the selected columns (the paper's value).
    rank_tol : float, default=1e-5
        Relative tolerance of the numerical rank.
    two_stage : bool, default=None
        Plain QR first, then a pivoted QR of the ``d x d`` factor.  ``None``: when
        ``W`` is given in blocks or ``n > d``.  ``False`` runs the pivoted QR on ``W``
        directly (needs an ndarray).

    Returns
    -------
    ColumnSelection
        ``m`` is the largest with ``cond(W[:, P[:m]]) < tau``.  When ``n <= d`` the
        selection is skipped as in the paper (all columns kept).
    """
    import scipy.linalg

    tau = check_float(tau, "tau", "select_columns", min_value=1.0, min_inclusive=False)
    rank_tol = check_float(
        rank_tol,
        "rank_tol",
        "select_columns",
        min_value=0.0,
        max_value=1.0,
        min_inclusive=False,
        max_inclusive=False,
    )
    blocks: Callable[[], Iterable[np.ndarray]] | None = None
    if callable(W):
        blocks = W
    elif isinstance(W, np.ndarray) or (two_stage is False):
        A = check_array(W, "W", "select_columns", ndim=2)
        n, d = A.shape
        if (n > d) if two_stage is None else two_stage:
            blocks = partial(_row_blocks, A, max(d, 4096))
        else:
            A64 = np.asarray(A, dtype=np.float64)
            _, r2, perm = scipy.linalg.qr(A64, pivoting=True, mode="economic", check_finite=False)
    else:
        r, n = r_factor(W)
        d = r.shape[1]
        _, r2, perm = scipy.linalg.qr(r, pivoting=True, check_finite=False)
    if blocks is not None:
        found, n = _cholesky_r(blocks())
        r = r_factor(blocks())[0] if found is None else found
        d = r.shape[1]
        _, r2, perm = scipy.linalg.qr(r, pivoting=True, check_finite=False)

    diag = np.abs(np.diag(r2)).astype(np.float64)
    full_diag = np.zeros(d)
    full_diag[: diag.size] = diag
    rank = numerical_rank(full_diag, rank_tol)
    k = r2.shape[0]  # min(n, d)
    cond_full = _cond_triangular(r2, k) if k == d else float("inf")

    if full_diag[0] == 0:
        m = 0
    else:
        # largest m in [1, k] with cond(R[:m,:m]) < tau; cond is non-decreasing in m
        lo, hi = 1, k
        if _cond_triangular(r2, hi) < tau:
            lo = hi
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _cond_triangular(r2, mid) < tau:
                lo = mid
            else:
                hi = mid - 1
        m = lo
    skipped = n <= d
    if skipped:
        columns = np.asarray(perm, dtype=np.int64)
    else:
        columns = np.asarray(perm[:m], dtype=np.int64)
    cond_sel = _cond_triangular(r2, min(m, k)) if not skipped else cond_full
    logger.debug("select_columns: n=%d d=%d m=%d rank=%d cond=%.3g", n, d, m, rank, cond_full)
    return ColumnSelection(
        columns=columns,
        permutation=np.asarray(perm, dtype=np.int64),
        r_diagonal=full_diag,
        m=int(m) if not skipped else int(d),
        m_tau=int(m),
        numerical_rank=rank,
        rank_tol=rank_tol,
        tau=tau,
        cond_selected=float(cond_sel),
        cond_full=float(cond_full),
        n_rows=int(n),
        n_columns=int(d),
        skipped=bool(skipped),
    )
