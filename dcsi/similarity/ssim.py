"""Structural similarity (SSIM) between all pairs of images, exactly as scikit-image.

Every value equals::

    skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False,
                                          data_range=data_range,
                                          channel_axis=-1)  # colour images only

(to about 1e-12 in float64), including skimage's window (a Gaussian of sigma 1.5
truncated at 3.5 sigma, so ``win_size = 11``), its ``"reflect"`` border handling and its
crop of ``(win_size - 1) // 2`` pixels from each border before averaging.  Colour images
give the mean of the per-channel SSIMs.

How it is fast (Yousefzadeh, Algorithm 2, needs all ``n (n - 1) / 2`` pairs):

- the local means ``mu_x`` and variances ``var_x`` of each image are computed once per
  image (two separable filters), not once per pair;
- only the local cross term ``E_w[xy]`` depends on the pair, and it is a Gram product of
  Gaussian-weighted patches.  The Gaussian window is separable, so the product is done
  in two stages: for every channel, image row ``r`` and output column ``p``, the dot
  product of the two images' column windows (``T[r, p] = sum_q w_c[p, q] x[r, q]
  y[r, q]``, a batched Gram product of 11-long vectors for a whole block of images
  against another block), then the row filter on a band of rows as one matrix product
  (``2 E_w[xy] = 2 F_r @ T``).  This is about 4x fewer operations than the 121-long 2-D
  patches;
- the SSIM map needs no element-wise work beyond three in-place passes: the constants
  ``C1 + C2`` ride along in the Gram product (one more entry in every window), and the
  luminance numerator ``2 mu_x mu_y + C1`` and the denominator
  ``(mu_x^2 + mu_y^2 + C1) (var_x + var_y + C2)`` of every pair at an output pixel are
  two small matrix products of per-image moments (rank 2 and rank 4), so the map is
  ``(U - n) n / d`` with ``U = 2 E_w[xy] + C1 + C2``.  Colour channels are further
  rows of the same loop, and everything stays in float64: ``E_w[xy] - mu_x mu_y``
  cancels digits that float32 does not have;
- blocks hold 32 images for 28 to 40 px images (stage 1's product for one output
  column, ``h x b x b``, stays in the core's cache until the row filter reads it), and
  the map is done on chunks of output rows of about 256 KiB;
- the symmetric matrix is computed block by block over the upper triangle only, so
  memory stays at a few blocks whatever the number of images; large runs return only
  what is needed (pairs above a threshold, or each image's top-k).  The products are
  small, so BLAS runs single-threaded (threads only spin on a busy machine).  In
  symmetric runs each block's right-hand operands are prepared once and cached (up to
  128 MiB), its left-hand ones once per block row.

The data range (``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2``) is fixed per dataset, never
estimated per image: 255 for uint8 images; float images must pass ``data_range``.

Small images: skimage refuses images smaller than its window (11 x 11 with the settings
above) unless ``win_size`` is given; with an explicit odd ``win_size`` it keeps the
Gaussian of sigma 1.5 but crops ``(win_size - 1) // 2`` pixels.  dcsi follows the same
rule: the functions here raise :class:`~dcsi.exceptions.InvalidParameterError` naming the
minimum size, and accept ``win_size`` with skimage's meaning.  :func:`class_ssim` (used by
``dcsi analyze`` on, e.g., sklearn's 8 x 8 digits) defaults to ``win_size="auto"``: 11
when it fits, else the largest odd size that fits (7 for 8 x 8 images), recorded in the
card's ``params``.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from dcsi._progress import progress
from dcsi._validation import check_array, check_choice, check_float, check_int, check_labels
from dcsi.block_map import single_thread_blas
from dcsi.exceptions import InvalidParameterError

__all__ = [
    "DEFAULT_MAX_IMAGES",
    "DEFAULT_MAX_PER_CLASS",
    "DEFAULT_WIN_SIZE",
    "SIGMA",
    "ClassSSIM",
    "auto_win_size",
    "class_ssim",
    "ssim_cross",
    "ssim_matrix",
    "ssim_pairs",
    "ssim_threshold_pairs",
    "ssim_topk",
]

logger = logging.getLogger(__name__)

#: Gaussian window of Wang et al. (2004) as skimage builds it
SIGMA = 1.5
_TRUNCATE = 3.5
_RADIUS = int(_TRUNCATE * SIGMA + 0.5)
#: skimage's window side for ``gaussian_weights=True, sigma=1.5``
DEFAULT_WIN_SIZE = 2 * _RADIUS + 1
K1 = 0.01
K2 = 0.03
#: classes larger than this are subsampled by :func:`class_ssim` unless told otherwise
DEFAULT_MAX_PER_CLASS = 500
#: images used in all by :func:`class_ssim` by default: with K classes each keeps at most
#: ``min(500, 5000 // K)`` (at least 2), so the pairs stay at about 12.5 million whatever K
DEFAULT_MAX_IMAGES = 5000

# float64 bytes of stage 1's product for one output column, kept in the cache
_STAGE1_BYTES = 320 * 2**10
# float64 bytes of one chunk of the SSIM map (output pixels x b x b), kept in the cache
_PIXEL_BYTES = 256 * 2**10
# bytes of prepared blocks (row windows) kept between row passes
_CACHE_BYTES = 128 * 2**20
# float64 bytes of the product images held at once by ssim_pairs
_PAIR_BYTES = 16 * 2**20
# bytes of per-image moments ssim_pairs may precompute for all images at once
_MOMENT_BYTES = 256 * 2**20


# --------------------------------------------------------------------------------------
# geometry: filters, windows and the data range


def _filter_rows(n: int, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """skimage's 1-D Gaussian filter on ``n`` samples as a matrix, cropped by ``pad``.

    Returns ``F`` of shape (n - 2 pad, n) with ``F[p, q]`` the weight of input ``q`` in
    output ``p`` (scipy's ``"reflect"`` border folded in), the start of each output's
    window ``idx`` of shape (n - 2 pad, s) and the window weights ``w`` (same shape).
    """
    from scipy.ndimage import gaussian_filter1d

    full = gaussian_filter1d(np.eye(n), SIGMA, axis=0, mode="reflect", truncate=_TRUNCATE)
    F = np.ascontiguousarray(full[pad : n - pad])
    s = min(2 * _RADIUS + 1, n)
    starts = np.clip(np.arange(pad, n - pad) - _RADIUS, 0, n - s)
    idx = starts[:, None] + np.arange(s)
    w = np.take_along_axis(F, idx, axis=1)
    # every non-zero weight lies inside the window (reflection folds onto [p-r, p+r])
    if not np.allclose(w.sum(axis=1), F.sum(axis=1), rtol=0, atol=1e-12):  # pragma: no cover
        raise AssertionError("SSIM window does not cover the filter support")
    return F, idx, w


@dataclass(frozen=True)
class _Plan:
    """Everything about the image geometry that does not depend on the images."""

    h: int
    w: int
    c: int
    win_size: int
    data_range: float
    Fr: np.ndarray = field(repr=False)
    Fc: np.ndarray = field(repr=False)
    ridx: np.ndarray = field(repr=False)
    cidx: np.ndarray = field(repr=False)
    wc: np.ndarray = field(repr=False)  # (Pc, sc) column window weights
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def C1(self) -> float:
        return (K1 * self.data_range) ** 2

    @property
    def C2(self) -> float:
        return (K2 * self.data_range) ** 2

    @property
    def n_out(self) -> int:
        """Number of averaged output pixels over all channels (``Q``)."""
        return self.c * self.Fr.shape[0] * self.Fc.shape[0]

    @property
    def window_bytes(self) -> int:
        """float64 bytes that :func:`_prepare` keeps per image (both operand layouts)."""
        pr, pc = self.Fr.shape[0], self.Fc.shape[0]
        s1 = self.cidx.shape[1] + 1
        return 8 * self.c * pc * (2 * self.h * s1 + 12 * pr)

    def to_float(self, block: np.ndarray) -> np.ndarray:
        """(b, h, w[, c]) images -> (b, c, h, w) float64."""
        x = np.asarray(block, dtype=np.float64)
        if x.ndim == 3:
            return x[:, None]
        return np.moveaxis(x, -1, 1)

    def filter(self, x: np.ndarray) -> np.ndarray:
        """skimage's Gaussian filter, cropped: (b, c, h, w) -> (Q, b), two GEMMs."""
        b, c, h, w = x.shape
        Pr, Pc = self.Fr.shape[0], self.Fc.shape[0]
        t = x.reshape(b * c * h, w) @ self.Fc.T  # (b c h, Pc)
        t = t.reshape(b, c, h, Pc).transpose(2, 1, 3, 0).reshape(h, c * Pc * b)
        u = (self.Fr @ t).reshape(Pr, c, Pc, b)  # (Pr, c, Pc, b)
        return np.ascontiguousarray(u.transpose(1, 0, 2, 3)).reshape(c * Pr * Pc, b)

    def moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local means and variances, each of shape (Q, b), for (b, c, h, w) floats."""
        mu = self.filter(x)
        var = self.filter(x * x)
        var -= mu * mu
        return mu, var

    def gather(self, b: int, *, left: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Where the row windows of b images come from, and their weights (cached).

        For (b, c, h, w) images flattened with two constants appended, ``(C1 + C2) / 2``
        at index ``b c h w`` and 1 after it, ``x[idx]`` (times ``weights`` on the left) is
        an operand of stage 1: ``left``: (c, Pc, h, b, s1), else (c, Pc, h, s1, b), with
        ``s1 = sc + 1``.  Entry ``s < sc`` is ``x_i[k, r, window_c(p)[s]]``, weighted by
        ``wc[p, s]`` on the left only; the last entry is a constant, so that the products
        add ``(C1 + C2) / 2`` to every window's dot product.
        """
        key = (b, left)
        if key not in self.cache:
            c, h, w = self.c, self.h, self.w
            pc, sc = self.cidx.shape
            i = np.arange(b)[:, None, None, None, None]
            k = np.arange(c)[None, :, None, None, None]
            r = np.arange(h)[None, None, :, None, None]
            col = self.cidx[None, None, None]  # (1, 1, 1, Pc, sc)
            src = ((i * c + k) * h + r) * w + col  # (b, c, h, Pc, sc)
            const = b * c * h * w + (0 if left else 1)
            idx = np.full((c, pc, h, b, sc + 1), const, dtype=np.intp)
            idx[..., :sc] = src.transpose(1, 3, 2, 0, 4)
            wt = None
            if left:
                wt = np.ones((c, pc, h, b, sc + 1))
                wt[..., :sc] = self.wc[None, :, None, None, :]
            else:
                idx = np.ascontiguousarray(idx.transpose(0, 1, 2, 4, 3))
            self.cache[key] = (idx, wt)
        return self.cache[key]

    def row_band(self, pr0: int, pr1: int) -> tuple[int, int]:
        """Input rows ``[r0, r1)`` that output rows ``[pr0, pr1)`` of the row filter read."""
        return int(self.ridx[pr0, 0]), int(self.ridx[pr1 - 1, -1]) + 1


def _make_plan(
    shape: tuple[int, ...], data_range: float, win_size: int | None, caller: str
) -> _Plan:
    h, w = shape[1], shape[2]
    c = shape[3] if len(shape) == 4 else 1
    if win_size is None:
        win = DEFAULT_WIN_SIZE
    else:
        win = check_int(win_size, "win_size", caller, min_value=1)
        if win % 2 == 0:
            raise InvalidParameterError(
                f"The 'win_size' parameter of {caller} must be an odd int >= 1 "
                f"(skimage's rule). Got {win_size!r} instead."
            )
    if min(h, w) < win:
        fit = min(h, w) if min(h, w) % 2 else min(h, w) - 1
        hint = (
            f"pass win_size={fit} (an odd value <= {min(h, w)}, skimage's rule for "
            "small images) or upsample the images"
            if fit >= 1
            else "upsample the images"
        )
        raise InvalidParameterError(
            f"SSIM with a {win}x{win} window needs images of at least {win}x{win} pixels; "
            f"got {h}x{w}: {hint}."
        )
    pad = (win - 1) // 2
    Fr, ridx, _wr = _filter_rows(h, pad)
    Fc, cidx, wc = _filter_rows(w, pad)
    return _Plan(h, w, c, win, float(data_range), Fr, Fc, ridx, cidx, wc)


def _check_images(images: Any, name: str, caller: str) -> np.ndarray:
    arr = check_array(images, name, caller, ndim=(3, 4))
    if arr.dtype.kind not in "uif":
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must hold numbers (uint8 images, or floats "
            f"with data_range). Got dtype {arr.dtype} instead."
        )
    if arr.ndim == 4 and arr.shape[-1] not in (1, 3, 4):
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be (n, h, w) or channels-last "
            f"(n, h, w, c) with c in 1, 3, 4. Got shape {arr.shape} instead."
        )
    return arr


def _resolve_data_range(arr: np.ndarray, data_range: float | None, caller: str) -> float:
    if data_range is not None:
        return check_float(data_range, "data_range", caller, min_value=0.0, min_inclusive=False)
    if arr.dtype == np.uint8:
        return 255.0
    raise InvalidParameterError(
        f"The 'data_range' parameter of {caller} must be given for {arr.dtype} images "
        "(the difference between the largest and smallest possible pixel values, fixed "
        "for the whole dataset, e.g. 1.0 for floats in [0, 1]); only uint8 defaults to 255."
    )


# --------------------------------------------------------------------------------------
# backends


class _Backend:
    """numpy or torch arrays with the few operations the Gram blocks need."""

    def __init__(self, backend: str, device: str, caller: str) -> None:
        backend = check_choice(backend, "backend", caller, ("auto", "numpy", "torch"))
        device = check_choice(device, "device", caller, ("auto", "cpu", "cuda"))
        torch = None
        if backend == "torch":
            from dcsi._validation import require

            torch = require("torch", "SSIM on the torch backend", "dcsi[torch]")
        elif backend == "auto":  # noqa: SIM102 -- the comment belongs to the inner test
            # importing torch costs seconds: look for a GPU only when torch is loaded
            # already (e.g. by the CNN analyzer) or when device="cuda" asks for one
            if "torch" in sys.modules or device == "cuda":
                try:
                    import torch
                except ImportError:
                    torch = None
        if backend == "auto":
            # torch only pays off on a GPU; numpy's BLAS is as fast on the CPU
            cuda = torch is not None and device != "cpu" and torch.cuda.is_available()
            backend = "torch" if cuda else "numpy"
            device = "cuda" if cuda else "cpu"
        if backend == "numpy" and device == "cuda":
            raise InvalidParameterError(
                f"The 'device' parameter of {caller} must be 'cpu' or 'auto' with "
                "backend='numpy'. Got 'cuda' instead; use backend='torch' for a GPU."
            )
        if backend == "torch":
            assert torch is not None  # required above, or found by "auto"
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            if device == "cuda" and not torch.cuda.is_available():
                raise InvalidParameterError(
                    f"The 'device' parameter of {caller} is 'cuda' but torch sees no CUDA "
                    "device; use device='cpu' or 'auto'."
                )
        self.name = backend
        self.device = "cpu" if backend == "numpy" else device
        self.torch = torch if backend == "torch" else None

    def asarray(self, a: np.ndarray) -> Any:
        if self.torch is None:
            return a
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        if self.torch is None:
            return a
        return a.detach().cpu().numpy()

    def empty(self, shape: tuple[int, ...]) -> Any:
        if self.torch is None:
            return np.empty(shape)
        return self.torch.empty(shape, dtype=self.torch.float64, device=self.device)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        if self.torch is None:
            return np.zeros(shape)
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)

    def matmul(self, a: Any, b: Any, out: Any) -> None:
        """``out[...] = a @ b`` without a temporary."""
        if self.torch is None:
            np.matmul(a, b, out=out)
        else:
            self.torch.matmul(a, b, out=out)

    def default_block(self, plan: _Plan) -> int:
        """Images per block: on the CPU, as many as keep stage 1's product for one output
        column (h x b x b float64) within about 320 KiB, so that it is still in the
        core's cache when the row filter reads it (32 for 28 to 40 px images)."""
        if self.device != "cpu":
            return 512
        b = int(math.sqrt(_STAGE1_BYTES / (8 * plan.h))) // 8 * 8
        return max(16, min(64, b))

    def filter_rows(self, plan: _Plan) -> Any:
        """Twice the row filter, (Pr, h), as an array of this backend (cached)."""
        key = id(plan)
        if getattr(self, "_fr_key", None) != key:
            self._fr = self.asarray(2.0 * plan.Fr)
            self._fr_key = key
        return self._fr


@dataclass
class _Prepared:
    """Everything the Gram blocks need from one block of b images.

    Per channel k and output column p (so that every product below is a plain BLAS
    call on contiguous matrices):

    - ``zl`` (c, Pc, h, b, s1) and ``zr`` (c, Pc, h, s1, b): the column-weighted row
      windows (``s1 = sc + 1``), as the left and the right operand of stage 1.  The
      last entry of every window is ``sqrt((C1 + C2) / 2)``, so that the row filter
      (twice ``Fr``, whose rows sum to 1) adds ``C1 + C2`` to ``2 E_w[xy]`` for free;
    - ``nl`` (c, Pc, Pr, b, 2) and ``nr`` (c, Pc, Pr, 2, b): ``nl @ nr`` is the
      luminance numerator ``2 mu_x mu_y + C1`` of every pair at every output pixel;
    - ``dl`` (c, Pc, Pr, b, 4) and ``dr`` (c, Pc, Pr, 4, b): ``dl @ dr`` is the
      denominator ``(mu_x^2 + mu_y^2 + C1) (var_x + var_y + C2)``.

    The left fields are None for a block used only on the right, and the other way.
    """

    b: int
    zl: Any = None
    nl: Any = None
    dl: Any = None
    zr: Any = None
    nr: Any = None
    dr: Any = None

    @property
    def nbytes(self) -> int:
        fields = (self.zl, self.nl, self.dl, self.zr, self.nr, self.dr)
        return 8 * sum(int(np.prod(a.shape)) for a in fields if a is not None)


def _prepare(
    plan: _Plan, be: _Backend, images: np.ndarray, *, left: bool, right: bool
) -> _Prepared:
    x = plan.to_float(images)  # (b, c, h, w)
    b, c = x.shape[0], plan.c
    Pr, Pc = plan.Fr.shape[0], plan.Fc.shape[0]
    mu, var = plan.moments(x)
    # (Q, b) -> (c, Pc, Pr, b): one output column's pixels are contiguous
    mu = np.ascontiguousarray(mu.reshape(c, Pr, Pc, b).transpose(0, 2, 1, 3))
    var = np.ascontiguousarray(var.reshape(c, Pr, Pc, b).transpose(0, 2, 1, 3))
    # the images, flat, and the two constants of the windows (see _Plan.gather)
    xpad = np.append(x.reshape(-1), [(plan.C1 + plan.C2) / 2.0, 1.0])
    out = _Prepared(b)
    mu2 = mu * mu
    if left:
        idx, weights = plan.gather(b, left=True)
        zl = np.take(xpad, idx)  # (c, Pc, h, b, sc + 1)
        zl *= cast("np.ndarray", weights)
        nl = np.empty((c, Pc, Pr, b, 2))
        nl[..., 0] = 2.0 * mu
        nl[..., 1] = 1.0
        dl = np.empty((c, Pc, Pr, b, 4))
        np.add(mu2, plan.C1, out=dl[..., 1])  # alpha = mu^2 + C1
        np.add(var, plan.C2, out=dl[..., 2])  # gamma = var + C2
        np.multiply(dl[..., 1], dl[..., 2], out=dl[..., 0])
        dl[..., 3] = 1.0
        out.zl, out.nl, out.dl = be.asarray(zl), be.asarray(nl), be.asarray(dl)
    if right:
        zr = np.take(xpad, plan.gather(b, left=False)[0])  # (c, Pc, h, sc + 1, b)
        nr = np.empty((c, Pc, Pr, 2, b))
        nr[..., 0, :] = mu
        nr[..., 1, :] = plan.C1
        dr = np.empty((c, Pc, Pr, 4, b))
        dr[..., 0, :] = 1.0
        dr[..., 1, :] = var
        dr[..., 2, :] = mu2
        np.multiply(mu2, var, out=dr[..., 3, :])
        out.zr, out.nr, out.dr = be.asarray(zr), be.asarray(nr), be.asarray(dr)
    return out


def _gram_block(plan: _Plan, be: _Backend, A: _Prepared, B: _Prepared) -> np.ndarray:
    """Mean SSIM of every image of block A against every image of block B: (na, nb).

    For each channel k and output column p, stage 1 is a batched Gram product over the
    column windows, ``T[r] = sum_q wc[p, q] x[r, q] y[r, q] + (C1 + C2) / 2`` for every
    image row r; stage 2 applies the row filter to a band of rows at a time,
    ``U = 2 Fr @ T = 2 E_w[xy] + C1 + C2`` for a chunk of output rows.  The SSIM map is
    ``(U - n) n / d`` with the numerator ``n`` and denominator ``d`` from two small
    products of per-image moments (:class:`_Prepared`); its sum over the chunk is added
    to the total.  Every step is a BLAS call or one of three in-place passes over
    buffers small enough to stay in the core's cache.
    """
    c, h = plan.c, plan.h
    Pr, Pc = plan.Fr.shape[0], plan.Fc.shape[0]
    na, nb = A.b, B.b
    Fr2 = be.filter_rows(plan)  # 2 * Fr
    step = max(1, min(Pr, _PIXEL_BYTES // (8 * na * nb)))
    T = be.empty((h, na, nb))
    U, n, d = (be.empty((step, na, nb)) for _ in range(3))
    total = be.zeros((na, nb))
    for k in range(c):
        for p in range(Pc):
            be.matmul(A.zl[k, p], B.zr[k, p], T)  # (h, na, nb)
            for pr0 in range(0, Pr, step):
                pr1 = min(Pr, pr0 + step)
                r0, r1 = plan.row_band(pr0, pr1)
                m = pr1 - pr0
                u, nn, dd = U[:m], n[:m], d[:m]
                be.matmul(Fr2[pr0:pr1, r0:r1], T[r0:r1].reshape(r1 - r0, -1), u.reshape(m, -1))
                be.matmul(A.nl[k, p, pr0:pr1], B.nr[k, p, pr0:pr1], nn)
                be.matmul(A.dl[k, p, pr0:pr1], B.dr[k, p, pr0:pr1], dd)
                u -= nn  # 2 cov_xy + C2
                u *= nn
                u /= dd
                total += u.sum(0)
    return be.to_numpy(total) / plan.n_out


def _block_size(block_size: int | None, be: _Backend, plan: _Plan, caller: str) -> int:
    if block_size is None:
        b = be.default_block(plan)
        # keep one prepared block under about 64 MiB
        return max(8, min(b, (64 * 2**20) // max(plan.window_bytes, 1)))
    return check_int(block_size, "block_size", caller, min_value=1)


def _iter_blocks(
    plan: _Plan,
    be: _Backend,
    images: np.ndarray,
    b: int,
    *,
    others: np.ndarray | None = None,
    desc: str = "SSIM",
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(i0, j0, values)`` for the blocks of the upper triangle (``j0 >= i0``).

    With ``others`` the blocks are ``images`` x ``others`` (all of them).
    """
    n = images.shape[0]
    target = images if others is None else others
    m = target.shape[0]
    starts_i = list(range(0, n, b))
    starts_j = list(range(0, m, b))
    if others is None:
        total = len(starts_i) * (len(starts_i) + 1) // 2
    else:
        total = len(starts_i) * len(starts_j)
    cache: dict[int, _Prepared] = {}
    used = 0
    with progress(total=total, desc=desc, unit="block") as bar, single_thread_blas():
        for i0 in starts_i:
            # symmetric runs: the right side of this block is usually cached from row 0
            # and no later row needs it once this row is done
            done = cache.pop(i0, None) if others is None else None
            A = _prepare(
                plan, be, images[i0 : i0 + b], left=True, right=others is None and done is None
            )
            if done is not None:
                used -= done.nbytes
                A.zr, A.nr, A.dr = done.zr, done.nr, done.dr
            for j0 in starts_j:
                if others is None and j0 < i0:
                    continue
                if others is None and j0 == i0:
                    B = A
                elif j0 in cache:
                    B = cache[j0]
                else:
                    B = _prepare(plan, be, target[j0 : j0 + b], left=False, right=True)
                    if used + B.nbytes <= _CACHE_BYTES:
                        cache[j0] = B
                        used += B.nbytes
                yield i0, j0, _gram_block(plan, be, A, B)
                bar.update(1)


def _setup(
    images: Any,
    data_range: float | None,
    win_size: int | None,
    backend: str,
    device: str,
    block_size: int | None,
    caller: str,
) -> tuple[np.ndarray, _Plan, _Backend, int]:
    arr = _check_images(images, "images", caller)
    dr = _resolve_data_range(arr, data_range, caller)
    plan = _make_plan(arr.shape, dr, win_size, caller)
    be = _Backend(backend, device, caller)
    b = _block_size(block_size, be, plan, caller)
    return arr, plan, be, b


# --------------------------------------------------------------------------------------
# public pairwise functions


def ssim_matrix(
    images: Any,
    *,
    data_range: float | None = None,
    win_size: int | None = None,
    backend: str = "auto",
    block_size: int | None = None,
    device: str = "auto",
) -> np.ndarray:
    """SSIM between every pair of images, equal to scikit-image's values.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
        uint8 images (colour channels last), or floats together with ``data_range``.
    data_range : float, default=None
        Difference between the largest and smallest possible pixel value, fixed for the
        dataset (not estimated per image). ``None``: 255 for uint8; required otherwise.
    win_size : int, default=None
        skimage's ``win_size``: ``None`` is its default for sigma 1.5 (11); an odd
        smaller value lets images smaller than 11 x 11 be compared (the Gaussian stays
        sigma 1.5, ``(win_size - 1) // 2`` border pixels are cropped).
    backend : {"auto", "numpy", "torch"}, default="auto"
        ``"auto"`` uses torch on a CUDA device when torch is already imported (or
        ``device="cuda"``) and sees a GPU, else numpy (as fast as torch on a CPU).
    block_size : int, default=None
        Images per block (``None``: on the CPU as many as keep one h x b x b float64
        product within about 320 KiB of cache, 32 for 28 to 40 px images; 512 on a GPU;
        less for large images).
        Results do not depend on it.
    device : {"auto", "cpu", "cuda"}, default="auto"

    Returns
    -------
    ndarray of shape (n, n), float64
        Symmetric; the diagonal is SSIM(x, x) = 1.  Memory is O(n^2): for large n use
        :func:`ssim_threshold_pairs` or :func:`ssim_topk`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> imgs = rng.integers(0, 256, size=(3, 16, 16), dtype=np.uint8)
    >>> M = ssim_matrix(imgs)
    >>> M.shape, bool(np.allclose(np.diag(M), 1.0))
    ((3, 3), True)
    """
    arr, plan, be, b = _setup(
        images, data_range, win_size, backend, device, block_size, "ssim_matrix"
    )
    n = arr.shape[0]
    out = np.empty((n, n))
    for i0, j0, vals in _iter_blocks(plan, be, arr, b):
        out[i0 : i0 + vals.shape[0], j0 : j0 + vals.shape[1]] = vals
        if j0 != i0:
            out[j0 : j0 + vals.shape[1], i0 : i0 + vals.shape[0]] = vals.T
    # diagonal blocks are computed in full; make the result exactly symmetric
    iu = np.triu_indices(n, 1)
    out[(iu[1], iu[0])] = out[iu]
    return out


def ssim_cross(
    images_a: Any,
    images_b: Any,
    *,
    data_range: float | None = None,
    win_size: int | None = None,
    backend: str = "auto",
    block_size: int | None = None,
    device: str = "auto",
) -> np.ndarray:
    """SSIM of every image of one set against every image of another (e.g. test vs train).

    Parameters
    ----------
    images_a : ndarray of shape (na, h, w) or (na, h, w, c)
    images_b : ndarray of shape (nb, h, w) or (nb, h, w, c)
        Same image shape and dtype as ``images_a``.
    data_range, win_size, backend, block_size, device
        As in :func:`ssim_matrix`.

    Returns
    -------
    ndarray of shape (na, nb), float64
    """
    arr, plan, be, b = _setup(
        images_a, data_range, win_size, backend, device, block_size, "ssim_cross"
    )
    other = _check_images(images_b, "images_b", "ssim_cross")
    if other.shape[1:] != arr.shape[1:] or other.dtype != arr.dtype:
        raise InvalidParameterError(
            "The 'images_b' parameter of ssim_cross must have the image shape and dtype of "
            f"images_a, {arr.shape[1:]} {arr.dtype}. Got {other.shape[1:]} {other.dtype} "
            "instead; resize or convert one set first."
        )
    out = np.empty((arr.shape[0], other.shape[0]))
    for i0, j0, vals in _iter_blocks(plan, be, arr, b, others=other):
        out[i0 : i0 + vals.shape[0], j0 : j0 + vals.shape[1]] = vals
    return out


def ssim_pairs(
    images: Any,
    pairs: Any,
    *,
    data_range: float | None = None,
    win_size: int | None = None,
) -> np.ndarray:
    """SSIM of matched pairs ``(images[i], images[j])``, e.g. candidate near-duplicates.

    Memory is bounded: pairs are processed in chunks, and local moments are computed
    only for the images a chunk uses.  Cost is about one separable filter per pair.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
    pairs : array-like of int, shape (m, 2)
        Row indices into ``images``.
    data_range, win_size
        As in :func:`ssim_matrix`.

    Returns
    -------
    ndarray of shape (m,), float64
    """
    caller = "ssim_pairs"
    arr = _check_images(images, "images", caller)
    dr = _resolve_data_range(arr, data_range, caller)
    plan = _make_plan(arr.shape, dr, win_size, caller)
    P = check_array(pairs, "pairs", caller, ndim=2, allow_empty=True)
    if P.shape[1:] != (2,) or (P.size and P.dtype.kind not in "iu"):
        raise InvalidParameterError(
            f"The 'pairs' parameter of {caller} must be an (m, 2) array of integer image "
            f"indices. Got shape {P.shape} and dtype {P.dtype} instead."
        )
    n = arr.shape[0]
    if P.size and (P.min() < 0 or P.max() >= n):
        raise InvalidParameterError(
            f"The 'pairs' parameter of {caller} must hold indices in [0, {n - 1}]. "
            f"Got values in [{int(P.min())}, {int(P.max())}] instead."
        )
    P = P.astype(np.int64, copy=False)
    m = P.shape[0]
    out = np.empty(m)
    chunk = max(1, _PAIR_BYTES // (8 * plan.c * plan.h * plan.w))
    C1, C2 = plan.C1, plan.C2
    # local moments once per image when they fit in the budget, else once per chunk
    used_all = np.unique(P)
    pre = used_all.size * plan.n_out * 16 <= _MOMENT_BYTES
    with single_thread_blas():
        if pre:  # rows: (u, Q), so that gathering a pair's moments reads contiguous rows
            mu_all = np.empty((used_all.size, plan.n_out))
            var_all = np.empty((used_all.size, plan.n_out))
            step = max(1, chunk // 4)
            for u0 in range(0, used_all.size, step):
                mu, var = plan.moments(plan.to_float(arr[used_all[u0 : u0 + step]]))
                mu_all[u0 : u0 + step], var_all[u0 : u0 + step] = mu.T, var.T
        for s0 in progress(range(0, m, chunk), desc="SSIM pairs", unit="chunk"):
            sub = P[s0 : s0 + chunk]
            if pre:
                gi = np.searchsorted(used_all, sub[:, 0])
                gj = np.searchsorted(used_all, sub[:, 1])
                xi = plan.to_float(arr[sub[:, 0]])
                xj = plan.to_float(arr[sub[:, 1]])
            else:
                used, inv = np.unique(sub, return_inverse=True)
                inv = inv.reshape(sub.shape)
                x = plan.to_float(arr[used])
                mu, var = plan.moments(x)
                mu_all, var_all = mu.T, var.T
                gi, gj = inv[:, 0], inv[:, 1]
                xi, xj = x[gi], x[gj]
            mi, mj = mu_all[gi], mu_all[gj]  # (k, Q)
            cov = plan.filter(xi * xj).T  # E_w[xy], (k, Q)
            cov -= mi * mj
            cov *= 2.0
            cov += C2
            num = mi * mj
            num *= 2.0
            num += C1
            num *= cov
            den = mi * mi
            den += mj * mj
            den += C1
            den *= var_all[gi] + var_all[gj] + C2
            num /= den
            out[s0 : s0 + sub.shape[0]] = num.mean(axis=1)
    return out


def ssim_threshold_pairs(
    images: Any,
    threshold: float,
    *,
    data_range: float | None = None,
    win_size: int | None = None,
    backend: str = "auto",
    block_size: int | None = None,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs with SSIM >= ``threshold``: the O(n^2) pass, in bounded memory.

    Yousefzadeh's low-cost alternative to spectral clustering (Section 4.3): look at the
    upper triangle of the SSIM matrix row by row and keep the pairs above a threshold.
    Only the upper triangle is computed, block by block; memory holds a few blocks
    plus the pairs found.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
    threshold : float
        Keep pairs with SSIM >= threshold (SSIM lies in [-1, 1]).
    data_range, win_size, backend, block_size, device
        As in :func:`ssim_matrix`.

    Returns
    -------
    pairs : ndarray of shape (m, 2), int64
        ``i < j``, sorted by ``i`` then ``j``.
    values : ndarray of shape (m,), float64
    """
    caller = "ssim_threshold_pairs"
    threshold = check_float(threshold, "threshold", caller, min_value=-1.0, max_value=1.0)
    arr, plan, be, b = _setup(images, data_range, win_size, backend, device, block_size, caller)
    found_i, found_j, found_v = [], [], []
    for i0, j0, vals in _iter_blocks(plan, be, arr, b, desc="SSIM threshold"):
        mask = vals >= threshold
        if j0 == i0:
            mask &= np.triu(np.ones(mask.shape, dtype=bool), 1)
        ii, jj = np.nonzero(mask)
        if ii.size:
            found_i.append(ii + i0)
            found_j.append(jj + j0)
            found_v.append(vals[ii, jj])
    if not found_i:
        return np.empty((0, 2), dtype=np.int64), np.empty(0)
    i = np.concatenate(found_i)
    j = np.concatenate(found_j)
    v = np.concatenate(found_v)
    order = np.lexsort((j, i))
    return np.stack([i[order], j[order]], axis=1).astype(np.int64), v[order]


def ssim_topk(
    images: Any,
    k: int,
    *,
    data_range: float | None = None,
    win_size: int | None = None,
    backend: str = "auto",
    block_size: int | None = None,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Each image's ``k`` most similar other images, in O(n k) memory.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
    k : int
        Neighbours per image, ``1 <= k <= n - 1`` (an image is never its own neighbour).
    data_range, win_size, backend, block_size, device
        As in :func:`ssim_matrix`.

    Returns
    -------
    indices : ndarray of shape (n, k), int64
        Neighbours by decreasing SSIM (ties by increasing index).
    values : ndarray of shape (n, k), float64
    """
    caller = "ssim_topk"
    arr, plan, be, b = _setup(images, data_range, win_size, backend, device, block_size, caller)
    n = arr.shape[0]
    k = check_int(k, "k", caller, min_value=1, max_value=max(1, n - 1))
    if n < 2:
        raise InvalidParameterError(
            f"The 'images' parameter of {caller} must hold at least 2 images to find "
            f"neighbours. Got {n} instead."
        )
    best_v = np.full((n, k), -np.inf)
    best_i = np.full((n, k), -1, dtype=np.int64)

    def merge(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        cand_v = np.concatenate([best_v[rows], vals], axis=1)
        cand_i = np.concatenate([best_i[rows], np.broadcast_to(cols, vals.shape)], axis=1)
        # sort by (-value, index); cheap enough for the small candidate lists
        order = np.lexsort((cand_i, -cand_v), axis=1)[:, :k]
        best_v[rows] = np.take_along_axis(cand_v, order, axis=1)
        best_i[rows] = np.take_along_axis(cand_i, order, axis=1)

    for i0, j0, vals in _iter_blocks(plan, be, arr, b, desc="SSIM top-k"):
        rows = np.arange(i0, i0 + vals.shape[0])
        cols = np.arange(j0, j0 + vals.shape[1])
        if j0 == i0:
            vals = vals.copy()
            np.fill_diagonal(vals, -np.inf)
            merge(rows, cols, vals)
        else:
            merge(rows, cols, vals)
            merge(cols, rows, vals.T)
    return best_i, best_v


# --------------------------------------------------------------------------------------
# class-level SSIM


_DIAGONAL_TEXT = (
    "mean SSIM over the pairs of distinct images of the class (self-pairs excluded); "
    "null for a class with fewer than 2 images"
)


@dataclass(frozen=True)
class ClassSSIM:
    """Mean pairwise SSIM between and within classes.

    Attributes
    ----------
    matrix : ndarray of shape (K, K)
        ``matrix[a, b]`` is the mean SSIM over all pairs (i in a, j in b); the diagonal
        is the mean over pairs of distinct images of the class. NaN where undefined.
    stderr : ndarray of shape (K, K)
        Standard error of each entry: 0 where every image of both classes was used,
        NaN where undefined.
    counts : ndarray of shape (K,)
        Images per class in the data.
    used : ndarray of shape (K,)
        Images per class that entered the computation.
    params : dict
        SSIM settings and the estimator (JSON-ready).
    """

    matrix: np.ndarray
    stderr: np.ndarray
    counts: np.ndarray
    used: np.ndarray
    params: dict[str, Any]
    diagonal: str = _DIAGONAL_TEXT

    @property
    def exact(self) -> bool:
        """Whether every image of every class was used."""
        return bool(np.array_equal(self.counts, self.used))

    def to_dict(self) -> dict[str, Any]:
        """The card's similarity entry ``{"matrix", "diagonal", "params", "stderr"}``."""
        return {
            "matrix": _matrix_to_list(self.matrix),
            "diagonal": self.diagonal,
            "params": dict(self.params),
            "stderr": _matrix_to_list(self.stderr),
        }


def _matrix_to_list(m: np.ndarray) -> list[list[float | None]]:
    return [[float(v) if math.isfinite(v) else None for v in row] for row in m.tolist()]


def auto_win_size(h: int, w: int) -> int:
    """skimage's 11 when ``h, w >= 11``, else the largest odd size that fits (7 for 8x8)."""
    side = min(h, w)
    if side >= DEFAULT_WIN_SIZE:
        return DEFAULT_WIN_SIZE
    return side if side % 2 else side - 1


def class_ssim(
    images: Any,
    labels: Any,
    *,
    n_classes: int | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
    data_range: float | None = None,
    win_size: int | str | None = "auto",
    backend: str = "auto",
    block_size: int | None = None,
    device: str = "auto",
) -> ClassSSIM:
    """Class-to-class mean pairwise SSIM, exact for small classes, estimated for large.

    For classes a != b the entry is the mean SSIM over all pairs (i in a, j in b); the
    diagonal is the mean over pairs of distinct images of the class.  The pairs are
    computed block by block over the upper triangle (never an N x N matrix), and summed
    per class pair.

    Estimator for large classes: a class with more than ``max_per_class`` images is
    replaced by a uniform random subset of ``max_per_class`` images (without
    replacement, drawn with ``np.random.default_rng(seed)``), and the entry is the mean
    over all pairs of the subsets (an unbiased U-statistic).  Its standard error is the
    first-order (Hoeffding) approximation with the finite-population correction::

        between a, b:  se^2 = (1 - m_a/n_a) s_a^2 / m_a + (1 - m_b/n_b) s_b^2 / m_b
        within a:      se^2 = 4 (1 - m_a/n_a) s_a^2 / m_a

    where ``s_a^2`` is the sample variance over the used images i of class a of their
    mean SSIM to the used images of the other class (the same class, self excluded).
    Entries where both classes were used in full have standard error 0.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c)
    labels : array-like of int, shape (n,)
        Class ids 0..K-1.
    n_classes : int, default=None
        K (``None``: ``labels.max() + 1``); classes without images get NaN entries.
    max_per_class : int, default=None
        Images used per class; ``None`` means ``min(500, 5000 // K)`` (at least 2;
        :data:`DEFAULT_MAX_PER_CLASS`, :data:`DEFAULT_MAX_IMAGES`), so a class-level run
        uses at most about 5,000 images (12.5 million pairs) whatever the dataset size
        and the number of classes (500 per class up to 10 classes).
    seed : int, default=0
        Seed of the subsampling.
    data_range : float, default=None
        As in :func:`ssim_matrix` (255 for uint8).
    win_size : int, "auto" or None, default="auto"
        ``"auto"``: skimage's 11 when the images are at least 11 x 11, else the largest
        odd size that fits (7 for 8 x 8 digits; skimage's rule for small images with an
        explicit ``win_size``). ``None`` or an int: as in :func:`ssim_matrix`.
    backend, block_size, device
        As in :func:`ssim_matrix`.

    Returns
    -------
    ClassSSIM
    """
    caller = "class_ssim"
    arr = _check_images(images, "images", caller)
    n = arr.shape[0]
    y = check_labels(labels, n, caller)
    seed = check_int(seed, "seed", caller, min_value=0)
    K = (
        int(y.max()) + 1
        if n_classes is None
        else check_int(n_classes, "n_classes", caller, min_value=1)
    )
    if y.max() >= K:
        raise InvalidParameterError(
            f"The 'labels' parameter of {caller} must hold class ids < n_classes={K}. "
            f"Got {int(y.max())} instead."
        )
    cap = (
        max(2, min(DEFAULT_MAX_PER_CLASS, DEFAULT_MAX_IMAGES // K))
        if max_per_class is None
        else check_int(max_per_class, "max_per_class", caller, min_value=2)
    )
    win: int | None
    if win_size == "auto":
        win = auto_win_size(arr.shape[1], arr.shape[2])
        if win < 1:
            raise InvalidParameterError(
                f"SSIM needs images of at least 1x1 pixels; got {arr.shape[1]}x{arr.shape[2]}."
            )
        if win != DEFAULT_WIN_SIZE:
            logger.info(
                "class_ssim: %dx%d images are smaller than the 11x11 window; "
                "using win_size=%d (skimage's rule)",
                arr.shape[1],
                arr.shape[2],
                win,
            )
    else:
        win = cast("int | None", win_size)  # any other value is rejected by _make_plan
    _arr_checked, plan, be, b = _setup(arr, data_range, win, backend, device, block_size, caller)

    rng = np.random.default_rng(seed)
    counts = np.bincount(y, minlength=K)
    chosen = []
    for c in range(K):
        idx = np.flatnonzero(y == c)
        if idx.size > cap:
            idx = np.sort(rng.choice(idx, size=cap, replace=False))
        chosen.append(idx)
    used = np.array([len(c) for c in chosen], dtype=np.int64)
    order = np.concatenate(chosen) if n else np.empty(0, dtype=np.int64)
    sub = arr[order]
    ys = y[order]
    onehot = np.zeros((ys.size, K))
    onehot[np.arange(ys.size), ys] = 1.0
    # R[i, c]: sum of SSIM of used image i with the used images of class c (self excluded)
    R = np.zeros((ys.size, K))
    for i0, j0, vals in _iter_blocks(plan, be, sub, b, desc="class SSIM"):
        bi, bj = vals.shape
        if j0 == i0:
            vals = vals.copy()
            np.fill_diagonal(vals, 0.0)
            R[i0 : i0 + bi] += vals @ onehot[j0 : j0 + bj]
        else:
            R[i0 : i0 + bi] += vals @ onehot[j0 : j0 + bj]
            R[j0 : j0 + bj] += vals.T @ onehot[i0 : i0 + bi]
    matrix, stderr = _class_means(R, ys, used, counts, K)
    params = {
        "measure": "mean pairwise SSIM (skimage structural_similarity)",
        "gaussian_weights": True,
        "sigma": SIGMA,
        "win_size": plan.win_size,
        "use_sample_covariance": False,
        "K1": K1,
        "K2": K2,
        "data_range": plan.data_range,
        "channels": plan.c,
        "channel_mean": plan.c > 1,
        "image_size": [plan.h, plan.w],
        "max_per_class": cap,
        "seed": seed,
        "exact": bool(np.array_equal(counts, used)),
        "n_used": used.tolist(),
        "estimator": (
            "exact mean over all pairs"
            if np.array_equal(counts, used)
            else f"mean over all pairs of a uniform random subset of at most {cap} images per "
            f"class (seed {seed}); stderr: first-order U-statistic approximation with "
            "finite-population correction"
        ),
    }
    return ClassSSIM(matrix=matrix, stderr=stderr, counts=counts, used=used, params=params)


def _class_means(
    R: np.ndarray, ys: np.ndarray, used: np.ndarray, counts: np.ndarray, K: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class means and their standard errors from per-image class sums ``R`` (m, K)."""
    matrix = np.full((K, K), np.nan)
    stderr = np.full((K, K), np.nan)
    # h[i, c]: mean SSIM of used image i with the used images of class c
    denom = np.broadcast_to(used.astype(float), R.shape).copy()
    denom[np.arange(ys.size), ys] -= 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        h = R / denom
    # per class a and column c: (1 - m_a/n_a) var_a(h[:, c]) / m_a
    term = np.full((K, K), np.nan)
    sums = np.zeros((K, K))
    for a in range(K):
        rows = ys == a
        if not rows.any():
            continue
        sums[a] = R[rows].sum(axis=0)
        m_a = used[a]
        fpc = 1.0 - m_a / counts[a]
        if fpc <= 0:
            term[a] = 0.0
        elif m_a >= 2:
            term[a] = fpc * h[rows].var(axis=0, ddof=1) / m_a
    for a in range(K):
        for c in range(K):
            if a == c:
                if used[a] >= 2:
                    matrix[a, a] = sums[a, a] / (used[a] * (used[a] - 1))
                    stderr[a, a] = math.sqrt(max(4.0 * term[a, a], 0.0))
            elif used[a] >= 1 and used[c] >= 1:
                matrix[a, c] = sums[a, c] / (used[a] * used[c])
                stderr[a, c] = math.sqrt(max(term[a, c] + term[c, a], 0.0))
    return matrix, stderr
