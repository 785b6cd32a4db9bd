"""The density-relative rule of the copy search, shared by its views.

A pair of images is linked when its distance is at most ``ratio`` times the smaller
reference distance of its two images (each image's distance to its ``k``-th nearest
other image by the same measure) and at most ``max_distance``.  The whole-image coarse
rows and the registered distance (:mod:`dcsi.relative_links`), the halves
(:mod:`dcsi.half_views`) and the index's pixel check (:mod:`dcsi.copy_verification`)
all apply this one rule; the halves with their own, stricter ratio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dcsi.relative_links import RelativeOptions

__all__ = ["relative_score"]


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
