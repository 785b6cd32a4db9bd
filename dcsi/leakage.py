"""Train/test leakage: test images with a near-identical training image.

Yousefzadeh reports that 11% of the CIFAR-100 "aquarium fish" test images have a
near-identical image in the training set.  :func:`find_leakage` measures that share for
a whole test split, with the same features and absolute thresholds as
:func:`dcsi.find_redundancy`, and also lists the test items farthest from every
training item (candidates for mistakes or out-of-distribution images).

Never forms a ``n_test x n_train`` matrix: blocks of test rows are compared with all
training rows in a 32-d orthogonal projection (which can only shorten distances, so no
pair within the threshold is lost) and the candidates are checked on all columns.

With ``method="wavelet"`` and ``align=True`` (default), test items that the wavelet
distance does not link are also checked by the shift- and crop-tolerant second stage
of :func:`dcsi.find_redundancy`, test against train
(:func:`dcsi.aligned.aligned_cross_pairs`: shifted or cropped-and-resized copies in
either split).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dcsi._progress import progress
from dcsi._validation import check_choice, check_float, check_int
from dcsi.exceptions import DataError, InvalidParameterError

__all__ = ["LeakagePair", "LeakageResult", "cross_pairs",
           "find_leakage", "find_leakage_features"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeakagePair:
    """A test item and its nearest training item within the threshold.

    ``stage`` says which test linked them: ``"features"`` (the first-stage distance
    of the method, e.g. ``1 - cos`` of wavelet rows) or ``"aligned"`` (the shift- and
    crop-tolerant second stage; ``distance`` is then the aligned distance of
    :func:`dcsi.aligned.aligned_distance`).
    """

    test_id: str
    train_id: str
    distance: float
    test_label: str | None = None
    train_label: str | None = None
    stage: str = "features"

    def to_dict(self) -> dict:
        return {"test_id": self.test_id, "train_id": self.train_id,
                "distance": round(float(self.distance), 6),
                "test_label": self.test_label, "train_label": self.train_label,
                "stage": self.stage}


@dataclass(frozen=True)
class LeakageResult:
    """The result of :func:`find_leakage`.

    Attributes
    ----------
    method : str
    params : dict
    n_train, n_test : int
    pairs : tuple of LeakagePair
        One per leaked test item (its nearest training item), closest first.
    farthest : tuple of (str, float)
        Test ids with the distance to their nearest training item, farthest first.
    per_class : dict
        Class name -> ``{"n_test", "n_leaked", "share"}`` (labelled test sets only).
    """

    method: str
    params: dict
    n_train: int
    n_test: int
    pairs: tuple[LeakagePair, ...]
    farthest: tuple[tuple[str, float], ...]
    per_class: dict = field(default_factory=dict)

    @property
    def n_leaked(self) -> int:
        """Number of test items with a near-identical training item."""
        return len(self.pairs)

    @property
    def share(self) -> float:
        """``n_leaked / n_test``."""
        return self.n_leaked / self.n_test if self.n_test else 0.0

    @property
    def n_label_mismatch(self) -> int:
        """Leaked pairs whose test and training labels differ."""
        return sum(p.test_label is not None and p.train_label is not None
                   and p.test_label != p.train_label for p in self.pairs)

    def to_dict(self) -> dict:
        """JSON-ready dict (no NaN)."""
        return {
            "method": self.method,
            "params": {k: v for k, v in self.params.items()},
            "n_train": int(self.n_train),
            "n_test": int(self.n_test),
            "n_leaked": int(self.n_leaked),
            "share": float(self.share),
            "n_label_mismatch": int(self.n_label_mismatch),
            "per_class": self.per_class,
            "pairs": [p.to_dict() for p in self.pairs],
            "farthest": [{"test_id": i, "distance": round(float(d), 6)}
                         for i, d in self.farthest],
        }


def _nearest_within(A: np.ndarray, B: np.ndarray, threshold: float, *,
                    n_components: int | None, block_size: int, seed: int):
    """For each row of A: nearest row of B if within ``threshold`` (exact), else -1.

    Also returns a lower bound of the distance of every A row to its nearest B row
    (from the projection), used to rank the farthest items.
    """
    from dcsi.redundancy import _projection_basis

    if n_components is not None and n_components < A.shape[1]:
        basis = _projection_basis(B, n_components, seed)
        PA, PB = A @ basis, B @ basis
    else:
        PA, PB = A, B
    order = np.arange(PB.shape[0])
    PBs = np.ascontiguousarray(PB)
    sqB = np.einsum("ij,ij->i", PBs, PBs)
    sqA = np.einsum("ij,ij->i", PA, PA)
    radius2 = 2.0 * threshold * (1 + 1e-5) + 1e-6
    best = np.full(A.shape[0], -1, dtype=np.int64)
    best_d = np.full(A.shape[0], np.inf)
    lower = np.empty(A.shape[0])
    a_order = np.argsort(PA[:, 0], kind="stable")
    for s in progress(range(0, A.shape[0], block_size), desc="leakage", unit="block",
                      total=-(-A.shape[0] // block_size)):
        rows = a_order[s:s + block_size]
        d2 = PA[rows] @ PBs.T
        d2 *= -2.0
        d2 += sqA[rows, None]
        d2 += sqB[None, :]
        lower[rows] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
        ii, jj = np.nonzero(d2 <= radius2)
        del d2
        if len(ii):
            ai, bj = rows[ii], order[jj]
            dist = np.maximum(
                1.0 - np.einsum("ij,ij->i", A[ai], B[bj], dtype=np.float64), 0.0)
            for a, b, d in zip(ai, bj, dist):
                if d <= threshold and d < best_d[a]:
                    best[a], best_d[a] = b, d
    return best, best_d, lower


def cross_pairs(
    A: np.ndarray,
    B: np.ndarray,
    *,
    threshold: float,
    n_components: int | None = 32,
    block_size: int = 512,
    max_candidates: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (row of A, row of B) with ``1 - A_i . B_j <= threshold``, never n x m.

    Exact, as :func:`dcsi.redundancy.neighbor_pairs`: candidates are the pairs whose
    distance in an orthogonal projection (which never lengthens a difference) is
    within ``sqrt(2 threshold)``, found for blocks of ``A`` rows against a window of
    the ``B`` rows sorted by the first projected coordinate, then checked on all
    columns.

    Parameters
    ----------
    A : ndarray of shape (n_a, d)
    B : ndarray of shape (n_b, d)
        Unit-length (or zero) rows.
    threshold : float
    n_components : int or None, default=32
    block_size : int, default=512
    max_candidates : int, default=None
        Refuse (DataError) beyond this many candidates (default ``200 (n_a + n_b)``).
    seed : int, default=0

    Returns
    -------
    pairs : ndarray of shape (m, 2), int64
        ``(i, j)``: row ``i`` of ``A``, row ``j`` of ``B``, sorted.
    distances : ndarray of shape (m,), float64
    """
    from dcsi.redundancy import _projection_basis, verify_pairs

    A = np.ascontiguousarray(A, dtype=np.float32)
    B = np.ascontiguousarray(B, dtype=np.float32)
    na, nb = A.shape[0], B.shape[0]
    empty = (np.empty((0, 2), dtype=np.int64), np.empty(0))
    if na == 0 or nb == 0:
        return empty
    if max_candidates is None:
        max_candidates = 200 * (na + nb)
    if n_components is not None and n_components < A.shape[1]:
        basis = _projection_basis(B, n_components, seed)
        PA, PB = A @ basis, B @ basis
    else:
        PA, PB = A, B
    radius2 = 2.0 * threshold * (1 + 1e-5) + 1e-6
    radius = float(np.sqrt(radius2))
    a_order = np.argsort(PA[:, 0], kind="stable")
    b_order = np.argsort(PB[:, 0], kind="stable")
    PA, PB = PA[a_order], np.ascontiguousarray(PB[b_order])
    fa, fb = PA[:, 0].astype(np.float64), PB[:, 0].astype(np.float64)
    sqA = np.einsum("ij,ij->i", PA, PA)
    sqB = np.einsum("ij,ij->i", PB, PB)
    found_i, found_j = [], []
    total = 0
    for s in range(0, na, block_size):
        e = min(s + block_size, na)
        lo = int(np.searchsorted(fb, fa[s] - radius, side="left"))
        hi = int(np.searchsorted(fb, fa[e - 1] + radius, side="right"))
        if hi <= lo:
            continue
        d2 = PA[s:e] @ PB[lo:hi].T
        d2 *= -2.0
        d2 += sqA[s:e, None]
        d2 += sqB[None, lo:hi]
        ii, jj = np.nonzero(d2 <= radius2)
        del d2
        found_i.append(a_order[ii + s])
        found_j.append(b_order[jj + lo])
        total += len(ii)
        if total > max_candidates:
            raise DataError(
                f"The threshold {threshold} links more than {max_candidates} candidate "
                f"pairs between {na} and {nb} images; it is far too loose for a "
                "near-duplicate search. Use a smaller threshold."
            )
    if not found_i:
        return empty
    cand = np.stack([np.concatenate(found_i), np.concatenate(found_j)], 1).astype(np.int64)
    return verify_pairs(A, B, cand, threshold)


def find_leakage_features(
    train_features: np.ndarray,
    test_features: np.ndarray,
    *,
    threshold: float,
    train_ids: list[str] | None = None,
    test_ids: list[str] | None = None,
    train_labels: list[str] | None = None,
    test_labels: list[str] | None = None,
    n_farthest: int = 20,
    n_components: int | None = 32,
    block_size: int = 512,
    seed: int = 0,
    method: str = "features",
    params: dict | None = None,
    aligned: tuple[np.ndarray, np.ndarray] | None = None,
) -> LeakageResult:
    """Leakage between prepared feature rows (unit length, see ``prepare_rows``).

    Parameters
    ----------
    train_features : ndarray of shape (n_train, d)
    test_features : ndarray of shape (n_test, d)
    threshold : float
        Largest distance ``1 - x . y`` of a leaked pair.
    train_ids, test_ids : list of str, default=None
    train_labels, test_labels : list of str, default=None
        Class names per item (for per-class shares and label mismatches).
    n_farthest : int, default=20
        How many of the test items farthest from all training items to report.
    n_components, block_size, seed
        Candidate search (see :func:`dcsi.redundancy.neighbor_pairs`).
    method : str, default="features"
    params : dict, default=None
        Recorded in the result.
    aligned : (pairs (m, 2), distances (m,)), default=None
        Extra leaked pairs ``(test index, train index)`` from a second stage
        (:func:`dcsi.aligned.aligned_cross_pairs`); used for test items the features do
        not link.

    Returns
    -------
    LeakageResult
    """
    A = np.ascontiguousarray(test_features, dtype=np.float32)
    B = np.ascontiguousarray(train_features, dtype=np.float32)
    n_test, n_train = A.shape[0], B.shape[0]
    test_ids = [str(i) for i in range(n_test)] if test_ids is None else list(test_ids)
    train_ids = [str(i) for i in range(n_train)] if train_ids is None else list(train_ids)
    best, best_d, lower = _nearest_within(A, B, threshold, n_components=n_components,
                                          block_size=block_size, seed=seed)
    stage = np.where(best >= 0, 0, -1)
    if aligned is not None and len(aligned[0]):
        ap = np.asarray(aligned[0], dtype=np.int64).reshape(-1, 2)
        ad = np.asarray(aligned[1], dtype=np.float64)
        for k in np.lexsort((ap[:, 1], ad)):  # closest first: first seen is the best
            a, b = int(ap[k, 0]), int(ap[k, 1])
            if best[a] < 0:
                best[a], best_d[a], stage[a] = b, ad[k], 1
    leaked = np.flatnonzero(best >= 0)
    leaked = leaked[np.lexsort((leaked, best_d[leaked], stage[leaked]))]
    pairs = tuple(
        LeakagePair(test_ids[a], train_ids[best[a]], float(best_d[a]),
                    None if test_labels is None else test_labels[a],
                    None if train_labels is None else train_labels[best[a]],
                    stage="aligned" if stage[a] == 1 else "features")
        for a in leaked
    )
    # farthest: rank by the projected lower bound, then exact distance for a shortlist
    k = min(n_farthest, n_test)
    farthest: list[tuple[str, float]] = []
    if k:
        short = np.argsort(-lower, kind="stable")[: min(n_test, 10 * k)]
        exact = np.empty(len(short))
        for i, a in enumerate(short):
            m = -np.inf
            for s in range(0, n_train, 65536):
                m = max(m, float((B[s:s + 65536] @ A[a]).max()))
            exact[i] = 1.0 - m
        top = np.argsort(-exact, kind="stable")[:k]
        farthest = [(test_ids[short[t]], float(exact[t])) for t in top]
    per_class: dict = {}
    if test_labels is not None:
        leaked_set = set(leaked.tolist())
        for name in sorted(set(test_labels), key=str):
            members = [i for i, lab in enumerate(test_labels) if lab == name]
            nl = sum(i in leaked_set for i in members)
            per_class[str(name)] = {"n_test": len(members), "n_leaked": nl,
                                    "share": nl / len(members) if members else None}
    return LeakageResult(method=method, params=dict(params or {}), n_train=n_train,
                         n_test=n_test, pairs=pairs, farthest=tuple(farthest),
                         per_class=per_class)


def find_leakage(
    train: Any,
    test: Any,
    *,
    train_labels: Any = None,
    test_labels: Any = None,
    method: str = "wavelet",
    threshold: float | None = None,
    tau: float = 1e5,
    wavelet: str = "db1",
    level: int = 1,
    mode: str = "symmetric",
    size: int | tuple[int, int] | None = None,
    n_farthest: int = 20,
    n_components: int | None = 32,
    block_size: int = 512,
    backbone: Any = "efficientnet_lite0",
    feature_kw: dict | None = None,
    seed: int = 0,
    align: bool = True,
    align_threshold: float | None = None,
    max_shift: int | None = None,
    max_crop: int | None = None,
) -> LeakageResult:
    """Share of test items with a near-identical training item, and the farthest ones.

    Parameters
    ----------
    train, test : source, ImageSet, or ndarray of shape (n, h, w[, c]) uint8
        Anything :func:`dcsi.open_source` takes.
    train_labels, test_labels : array-like, default=None
        Labels of in-memory arrays.
    method : {"wavelet", "cnn"}, default="wavelet"
    threshold : float, default=None
        Largest distance of a leaked pair; ``None``: the method's default of
        :data:`dcsi.redundancy.DEFAULT_THRESHOLDS` (wavelet: ``1 - cos <= 0.01``).
    tau : float, default=1e5
        Condition-number bound of the column selection, computed on the training set.
    wavelet, level, mode, size
        Wavelet features (see :func:`dcsi.find_redundancy`).
    n_farthest : int, default=20
    n_components, block_size, seed
        Candidate search.
    backbone, feature_kw
        For ``method="cnn"`` (:func:`dcsi.extract_features`).
    seed : int, default=0
    align : bool, default=True
        ``method="wavelet"``: also count shifted and cropped copies (the second stage
        of :func:`dcsi.find_redundancy`, test against train:
        :func:`dcsi.aligned.aligned_cross_pairs`), for test items the wavelet
        distance does not link.
    align_threshold : float, default=None
        Largest aligned distance (``None``: 0.0005, as :func:`dcsi.find_redundancy`).
    max_shift, max_crop : int, default=None
        Shifts and crops tolerated (``None``: 1 and 2 px, as
        :func:`dcsi.find_redundancy`).

    Returns
    -------
    LeakageResult
    """
    from dcsi.redundancy import (DEFAULT_THRESHOLDS, _load, _n_approx, _wavelet_rows,
                                 _wavelet_select, prepare_rows)

    caller = "find_leakage"
    check_choice(method, "method", caller, ("wavelet", "cnn"))
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS[method]
    threshold = check_float(threshold, "threshold", caller, min_value=0.0, max_value=2.0)
    tau = check_float(tau, "tau", caller, min_value=1.0, min_inclusive=False)
    check_int(n_farthest, "n_farthest", caller, min_value=0)
    check_int(block_size, "block_size", caller, min_value=1)
    if not isinstance(align, (bool, np.bool_)):
        raise InvalidParameterError(
            f"The 'align' parameter of {caller} must be True or False. Got {align!r} "
            "instead."
        )
    from dcsi.aligned import (ALIGN_DISTANCE, DEFAULT_ALIGN_THRESHOLD, DEFAULT_MAX_CROP,
                               DEFAULT_MAX_SHIFT)

    align_threshold = DEFAULT_ALIGN_THRESHOLD if align_threshold is None else align_threshold
    max_shift = DEFAULT_MAX_SHIFT if max_shift is None else max_shift
    max_crop = DEFAULT_MAX_CROP if max_crop is None else max_crop
    align_threshold = check_float(align_threshold, "align_threshold", caller,
                                  min_value=0.0, max_value=2.0)
    check_int(max_shift, "max_shift", caller, min_value=0)
    check_int(max_crop, "max_crop", caller, min_value=0)
    align = bool(align) and method == "wavelet"
    tr_arr, tr_y, tr_ids, tr_classes, tr_src = _load(train, train_labels, None, None, size)
    if size is None and tr_arr is not None:
        size = tuple(tr_arr.shape[1:3])
    te_arr, te_y, te_ids, te_classes, te_src = _load(test, test_labels, None, None, size)
    if len(tr_ids) == 0 or len(te_ids) == 0:
        raise DataError("find_leakage needs a non-empty training and test set.")
    if tr_arr.shape[1:] != te_arr.shape[1:]:
        raise InvalidParameterError(
            f"The train and test images of find_leakage must have one size; got "
            f"{tr_arr.shape[1:]} and {te_arr.shape[1:]}. Pass size= to resize both."
        )
    params: dict[str, Any] = {"method": method, "threshold": threshold, "seed": seed}
    if method == "wavelet":
        from dcsi.similarity.wavelet import wavelet_coefficients

        Wtr, cols, sel = _wavelet_select(tr_arr, wavelet=wavelet, level=level, mode=mode,
                                          tau=tau, rank_tol=1e-5)
        Wte = wavelet_coefficients(te_arr, wavelet=wavelet, level=level, mode=mode)[:, cols]
        n_approx = _n_approx(tr_arr.shape[1:], wavelet, level, mode)
        Ftr, Fte = _wavelet_rows(Wtr, cols, n_approx), _wavelet_rows(Wte, cols, n_approx)
        params.update({"wavelet": wavelet, "level": level, "mode": mode, "tau": tau,
                       "m": int(len(cols)),
                       "distance": "1 - cosine of the selected wavelet coefficients, "
                                   "approximation band centred per image (columns "
                                   "selected on the training set)"})
    else:
        from dcsi.features import extract_features

        ftr = np.asarray(extract_features(tr_src, backbone=backbone,
                                          **(feature_kw or {})).features, dtype=np.float64)
        fte = np.asarray(extract_features(te_src, backbone=backbone,
                                          **(feature_kw or {})).features, dtype=np.float64)
        mean = ftr.mean(axis=0)
        Ftr, Fte = prepare_rows(ftr - mean, center="none"), prepare_rows(fte - mean,
                                                                          center="none")
        params["distance"] = "cosine distance of CNN features centred on the training mean"
    from dcsi.aligned import skip_reason

    skipped = skip_reason(tr_arr.shape[1:3], max_shift, max_crop) if align else None
    if skipped:
        align = False
        params["align_skipped"] = skipped
        logger.warning("find_leakage: %s", skipped)
    params["align"] = align
    aligned = None
    if align:
        params.update({
            "align_threshold": align_threshold, "max_shift": max_shift,
            "max_crop": max_crop,
            "align_distance": ALIGN_DISTANCE,
        })
        from dcsi.aligned import aligned_cross_pairs

        aligned = aligned_cross_pairs(te_arr, tr_arr, threshold=align_threshold,
                                      max_shift=max_shift, max_crop=max_crop, seed=seed)

    def names(y, classes):
        if y is None:
            return None
        return [str(classes[int(v)]) if int(v) < len(classes) else str(int(v)) for v in y]

    return find_leakage_features(
        Ftr, Fte, threshold=threshold, train_ids=tr_ids, test_ids=te_ids,
        train_labels=names(tr_y, tr_classes), test_labels=names(te_y, te_classes),
        n_farthest=n_farthest, n_components=n_components, block_size=block_size,
        seed=seed, method=method, params=params, aligned=aligned,
    )
