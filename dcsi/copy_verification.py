"""Pixel checks of neighbours: an image's copies, or its pixel-closest look-alike, first.

CNN features rank images by what they show, so a copy of an image that was
re-encoded, sprinkled with noise, blurred, recoloured, shifted or cropped can rank
below a different image that shows the same kind of thing (two plain trousers, two
folder icons).  The pixels tell those cases apart.  The neighbour index
(:mod:`dcsi.neighbor_index`) checks them in two stages, both *density-relative*, as
the copy search's third stage (:mod:`dcsi.relative_links`) is: a pair counts only when
it is far closer than the images' own neighbourhood, so no absolute radius is fitted
to one dataset.

1. **Coarse colour rows, over all images** (:class:`PixelCheck`).  Each image is
   stretched to :data:`VERIFY_SIZE` px square (a *thumbnail*, kept in the index); each
   of R, G and B is smoothed by a Gaussian of 1 px, averaged over 2 x 2 blocks,
   centred and scaled (:func:`dcsi.relative_links.coarse_rows`), and the three are put
   side by side at unit length (:func:`colour_rows`).  Image ``b`` is a *verified
   copy* of ``a`` when their distance ``1 - cos`` is at most ``ratio`` (0.25) times the
   smaller of their two reference distances (each image's distance to its 5th nearest
   other image) and at most ``max_distance`` (0.2): the copy search's rule and numbers,
   unchanged.  Colour, not grey: two icons that differ only in colour are not copies.
2. **Aligned pixels, within the CNN's shortlist** (:func:`aligned_copies`).  Each
   image is compared with its :data:`SHORTLIST` (10) nearest images by CNN cosine,
   its stage-1 copies and its partners in the copy search's links of the thumbnails
   (up to :data:`LINK_PARTNERS`: :func:`link_partners` for the index's own images,
   :func:`query_partners` for new ones; at the copy search's own ratio, or a looser
   one on request, :data:`LINK_RATIO`) by :func:`pair_distances`: the smaller of the copy search's
   aligned distance (:func:`dcsi.aligned.aligned_distance`: the smallest ``1 -
   Pearson`` over shifts and crops-and-resizes) and its registered distance
   (:func:`dcsi.registration.registered_distance`: the same after small rotations,
   scalings, aspect changes and further smoothing, or with both images
   despeckled; ``RelativeOptions(registered=False)`` leaves it out), on each colour
   channel that varies in both images, the largest kept (in grey when either image
   is grey).  The closest goes first when it is a stage-1 copy or a partner linked at
   the copy search's own ratio, or when its
   distance is at most :data:`ALIGN_RATIO` (0.7) times the 5th smallest of the ten
   and at most ``max_distance``: shifted, cropped, turned, rescaled or padded copies,
   which stage 1's fixed grid misses, stand out from the look-alikes the CNN put
   beside them, and of two icons that stage 1 both links, the one whose pixels line
   up best wins; the partners bring the originals the CNN did not put among the ten
   (padded, rescaled or squeezed copies).  This is a ranking, not a verdict: on Fashion-MNIST most images have
   such a neighbour without having a copy, so only stage 1's images are flagged as
   copies (``is_copy``).

Stage 2's image, when it moves, goes first in an image's list, then stage 1's other
copies, closest first, then the CNN's order; every result keeps its CNN cosine as its
score.  How the numbers were set is in the README ("Similarity index", "Copies
first").

Examples
--------
>>> import numpy as np
>>> rows = colour_rows(np.random.default_rng(0).integers(0, 256, (30, 8, 8, 3), np.uint8))
>>> rows.shape
(30, 48)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from dcsi.aligned import copy_transforms, default_geometry, grey_levels, transformed_rows
from dcsi.exceptions import InvalidParameterError
from dcsi.neighbors import exact_topk, reference_topk, unit_rows
from dcsi.registration import DISTANCE_VERSION, registered_distance, registered_windows
from dcsi.relative_links import (
    DEFAULT_RATIO,
    CrossSide,
    RelativeOptions,
    coarse_rows,
    cross_side,
    relative_cross_pairs,
    relative_links,
    relative_score,
)

__all__ = [
    "ALIGN_RATIO",
    "LINK_PARTNERS",
    "LINK_RATIO",
    "SHORTLIST",
    "VERIFY_SIZE",
    "PixelCheck",
    "aligned_copies",
    "colour_rows",
    "copies_first",
    "link_partners",
    "pair_distances",
    "query_partners",
    "shortlist_distance",
    "thumbnails",
    "verify_neighbors",
]

#: Side, in pixels, of the square thumbnail every image is stretched to.
VERIFY_SIZE = 32
#: CNN neighbours of an image compared with it by the aligned distance (stage 2).
SHORTLIST = 10
#: Stage 2: the closest shortlisted image is a copy when its aligned distance is at most
#: this times the 5th smallest of the shortlist (chosen with each retrieval set held out
#: in turn, README "Copies first").
ALIGN_RATIO = 0.7
#: Stage 2 also weighs each image's partners in the copy search's relative links on the
#: thumbnails (:func:`link_partners`), up to this many, closest first.
LINK_PARTNERS = 5
#: The partners are the copy search's links at this ratio by default: its own,
#: :data:`dcsi.relative_links.DEFAULT_RATIO`.  A looser one (``link_ratio`` of
#: :func:`dcsi.neighbor_index.index_features`) brings more candidates: those the copy
#: search links at its own ratio may go first as stage 1's copies may, the others
#: compete as the CNN's shortlist does, by standing out (README "Copies first": on
#: request, since it gained on 28-px copies and lost on clip art).
LINK_RATIO = DEFAULT_RATIO
#: Distances below this count as 0: identical images up to float32 rounding (with five
#: or more identical images, an image's reference distance is 0 and only 0 passes).
EXACT = 1e-5
_BATCH = 4096  # images decoded at a time


def colour_rows(images: np.ndarray, sigma: float = 1.0, despeckled: bool = False) -> np.ndarray:
    """Coarse rows of each colour channel side by side, scaled to unit length.

    Parameters
    ----------
    images : ndarray of shape (n, h, w, 3) or (n, h, w)
        uint8 or float images; grey images count as three equal channels.
    sigma : float, default=1.0
        Gaussian smoothing in pixels (see :func:`dcsi.relative_links.coarse_rows`).
    despeckled : bool, default=False
        Despeckle each channel before the smoothing
        (:func:`dcsi.despeckling.despeckle`).

    Returns
    -------
    ndarray of shape (n, 3 * (h // 2) * (w // 2)), float32
        Unit rows (zero rows for constant images).
    """
    X = np.asarray(images)
    if X.ndim == 3:
        X = X[..., None]
    parts = [coarse_rows(X[..., min(c, X.shape[3] - 1)], sigma, despeckled) for c in range(3)]
    return unit_rows(np.hstack(parts), np.float32)


def thumbnails(images: Any, *, size: int = VERIFY_SIZE) -> np.ndarray:
    """Every image of an ImageSet stretched to ``size`` x ``size`` RGB, in batches.

    Parameters
    ----------
    images : ImageSet
    size : int, default=32

    Returns
    -------
    ndarray of shape (n, size, size, 3), uint8
    """
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for idx, batch in images.iter_arrays(size=size, mode="RGB", batch_size=_BATCH):
        out[idx] = batch
    return out


@dataclass(frozen=True, eq=False)
class PixelCheck:
    """The indexed images' thumbnails, coarse rows and reference distances.

    Attributes
    ----------
    thumbnails : ndarray of shape (n, s, s, 3), uint8
        The images stretched to ``s = VERIFY_SIZE`` px.
    reference : ndarray of shape (n,), float64
        Each image's coarse distance ``1 - cos`` to its ``options.k``-th nearest other.
    options : RelativeOptions
        The rule of stage 1 (ratio, k, max_distance, sigma, despeckle; not the halves
        nor the centred view of the copy search); ``max_distance`` bounds stage 2 too, and ``registered``
        says whether stage 2 also measures the registered distance (an index written
        before ``registered`` or ``despeckle`` existed is read with ``False``; one
        written with another version of the registered distance,
        :data:`dcsi.registration.DISTANCE_VERSION`, is read with a warning).
    align_ratio : float, default=ALIGN_RATIO
        The ratio of stage 2.
    colour : bool, default=True
        Whether stage 2 compares colour thumbnails channel by channel
        (:func:`pair_distances`; an index written before it is read with ``False``).
    link_reference : ndarray of shape (n, 2), float64, or None
        Each image's coarse and registered reference distances in the copy search's
        links of the thumbnails (:func:`link_partners`), so that new queries get their
        partners too (:func:`query_partners`); None: the index weighed no partners.
    link_ratio : float, default=LINK_RATIO
        The ratio of the copy search's links that make the partners (an index written
        before it was recorded is read with the copy search's default, 0.25, the
        ratio it was built with).
    """

    thumbnails: np.ndarray
    reference: np.ndarray
    options: RelativeOptions
    align_ratio: float = ALIGN_RATIO
    colour: bool = True
    link_reference: np.ndarray | None = None
    link_ratio: float = LINK_RATIO

    @cached_property
    def rows(self) -> np.ndarray:
        """ndarray of shape (n, 3 * (s // 2) ** 2), float32: :func:`colour_rows` of the
        thumbnails (computed once, on first use)."""
        return colour_rows(self.thumbnails, self.options.sigma, self.options.despeckle)

    @cached_property
    def cross_side(self) -> CrossSide | None:
        """:func:`dcsi.relative_links.cross_side` of the thumbnails with the copy
        search's defaults at :attr:`link_ratio` and :attr:`link_reference` (computed
        once, on the first query that weighs partners; None without
        ``link_reference``)."""
        ref = self.link_reference
        options = RelativeOptions(ratio=self.link_ratio)
        if ref is None or options.skips(len(self.thumbnails)):
            return None
        return cross_side(self.thumbnails, options, train_reference=(ref[:, 0], ref[:, 1]))

    @classmethod
    def build(
        cls,
        thumbs: np.ndarray,
        options: RelativeOptions | None = None,
        *,
        search: str = "exact",
        seed: int = 0,
        link_reference: np.ndarray | None = None,
        link_ratio: float = LINK_RATIO,
    ) -> tuple[PixelCheck, np.ndarray, np.ndarray, np.ndarray]:
        """The check of the indexed images and every image's stage-1 candidates.

        Parameters
        ----------
        thumbs : ndarray of shape (n, s, s, 3), uint8
            :func:`thumbnails` of the images, ``n > options.k``.
        options : RelativeOptions, default=None
        search : {"exact", "faiss"}, default="exact"
            How the ``k`` nearest others are found (faiss IVF-flat for large ``n``).
        seed : int, default=0
            Seed of the faiss k-means.
        link_reference : ndarray of shape (n, 2), default=None
            The fourth output of :func:`link_partners` (kept as
            :attr:`link_reference`).
        link_ratio : float, default=LINK_RATIO
            The ratio ``link_partners`` was called with (kept as :attr:`link_ratio`).

        Returns
        -------
        check : PixelCheck
        candidates : ndarray of shape (n, k), int64
            Each image's ``k`` nearest other images in coarse rows.
        distances : ndarray of shape (n, k), float64
            Their coarse distances.
        verified : ndarray of shape (n, k), bool
            Which of them pass the rule.
        """
        options = options or RelativeOptions()
        rows = colour_rows(thumbs, options.sigma, options.despeckle)
        nbrs, dist = reference_topk(rows, options.k, "ann" if search == "faiss" else "exact", seed)
        dist[dist < EXACT] = 0.0
        check = cls(
            np.ascontiguousarray(thumbs, dtype=np.uint8),
            dist[:, -1],
            options,
            link_reference=link_reference,
            link_ratio=link_ratio,
        )
        check.__dict__["rows"] = rows  # the cached property, already computed
        return check, nbrs, dist, check.passes(dist, check.reference, nbrs)

    def query(self, thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage-1 candidates among the indexed images of new (not indexed) images.

        Parameters
        ----------
        thumbs : ndarray of shape (m, s, s, 3), uint8
            :func:`thumbnails` of the query images.

        Returns
        -------
        candidates : ndarray of shape (m, k), int64
        distances : ndarray of shape (m, k), float64
        verified : ndarray of shape (m, k), bool
        """
        q = colour_rows(thumbs, self.options.sigma, self.options.despeckle)
        k = min(self.options.k, len(self.reference))
        nbrs, _ = exact_topk(self.rows, q, k=k, desc="pixel check")
        dist = _distances(q, self.rows, nbrs)
        return nbrs, dist, self.passes(dist, dist[:, -1], nbrs)

    def passes(self, dist: np.ndarray, ref_query: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
        """Whether each stage-1 candidate passes: its relative score is at most 1.

        Parameters
        ----------
        dist : ndarray of shape (m, k)
            Coarse distances of the candidates.
        ref_query : ndarray of shape (m,)
            The queries' reference distances.
        nbrs : ndarray of shape (m, k), int64
            The candidates' rows.

        Returns
        -------
        ndarray of shape (m, k), bool
        """
        ref_a = np.broadcast_to(np.asarray(ref_query, np.float64)[:, None], dist.shape)
        s = relative_score(dist.ravel(), ref_a.ravel(), self.reference[nbrs].ravel(), self.options)
        return (s <= 1.0).reshape(dist.shape)

    def aligned(
        self,
        shortlist: np.ndarray,
        *,
        rows: np.ndarray | None = None,
        query_thumbs: np.ndarray | None = None,
        reference_columns: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 2: the pixel-closest image of each query's shortlist, and whether it
        stands out (:func:`aligned_copies`).

        Parameters
        ----------
        shortlist : ndarray of shape (m, c), int64
            Rows of indexed images, the CNN's nearest first (then any further
            candidates, after ``reference_columns``).
        rows : ndarray of shape (m,), int, default=None
            The queries as rows of the indexed images;
        query_thumbs : ndarray of shape (m, s, s, 3), uint8, default=None
            or the query images' thumbnails (exactly one of the two).
        reference_columns : int, default=None
            The columns the reference is taken over (None: all).

        Returns
        -------
        candidates : ndarray of shape (m, 1), int64
            The shortlisted image of smallest distance.
        distances : ndarray of shape (m, 1), float64
            Its distance.
        verified : ndarray of shape (m, 1), bool
            Whether it stands out.
        """
        m, c = shortlist.shape
        if query_thumbs is None:
            if rows is None:
                raise InvalidParameterError("PixelCheck.aligned needs rows or query_thumbs.")
            images, queries, short = self.thumbnails, np.asarray(rows), shortlist
        else:  # the shortlisted indexed images, then the queries
            used, inv = np.unique(shortlist, return_inverse=True)
            images = np.concatenate([self.thumbnails[used], query_thumbs])
            queries, short = len(used) + np.arange(m), inv.reshape(m, c)
        best, dist, ok = aligned_copies(
            images,
            queries,
            short,
            ratio=self.align_ratio,
            max_distance=self.options.max_distance,
            registered=self.options.registered,
            sigma=self.options.sigma,
            colour=self.colour,
            reference_columns=reference_columns,
        )
        return np.take_along_axis(shortlist, best[:, None], 1), dist[:, None], ok[:, None]

    def to_dict(self) -> dict[str, Any]:
        """The rules and the thumbnail size, as ``index.json`` records them."""
        o = self.options
        return {
            "size": int(self.thumbnails.shape[1]),
            "mode": "RGB",
            "ratio": o.ratio,
            "k": o.k,
            "max_distance": o.max_distance,
            "sigma": o.sigma,
            "shortlist": SHORTLIST,
            "align_ratio": self.align_ratio,
            "registered": o.registered,
            "registration": DISTANCE_VERSION if o.registered else None,
            "despeckle": o.despeckle,
            "colour": self.colour,
            "link_ratio": self.link_ratio,
        }


def aligned_copies(
    images: np.ndarray,
    queries: np.ndarray,
    shortlist: np.ndarray,
    *,
    ratio: float = ALIGN_RATIO,
    max_distance: float = 0.2,
    reference_rank: int = 5,
    registered: bool = True,
    sigma: float = 1.0,
    colour: bool = False,
    reference_columns: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query, the shortlisted image of smallest distance, and whether it
    stands out: at most ``ratio`` times the ``reference_rank``-th smallest distance of
    the shortlist's first ``reference_columns`` columns, and at most ``max_distance``.
    The distance is :func:`pair_distances` (the aligned one, the smaller of it and the
    registered one with ``registered``, per channel with ``colour``).  Only the images
    the queries and their shortlists name are read.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, 3)
        Every image involved (colour: compared in grey, the channel mean).
    queries : ndarray of shape (m,), int
        Rows of ``images``.
    shortlist : ndarray of shape (m, c), int
        Rows of ``images`` to compare each query with; ``c >= reference_rank``.
    ratio, max_distance : float
    reference_rank : int, default=5
    registered : bool, default=True
    sigma : float, default=1.0
        Gaussian smoothing of the registered distance, in pixels (the check's
        ``options.sigma``).
    colour : bool, default=False
        Compare colour images channel by channel (:func:`pair_distances`).
    reference_columns : int, default=None
        The reference is taken over this many leading columns (the CNN's shortlist;
        the columns after it only compete for the smallest distance); None: all.

    Returns
    -------
    best : ndarray of shape (m,), int64
        Column of ``shortlist`` of the smallest distance (ties: the earlier column).
    distance : ndarray of shape (m,), float64
    verified : ndarray of shape (m,), bool
    """
    m, c = shortlist.shape
    d = pair_distances(
        images, queries, shortlist, registered=registered, sigma=sigma, colour=colour
    )
    best = np.argmin(d, axis=1)
    low = d[np.arange(m), best]
    r = c if reference_columns is None else reference_columns
    reference = np.sort(d[:, :r], axis=1)[:, min(reference_rank, r) - 1]
    return best, low, (low <= ratio * reference) & (low <= max_distance)


def pair_distances(
    images: np.ndarray,
    queries: np.ndarray,
    shortlist: np.ndarray,
    *,
    registered: bool = True,
    sigma: float = 1.0,
    colour: bool = False,
) -> np.ndarray:
    """Stage 2's distance of every query with each image of its shortlist.

    In grey (the channel mean), the aligned distance (:func:`shortlist_distance`), or
    with ``registered`` the smaller of it and the registered distance
    (:func:`dcsi.registration.registered_distance`; images under
    :data:`dcsi.registration.MIN_SIDE` px are not registered).  With ``colour``, a pair
    of two coloured images (channels not all equal) is measured on each channel that
    varies in both (more than one grey level), and its distance is the largest of
    those: two icons drawn alike in other colours are far apart, a recoloured copy
    (each channel scaled and shifted) is not, since each channel's distance is one
    minus a Pearson correlation.  A pair with a grey image (a greyscale copy of a
    colour one), or with no channel varying in both, keeps its grey distance.  Only
    the images the queries and their shortlists name are read.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, 3)
    queries : ndarray of shape (m,), int
        Rows of ``images``.
    shortlist : ndarray of shape (m, c), int
        Rows of ``images``.
    registered : bool, default=True
    sigma : float, default=1.0
    colour : bool, default=False

    Returns
    -------
    ndarray of shape (m, c), float64
    """

    def named(
        X: np.ndarray, q: np.ndarray, sl: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The images ``q`` and ``sl`` name, and the two as rows of those (each image's
        numbers are its own)."""
        m, c = sl.shape
        used, inv = np.unique(
            np.concatenate([np.asarray(q, np.int64), np.asarray(sl, np.int64).ravel()]),
            return_inverse=True,
        )
        return X[used], inv[:m], inv[m:].reshape(m, c)

    def one(X: np.ndarray, q: np.ndarray, sl: np.ndarray) -> np.ndarray:
        X, q, sl = named(X, q, sl)
        m, c = sl.shape
        d = shortlist_distance(X, q, sl)
        if RelativeOptions(registered=registered).registers(X.shape[1:3]):
            W = registered_windows(X, sigma)
            r = registered_distance(W, W, np.repeat(q, c), sl.ravel())
            d = np.minimum(d, r.reshape(m, c))
        return d

    images, queries, shortlist = named(np.asarray(images), queries, shortlist)
    rows = np.zeros(len(queries), bool)
    if colour and images.ndim == 4:
        coloured = (images != images[..., :1]).any(axis=(1, 2, 3))
        rows = coloured[queries] & coloured[shortlist].any(axis=1)
    d = np.empty(shortlist.shape)
    if not rows.all():
        d[~rows] = one(images, queries[~rows], shortlist[~rows])
    if not rows.any():
        return d
    q, sl = queries[rows], shortlist[rows]
    flat = np.ptp(images.reshape(len(images), -1, images.shape[3]), axis=1) <= 1  # (n, 3)
    both = ~flat[q][:, None, :] & ~flat[sl]  # (r, c, 3): the channel varies in both,
    both &= coloured[q][:, None, None] & coloured[sl][..., None]  # both coloured
    worst = np.full(sl.shape, -np.inf)
    for ch in range(images.shape[3]):
        d_ch = one(np.ascontiguousarray(images[..., ch]), q, sl)
        worst = np.where(both[..., ch], np.maximum(worst, d_ch), worst)
    grey = ~np.isfinite(worst).all(axis=1)  # rows with a pair measured in grey
    if grey.any():
        worst[grey] = np.where(
            np.isfinite(worst[grey]), worst[grey], one(images, q[grey], sl[grey])
        )
    d[rows] = worst
    return d


def link_partners(
    thumbs: np.ndarray, *, width: int = LINK_PARTNERS, ratio: float = LINK_RATIO
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Each image's partners in the copy search's relative links of the thumbnails.

    :func:`dcsi.relative_links.relative_links` with its defaults (the coarse rows, the
    registered distance and its zoomed, turned and recentred candidates, in grey) but
    ``ratio`` on the thumbnails; each image's partners, closest first by the links'
    coarse rows (ties: the smaller row), at most ``width``.

    Parameters
    ----------
    thumbs : ndarray of shape (n, s, s, 3), uint8
        :func:`thumbnails` of the images (exact search: the index skips the partners
        where it uses faiss).
    width : int, default=LINK_PARTNERS
    ratio : float, default=LINK_RATIO
        The links' ratio (:attr:`RelativeOptions.ratio`).

    Returns
    -------
    partners : ndarray of shape (n, width), int64
        Rows of the partners (0 where there is none).
    linked : ndarray of shape (n, width), bool
        Which entries are partners.
    close : ndarray of shape (n, width), bool
        Which partners the copy search links at its own ratio, ``DEFAULT_RATIO``
        (their relative score times ``ratio`` at most that): these may go first in
        stage 2 without standing out (:func:`verify_neighbors`).
    reference : ndarray of shape (n, 2), float64, or None
        Each image's coarse and registered reference distances in the links (NaN
        for thumbnails too small to register; :attr:`PixelCheck.link_reference`, for
        :func:`query_partners`); None below the copy search's ``min_images``.
    """
    n = len(thumbs)
    links = relative_links(np.asarray(thumbs), RelativeOptions(ratio=ratio))
    if links is None:
        return np.zeros((n, width), np.int64), *np.zeros((2, n, width), bool), None
    registered = links.registered_reference
    reference = np.stack(
        [links.reference, np.full(n, np.nan) if registered is None else registered], axis=1
    )
    a = np.concatenate([links.pairs[:, 0], links.pairs[:, 1]])
    b = np.concatenate([links.pairs[:, 1], links.pairs[:, 0]])
    d = 1.0 - np.einsum("ij,ij->i", links.rows[a], links.rows[b], dtype=np.float64)
    close = np.ones(len(a), bool)  # at the copy search's own ratio or below: every link
    if ratio > DEFAULT_RATIO:
        close = np.tile(_close(links.score(links.pairs[:, 0], links.pairs[:, 1]), ratio), 2)
    return (*_partner_table(a, b, d, close, n, width), reference.astype(np.float64))


def _close(scores: np.ndarray, ratio: float) -> np.ndarray:
    """Which links of relative ``scores`` at ``ratio`` pass at ``DEFAULT_RATIO``."""
    return np.asarray(scores) * ratio <= DEFAULT_RATIO * (1.0 + 1e-9)


def query_partners(
    check: PixelCheck, query_thumbs: np.ndarray, *, width: int = LINK_PARTNERS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each new image's partners among the indexed images in the copy search's links.

    The (query, indexed image) pairs that
    :func:`dcsi.relative_links.relative_cross_pairs` links (the leakage search, with
    the indexed images' references from :attr:`PixelCheck.link_reference`, so only
    the queries' own searches run; what it reads of the indexed images is computed on
    the first call and kept, :attr:`PixelCheck.cross_side`), closest first by coarse
    rows, at most ``width``: what :func:`link_partners` gives an indexed image.

    Parameters
    ----------
    check : PixelCheck
        With ``link_reference``.
    query_thumbs : ndarray of shape (m, s, s, 3), uint8
    width : int, default=LINK_PARTNERS

    Returns
    -------
    partners : ndarray of shape (m, width), int64
        Rows of the indexed images (0 where there is none).
    linked, close : ndarray of shape (m, width), bool
        As :func:`link_partners`.
    """
    m = len(query_thumbs)
    side = check.cross_side if m else None
    found = None if side is None else relative_cross_pairs(np.asarray(query_thumbs), side)
    if side is None or found is None or not len(found[0]):
        return np.zeros((m, width), np.int64), *np.zeros((2, m, width), bool)
    a, b = found[0][:, 0], found[0][:, 1]
    used, ia = np.unique(a, return_inverse=True)
    o = side.options  # the indexed images' coarse rows are the cross side's
    rows_a = coarse_rows(np.asarray(query_thumbs)[used], o.sigma, o.despeckle)
    d = 1.0 - np.einsum("ij,ij->i", rows_a[ia], side.rows[b], dtype=np.float64)
    return _partner_table(a, b, d, _close(found[1], side.options.ratio), m, width)


def _partner_table(
    a: np.ndarray, b: np.ndarray, d: np.ndarray, close: np.ndarray, m: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs ``(a, b)`` of distances ``d`` as a table: row ``a`` lists its ``b``,
    closest first (ties: the smaller ``b``), at most ``width``, whether each is linked,
    and its ``close`` flag; shapes (m, width)."""
    partners, linked = np.zeros((m, width), np.int64), np.zeros((m, width), bool)
    flags = np.zeros((m, width), bool)
    order = np.lexsort((b, d, a))  # by image, then distance, then partner
    a, b, close = a[order], b[order], np.asarray(close)[order]
    rank = np.arange(len(a)) - np.searchsorted(a, a)
    keep = rank < width
    partners[a[keep], rank[keep]] = b[keep]
    linked[a[keep], rank[keep]] = True
    flags[a[keep], rank[keep]] = close[keep]
    return partners, linked, flags


def shortlist_distance(
    images: np.ndarray, queries: np.ndarray, shortlist: np.ndarray, *, block: int = 8192
) -> np.ndarray:
    """:func:`dcsi.aligned.aligned_distance` of every query with each image of its
    shortlist, in float32 and by query blocks (about 2.5 times faster than the pair
    list for this shape; equal to 1e-5).

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, 3)
    queries : ndarray of shape (m,), int
    shortlist : ndarray of shape (m, c), int
    block : int, default=8192
        Queries compared at a time.

    Returns
    -------
    ndarray of shape (m, c), float64
        In ``[0, 2]``, with the default shifts and crops of the images' size; below
        :data:`EXACT`: 0.
    """
    X = grey_levels(np.asarray(images))
    shift, crop = default_geometry(X.shape[1:3])
    transforms = copy_transforms(X.shape[1:3], max_shift=shift, max_crop=crop, half_shifts=False)
    base = transformed_rows(X, transforms[0])
    best = np.full(shortlist.shape, 2.0, dtype=np.float32)
    for T in transforms:
        V = transformed_rows(X, T)
        for s in range(0, len(queries), block):
            q, sl = queries[s : s + block], shortlist[s : s + block]
            out = best[s : s + block]
            np.minimum(out, 1.0 - np.einsum("ij,ikj->ik", V[q], base[sl]), out=out)
            np.minimum(out, 1.0 - np.einsum("ikj,ij->ik", V[sl], base[q]), out=out)
    out = np.clip(best.astype(np.float64), 0.0, 2.0)
    out[out < EXACT] = 0.0
    return out


def _distances(Q: np.ndarray, X: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """``1 - Q[i] . X[nbrs[i, j]]``, float64, shape of ``nbrs``; below :data:`EXACT`: 0."""
    prod = np.einsum("ij,ikj->ik", Q.astype(np.float64), X[nbrs].astype(np.float64))
    d = 1.0 - prod
    d[d < EXACT] = 0.0
    return d


def copies_first(
    neighbors: np.ndarray,
    scores: np.ndarray,
    candidates: np.ndarray,
    verified: np.ndarray,
    distances: np.ndarray,
    query_vectors: np.ndarray,
    vectors: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's verified copies first (closest first), then its CNN neighbours.

    Parameters
    ----------
    neighbors : ndarray of shape (m, k), int64
        CNN neighbours, best first.
    scores : ndarray of shape (m, k), float32
        Their cosines.
    candidates, verified, distances : ndarray of shape (m, c)
        Candidate copies (rows of ``vectors``), whether each passed the pixel check,
        and their pixel distances.
    query_vectors : ndarray of shape (m, d)
        Unit vectors of the queries (for the cosines of promoted copies).
    vectors : ndarray of shape (n, d)
        Unit vectors of the indexed images.

    Returns
    -------
    neighbors : ndarray of shape (m, k), int64
    scores : ndarray of shape (m, k), float32
        CNN cosines, in the new order.
    is_copy : ndarray of shape (m, k), bool
        Which results are verified copies.
    """
    neighbors, scores = neighbors.copy(), scores.copy()
    is_copy = np.zeros(neighbors.shape, dtype=bool)
    k = neighbors.shape[1]
    for i in np.flatnonzero(verified.any(axis=1)):
        ok = np.flatnonzero(verified[i])
        order = ok[np.lexsort((candidates[i, ok], distances[i, ok]))]
        first = candidates[i, order][:k]
        promoted = set(first.tolist())
        rest = [j for j in range(k) if neighbors[i, j] not in promoted]
        cos = vectors[first] @ query_vectors[i]
        neighbors[i] = np.concatenate([first, neighbors[i, rest]])[:k]
        scores[i] = np.concatenate([cos, scores[i, rest]])[:k]
        is_copy[i, : len(first)] = True
    return neighbors, scores, is_copy


def verify_neighbors(
    check: PixelCheck,
    neighbors: np.ndarray,
    scores: np.ndarray,
    shortlist: np.ndarray,
    stage1: tuple[np.ndarray, np.ndarray, np.ndarray],
    query_vectors: np.ndarray,
    vectors: np.ndarray,
    *,
    rows: np.ndarray | None = None,
    query_thumbs: np.ndarray | None = None,
    partners: tuple[np.ndarray, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both stages on CNN results: stage 2's winner first, then stage 1's copies.

    Stage 2 compares each query with its CNN shortlist, its stage-1 copies and its
    ``partners`` (the copy search's links); the closest of them goes first when it is
    a stage-1 copy or a close partner, or stands out from the shortlist
    (:meth:`PixelCheck.aligned`, the reference over the shortlist alone).
    Stage 1's other copies follow (closest first by their coarse distance), then the
    CNN's order.  Only stage 1's images are flagged in ``is_copy``: stage 2 picks the
    image whose pixels line up best, a ranking decision rather than a verdict (on
    Fashion-MNIST most images have such a neighbour without having a copy).

    Parameters
    ----------
    check : PixelCheck
    neighbors, scores : ndarray of shape (m, k)
        The CNN's top ``k`` (rows of the indexed images) and their cosines.
    shortlist : ndarray of shape (m, c), int64
        The CNN's top :data:`SHORTLIST` (fewer when there are fewer other images;
        stage 2 needs ``c >= check.options.k``).
    stage1 : (candidates, distances, verified)
        :meth:`PixelCheck.build` or :meth:`PixelCheck.query` of the same queries.
    query_vectors : ndarray of shape (m, d)
    vectors : ndarray of shape (n, d)
    rows : ndarray of shape (m,), int, default=None
        The queries as rows of the indexed images (the index itself).
    query_thumbs : ndarray of shape (m, s, s, 3), uint8, default=None
        Or the queries' thumbnails (new images).
    partners : (partners, linked, close), default=None
        The queries' partners (:func:`link_partners` for the index's own images,
        :func:`query_partners` for new ones), or None; without ``close``, every
        partner counts as close.

    Returns
    -------
    neighbors, scores, is_copy : ndarray of shape (m, k)
        As :func:`copies_first`; ``is_copy`` for stage 1's copies only.
    """
    cand, dist, ok = stage1
    neighbors, scores, is_copy = copies_first(
        neighbors, scores, cand, ok, dist, query_vectors, vectors
    )
    c = shortlist.shape[1]
    if c < check.options.k:
        return neighbors, scores, is_copy
    # the images compared besides the shortlist, and those of them that may go first
    # without standing out (stage 1's copies, close partners)
    extra, extra_ok, rival_ok = cand, ok, ok
    if partners is not None:
        linked = partners[1]
        close = linked & partners[2] if len(partners) > 2 else linked
        extra, extra_ok = np.hstack([cand, partners[0]]), np.hstack([ok, linked])
        rival_ok = np.hstack([ok, close])
    m = len(shortlist)
    c2, d2 = np.empty((m, 1), np.int64), np.empty((m, 1))
    stands_out = np.empty((m, 1), bool)
    has_extra = extra_ok.any(axis=1)
    for part, short in (
        (np.flatnonzero(~has_extra), shortlist),
        # stage 1's copies and the partners compete too; a column without one
        # repeats the CNN's first
        (
            np.flatnonzero(has_extra),
            np.hstack([shortlist, np.where(extra_ok, extra, shortlist[:, :1])]),
        ),
    ):
        if len(part):
            c2[part], d2[part], stands_out[part] = check.aligned(
                short[part],
                rows=None if rows is None else rows[part],
                query_thumbs=None if query_thumbs is None else query_thumbs[part],
                reference_columns=c,
            )
    copy_won = (rival_ok & (extra == c2)).any(axis=1)
    moved = np.flatnonzero(stands_out[:, 0] | copy_won)
    if len(moved):
        n2, s2, _ = copies_first(
            neighbors[moved],
            scores[moved],
            c2[moved],
            np.ones((len(moved), 1), bool),
            d2[moved],
            query_vectors[moved],
            vectors,
        )
        neighbors[moved], scores[moved] = n2, s2
        copies = np.where(ok[moved], cand[moved], -1)
        is_copy[moved] = (n2[:, :, None] == copies[:, None, :]).any(axis=2)
    return neighbors, scores, is_copy
