"""Per-class views of Yousefzadeh §5.4: the SSIM graph of a class and its landmarks.

For one class the paper shows the all-pairs SSIM matrix, a graph drawn from it, the
group of most similar images, the most dissimilar pair and the most isolated image.
:func:`class_views` computes these for every class (the ``max_classes`` largest, 50
by default) and stores what the report draws in the card's ``class_views`` block;
the report (:mod:`dcsi.report`) reads that block and recomputes nothing.

Per class, on a sample of at most ``max_per_class`` images:

=====================  ===============================================================
sample                 all images of the class when it has at most ``max_per_class``,
                       else a uniform random subset without replacement drawn with
                       ``np.random.default_rng([seed, class_id])`` (so a class's
                       sample does not depend on which other classes are shown),
                       kept in dataset order
SSIM matrix            :func:`dcsi.similarity.ssim.ssim_matrix`: skimage's
                       ``structural_similarity`` exactly (Gaussian window, sigma 1.5,
                       ``use_sample_covariance=False``, data range 255 for uint8);
                       ``win_size`` 11, or the largest odd size that fits smaller
                       images (:func:`~dcsi.similarity.ssim.auto_win_size`)
kNN graph              each image linked to its ``k`` most similar other images
                       (``min(k, n - 1)``; ties to the lower index), undirected
                       (union); edges ``[i, j]`` with ``i < j``, sorted
layout                 2-D positions of the kNN graph: the spectral layout (the
                       random-walk Laplacian eigenvectors 2 and 3, via
                       :func:`dcsi.spectral.laplacian_spectrum`) refined by 50
                       Fruchterman-Reingold steps; deterministic (no random start),
                       scaled to [-1, 1] and rounded to 3 decimals
most similar group     the most similar pair (highest SSIM), grown greedily: the image
                       whose *smallest* SSIM to the members is largest joins while
                       that value is at least the ``group_quantile`` quantile of the
                       class's pairwise SSIMs, up to ``max_group`` images; every pair
                       inside the group is above the threshold (a clique of the
                       thresholded graph), members in the order they joined
most dissimilar pair   the lowest SSIM over all pairs (ties to the first in row order)
most isolated image    the lowest mean SSIM to the other sampled images of the class
                       (the paper reads it off the similarity matrix; note that
                       :func:`dcsi.spectral.isolation_scores` ranks by the
                       *largest* similarity instead, nearest-neighbour isolation)
=====================  ===============================================================

Classes with fewer than two images, and classes beyond the ``max_classes`` largest
(ties to the lower class id), have no view and are listed in ``omitted`` with the
reason.  The cost is ``sum_c m_c (m_c - 1) / 2`` SSIM pairs (``m_c <= max_per_class``):
at the defaults at most 50 x 4,950 pairs, and the stored block holds at most 100 ids,
100 positions and 100 k edges per class.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dcsi._json import to_jsonable
from dcsi._validation import check_array, check_float, check_int, check_labels
from dcsi.exceptions import InvalidParameterError

__all__ = [
    "DEFAULT_MAX_CLASSES",
    "ClassView",
    "ClassViews",
    "class_views",
    "graph_layout",
    "knn_edges",
    "most_dissimilar_pair",
    "most_isolated",
    "most_similar_group",
]

logger = logging.getLogger(__name__)

#: classes with a view at most (the largest ones); the card block stays small
DEFAULT_MAX_CLASSES = 50
_LAYOUT_STEPS = 50
_DECIMALS = 3


# --------------------------------------------------------------------------------------
# the pieces, on one class's SSIM matrix


def knn_edges(S: np.ndarray, k: int) -> np.ndarray:
    """Undirected kNN graph of a similarity matrix.

    Parameters
    ----------
    S : ndarray of shape (n, n)
        Symmetric similarities (the diagonal is ignored).
    k : int
        Neighbours per vertex, capped at ``n - 1``; ties go to the lower index.

    Returns
    -------
    ndarray of shape (m, 2), int64
        Edges ``[i, j]`` with ``i < j``, sorted, each once (union of the directed lists).
    """
    n = S.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return np.empty((0, 2), dtype=np.int64)
    M = np.array(S, dtype=np.float64)
    np.fill_diagonal(M, -np.inf)
    nbr = np.argsort(-M, axis=1, kind="stable")[:, :k]
    rows = np.repeat(np.arange(n), k)
    cols = nbr.ravel()
    pairs = np.stack([np.minimum(rows, cols), np.maximum(rows, cols)], axis=1)
    return np.unique(pairs, axis=0).astype(np.int64)


def most_dissimilar_pair(S: np.ndarray) -> tuple[int, int, float]:
    """The pair ``(i, j)``, ``i < j``, with the lowest similarity (first in row order)."""
    n = S.shape[0]
    iu, ju = np.triu_indices(n, 1)
    t = int(np.argmin(S[iu, ju]))
    return int(iu[t]), int(ju[t]), float(S[iu[t], ju[t]])


def most_isolated(S: np.ndarray) -> tuple[int, float]:
    """The vertex with the lowest mean similarity to the others (lowest index on ties)."""
    n = S.shape[0]
    mean = (S.sum(axis=1) - np.diag(S)) / (n - 1)
    i = int(np.argmin(mean))
    return i, float(mean[i])


def most_similar_group(
    S: np.ndarray, *, quantile: float = 0.95, max_size: int = 8
) -> tuple[list[int], float, float]:
    """The most similar pair grown greedily into a group of mutually similar vertices.

    Parameters
    ----------
    S : ndarray of shape (n, n), n >= 2
    quantile : float, default=0.95
        The threshold is this quantile of the off-diagonal similarities (each pair once).
    max_size : int, default=8

    Returns
    -------
    members : list of int
        In the order they joined; the first two are the most similar pair.
    min_similarity : float
        Smallest similarity between two members.
    threshold : float
    """
    n = S.shape[0]
    iu, ju = np.triu_indices(n, 1)
    vals = S[iu, ju]
    threshold = float(np.quantile(vals, quantile))
    t = int(np.argmax(vals))
    members = [int(iu[t]), int(ju[t])]
    low = float(vals[t])
    # closeness[v]: smallest similarity of v to the current members
    closeness = np.minimum(S[members[0]], S[members[1]]).astype(np.float64)
    closeness[members] = -np.inf
    while len(members) < max_size:
        v = int(np.argmax(closeness))
        if not closeness[v] >= threshold:
            break
        members.append(v)
        low = min(low, float(closeness[v]))
        closeness = np.minimum(closeness, S[v])
        closeness[members] = -np.inf
    return members, low, threshold


def graph_layout(edges: np.ndarray, n: int, *, steps: int = _LAYOUT_STEPS) -> np.ndarray:
    """Deterministic 2-D layout of a graph: spectral start, Fruchterman-Reingold steps.

    The start is the spectral layout: the eigenvectors 2 and 3 of the random-walk
    Laplacian (``D^-1/2`` times those of the symmetric one from
    :func:`dcsi.spectral.laplacian_spectrum`; signs fixed so that the largest entry is
    positive).  Then ``steps`` Fruchterman-Reingold steps (attraction along edges,
    repulsion between all pairs, a linearly cooling step length) untangle what the
    spectral start puts on top of each other.  No random numbers are drawn.

    Parameters
    ----------
    edges : ndarray of shape (m, 2)
    n : int
        Number of vertices.
    steps : int, default=50

    Returns
    -------
    ndarray of shape (n, 2)
        Each coordinate scaled to [-1, 1] (the centre when all are equal).
    """
    from dcsi.block_map import single_thread_blas
    from dcsi.spectral import laplacian_spectrum

    if n == 1:
        return np.zeros((1, 2))
    A = np.zeros((n, n))
    if len(edges):
        A[edges[:, 0], edges[:, 1]] = 1.0
        A[edges[:, 1], edges[:, 0]] = 1.0
    m = min(3, n)
    with single_thread_blas():  # a 100 x 100 eigh: threads only spin on a busy machine
        _, V = laplacian_spectrum(
            A, kind="symmetric", n_eigenvalues=m, method="dense", return_vectors=True
        )
    deg = A.sum(axis=1)
    V = V / np.sqrt(np.where(deg > 0, deg, 1.0))[:, None]
    pos = np.zeros((n, 2))
    cols = V[:, 1:m]
    pos[:, : cols.shape[1]] = cols
    for c in range(2):  # eigenvector signs are arbitrary: fix them
        j = int(np.argmax(np.abs(pos[:, c])))
        if pos[j, c] < 0:
            pos[:, c] = -pos[:, c]
    pos = _unit_box(pos)
    # a spectral start can place vertices on one point: spread them on a small circle,
    # by index (deterministic), so the repulsion has a direction
    angle = 2 * np.pi * np.arange(n) / n
    pos += 1e-2 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    kk = np.sqrt(1.0 / n)
    temp = 0.1
    cool = temp / (steps + 1)
    x, y = pos[:, 0].copy(), pos[:, 1].copy()
    for _ in range(steps):
        dx = x[:, None] - x[None, :]
        dy = y[:, None] - y[None, :]
        dist = np.maximum(np.sqrt(dx * dx + dy * dy), 1e-2)
        force = kk * kk / (dist * dist) - A * dist / kk
        fx = (dx * force).sum(axis=1)
        fy = (dy * force).sum(axis=1)
        step = temp / np.maximum(np.sqrt(fx * fx + fy * fy), 1e-2)
        x += fx * step
        y += fy * step
        temp -= cool
    pos = np.stack([x, y], axis=1)
    return _unit_box(pos)


def _unit_box(pos: np.ndarray) -> np.ndarray:
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    span = hi - lo
    out = np.zeros_like(pos)
    ok = span > 1e-12
    out[:, ok] = 2 * (pos[:, ok] - lo[ok]) / span[ok] - 1
    return out


# --------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class ClassView:
    """The §5.4 views of one class.

    Attributes
    ----------
    class_id : int
    name : str
    n_images : int
        Images of the class in the data (the sample has ``len(indices)``).
    indices : ndarray of shape (m,), int64
        Rows of the sampled images in the input, dataset order.
    ids : list of str
        Their ids.
    ssim : ndarray of shape (m, m)
        Their SSIM matrix (not stored in the card).
    edges : ndarray of shape (e, 2), int64
        kNN graph, positions in the sample, ``i < j``.
    layout : ndarray of shape (m, 2)
        2-D positions in [-1, 1], rounded to 3 decimals.
    group : list of int
        Most similar group (positions in the sample, in the order they joined).
    group_min_ssim, group_threshold : float
    pair : tuple of (int, int)
        Most dissimilar pair (positions in the sample).
    pair_ssim : float
    isolated : int
        Most isolated image (position in the sample).
    isolated_mean_ssim : float
    """

    class_id: int
    name: str
    n_images: int
    indices: np.ndarray
    ids: list[str]
    ssim: np.ndarray = field(repr=False)
    edges: np.ndarray = field(repr=False)
    layout: np.ndarray = field(repr=False)
    group: list[int]
    group_min_ssim: float
    group_threshold: float
    pair: tuple[int, int]
    pair_ssim: float
    isolated: int
    isolated_mean_ssim: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready entry of the card's ``class_views.classes`` list."""
        ids = self.ids
        return to_jsonable(
            {
                "class": self.name,
                "class_id": self.class_id,
                "n_images": self.n_images,
                "ids": list(ids),
                "layout": np.round(self.layout, _DECIMALS),
                "edges": self.edges,
                "group": {
                    "members": list(self.group),
                    "ids": [ids[i] for i in self.group],
                    "min_ssim": self.group_min_ssim,
                    "threshold": self.group_threshold,
                },
                "dissimilar_pair": {
                    "members": list(self.pair),
                    "ids": [ids[i] for i in self.pair],
                    "ssim": self.pair_ssim,
                },
                "isolated": {
                    "member": self.isolated,
                    "id": ids[self.isolated],
                    "mean_ssim": self.isolated_mean_ssim,
                },
            }
        )


@dataclass(frozen=True)
class ClassViews:
    """Per-class views of a dataset (a Sequence-like list of :class:`ClassView`).

    Attributes
    ----------
    views : list of ClassView
        In class-id order.
    omitted : list of (str, str)
        Classes without a view and why.
    params : dict
        JSON-ready parameters and definitions (the card's ``class_views.params``).
    """

    views: list[ClassView]
    omitted: list[tuple[str, str]]
    params: dict[str, Any]

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i: int) -> ClassView:
        return self.views[i]

    def to_dict(self) -> dict[str, Any]:
        """The card's ``class_views`` block (JSON-ready)."""
        return to_jsonable(
            {
                "params": self.params,
                "classes": [v.to_dict() for v in self.views],
                "omitted": [{"class": c, "reason": r} for c, r in self.omitted],
            }
        )


# --------------------------------------------------------------------------------------
# the stage


def class_views(
    images: Any,
    labels: Any,
    classes: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    max_per_class: int = 100,
    max_classes: int = DEFAULT_MAX_CLASSES,
    k: int = 5,
    group_quantile: float = 0.95,
    max_group: int = 8,
    seed: int = 0,
) -> ClassViews:
    """The SSIM graph, most similar group, most dissimilar pair and most isolated image
    of each class (Yousefzadeh §5.4); see the module docstring for the definitions.

    Parameters
    ----------
    images : ndarray of shape (n, h, w) or (n, h, w, c), uint8
        The grey images as the pipeline decodes them (colour is averaged over channels
        by SSIM).
    labels : array-like of int, shape (n,)
        Class ids ``0..len(classes)-1``.
    classes : sequence of str
        Class names.
    ids : sequence of str, default=None
        Image ids (for the report's thumbnails); ``None``: the row numbers as text.
    max_per_class : int, default=100
        Images sampled per class (>= 2); SSIM costs ``m (m - 1) / 2`` pairs per class.
    max_classes : int, default=50
        Views for at most this many classes, the largest (ties to the lower id).
    k : int, default=5
        Neighbours per image in the graph.
    group_quantile : float, default=0.95
        Quantile of the class's pairwise SSIMs a member of the most similar group must
        reach with every other member, in [0, 1].
    max_group : int, default=8
        Largest most-similar group (>= 2).
    seed : int, default=0
        Seed of the per-class sampling.

    Returns
    -------
    ClassViews
    """
    from dcsi.similarity.ssim import auto_win_size, ssim_matrix

    caller = "class_views"
    arr = check_array(images, "images", caller, ndim=(3, 4))
    n = arr.shape[0]
    y = check_labels(labels, n, caller)
    names = [str(c) for c in classes]
    if int(y.max()) >= len(names):
        raise InvalidParameterError(
            f"The 'labels' parameter of {caller} must hold class ids < len(classes)="
            f"{len(names)}. Got {int(y.max())} instead; pass every class name."
        )
    if ids is None:
        id_list = [str(i) for i in range(n)]
    else:
        id_list = [str(i) for i in ids]
        if len(id_list) != n:
            raise InvalidParameterError(
                f"The 'ids' parameter of {caller} must have one id per image ({n}). "
                f"Got {len(id_list)} instead."
            )
    max_per_class = check_int(max_per_class, "max_per_class", caller, min_value=2)
    max_classes = check_int(max_classes, "max_classes", caller, min_value=1)
    k = check_int(k, "k", caller, min_value=1)
    group_quantile = check_float(
        group_quantile, "group_quantile", caller, min_value=0.0, max_value=1.0
    )
    max_group = check_int(max_group, "max_group", caller, min_value=2)
    seed = check_int(seed, "seed", caller, min_value=0)
    win = auto_win_size(arr.shape[1], arr.shape[2])
    if win < 1:
        raise InvalidParameterError(
            f"SSIM needs images of at least 1x1 pixels; got {arr.shape[1]}x{arr.shape[2]}."
        )

    counts = np.bincount(y, minlength=len(names))
    eligible = [c for c in range(len(names)) if counts[c] >= 2]
    by_size = sorted(eligible, key=lambda c: (-counts[c], c))
    shown = sorted(by_size[:max_classes])
    omitted = [(names[c], "fewer than 2 images") for c in range(len(names)) if counts[c] < 2]
    omitted += [
        (names[c], f"not among the {max_classes} largest classes")
        for c in sorted(by_size[max_classes:])
    ]
    views = []
    for c in shown:
        idx = np.flatnonzero(y == c)
        if idx.size > max_per_class:
            rng = np.random.default_rng([seed, c])
            idx = np.sort(rng.choice(idx, size=max_per_class, replace=False))
        S = ssim_matrix(arr[idx], win_size=win)
        edges = knn_edges(S, k)
        layout = np.round(graph_layout(edges, idx.size), _DECIMALS)
        group, group_min, threshold = most_similar_group(
            S, quantile=group_quantile, max_size=max_group
        )
        a, b, low = most_dissimilar_pair(S)
        iso, iso_mean = most_isolated(S)
        views.append(
            ClassView(
                class_id=c,
                name=names[c],
                n_images=int(counts[c]),
                indices=idx.astype(np.int64),
                ids=[id_list[i] for i in idx],
                ssim=S,
                edges=edges,
                layout=layout,
                group=group,
                group_min_ssim=group_min,
                group_threshold=threshold,
                pair=(a, b),
                pair_ssim=low,
                isolated=iso,
                isolated_mean_ssim=iso_mean,
            )
        )
    logger.info("class views: %d classes, %d omitted", len(views), len(omitted))
    params = {
        "measure": "SSIM (skimage structural_similarity, Gaussian sigma 1.5)",
        "win_size": win,
        "max_per_class": max_per_class,
        "max_classes": max_classes,
        "k": k,
        "group_quantile": group_quantile,
        "max_group": max_group,
        "seed": seed,
        "sample": "all images of a class, or a uniform random subset of max_per_class "
        "drawn with default_rng([seed, class_id]), in dataset order",
        "graph": "kNN: each sampled image linked to its k most similar, union; edges are "
        "index pairs into ids",
        "layout": f"spectral (random-walk Laplacian eigenvectors 2, 3) refined by "
        f"{_LAYOUT_STEPS} Fruchterman-Reingold steps, in [-1, 1]",
        "group": "most similar pair grown greedily while the smallest SSIM to every member "
        "is >= the group_quantile quantile of the class's pairwise SSIMs",
        "dissimilar_pair": "lowest SSIM",
        "isolated": "lowest mean SSIM to the other sampled images",
    }
    return ClassViews(views=views, omitted=omitted, params=params)
