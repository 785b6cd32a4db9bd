"""The one exact radius and nearest-neighbour search of dcsi, never ``n x n``.

Every near-duplicate search of dcsi compares unit-length rows ``F`` (wavelet rows,
aligned windows, centred CNN features) by the distance ``1 - F_i . F_j``.  For unit rows
``||F_i - F_j||^2 = 2 (1 - F_i . F_j)``, and an orthogonal projection never lengthens a
difference, so every pair within ``threshold`` is among the pairs whose *projected*
Euclidean distance is ``<= sqrt(2 threshold)`` (:func:`link_radius`, with a float32
slack that never loses a pair).  The search is therefore exact in two steps:

1. **Candidates** in a low-dimensional projection (:func:`projection_basis`: the main
   directions of the rows, which make the bound tight):

   * :func:`radius_pairs`: rows sorted by their first projected coordinate; a block of
     ``block_size`` rows only meets the window of rows whose first coordinate is within
     the radius.  Memory ``O(block_size * window)``.
   * :func:`ball_pairs`: a ``scipy.spatial.cKDTree`` ball query, for very
     low-dimensional projections of many points (the aligned stage's transforms).
   * ``search="ann"`` (:class:`SearchOptions`; ``"auto"`` above
     :data:`ANN_THRESHOLD` rows): the same projected radius searched with a faiss
     IVF-flat index (:func:`dcsi.ann.ivf_radius_candidates`), near-linear in ``n``
     where the sorted window grows as ``n^2``.  Approximate in recall only: every
     candidate still goes through step 2.

2. **Verification** of every candidate on all columns (:func:`verify_pairs`).

3. **Top-k** (:func:`exact_topk`): the ``k`` most similar rows of each query, one
   block of query rows at a time against all rows, for :mod:`dcsi.neighbor_index` and
   the relative stage; a large set against itself computes each product once, with
   a sampled lower bound of each row's ``k``-th best deciding what to keep.

Used by :mod:`dcsi.redundancy` (pairs within one set), :mod:`dcsi.leakage` (pairs
between two sets, nearest training item, farthest test items) and :mod:`dcsi.aligned`
(the shift/crop-tolerant stage).
"""

from __future__ import annotations

import itertools
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np

from dcsi._progress import progress
from dcsi._validation import Interval, Options, check_choice, require, validate_fields
from dcsi.ann import DEFAULT_RANGE_NPROBE, ivf_index, ivf_radius_candidates
from dcsi.block_map import BlockMap, available_cpus, local_map, single_thread_blas
from dcsi.exceptions import DataError, InvalidParameterError

__all__ = [
    "ANN_THRESHOLD",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_N_COMPONENTS",
    "PAIR_BLOCK",
    "PILOT_ROWS",
    "SEARCH_METHODS",
    "STRIP_COLUMNS",
    "SearchOptions",
    "ball_pairs",
    "best_per_row",
    "cross_reference_topk",
    "exact_topk",
    "faiss_topk",
    "link_radius",
    "link_radius2",
    "nearest_distances",
    "nearest_lower_bounds",
    "pair_distances",
    "prepare_rows",
    "projection_basis",
    "radius_pairs",
    "reference_topk",
    "topk_rows",
    "unit_rows",
    "verify_pairs",
]

#: Rows per block of the candidate search (peak extra memory about
#: ``block_size * window * 4 * 3`` bytes).
DEFAULT_BLOCK_SIZE = 1024
#: Dimension of the candidate search's projection.
DEFAULT_N_COMPONENTS = 32
_EMPTY_PAIRS = (np.empty((0, 2), dtype=np.int64), np.empty(0))
#: The candidate searches: ``"exact"`` (sorted window), ``"ann"`` (faiss IVF-flat),
#: ``"auto"`` (exact up to :data:`ANN_THRESHOLD` rows, ann above).
SEARCH_METHODS = ("auto", "exact", "ann")
#: ``search="auto"`` takes the faiss search above this many rows (both sets together
#: between two sets).  The exact window grows as ``n^2``: 19 s at 10^5 wavelet rows of
#: Fashion-MNIST mixtures on 2 shared cores against 5 s for faiss, 30 min at 10^6
#: (``benchmarks/scale.py``); every set of the repository's cards stays exact.
ANN_THRESHOLD = 100_000


@dataclass(frozen=True)
class SearchOptions:
    """The candidate search shared by redundancy and leakage: method and sizes.

    The sizes never change a result; ``method="ann"`` may miss pairs (its recall
    against the exact search is measured in ``benchmarks/scale.py``) but never adds
    one, since every candidate is checked on all columns.

    Attributes
    ----------
    n_components : int or None, default=32
        Dimension of the candidate projection (``None``: none).
    block_size : int, default=1024
        Rows per block of the exact search.
    method : {"auto", "exact", "ann"}, default="auto"
        ``"exact"``: the sorted-window search; ``"ann"``: a faiss IVF-flat radius
        search on the same projection (needs ``dcsi[index]``); ``"auto"``: exact up to
        ``ann_threshold`` rows, ann above.
    ann_threshold : int, default=100000
        Rows above which ``"auto"`` takes the faiss search.
    nprobe : int, default=16
        Inverted lists probed per query by the faiss search.
    """

    n_components: int | None = DEFAULT_N_COMPONENTS
    block_size: int = DEFAULT_BLOCK_SIZE
    method: str = "auto"
    ann_threshold: int = ANN_THRESHOLD
    nprobe: int = DEFAULT_RANGE_NPROBE

    #: Declared constraints of each field (checked on creation).
    CONSTRAINTS: ClassVar[dict[str, list[Any]]] = {
        "n_components": [Interval(int, 1, None, closed="left"), None],
        "block_size": [Interval(int, 1, None, closed="left")],
        "method": [Options(SEARCH_METHODS)],
        "ann_threshold": [Interval(int, 0, None, closed="left")],
        "nprobe": [Interval(int, 1, None, closed="left")],
    }

    def __post_init__(self) -> None:
        validate_fields(self, "SearchOptions")

    @classmethod
    def from_arg(cls, search: Any, caller: str) -> SearchOptions:
        """The options a ``search`` argument stands for: None -> the defaults, a method
        name (``"auto"``, ``"exact"``, ``"ann"``) -> the defaults with that method, a
        ``SearchOptions`` as it is; anything else is refused in one line naming
        ``caller``."""
        if search is None:
            return cls()
        if isinstance(search, SearchOptions):
            return search
        if isinstance(search, str) and search in SEARCH_METHODS:
            return cls(method=search)
        raise InvalidParameterError(
            f"The 'search' parameter of {caller} must be one of {list(SEARCH_METHODS)} or a "
            f"SearchOptions. Got {search!r} instead."
        )

    def resolve(self, n: int) -> str:
        """The search run on ``n`` rows: ``"exact"`` or ``"ann"``."""
        if self.method == "auto":
            return "ann" if n > self.ann_threshold else "exact"
        return self.method

    def check_available(self, n: int, caller: str) -> None:
        """Refuse, before any long work, a faiss search on ``n`` rows without faiss
        (MissingDependencyError naming ``caller`` and ``pip install 'dcsi[index]'``)."""
        if self.resolve(n) == "ann":
            require("faiss", f"The approximate candidate search of {caller}", "dcsi[index]")


def prepare_rows(
    X: np.ndarray, *, center: str = "row", out: np.ndarray | None = None
) -> np.ndarray:
    """Centre and unit-normalise rows, so that ``1 - x_i . x_j`` is the distance.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    center : {"row", "column", "none"}, default="row"
        ``"row"``: subtract each row's mean (distance = 1 - Pearson correlation);
        ``"column"``: subtract the dataset mean of each column; ``"none"``.
    out : ndarray of shape (n, d), float32, default=None
        Where to write the rows (may be ``X`` itself: no second copy of a large
        matrix); None: a new array.

    Returns
    -------
    ndarray of shape (n, d), float32
        Zero rows stay zero.
    """
    check_choice(center, "center", "prepare_rows", ("row", "column", "none"))
    X = np.asarray(X)
    out = np.empty(X.shape, dtype=np.float32) if out is None else out
    col_mean = X.mean(axis=0, dtype=np.float64) if center == "column" else None
    step = 8192
    for s in range(0, X.shape[0], step):
        F = X[s : s + step].astype(np.float64)
        if center == "row":
            F -= F.mean(axis=1, keepdims=True)
        elif center == "column":
            assert col_mean is not None
            F -= col_mean
        norms = np.linalg.norm(F, axis=1, keepdims=True)
        out[s : s + step] = F / np.where(norms > 0, norms, 1.0)
    return out


def unit_rows(x: Any, dtype: Any = None) -> np.ndarray:
    """Rows scaled to unit length; a zero row stays zero.

    Parameters
    ----------
    x : array-like of shape (n, d)
    dtype : numpy dtype, default=None
        Converted to first (None: ``x``'s own).

    Returns
    -------
    ndarray of shape (n, d)
    """
    x = np.asarray(x, dtype=dtype)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def link_radius2(threshold: float) -> float:
    """Squared projected radius that holds every pair with ``1 - a . b <= threshold``.

    ``2 threshold`` widened by a relative ``1e-5`` and an absolute ``1e-6``, so that
    float32 rounding of the projected rows never drops a pair.
    """
    return 2.0 * threshold * (1 + 1e-5) + 1e-6


def link_radius(threshold: float) -> float:
    """``sqrt(link_radius2(threshold))``: the Euclidean radius of the candidate search."""
    return float(np.sqrt(link_radius2(threshold)))


def projection_basis(
    F: np.ndarray, n_components: int, seed: int = 0, max_rows: int = 20000
) -> np.ndarray:
    """An orthonormal basis of the main directions of the rows of ``F``.

    Any orthonormal basis keeps ``||B^T (x - y)|| <= ||x - y||``, which is all the
    candidate search needs; principal directions (from at most ``max_rows`` rows drawn
    with ``seed``) make the bound tight, so few candidates survive.

    Parameters
    ----------
    F : ndarray of shape (n, d)
    n_components : int
    seed : int, default=0
    max_rows : int, default=20000

    Returns
    -------
    ndarray of shape (d, n_components), float32
    """
    n = F.shape[0]
    rows = F if n <= max_rows else F[np.random.default_rng(seed).choice(n, max_rows, replace=False)]
    rows = rows.astype(np.float32) - rows.mean(axis=0, dtype=np.float64).astype(np.float32)
    gram = (rows.T @ rows).astype(np.float64)
    _, vecs = np.linalg.eigh(gram)
    return np.ascontiguousarray(vecs[:, ::-1][:, :n_components], dtype=np.float32)


def _project(
    A: np.ndarray, B: np.ndarray, n_components: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``A`` and ``B`` in the basis of ``B``'s main directions (unchanged when small)."""
    if n_components is not None and n_components < B.shape[1]:
        basis = projection_basis(B, n_components, seed)
        return A @ basis, B @ basis
    return A, B


def radius_pairs(
    A: np.ndarray,
    B: np.ndarray | None = None,
    *,
    threshold: float,
    n_components: int | None = DEFAULT_N_COMPONENTS,
    block_size: int = DEFAULT_BLOCK_SIZE,
    max_candidates: int | None = None,
    seed: int = 0,
    desc: str = "neighbours",
    search: str = "exact",
    nprobe: int = DEFAULT_RANGE_NPROBE,
    map_blocks: BlockMap = local_map,
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of rows with ``1 - a . b <= threshold``, within one set or between two.

    Parameters
    ----------
    A : ndarray of shape (n_a, d)
        Unit-length (or zero) rows.
    B : ndarray of shape (n_b, d), default=None
        A second set of unit rows; ``None``: pairs within ``A``.
    threshold : float
        Largest distance ``1 - a . b`` of a returned pair.
    n_components : int or None, default=32
        Dimension of the candidate projection (the main directions of ``B``, or of
        ``A`` when ``B`` is None); ``None``: no projection.
    block_size : int, default=1024
        Rows of ``A`` per block of the exact search.
    max_candidates : int, default=None
        Refuse (``DataError``) beyond this many candidates (default
        ``200 (n_a + n_b)``, ``200 n_a`` within one set): the threshold is then far too
        loose for a near-duplicate search.
    seed : int, default=0
        Row subsample of the projection basis (and the faiss k-means).
    desc : str, default="neighbours"
        Label of the progress bar.
    search : {"exact", "ann"}, default="exact"
        Candidates from the sorted window (exact) or from a faiss IVF-flat radius
        search of the same projection (:func:`dcsi.ann.ivf_radius_candidates`: may
        miss pairs, never adds one).
    nprobe : int, default=16
        Lists probed per query by ``search="ann"``.
    map_blocks : BlockMap, default=local_map
        Runs the exact search's query blocks (:mod:`dcsi.block_map`): a loop here, or
        Ray tasks (:func:`dcsi.ray_engine.ray_map`); the blocks' candidates are merged
        in block order, so the pairs are the same.  ``search="ann"`` runs its faiss
        index here whatever ``map_blocks`` is.

    Returns
    -------
    pairs : ndarray of shape (m, 2), int64
        Within one set: ``(i, j)`` with ``i < j``; between two: ``(row of A, row of
        B)``.  Sorted by first, then second index.
    distances : ndarray of shape (m,), float64
        ``1 - a . b`` on all columns (clipped at 0).
    """
    check_choice(search, "search", "radius_pairs", ("exact", "ann"))
    same = B is None
    A = np.ascontiguousarray(A, dtype=np.float32)
    B = A if same else np.ascontiguousarray(B, dtype=np.float32)
    na, nb = A.shape[0], B.shape[0]
    if (same and na < 2) or na == 0 or nb == 0:
        return _EMPTY_PAIRS
    if max_candidates is None:
        max_candidates = 200 * (na if same else na + nb)
    PA, PB = _project(A, B, n_components, seed)
    radius2 = link_radius2(threshold)
    if search == "ann":
        cand, _ = ivf_radius_candidates(
            PA, None if same else PB, radius2, nprobe=nprobe, seed=seed, desc=desc
        )
        _check_candidates(len(cand), max_candidates, threshold, na if same else na + nb)
    else:
        cand = _window_candidates(
            PA,
            None if same else PB,
            radius2,
            block_size,
            desc,
            (max_candidates, threshold),
            map_blocks,
        )
    if not len(cand):
        return _EMPTY_PAIRS
    return verify_pairs(A, B, cand, threshold)


def _check_candidates(total: int, max_candidates: int, threshold: float, n: int) -> None:
    """Refuse a search with more than ``max_candidates`` candidates (DataError)."""
    if total > max_candidates:
        raise DataError(
            f"The near-duplicate threshold {threshold} links more than "
            f"{max_candidates} candidate pairs among {n} images; it is far too loose for "
            "a near-duplicate search. Use a smaller threshold."
        )


def _window_candidates(
    PA: np.ndarray,
    PB: np.ndarray | None,
    radius2: float,
    block_size: int,
    desc: str,
    limit: tuple[int, float],
    map_blocks: BlockMap = local_map,
) -> np.ndarray:
    """Candidate pairs within ``sqrt(radius2)`` (exact): blocks of rows sorted by their
    first coordinate, each against the window of rows within the radius there
    (:func:`_block_candidates`, run through ``map_blocks``, merged in block order).
    ``limit`` is ``(max_candidates, threshold)`` for :func:`_check_candidates`.
    Returns ``(m, 2)`` int64 pairs (``i < j`` within one set)."""
    same = PB is None
    a_order = np.argsort(PA[:, 0], kind="stable")
    b_order = a_order if PB is None else np.argsort(PB[:, 0], kind="stable")
    PA = np.ascontiguousarray(PA[a_order])
    PB = None if PB is None else np.ascontiguousarray(PB[b_order])
    na = PA.shape[0]
    nb = na if PB is None else PB.shape[0]
    # the first coordinates (float64, for the window bounds) and the squared norms
    fa = PA[:, 0].astype(np.float64)
    sqA = np.einsum("ij,ij->i", PA, PA)
    side = None if PB is None else (PB, PB[:, 0].astype(np.float64), np.einsum("ij,ij->i", PB, PB))
    found_i, found_j = [], []
    total = 0
    starts = range(0, na, block_size)
    blocks = map_blocks(_block_candidates, (PA, fa, sqA, side, radius2, block_size), starts)
    for ii, jj in progress(blocks, desc=desc, unit="block", total=len(starts)):
        found_i.append(a_order[ii])
        found_j.append(b_order[jj])
        total += len(ii)
        _check_candidates(total, limit[0], limit[1], na if same else na + nb)
    if not found_i:
        return np.empty((0, 2), dtype=np.int64)
    cand = np.stack([np.concatenate(found_i), np.concatenate(found_j)], 1).astype(np.int64)
    return np.sort(cand, axis=1) if same else cand


def _where2(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-d mask, in the same order, through the flat indices
    (several times faster on large masks)."""
    return np.divmod(np.flatnonzero(mask), mask.shape[1])


def _block_candidates(
    PA: np.ndarray,
    fa: np.ndarray,
    sqA: np.ndarray,
    side: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    radius2: float,
    block_size: int,
    s: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates of the query block ``PA[s : s + block_size]``.

    ``PA`` (rows sorted by their first coordinate ``fa``, squared norms ``sqA``) is
    searched against itself (``side`` None) or against ``side = (PB, fb, sqB)``, sorted
    likewise.  Returns ``(ii, jj)``, int64 rows of the sorted sets; within one set only
    the pairs ``ii < jj``."""
    same = side is None
    PB, fb, sqB = (PA, fa, sqA) if side is None else side
    radius = float(np.sqrt(radius2))
    e = min(s + block_size, PA.shape[0])
    lo = s if same else int(np.searchsorted(fb, fa[s] - radius, side="left"))
    hi = int(np.searchsorted(fb, fa[e - 1] + radius, side="right"))
    if hi <= lo:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    d2 = PA[s:e] @ PB[lo:hi].T
    d2 *= -2.0
    d2 += sqA[s:e, None]
    d2 += sqB[None, lo:hi]
    ii, jj = _where2(d2 <= radius2)
    ii, jj = ii + s, jj + lo
    if same:
        upper = jj > ii
        ii, jj = ii[upper], jj[upper]
    return ii.astype(np.int64), jj.astype(np.int64)


#: Pairs whose rows :func:`pair_distances` gathers at a time.
PAIR_BLOCK = 16_384


def pair_distances(
    A: np.ndarray, B: np.ndarray, a: np.ndarray, b: np.ndarray, block: int = PAIR_BLOCK
) -> np.ndarray:
    """``1 - A[a[i]] . B[b[i]]`` for every pair ``i``, clipped at 0, in float64.

    Parameters
    ----------
    A, B : ndarray of shape (n_a, d) and (n_b, d)
    a, b : ndarray of shape (m,), int
        The pairs.
    block : int, default=PAIR_BLOCK
        Pairs gathered at a time: memory ``2 * block * d`` floats, whatever ``m`` (all
        pairs at once took ``2 * m * d``: 10 GB for the registered windows' ten
        neighbours of 10^6 images in :mod:`dcsi.relative_links`).  Each pair's value
        does not depend on it.

    Returns
    -------
    ndarray of shape (m,), float64
    """
    out = np.empty(len(a), dtype=np.float64)
    for s in range(0, len(a), block):
        e = s + block
        out[s:e] = np.einsum("ij,ij->i", A[a[s:e]], B[b[s:e]], dtype=np.float64)
    return np.maximum(1.0 - out, 0.0)


def verify_pairs(
    A: np.ndarray, B: np.ndarray, cand: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the candidate pairs whose exact distance ``1 - a . b`` is ``<= threshold``.

    Parameters
    ----------
    A : ndarray of shape (n_a, d)
    B : ndarray of shape (n_b, d)
        Unit rows (``B`` may be ``A`` for pairs within one set).
    cand : ndarray of shape (m, 2), int
        Candidate pairs ``(row of A, row of B)``.
    threshold : float

    Returns
    -------
    pairs : ndarray of shape (k, 2), int64
        The kept pairs, sorted by first then second index.
    distances : ndarray of shape (k,)
        Their distances (clipped at 0), in float64.
    """
    dist = pair_distances(A, B, cand[:, 0], cand[:, 1])
    keep = dist <= threshold
    cand, dist = cand[keep], dist[keep]
    order = np.lexsort((cand[:, 1], cand[:, 0]))
    return cand[order], dist[order]


def nearest_lower_bounds(
    A: np.ndarray,
    B: np.ndarray,
    *,
    n_components: int | None = DEFAULT_N_COMPONENTS,
    block_size: int = DEFAULT_BLOCK_SIZE,
    seed: int = 0,
    desc: str = "nearest",
) -> np.ndarray:
    """A lower bound of each ``A`` row's Euclidean distance to its nearest ``B`` row.

    The distance in the projection of :func:`radius_pairs` (same basis, same seed), all
    ``B`` rows per block of ``A`` rows: ``O(n_a n_b n_components)`` work, ``O(block_size
    n_b)`` memory.  Used to shortlist the rows farthest from ``B`` before
    :func:`nearest_distances` checks them exactly.

    Parameters
    ----------
    A : ndarray of shape (n_a, d)
    B : ndarray of shape (n_b, d)
        Unit rows.
    n_components, block_size, seed
        See :func:`radius_pairs`.
    desc : str, default="nearest"

    Returns
    -------
    ndarray of shape (n_a,), float64
        ``<= ||a - b_nearest||``.
    """
    A = np.ascontiguousarray(A, dtype=np.float32)
    B = np.ascontiguousarray(B, dtype=np.float32)
    PA, PB = _project(A, B, n_components, seed)
    PB = np.ascontiguousarray(PB)
    sqA = np.einsum("ij,ij->i", PA, PA)
    sqB = np.einsum("ij,ij->i", PB, PB)
    lower = np.empty(A.shape[0])
    for s in progress(
        range(0, A.shape[0], block_size),
        desc=desc,
        unit="block",
        total=-(-A.shape[0] // block_size),
    ):
        d2 = PA[s : s + block_size] @ PB.T
        d2 *= -2.0
        d2 += sqA[s : s + block_size, None]
        d2 += sqB[None, :]
        lower[s : s + block_size] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return lower


def nearest_distances(A: np.ndarray, B: np.ndarray, *, block_size: int = 65536) -> np.ndarray:
    """Exact distance ``1 - max_j a . b_j`` of each ``A`` row to its nearest ``B`` row.

    Parameters
    ----------
    A : ndarray of shape (m, d)
        A few unit rows (a shortlist: the work is ``O(m n_b d)``, one matrix-vector
        product per row and block).
    B : ndarray of shape (n_b, d)
    block_size : int, default=65536
        ``B`` rows per product.

    Returns
    -------
    ndarray of shape (m,), float64
    """
    out = np.empty(A.shape[0])
    for i, a in enumerate(A):
        best = -np.inf
        for s in range(0, B.shape[0], block_size):
            best = max(best, float((B[s : s + block_size] @ a).max()))
        out[i] = 1.0 - best
    return out


def ball_pairs(tree: Any, queries: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """All ``(query row, tree point)`` within ``radius`` (Euclidean), from a k-d tree.

    Parameters
    ----------
    tree : scipy.spatial.cKDTree
    queries : ndarray of shape (m, k)
    radius : float

    Returns
    -------
    query_rows : ndarray of shape (p,), int64
    points : ndarray of shape (p,), int64
    """
    found = tree.query_ball_point(queries, radius, workers=-1, return_sorted=False)
    lens = np.fromiter(map(len, found), dtype=np.int64, count=len(found))
    j = np.fromiter(itertools.chain.from_iterable(found), dtype=np.int64, count=int(lens.sum()))
    return np.repeat(np.arange(len(queries), dtype=np.int64), lens), j


#: Most columns per group of :func:`topk_rows`'s lower bound.
_TOPK_GROUP = 64
#: Rows of the sample that bounds each row's ``k``-th best in :func:`_self_topk`.
PILOT_ROWS = 2048
#: Columns of one product in :func:`_self_topk` (8192 x 1024 floats: read again while
#: still in cache).
STRIP_COLUMNS = 8192


def _topk_candidates(S: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, columns)`` of every entry at least a lower bound of its row's ``k``-th
    largest entry: a superset of each row's top ``k``, cheap to find.

    The columns are dealt into ``m`` groups of ``g`` (column ``c`` in group ``c mod
    m``; the last ``n mod g`` columns a group each), ``g`` about ``sqrt(n / k)`` and at
    most :data:`_TOPK_GROUP`.  The ``k``-th largest group maximum is such a bound (the
    ``k`` groups with the largest maxima hold ``k`` entries at least that large), and
    only the groups whose maximum reaches it are read again.  The groups are strided so
    that their maxima are elementwise maxima of ``g`` contiguous slices (about twice
    as fast as maxima of contiguous chunks).  With groups of fewer than 4 columns,
    the bound is the ``k``-th largest entry itself (``np.partition``) and every column
    is read.
    """
    b, n = S.shape
    g = min(_TOPK_GROUP, int(np.sqrt(n / k)))
    if g < 4:
        bound = np.partition(S, n - k, axis=1)[:, n - k]
        ii, jj = _where2(bound[:, None] <= S)
        return ii, jj
    m = n // g
    full = g * m
    grouped = S[:, :full].reshape(b, g, m).max(axis=1)  # (b, m)
    maxima = np.concatenate([grouped, S[:, full:]], axis=1)
    c = maxima.shape[1]
    bound = np.partition(maxima, c - k, axis=1)[:, c - k]
    rows, groups = _where2(grouped >= bound[:, None])
    cols = groups[:, None] + m * np.arange(g)
    hit = S[rows[:, None], cols] >= bound[rows][:, None]
    tail_rows, tail_cols = _where2(S[:, full:] >= bound[:, None])
    return (
        np.concatenate([np.broadcast_to(rows[:, None], cols.shape)[hit], tail_rows]),
        np.concatenate([cols[hit], tail_cols + full]),
    )


def topk_rows(S: np.ndarray, k: int, offset: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest entries of each row of a score block, best first.

    Every entry at least as large as a lower bound of the row's ``k``-th largest
    (:func:`_topk_candidates`) is a candidate; the candidates are sorted by score, then
    by column, so ties are broken by the smaller column index whatever the order in
    which equal values were found.

    Parameters
    ----------
    S : ndarray of shape (b, n), float32
        Scores of ``b`` queries against ``n`` rows; modified in place when ``offset``
        is given.
    k : int
        ``1 <= k <= n`` (``k <= n - 1`` with ``offset``).
    offset : int, default=None
        Query ``r`` of the block is row ``offset + r`` of the searched set: that entry is
        left out (a row is not its own neighbour).

    Returns
    -------
    columns : ndarray of shape (b, k), int64
    scores : ndarray of shape (b, k), float32
    """
    b, n = S.shape
    if offset is not None:
        S[np.arange(b), offset + np.arange(b)] = -np.inf
    if k < n:
        ii, jj = _topk_candidates(S, k)
    else:
        ii, jj = np.divmod(np.arange(b * n, dtype=np.int64), n)
    vals = S[ii, jj]
    order = np.lexsort((jj, -vals, ii))
    ii, jj, vals = ii[order], jj[order], vals[order]
    first = np.searchsorted(ii, np.arange(b))
    take = first[:, None] + np.arange(k)
    return jj[take].astype(np.int64), vals[take].astype(np.float32)


def exact_topk(
    X: np.ndarray,
    Q: np.ndarray | None = None,
    *,
    k: int,
    block_bytes: int = 1 << 28,
    desc: str = "nearest neighbours",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products, blockwise: never an ``n x n`` matrix.

    Each block of query rows is multiplied by all of ``X`` (at most ``block_bytes`` of
    scores at a time, at most 1024 rows a block; several blocks run one per CPU, each
    with one BLAS thread) and reduced to its top ``k`` at once
    (:func:`topk_rows`: ties broken by the smaller row index of ``X``).  Every row of a
    large ``X`` against the others (``Q`` None, more than ``4 *`` :data:`PILOT_ROWS`
    rows) computes each product once (:func:`_self_topk`), with the same result.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The searched rows (unit rows: the scores are cosine similarities).
    Q : ndarray of shape (m, d), default=None
        Query rows; ``None``: every row of ``X`` against the others (itself left out).
    k : int
        Neighbours per query, ``<= n`` (``<= n - 1`` when ``Q`` is None).
    block_bytes : int, default=256 MiB
        Size of one block of scores.
    desc : str, default="nearest neighbours"
        Label of the progress bar.

    Returns
    -------
    neighbors : ndarray of shape (m, k), int64
        Rows of ``X``, best first.
    scores : ndarray of shape (m, k), float32
        Their inner products.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    rows = int(max(1, min(1024, block_bytes // (4 * max(n, 1)))))
    same = Q is None
    if same and n > 4 * PILOT_ROWS:
        return _self_topk(X, k, rows, desc)
    Q = X if same else np.ascontiguousarray(Q, dtype=np.float32)
    m = Q.shape[0]
    cpus = available_cpus()
    if m > rows:  # several blocks: cpus at a time
        rows = max(1, rows // cpus)
    neighbors = np.empty((m, k), dtype=np.int64)
    scores = np.empty((m, k), dtype=np.float32)

    def block(s: int) -> None:
        S = Q[s : s + rows] @ X.T
        neighbors[s : s + rows], scores[s : s + rows] = topk_rows(S, k, offset=s if same else None)

    starts = range(0, m, rows)
    if len(starts) < 2:  # one block: the product on every BLAS thread
        for s in progress(starts, desc=desc, unit="block"):
            block(s)
        return neighbors, scores
    with (
        single_thread_blas(),
        ThreadPoolExecutor(cpus) as pool,
        progress(total=len(starts), desc=desc, unit="block") as bar,
    ):  # one block's selection overlaps another's product
        for _ in pool.map(block, starts):
            bar.update(1)
    return neighbors, scores


def best_per_row(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best ``(row, column, score)`` entries of each row (fewer where a row has
    fewer), sorted by row, then by score; entries of equal row and score keep their
    order (:func:`_self_topk` lists them by column)."""
    bits = (vals.astype(np.float32) + np.float32(0.0)).view(np.uint32)  # -0.0 -> 0.0
    ascending = bits ^ np.where(bits >> 31, np.uint32(0xFFFFFFFF), np.uint32(0x80000000))
    key = (rows.astype(np.uint64) << np.uint64(32)) | (np.uint32(0xFFFFFFFF) - ascending)
    order = np.argsort(key, kind="stable")
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    keep = rank < k
    return rows[keep], cols[keep], vals[keep]


def _pilot_block(
    X: np.ndarray, P: np.ndarray, sample: np.ndarray, k: int, rows: int, s: int
) -> np.ndarray:
    """The ``k``-th best product of rows ``[s, s + rows)`` with the ``sample`` rows
    ``P = X[sample]`` (itself left out), shape (b,)."""
    S = X[s : s + rows] @ P.T
    at = np.searchsorted(sample, np.arange(s, s + len(S)))
    own = np.flatnonzero(sample[np.minimum(at, len(sample) - 1)] == np.arange(s, s + len(S)))
    S[own, at[own]] = -np.inf
    return np.partition(S, len(sample) - k, axis=1)[:, len(sample) - k]


def _pilot_bound(X: np.ndarray, k: int, rows: int, pool: ThreadPoolExecutor) -> np.ndarray:
    """A lower bound of each row's ``k``-th best product with another row, as any
    float32 product computes it, shape (n,).

    The ``k``-th best with the rows of an evenly spaced sample of :data:`PILOT_ROWS`
    (:func:`_pilot_block`, blocks run on ``pool``), less twice the rounding bound of a
    float32 dot product (``gamma_d ||x|| ||y||``, ``gamma_d = d u / (1 - d u)``) and
    one more float32 step: the same pair multiplied in another block may round
    differently.
    """
    n, d = X.shape
    sample = np.linspace(0, n - 1, PILOT_ROWS).round().astype(np.int64)
    starts = range(0, n, rows)
    pilot = partial(_pilot_block, X, X[sample], sample, k, rows)
    bound = np.concatenate(list(pool.map(pilot, starts)))
    du = d * float(np.finfo(np.float32).eps) / 2
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    slack = 2 * du / (1 - du) * norms * norms.max()
    return np.nextafter((bound - slack).astype(np.float32), np.float32(-np.inf))


def _strip_candidates(
    X: np.ndarray, bound: np.ndarray, rows: int, s: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The candidates ``(rows, columns, scores)`` of the products of rows ``[s, s +
    rows)`` with rows ``s:`` (:func:`_self_topk`), each row's listed by column."""
    n = X.shape[0]
    e = min(s + rows, n)
    width = max(STRIP_COLUMNS, e - s)
    out = []
    for c in range(s, n, width):  # cache-sized pieces, read twice
        f = min(c + width, n)
        S = X[s:e] @ X[c:f].T  # (e - s, f - c)
        if c == s:  # a row is not its own neighbour
            S[np.arange(e - s), np.arange(e - s)] = -np.inf
        r, j = _where2(bound[s:e, None] <= S)
        lo = max(c, e)  # the rows after the block take candidates from it
        T = S[:, lo - c :]
        tr, tj = _where2(bound[None, lo:f] <= T)
        out += [(r + s, j + c, S[r, j]), (tj + lo, tr + s, T[tr, tj])]
    return out


def _self_topk(X: np.ndarray, k: int, rows: int, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_topk` of every row of ``X`` among the others, each product once.

    Each row's ``k``-th best is bounded from below by its ``k``-th best in a sample
    (:func:`_pilot_bound`); every product at least the bound of one of its two rows is
    a candidate of that row, and the candidates of each row hold its top ``k``.  Block
    ``[s, e)`` of rows is multiplied by rows ``s:`` only (the upper triangle of ``X
    X^T``, half the work of all pairs) and read both ways
    (:func:`_strip_candidates`).  The candidates are reduced to each row's best ``k``
    whenever they outgrow ``4 k n`` entries, and the bounds raised to the ``k``-th
    best found.  Ties are broken by the smaller column as in :func:`topk_rows`; each
    score is the one float32 product of its pair.

    The blocks run on one thread per CPU (:func:`dcsi.block_map.available_cpus`), each
    with one BLAS thread, so that one block's comparisons overlap another's product;
    a block reads the bounds as they were when the one ``cpus`` before it was merged,
    and the blocks are merged in order.  Any bounds give the same result.
    """
    n = X.shape[0]
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    size = 0

    def reduced() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r, c, v = (np.concatenate(p) for p in zip(*parts, strict=True))
        r, c, v = best_per_row(r, c, v, k)
        full = np.flatnonzero(np.bincount(r, minlength=n) == k)
        last = np.searchsorted(r, full, side="right") - 1
        bound[full] = np.maximum(bound[full], v[last])
        return r, c, v

    starts = range(0, n, rows)
    cpus = available_cpus()
    with (
        single_thread_blas(),
        ThreadPoolExecutor(cpus) as pool,
        progress(total=len(starts), desc=desc, unit="block") as bar,
    ):
        bound = _pilot_bound(X, k, rows, pool)
        running = deque(
            pool.submit(_strip_candidates, X, bound.copy(), rows, s) for s in starts[:cpus]
        )
        for i in range(len(starts)):
            found = running.popleft().result()
            parts += found
            size += sum(len(p[0]) for p in found)
            if size > 4 * k * n:
                parts = [reduced()]
                size = len(parts[0][0])
            if i + cpus < len(starts):
                running.append(
                    pool.submit(_strip_candidates, X, bound.copy(), rows, starts[i + cpus])
                )
            bar.update(1)
    _, c, v = reduced()
    return c.reshape(n, k), v.reshape(n, k)


def faiss_topk(
    X: np.ndarray,
    *,
    k: int,
    nlist: int | None = None,
    nprobe: int = 32,
    seed: int = 0,
    batch_size: int = 16384,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Approximate top-``k`` neighbours of every row among the others (faiss IVF-flat).

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Unit rows.
    k : int
        Neighbours per row, ``<= n - 1``.
    nlist, nprobe, seed
        See :func:`ivf_index`.
    batch_size : int, default=16384
        Queries per call into faiss.

    Returns
    -------
    neighbors : ndarray of shape (n, k), int64
    scores : ndarray of shape (n, k), float32
        Exact inner products of the found rows, best first (ties: smaller row).
    params : dict
        The index's parameters (:func:`ivf_index`), recorded in ``index.json``.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    index, params = ivf_index(X, nlist=nlist, nprobe=nprobe, seed=seed)
    found = np.empty((n, k + 1), dtype=np.int64)
    sims = np.empty((n, k + 1), dtype=np.float32)
    for s in progress(range(0, n, batch_size), desc="faiss search", unit="batch"):
        sims[s : s + batch_size], found[s : s + batch_size] = index.search(
            X[s : s + batch_size], k + 1
        )
    # drop each row itself (or, if faiss did not return it, the last hit)
    drop = found == np.arange(n)[:, None]
    drop[~drop.any(axis=1), -1] = True
    found = found[~drop].reshape(n, k)
    sims = sims[~drop].reshape(n, k)
    short = np.flatnonzero((found < 0).any(axis=1))  # lists too small: redo exactly
    if len(short):
        sub, sub_sims = exact_topk(X, X[short], k=k + 1)
        for r, row, rs in zip(short, sub, sub_sims, strict=True):
            keep = row != r
            found[r], sims[r] = row[keep][:k], rs[keep][:k]
    order = np.lexsort((found, -sims), axis=1)
    return np.take_along_axis(found, order, 1), np.take_along_axis(sims, order, 1), params


def reference_topk(
    rows: np.ndarray, k: int, search: str = "exact", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` neighbours of every row among the others and their distances,
    recomputed in float64 (as :meth:`RelativeLinks.score` computes them, so that the
    search and the score agree on every pair).

    Parameters
    ----------
    rows : ndarray of shape (n, d)
        Unit rows, ``n > k``.
    k : int
    search : {"exact", "ann"}, default="exact"
        Exact and blockwise, or faiss IVF-flat.
    seed : int, default=0
        Seed of the faiss k-means.

    Returns
    -------
    neighbors : ndarray of shape (n, k), int64
    distances : ndarray of shape (n, k), float64
        ``1 - cos``, clipped at 0; the last column is each row's reference distance.
    """
    if search == "ann":
        nbrs, _, _ = faiss_topk(rows, k=k, seed=seed)
    else:
        nbrs, _ = exact_topk(rows, k=k, desc="relative links: neighbours")
    a = np.repeat(np.arange(len(rows), dtype=np.int64), k)
    return nbrs, pair_distances(rows, rows, a, nbrs.ravel()).reshape(len(rows), k)


def cross_reference_topk(
    test_rows: np.ndarray,
    train_rows: np.ndarray,
    k: int,
    search: str = "exact",
    seed: int = 0,
    *,
    desc: str = "relative leakage: neighbours",
    train_reference: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` training rows of every test row, their distances, and every training
    row's reference distance among the other training rows (the density-relative rule
    across two sets).

    Parameters
    ----------
    test_rows : ndarray of shape (m, d)
    train_rows : ndarray of shape (n, d)
        Unit rows, ``n > k``.
    k : int
    search : {"exact", "ann"}, default="exact"
        The training set's own search (:func:`reference_topk`); the test rows are
        searched exactly.
    seed : int, default=0
    desc : str
        Label of the test rows' progress bar.
    train_reference : ndarray of shape (n,), default=None
        The training rows' reference distances when already known (their own search
        is then skipped).

    Returns
    -------
    neighbors : ndarray of shape (m, k), int64
    distances : ndarray of shape (m, k), float64
        ``1 - cos`` in float64, clipped at 0; the last column is each test row's
        reference distance.
    train_reference : ndarray of shape (n,), float64
        Each training row's distance to its ``k``-th nearest other training row.
    """
    if train_reference is None:
        train_reference = reference_topk(train_rows, k, search, seed)[1][:, -1]
    nbrs, _ = exact_topk(train_rows, test_rows, k=k, desc=desc)
    a = np.repeat(np.arange(len(test_rows), dtype=np.int64), k)
    dist = pair_distances(test_rows, train_rows, a, nbrs.ravel()).reshape(len(test_rows), k)
    return nbrs, dist, train_reference
