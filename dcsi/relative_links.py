"""Density-relative links: the copy-search stage whose threshold adapts to the data.

An absolute threshold has one meaning on every dataset, which is its weakness: a copy
blurred, sharpened, median-filtered or sprinkled with impulse noise moves further from
its original than two different garments of Fashion-MNIST sit from each other, and no
single radius links the one without the other.  What sets a copy apart is that it is
far closer to its original than to *anything else*.  This stage therefore measures a
pair against the neighbourhood of its two images, as cleanlab's near-duplicate rule
and Lowe's ratio test do:

* **Coarse rows** (:func:`coarse_rows`): each image in grey levels, *despeckled*
  (:func:`dcsi.despeckling.despeckle`: each pixel clipped to the range of its 8
  neighbours, so an isolated speck of impulse noise takes its neighbours' level while
  lines, edges and every structure wider than one pixel stay), smoothed with a Gaussian of ``sigma`` px
  (1 by default), averaged over 2 x 2 blocks (14 x 14 for a 28-px image, 16 x 16 at
  the 32-px working size), centred and scaled to unit length.  The coarse band
  tolerates blur, noise, sharpening and compression; centring and scaling, a change of
  brightness or contrast.
* **Reference distance** ``r_i``: the coarse distance ``1 - cos`` from image ``i`` to
  its ``k``-th nearest other image (``k = 5``: up to four copies of one image still
  leave a fifth, unrelated neighbour as the reference).
* **Link**: ``a`` and ``b`` are linked when ``d(a, b) <= ratio * min(r_a, r_b)`` and
  ``d(a, b) <= max_distance``: each image must find the other far closer than its own
  neighbourhood (a copy and its original share one neighbourhood; a distorted copy and
  a look-alike in a denser region do not).  Because ``ratio < 1``, every such pair is
  among the ``k - 1`` nearest neighbours of both its images, so an exact top-``k`` search
  (:func:`dcsi.neighbors.exact_topk`, blockwise: never ``n x n``; faiss above the
  search's ``ann_threshold``) finds all of them.

* **Registered distance** (``registered=True``, the default): a copy turned by a few
  degrees, zoomed, squeezed or given a border is far in the coarse rows, whose edges
  and corners it changes most.  Each image's ``candidates`` (10) nearest images by
  the inner window that the registration compares (untransformed; the border is left
  out) are measured again after the best small rotation, scaling, change of aspect or
  further smoothing of either image, or with both images despeckled
  (:func:`dcsi.registration.registered_distance`, on the scale of ``1 - cos``); an
  image's *registered reference* is the ``k``-th smallest of these registered
  distances, and the same rule (same ``ratio``, same ``max_distance``) links an image
  and one of its candidates on them.  A pair is linked when either measure links it.
  With ``zoomed=True`` (the default) and the exact search, each image is also
  measured against the ``k - 1`` nearest windows of its own window scaled by 1/1.2
  (:data:`ZOOM`), of its window turned by -8 degrees (:data:`TURN`) and of its
  recentred window (read about the centre of its content,
  :func:`dcsi.registration.recentred_rows`), against the same registered references:
  a padded, turned or moved copy is rarely among its original's nearest untransformed
  windows.  One direction of each suffices: the search runs
  from every image, so a copy turned the other way is found from the copy's side.
  These searches compare windows on a coarser grid (:data:`SEARCH_GRID`), which is
  cheaper and finds the same copies on the development split.

* **Centred view** (``centred=True``; off by default; :mod:`dcsi.centred_view`): the
  same rule on each image read about the centre of its content, at the content's
  spread: a copy whose content moved by a tenth of the side, was cropped, given a
  wider margin or squeezed is compared in its own frame (an icon drawn at two sizes,
  with different margins, too).

* **Equalised view** (``equalised=True``; off by default; :mod:`dcsi.equalised_view`):
  the same rule on the coarse rows of the histogram-equalised images: a copy whose grey
  levels went through a monotone map (equalisation, a strong gamma, a saturating
  contrast) keeps the order of its levels, which equalisation reads.

* **Halves** (``halves=True``; off by default; :mod:`dcsi.half_views`): the same rule
  on the top, bottom, left and right half of the coarse rows, with a stricter ratio
  (``half_ratio``, 0.1): a copy with a caption or a logo over part of it matches its
  original on the half the edit left alone -- and so do two variants of one drawing.

With ``flips=True`` the left-right and top-bottom mirrors of every image are compared
with the other images by the same rule (:func:`mirrored_rows`): a mirror image then
counts as a copy (by the coarse rows only).

The score :func:`relative_score` is ``<= 1`` exactly for a link (the smallest of the
measures' scores), so that the
complete-linkage refinement of the groups can mix it with the other stages' scores.
The ratio was set on a development split and is scored with copy families held out
(README, "Benchmark: a broad copy family, held out by family").  The despeckling was
chosen there too, over a 3 x 3 median filter that merged icons differing by 1-px lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dcsi._validation import Interval, validate_fields
from dcsi.aligned import best_pairs, grey_levels
from dcsi.centred_view import centred_rows
from dcsi.despeckling import despeckle
from dcsi.equalised_view import equalise
from dcsi.exceptions import InvalidParameterError
from dcsi.half_views import half_cross_links, half_links, half_scores
from dcsi.neighbors import (
    cross_reference_topk,
    exact_topk,
    pair_distances,
    reference_topk,
    unit_rows,
)
from dcsi.registration import (
    MIN_SIDE,
    ROTATIONS,
    SCALES,
    RegisteredWindows,
    moves,
    registered_distance,
    registered_windows,
    transform_windows,
)
from dcsi.relative_rule import relative_score, view_cross_links, view_links

__all__ = [
    "DEFAULT_RATIO",
    "CrossSide",
    "RelativeLinks",
    "RelativeOptions",
    "coarse_rows",
    "cross_side",
    "despeckle",
    "grid_of",
    "mirrored_rows",
    "relative_cross_pairs",
    "relative_links",
    "relative_score",
]

#: Largest ratio of a pair's coarse distance to its images' reference distance.
DEFAULT_RATIO = 0.25
#: The transform whose windows query the zoomed candidates: scaling by ``SCALES[0]``.
ZOOM = moves().index((0.0, SCALES[0], SCALES[0]))
#: The transform whose windows query the turned candidates: rotation by ``ROTATIONS[0]``.
TURN = moves().index((ROTATIONS[0], 1.0, 1.0))
#: Block means per side of the windows that search the zoomed and turned candidates
#: (coarser than the compared windows' :data:`dcsi.registration.GRID`: a fifth of the
#: numbers for a search over every pair of images; the candidates are then measured
#: on the compared windows).
SEARCH_GRID = 6
_CHUNK = 4096  # images smoothed at a time


@dataclass(frozen=True)
class RelativeOptions:
    """Options of the density-relative stage (:mod:`dcsi.relative_links`).

    Attributes
    ----------
    ratio : float, default=0.25
        A pair is linked when its coarse distance is at most ``ratio`` times the smaller
        reference distance of its two images.
    k : int, default=5
        The reference distance of an image is to its ``k``-th nearest other image.
    max_distance : float, default=0.2
        A pair farther than this (coarse ``1 - cos``) is never linked, however sparse
        its neighbourhood.
    sigma : float, default=1.0
        Standard deviation, in pixels of the working size, of the Gaussian smoothing.
    min_images : int, default=20
        Fewer images in a search than this: the stage is skipped (a neighbourhood of a
        handful of images says nothing about density).
    flips : bool, default=False
        Also count mirror images as copies: each image's left-right and top-bottom
        mirrors are compared with the other images by the same rule (augmentation
        leakage; most users do not count a mirror image as the same picture).
    registered : bool, default=True
        Also apply the rule to the registered distance (after the best small rotation,
        scaling or change of aspect, :mod:`dcsi.registration`) of every image and its
        ``candidates`` nearest images by the compared inner window; images under
        ``MIN_SIDE`` (16) px (8-px sklearn digits) are not registered.
    candidates : int, default=10
        Nearest images of each image measured by the registered distance (at least
        ``k`` are).
    despeckle : bool, default=True
        Clip each pixel to the range of its 8 neighbours before the smoothing of the
        coarse rows (:func:`dcsi.despeckling.despeckle`): isolated specks (impulse
        noise), which the Gaussian would spread, go; lines and edges stay.
    halves : bool, default=False
        Also apply the rule to the top, bottom, left and right halves of the coarse
        rows (:mod:`dcsi.half_views`): a copy with a caption or a logo over part of it
        still matches its original on the rest, but so do two variants of one drawing
        (a printer and a printer with a sheet of paper; icons of one theme), which
        is why it is off by default.
    half_ratio : float, default=0.1
        The ratio of the rule on a half.
    half_share : float, default=0.1
        A half links a pair only when it holds at least this share of the variance of
        one of the two images.
    zoomed : bool, default=True
        With the registered distance and the exact search (up to
        :data:`dcsi.neighbors.ANN_THRESHOLD` images by default): also measure each image
        against the ``k - 1`` nearest images of its window scaled by ``SCALES[0]``
        (1/1.2, :data:`ZOOM`), of its window turned by ``ROTATIONS[0]`` (-8 degrees,
        :data:`TURN`) and of its recentred window, the *zoomed, turned and recentred
        candidates*: a padded, turned or moved copy is not among its original's
        nearest untransformed windows.  With
        the faiss search they are skipped: at 10^6 images the zoomed ones alone took
        the audit over 20 minutes.
    centred : bool, default=False
        Also apply the rule to the *centred view* (:mod:`dcsi.centred_view`): each
        image read about the centre of its content, at the content's spread, so a
        copy whose content moved, was cropped, given a wider margin or squeezed is
        compared in its own frame.  Off by default: it found more copies on icon
        themes and clip art, but cost precision on Fashion-MNIST, whose garments
        share one frame (README, "The centred view").
    equalised : bool, default=False
        Also apply the rule to the *equalised view* (:mod:`dcsi.equalised_view`): the
        coarse rows of the histogram-equalised images, so a copy whose grey levels went
        through a monotone map (equalisation, a strong gamma) is compared by the order
        of its levels.  Off by default (README, "The equalised view").
    """

    ratio: float = DEFAULT_RATIO
    k: int = 5
    max_distance: float = 0.2
    sigma: float = 1.0
    min_images: int = 20
    flips: bool = False
    registered: bool = True
    candidates: int = 10
    despeckle: bool = True
    halves: bool = False
    half_ratio: float = 0.1
    half_share: float = 0.1
    zoomed: bool = True
    centred: bool = False
    equalised: bool = False

    CONSTRAINTS: ClassVar[dict[str, list[Any]]] = {
        "ratio": [Interval(float, 0.0, 1.0, closed="neither")],
        "k": [Interval(int, 2, None, closed="left")],
        "max_distance": [Interval(float, 0.0, 2.0, closed="right")],
        "sigma": [Interval(float, 0.0, None, closed="left")],
        "min_images": [Interval(int, 3, None, closed="left")],
        "candidates": [Interval(int, 2, None, closed="left")],
        "half_ratio": [Interval(float, 0.0, 1.0, closed="neither")],
        "half_share": [Interval(float, 0.0, 1.0, closed="both")],
    }

    def __post_init__(self) -> None:
        validate_fields(self, "RelativeOptions")
        for name in (
            "flips",
            "registered",
            "halves",
            "despeckle",
            "zoomed",
            "centred",
            "equalised",
        ):
            if not isinstance(getattr(self, name), bool):
                raise InvalidParameterError(
                    f"The '{name}' parameter of RelativeOptions must be True or False. Got "
                    f"{getattr(self, name)!r} instead."
                )

    @classmethod
    def from_arg(cls, relative: Any, caller: str) -> RelativeOptions | None:
        """``True`` -> the defaults, ``False``/``None`` -> off, a ``RelativeOptions`` as
        it is; anything else is refused in one line naming ``caller``."""
        if relative is True:
            return cls()
        if relative is False or relative is None:
            return None
        if isinstance(relative, RelativeOptions):
            return relative
        raise InvalidParameterError(
            f"The 'relative' parameter of {caller} must be True, False or a RelativeOptions. "
            f"Got {relative!r} instead."
        )

    def skips(self, n: int) -> bool:
        """Whether a search among ``n`` images is too small for the stage."""
        return n < max(self.min_images, self.k + 1)

    def to_dict(self) -> dict[str, Any]:
        """The options as recorded in a card."""
        return {
            "ratio": self.ratio,
            "k": self.k,
            "max_distance": self.max_distance,
            "sigma": self.sigma,
            "flips": self.flips,
            "registered": self.registered,
            "candidates": self.candidates,
            "despeckle": self.despeckle,
            "halves": self.halves,
            "half_ratio": self.half_ratio,
            "half_share": self.half_share,
            "zoomed": self.zoomed,
            "centred": self.centred,
            "equalised": self.equalised,
        }

    def registers(self, shape: tuple[int, ...]) -> bool:
        """Whether images of this shape ``(h, w, ...)`` get the registered distance."""
        return self.registered and min(shape[:2]) >= MIN_SIDE

    def n_candidates(self, n: int) -> int:
        """How many nearest images of each image the registered distance measures in
        a set of ``n`` (at least ``k``, at most ``n - 1``)."""
        return min(max(self.k, self.candidates), n - 1)


def coarse_rows(images: np.ndarray, sigma: float = 1.0, despeckled: bool = False) -> np.ndarray:
    """Smoothed 2 x 2 block means of the images, centred and scaled to unit length.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
        Grey levels (colour: the channel mean); ``h, w >= 2``.
    sigma : float, default=1.0
        Gaussian smoothing in pixels (0: none), applied before the block means.
    despeckled : bool, default=False
        Despeckle the grey levels (:func:`dcsi.despeckling.despeckle`) before the
        smoothing.

    Returns
    -------
    ndarray of shape (n, (h // 2) * (w // 2)), float32
        Unit rows (zero rows for constant images); the block grid is
        ``(h // 2, w // 2)`` (:func:`grid_of`).
    """
    from scipy import ndimage

    X = np.asarray(images)
    n, h, w = X.shape[:3]
    hp, wp = h // 2, w // 2
    out = np.empty((n, hp * wp), dtype=np.float32)
    for s in range(0, n, _CHUNK):
        G = grey_levels(X[s : s + _CHUNK])
        if despeckled:
            G = despeckle(G)
        if sigma > 0:
            G = ndimage.gaussian_filter(G, (0, sigma, sigma), mode="nearest")
        B = G[:, : 2 * hp, : 2 * wp].reshape(len(G), hp, 2, wp, 2).mean(axis=(2, 4))
        Z = B.reshape(len(G), -1)
        Z = Z - Z.mean(axis=1, keepdims=True)
        nrm = np.linalg.norm(Z, axis=1, keepdims=True)
        out[s : s + len(G)] = np.where(nrm > 1e-6, Z / np.maximum(nrm, 1e-6), 0.0)
    return out


def grid_of(shape: tuple[int, ...]) -> tuple[int, int]:
    """The block grid ``(h // 2, w // 2)`` of the coarse rows of images of shape
    ``(h, w, ...)``."""
    return shape[0] // 2, shape[1] // 2


def mirrored_rows(
    images: np.ndarray, sigma: float = 1.0, despeckled: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Coarse rows of the left-right and the top-bottom mirror of every image.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
    sigma : float, default=1.0
    despeckled : bool, default=False

    Returns
    -------
    (ndarray of shape (n, d), ndarray of shape (n, d)), float32
        As :func:`coarse_rows` of ``images[:, :, ::-1]`` and ``images[:, ::-1]``.
    """
    X = np.asarray(images)
    return (
        coarse_rows(X[:, :, ::-1], sigma, despeckled),
        coarse_rows(X[:, ::-1], sigma, despeckled),
    )


def _mirror_candidates(
    rows: np.ndarray, mirrors: tuple[np.ndarray, ...], k: int, *, skip_self: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(a, b)`` with ``b`` among the ``k - 1`` nearest ``rows`` of a mirror of
    image ``a`` (mirror rows ``Q[a]``), and their distances; ``skip_self``: the mirrors
    are of ``rows`` themselves, and ``b == a`` is left out."""
    a_out, b_out, d_out = [], [], []
    m = min(k if skip_self else k - 1, len(rows))
    for Q in mirrors:
        nbrs, _ = exact_topk(rows, Q, k=m, desc="relative links: mirrors")
        a = np.repeat(np.arange(len(Q), dtype=np.int64), m)
        b = nbrs.ravel()
        d = pair_distances(Q, rows, a, b)
        keep = a != b if skip_self else np.ones(len(a), dtype=bool)
        a_out.append(a[keep])
        b_out.append(b[keep])
        d_out.append(d[keep])
    return np.concatenate(a_out), np.concatenate(b_out), np.concatenate(d_out)


def _candidates(
    nbrs: np.ndarray,
    dist: np.ndarray,
    rows: np.ndarray,
    mirrors: tuple[np.ndarray, ...],
    *,
    skip_self: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``(a, b)`` the rule can link, with its distance: ``b`` among the
    ``k - 1`` nearest ``rows`` of query ``a`` (``nbrs``, ``dist`` of shape (m, k)) or of
    one of its mirrors (:func:`_mirror_candidates`)."""
    k = nbrs.shape[1]
    a = np.repeat(np.arange(len(nbrs), dtype=np.int64), k - 1)
    b, d = nbrs[:, :-1].ravel(), dist[:, :-1].ravel()
    if mirrors:
        ma, mb, md = _mirror_candidates(rows, mirrors, k, skip_self=skip_self)
        a, b, d = np.concatenate([a, ma]), np.concatenate([b, mb]), np.concatenate([d, md])
    return a, b, d


@dataclass(frozen=True)
class RelativeLinks:
    """The linked pairs of the relative stage and what scores any other pair.

    Attributes
    ----------
    pairs : ndarray of shape (m, 2), int64
        Linked pairs ``(a, b)``, ``a < b``, sorted.
    rows : ndarray of shape (n, d), float32
        The coarse rows (:func:`coarse_rows`).
    reference : ndarray of shape (n,), float64
        Each image's reference distance (to its ``k``-th nearest other image).
    options : RelativeOptions
    mirrors : tuple of ndarray of shape (n, d), default=()
        With ``options.flips``: :func:`mirrored_rows`.
    registered : RegisteredWindows or None, default=None
        With the registered distance: :func:`dcsi.registration.registered_windows`
        (the images and their identity rows; other transforms computed per pair).
    registered_reference : ndarray of shape (n,) or None, default=None
        Each image's registered reference (the ``k``-th smallest registered distance
        to its candidates).
    candidates : ndarray of shape (n, K) or (n, K + 3 (k - 1)) or None, default=None
        Each image's nearest images by the untransformed inner window, then (with
        ``options.zoomed`` and the exact search) its ``k - 1`` zoomed, ``k - 1``
        turned and ``k - 1`` recentred candidates: the pairs the registered distance links (a pair of two
        images neither of which is among the other's is not).
    half_reference : ndarray of shape (n, len(HALVES)) or None, default=None
        With ``options.halves``: each image's reference distance by each half
        (:func:`dcsi.half_views.half_links`).
    grid : (int, int), default=(0, 0)
        The block grid of ``rows`` (:func:`grid_of`).
    views : tuple of (ndarray of shape (n, q), ndarray of shape (n,)), default=()
        The rows and reference distances of each one-row view the options turn on:
        the centred view (:func:`dcsi.centred_view.centred_rows`), then the equalised
        view (:func:`coarse_rows` of :func:`dcsi.equalised_view.equalise`).
    """

    pairs: np.ndarray
    rows: np.ndarray
    reference: np.ndarray
    options: RelativeOptions
    mirrors: tuple[np.ndarray, ...] = ()
    registered: RegisteredWindows | None = None
    registered_reference: np.ndarray | None = None
    candidates: np.ndarray | None = None
    half_reference: np.ndarray | None = None
    grid: tuple[int, int] = (0, 0)
    views: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    def score(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """:func:`relative_score` of the pairs ``(a[i], b[i])``: ``<= 1`` for a link
        (with flips, of the closest of the pair and the mirrors of ``a``; with the
        registered distance or the halves, the smallest of the measures' scores)."""
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        d = pair_distances(self.rows, self.rows, a, b)
        for Q in self.mirrors:
            d = np.minimum(d, pair_distances(Q, self.rows, a, b))
        s = relative_score(d, self.reference[a], self.reference[b], self.options)
        R, ref, C = self.registered, self.registered_reference, self.candidates
        if R is not None and ref is not None and C is not None:
            near = (C[a] == b[:, None]).any(axis=1) | (C[b] == a[:, None]).any(axis=1)
            na, nb = a[near], b[near]  # only candidate pairs are registered
            r = relative_score(registered_distance(R, R, na, nb), ref[na], ref[nb], self.options)
            s[near] = np.minimum(s[near], r)
        H = self.half_reference
        if H is not None:
            h = half_scores(self.rows[a], self.rows[b], H[a], H[b], self.grid, self.options)
            s = np.minimum(s, h)
        for V, vref in self.views:
            d = pair_distances(V, V, a, b)
            s = np.minimum(s, relative_score(d, vref[a], vref[b], self.options))
        return s


def _view_rows(images: np.ndarray, options: RelativeOptions) -> list[np.ndarray]:
    """The rows of each one-row view the options turn on: the centred view, then the
    equalised view (each of shape (n, q))."""
    views = []
    if options.centred:
        views.append(centred_rows(images, options.sigma))
    if options.equalised:
        views.append(coarse_rows(equalise(images), options.sigma, options.despeckle))
    return views


def _search_windows(R: RegisteredWindows) -> tuple[np.ndarray, ...]:
    """The windows the zoomed, turned and recentred searches compare, on the coarser
    :data:`SEARCH_GRID`: untransformed, under :data:`ZOOM`, under :data:`TURN`, and the
    recentred windows pooled (each of shape (n, q'))."""
    return (
        *(transform_windows(R.images, R.sigma, t, SEARCH_GRID) for t in (0, ZOOM, TURN)),
        _pooled(R.recentred),
    )


def _transformed_candidates(
    Q: tuple[np.ndarray, ...],
    B: tuple[np.ndarray, ...],
    m: int,
    *,
    skip_self: bool,
) -> np.ndarray:
    """The ``m`` nearest images of ``B`` (exact search) of each image of ``Q`` under
    :data:`ZOOM`, then under :data:`TURN`, by windows on the coarser
    :data:`SEARCH_GRID`, then by the recentred windows (itself left out with
    ``skip_self``); ``Q`` and ``B`` are :func:`_search_windows`; shape (q, 3 m)."""
    searches = [(B[0], Q[1], "zoomed"), (B[0], Q[2], "turned"), (B[3], Q[3], "recentred")]
    out = []
    for X, Z, what in searches:
        nb, _ = exact_topk(X, Z, k=m + 1 if skip_self else m, desc=f"relative links: {what}")
        if skip_self:
            drop = nb == np.arange(len(nb))[:, None]
            drop[~drop.any(axis=1), -1] = True  # itself not found: drop the last
            nb = nb[~drop].reshape(len(nb), m)
        out.append(nb)
    return np.concatenate(out, axis=1)


def _pooled(rows: np.ndarray) -> np.ndarray:
    """Square ``g x g`` windows of shape (n, g * g) averaged over 2 x 2 points (a tail
    left out), centred unit rows of shape (n, (g // 2) ** 2), float32: the coarser
    grid of the recentred search."""
    g = math.isqrt(rows.shape[1])
    h = g // 2
    if h < 2:
        return rows
    Z = rows.reshape(len(rows), g, g)[:, : 2 * h, : 2 * h]
    Z = Z.reshape(len(rows), h, 2, h, 2).mean(axis=(2, 4)).reshape(len(rows), -1)
    Z = Z - Z.mean(axis=1, keepdims=True)
    return unit_rows(Z, np.float32)


def _registered_scores(
    A: RegisteredWindows,
    B: RegisteredWindows,
    a: np.ndarray,
    b: np.ndarray,
    ref_a: np.ndarray,
    ref_b: np.ndarray,
    options: RelativeOptions,
) -> np.ndarray:
    """The registered scores of the pairs ``(a[i], b[i])`` (rows of ``A``, ``B``)
    against the registered references, shape (m,)."""
    return relative_score(registered_distance(A, B, a, b), ref_a[a], ref_b[b], options)


def _registered_reference(
    A: RegisteredWindows, B: RegisteredWindows, nbrs: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Registered distances of every image ``i`` of ``A`` to its candidates
    ``B[nbrs[i]]``, shape (m, K), and each image's ``k``-th smallest of them."""
    m, K = nbrs.shape
    a = np.repeat(np.arange(m, dtype=np.int64), K)
    d = registered_distance(A, B, a, nbrs.ravel()).reshape(m, K)
    return d, np.sort(d, axis=1)[:, k - 1]


def relative_links(
    images: np.ndarray,
    options: RelativeOptions | None = None,
    *,
    search: str = "exact",
    seed: int = 0,
) -> RelativeLinks | None:
    """Every pair linked by the density-relative rule.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
        The images at the working size.
    options : RelativeOptions, default=None
        None: the defaults.
    search : {"exact", "ann"}, default="exact"
        The top-``k`` search: exact and blockwise, or faiss IVF-flat (large ``n``).
    seed : int, default=0
        Seed of the faiss k-means.

    Returns
    -------
    RelativeLinks or None
        None when there are fewer than ``options.min_images`` images.
    """
    options = options or RelativeOptions()
    if options.skips(len(images)):
        return None
    k = options.k
    rows = coarse_rows(images, options.sigma, options.despeckle)
    grid = grid_of(images.shape[1:])
    nbrs, dist = reference_topk(rows, k, search, seed)
    reference = dist[:, -1]
    mirrors = mirrored_rows(images, options.sigma, options.despeckle) if options.flips else ()
    a, b, d = _candidates(nbrs, dist, rows, mirrors, skip_self=True)
    keep = relative_score(d, reference[a], reference[b], options) <= 1.0
    pairs = np.stack([a[keep], b[keep]], axis=1)
    R = rref = near = None
    if options.registers(images.shape[1:]):
        R = registered_windows(images, options.sigma)
        K = options.n_candidates(len(rows))
        near = reference_topk(R.identity, K, search, seed)[0]
        rd, rref = _registered_reference(R, R, near, k)
        a = np.repeat(np.arange(len(near), dtype=np.int64), K)
        b = near.ravel()
        keep = relative_score(rd.ravel(), rref[a], rref[b], options) <= 1.0
        pairs = np.concatenate([pairs, np.stack([a[keep], b[keep]], axis=1)])
        if options.zoomed and search != "ann":
            W = _search_windows(R)
            zn = _transformed_candidates(W, W, k - 1, skip_self=True)
            za, zb = np.repeat(np.arange(len(zn), dtype=np.int64), zn.shape[1]), zn.ravel()
            keep = _registered_scores(R, R, za, zb, rref, rref, options) <= 1.0
            pairs = np.concatenate([pairs, np.stack([za[keep], zb[keep]], axis=1)])
            near = np.concatenate([near, zn], axis=1)
    href = None
    if options.halves:
        hpairs, href = half_links(rows, grid, options, search=search, seed=seed)
        pairs = np.concatenate([pairs, hpairs])
    views = []
    for V in _view_rows(images, options):
        vpairs, vref = view_links(V, options, search=search, seed=seed)
        pairs = np.concatenate([pairs, vpairs])
        views.append((V, vref))
    pairs = np.sort(pairs, axis=1)
    pairs = np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)
    return RelativeLinks(
        pairs=pairs,
        rows=rows,
        reference=reference,
        options=options,
        mirrors=mirrors,
        registered=R,
        registered_reference=rref,
        candidates=near,
        half_reference=href,
        grid=grid,
        views=tuple(views),
    )


@dataclass(frozen=True, eq=False)
class CrossSide:
    """What :func:`relative_cross_pairs` reads of the training images, computed once
    (:func:`cross_side`) for any number of calls with new test images.

    Attributes
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
        The training images at the working size.
    options : RelativeOptions
    rows : ndarray of shape (n, d), float32
        Their coarse rows.
    reference : ndarray of shape (n,), float64
        Each one's coarse reference distance among the training images.
    windows : RegisteredWindows or None
        With the registered distance.
    registered_reference : ndarray of shape (n,), float64, or None
        Each one's registered reference among the training images.
    searched : tuple of ndarray
        The windows of the zoomed, turned and recentred searches (with
        ``options.zoomed`` and the exact search; else empty).
    search : {"exact", "ann"}
    seed : int
    """

    images: np.ndarray
    options: RelativeOptions
    rows: np.ndarray
    reference: np.ndarray
    windows: RegisteredWindows | None
    registered_reference: np.ndarray | None
    searched: tuple[np.ndarray, ...]
    search: str = "exact"
    seed: int = 0


def cross_side(
    train_images: np.ndarray,
    options: RelativeOptions | None = None,
    *,
    search: str = "exact",
    seed: int = 0,
    train_reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> CrossSide:
    """What :func:`relative_cross_pairs` reads of the training images, computed once.

    Parameters
    ----------
    train_images : ndarray of shape (n, h, w) or (n, h, w, c)
        At the working size.
    options : RelativeOptions, default=None
    search : {"exact", "ann"}, default="exact"
        The training set's own top-``k`` searches.
    seed : int, default=0
        Seed of the faiss k-means.
    train_reference : (coarse, registered), default=None
        The training images' reference distances when already known, each of shape
        (n,): :attr:`RelativeLinks.reference` and
        :attr:`RelativeLinks.registered_reference` of ``relative_links(train_images,
        options, search=search, seed=seed)`` (the neighbour index keeps them).  Their
        own searches are then skipped; the result is the same.

    Returns
    -------
    CrossSide
    """
    options = options or RelativeOptions()
    train_images = np.asarray(train_images)
    k = options.k
    known = (None, None) if train_reference is None else train_reference
    rows = coarse_rows(train_images, options.sigma, options.despeckle)
    reference = known[0]
    if reference is None:
        reference = reference_topk(rows, k, search, seed)[1][:, -1]
    R = rref = None
    searched: tuple[np.ndarray, ...] = ()
    if options.registers(train_images.shape[1:]):
        R = registered_windows(train_images, options.sigma)
        rref = known[1]
        if rref is None:
            near = reference_topk(R.identity, options.n_candidates(len(rows)), search, seed)[0]
            rref = _registered_reference(R, R, near, k)[1]
        if options.zoomed and search != "ann":
            searched = _search_windows(R)
    return CrossSide(
        images=train_images,
        options=options,
        rows=rows,
        reference=np.asarray(reference, np.float64),
        windows=R,
        registered_reference=None if rref is None else np.asarray(rref, np.float64),
        searched=searched,
        search=search,
        seed=seed,
    )


def relative_cross_pairs(
    test_images: np.ndarray,
    train_images: np.ndarray | CrossSide,
    options: RelativeOptions | None = None,
    *,
    search: str = "exact",
    seed: int = 0,
    train_reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Test images linked to a training image by the density-relative rule (leakage).

    A training image's reference distance is to its ``k``-th nearest other training
    image; a test image's, to its ``k``-th nearest training image.  A (test, train)
    pair is linked when its coarse distance is ``<= ratio`` times the smaller of the
    two and ``<= max_distance``.

    Parameters
    ----------
    test_images : ndarray of shape (m, h, w) or (m, h, w, c)
    train_images : ndarray of shape (n, h, w) or (n, h, w, c), or CrossSide
        Both at one working size; or :func:`cross_side` of the training images (its
        options, search and seed are then used, and the three parameters below
        ignored), to search many test sets against them at the cost of one.
    options : RelativeOptions, default=None
    search : {"exact", "ann"}, default="exact"
        The training set's own top-``k`` search (the test queries are searched exactly).
    seed : int, default=0
    train_reference : (coarse, registered), default=None
        As in :func:`cross_side`.

    Returns
    -------
    (pairs, scores) or None
        ``pairs`` of shape (p, 2): ``(test index, train index)``; ``scores`` of shape
        (p,): the relative scores (``<= 1``).  None when the training set has fewer
        than ``options.min_images`` images.
    """
    if isinstance(train_images, CrossSide):
        side: CrossSide | None = train_images
        options, train = train_images.options, train_images.images
    else:
        side, options, train = None, options or RelativeOptions(), np.asarray(train_images)
    if options.skips(len(train)) or not len(test_images):
        return None
    if side is None:
        side = cross_side(train, options, search=search, seed=seed, train_reference=train_reference)
    search, seed = side.search, side.seed
    k = options.k
    tr, ref_tr = side.rows, side.reference
    te = coarse_rows(test_images, options.sigma, options.despeckle)
    nbrs, dist, _ = cross_reference_topk(te, tr, k, search, seed, train_reference=ref_tr)
    ref_te = dist[:, -1]
    mirrors = mirrored_rows(test_images, options.sigma, options.despeckle) if options.flips else ()
    a, b, d = _candidates(nbrs, dist, tr, mirrors, skip_self=False)
    s = relative_score(d, ref_te[a], ref_tr[b], options)
    R_tr, rref_tr = side.windows, side.registered_reference
    if R_tr is not None and rref_tr is not None:
        K = options.n_candidates(len(tr))
        R_te = registered_windows(test_images, options.sigma)
        near, _ = exact_topk(R_tr.identity, R_te.identity, k=K, desc="relative leakage: registered")
        rd, rref_te = _registered_reference(R_te, R_tr, near, k)
        pair_a = np.repeat(np.arange(len(te), dtype=np.int64), K)
        rs = relative_score(rd.ravel(), rref_te[pair_a], rref_tr[near.ravel()], options)
        a = np.concatenate([a, pair_a])
        b = np.concatenate([b, near.ravel()])
        s = np.concatenate([s, rs])
        if side.searched:  # test windows zoomed, and the reverse
            W_te = _search_windows(R_te)
            m_te, m_tr = min(k - 1, len(te)), k - 1
            zt = _transformed_candidates(W_te, side.searched, m_tr, skip_self=False)
            zr = _transformed_candidates(side.searched, W_te, m_te, skip_self=False)
            for za, zb in (
                (np.repeat(np.arange(len(te), dtype=np.int64), zt.shape[1]), zt.ravel()),
                (zr.ravel(), np.repeat(np.arange(len(tr), dtype=np.int64), zr.shape[1])),
            ):
                zs = _registered_scores(R_te, R_tr, za, zb, rref_te, rref_tr, options)
                a, b, s = np.concatenate([a, za]), np.concatenate([b, zb]), np.concatenate([s, zs])
    if options.halves:
        ha, hb, hs = half_cross_links(
            te, tr, grid_of(train.shape[1:]), options, search=search, seed=seed
        )
        a, b, s = np.concatenate([a, ha]), np.concatenate([b, hb]), np.concatenate([s, hs])
    for te_v, tr_v in zip(_view_rows(test_images, options), _view_rows(train, options)):
        va, vb, vs = view_cross_links(
            te_v, tr_v, options, search=search, seed=seed, desc="relative leakage: a view"
        )
        a, b, s = np.concatenate([a, va]), np.concatenate([b, vb]), np.concatenate([s, vs])
    keep = s <= 1.0
    pairs, scores = best_pairs(np.stack([a[keep], b[keep]], axis=1), s[keep])
    return pairs, scores
