"""Train/test leakage: test images with a near-identical training image.

Yousefzadeh reports that 11% of the CIFAR-100 "aquarium fish" test images have a
near-identical image in the training set.  :func:`find_leakage` measures that share for
a whole test split, with the same features and absolute thresholds as
:func:`dcsi.find_redundancy`, and also lists the test items farthest from every
training item (candidates for mistakes or out-of-distribution images).

Never forms a ``n_test x n_train`` matrix: the exact search of :mod:`dcsi.neighbors`
finds every (test, train) pair within the threshold (candidates in a 32-d orthogonal
projection, which can only shorten distances, then checked on all columns), and a
projected lower bound of every test item's nearest distance shortlists the farthest
ones, which are then measured exactly.

With ``method="wavelet"`` and ``align=True`` (default), test items that the wavelet
distance does not link are also checked by the shift- and crop-tolerant second stage
of :func:`dcsi.find_redundancy`, test against train
(:func:`dcsi.aligned.aligned_cross_pairs`: shifted or cropped-and-resized copies in
either split), and by its density-relative third stage
(:func:`dcsi.relative_links.relative_cross_pairs`: a test image far closer to a
training image than to the rest of the training set, in the coarse rows or after
registration).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dcsi._validation import Interval, Options, check_instance, validate_params
from dcsi.aligned import AlignOptions, aligned_cross_pairs, skip_reason
from dcsi.blank import BLANK_TOLERANCE, BlankImages, blank_cross_pairs, find_blank
from dcsi.exceptions import DataError, InvalidParameterError
from dcsi.neighbors import (
    SearchOptions,
    nearest_distances,
    nearest_lower_bounds,
    prepare_rows,
    radius_pairs,
)
from dcsi.redundancy import DEFAULT_THRESHOLDS, as_grey_arrays
from dcsi.relative_links import RelativeOptions, relative_cross_pairs
from dcsi.similarity.wavelet import WaveletOptions, wavelet_rows

__all__ = ["LeakagePair", "LeakageResult", "find_leakage", "find_leakage_features"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeakagePair:
    """A test item and its nearest training item within the threshold.

    ``stage`` says which test linked them: ``"features"`` (the first-stage distance
    of the method, e.g. ``1 - cos`` of wavelet rows), ``"aligned"`` (the shift- and
    crop-tolerant second stage; ``distance`` is then the aligned distance of
    :func:`dcsi.aligned.aligned_distance`) or ``"blank"`` (both images are blank and of
    one colour, :mod:`dcsi.blank`; ``distance`` is their colour difference over 255).
    """

    test_id: str
    train_id: str
    distance: float
    test_label: str | None = None
    train_label: str | None = None
    stage: str = "features"

    def to_dict(self) -> dict:
        return {
            "test_id": self.test_id,
            "train_id": self.train_id,
            "distance": round(float(self.distance), 6),
            "test_label": self.test_label,
            "train_label": self.train_label,
            "stage": self.stage,
        }


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
    blank : dict or None
        Blank images (:mod:`dcsi.blank`): ``tolerance``, ``n_train``, ``n_test``,
        ``n_leaked`` (blank test images with a blank training image of the same
        colour) and ``test_ids``; None when the check was off.  Blank test images are
        left out of ``farthest``.
    """

    method: str
    params: dict
    n_train: int
    n_test: int
    pairs: tuple[LeakagePair, ...]
    farthest: tuple[tuple[str, float], ...]
    per_class: dict = field(default_factory=dict)
    blank: dict | None = None

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
        return sum(
            p.test_label is not None and p.train_label is not None and p.test_label != p.train_label
            for p in self.pairs
        )

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
            "farthest": [{"test_id": i, "distance": round(float(d), 6)} for i, d in self.farthest],
            "blank": self.blank,
        }


def _nearest_leaks(
    A: np.ndarray, B: np.ndarray, threshold: float, search: SearchOptions, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``A``: its nearest row of ``B`` within ``threshold`` (-1: none),
    and that distance (inf: none); ties go to the first ``B`` row."""
    pairs, dist = radius_pairs(
        A,
        B,
        threshold=threshold,
        n_components=search.n_components,
        block_size=search.block_size,
        seed=seed,
        desc="leakage",
        search=search.resolve(A.shape[0] + B.shape[0]),
        nprobe=search.nprobe,
    )
    best = np.full(A.shape[0], -1, dtype=np.int64)
    best_d = np.full(A.shape[0], np.inf)
    order = np.lexsort((pairs[:, 1], dist, pairs[:, 0]))
    rows, first = np.unique(pairs[order, 0], return_index=True)
    best[rows], best_d[rows] = pairs[order[first], 1], dist[order[first]]
    return best, best_d


def _blank_leaks(
    blank: tuple[BlankImages, BlankImages] | None,
    best: np.ndarray,
    best_d: np.ndarray,
    stage: np.ndarray,
    test_ids: list[str],
) -> dict | None:
    """Record blank test images with a blank training image of their colour in
    ``best``, ``best_d`` and ``stage`` (2, in place); the result's ``blank`` block."""
    if blank is None:
        return None
    train, test = blank
    bp, bd = blank_cross_pairs(test, train)
    best[bp[:, 0]], best_d[bp[:, 0]], stage[bp[:, 0]] = bp[:, 1], bd, 2
    return {
        "tolerance": float(test.tolerance),
        "same_colour": float(test.same_colour),
        "n_train": int(train.mask.sum()),
        "n_test": int(test.mask.sum()),
        "n_leaked": len(bp),
        "test_ids": [test_ids[i] for i in test.indices],
    }


def _farthest(
    A: np.ndarray,
    B: np.ndarray,
    rows: np.ndarray,
    test_ids: list[str],
    n_farthest: int,
    search: SearchOptions,
    seed: int,
) -> list[tuple[str, float]]:
    """The ``n_farthest`` test ``rows`` farthest from every training row: shortlisted by
    the projected lower bound, then measured exactly."""
    k = min(n_farthest, len(rows))
    if not k:
        return []
    lower = nearest_lower_bounds(
        A[rows], B, n_components=search.n_components, block_size=search.block_size, seed=seed
    )
    short = rows[np.argsort(-lower, kind="stable")[: min(len(rows), 10 * k)]]
    exact = nearest_distances(A[short], B)
    top = np.argsort(-exact, kind="stable")[:k]
    return [(test_ids[short[t]], float(exact[t])) for t in top]


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
    search: str | SearchOptions | None = None,
    seed: int = 0,
    method: str = "features",
    params: dict | None = None,
    aligned: tuple[np.ndarray, np.ndarray] | None = None,
    blank: tuple[BlankImages, BlankImages] | None = None,
    relative: tuple[np.ndarray, np.ndarray] | None = None,
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
    search : {"auto", "exact", "ann"} or SearchOptions, default=None
        The candidate search (:class:`dcsi.neighbors.SearchOptions`; ``None``:
        ``"auto"``, faiss above 100,000 rows of both sets together); ``params`` records
        ``search: "ann"`` and ``nprobe`` when the faiss search ran.
    seed : int, default=0
    method : str, default="features"
    params : dict, default=None
        Recorded in the result.
    aligned : (pairs (m, 2), distances (m,)), default=None
        Extra leaked pairs ``(test index, train index)`` from a second stage
        (:func:`dcsi.aligned.aligned_cross_pairs`); used for test items the features do
        not link.
    blank : (BlankImages of the training set, BlankImages of the test set), default=None
        Blank images (:func:`dcsi.blank.find_blank`): a blank test image is leaked when
        a blank training image has its colour (``stage="blank"``), never through the
        features or the aligned stage; blank images link to no other image and blank
        test images are left out of ``farthest``.
    relative : (pairs (m, 2), scores (m,)), default=None
        Extra leaked pairs ``(test index, train index)`` from the density-relative
        stage (:func:`dcsi.relative_links.relative_cross_pairs`); used for test items
        neither the features nor the aligned stage link (``stage="relative"``,
        ``distance`` the relative score).

    Returns
    -------
    LeakageResult
    """
    search = SearchOptions.from_arg(search, "find_leakage_features")
    A = np.ascontiguousarray(test_features, dtype=np.float32)
    B = np.ascontiguousarray(train_features, dtype=np.float32)
    n_test, n_train = A.shape[0], B.shape[0]
    params = dict(params or {})
    if search.resolve(n_test + n_train) == "ann":  # recorded only when used
        search.check_available(n_test + n_train, "find_leakage")
        params.update({"search": "ann", "nprobe": search.nprobe})
    test_ids = [str(i) for i in range(n_test)] if test_ids is None else list(test_ids)
    train_ids = [str(i) for i in range(n_train)] if train_ids is None else list(train_ids)
    best, best_d = _nearest_leaks(A, B, threshold, search, seed)
    tr_blank = np.zeros(n_train, dtype=bool) if blank is None else blank[0].mask
    te_blank = np.zeros(n_test, dtype=bool) if blank is None else blank[1].mask
    best[te_blank | tr_blank[np.maximum(best, 0)]] = -1  # blank images link only by colour
    stage = np.where(best >= 0, 0, -1)
    for code, extra in ((1, aligned), (3, relative)):
        if extra is None or not len(extra[0]):
            continue
        ap = np.asarray(extra[0], dtype=np.int64).reshape(-1, 2)
        ad = np.asarray(extra[1], dtype=np.float64)
        for k in np.lexsort((ap[:, 1], ad)):  # closest first: first seen is the best
            a, b = int(ap[k, 0]), int(ap[k, 1])
            if best[a] < 0 and not te_blank[a] and not tr_blank[b]:
                best[a], best_d[a], stage[a] = b, ad[k], code
    blank_block = _blank_leaks(blank, best, best_d, stage, test_ids)
    leaked = np.flatnonzero(best >= 0)
    leaked = leaked[np.lexsort((leaked, best_d[leaked], stage[leaked]))]
    pairs = tuple(
        LeakagePair(
            test_ids[a],
            train_ids[best[a]],
            float(best_d[a]),
            None if test_labels is None else test_labels[a],
            None if train_labels is None else train_labels[best[a]],
            stage=("features", "aligned", "blank", "relative")[stage[a]],
        )
        for a in leaked
    )
    pictures = np.flatnonzero(~te_blank)  # a blank image is far from everything
    farthest = _farthest(A, B, pictures, test_ids, n_farthest, search, seed)
    per_class: dict = {}
    if test_labels is not None:
        leaked_set = set(leaked.tolist())
        for name in sorted(set(test_labels), key=str):
            members = [i for i, lab in enumerate(test_labels) if lab == name]
            nl = sum(i in leaked_set for i in members)
            per_class[str(name)] = {
                "n_test": len(members),
                "n_leaked": nl,
                "share": nl / len(members) if members else None,
            }
    return LeakageResult(
        method=method,
        params=params,
        n_train=n_train,
        n_test=n_test,
        pairs=pairs,
        farthest=tuple(farthest),
        per_class=per_class,
        blank=blank_block,
    )


def _leakage_rows(
    tr_arr: np.ndarray,
    te_arr: np.ndarray,
    tr_set: Any,
    te_set: Any,
    *,
    method: str,
    wavelet: WaveletOptions,
    backbone: Any,
    params: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows of both sets for ``method``; records how they were made in ``params``.

    Wavelet rows use the columns selected on the training set; CNN features are centred
    on the training mean.
    """
    if method == "wavelet":
        wr = wavelet_rows(tr_arr, options=wavelet)
        Fte = wavelet_rows(te_arr, options=wavelet, columns=wr.columns).rows
        params.update(
            {
                **wavelet.to_dict(),
                "m": len(wr.columns),
                "distance": "1 - cosine of the selected wavelet coefficients, "
                "approximation band centred per image (columns "
                "selected on the training set)",
            }
        )
        del params["rank_tol"]
        return wr.rows, Fte
    from dcsi.features import extract_features

    ftr = np.asarray(extract_features(tr_set, backbone=backbone).features, dtype=np.float64)
    fte = np.asarray(extract_features(te_set, backbone=backbone).features, dtype=np.float64)
    mean = ftr.mean(axis=0)
    params["distance"] = "cosine distance of CNN features centred on the training mean"
    return prepare_rows(ftr - mean, center="none"), prepare_rows(fte - mean, center="none")


#: Declared constraints of find_leakage's scalar parameters.
LEAKAGE_CONSTRAINTS: dict[str, list[Any]] = {
    "method": [Options(("wavelet", "cnn"))],
    "threshold": [Interval(float, 0.0, 2.0, closed="both"), None],
    "n_farthest": [Interval(int, 0, None, closed="left")],
    "seed": [Interval(int, 0, None, closed="left")],
    "blank_tolerance": [Interval(float, 0.0, 255.0, closed="both"), None],
}


def _checked_options(
    method: Any,
    threshold: Any,
    n_farthest: Any,
    seed: Any,
    align: Any,
    wavelet: Any,
    search: Any,
    relative: Any = True,
) -> tuple[
    str, float, int, int, AlignOptions | None, WaveletOptions, SearchOptions, RelativeOptions | None
]:
    """find_leakage's options checked (before any data is read), defaults filled in."""
    caller = "find_leakage"
    checked = validate_params(
        {"method": method, "threshold": threshold, "n_farthest": n_farthest, "seed": seed},
        LEAKAGE_CONSTRAINTS,
        caller,
    )
    method, n_farthest, seed = checked["method"], checked["n_farthest"], checked["seed"]
    threshold = DEFAULT_THRESHOLDS[method] if checked["threshold"] is None else checked["threshold"]
    align_opts = AlignOptions.from_arg(align, caller) if method == "wavelet" else None
    check_instance(wavelet, WaveletOptions, "wavelet", caller, allow_none=True)
    search = SearchOptions.from_arg(search, caller)
    relative_opts = RelativeOptions.from_arg(relative, caller) if method == "wavelet" else None
    return (
        method,
        threshold,
        n_farthest,
        seed,
        align_opts,
        WaveletOptions() if wavelet is None else wavelet,
        search,
        relative_opts,
    )


def _aligned_leaks(
    tr_arr: np.ndarray,
    te_arr: np.ndarray,
    align_opts: AlignOptions | None,
    params: dict[str, Any],
    seed: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The aligned stage's (test, train) pairs and distances (None when off or skipped
    because the images are too small); records its options in ``params``."""
    skipped = (
        None
        if align_opts is None
        else skip_reason(tr_arr.shape[1:3], align_opts.max_shift, align_opts.max_crop)
    )
    if skipped:
        align_opts = None
        params["align_skipped"] = skipped
        logger.warning("find_leakage: %s", skipped)
    params["align"] = align_opts is not None
    if align_opts is None:
        return None
    align_opts = align_opts.resolved(tr_arr.shape[1:3])
    params.update(align_opts.to_dict())
    return aligned_cross_pairs(te_arr, tr_arr, options=align_opts, seed=seed)


def _relative_leaks(
    tr_arr: np.ndarray,
    te_arr: np.ndarray,
    options: RelativeOptions | None,
    params: dict[str, Any],
    search: SearchOptions,
    seed: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The relative stage's (test, train) pairs and scores (None when off); records
    its options in ``params``."""
    params["relative"] = None if options is None else options.to_dict()
    if options is None:
        return None
    return relative_cross_pairs(
        te_arr, tr_arr, options, search=search.resolve(len(tr_arr)), seed=seed
    )


def _blank_pair(
    tr_arr: np.ndarray, te_arr: np.ndarray, tolerance: float | None
) -> tuple[BlankImages, BlankImages] | None:
    """The blank images of the training and the test set (None: no blank check)."""
    if tolerance is None:
        return None
    return find_blank(tr_arr, tolerance=tolerance), find_blank(te_arr, tolerance=tolerance)


def _label_names(y: np.ndarray | None, classes: list[str]) -> list[str] | None:
    """Class name of each label (the id as text past the named classes); None: unlabelled."""
    if y is None:
        return None
    return [str(classes[int(v)]) if int(v) < len(classes) else str(int(v)) for v in y]


def find_leakage(
    train: Any,
    test: Any,
    *,
    train_labels: Any = None,
    test_labels: Any = None,
    method: str = "wavelet",
    threshold: float | None = None,
    align: bool | AlignOptions = True,
    relative: bool | RelativeOptions = True,
    wavelet: WaveletOptions | None = None,
    search: str | SearchOptions | None = None,
    size: int | tuple[int, int] | None = None,
    n_farthest: int = 20,
    backbone: Any = "efficientnet_lite0",
    seed: int = 0,
    blank_tolerance: float | None = BLANK_TOLERANCE,
) -> LeakageResult:
    """Share of test items with a near-identical training item, and the farthest ones.

    Parameters
    ----------
    train, test : ImageSet, ndarray of shape (n, h, w[, c]) uint8, or a source
        Opened image sets (what the CLI passes), in-memory images, or anything
        :func:`dcsi.open_source` takes (opened here).
    train_labels, test_labels : array-like, default=None
        Labels of in-memory arrays.
    method : {"wavelet", "cnn"}, default="wavelet"
    threshold : float, default=None
        Largest distance of a leaked pair; ``None``: the method's default of
        :data:`dcsi.redundancy.DEFAULT_THRESHOLDS` (wavelet: ``1 - cos <= 0.01``).
    align : bool or AlignOptions, default=True
        ``method="wavelet"``: also count shifted and cropped copies (the second stage
        of :func:`dcsi.find_redundancy`, test against train:
        :func:`dcsi.aligned.aligned_cross_pairs`), for test items the wavelet distance
        does not link; ``True``: :class:`~dcsi.aligned.AlignOptions` defaults, as
        :func:`dcsi.find_redundancy`.
    relative : bool or RelativeOptions, default=True
        ``method="wavelet"``: also count test items far closer to a training image than
        to the rest of the training set (the density-relative stage of
        :func:`dcsi.find_redundancy`, test against train:
        :func:`dcsi.relative_links.relative_cross_pairs`; ``stage="relative"``), for
        test items the first two stages do not link.
    wavelet : WaveletOptions, default=None
        Wavelet rows; the columns are selected on the training set.
    search : {"auto", "exact", "ann"} or SearchOptions, default=None
        The candidate search of the first stage, as :func:`dcsi.find_redundancy`'s
        (exact up to 100,000 images of both sets together, faiss IVF-flat above; every
        candidate checked exactly).  The farthest test items are searched exactly.
    size : int or (h, w), default=None
        Working size both sets are brought to (``None``: the training set's, see
        :meth:`dcsi.sources.ImageSet.working_size`: its native or median size, the
        longer side capped at 32 px).
    n_farthest : int, default=20
    backbone : str or Extractor, default="efficientnet_lite0"
        For ``method="cnn"`` (:func:`dcsi.extract_features`).
    seed : int, default=0
    blank_tolerance : float or None, default=2.0
        Blank images (:mod:`dcsi.blank`): a blank test image with a blank training image
        of the same colour is leaked (``stage="blank"``, counted in ``blank``);
        ``None``: no blank check.

    Returns
    -------
    LeakageResult
    """
    checked = _checked_options(
        method, threshold, n_farthest, seed, align, wavelet, search, relative
    )
    method, threshold, n_farthest, seed, align_opts, wavelet, search, relative_opts = checked
    blank_tolerance = validate_params(
        {"blank_tolerance": blank_tolerance}, LEAKAGE_CONSTRAINTS, "find_leakage"
    )["blank_tolerance"]
    tr_arr, tr_y, tr_ids, tr_classes, tr_set = as_grey_arrays(train, train_labels, size=size)
    if size is None:
        size = tuple(tr_arr.shape[1:3])
    te_arr, te_y, te_ids, te_classes, te_set = as_grey_arrays(test, test_labels, size=size)
    if len(tr_ids) == 0 or len(te_ids) == 0:
        raise DataError("find_leakage needs a non-empty training and test set.")
    search.check_available(len(tr_ids) + len(te_ids), "find_leakage")
    if tr_arr.shape[1:] != te_arr.shape[1:]:
        raise InvalidParameterError(
            f"The train and test images of find_leakage must have one size; got "
            f"{tr_arr.shape[1:]} and {te_arr.shape[1:]}. Pass size= to resize both."
        )
    if tr_y is not None and te_y is not None and not set(tr_classes) & set(te_classes):
        logger.warning(
            "find_leakage: the training classes (%s) and the test classes (%s) share no "
            "name; check that --train and --test are two splits of one dataset.",
            ", ".join(tr_classes[:5]),
            ", ".join(te_classes[:5]),
        )
    params: dict[str, Any] = {
        "method": method,
        "threshold": threshold,
        "seed": seed,
        "working_size": list(tr_arr.shape[1:3]),
        "blank_tolerance": blank_tolerance,
    }
    Ftr, Fte = _leakage_rows(
        tr_arr,
        te_arr,
        tr_set,
        te_set,
        method=method,
        wavelet=wavelet,
        backbone=backbone,
        params=params,
    )
    aligned = _aligned_leaks(tr_arr, te_arr, align_opts, params, seed)
    return find_leakage_features(
        Ftr,
        Fte,
        threshold=threshold,
        train_ids=tr_ids,
        test_ids=te_ids,
        train_labels=_label_names(tr_y, tr_classes),
        test_labels=_label_names(te_y, te_classes),
        n_farthest=n_farthest,
        search=search,
        seed=seed,
        method=method,
        params=params,
        aligned=aligned,
        blank=_blank_pair(tr_arr, te_arr, blank_tolerance),
        relative=_relative_leaks(tr_arr, te_arr, relative_opts, params, search, seed),
    )
