"""Blank and near-uniform images, whatever their colour or alpha.

An image is **blank** when, at the working size of the pixel-space stages (see
:meth:`dcsi.sources.ImageSet.working_size`) and after alpha compositing over white (a
fully transparent image is white), the standard deviation of each of its channels is at
most ``tolerance`` grey levels (of 0-255; default :data:`BLANK_TOLERANCE` = 2.0).  That
catches white, black and coloured fills, transparent placeholders and uniform images
with faint noise (JPEG ringing, dithering), while a low-contrast picture (a shape 20
grey levels off its background, a faint photo) has a standard deviation well above 2.

Grey sources are compared in grey levels, so an image whose only content is a change of
hue at equal luminance counts as blank there; pass colour arrays to tell them apart.

Blank images carry no picture for the wavelet rows (their centred rows are zero, at
distance 1 from everything) and look alike to a CNN, so :func:`dcsi.find_redundancy`
takes them out of the copy search and groups them by colour instead: two blank images
*share a colour* when every channel mean differs by at most ``2 * tolerance``, and the
groups are the connected components of that relation (:meth:`BlankImages.colour_groups`).
:func:`dcsi.find_leakage` counts a blank test image with a blank training image of the
same colour as leaked (``stage="blank"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcsi._validation import check_array, check_float

__all__ = ["BLANK_TOLERANCE", "BlankImages", "blank_cross_pairs", "find_blank"]

#: Largest per-channel standard deviation (grey levels of 0-255) of a blank image.
BLANK_TOLERANCE = 2.0


@dataclass(frozen=True)
class BlankImages:
    """Which images are blank, and their colours.

    Attributes
    ----------
    mask : ndarray of shape (n,), bool
        True for a blank image.
    colours : ndarray of shape (n, c), float64
        Mean of each channel of every image (grey levels; ``c = 1`` for grey images).
    tolerance : float
        The per-channel standard deviation bound used.
    """

    mask: np.ndarray
    colours: np.ndarray
    tolerance: float

    @property
    def indices(self) -> np.ndarray:
        """Row indices of the blank images, shape (n_blank,), int64."""
        return np.flatnonzero(self.mask)

    @property
    def same_colour(self) -> float:
        """Largest per-channel difference of mean (grey levels) of one colour group."""
        return 2.0 * self.tolerance

    def colour_groups(self, members: np.ndarray | None = None) -> list[np.ndarray]:
        """Blank images that share a colour, as connected components.

        Parameters
        ----------
        members : ndarray of int, default=None
            Consider only these rows (default: all).

        Returns
        -------
        list of ndarray of int
            Sorted row indices of each group of two or more blank images, largest
            first (ties: lowest first index).
        """
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
        from scipy.spatial import cKDTree

        idx = self.indices if members is None else np.asarray(members, dtype=np.int64)
        idx = idx[self.mask[idx]]
        if len(idx) < 2:
            return []
        # images of one exact colour are one node: 10^5 white images are not 5 x 10^9 pairs
        colours, node = np.unique(self.colours[idx], axis=0, return_inverse=True)
        node = node.ravel()
        tree = cKDTree(colours)
        pairs = tree.query_pairs(self.same_colour, p=np.inf, output_type="ndarray")
        u = len(colours)
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(u, u))
        _, comp = connected_components(graph, directed=False)
        comp = comp[node]
        groups = [np.sort(idx[comp == c]) for c in np.unique(comp)]
        groups = [g for g in groups if len(g) >= 2]
        groups.sort(key=lambda g: (-len(g), int(g[0])))
        return groups

    def summary(self, ids: list[str]) -> dict:
        """The ``blank`` block of results: tolerance, rule, count and ids."""
        return {
            "tolerance": float(self.tolerance),
            "same_colour": float(self.same_colour),
            "rule": "per-channel standard deviation <= tolerance (grey levels of 0-255) at "
            "the working size, after alpha compositing over white; blank images of one "
            "colour (channel means within same_colour) form one group",
            "n_blank": int(self.mask.sum()),
            "ids": [str(ids[i]) for i in self.indices],
        }


def find_blank(
    images: np.ndarray, *, tolerance: float = BLANK_TOLERANCE, batch_size: int = 4096
) -> BlankImages:
    """Find the blank (uniform or near-uniform) images.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c), uint8
        Images at the working size, alpha already composited (what
        :func:`dcsi.redundancy.as_grey_arrays` returns).
    tolerance : float, default=2.0
        Largest per-channel standard deviation, in grey levels, of a blank image.
    batch_size : int, default=4096
        Images processed at a time.

    Returns
    -------
    BlankImages

    Examples
    --------
    >>> x = np.full((3, 8, 8), 255, dtype=np.uint8)
    >>> x[2, :4] = 0
    >>> find_blank(x).mask.tolist()
    [True, True, False]
    """
    caller = "find_blank"
    arr = check_array(images, "images", caller, ndim=(3, 4))
    tolerance = check_float(tolerance, "tolerance", caller, min_value=0.0, max_value=255.0)
    n = arr.shape[0]
    c = arr.shape[3] if arr.ndim == 4 else 1
    mask = np.zeros(n, dtype=bool)
    colours = np.zeros((n, c))
    for s in range(0, n, batch_size):
        x = arr[s : s + batch_size].reshape(min(batch_size, n - s), -1, c).astype(np.float64)
        colours[s : s + len(x)] = x.mean(axis=1)
        mask[s : s + len(x)] = np.all(x.std(axis=1) <= tolerance, axis=1)
    return BlankImages(mask=mask, colours=colours, tolerance=tolerance)


def blank_cross_pairs(test: BlankImages, train: BlankImages) -> tuple[np.ndarray, np.ndarray]:
    """Every blank test image with a blank training image of the same colour.

    Parameters
    ----------
    test, train : BlankImages
        Of the two sets, with the same number of channels.

    Returns
    -------
    pairs : ndarray of shape (m, 2), int64
        ``(test index, train index)``: for each blank test image, the training image
        whose colour is nearest (Chebyshev distance over the channel means, within
        ``test.same_colour``; ties as scipy's k-d tree resolves them, deterministic).
    distances : ndarray of shape (m,), float64
        That colour difference divided by 255 (0 for the same colour).
    """
    from scipy.spatial import cKDTree

    te, tr = test.indices, train.indices
    if len(te) == 0 or len(tr) == 0:
        return np.empty((0, 2), dtype=np.int64), np.empty(0)
    d, j = cKDTree(train.colours[tr]).query(
        test.colours[te], k=1, p=np.inf, distance_upper_bound=test.same_colour * (1 + 1e-9)
    )
    ok = np.isfinite(d)
    pairs = np.stack([te[ok], tr[j[ok]]], axis=1).astype(np.int64)
    return pairs, d[ok] / 255.0
