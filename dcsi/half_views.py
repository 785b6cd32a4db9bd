"""Half views: a copy whose edit covers part of the image still matches on the rest.

A caption, a banner, a watermark or a damaged strip changes one part of an image and
leaves the rest as it was.  Over the whole image such a copy can sit farther from its
original than two different images of a dense dataset sit from each other, so the
density-relative rule of :mod:`dcsi.relative_links` misses it; over the half that the
edit did not touch, it is as close as an untouched copy.  This module applies the same
rule to four halves of the coarse rows: the top, bottom, left and right half of the
block grid (the middle row or column belongs to both halves when the side is odd).

* **Half rows** (:func:`half_rows`): the half of each coarse row (the grid of
  :func:`dcsi.relative_links.coarse_rows`), centred and scaled to unit length again.
  Because a coarse row is an affine function of the grid, this equals the half of the
  grid itself normalised, so the half rows are derived from the coarse rows and never
  stored.
* **Share**: the part of the image's variance (of the centred, unit coarse row) that
  the half holds.  A pair whose half holds less than ``half_share`` of the variance of
  both its images (two flat margins, two plain skies) is not linked by that half: the
  unit rows of nearly flat halves are mostly noise.  One image is enough: a caption
  over the other half of a copy takes most of the copy's variance, not its original's.
* **Rule**: as in :mod:`dcsi.relative_links`, with each half's own reference distance
  (to the ``k``-th nearest other image by that half) and the stricter ``half_ratio``
  (0.1 by default, against the whole image's 0.25): half an image carries less
  evidence than all of it.  A pair is linked when some half links it.

The halves are off by default (``RelativeOptions(halves=True)``, ``--halves``): two
variants of one drawing share a half as well (a printer, and a printer with a sheet of
paper; the arrows ``go-down`` and ``go-bottom``), and in pixels an emblem over an icon is
the same edit as a caption over a photo.  On the tango icon theme they lower the
search's precision from 0.886 to 0.720.

The views, the ratio and the share were chosen on the development split of the copy
benchmark (Fashion-MNIST test, every copy family visible, after the overlay family's
text captions were seen to be missed); the README, "Benchmark: a broad copy family,
held out by family", reports them on data and families they were not chosen on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dcsi.neighbors import cross_reference_topk, pair_distances, reference_topk
from dcsi.relative_rule import relative_score

if TYPE_CHECKING:
    from dcsi.relative_links import RelativeOptions

__all__ = [
    "HALVES",
    "half_cross_links",
    "half_links",
    "half_rows",
    "half_scores",
]

#: The halves of the block grid compared, in the order of the reference columns.
HALVES = ("top", "bottom", "left", "right")
_CHUNK = 65536  # rows normalised at a time


def _window(grid: tuple[int, int], half: str) -> tuple[slice, slice]:
    """Rows and columns of the block grid that a half covers."""
    gh, gw = grid
    mh, mw = (gh + 1) // 2, (gw + 1) // 2
    return {
        "top": (slice(0, mh), slice(0, gw)),
        "bottom": (slice(gh - mh, gh), slice(0, gw)),
        "left": (slice(0, gh), slice(0, mw)),
        "right": (slice(0, gh), slice(gw - mw, gw)),
    }[half]


def half_rows(rows: np.ndarray, grid: tuple[int, int], half: str) -> tuple[np.ndarray, np.ndarray]:
    """One half of every coarse row, centred and scaled to unit length.

    Parameters
    ----------
    rows : ndarray of shape (n, gh * gw)
        Centred unit coarse rows (:func:`dcsi.relative_links.coarse_rows`).
    grid : (int, int)
        The block grid ``(gh, gw)`` of the rows.
    half : {"top", "bottom", "left", "right"}

    Returns
    -------
    rows : ndarray of shape (n, q), float32
        Unit rows of the half (zero rows for a constant half).
    share : ndarray of shape (n,), float64
        The share of each row's variance that the half holds, in [0, 1].
    """
    rs, cs = _window(grid, half)
    n = len(rows)
    G = np.asarray(rows).reshape(n, grid[0], grid[1])
    q = (rs.stop - rs.start) * (cs.stop - cs.start)
    out = np.empty((n, q), dtype=np.float32)
    share = np.empty(n, dtype=np.float64)
    for s in range(0, n, _CHUNK):
        Z = G[s : s + _CHUNK, rs, cs].reshape(-1, q).astype(np.float64)
        Z -= Z.mean(axis=1, keepdims=True)
        sq = np.einsum("ij,ij->i", Z, Z)
        nrm = np.sqrt(sq)[:, None]
        out[s : s + len(Z)] = np.where(nrm > 1e-6, Z / np.maximum(nrm, 1e-6), 0.0)
        share[s : s + len(Z)] = np.minimum(sq, 1.0)
    return out, share


def _scores(
    d: np.ndarray,
    ref_a: np.ndarray,
    ref_b: np.ndarray,
    share_a: np.ndarray,
    share_b: np.ndarray,
    options: RelativeOptions,
) -> np.ndarray:
    """The half rule's score of pairs: :func:`dcsi.relative_rule.relative_score` with
    ``half_ratio``, ``inf`` when neither image's half holds ``half_share``."""
    s = relative_score(d, ref_a, ref_b, options, ratio=options.half_ratio)
    return np.where(np.maximum(share_a, share_b) >= options.half_share, s, np.inf)


def half_links(
    rows: np.ndarray,
    grid: tuple[int, int],
    options: RelativeOptions,
    *,
    search: str = "exact",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of images that some half links.

    Parameters
    ----------
    rows : ndarray of shape (n, gh * gw)
        Centred unit coarse rows, ``n > options.k``.
    grid : (int, int)
    options : RelativeOptions
        ``k``, ``half_ratio``, ``half_share`` and ``max_distance`` are used.
    search : {"exact", "ann"}, default="exact"
    seed : int, default=0
        Seed of the faiss k-means.

    Returns
    -------
    pairs : ndarray of shape (m, 2), int64
        Linked pairs ``(a, b)`` (either order, possibly repeated).
    reference : ndarray of shape (n, len(HALVES)), float64
        Each image's reference distance by each half.
    """
    k = options.k
    reference = np.empty((len(rows), len(HALVES)), dtype=np.float64)
    found = []
    for j, half in enumerate(HALVES):
        H, share = half_rows(rows, grid, half)
        nbrs, dist = reference_topk(H, k, search, seed)
        reference[:, j] = dist[:, -1]
        a = np.repeat(np.arange(len(H), dtype=np.int64), k - 1)
        b = nbrs[:, :-1].ravel()
        s = _scores(
            dist[:, :-1].ravel(), reference[a, j], reference[b, j], share[a], share[b], options
        )
        keep = (s <= 1.0) & (a != b)
        found.append(np.stack([a[keep], b[keep]], axis=1))
    return np.concatenate(found), reference


def half_scores(
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    ref_a: np.ndarray,
    ref_b: np.ndarray,
    grid: tuple[int, int],
    options: RelativeOptions,
) -> np.ndarray:
    """The best half score of pairs (``<= 1`` exactly for a pair some half links).

    Parameters
    ----------
    rows_a, rows_b : ndarray of shape (m, gh * gw)
        The coarse rows of the pairs' two images.
    ref_a, ref_b : ndarray of shape (m, len(HALVES))
        Their reference distances by each half.
    grid : (int, int)
    options : RelativeOptions

    Returns
    -------
    ndarray of shape (m,), float64
    """
    best = np.full(len(rows_a), np.inf)
    every = np.arange(len(rows_a), dtype=np.int64)
    for j, half in enumerate(HALVES):
        Ha, sa = half_rows(rows_a, grid, half)
        Hb, sb = half_rows(rows_b, grid, half)
        d = pair_distances(Ha, Hb, every, every)
        best = np.minimum(best, _scores(d, ref_a[:, j], ref_b[:, j], sa, sb, options))
    return best


def half_cross_links(
    test_rows: np.ndarray,
    train_rows: np.ndarray,
    grid: tuple[int, int],
    options: RelativeOptions,
    *,
    search: str = "exact",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test images that some half links to a training image (leakage).

    A training image's half reference is to its ``k``-th nearest other training image
    by that half; a test image's, to its ``k``-th nearest training image.

    Parameters
    ----------
    test_rows : ndarray of shape (m, gh * gw)
    train_rows : ndarray of shape (n, gh * gw)
        Centred unit coarse rows, ``n > options.k``.
    grid : (int, int)
    options : RelativeOptions
    search : {"exact", "ann"}, default="exact"
        The training set's own search (the test queries are searched exactly).
    seed : int, default=0

    Returns
    -------
    test : ndarray of shape (p,), int64
    train : ndarray of shape (p,), int64
    scores : ndarray of shape (p,), float64
        The linked (test, train) pairs and their half scores (``<= 1``).
    """
    k = options.k
    out_a, out_b, out_s = [], [], []
    for half in HALVES:
        Htr, str_ = half_rows(train_rows, grid, half)
        Hte, ste = half_rows(test_rows, grid, half)
        nbrs, dist, ref_tr = cross_reference_topk(
            Hte, Htr, k, search, seed, desc=f"relative leakage: {half} halves"
        )
        a = np.repeat(np.arange(len(Hte), dtype=np.int64), k)
        b = nbrs.ravel()
        s = _scores(dist.ravel(), dist[a, -1], ref_tr[b], ste[a], str_[b], options)
        keep = s <= 1.0
        out_a.append(a[keep])
        out_b.append(b[keep])
        out_s.append(s[keep])
    return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_s)
