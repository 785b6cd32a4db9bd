"""Wavelet coefficients of images and the class-level wavelet similarity.

Each image becomes one row of the coefficient matrix ``W``: ``pywt.wavedec2`` with
``wavelet`` (default ``"db1"``, the Haar wavelet of Yousefzadeh's code), ``level``
(default 1) and ``mode``; the approximation and all detail arrays are flattened and
concatenated (for a 28 x 28 image and ``db1``, level 1: 4 x 14 x 14 = 784 values; for
32 x 32 x 3: 3,072).  Rows are produced in blocks, so ``W`` never has to be held whole.

Images are brought to one size by the source (``ImageSet.to_array(size=...)``); in-memory
arrays must already share one size.  Colour: an ``(n, h, w, c)`` array is transformed per
channel and the channels' coefficients are concatenated (as the paper's 32x32x3 ->
3,072); sources are read as grey levels (``color="L"``) unless ``color="RGB"``.

The class-level matrix uses the same class-sums identity as the CNN matrix: the mean
pairwise cosine similarity of the coefficient rows of two classes is
``s_a . s_b / (n_a n_b)`` with ``s_c`` the sum of the unit-normalised rows of class c
(:func:`dcsi.similarity.class_cosine.class_stats`), summed block by block.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dcsi._validation import check_array, check_choice, check_int, check_labels
from dcsi.exceptions import InvalidParameterError

__all__ = [
    "wavelet_coefficients",
    "iter_wavelet_blocks",
    "n_coefficients",
    "WaveletSimilarity",
    "class_wavelet_similarity",
]

_MODES = ("symmetric", "periodization", "zero", "constant", "smooth", "periodic",
          "reflect", "antisymmetric", "antireflect")


def _check_wavelet(wavelet: str, level: int, mode: str, caller: str) -> None:
    import pywt

    if wavelet not in pywt.wavelist(kind="discrete"):
        raise InvalidParameterError(
            f"The 'wavelet' parameter of {caller} must be a discrete wavelet name such "
            f"as 'db1', 'haar', 'db2', 'sym4' (see pywt.wavelist(kind='discrete')). "
            f"Got {wavelet!r} instead."
        )
    check_int(level, "level", caller, min_value=1)
    check_choice(mode, "mode", caller, _MODES)


def _check_images(images: Any, caller: str) -> np.ndarray:
    arr = check_array(images, "images", caller, ndim=(3, 4))
    if arr.dtype != np.uint8:
        raise InvalidParameterError(
            f"The 'images' parameter of {caller} must be uint8 images (n, h, w[, c]). "
            f"Got dtype {arr.dtype} instead; convert with np.clip(x, 0, 255).astype(np.uint8)."
        )
    return arr


def _transform(batch: np.ndarray, wavelet: str, level: int, mode: str) -> np.ndarray:
    import pywt

    x = batch.astype(np.float32)
    coeffs = pywt.wavedec2(x, wavelet, mode=mode, level=level, axes=(1, 2))
    parts = [coeffs[0].reshape(len(x), -1)]
    for details in coeffs[1:]:
        parts.extend(c.reshape(len(x), -1) for c in details)
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def n_coefficients(shape: tuple[int, ...], *, wavelet: str = "db1", level: int = 1,
                   mode: str = "symmetric") -> int:
    """Number of coefficients (columns of ``W``) for one image of ``shape`` (h, w[, c])."""
    probe = np.zeros((1, *shape), dtype=np.uint8)
    return int(_transform(probe, wavelet, level, mode).shape[1])


def iter_wavelet_blocks(
    images: np.ndarray,
    *,
    wavelet: str = "db1",
    level: int = 1,
    mode: str = "symmetric",
    batch_size: int = 4096,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, block)`` with the coefficient rows of ``images[start:start+b]``.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c), uint8
    wavelet : str, default="db1"
    level : int, default=1
    mode : str, default="symmetric"
        PyWavelets signal-extension mode (all modes give the same coefficients for
        ``db1`` on even sizes).
    batch_size : int, default=4096

    Yields
    ------
    start : int
    block : ndarray of shape (b, d), float32
    """
    arr = _check_images(images, "iter_wavelet_blocks")
    _check_wavelet(wavelet, level, mode, "iter_wavelet_blocks")
    check_int(batch_size, "batch_size", "iter_wavelet_blocks", min_value=1)
    for start in range(0, arr.shape[0], batch_size):
        yield start, _transform(arr[start:start + batch_size], wavelet, level, mode)


def wavelet_coefficients(
    images: np.ndarray,
    *,
    wavelet: str = "db1",
    level: int = 1,
    mode: str = "symmetric",
    batch_size: int = 4096,
) -> np.ndarray:
    """The coefficient matrix ``W``: one row of vectorised ``wavedec2`` output per image.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c), uint8
    wavelet, level, mode, batch_size
        See :func:`iter_wavelet_blocks`.

    Returns
    -------
    ndarray of shape (n, d), float32
        Approximation coefficients first, then the (horizontal, vertical, diagonal)
        details from the coarsest level to the finest, each flattened in C order.
    """
    arr = _check_images(images, "wavelet_coefficients")
    _check_wavelet(wavelet, level, mode, "wavelet_coefficients")
    d = n_coefficients(arr.shape[1:], wavelet=wavelet, level=level, mode=mode)
    out = np.empty((arr.shape[0], d), dtype=np.float32)
    for start, block in iter_wavelet_blocks(arr, wavelet=wavelet, level=level, mode=mode,
                                            batch_size=batch_size):
        out[start:start + len(block)] = block
    return out


@dataclass(frozen=True)
class WaveletSimilarity:
    """Class-level mean pairwise cosine similarity of wavelet coefficient rows.

    Attributes
    ----------
    matrix : ndarray of shape (n_classes, n_classes), float64
        Off-diagonal: mean over all cross-class pairs; diagonal: mean over within-class
        pairs without self-pairs (NaN for a class with fewer than two images).
    sums : ndarray of shape (n_classes, d), float64
        Per-class sums of the unit-normalised rows (mergeable across shards).
    counts : ndarray of shape (n_classes,), int64
    classes : list of str
    params : dict
    """

    matrix: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    classes: list[str]
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The card's ``similarity.wavelet`` entry: ``matrix``, ``diagonal``, ``params``."""
        from dcsi._json import to_jsonable

        return {
            "matrix": to_jsonable(np.asarray(self.matrix, dtype=np.float64)),
            "diagonal": "mean cosine similarity of the wavelet coefficient vectors over "
                        "pairs of distinct images of the same class (null for a class "
                        "with fewer than two images)",
            "params": dict(self.params),
        }


def class_wavelet_similarity(
    source_or_images: Any,
    labels: Any = None,
    *,
    wavelet: str = "db1",
    level: int = 1,
    mode: str = "symmetric",
    size: int | tuple[int, int] | None = None,
    color: str = "L",
    n_classes: int | None = None,
    classes: list[str] | None = None,
    batch_size: int = 4096,
) -> WaveletSimilarity:
    """K x K class similarity from wavelet coefficients, streamed in blocks.

    Parameters
    ----------
    source_or_images : ImageSet, source accepted by ``dcsi.open_source``, or ndarray
        In-memory images of shape (n, h, w[, c]) uint8 need ``labels``.
    labels : array-like of shape (n,), int, default=None
    wavelet : str, default="db1"
    level : int, default=1
    mode : str, default="symmetric"
    size : int or (h, w), default=None
        Image size for a source (``None``: native or median size).
    color : {"L", "RGB"}, default="L"
        How a source is read; ignored for arrays (their channels are kept).
    n_classes : int, default=None
    classes : list of str, default=None
    batch_size : int, default=4096

    Returns
    -------
    WaveletSimilarity
    """
    from dcsi.similarity.class_cosine import class_stats, cosine_from_stats

    _check_wavelet(wavelet, level, mode, "class_wavelet_similarity")
    check_choice(color, "color", "class_wavelet_similarity", ("L", "RGB"))
    if isinstance(source_or_images, np.ndarray) and labels is not None:
        arr = _check_images(source_or_images, "class_wavelet_similarity")
        y = check_labels(labels, arr.shape[0], "class_wavelet_similarity")
        blocks = ((np.arange(s, min(s + batch_size, len(arr))), arr[s:s + batch_size])
                  for s in range(0, len(arr), batch_size))
        names = classes
    else:
        from dcsi.sources import open_source

        src = open_source(source_or_images, labels=labels)
        if src.labels is None:
            raise InvalidParameterError(
                "class_wavelet_similarity needs labels; the source has no label column "
                "(pass labels= or --label-column)."
            )
        y = np.asarray(src.labels, dtype=np.int64)
        names = classes if classes is not None else list(src.classes)
        if n_classes is None:
            n_classes = len(src.classes)
        blocks = src.iter_arrays(size=size, mode=color, batch_size=batch_size)
    k = int(y.max()) + 1 if n_classes is None else int(n_classes)
    stats = None
    for idx, batch in blocks:
        w = _transform(np.asarray(batch, dtype=np.uint8), wavelet, level, mode)
        part = class_stats(w, y[np.asarray(idx)], k)
        stats = part if stats is None else stats + part
    matrix = cosine_from_stats(stats)
    names = names if names is not None else [str(i) for i in range(k)]
    return WaveletSimilarity(
        matrix=matrix, sums=stats.sums, counts=stats.counts, classes=list(names),
        params={"wavelet": wavelet, "level": int(level), "mode": mode,
                "metric": "cosine", "color": color,
                "size": list(size) if isinstance(size, tuple) else size},
    )
