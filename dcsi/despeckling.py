"""Despeckling: isolated specks of impulse noise removed, lines and edges kept.

Used by the copy search before it smooths images: on the coarse rows of the
density-relative stage (:func:`dcsi.relative_links.coarse_rows`) and on the despeckled
views of the registered distance (:func:`dcsi.registration.despeckled_rows`).  A 3 x 3
median filter removes specks too, but also erases lines one pixel wide: it merged icons
that differ by such a line (README, "Benchmark: a broad copy family").
"""

from __future__ import annotations

import numpy as np

__all__ = ["despeckle"]


def despeckle(grey: np.ndarray) -> np.ndarray:
    """Each pixel clipped to the range of its 8 neighbours (the edge pixel repeated
    outside the image).

    A pixel above every neighbour (or below every one) takes the level of the nearest
    of them: an isolated speck of impulse noise goes, while a pixel of a line, an edge
    or any structure wider than one pixel has a neighbour at its own level and stays.

    Parameters
    ----------
    grey : ndarray of shape (n, h, w)
        Grey levels.

    Returns
    -------
    ndarray of shape (n, h, w), float32
    """
    from scipy import ndimage

    G = np.asarray(grey, dtype=np.float32)
    ring = np.ones((1, 3, 3), dtype=bool)
    ring[0, 1, 1] = False
    lo = ndimage.minimum_filter(G, footprint=ring, mode="nearest")
    hi = ndimage.maximum_filter(G, footprint=ring, mode="nearest")
    return np.clip(G, lo, hi)
