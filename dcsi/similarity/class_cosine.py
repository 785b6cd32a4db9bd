"""Class-to-class similarity of feature vectors through per-class sums.

The mean pairwise cosine similarity between classes a and b,
``mean_{i in a, j in b} cos(x_i, x_j)``, equals ``s_a . s_b / (n_a n_b)`` where
``s_c`` is the sum of the unit-normalised features of class c.  This makes the exact
K x K matrix an O(N d + K^2 d) computation instead of the O(N^2 d) double loop of
Parikh & Aggarwal (2020, Algorithm 1).

The paper's other metrics are options of :func:`class_similarity`:

- ``"sqeuclidean"``: mean pairwise squared Euclidean distance, exact in closed form,
  ``sum_{i in a, j in b} |x_i - x_j|^2 = n_b q_a + n_a q_b - 2 r_a . r_b`` with
  ``r_c`` the sum of the raw features and ``q_c`` the sum of their squared norms.
- ``"euclidean"`` (alias ``"l2"``) and ``"manhattan"`` (alias ``"l1"``): no closed form;
  computed blockwise over row blocks, so memory stays at ``block_size`` x ``block_size``
  distances whatever the number of images (time is O(N^2 d)).

Distances are taken between the raw feature vectors; the cosine metric normalises each
vector to unit length first (cosine is scale-free).

All per-class statistics (:class:`ClassStats`) are partial sums: statistics of disjoint
shards merge with ``+`` and give the same matrix as one pass, so a distributed engine can
run the computation shard by shard.  The blockwise distance sums merge the same way,
through :func:`class_distance_sums` on every pair of shards.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dcsi._json import to_jsonable
from dcsi._progress import progress
from dcsi._validation import check_array, check_choice, check_int, check_labels
from dcsi.exceptions import InvalidParameterError
from dcsi.neighbors import unit_rows

__all__ = [
    "METRICS",
    "ClassSimilarity",
    "ClassStats",
    "block_stats",
    "check_class_inputs",
    "class_distance_sums",
    "class_similarity",
    "class_stats",
    "compute_class_similarity",
    "cosine_from_stats",
    "most_similar_pairs",
    "sqeuclidean_from_stats",
    "stats_block_rows",
]

logger = logging.getLogger(__name__)

#: canonical metric names and their aliases
METRICS = {
    "cosine": "cosine",
    "euclidean": "euclidean",
    "l2": "euclidean",
    "sqeuclidean": "sqeuclidean",
    "manhattan": "manhattan",
    "l1": "manhattan",
    "cityblock": "manhattan",
}

_DIAGONAL_TEXT = {
    "cosine": (
        "mean cosine similarity over the pairs of distinct images of the class "
        "(self-pairs excluded): (|s_c|^2 - n_c) / (n_c (n_c - 1)), s_c the sum of the "
        "class's unit-normalised features; null for a class with fewer than 2 images"
    ),
    "distance": (
        "mean {metric} distance over the pairs of distinct images of the class "
        "(self-pairs excluded, so the diagonal is the within-class spread, not 0); "
        "null for a class with fewer than 2 images"
    ),
}

# bytes of float64 distances held at once by the blockwise metrics
_BLOCK_BYTES = 32 * 2**20


@dataclass(frozen=True)
class ClassStats:
    """Mergeable per-class partial sums of features.

    Attributes
    ----------
    sums : ndarray of shape (n_classes, dim), float64
        Sum of the unit-normalised feature vectors of each class (cosine, router).
    counts : ndarray of shape (n_classes,), int64
        Number of images of each class.
    raw_sums : ndarray of shape (n_classes, dim), float64, or None
        Sum of the raw feature vectors of each class (squared Euclidean).
    sq_norms : ndarray of shape (n_classes,), float64, or None
        Sum of the squared norms of the raw feature vectors of each class.

    Two ``ClassStats`` computed on disjoint shards merge with ``+``; the merged
    statistics equal those of one pass over the union.
    """

    sums: np.ndarray
    counts: np.ndarray
    raw_sums: np.ndarray | None = None
    sq_norms: np.ndarray | None = None

    def __add__(self, other: ClassStats) -> ClassStats:
        if not isinstance(other, ClassStats):
            return NotImplemented
        if self.sums.shape != other.sums.shape:
            raise InvalidParameterError(
                "Cannot merge ClassStats of shapes "
                f"{self.sums.shape} and {other.sums.shape}; compute every shard with the "
                "same n_classes and feature dimension."
            )

        def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return None if a is None or b is None else a + b

        return ClassStats(
            self.sums + other.sums,
            self.counts + other.counts,
            _add(self.raw_sums, other.raw_sums),
            _add(self.sq_norms, other.sq_norms),
        )

    @property
    def n_classes(self) -> int:
        """Number of classes K."""
        return int(self.counts.shape[0])

    @property
    def centres(self) -> np.ndarray:
        """ndarray of shape (n_classes, dim), float64: the mean unit-normalised feature
        vector of each class (zeros for a class with no image)."""
        return self.sums / np.maximum(self.counts, 1)[:, None]


@dataclass(frozen=True)
class ClassSimilarity:
    """A class-to-class similarity (or distance) matrix and what it means.

    Attributes
    ----------
    matrix : ndarray of shape (n_classes, n_classes), float64
        Mean pairwise cosine similarity (``metric="cosine"``) or mean pairwise
        distance (the other metrics) between the images of two classes.
    metric : str
        Canonical metric name: "cosine", "euclidean", "sqeuclidean" or "manhattan".
    counts : ndarray of shape (n_classes,), int64
        Images per class.
    classes : list of str or None
        Class names in label order.
    """

    matrix: np.ndarray
    metric: str
    counts: np.ndarray
    classes: list[str] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``"similarity"`` for cosine (higher = more alike), else ``"distance"``."""
        return "similarity" if self.metric == "cosine" else "distance"

    @property
    def diagonal(self) -> str:
        """What the diagonal of :attr:`matrix` holds, in words."""
        if self.metric == "cosine":
            return _DIAGONAL_TEXT["cosine"]
        return _DIAGONAL_TEXT["distance"].format(metric=self.metric)

    def to_dict(self) -> dict[str, Any]:
        """The card's similarity entry ``{"matrix", "diagonal", "params"}`` (JSON-ready)."""
        params = {
            "metric": self.metric,
            "kind": self.kind,
            "features": "unit-normalised" if self.metric == "cosine" else "raw",
            "exact": True,
            **self.params,
        }
        return {
            "matrix": to_jsonable(np.asarray(self.matrix, dtype=np.float64)),
            "diagonal": self.diagonal,
            "params": params,
        }


def check_class_inputs(
    features: Any, labels: Any, n_classes: int | None, caller: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Features (n, d), their labels (n,) as int64 class ids and the class count K,
    checked for ``caller``: a 2-D array of numbers, one label ``>= 0`` per row, and
    ``n_classes`` (default ``labels.max() + 1``) above every label; one line otherwise."""
    x = check_array(features, "features", caller, ndim=2)
    y = check_labels(labels, x.shape[0], caller)
    if n_classes is None:
        k = int(y.max()) + 1
    else:
        k = check_int(n_classes, "n_classes", caller, min_value=1)
        if int(y.max()) >= k:
            raise InvalidParameterError(
                f"The 'labels' parameter of {caller} holds class id {int(y.max())}, "
                f"but n_classes={k}; pass n_classes > {int(y.max())} or fix the labels."
            )
    return x, y, k


def _metric(metric: Any, caller: str) -> str:
    check_choice(metric, "metric", caller, list(METRICS))
    return METRICS[metric]


#: Rows per block of :func:`class_stats` when called alone.  The pipeline uses
#: :func:`stats_block_rows` of its feature batch (the same blocks on every engine), so
#: that a Ray item of whole feature batches covers whole blocks.
STATS_BLOCK_ROWS = 1024


def stats_block_rows(batch_size: int) -> int:
    """Rows per block of :func:`class_stats` for features made in batches of
    ``batch_size``: the largest multiple of ``batch_size`` not above
    :data:`STATS_BLOCK_ROWS` (``batch_size`` itself when it is larger); 1,024 for the
    default batch of 64."""
    return batch_size * max(1, STATS_BLOCK_ROWS // batch_size)


def block_stats(features: np.ndarray, labels: np.ndarray, n_classes: int) -> ClassStats:
    """The :class:`ClassStats` of one block of rows: the partial that :func:`class_stats`
    adds for that block, so that a block computed elsewhere (a Ray actor) merges into the
    same bits.

    Parameters
    ----------
    features : ndarray of shape (b, dim)
    labels : ndarray of shape (b,), int
        Class ids in ``0..n_classes-1`` (not checked: :func:`class_stats` checks them).
    n_classes : int

    Returns
    -------
    ClassStats
        ``sums``, ``raw_sums`` of shape (n_classes, dim), ``sq_norms`` and ``counts`` of
        shape (n_classes,), all float64 but the int64 counts.
    """
    xb = np.asarray(features).astype(np.float64, copy=False)
    y = np.asarray(labels)
    onehot = np.zeros((n_classes, xb.shape[0]), dtype=np.float64)
    onehot[y, np.arange(xb.shape[0])] = 1.0
    return ClassStats(
        onehot @ unit_rows(xb, np.float64),
        np.bincount(y, minlength=n_classes).astype(np.int64),
        onehot @ xb,
        onehot @ np.einsum("ij,ij->i", xb, xb),
    )


def class_stats(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int | None = None,
    *,
    block_rows: int = STATS_BLOCK_ROWS,
    partials: Mapping[int, ClassStats] | None = None,
) -> ClassStats:
    """Per-class sums of unit-normalised (and raw) features, O(N d).

    The rows are taken in positional blocks ``[j * block_rows, (j + 1) * block_rows)``
    (float64 copies of one block only); the :func:`block_stats` of each block are added
    in block order, starting from zeros.

    Parameters
    ----------
    features : ndarray of shape (n_images, dim)
    labels : ndarray of shape (n_images,), int
        Class ids in ``0..n_classes-1``.
    n_classes : int, default=None
        Number of classes; ``labels.max() + 1`` when omitted.  Pass it when computing
        shards, so that every shard has the same shape.
    block_rows : int, default=1024
        Rows per block (:data:`STATS_BLOCK_ROWS`; the pipeline passes
        :func:`stats_block_rows` of its batch size).
    partials : mapping of int to ClassStats, default=None
        :func:`block_stats` of blocks already computed (by block number ``j``, e.g. by
        the Ray engine's actors); the blocks it lacks are computed from ``features``.
        The result is bit for bit that of ``partials=None`` when every partial was
        computed by :func:`block_stats` on the same rows.

    Returns
    -------
    ClassStats
        Mergeable with ``+`` across disjoint shards.
    """
    x, y, k = check_class_inputs(features, labels, n_classes, "class_stats")
    block_rows = check_int(block_rows, "block_rows", "class_stats", min_value=1)
    d = x.shape[1]
    sums, counts, raw_sums, sq_norms = (
        np.zeros((k, d)),
        np.zeros(k, np.int64),
        np.zeros((k, d)),
        np.zeros(k),
    )
    for j, s in enumerate(range(0, x.shape[0], block_rows)):
        part = None if partials is None else partials.get(j)
        if part is None:
            part = block_stats(x[s : s + block_rows], y[s : s + block_rows], k)
        if part.sums.shape != sums.shape or part.raw_sums is None or part.sq_norms is None:
            raise InvalidParameterError(
                f"The 'partials' parameter of class_stats holds a block {j} of shape "
                f"{part.sums.shape} (or without raw sums); every block must come from "
                f"block_stats with {k} classes and {d}-d features."
            )
        sums += part.sums  # in place: the bits of ``total + part``
        counts += part.counts
        raw_sums += part.raw_sums
        sq_norms += part.sq_norms
    return ClassStats(sums, counts, raw_sums, sq_norms)


def cosine_from_stats(stats: ClassStats) -> np.ndarray:
    """Mean pairwise cosine similarity matrix from merged :class:`ClassStats`.

    Returns
    -------
    ndarray of shape (n_classes, n_classes), float64
        Off-diagonal ``s_a . s_b / (n_a n_b)``; diagonal
        ``(|s_c|^2 - n_c) / (n_c (n_c - 1))`` (self-pairs excluded), NaN when n_c < 2.
    """
    s, n = stats.sums, stats.counts.astype(np.float64)
    gram = s @ s.T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = gram / np.outer(n, n)
        diag = (np.diag(gram) - n) / (n * (n - 1))
    np.fill_diagonal(out, np.where(n >= 2, diag, np.nan))
    return out


def sqeuclidean_from_stats(stats: ClassStats) -> np.ndarray:
    """Mean pairwise squared Euclidean distance matrix from merged :class:`ClassStats`.

    Returns
    -------
    ndarray of shape (n_classes, n_classes), float64
        ``(n_b q_a + n_a q_b - 2 r_a . r_b) / (n_a n_b)`` off the diagonal; on the
        diagonal the same sum divided by ``n_c (n_c - 1)`` (self-pairs add 0 and are
        excluded from the count), NaN when n_c < 2.
    """
    if stats.raw_sums is None or stats.sq_norms is None:
        raise InvalidParameterError(
            "sqeuclidean_from_stats needs ClassStats with raw_sums and sq_norms; "
            "compute them with dcsi.similarity.class_cosine.class_stats."
        )
    r, q, n = stats.raw_sums, stats.sq_norms, stats.counts.astype(np.float64)
    total = np.outer(q, n) + np.outer(n, q) - 2.0 * (r @ r.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = total / np.outer(n, n)
        diag = np.diag(total) / (n * (n - 1))
    np.fill_diagonal(out, np.where(n >= 2, diag, np.nan))
    # rounding can leave tiny negatives where classes coincide
    return np.where(np.isnan(out), out, np.maximum(out, 0.0))


def class_distance_sums(
    features_a: np.ndarray,
    labels_a: np.ndarray,
    features_b: np.ndarray,
    labels_b: np.ndarray,
    *,
    metric: str = "manhattan",
    n_classes: int,
    block_size: int | None = None,
) -> np.ndarray:
    """Sums of pairwise distances between two shards, aggregated by class pair.

    ``T[a, b] = sum_{i in A with label a} sum_{j in B with label b} dist(x_i, x_j)``,
    computed over blocks of rows so that at most ``block_size**2`` distances are held
    at once.  Summing ``T`` over all ordered pairs of shards (a shard with itself
    included) gives the totals behind the euclidean/manhattan class matrices.

    Parameters
    ----------
    features_a : ndarray of shape (n_a, dim)
    labels_a : ndarray of shape (n_a,), int
    features_b : ndarray of shape (n_b, dim)
    labels_b : ndarray of shape (n_b,), int
    metric : {"euclidean", "manhattan", "sqeuclidean"} or alias, default="manhattan"
    n_classes : int
    block_size : int, default=None
        Rows per block; by default sized so a block of distances takes about 32 MiB.

    Returns
    -------
    ndarray of shape (n_classes, n_classes), float64
    """
    from scipy.spatial.distance import cdist

    caller = "class_distance_sums"
    name = _metric(metric, caller)
    if name == "cosine":
        raise InvalidParameterError(
            "The 'metric' parameter of class_distance_sums must be a distance "
            "('euclidean', 'sqeuclidean' or 'manhattan'). Got 'cosine' instead; "
            "use class_stats and cosine_from_stats for cosine."
        )
    xa, ya, k = check_class_inputs(features_a, labels_a, n_classes, caller)
    xb, yb, _ = check_class_inputs(features_b, labels_b, n_classes, caller)
    if xa.shape[1] != xb.shape[1]:
        raise InvalidParameterError(
            f"features_a and features_b of {caller} must have the same dimension. "
            f"Got {xa.shape[1]} and {xb.shape[1]} instead."
        )
    bs = _block_rows(block_size, caller)
    scipy_metric = {
        "euclidean": "euclidean",
        "sqeuclidean": "sqeuclidean",
        "manhattan": "cityblock",
    }[name]
    xa = np.ascontiguousarray(xa, dtype=np.float64)
    xb = np.ascontiguousarray(xb, dtype=np.float64)
    total = np.zeros((k, k), dtype=np.float64)
    for i0 in range(0, xa.shape[0], bs):
        oa = _onehot(ya[i0 : i0 + bs], k)
        for j0 in range(0, xb.shape[0], bs):
            d = cdist(xa[i0 : i0 + bs], xb[j0 : j0 + bs], metric=scipy_metric)
            total += oa.T @ (d @ _onehot(yb[j0 : j0 + bs], k))
    return total


def _block_rows(block_size: int | None, caller: str) -> int:
    if block_size is None:
        return max(64, int(math.sqrt(_BLOCK_BYTES / 8)))
    return check_int(block_size, "block_size", caller, min_value=1)


def _onehot(y: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((y.shape[0], k), dtype=np.float64)
    out[np.arange(y.shape[0]), y] = 1.0
    return out


def _blockwise_totals(
    x: np.ndarray, y: np.ndarray, k: int, metric: str, block_size: int
) -> np.ndarray:
    """Symmetric all-pairs distance totals by class pair, upper block triangle only."""
    from scipy.spatial.distance import cdist

    scipy_metric = {"euclidean": "euclidean", "manhattan": "cityblock"}[metric]
    x = np.ascontiguousarray(x, dtype=np.float64)
    n = x.shape[0]
    starts = list(range(0, n, block_size))
    onehots = [_onehot(y[s : s + block_size], k) for s in starts]
    total = np.zeros((k, k), dtype=np.float64)
    n_blocks = len(starts) * (len(starts) + 1) // 2
    with progress(total=n_blocks, desc=f"class {metric} distances", unit="block") as bar:
        for bi, i0 in enumerate(starts):
            xi = x[i0 : i0 + block_size]
            for bj in range(bi, len(starts)):
                j0 = starts[bj]
                d = cdist(xi, x[j0 : j0 + block_size], metric=scipy_metric)
                part = onehots[bi].T @ (d @ onehots[bj])
                total += part if bi == bj else part + part.T
                bar.update(1)
    return total


def _means_from_totals(total: np.ndarray, counts: np.ndarray) -> np.ndarray:
    n = counts.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = total / np.outer(n, n)
        diag = np.diag(total) / (n * (n - 1))
    np.fill_diagonal(out, np.where(n >= 2, diag, np.nan))
    return out


def class_similarity(
    features: np.ndarray,
    labels: np.ndarray,
    metric: str = "cosine",
    *,
    n_classes: int | None = None,
    block_size: int | None = None,
) -> np.ndarray:
    """K x K matrix of mean pairwise similarity (or distance) between two classes.

    Entry (a, b) is the mean, over all pairs of an image of class a and an image of
    class b, of the pairwise cosine similarity (``metric="cosine"``; 1 minus the
    cosine distance of Parikh & Aggarwal's Algorithm 1) or of the pairwise distance
    (the other metrics).

    Parameters
    ----------
    features : ndarray of shape (n_images, dim)
    labels : ndarray of shape (n_images,), int
        Class ids in ``0..n_classes-1``.
    metric : {"cosine", "euclidean", "sqeuclidean", "manhattan"}, default="cosine"
        Aliases: ``"l2"`` = euclidean, ``"l1"``/``"cityblock"`` = manhattan.
        cosine and sqeuclidean are exact in O(N d) through per-class sums;
        euclidean and manhattan are exact, blockwise, O(N^2 d) time and bounded memory.
    n_classes : int, default=None
        Number of classes; ``labels.max() + 1`` when omitted.
    block_size : int, default=None
        Rows per block for euclidean/manhattan (memory ``block_size**2`` floats);
        by default about 32 MiB of distances.

    Returns
    -------
    ndarray of shape (n_classes, n_classes), float64
        Symmetric.  Off-diagonal: mean over all cross-class pairs.  Diagonal: mean over
        the within-class pairs of distinct images (self-pairs excluded), e.g.
        ``(|s_c|^2 - n_c) / (n_c (n_c - 1))`` for cosine; NaN for a class with fewer
        than two images (and a whole NaN row/column for an empty class).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    >>> S = class_similarity(x, np.array([0, 0, 1, 1]))
    >>> S.shape, bool(S[0, 0] > S[0, 1])
    ((2, 2), True)
    """
    name = _metric(metric, "class_similarity")
    if name in ("cosine", "sqeuclidean"):
        stats = class_stats(features, labels, n_classes)
        return cosine_from_stats(stats) if name == "cosine" else sqeuclidean_from_stats(stats)
    x, y, k = check_class_inputs(features, labels, n_classes, "class_similarity")
    bs = _block_rows(block_size, "class_similarity")
    total = _blockwise_totals(x, y, k, name, bs)
    return _means_from_totals(total, np.bincount(y, minlength=k))


def compute_class_similarity(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    metric: str = "cosine",
    n_classes: int | None = None,
    classes: list[str] | None = None,
    block_size: int | None = None,
    stats: ClassStats | None = None,
) -> ClassSimilarity:
    """:func:`class_similarity` wrapped in a :class:`ClassSimilarity` result.

    Parameters
    ----------
    features : ndarray of shape (n_images, dim)
    labels : ndarray of shape (n_images,), int
    metric : str, default="cosine"
        See :func:`class_similarity`.
    n_classes : int, default=None
        Defaults to ``len(classes)`` when classes are given, else ``labels.max() + 1``.
    classes : list of str, default=None
        Class names in label order.
    block_size : int, default=None
    stats : ClassStats, default=None
        The :func:`class_stats` of these features and labels, already computed (the
        pipeline merges them from blocks): cosine and sqeuclidean use them instead of a
        second pass over ``features``.

    Returns
    -------
    ClassSimilarity
        ``to_dict()`` is the card's similarity entry.
    """
    name = _metric(metric, "compute_class_similarity")
    if n_classes is None and classes is not None:
        n_classes = len(classes)
    if stats is not None and name in ("cosine", "sqeuclidean"):
        from_stats = cosine_from_stats if name == "cosine" else sqeuclidean_from_stats
        matrix = from_stats(stats)
    else:
        matrix = class_similarity(
            features, labels, name, n_classes=n_classes, block_size=block_size
        )
    y = check_labels(labels, np.asarray(features).shape[0], "compute_class_similarity")
    counts = np.bincount(y, minlength=matrix.shape[0]).astype(np.int64)
    return ClassSimilarity(
        matrix=matrix,
        metric=name,
        counts=counts,
        classes=None if classes is None else list(classes),
    )


def most_similar_pairs(
    S: np.ndarray,
    *,
    n: int = 5,
    classes: list[str] | None = None,
    kind: str = "similarity",
) -> list[tuple[Any, Any, float]]:
    """The ``n`` most alike pairs of distinct classes, most alike first.

    Parameters
    ----------
    S : ndarray of shape (n_classes, n_classes)
        A class matrix from :func:`class_similarity`.
    n : int, default=5
    classes : list of str, default=None
        Names to report instead of class ids.
    kind : {"similarity", "distance"}, default="similarity"
        Whether larger (similarity) or smaller (distance) entries mean more alike.

    Returns
    -------
    list of (class_a, class_b, value)
        With ``a < b`` in label order; ties broken by label order.
    """
    caller = "most_similar_pairs"
    m = check_array(S, "S", caller, ndim=2, dtype=np.float64)
    if m.shape[0] != m.shape[1]:
        raise InvalidParameterError(
            f"The 'S' parameter of {caller} must be a square matrix. Got shape {m.shape} instead."
        )
    n = check_int(n, "n", caller, min_value=0)
    check_choice(kind, "kind", caller, ["similarity", "distance"])
    iu, ju = np.triu_indices(m.shape[0], k=1)
    vals = m[iu, ju]
    order = np.argsort(-vals if kind == "similarity" else vals, kind="stable")[:n]
    names = classes if classes is not None else list(range(m.shape[0]))
    return [(names[iu[o]], names[ju[o]], float(vals[o])) for o in order]
