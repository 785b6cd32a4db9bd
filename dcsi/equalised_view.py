"""The equalised view: each image's grey levels replaced by their rank, then coarse rows.

A copy whose grey levels went through a monotone map -- histogram equalisation, a
strong gamma, a contrast stretch that saturates -- keeps the *order* of its pixels'
levels but not their spacing, and the coarse rows (:mod:`dcsi.relative_links`), which
remove only a uniform shift and scale, see it as far from its original as a look-alike
garment is.  Histogram equalisation maps an image's levels through its own cumulative
histogram, so any two images whose levels differ by a monotone map come out (nearly)
the same; the view compares those.

* **Equalisation** (:func:`equalise`): per grey image, the histogram-equalisation
  look-up table of ``PIL.ImageOps.equalize`` (the same bytes), vectorised over the
  images: ``lut[i] = (step // 2 + sum_{j < i} h[j]) // step``, ``step = (N - h[last])
  // 255`` with ``h`` the image's histogram, ``N`` its pixel count and ``last`` its
  highest level present; an image of one level, or one whose ``step`` is 0, is left
  as it is.  Colour images are compared in grey (the channel mean, rounded).
* **Equalised rows**: the coarse rows of the equalised images
  (:func:`dcsi.relative_links.coarse_rows` of :func:`equalise`, the same smoothing,
  block means and despeckling; :mod:`dcsi.relative_links` computes them).
* **Rule**: the density-relative rule of the other views with each image's reference
  distance by this view (:func:`dcsi.relative_rule.view_links`).

Equalising spreads the few levels of a flat background over the whole range, so the
compression noise of a dark background (a low-quality JPEG of a Fashion-MNIST image)
becomes large; such copies are the coarse rows' and the registered distance's. The view
is off by default (``RelativeOptions(equalised=True)``, ``--equalised``; README, "The
equalised view").
"""

from __future__ import annotations

import numpy as np

__all__ = ["equalise"]

_CHUNK = 4096  # images equalised at a time


def equalise(images: np.ndarray) -> np.ndarray:
    """Histogram-equalised grey images, as ``PIL.ImageOps.equalize`` gives them.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c), uint8
        Grey images, or colour ones (equalised in grey: the channel mean, rounded).

    Returns
    -------
    ndarray of shape (n, h, w), uint8
    """
    X = np.asarray(images)
    if X.ndim == 4:
        X = np.rint(X.astype(np.float32).mean(axis=3)).astype(np.uint8)
    n = len(X)
    out = np.empty(X.shape[:3], dtype=np.uint8)
    for s in range(0, n, _CHUNK):
        G = np.asarray(X[s : s + _CHUNK], dtype=np.uint8)
        m = len(G)
        flat = G.reshape(m, -1).astype(np.int64)
        hist = np.bincount((flat + 256 * np.arange(m)[:, None]).ravel(), minlength=256 * m)
        hist = hist.reshape(m, 256)
        present = hist > 0
        last = 255 - np.argmax(present[:, ::-1], axis=1)  # highest level present
        step = (flat.shape[1] - hist[np.arange(m), last]) // 255
        before = np.cumsum(hist, axis=1) - hist  # pixels below each level
        with np.errstate(divide="ignore", invalid="ignore"):
            lut = (step[:, None] // 2 + before) // np.maximum(step, 1)[:, None]
        keep = (present.sum(axis=1) <= 1) | (step == 0)
        lut[keep] = np.arange(256)
        lut = np.clip(lut, 0, 255).astype(np.uint8)
        out[s : s + m] = np.take_along_axis(lut, flat, axis=1).reshape(G.shape)
    return out
