"""Shifted and cropped copies: the second, alignment-tolerant stage of the copy search.

A copy moved by a pixel, or cropped by a pixel or two and resized back, is far from
its original in every pixel-wise measure (the wavelet distance of the first stage
included), but it is an *exact* geometric transform of it.  This stage therefore
compares every image with the transformed versions of every other one:

* **Transforms** (:func:`copy_transforms`): the identity; shifts by ``(dy, dx)`` with
  ``|dy|, |dx| <= max_shift``; crops of ``c = 1 .. max_crop`` pixels per axis at every
  offset, resized back to the full size with bilinear interpolation (PIL's
  ``Image.resize(..., BILINEAR)`` convention: the same numbers to float precision).
* **Coarse inner window**: a transform is compared on the inner window that drops
  ``max_shift`` pixels on every side (so the fill of a shifted copy never counts),
  averaged over ``p x p`` blocks (``p = inner size // 12``: 2 for 28-px images with
  1-px shifts, a 13 x 13 grid; 1 with the default 2-px shifts) -- which smooths rounding and resampling noise -- and centred and
  scaled to unit length, so the distance ``1 - x . y`` is one minus Pearson's
  correlation (a uniform change of brightness or contrast does not count).
* **Aligned distance** of two images ``a`` and ``b``: the smallest such distance
  between ``T(a)`` and ``b`` or ``T(b)`` and ``a`` over all transforms ``T``.  A pair
  is linked when it is ``<= threshold`` (default ``0.0005``).  A shifted copy is at
  ``0``; a copy cropped by two pixels and resized back (rounded to uint8) at most
  ``2.6e-5`` on Fashion-MNIST (300 planted), 20 times below the threshold.

The search is exact and never forms an ``n x n`` matrix: the coarse rows are
projected on their 8 main directions (an orthogonal projection never lengthens a
difference), every pair within ``sqrt(2 threshold)`` in the projection is found with
a k-d tree (:class:`scipy.spatial.cKDTree`), and each candidate is then checked on
the full coarse rows; the transforms go into k-d trees of :data:`TREE_TRANSFORMS`
each, one at a time, to bound memory.  Only half of the shifts are searched:
``b = shift(a, s)`` exactly when ``a = shift(b, -s)`` on the inner window, and both
orders are searched.  The default shifts and crops follow the image size
(:func:`default_geometry`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from dcsi._progress import progress
from dcsi._validation import Interval, validate_fields
from dcsi.block_map import BlockMap, available_cpus, local_map, single_thread_blas
from dcsi.exceptions import InvalidParameterError
from dcsi.neighbors import ball_pairs, link_radius, projection_basis

__all__ = [
    "ALIGN_DISTANCE",
    "CROP_SHARE",
    "DEFAULT_ALIGN_THRESHOLD",
    "SHIFT_SHARE",
    "AlignOptions",
    "CopyTransform",
    "aligned_cross_pairs",
    "aligned_distance",
    "aligned_pairs",
    "best_pairs",
    "copy_transforms",
    "default_geometry",
    "grey_levels",
    "skip_reason",
    "transformed_rows",
]

#: Largest aligned distance (1 - correlation of the coarse inner windows after the
#: best transform) of a linked pair.
DEFAULT_ALIGN_THRESHOLD = 5e-4
#: Largest shift of a copy the stage finds, as a share of the shorter side (rounded,
#: at least 1 px): 2 px for 28- and 32-px images, 1 px for 8-px digits.
SHIFT_SHARE = 0.07
#: Largest crop per axis (in total, before the resize back), as a share of the shorter
#: side (rounded, at least 2 px): 4 px at 28 px, 5 px at 32 px, 2 px for 8-px digits.
CROP_SHARE = 0.15
_GRID = 12  # the coarse window has about this many cells per side
#: Transforms per k-d tree of the search (memory: this many x n points of 8 floats).
TREE_TRANSFORMS = 18
#: What the aligned distance is, in the words recorded in results and cards.
ALIGN_DISTANCE = (
    "1 - Pearson correlation of block means of the inner windows after the "
    "best identity, shift or crop-and-resize of either image"
)


def default_geometry(shape: tuple[int, ...]) -> tuple[int, int]:
    """The default ``(max_shift, max_crop)`` for images of ``shape`` ``(h, w, ...)``:
    :data:`SHIFT_SHARE` and :data:`CROP_SHARE` of the shorter side, rounded, at least
    1 and 2 px."""
    side = min(shape[:2])
    return max(1, round(SHIFT_SHARE * side)), max(2, round(CROP_SHARE * side))


@dataclass(frozen=True)
class AlignOptions:
    """Options of the shift- and crop-tolerant stage, shared by redundancy and leakage.

    Attributes
    ----------
    threshold : float, default=0.0005
        Largest aligned distance (:func:`aligned_distance`) of a linked pair, in
        ``[0, 2]``.
    max_shift : int or None, default=None
        Largest shift in pixels (at the analysed size); also the margin of the inner
        window.  None: 7 % of the shorter side, at least 1 (:func:`default_geometry`;
        2 px for 28-px images), fixed by :meth:`resolved` once the size is known.
    max_crop : int or None, default=None
        Largest crop in pixels per axis, resized back.  None: 15 % of the shorter
        side, at least 2 (4 px for 28-px images).
    n_components : int, default=8
        Dimension of the k-d tree's projection.
    block_size : int, default=8192
        Images transformed at a time (memory ``O(block_size * 169)`` floats).
    """

    threshold: float = DEFAULT_ALIGN_THRESHOLD
    max_shift: int | None = None
    max_crop: int | None = None
    n_components: int = 8
    block_size: int = 8192

    #: Declared constraints of each field (checked on creation).
    CONSTRAINTS: ClassVar[dict[str, list[Any]]] = {
        "threshold": [Interval(float, 0.0, 2.0, closed="both")],
        "max_shift": [Interval(int, 0, None, closed="left"), None],
        "max_crop": [Interval(int, 0, None, closed="left"), None],
        "n_components": [Interval(int, 1, None, closed="left")],
        "block_size": [Interval(int, 1, None, closed="left")],
    }

    def __post_init__(self) -> None:
        validate_fields(self, "AlignOptions")

    @classmethod
    def from_arg(cls, align: Any, caller: str) -> AlignOptions | None:
        """The options an ``align`` argument stands for: ``True`` -> the defaults,
        ``False`` -> None, an ``AlignOptions`` as it is (numpy booleans count as
        booleans); anything else is refused in one line naming ``caller``."""
        if isinstance(align, AlignOptions):
            return align
        if isinstance(align, (bool, np.bool_)):
            return cls() if align else None
        raise InvalidParameterError(
            f"The 'align' parameter of {caller} must be True, False or an AlignOptions. "
            f"Got {align!r} instead."
        )

    def resolved(self, shape: tuple[int, ...]) -> AlignOptions:
        """These options with ``max_shift`` / ``max_crop`` left at None fixed for
        images of ``shape`` (:func:`default_geometry`)."""
        shift, crop = default_geometry(shape)
        return replace(
            self,
            max_shift=shift if self.max_shift is None else self.max_shift,
            max_crop=crop if self.max_crop is None else self.max_crop,
        )

    def to_dict(self) -> dict:
        """The card's record of the stage: ``align_threshold``, ``max_shift``,
        ``max_crop``, ``align_distance`` (resolve the options first)."""
        return {
            "align_threshold": self.threshold,
            "max_shift": self.max_shift,
            "max_crop": self.max_crop,
            "align_distance": ALIGN_DISTANCE,
        }


@dataclass(frozen=True)
class CopyTransform:
    """A geometric transform followed by the coarse inner window, as two matrices.

    The coarse window of the transformed image ``x`` (shape ``(h, w)``) is
    ``rows @ x @ cols.T``.

    Attributes
    ----------
    name : str
        ``"identity"``, ``"shift(dy,dx)"`` or ``"crop(c;top,left)"``.
    rows : ndarray of shape (hp, h)
    cols : ndarray of shape (wp, w)
    """

    name: str
    rows: np.ndarray
    cols: np.ndarray


def _shift_matrix(n: int, s: int) -> np.ndarray:
    """``(n, n)``: output pixel ``i`` takes input pixel ``i - s`` (clamped)."""
    M = np.zeros((n, n))
    M[np.arange(n), np.clip(np.arange(n) - s, 0, n - 1)] = 1.0
    return M


def _crop_matrix(n: int, c: int, t: int) -> np.ndarray:
    """``(n, n)``: crop ``n - c`` pixels from ``t`` and resize back to ``n`` (bilinear).

    Output pixel ``i`` samples the input at ``t + (i + 0.5) (n - c) / n - 0.5``,
    clamped to the crop, with linear weights (PIL's convention for enlarging).
    """
    src = np.clip(t + (np.arange(n) + 0.5) * (n - c) / n - 0.5, t, t + n - c - 1)
    i0 = np.minimum(np.floor(src).astype(np.int64), n - 2)
    f = src - i0
    M = np.zeros((n, n))
    M[np.arange(n), i0] += 1.0 - f
    M[np.arange(n), i0 + 1] += f
    return M


def _pool_inner(n: int, margin: int) -> np.ndarray:
    """``(k, n)``: means of ``p``-pixel blocks of the inner window ``[margin, n - margin)``."""
    inner = n - 2 * margin
    p = max(1, inner // _GRID)
    k = inner // p
    P = np.zeros((k, n))
    for i in range(k):
        P[i, margin + i * p : margin + (i + 1) * p] = 1.0 / p
    return P


def skip_reason(shape: tuple[int, ...], max_shift: int | None, max_crop: int | None) -> str | None:
    """Why images of ``shape`` (h, w) are too small for these transforms (None: they fit).

    The inner window must keep at least 2 pixels per side and a crop must leave at
    least 2; callers skip the aligned stage with this message as a warning.  None for
    ``max_shift`` / ``max_crop``: :func:`default_geometry`.
    """
    h, w = shape[:2]
    shift, crop = default_geometry(shape)
    max_shift = shift if max_shift is None else max_shift
    max_crop = crop if max_crop is None else max_crop
    if min(h, w) - 2 * max_shift >= 2 and max_crop < min(h, w) - 1:
        return None
    return (
        f"the {h}x{w} images are too small for the shift/crop-tolerant second "
        f"stage (max_shift={max_shift}, max_crop={max_crop}); it was skipped"
    )


def copy_transforms(
    shape: tuple[int, int],
    *,
    max_shift: int = 1,
    max_crop: int = 2,
    half_shifts: bool = True,
) -> list[CopyTransform]:
    """The transforms of the aligned search for images of one size.

    Parameters
    ----------
    shape : (h, w)
    max_shift : int, default=1
        Shifts ``(dy, dx)`` with ``|dy|, |dx| <= max_shift``; also the margin of the
        inner window.
    max_crop : int, default=2
        Crops of ``1 .. max_crop`` pixels per axis, at every offset, resized back.
    half_shifts : bool, default=True
        Only the shifts after ``(0, 0)`` in lexicographic order (enough when both
        orders of every pair are searched).

    Returns
    -------
    list of CopyTransform
        The identity first.  Built once per argument set and shared: the matrices are
        read-only.
    """
    h, w = shape
    if skip_reason(shape, max_shift, max_crop):
        raise InvalidParameterError(
            f"The 'max_shift' and 'max_crop' parameters of the aligned search must leave "
            f"an inner window of the {h}x{w} images. Got max_shift={max_shift}, "
            f"max_crop={max_crop} instead."
        )
    return list(_built_transforms(int(h), int(w), int(max_shift), int(max_crop), half_shifts))


@functools.lru_cache(maxsize=16)
def _built_transforms(
    h: int, w: int, m: int, max_crop: int, half_shifts: bool
) -> tuple[CopyTransform, ...]:
    """:func:`copy_transforms` of valid arguments, its matrices made read-only."""
    Py, Px = _pool_inner(h, m), _pool_inner(w, m)
    out = [CopyTransform("identity", Py, Px)]
    for dy, dx in itertools.product(range(-m, m + 1), repeat=2):
        if (dy, dx) == (0, 0) or (half_shifts and (dy, dx) < (0, 0)):
            continue
        out.append(
            CopyTransform(f"shift({dy},{dx})", Py @ _shift_matrix(h, dy), Px @ _shift_matrix(w, dx))
        )
    for c in range(1, max_crop + 1):
        for t, left in itertools.product(range(c + 1), repeat=2):
            out.append(
                CopyTransform(
                    f"crop({c};{t},{left})",
                    Py @ _crop_matrix(h, c, t),
                    Px @ _crop_matrix(w, c, left),
                )
            )
    for T in out:
        T.rows.setflags(write=False)
        T.cols.setflags(write=False)
    return tuple(out)


def grey_levels(images: np.ndarray) -> np.ndarray:
    """Float32 grey levels ``(n, h, w)`` (channel mean for colour images)."""
    X = np.asarray(images)
    if X.ndim == 4:
        return X.astype(np.float32).mean(axis=3)
    return X if X.dtype == np.float32 else X.astype(np.float32)


def transformed_rows(images: np.ndarray, transform: CopyTransform) -> np.ndarray:
    """Coarse inner windows of the transformed images, as centred unit rows.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
        Grey levels (colour images: the channel mean).
    transform : CopyTransform

    Returns
    -------
    ndarray of shape (n, hp * wp), float32
        ``1 - F_i . G_j`` is one minus Pearson's correlation (zero rows for constant
        windows).
    """
    X = np.ascontiguousarray(grey_levels(images))
    n, h, w = X.shape
    # the columns as one flat product (n small ones are slower), then the rows
    Y = (X.reshape(n * h, w) @ transform.cols.T.astype(np.float32)).reshape(n, h, -1)
    Z = np.matmul(transform.rows.astype(np.float32), Y).reshape(n, -1)  # (n, hp * wp)
    mean = Z.mean(axis=1, keepdims=True)
    Z -= mean
    nrm = np.linalg.norm(Z, axis=1, keepdims=True)
    # a constant window leaves only float32 rounding noise: a zero row, not a unit one
    flat = nrm <= 1e-5 * np.abs(mean) * np.sqrt(Z.shape[1]) + 1e-12
    np.divide(Z, nrm, out=Z, where=~flat)
    Z[flat[:, 0]] = 0.0
    return Z


def _search(
    A: np.ndarray,
    B: np.ndarray,
    transforms: Sequence[CopyTransform],
    options: AlignOptions,
    seed: int,
    skip_self: bool,
    identity: bool = True,
    map_blocks: BlockMap = local_map,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` with ``1 - T(A_i) . B_j <= threshold`` for some ``T``.

    ``transforms[0]`` is the identity (it gives the ``B`` rows); ``identity=False``
    leaves it out of the ``T`` searched.  One k-d tree holds the projected rows of
    every transform of every ``A`` image (``len(transforms) * n_a`` points of
    ``n_components`` floats); the untransformed ``B`` rows query it, block by block
    through ``map_blocks`` (:func:`_query_block`; results merged in block order).
    Returns ``(pairs (m, 2), distances (m,))``, one entry per qualifying ``(i, j, T)``.
    """
    from scipy.spatial import cKDTree

    threshold, block_size = options.threshold, options.block_size
    base = np.concatenate(
        [
            transformed_rows(B[s : s + block_size], transforms[0])
            for s in range(0, len(B), block_size)
        ]
    )
    basis = projection_basis(base, min(options.n_components, base.shape[1]), seed)
    transforms = transforms if identity else transforms[1:]
    na = len(A)
    out = []
    cpus = available_cpus()
    blocks = range(0, na, block_size)
    bar = progress(total=len(transforms) * len(blocks), desc="aligned transforms", unit="block")
    for c in range(0, len(transforms), TREE_TRANSFORMS):  # one k-d tree per chunk
        chunk = transforms[c : c + TREE_TRANSFORMS]
        # float64, the k-d tree's own type: it keeps this array rather than a copy
        # (the float32 products are stored exactly, so the tree is the same)
        proj = np.empty((len(chunk) * na, basis.shape[1]), dtype=np.float64)
        # one thread per CPU, one BLAS thread each: the products are small
        with single_thread_blas(), ThreadPoolExecutor(cpus) as pool:
            for s in blocks:
                G = grey_levels(A[s : s + block_size])  # once for the chunk's transforms
                views = [proj[k * na + s : k * na + s + len(G)] for k in range(len(chunk))]
                for _ in pool.map(_project, views, [G] * len(chunk), chunk, [basis] * len(chunk)):
                    bar.update(1)
        tree = cKDTree(proj, compact_nodes=False)  # builds in half the time, queries as fast
        shared = (tree, base, basis, A, chunk, link_radius(threshold), threshold, skip_self)
        out += list(map_blocks(_query_block, (*shared, block_size), range(0, len(B), block_size)))
        del proj, tree, shared  # one tree at a time: freed before the next is projected
    bar.close()
    out_p = [p for p, _ in out if len(p)]
    out_d = [d for p, d in out if len(p)]
    if not out_p:
        return np.empty((0, 2), dtype=np.int64), np.empty(0)
    return np.concatenate(out_p), np.concatenate(out_d)


def _project(out: np.ndarray, G: np.ndarray, T: CopyTransform, basis: np.ndarray) -> None:
    """``out[:] = transformed_rows(G, T) @ basis`` (one thread of :func:`_search`)."""
    out[:] = transformed_rows(G, T) @ basis


def _query_block(
    tree: Any,
    base: np.ndarray,
    basis: np.ndarray,
    A: np.ndarray,
    transforms: Sequence[CopyTransform],
    radius: float,
    threshold: float,
    skip_self: bool,
    block_size: int,
    s: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of the query block ``base[s : s + block_size]`` (rows ``j`` of ``B``)
    against the tree of every transform of every ``A`` image, checked on all columns:
    ``(pairs (m, 2), distances (m,))``, transform by transform."""
    na = len(A)
    j, v = ball_pairs(tree, base[s : s + block_size] @ basis, radius)
    j += s
    k, i = np.divmod(v, na)
    if skip_self:
        keep = i != j
        i, j, k = i[keep], j[keep], k[keep]
    out_p, out_d = [np.empty((0, 2), dtype=np.int64)], [np.empty(0)]
    for t in np.unique(k):
        sel = k == t
        it, jt = i[sel], j[sel]
        used, inv = np.unique(it, return_inverse=True)
        V = transformed_rows(A[used], transforms[t])
        d = np.maximum(1.0 - np.einsum("ij,ij->i", V[inv.ravel()], base[jt], dtype=np.float64), 0.0)
        ok = d <= threshold
        out_p.append(np.stack([it[ok], jt[ok]], 1))
        out_d.append(d[ok])
    return np.concatenate(out_p), np.concatenate(out_d)


def best_pairs(pairs: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct pair once, with its smallest distance.

    Parameters
    ----------
    pairs : ndarray of shape (m, 2), int
    dist : ndarray of shape (m,)

    Returns
    -------
    pairs : ndarray of shape (u, 2), int64
        Distinct pairs, sorted.
    distances : ndarray of shape (u,)
    """
    if not len(pairs):
        return np.empty((0, 2), dtype=np.int64), np.empty(0)
    uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
    best = np.full(len(uniq), np.inf)
    np.minimum.at(best, inv.ravel(), dist)
    return uniq.astype(np.int64), best


def aligned_pairs(
    images: np.ndarray,
    *,
    options: AlignOptions | None = None,
    seed: int = 0,
    map_blocks: BlockMap = local_map,
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of one image set within the aligned distance threshold, never n x n.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
    options : AlignOptions, default=None
        Threshold, tolerated shifts and crops, search sizes (``None``: the defaults).
    seed : int, default=0
        Row subsample of the projection basis.
    map_blocks : BlockMap, default=local_map
        Where the query blocks run (:mod:`dcsi.block_map`; the k-d tree and rows are
        shared); the pairs are the same.

    Returns
    -------
    pairs : ndarray of shape (m, 2), int64
        ``i < j``, sorted.
    distances : ndarray of shape (m,)
        Their aligned distances (``<= options.threshold``).
    """
    X = np.asarray(images)  # converted block by block
    options = (AlignOptions() if options is None else options).resolved(X.shape[1:3])
    if len(X) < 2:
        return np.empty((0, 2), dtype=np.int64), np.empty(0)
    assert options.max_shift is not None and options.max_crop is not None  # resolved
    transforms = copy_transforms(
        X.shape[1:3], max_shift=options.max_shift, max_crop=options.max_crop
    )
    p, d = _search(X, X, transforms, options, seed, skip_self=True, map_blocks=map_blocks)
    return best_pairs(np.sort(p, axis=1), d)


def aligned_cross_pairs(
    a_images: np.ndarray,
    b_images: np.ndarray,
    *,
    options: AlignOptions | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (image of ``a``, image of ``b``) within the aligned distance threshold.

    Parameters
    ----------
    a_images : ndarray of shape (n_a, h, w[, c])
    b_images : ndarray of shape (n_b, h, w[, c])
    options, seed
        See :func:`aligned_pairs`.

    Returns
    -------
    pairs : ndarray of shape (m, 2), int64
        ``(index in a, index in b)``, sorted.
    distances : ndarray of shape (m,)
    """
    options = AlignOptions() if options is None else options
    A, B = np.asarray(a_images), np.asarray(b_images)  # converted block by block
    if A.shape[1:] != B.shape[1:]:
        raise InvalidParameterError(
            f"The two image sets of aligned_cross_pairs must have one size; got "
            f"{A.shape[1:]} and {B.shape[1:]}."
        )
    if not len(A) or not len(B):
        return np.empty((0, 2), dtype=np.int64), np.empty(0)
    options = options.resolved(A.shape[1:3])
    assert options.max_shift is not None and options.max_crop is not None  # resolved
    transforms = copy_transforms(
        A.shape[1:3], max_shift=options.max_shift, max_crop=options.max_crop
    )
    p1, d1 = _search(A, B, transforms, options, seed, skip_self=False)
    p2, d2 = _search(B, A, transforms, options, seed, skip_self=False, identity=False)
    return best_pairs(np.concatenate([p1, p2[:, ::-1]]), np.concatenate([d1, d2]))


def aligned_distance(
    images: np.ndarray,
    pairs: np.ndarray,
    *,
    max_shift: int | None = None,
    max_crop: int | None = None,
    block: int = 65536,
) -> np.ndarray:
    """Aligned distance of given pairs of images.

    ``d(a, b) = min over transforms T of min(1 - T(a) . b, 1 - T(b) . a)`` on the
    coarse inner windows (:func:`transformed_rows`), ``T`` running over the identity,
    every shift and every crop of :func:`copy_transforms`.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
    pairs : ndarray of shape (m, 2), int
    max_shift, max_crop : int, default=None
        None: :func:`default_geometry` of the images' size.
    block : int, default=65536
        Pairs compared at a time (bounds the working memory, not the result).

    Returns
    -------
    ndarray of shape (m,), float64
        In ``[0, 2]``; a constant window has correlation 0 with everything.
    """
    X = grey_levels(images)
    opts = AlignOptions(max_shift=max_shift, max_crop=max_crop).resolved(X.shape[1:3])
    assert opts.max_shift is not None and opts.max_crop is not None  # resolved
    max_shift, max_crop = opts.max_shift, opts.max_crop
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    best = np.full(len(pairs), 2.0)
    if not len(pairs):
        return best
    used, inv = np.unique(pairs, return_inverse=True)
    inv = inv.reshape(-1, 2)
    Xu = X[used]
    transforms = copy_transforms(
        X.shape[1:], max_shift=max_shift, max_crop=max_crop, half_shifts=False
    )
    base = transformed_rows(Xu, transforms[0])
    for T in transforms:
        V = transformed_rows(Xu, T)
        for s in range(0, len(inv), block):
            part = inv[s : s + block]
            for a, b in ((0, 1), (1, 0)):
                d = 1.0 - np.einsum("ij,ij->i", V[part[:, a]], base[part[:, b]], dtype=np.float64)
                np.minimum(best[s : s + block], d, out=best[s : s + block])
    return np.clip(best, 0.0, 2.0)
