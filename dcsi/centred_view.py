"""The centred view: each image read about its own centre of mass, at its own spread.

A copy cropped and resized back, drawn with a wider margin or squeezed is far from
its original in the fixed grid of the coarse rows (:mod:`dcsi.relative_links`), and
the registered distance tries small scalings about the image centre and reads a moved
copy about the centre of its content (:func:`dcsi.registration.recentred_rows`), but
at its own scale.  Where the content sits and how far it spreads can be read
from the image itself, as the classical moment normalisation of a shape does: this
view reads every image in the frame its content defines, so that a move or a change
of scale of the content no longer counts.

* **Background**: the median grey level of the image's border pixels; the *weight* of
  a pixel is its distance to that level, so dark drawings on white and bright ones on
  black are treated alike.
* **Frame**: the weighted centre ``(c_y, c_x)`` and standard deviations ``(s_y,
  s_x)`` of the pixel positions.
* **Centred rows** (:func:`centred_rows`): the smoothed grey image minus its
  background, read (bilinear, background outside the image) on a :data:`GRID` x
  :data:`GRID` lattice spanning ``c +- SPAN * s`` on each axis, then centred and
  scaled to unit length: the distance ``1 - cos`` is one minus Pearson's correlation,
  on the scale of the coarse rows.  Each axis has its own spread, so a change of
  aspect is undone too; a rotation is not.
* **Rule**: the density-relative rule of the other views
  (:func:`dcsi.relative_rule.relative_score`, same ``ratio``, ``k`` and
  ``max_distance``) with each image's reference distance by this view: a pair is
  linked when each image finds the other far closer, in its own frame, than its
  ``k``-th nearest image.

The frame is only as good as the background estimate: a copy given a border of
another colour than the background, or pasted on a canvas of another colour, moves
its frame (those copies are the registered distance's).  The lattice and its span
were set once, before any measurement, and not tuned; the view was added after a
check on copy kinds outside the benchmark's family (README, "Copies of kinds no
default was chosen on") had shown shifts of 10-15 % of the side as missed.  It is off
by default (``RelativeOptions(centred=True)``, ``--centred``): it found more copies at
the same or a higher precision on two icon themes and the clip-art planting, but cost
Fashion-MNIST, whose images all share one frame, 0.4-0.8 points of precision (README,
"The centred view").
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dcsi.aligned import grey_levels
from dcsi.neighbors import unit_rows

__all__ = ["GRID", "SPAN", "centred_rows", "frames"]

#: Lattice points per side of the centred rows.
GRID = 12
#: The lattice spans this many standard deviations of the content on each side of its
#: centre.
SPAN = 2.0
_CHUNK = 4096  # images read at a time


def frames(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background level, centre and spread of the content of each grey image.

    Parameters
    ----------
    grey : ndarray of shape (n, h, w), float

    Returns
    -------
    background : ndarray of shape (n,), float64
        The median of the border pixels.
    centre : ndarray of shape (n, 2), float64
        Weighted mean ``(row, column)`` of the pixel positions, weights ``|grey -
        background|`` (the middle of the image for a uniform one).
    spread : ndarray of shape (n, 2), float64
        Weighted standard deviation of the rows and of the columns (at least 0.5 px;
        a quarter of the side for a uniform image).
    """
    G = np.asarray(grey, dtype=np.float64)
    h, w = G.shape[1:]
    border = np.concatenate([G[:, 0, :], G[:, -1, :], G[:, 1:-1, 0], G[:, 1:-1, -1]], axis=1)
    background = np.median(border, axis=1)
    W = np.abs(G - background[:, None, None])
    total = W.sum(axis=(1, 2))
    flat = total <= 1e-9 * h * w
    total = np.where(flat, 1.0, total)
    ys, xs = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    wy, wx = W.sum(axis=2), W.sum(axis=1)  # (n, h), (n, w)
    cy, cx = wy @ ys / total, wx @ xs / total
    vy = np.einsum("nh,nh->n", wy, (ys[None] - cy[:, None]) ** 2) / total
    vx = np.einsum("nw,nw->n", wx, (xs[None] - cx[:, None]) ** 2) / total
    centre = np.stack([np.where(flat, (h - 1) / 2, cy), np.where(flat, (w - 1) / 2, cx)], 1)
    spread = np.stack([np.where(flat, h / 4, np.sqrt(vy)), np.where(flat, w / 4, np.sqrt(vx))], 1)
    return background, centre, np.maximum(spread, 0.5)


def centred_rows(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """The centred view of every image, as unit rows.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
        The images at the working size (colour: the channel mean), ``h, w >= 2``.
    sigma : float, default=1.0
        Gaussian smoothing in pixels (0: none) before the frame is read.

    Returns
    -------
    ndarray of shape (n, GRID * GRID), float32
        Centred unit rows (zero rows for uniform images).
    """
    X = np.asarray(images)
    out = np.empty((len(X), GRID * GRID), dtype=np.float32)
    t = np.linspace(-SPAN, SPAN, GRID)
    for s in range(0, len(X), _CHUNK):
        G = grey_levels(X[s : s + _CHUNK]).astype(np.float64)
        if sigma > 0:
            G = ndimage.gaussian_filter(G, (0, sigma, sigma), mode="nearest")
        background, centre, spread = frames(G)
        m = len(G)
        # one bilinear read of the stack: (image, row, column) coordinates per point
        rows = centre[:, 0, None, None] + spread[:, 0, None, None] * t[None, :, None]
        cols = centre[:, 1, None, None] + spread[:, 1, None, None] * t[None, None, :]
        coords = np.stack(
            np.broadcast_arrays(np.arange(m, dtype=np.float64)[:, None, None], rows, cols)
        )
        v = ndimage.map_coordinates(
            G - background[:, None, None], coords, order=1, mode="constant", cval=0.0
        )
        out[s : s + m] = v.reshape(m, -1)
    out -= out.mean(axis=1, keepdims=True)
    return unit_rows(out, np.float32)
