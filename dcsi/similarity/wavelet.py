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

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from dcsi._progress import progress
from dcsi._validation import (
    Interval,
    check_array,
    check_choice,
    check_int,
    check_labels,
    check_memory,
    validate_fields,
)
from dcsi.exceptions import DataError, InvalidParameterError

__all__ = [
    "WaveletOptions",
    "WaveletRows",
    "WaveletSimilarity",
    "class_wavelet_similarity",
    "iter_wavelet_blocks",
    "n_coefficients",
    "wavelet_coefficients",
    "wavelet_rows",
]

_MODES = (
    "symmetric",
    "periodization",
    "zero",
    "constant",
    "smooth",
    "periodic",
    "reflect",
    "antisymmetric",
    "antireflect",
)


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


def n_coefficients(
    shape: tuple[int, ...], *, wavelet: str = "db1", level: int = 1, mode: str = "symmetric"
) -> int:
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
        yield start, _transform(arr[start : start + batch_size], wavelet, level, mode)


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
    blocks = iter_wavelet_blocks(
        arr, wavelet=wavelet, level=level, mode=mode, batch_size=batch_size
    )
    with progress(desc="wavelet coefficients", total=arr.shape[0], unit="img") as bar:
        for start, block in blocks:
            out[start : start + len(block)] = block
            bar.update(len(block))
    return out


@dataclass(frozen=True)
class WaveletOptions:
    """How images become the wavelet rows of the near-duplicate search.

    Attributes
    ----------
    wavelet : str, default="db1"
        A discrete wavelet of PyWavelets (the paper's code: Haar).
    level : int, default=1
    mode : str, default="symmetric"
        Signal-extension mode.
    tau : float, default=1e5
        Condition-number bound of the rank-revealing QR column selection (> 1).
    rank_tol : float, default=1e-5
        Tolerance of the reported numerical rank, in (0, 1).
    """

    wavelet: str = "db1"
    level: int = 1
    mode: str = "symmetric"
    tau: float = 1e5
    rank_tol: float = 1e-5

    #: Declared constraints of the numeric fields (the wavelet name is checked
    #: against PyWavelets' list).
    CONSTRAINTS: ClassVar[dict[str, list[Any]]] = {
        "level": [Interval(int, 1, None, closed="left")],
        "tau": [Interval(float, 1.0, None, closed="neither")],
        "rank_tol": [Interval(float, 0.0, 1.0, closed="neither")],
    }

    def __post_init__(self) -> None:
        validate_fields(self, "WaveletOptions")
        _check_wavelet(self.wavelet, self.level, self.mode, "WaveletOptions")

    def to_dict(self) -> dict:
        """``wavelet``, ``level``, ``mode``, ``tau``, ``rank_tol``."""
        return {
            "wavelet": self.wavelet,
            "level": self.level,
            "mode": self.mode,
            "tau": self.tau,
            "rank_tol": self.rank_tol,
        }


@dataclass(frozen=True)
class WaveletRows:
    """Unit wavelet rows of a set of images, on the RRQR-selected coefficients.

    Attributes
    ----------
    rows : ndarray of shape (n, m), float32
        One unit row per image: the selected coefficients, the approximation band
        centred per image (a uniform change of brightness only moves that band) and
        scaled to unit length (a change of contrast); ``1 - rows_i . rows_j`` is the
        distance of the near-duplicate search.
    columns : ndarray of shape (m,), int64
        The selected coefficients, as indices of the full coefficient vector.
    n_coefficients : int
        Length of the full coefficient vector of one image.
    selection : ColumnSelection or None
        The rank-revealing QR report (None when ``columns`` were given).
    """

    rows: np.ndarray
    columns: np.ndarray
    n_coefficients: int
    selection: Any = None

    def summary(self) -> dict:
        """The column-selection report recorded in results (``rrqr``)."""
        if self.selection is None:
            return {"m": len(self.columns), "n_coefficients": self.n_coefficients}
        return {**self.selection.to_dict(), "n_coefficients": self.n_coefficients}


def wavelet_rows(
    images: np.ndarray,
    *,
    options: WaveletOptions | None = None,
    columns: np.ndarray | None = None,
    coefficients: np.ndarray | None = None,
) -> WaveletRows:
    """Wavelet rows of images for the near-duplicate search (Yousefzadeh's steps 1-2).

    1. The coefficient matrix ``W`` (:func:`wavelet_coefficients`), computed once and
       kept up to :data:`KEEP_COEFFICIENTS_BYTES` (1 GiB), recomputed block by block on
       each pass above (so 10^6 28-px images hold only their rows, 3 GiB).
    2. Unless ``columns`` are given: constant columns dropped (they carry nothing and
       make ``W`` singular; the paper drops the all-zero ones), then the rank-revealing
       QR selection (:func:`dcsi.rrqr.select_columns`) of the ``m`` most independent
       columns with ``cond(W[:, P[:m]]) < tau``.
    3. Unit rows on the selected columns, the approximation band centred per image.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c), uint8
    options : WaveletOptions, default=None
    columns : ndarray of int, default=None
        Coefficients selected on another set (a test set uses the training set's).
    coefficients : ndarray of shape (n, d), float32, default=None
        ``W`` already computed with ``options``' wavelet, level and mode
        (:func:`wavelet_coefficients`, or per image elsewhere: each row depends on its
        image alone, so the rows are the same bits), used instead of computing it.

    Returns
    -------
    WaveletRows

    Raises
    ------
    DataError
        When no coefficient varies (all images identical) and ``columns`` is None, or
        when the work would not fit in the memory available (the message says how much
        it needs and that a smaller ``size`` lowers it).
    """
    from dcsi.neighbors import unit_rows
    from dcsi.rrqr import select_columns

    options = WaveletOptions() if options is None else options
    kw: dict[str, Any] = {"wavelet": options.wavelet, "level": options.level, "mode": options.mode}
    arr = _check_images(images, "wavelet_rows")
    n = arr.shape[0]
    d = n_coefficients(arr.shape[1:], **kw)
    if coefficients is not None:
        coefficients = np.asarray(coefficients, dtype=np.float32)
    if coefficients is not None and coefficients.shape != (n, d):
        raise InvalidParameterError(
            f"The 'coefficients' parameter of wavelet_rows must have shape ({n}, {d}) for "
            f"these images and options. Got {coefficients.shape} instead."
        )
    blocks = _CoefficientBlocks(arr, kw, coefficients)
    # the rows (float32), W when it is kept (float32) and the QR factors (float64)
    need = 4.0 * n * d + blocks.nbytes + (0 if columns is not None else 3 * 8.0 * d * d)
    check_memory(
        need,
        f"The wavelet rows of {n} images of {arr.shape[1]} x {arr.shape[2]} pixels ({d} "
        "coefficients each)",
        "analyse them at a smaller size (size= in Python, --size on the command line).",
    )
    selection = None
    if columns is None:
        lo, hi = np.full(d, np.inf, np.float32), np.full(d, -np.inf, np.float32)
        for _, block in blocks():
            np.minimum(lo, block.min(axis=0), out=lo)
            np.maximum(hi, block.max(axis=0), out=hi)
        varying = np.flatnonzero(hi > lo)
        if varying.size == 0:
            raise DataError(
                "All images are identical: no wavelet coefficient varies, so "
                "there is nothing to select (every image is a duplicate)."
            )
        selection = select_columns(
            blocks.W[:, varying]
            if blocks.W is not None
            else lambda: (b[:, varying] for _, b in blocks()),
            tau=options.tau,
            rank_tol=options.rank_tol,
        )
        columns = varying[selection.columns]
    approx = columns < _n_approx(arr.shape[1:], **kw)
    rows = np.empty((n, len(columns)), dtype=np.float32)
    for start, block in blocks():
        X = block[:, columns]
        if approx.any():
            X[:, approx] -= X[:, approx].mean(axis=1, keepdims=True)
        rows[start : start + len(X)] = unit_rows(X.astype(np.float64))
    return WaveletRows(
        rows=rows, columns=np.asarray(columns), n_coefficients=d, selection=selection
    )


#: ``W`` is computed once and kept up to this many bytes; a larger one is recomputed
#: on each of the (up to four) passes of :func:`wavelet_rows` (a pass costs about 35 s
#: per 10^6 28-px images on 2 cores, keeping ``W`` 3 GiB).
KEEP_COEFFICIENTS_BYTES = 1 << 30


class _CoefficientBlocks:
    """The row blocks of ``W`` (:func:`iter_wavelet_blocks`, 4,096 rows), as often as
    asked: from ``W`` kept in memory when small, recomputed otherwise."""

    def __init__(self, images: np.ndarray, kw: dict[str, Any], W: np.ndarray | None) -> None:
        self.images, self.kw = images, kw
        nbytes = 4.0 * images.shape[0] * n_coefficients(images.shape[1:], **kw)
        self.keep = nbytes <= KEEP_COEFFICIENTS_BYTES
        self.nbytes = nbytes if self.keep and W is None else 0.0  # a given W is held already
        self.W = W

    def __call__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.keep and self.W is None:
            self.W = wavelet_coefficients(self.images, **self.kw)
        if self.W is not None:
            W = self.W
            return ((s, W[s : s + 4096]) for s in range(0, W.shape[0], 4096))
        blocks = iter_wavelet_blocks(self.images, **self.kw)
        return progress(blocks, desc="wavelet coefficients", unit="block")


def _n_approx(shape: tuple[int, ...], *, wavelet: str, level: int, mode: str) -> int:
    """Number of approximation coefficients of one image of ``shape`` (they come first)."""
    import pywt

    probe = pywt.wavedec2(
        np.zeros(shape, dtype=np.float32), wavelet, mode=mode, level=level, axes=(0, 1)
    )
    return int(probe[0].size)


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
    spreads : ndarray of shape (n_classes, n_classes), float64, or None
        Directional spreads of the unit rows (:func:`dcsi.class_spreads`): ``[a, b]`` is
        the variance of class a along the line from class b's centre to its own.  The
        DCSI's pixel view (definition 4).
    """

    matrix: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    classes: list[str]
    params: dict = field(default_factory=dict)
    spreads: np.ndarray | None = None

    def to_dict(self) -> dict:
        """The card's ``similarity.wavelet`` entry: ``matrix``, ``diagonal``, ``params``
        and, when computed, ``spreads``."""
        from dcsi._json import to_jsonable

        out = {
            "matrix": to_jsonable(np.asarray(self.matrix, dtype=np.float64)),
            "diagonal": "mean cosine similarity of the wavelet coefficient vectors over "
            "pairs of distinct images of the same class (null for a class "
            "with fewer than two images)",
            "params": dict(self.params),
        }
        if self.spreads is not None:
            out["spreads"] = to_jsonable(np.asarray(self.spreads, dtype=np.float64))
        return out


def _labelled_blocks(
    source_or_images: Any,
    labels: Any,
    classes: list[str] | None,
    n_classes: int | None,
    size: Any,
    color: str,
    batch_size: int,
) -> tuple[np.ndarray, list[str] | None, int | None, Callable[[], Iterator[tuple[Any, Any]]]]:
    """The labels (n,), class names, class count and a factory of ``(indices, images)``
    blocks (each call reads them again) of :func:`class_wavelet_similarity`'s input."""
    if isinstance(source_or_images, np.ndarray):
        arr = _check_images(source_or_images, "class_wavelet_similarity")
        if labels is None:
            raise InvalidParameterError(
                "class_wavelet_similarity needs labels for in-memory images; pass "
                "labels= (one class id per image)."
            )
        y = check_labels(labels, arr.shape[0], "class_wavelet_similarity")

        def array_blocks() -> Iterator[tuple[Any, Any]]:
            for s in range(0, len(arr), batch_size):
                yield np.arange(s, min(s + batch_size, len(arr))), arr[s : s + batch_size]

        return y, classes, n_classes, array_blocks
    if hasattr(source_or_images, "iter_arrays"):  # an ImageSet
        src = source_or_images
        if src.labels is None:
            raise InvalidParameterError(
                "class_wavelet_similarity needs labels; the image set has no label "
                "column (pass --label-column, or labelled images)."
            )
        names = classes if classes is not None else list(src.classes)

        def source_blocks() -> Iterator[tuple[Any, Any]]:
            return iter(src.iter_arrays(size=size, mode=color, batch_size=batch_size))

        k = len(src.classes) if n_classes is None else n_classes
        return np.asarray(src.labels, dtype=np.int64), names, k, source_blocks
    raise InvalidParameterError(
        "The 'source_or_images' parameter of class_wavelet_similarity must be an "
        "ImageSet (dcsi.open_source) or a uint8 array (n, h, w[, c]). Got "
        f"{type(source_or_images).__name__} instead."
    )


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
    coefficients: np.ndarray | None = None,
    spreads: bool = True,
) -> WaveletSimilarity:
    """K x K class similarity from wavelet coefficients, streamed in blocks.

    Parameters
    ----------
    source_or_images : ImageSet or ndarray of shape (n, h, w[, c]), uint8
        An opened image set (:func:`dcsi.open_source`), or in-memory images with
        ``labels``.
    labels : array-like of shape (n,), int, default=None
    wavelet : str, default="db1"
    level : int, default=1
    mode : str, default="symmetric"
    size : int or (h, w), default=None
        Image size for a source (``None``: its working size,
        :meth:`~dcsi.sources.ImageSet.working_size`).
    color : {"L", "RGB"}, default="L"
        How a source is read; ignored for arrays (their channels are kept).
    n_classes : int, default=None
    classes : list of str, default=None
    batch_size : int, default=4096
    coefficients : ndarray of shape (n, d), float32, default=None
        With in-memory images: their coefficient rows already computed with these
        options (see :func:`wavelet_rows`), used instead of computing them.
    spreads : bool, default=True
        Also compute the directional spreads (a second pass over the blocks, once the
        class centres are known; an image set is read twice).

    Returns
    -------
    WaveletSimilarity
    """
    from dcsi.similarity.class_cosine import class_stats, cosine_from_stats
    from dcsi.similarity.spreads import spread_sums, spreads_from_sums

    _check_wavelet(wavelet, level, mode, "class_wavelet_similarity")
    check_choice(color, "color", "class_wavelet_similarity", ("L", "RGB"))
    y, names, n_classes, blocks = _labelled_blocks(
        source_or_images, labels, classes, n_classes, size, color, batch_size
    )
    k = int(y.max()) + 1 if n_classes is None else int(n_classes)

    def rows(desc: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for idx, batch in progress(blocks(), desc=desc, unit="block"):
            if coefficients is not None and isinstance(source_or_images, np.ndarray):
                yield np.asarray(idx), coefficients[np.asarray(idx)]
            else:
                yield np.asarray(idx), _transform(np.asarray(batch, np.uint8), wavelet, level, mode)

    stats = None
    for idx, w in rows("class wavelet similarity"):
        part = class_stats(w, y[idx], k, block_rows=max(1, len(w)))
        stats = part if stats is None else stats + part
    assert stats is not None  # an image set or array is never empty
    matrix = cosine_from_stats(stats)
    directional = None
    if spreads:
        centres, total = stats.centres, np.zeros((k, k))
        for idx, w in rows("wavelet class spreads"):
            total += spread_sums(w, y[idx], centres, stats.counts)
        directional = spreads_from_sums(total, stats.counts)
    names = names if names is not None else [str(i) for i in range(k)]
    return WaveletSimilarity(
        matrix=matrix,
        sums=stats.sums,
        counts=stats.counts,
        classes=list(names),
        params={
            "wavelet": wavelet,
            "level": int(level),
            "mode": mode,
            "metric": "cosine",
            "color": color,
            "size": list(size) if isinstance(size, tuple) else size,
        },
        spreads=directional,
    )
