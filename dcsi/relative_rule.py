"""The density-relative rule of the copy search, shared by its views.

A pair of images is linked when its distance is at most ``ratio`` times the smaller
reference distance of its two images (each image's distance to its ``k``-th nearest
other image by the same measure) and at most ``max_distance``.  The whole-image coarse
rows and the registered distance (:mod:`dcsi.relative_links`), the halves
(:mod:`dcsi.half_views`) and the index's pixel check (:mod:`dcsi.copy_verification`)
all apply this one rule; the halves with their own, stricter ratio.  A view that is
one row per image (the centred view, the equalised view) links pairs with
:func:`view_links` and, for leakage, :func:`view_cross_links`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dcsi.neighbors import cross_reference_topk, reference_topk

if TYPE_CHECKING:
    from dcsi.relative_links import RelativeOptions

__all__ = ["relative_score", "view_cross_links", "view_links"]


def relative_score(
    d: np.ndarray,
    ref_a: np.ndarray,
    ref_b: np.ndarray,
    options: RelativeOptions,
    *,
    ratio: float | None = None,
) -> np.ndarray:
    """The relative score of pairs: ``d / (ratio * min(ref_a, ref_b))``, ``inf`` beyond
    ``max_distance``; ``0`` for identical rows.

    Parameters
    ----------
    d : ndarray of shape (m,)
        Distances ``1 - cos`` of the pairs.
    ref_a, ref_b : ndarray of shape (m,)
        Reference distances of their two images.
    options : RelativeOptions
        ``ratio`` and ``max_distance`` are used.
    ratio : float, default=None
        The ratio of the rule; None: ``options.ratio`` (the halves pass
        ``options.half_ratio``).

    Returns
    -------
    ndarray of shape (m,), float64
        ``<= 1`` exactly for a linked pair.
    """
    d = np.asarray(d, dtype=np.float64)
    ref = (options.ratio if ratio is None else ratio) * np.minimum(ref_a, ref_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(d <= 0.0, 0.0, d / ref)
    return np.where(d <= options.max_distance, s, np.inf)


def view_links(
    rows: np.ndarray, options: RelativeOptions, *, search: str = "exact", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of images the rule links on one view of them (its own rows).

    Parameters
    ----------
    rows : ndarray of shape (n, q)
        The view's unit rows (:func:`dcsi.centred_view.centred_rows`,
        :func:`dcsi.relative_links.coarse_rows` of
        :func:`dcsi.equalised_view.equalise`), ``n > options.k``.
    options : RelativeOptions
        ``ratio``, ``k`` and ``max_distance`` are used.
    search : {"exact", "ann"}, default="exact"
    seed : int, default=0
        Seed of the faiss k-means.

    Returns
    -------
    pairs : ndarray of shape (m, 2), int64
        Linked pairs ``(a, b)`` (either order, possibly repeated).
    reference : ndarray of shape (n,), float64
        Each image's reference distance by this view.
    """
    k = options.k
    nbrs, dist = reference_topk(rows, k, search, seed)
    reference = dist[:, -1]
    a = np.repeat(np.arange(len(rows), dtype=np.int64), k - 1)
    b = nbrs[:, :-1].ravel()
    s = relative_score(dist[:, :-1].ravel(), reference[a], reference[b], options)
    keep = (s <= 1.0) & (a != b)
    return np.stack([a[keep], b[keep]], axis=1), reference


def view_cross_links(
    test_rows: np.ndarray,
    train_rows: np.ndarray,
    options: RelativeOptions,
    *,
    search: str = "exact",
    seed: int = 0,
    desc: str = "relative leakage: a view",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate (test, train) pairs on one view and their scores (leakage).

    A training image's reference distance is to its ``k``-th nearest other training
    image, a test image's to its ``k``-th nearest training image, as for the coarse
    rows (:func:`dcsi.relative_links.relative_cross_pairs`).

    Parameters
    ----------
    test_rows : ndarray of shape (m, q)
    train_rows : ndarray of shape (n, q)
        The view's rows of both sets, ``n > options.k``.
    options : RelativeOptions
    search : {"exact", "ann"}, default="exact"
        The training set's own search (the test images are searched exactly).
    seed : int, default=0
    desc : str, default="relative leakage: a view"
        The progress bar's label.

    Returns
    -------
    a, b : ndarray of shape (p,), int64
        Test and training rows of each candidate pair.
    scores : ndarray of shape (p,), float64
        Their relative scores (``<= 1``: linked).
    """
    k = options.k
    nbrs, dist, ref_tr = cross_reference_topk(test_rows, train_rows, k, search, seed, desc=desc)
    a = np.repeat(np.arange(len(test_rows), dtype=np.int64), k)
    b = nbrs.ravel()
    return a, b, relative_score(dist.ravel(), dist[a, -1], ref_tr[b], options)
