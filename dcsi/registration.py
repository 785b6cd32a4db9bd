"""The registered distance: two images compared after the best small rotation or scaling.

A copy turned by a few degrees, zoomed in or out, squeezed along one axis or given a
border keeps its content but moves every pixel, so a pixel-wise measure reads it as a
different image and the density-relative stage of the copy search
(:mod:`dcsi.relative_links`) misses it.  This module measures a pair after registering
one image on the other:

* **Transforms** (:func:`moves`, :func:`registration_matrices`): the identity,
  rotations about the image centre by :data:`ROTATIONS` degrees, scalings about the
  centre by :data:`SCALES` and scalings of one axis by :data:`ASPECTS` (each set
  closed under inversion), with bilinear interpolation and the nearest edge pixel
  outside the image (:func:`scipy.ndimage.affine_transform` with ``order=1,
  mode="nearest"`` computes the same numbers).  A border of a tenth of the side
  added and resized back is the scaling ``1 / 1.2``.
* **Inner window**: each transform is read on the window that leaves
  ``round(INNER_SHARE * side)`` pixels (at least 1) on every side, so the corners a
  rotation uncovers weigh little, averaged over ``p x p`` blocks (``p =
  round(inner side / 12)``, at least 1: 2 for 28- and 32-px images), then centred and
  scaled to unit length.  The transform and the block means are one sparse matrix per
  transform, applied to the smoothed grey images.
* **Registered distance** of ``a`` and ``b`` (:func:`registered_distance`): the
  smallest ``1 - T(a) . b`` or ``1 - T(b) . a`` over the transforms ``T`` (``b`` read
  untransformed): one minus Pearson's correlation of the windows after the best
  transform of either image, the scale of the coarse distance ``1 - cos``.

The rows of every image under every transform (:func:`registered_rows`) cost
``len(transforms) * p`` floats per image (13 x 121 for a 28-px image), a size that
does not grow with the images since they are read at the working size.

The transforms were chosen on the development split of the copy benchmark
(Fashion-MNIST test, every copy family visible); README, "Benchmark: a broad copy
family, held out by family", reports them on data and families they were not chosen
on.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import sparse

from dcsi.aligned import grey_levels
from dcsi.block_map import available_cpus

__all__ = [
    "ASPECTS",
    "INNER_SHARE",
    "MIN_SIDE",
    "ROTATIONS",
    "SCALES",
    "moves",
    "registered_distance",
    "registered_rows",
    "registration_matrices",
    "window_geometry",
]

#: Rotations about the centre, in degrees, compared besides the identity.
ROTATIONS = (-8.0, -4.0, 4.0, 8.0)
#: Scalings about the centre compared besides the identity (closed under inversion).
SCALES = (1 / 1.2, 1 / 1.1, 1.1, 1.2)
#: Scalings of one axis (each axis in turn) compared besides the identity.
ASPECTS = (0.9, 1 / 0.9)
#: Margin left out on every side of the compared window, as a share of the side.
INNER_SHARE = 0.1
#: Smallest image side the registered distance is computed for.
MIN_SIDE = 16
_GRID = 12  # the compared window has about this many block means per side
_CHUNK = 4096  # images transformed at a time


def window_geometry(shape: tuple[int, int]) -> tuple[int, int]:
    """``(margin, block)`` of the compared window for ``(h, w)`` images.

    Parameters
    ----------
    shape : (h, w)

    Returns
    -------
    (int, int)
        Pixels left out on every side (at least 1) and the side of the averaged blocks.
    """
    side = min(shape)
    margin = max(1, round(INNER_SHARE * side))
    return margin, max(1, round((side - 2 * margin) / _GRID))


def moves() -> list[tuple[float, float, float]]:
    """The transforms compared, as ``(angle in degrees, vertical scale, horizontal
    scale)`` about the image centre: the identity first, then :data:`ROTATIONS`,
    :data:`SCALES` (both axes) and :data:`ASPECTS` (one axis)."""
    return (
        [(0.0, 1.0, 1.0)]
        + [(a, 1.0, 1.0) for a in ROTATIONS]
        + [(0.0, s, s) for s in SCALES]
        + [(0.0, s, 1.0) for s in ASPECTS]
        + [(0.0, 1.0, s) for s in ASPECTS]
    )


def _sampling(
    h: int, w: int, margin: int, angle: float, scale_y: float, scale_x: float
) -> sparse.csr_matrix:
    """``(ih * iw, h * w)``: bilinear reads of the inner window of the image rotated by
    ``angle`` degrees and then scaled by ``(scale_y, scale_x)`` about its centre (edge
    pixels outside)."""
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ys, xs = np.mgrid[margin : h - margin, margin : w - margin].astype(np.float64)
    cos, sin = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    y, x = ys - cy, xs - cx
    src_y = np.clip((cos * y - sin * x) / scale_y + cy, 0, h - 1)
    src_x = np.clip((sin * y + cos * x) / scale_x + cx, 0, w - 1)
    y0 = np.minimum(np.floor(src_y).astype(np.int64), h - 2)
    x0 = np.minimum(np.floor(src_x).astype(np.int64), w - 2)
    fy, fx = src_y - y0, src_x - x0
    corner = y0 * w + x0
    cols = np.stack([corner, corner + 1, corner + w, corner + w + 1], axis=-1).reshape(-1)
    vals = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=-1)
    rows = np.repeat(np.arange(ys.size), 4)
    return sparse.csr_matrix((vals.reshape(-1), (rows, cols)), shape=(ys.size, h * w))


def _block_means(n: int, block: int) -> sparse.csr_matrix:
    """``(n // block, n)``: means of consecutive blocks of ``block`` (a tail left out)."""
    m = n // block
    rows = np.repeat(np.arange(m), block)
    return sparse.csr_matrix(
        (np.full(m * block, 1.0 / block), (rows, np.arange(m * block))), shape=(m, n)
    )


def registration_matrices(shape: tuple[int, int]) -> sparse.csr_matrix:
    """Every transform's window, as one stacked sparse matrix.

    Parameters
    ----------
    shape : (h, w)
        Image size, ``h, w >= 4``.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (t * q, h * w), float32
        ``t = len(moves())`` transforms, the identity first; ``q`` block means of the
        inner window each.  ``M @ image.ravel()`` gives them all.
    """
    h, w = shape
    margin, block = window_geometry(shape)
    pool = sparse.kron(
        _block_means(h - 2 * margin, block), _block_means(w - 2 * margin, block), format="csr"
    )
    return sparse.vstack(
        [pool @ _sampling(h, w, margin, *move) for move in moves()], format="csr"
    ).astype(np.float32)


def registered_rows(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """The compared window of every image under every transform, as unit rows.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
        The images at the working size (colour: the channel mean), ``h, w >= 4``.
    sigma : float, default=1.0
        Gaussian smoothing in pixels (0: none), before the transforms.

    Returns
    -------
    ndarray of shape (n, t, q), float32
        Centred unit rows (zero rows for constant windows); ``[:, 0]`` is the identity.
    """
    from scipy import ndimage

    X = np.asarray(images)
    n, h, w = X.shape[:3]
    M = registration_matrices((h, w))
    t = len(moves())
    out = np.empty((n, t, M.shape[0] // t), dtype=np.float32)
    for s in range(0, n, _CHUNK):
        G = grey_levels(X[s : s + _CHUNK])
        if sigma > 0:
            G = ndimage.gaussian_filter(G, (0, sigma, sigma), mode="nearest")
        Z = np.asarray(M @ G.reshape(len(G), -1).T).T.reshape(len(G), t, -1)
        Z = Z - Z.mean(axis=2, keepdims=True)
        nrm = np.linalg.norm(Z, axis=2, keepdims=True)
        out[s : s + len(G)] = np.where(nrm > 1e-4, Z / np.maximum(nrm, 1e-4), 0.0)
    return out


def registered_distance(
    A: np.ndarray, B: np.ndarray, a: np.ndarray, b: np.ndarray, block: int = 1024
) -> np.ndarray:
    """The registered distance of the pairs ``(A[a[i]], B[b[i]])``.

    Parameters
    ----------
    A, B : ndarray of shape (n_a, t, q) and (n_b, t, q)
        :func:`registered_rows` of two image sets (or one set twice).
    a, b : ndarray of shape (m,), int
        The pairs.
    block : int, default=1024
        Pairs compared at a time (memory: ``2 * block * t * q`` floats).

    Returns
    -------
    ndarray of shape (m,), float64
        ``min_T min(1 - T(a) . b, 1 - T(b) . a)``, clipped at 0.
    """
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    out = np.empty(len(a), dtype=np.float64)

    def fill(s: int) -> None:
        Ra, Rb = A[a[s : s + block]], B[b[s : s + block]]
        c = np.maximum(
            np.einsum("mtq,mq->mt", Ra, Rb[:, 0], dtype=np.float64),
            np.einsum("mtq,mq->mt", Rb, Ra[:, 0], dtype=np.float64),
        )
        out[s : s + block] = np.maximum(1.0 - c.max(axis=1), 0.0)

    starts = range(0, len(a), block)
    if len(starts) > 1:  # blocks on one thread per CPU (each pair's value is its own)
        with ThreadPoolExecutor(available_cpus()) as pool:
            list(pool.map(fill, starts))
    else:
        for s in starts:
            fill(s)
    return out
