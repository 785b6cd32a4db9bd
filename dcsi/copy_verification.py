"""Pixel verification of neighbours: an image's near copies first.

CNN features rank images by what they show, so a copy of an image that was
re-encoded, sprinkled with noise, blurred or recoloured can rank below a different
image that shows the same kind of thing (two plain trousers, two folder icons).
The pixels tell those cases apart, and the copy search already has the rule that
says when: the density-relative rule of :mod:`dcsi.relative_links`.  Image ``b`` is
a *verified copy* of image ``a`` when their coarse pixel distance is at most
``ratio`` times the smaller of their two reference distances (each image's distance
to its ``k``-th nearest other image) and at most ``max_distance``: each must find the
other far closer than its own neighbourhood.  The neighbour index
(:mod:`dcsi.neighbor_index`) puts an image's verified copies first, closest first,
and then the CNN's order; every result keeps its CNN cosine as its score.

The coarse rows here are in colour (:func:`colour_rows`): each of R, G and B as
:func:`dcsi.relative_links.coarse_rows` makes grey rows (Gaussian of 1 px, 2 x 2
block means, centred, unit length), side by side, scaled to unit length, from the
image stretched to :data:`VERIFY_SIZE` px square.  Two icons that differ only in
colour are not copies of each other.  The rule's numbers are those of the copy
search (:class:`dcsi.relative_links.RelativeOptions`); nothing was fitted for the
index (README, "Similarity index").

Examples
--------
>>> import numpy as np
>>> rows = colour_rows(np.random.default_rng(0).integers(0, 256, (30, 8, 8, 3), np.uint8))
>>> rows.shape
(30, 48)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dcsi.neighbors import exact_topk, faiss_topk, unit_rows
from dcsi.relative_links import RelativeOptions, coarse_rows, relative_score

__all__ = [
    "VERIFY_SIZE",
    "PixelCheck",
    "colour_rows",
    "copies_first",
    "image_rows",
]

#: Side, in pixels, of the square every image is stretched to for its coarse rows.
VERIFY_SIZE = 32
_BATCH = 4096  # images decoded at a time


def colour_rows(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Coarse rows of each colour channel side by side, scaled to unit length.

    Parameters
    ----------
    images : ndarray of shape (n, h, w, 3) or (n, h, w)
        uint8 or float images; grey images count as three equal channels.
    sigma : float, default=1.0
        Gaussian smoothing in pixels (see :func:`dcsi.relative_links.coarse_rows`).

    Returns
    -------
    ndarray of shape (n, 3 * (h // 2) * (w // 2)), float32
        Unit rows (zero rows for constant images).
    """
    X = np.asarray(images)
    if X.ndim == 3:
        X = X[..., None]
    parts = [coarse_rows(X[..., min(c, X.shape[3] - 1)], sigma) for c in range(3)]
    return unit_rows(np.hstack(parts), np.float32)


def image_rows(images: Any, *, size: int = VERIFY_SIZE, sigma: float = 1.0) -> np.ndarray:
    """:func:`colour_rows` of every image of an ImageSet, decoded in batches.

    Parameters
    ----------
    images : ImageSet
    size : int, default=32
        The square side images are stretched to.
    sigma : float, default=1.0

    Returns
    -------
    ndarray of shape (n, 3 * (size // 2) ** 2), float32
    """
    out = np.empty((len(images), 3 * (size // 2) ** 2), dtype=np.float32)
    for idx, batch in images.iter_arrays(size=size, mode="RGB", batch_size=_BATCH):
        out[idx] = colour_rows(batch, sigma)
    return out


@dataclass(frozen=True, eq=False)
class PixelCheck:
    """The indexed images' coarse rows and reference distances.

    Attributes
    ----------
    rows : ndarray of shape (n, p), float32
        :func:`colour_rows` of the indexed images.
    reference : ndarray of shape (n,), float64
        Each image's coarse distance ``1 - cos`` to its ``options.k``-th nearest other.
    options : RelativeOptions
        The rule (ratio, k, max_distance, sigma).
    """

    rows: np.ndarray
    reference: np.ndarray
    options: RelativeOptions

    @classmethod
    def build(
        cls,
        rows: np.ndarray,
        options: RelativeOptions | None = None,
        *,
        search: str = "exact",
        seed: int = 0,
    ) -> tuple[PixelCheck, np.ndarray, np.ndarray, np.ndarray]:
        """The check of the indexed images and every image's candidate copies.

        Parameters
        ----------
        rows : ndarray of shape (n, p)
            :func:`colour_rows` of the images, ``n > options.k``.
        options : RelativeOptions, default=None
        search : {"exact", "faiss"}, default="exact"
            How the ``k`` nearest others are found (faiss IVF-flat for large ``n``).
        seed : int, default=0
            Seed of the faiss k-means.

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
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if search == "faiss":
            nbrs, _, _ = faiss_topk(rows, k=options.k, seed=seed)
        else:
            nbrs, _ = exact_topk(rows, k=options.k, desc="pixel check: neighbours")
        dist = _distances(rows, rows, nbrs)
        check = cls(rows, dist[:, -1], options)
        return check, nbrs, dist, check.passes(dist, check.reference, nbrs)

    def query(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidate copies among the indexed images of new images (not indexed).

        Parameters
        ----------
        rows : ndarray of shape (m, p)
            :func:`colour_rows` of the query images.

        Returns
        -------
        candidates : ndarray of shape (m, k), int64
        distances : ndarray of shape (m, k), float64
        verified : ndarray of shape (m, k), bool
        """
        k = min(self.options.k, len(self.rows))
        nbrs, _ = exact_topk(self.rows, np.asarray(rows, np.float32), k=k, desc="pixel check")
        dist = _distances(np.asarray(rows, np.float32), self.rows, nbrs)
        return nbrs, dist, self.passes(dist, dist[:, -1], nbrs)

    def passes(self, dist: np.ndarray, ref_query: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
        """Whether each candidate passes: its relative score is at most 1.

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

    def to_dict(self) -> dict[str, Any]:
        """The rule and the working size, as ``index.json`` records them."""
        o = self.options
        return {
            "size": VERIFY_SIZE,
            "mode": "RGB",
            "ratio": o.ratio,
            "k": o.k,
            "max_distance": o.max_distance,
            "sigma": o.sigma,
        }


def _distances(Q: np.ndarray, X: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """``1 - Q[i] . X[nbrs[i, j]]``, clipped at 0, float64, shape of ``nbrs``."""
    m, k = nbrs.shape
    prod = np.einsum("ij,ikj->ik", Q.astype(np.float64), X[nbrs].astype(np.float64))
    return np.maximum(1.0 - prod, 0.0).reshape(m, k)


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
        and their coarse distances.
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
        rest = [j for j in range(k) if neighbors[i, j] not in set(first.tolist())]
        new = np.concatenate([first, neighbors[i, rest]])[:k]
        cos = vectors[first] @ query_vectors[i]
        scores[i] = np.concatenate([cos, scores[i, rest]])[:k]
        neighbors[i] = new
        is_copy[i, : len(first)] = True
    return neighbors, scores, is_copy
