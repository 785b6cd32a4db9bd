"""Image clusters of an (unlabelled) image set, after Thomas & Abraham.

Thomas & Abraham cluster unlabelled images by running k-means on the features of a
pre-trained CNN (ResNet50 without its classification layer).  :func:`cluster_images`
does the same on dcsi's features (any registered backbone, EfficientNet-Lite0 by
default), with the choices the paper leaves open made explicit:

1. **Features.**  Each row is L2-normalised (cosine geometry: CNN features differ
   mostly in direction) and reduced by PCA (seeded) to ``n_components`` (50)
   dimensions, then normalised again, so that Euclidean k-means on the result is
   close to spherical (cosine) k-means and costs O(n * 50) per step.
2. **Method.**  ``"kmeans"`` (the paper): scikit-learn ``KMeans`` up to
   ``max_exact`` (20,000) images, ``MiniBatchKMeans`` above, both seeded.
   ``"agglomerative"``: Ward linkage restricted to a k-nearest-neighbour graph
   (``kneighbors_graph``, sparse: never an n x n matrix), which can follow
   elongated, non-spherical groups that k-means cuts in pieces; above
   ``max_exact`` images the tree is built on a seeded subsample of ``max_exact``
   images and every other image joins the cluster with the nearest centroid.  The
   tree is built once and cut at every k tried (a graph in several pieces is joined
   by scikit-learn, which links its pieces by their nearest points).
3. **Number of clusters.**  ``n_clusters="auto"`` fits every k of ``k_range``
   (default 2..min(30, n // 10)) and keeps the k with the smallest Davies-Bouldin
   index (``rule="davies_bouldin"``: the mean over clusters of the largest ratio
   (scatter_i + scatter_j) / distance(centroid_i, centroid_j), Euclidean on the unit
   PCA rows), computed on a seeded subsample of at most ``max_scored`` = 5,000
   images, the same subsample for every k; ties: the smaller k.  ``rule=
   "silhouette"`` keeps the largest mean silhouette (cosine distance) instead.  Both
   need no labels and compare partitions with different k on one scale (unlike the
   k-means inertia, which always falls with k); every score is recorded.  Why
   Davies-Bouldin by default: on the data the defaults were chosen on (digits, and
   a seeded 5,000-image subset of Fashion-MNIST train; ``python
   benchmarks/image_clusters.py --choice``), k-means with the silhouette chose
   k = 2 on digits (NMI 0.21) and k = 5 on Fashion-MNIST (0.54), with
   Davies-Bouldin k = 11 (0.56) and k = 2 (0.38): the better mean and the better
   worst case.  Internal indices favour the coarsest clear split (both rules chose
   k = 2 once), so give ``n_clusters`` when the number of kinds of image is known.
4. **Summary of a cluster.**  Its centroid is the mean of its members' unit vectors;
   the *representative* (medoid) is the member of largest cosine similarity to the
   centroid, the *most typical* members are the next nearest, the *least typical*
   the farthest.  Cluster ids are numbered by size, largest first (ties: the
   cluster holding the earlier image), so a seed gives the same ids on every run.

When labels exist (from the source or ``labels=``) the clusters are compared with
them (:meth:`ImageClusters.compare`): ARI and NMI (``sklearn.metrics``), purity, the
classes split over several clusters and the clusters merging several classes.

Examples
--------
>>> import dcsi
>>> ic = dcsi.cluster_images("sample:digits")             # doctest: +SKIP
>>> ic.n_clusters, ic.labels.shape                         # doctest: +SKIP
(11, (1797,))
>>> ic10 = dcsi.cluster_images("sample:digits", n_clusters=10)   # doctest: +SKIP
>>> round(ic10.to_dict()["comparison"]["nmi"], 2)          # doctest: +SKIP
0.56
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from dcsi._json import to_jsonable
from dcsi._validation import Interval, Options, check_array, check_labels, validate_fields
from dcsi.exceptions import InvalidParameterError

__all__ = [
    "LABELS_CAP",
    "METHODS",
    "RULES",
    "ClusterComparison",
    "ImageClusterParams",
    "ImageClusters",
    "cluster_images",
    "cluster_summaries",
    "compare_clusters",
    "cut_tree_labels",
    "reduce_features",
]

logger = logging.getLogger(__name__)

METHODS = ("kmeans", "agglomerative")
#: Rules choosing k for ``n_clusters="auto"``: the score and whether larger is better.
RULES = ("davies_bouldin", "silhouette")
#: ``to_dict()`` holds the n-long list of cluster ids only up to this many images.
LABELS_CAP = 10_000
#: Members listed per cluster as most / least typical.
N_TYPICAL = 3
#: Share below which a class counts as split (its largest cluster) or a cluster as
#: merging classes (its largest class).
MAJORITY = 0.5

_CALLER = "cluster_images"


# ----------------------------------------------------------------------------- params
@dataclass(frozen=True)
class ImageClusterParams:
    """Every choice of :func:`cluster_images`, validated once; ``to_dict()`` is the
    card's ``image_clusters.params``.

    Attributes
    ----------
    n_clusters : int or "auto", default="auto"
    method : {"kmeans", "agglomerative"}, default="kmeans"
    rule : {"davies_bouldin", "silhouette"}, default="davies_bouldin"
        How ``"auto"`` chooses k: the smallest Davies-Bouldin index or the largest
        mean silhouette (cosine), both on the same seeded subsample.
    k_range : tuple of int or None, default=None
        The k tried by ``"auto"``; None: 2..min(30, n // 10) (at least 2..2), resolved
        by :meth:`resolve_k_range`.
    n_components : int, default=50
        PCA dimensions the clustering runs in.
    n_neighbors : int, default=10
        Neighbours per image in the graph of ``"agglomerative"``.
    max_exact : int, default=20000
        Above this many images: ``MiniBatchKMeans`` / the agglomerative tree on a
        subsample of this size.
    max_scored : int, default=5000
        Images in the subsample the rule's score is computed on.
    seed : int, default=0
    """

    n_clusters: int | str = "auto"
    method: str = "kmeans"
    rule: str = "davies_bouldin"
    k_range: tuple[int, ...] | None = None
    n_components: int = 50
    n_neighbors: int = 10
    max_exact: int = 20_000
    max_scored: int = 5_000
    seed: int = 0

    #: Declared constraints of the scalar fields (the invalid-value tests use them).
    CONSTRAINTS: ClassVar[dict[str, list[Any]]] = {
        "n_clusters": [Interval(int, 2, None, closed="left"), Options(("auto",))],
        "method": [Options(METHODS)],
        "rule": [Options(RULES)],
        "n_components": [Interval(int, 2, None, closed="left")],
        "n_neighbors": [Interval(int, 1, None, closed="left")],
        "max_exact": [Interval(int, 100, None, closed="left")],
        "max_scored": [Interval(int, 100, None, closed="left")],
        "seed": [Interval(int, 0, None, closed="left")],
    }

    def __post_init__(self) -> None:
        validate_fields(self, _CALLER)
        object.__setattr__(self, "k_range", _check_k_range(self.k_range))

    def resolve_k_range(self, n: int) -> tuple[int, ...]:
        """The k tried for ``n`` images (only those ``<= n - 1``; for "agglomerative",
        ``<= min(n, max_exact) - 1``, the images its tree is built on)."""
        if self.method == "agglomerative":
            n = min(n, self.max_exact)
        if isinstance(self.n_clusters, int):
            if self.n_clusters > n:
                raise InvalidParameterError(
                    f"The 'n_clusters' parameter of {_CALLER} must be an int in the range "
                    f"[2, {n}] for these images. Got {self.n_clusters!r} instead."
                )
            return (self.n_clusters,)
        ks = self.k_range or tuple(range(2, max(2, min(30, n // 10)) + 1))
        ks = tuple(k for k in ks if k <= n - 1)
        if not ks:
            raise InvalidParameterError(
                f"The 'k_range' parameter of {_CALLER} must hold a k <= n_images - 1 = "
                f"{n - 1}. Got {self.k_range or 'the default'!r} instead; give "
                "n_clusters=<int> or a smaller k_range."
            )
        return ks

    def to_dict(self) -> dict[str, Any]:
        """The parameters as plain JSON-ready values."""
        return {
            "n_clusters": self.n_clusters,
            "method": self.method,
            "rule": self.rule,
            "k_range": None if self.k_range is None else list(self.k_range),
            "n_components": self.n_components,
            "n_neighbors": self.n_neighbors,
            "max_exact": self.max_exact,
            "max_scored": self.max_scored,
            "seed": self.seed,
        }


def _check_k_range(k_range: Any) -> tuple[int, ...] | None:
    if k_range is None:
        return None
    rule = Interval(int, 2, None, closed="left")
    bad = isinstance(k_range, (str, bytes)) or not isinstance(k_range, (Sequence, range))
    if not bad:
        ks = list(k_range)
        bad = not ks or not all(rule.accepts(k) for k in ks)
    if bad:
        raise InvalidParameterError(
            f"The 'k_range' parameter of {_CALLER} must be a non-empty sequence of ints "
            f">= 2 (e.g. range(2, 21)) or None. Got {k_range!r} instead."
        )
    return tuple(sorted({int(k) for k in ks}))


# ----------------------------------------------------------------------------- compare
@dataclass(frozen=True)
class ClusterComparison:
    """Clusters against known classes.

    Attributes
    ----------
    ari, nmi : float
        ``sklearn.metrics.adjusted_rand_score`` / ``normalized_mutual_info_score``.
    purity : float
        ``sum over clusters of (count of its largest class) / n``.
    contingency : ndarray of shape (n_classes, n_clusters), int64
        Images of class i in cluster j.
    classes : list of str
    split_classes : list of dict
        Classes whose largest cluster holds < 50 % of them: ``class``, ``share`` of the
        largest cluster, ``clusters`` (the up to 3 largest, with shares).
    merged_clusters : list of dict
        Clusters whose largest class is < 50 % of them: ``cluster``, ``share``,
        ``classes`` (the up to 3 largest, with shares).
    """

    ari: float
    nmi: float
    purity: float
    contingency: np.ndarray = field(repr=False)
    classes: list[str] = field(repr=False)
    split_classes: list[dict[str, Any]] = field(repr=False)
    merged_clusters: list[dict[str, Any]] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The card's ``image_clusters.comparison``."""
        return to_jsonable(
            {
                "ari": self.ari,
                "nmi": self.nmi,
                "purity": self.purity,
                "majority": MAJORITY,
                "split_classes": self.split_classes,
                "merged_clusters": self.merged_clusters,
                "contingency": self.contingency,
                "classes": self.classes,
            }
        )


def compare_clusters(
    clusters: np.ndarray, labels: np.ndarray, classes: Sequence[str] | None = None
) -> ClusterComparison:
    """Compare cluster ids with class labels (both (n,) ints >= 0)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    n_classes = int(labels.max()) + 1 if labels.size else 0
    names = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
    if len(names) < n_classes:
        names += [str(i) for i in range(len(names), n_classes)]
    n_clusters = int(clusters.max()) + 1
    table = np.zeros((len(names), n_clusters), dtype=np.int64)
    np.add.at(table, (labels, clusters), 1)
    n = int(labels.size)
    split, merged = [], []
    for i, row in enumerate(table):
        total = int(row.sum())
        if total and row.max() < MAJORITY * total:
            split.append({"class": names[i], "share": row.max() / total, **_top("clusters", row)})
    for j, col in enumerate(table.T):
        total = int(col.sum())
        if total and col.max() < MAJORITY * total:
            tops = _top("classes", col)
            tops["classes"] = [
                {"class": names[t["index"]], "share": t["share"]} for t in tops["classes"]
            ]
            merged.append({"cluster": j, "share": col.max() / total, **tops})
    return ClusterComparison(
        ari=float(adjusted_rand_score(labels, clusters)),
        nmi=float(normalized_mutual_info_score(labels, clusters)),
        purity=float(table.max(axis=0).sum() / n) if n else 0.0,
        contingency=table,
        classes=names,
        split_classes=split,
        merged_clusters=merged,
    )


def _top(what: str, counts: np.ndarray, k: int = 3) -> dict[str, Any]:
    order = np.argsort(-counts, kind="stable")[:k]
    total = counts.sum()
    key = "cluster" if what == "clusters" else "index"
    return {what: [{key: int(j), "share": float(counts[j] / total)} for j in order if counts[j]]}


# ----------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class ImageClusters:
    """Clusters of images.

    Attributes
    ----------
    labels : ndarray of shape (n,), int64
        Cluster id per image, in the source's order; ids are numbered by size.
    n_clusters : int
    ids : list of str
        Image ids (row numbers as text when only features were given).
    params : ImageClusterParams
    k_tried : tuple of int
    scores : tuple of (float or None)
        Silhouette of each k tried (empty when ``n_clusters`` was given).
    similarity : ndarray of shape (n,), float32
        Cosine similarity of each image to its cluster's centroid (its typicality).
    representatives : ndarray of shape (n_clusters,), int64
        Row of each cluster's medoid.
    typical, atypical : list of ndarray
        Rows of the most / least typical members of each cluster (up to 3, most
        typical first / least typical first; the representative is not repeated).
    comparison : ClusterComparison or None
        Against the labels, when there were any.
    """

    labels: np.ndarray
    n_clusters: int
    ids: list[str] = field(repr=False)
    params: ImageClusterParams
    k_tried: tuple[int, ...]
    scores: tuple[float | None, ...]
    similarity: np.ndarray = field(repr=False)
    representatives: np.ndarray = field(repr=False)
    typical: list[np.ndarray] = field(repr=False)
    atypical: list[np.ndarray] = field(repr=False)
    comparison: ClusterComparison | None = field(default=None, repr=False)
    classes: list[str] = field(default_factory=list, repr=False)
    n_fitted: int = 0

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def sizes(self) -> np.ndarray:
        """Images per cluster, shape (n_clusters,)."""
        return np.bincount(self.labels, minlength=self.n_clusters)

    def compare(self, labels: Any, classes: Sequence[str] | None = None) -> ClusterComparison:
        """ARI, NMI, purity, split classes and merged clusters against ``labels``.

        Parameters
        ----------
        labels : array-like of shape (n,), int
            Class id per image, in the source's order.
        classes : list of str, default=None
            Class names (default: the ids as text).
        """
        arr = check_labels(labels, len(self), "ImageClusters.compare")
        return compare_clusters(self.labels, arr, classes)

    def to_dict(self) -> dict[str, Any]:
        """The card block ``"image_clusters"`` (JSON-ready, no NaN).

        Keys: ``method``, ``params``, ``n_images``, ``n_clusters``, ``choice`` (the rule,
        the k tried and their scores), ``clusters`` (per cluster: ``id``, ``size``,
        ``representative``, ``typical``, ``atypical`` as image ids and
        ``mean_similarity``), ``labels`` (cluster id per image, or None above
        :data:`LABELS_CAP` images; ``labels_cap`` says so) and ``comparison``.
        """
        n = len(self)
        sizes = self.sizes
        clusters = []
        for c in range(self.n_clusters):
            members = self.labels == c
            clusters.append(
                {
                    "id": c,
                    "size": int(sizes[c]),
                    "representative": self.ids[int(self.representatives[c])],
                    "typical": [self.ids[int(i)] for i in self.typical[c]],
                    "atypical": [self.ids[int(i)] for i in self.atypical[c]],
                    "mean_similarity": float(self.similarity[members].mean()),
                }
            )
        auto = self.params.n_clusters == "auto"
        choice = {
            "rule": self.params.rule if auto else "given",
            "definition": (
                _RULE_TEXT[self.params.rule].format(m=self.params.max_scored)
                if auto
                else "n_clusters given by the caller"
            ),
            "k_tried": list(self.k_tried),
            "scores": list(self.scores),
            "chosen": self.n_clusters,
        }
        return to_jsonable(
            {
                "method": self.params.method,
                "params": self.params.to_dict(),
                "n_images": n,
                "n_fitted": self.n_fitted,
                "n_clusters": self.n_clusters,
                "choice": choice,
                "clusters": clusters,
                "labels": self.labels if n <= LABELS_CAP else None,
                "labels_cap": LABELS_CAP,
                "comparison": None if self.comparison is None else self.comparison.to_dict(),
            }
        )


# ----------------------------------------------------------------------------- stages
def reduce_features(features: np.ndarray, *, n_components: int = 50, seed: int = 0) -> np.ndarray:
    """Unit rows -> PCA (seeded) to ``min(n_components, n, d)`` dims -> unit rows.

    Parameters
    ----------
    features : ndarray of shape (n, d)
    n_components : int, default=50
    seed : int, default=0

    Returns
    -------
    ndarray of shape (n, m), float32
        Rows of norm 1 (a zero row stays zero).
    """
    from sklearn.decomposition import PCA

    x = _unit(np.asarray(features, dtype=np.float32))
    m = min(n_components, x.shape[0], x.shape[1])
    if m < x.shape[1]:
        x = PCA(n_components=m, random_state=seed).fit_transform(x).astype(np.float32)
    return _unit(x)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def cut_tree_labels(
    children: np.ndarray, n_leaves: int, ks: Sequence[int]
) -> dict[int, np.ndarray]:
    """Flat clusters of a merge tree for every k in ``ks``, from one pass.

    ``children`` is scikit-learn's (n_leaves - 1, 2) merge list (node ``n_leaves + i``
    is merge ``i``); k clusters are the leaves' groups after the first
    ``n_leaves - k`` merges, which is what ``AgglomerativeClustering(n_clusters=k)``
    returns up to the numbering.

    Returns
    -------
    dict of int to ndarray of shape (n_leaves,), int64
        Arbitrary cluster numbers per k (renumber with :func:`_by_size`).
    """
    parent = np.arange(2 * n_leaves - 1)
    out: dict[int, np.ndarray] = {}
    wanted = set(ks)
    if n_leaves in wanted:
        out[n_leaves] = np.arange(n_leaves, dtype=np.int64)
    for i, (a, b) in enumerate(children):
        parent[a] = parent[b] = n_leaves + i
        k = n_leaves - i - 1
        if k in wanted:
            out[k] = _roots(parent, n_leaves)
    return out


def _roots(parent: np.ndarray, n_leaves: int) -> np.ndarray:
    root = parent.copy()
    while True:  # pointer jumping: O(log depth) passes
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root[:n_leaves].astype(np.int64)
        root = nxt


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters by size, largest first (ties: the earlier first image)."""
    uniq, first, inverse, counts = np.unique(
        labels, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.lexsort((first, -counts))
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(uniq.size)
    return rank[inverse.ravel()]


def _fit_kmeans(x: np.ndarray, ks: Sequence[int], params: ImageClusterParams) -> dict[int, Any]:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    out = {}
    for k in ks:
        if x.shape[0] > params.max_exact:
            model: Any = MiniBatchKMeans(
                n_clusters=k, random_state=params.seed, n_init=3, batch_size=2048
            )
        else:
            model = KMeans(n_clusters=k, random_state=params.seed, n_init=3)
        out[k] = np.asarray(model.fit_predict(x), dtype=np.int64)
    return out


def _fit_agglomerative(
    x: np.ndarray, ks: Sequence[int], params: ImageClusterParams
) -> dict[int, Any]:
    from sklearn.cluster import ward_tree
    from sklearn.neighbors import kneighbors_graph

    n = x.shape[0]
    rows = np.arange(n)
    if n > params.max_exact:
        rng = np.random.default_rng(params.seed)
        rows = np.sort(rng.choice(n, params.max_exact, replace=False))
    sub = x[rows]
    graph = kneighbors_graph(sub, n_neighbors=min(params.n_neighbors, len(rows) - 1))
    with warnings.catch_warnings():  # a graph in several pieces is joined, as intended
        warnings.filterwarnings("ignore", message="the number of connected components")
        children = ward_tree(sub, connectivity=graph)[0]
    cuts = cut_tree_labels(children, len(rows), ks)
    if len(rows) == n:
        return cuts
    return {k: _assign_nearest(x, sub, lab) for k, lab in cuts.items()}


def _assign_nearest(x: np.ndarray, sub: np.ndarray, sub_labels: np.ndarray) -> np.ndarray:
    """Every row of ``x`` to the cluster (of the fitted subsample) with the nearest
    centroid (Euclidean, Ward's own distance), blockwise."""
    _, lab = np.unique(sub_labels, return_inverse=True)
    lab = lab.ravel()
    k = int(lab.max()) + 1
    centroids = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(centroids, lab, sub)
    centroids /= np.bincount(lab, minlength=k)[:, None]
    out = np.empty(x.shape[0], dtype=np.int64)
    c2 = (centroids**2).sum(axis=1)
    for s in range(0, x.shape[0], 8192):
        block = x[s : s + 8192].astype(np.float64)
        out[s : s + 8192] = np.argmin(c2[None, :] - 2.0 * block @ centroids.T, axis=1)
    return out


_RULE_TEXT = {
    "silhouette": (
        "largest mean silhouette (cosine distance) over the k tried, on a seeded "
        "subsample of at most {m} images; ties: the smaller k"
    ),
    "davies_bouldin": (
        "smallest Davies-Bouldin index over the k tried, on a seeded subsample of at "
        "most {m} images; ties: the smaller k"
    ),
}


def _choose_k(
    x: np.ndarray, fits: dict[int, np.ndarray], params: ImageClusterParams
) -> tuple[int, tuple[float | None, ...]]:
    """The k chosen by ``params.rule`` and the score of every k (None: undefined, when
    the subsample holds one cluster or every image in its own)."""
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    n = x.shape[0]
    rows = np.arange(n)
    if n > params.max_scored:
        rng = np.random.default_rng(params.seed)
        rows = np.sort(rng.choice(n, params.max_scored, replace=False))
    out: list[float | None] = []
    for k in sorted(fits):
        lab = fits[k][rows]
        n_lab = np.unique(lab).size
        if not 2 <= n_lab <= rows.size - 1:
            out.append(None)
        elif params.rule == "silhouette":
            out.append(float(silhouette_score(x[rows], lab, metric="cosine")))
        else:
            out.append(float(davies_bouldin_score(x[rows], lab)))
    sign = 1.0 if params.rule == "silhouette" else -1.0
    best = [sign * s if s is not None else -np.inf for s in out]
    return sorted(fits)[int(np.argmax(best))], tuple(out)


def cluster_summaries(
    x: np.ndarray, labels: np.ndarray, n_clusters: int, n_typical: int = N_TYPICAL
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Typicality of every image and the medoid, most and least typical per cluster.

    Parameters
    ----------
    x : ndarray of shape (n, m)
        The features the clusters were made on.
    labels : ndarray of shape (n,), int
        Cluster ids 0..n_clusters-1.

    Returns
    -------
    similarity : ndarray of shape (n,), float32
        Cosine similarity of each image to the mean of its cluster's unit rows.
    representatives : ndarray of shape (n_clusters,), int64
        Per cluster, the member of largest similarity (ties: the earlier row).
    typical, atypical : list of ndarray of int64
        Per cluster, the next ``n_typical`` most similar members, and the
        ``n_typical`` least similar (least first), each without the representative.
    """
    u = _unit(np.asarray(x, dtype=np.float64))
    centroids = np.zeros((n_clusters, u.shape[1]))
    np.add.at(centroids, labels, u)
    centroids = _unit(centroids)
    sim = np.einsum("ij,ij->i", u, centroids[labels])
    reps = np.empty(n_clusters, dtype=np.int64)
    typical, atypical = [], []
    for c in range(n_clusters):
        members = np.flatnonzero(labels == c)
        order = members[np.argsort(-sim[members], kind="stable")]
        reps[c] = order[0]
        rest = order[1:]
        typical.append(rest[:n_typical])
        atypical.append(rest[::-1][:n_typical])
    return sim.astype(np.float32), reps, typical, atypical


# ----------------------------------------------------------------------------- public
def cluster_images(
    source: Any = None,
    *,
    n_clusters: int | str = "auto",
    method: str = "kmeans",
    seed: int = 0,
    features: Any = None,
    labels: Any = None,
    backbone: Any = "efficientnet_lite0",
    k_range: Sequence[int] | None = None,
    rule: str = "davies_bouldin",
    n_components: int = 50,
    n_neighbors: int = 10,
    max_exact: int = 20_000,
    max_scored: int = 5_000,
) -> ImageClusters:
    """Cluster images on their CNN features (see the module docstring for the method).

    Parameters
    ----------
    source : ImageSet, FeatureSet, ndarray, a source, or None
        Images (anything :func:`dcsi.sources.open_source` takes; features come from
        :func:`dcsi.extract_features` with ``backbone``), or a ``FeatureSet``.  May be
        None when ``features`` is given (ids are then the row numbers); an
        ``ImageSet`` or ``FeatureSet`` given with ``features`` lends its ids, labels
        and class names.
    n_clusters : int >= 2 or "auto", default="auto"
        "auto": the k of ``k_range`` with the best score of ``rule``.
    method : {"kmeans", "agglomerative"}, default="kmeans"
    seed : int, default=0
    features : array-like of shape (n, d), default=None
        Precomputed features (skips extraction).
    labels : array-like of shape (n,), int, default=None
        Class ids to compare the clusters with (default: the source's labels).
    backbone : str or Extractor, default="efficientnet_lite0"
    k_range : sequence of int >= 2, default=None
        The k tried by "auto"; None: 2..min(30, n // 10).
    rule : {"davies_bouldin", "silhouette"}, default="davies_bouldin"
        How "auto" chooses k (see the module docstring).
    n_components, n_neighbors, max_exact, max_scored : int
        See :class:`ImageClusterParams`.

    Returns
    -------
    ImageClusters

    Raises
    ------
    InvalidParameterError
        A bad parameter (checked before any work), features that are not a finite 2-D
        array, or labels that do not match the images.
    """
    params = ImageClusterParams(
        n_clusters=n_clusters,
        method=method,
        rule=rule,
        k_range=k_range,  # type: ignore[arg-type]
        n_components=n_components,
        n_neighbors=n_neighbors,
        max_exact=max_exact,
        max_scored=max_scored,
        seed=seed,
    )
    feats, ids, known, classes = _resolve_inputs(source, features, backbone)
    n = feats.shape[0]
    if n < 3:
        raise InvalidParameterError(f"{_CALLER} needs at least 3 images. Got {n} instead.")
    if labels is not None:
        known = check_labels(labels, n, _CALLER)
    ks = params.resolve_k_range(n)
    x = reduce_features(feats, n_components=params.n_components, seed=params.seed)
    fit = _fit_kmeans if params.method == "kmeans" else _fit_agglomerative
    fits = fit(x, ks, params)
    scores: tuple[float | None, ...] = ()
    chosen = ks[0]
    if params.n_clusters == "auto":
        chosen, scores = _choose_k(x, fits, params)
        logger.info("cluster_images: %s %s -> k = %d", params.rule, scores, chosen)
    final = _by_size(fits[chosen])
    k = int(final.max()) + 1
    sim, reps, typical, atypical = cluster_summaries(x, final, k)
    return ImageClusters(
        labels=final,
        n_clusters=k,
        ids=ids,
        params=params,
        k_tried=tuple(ks) if params.n_clusters == "auto" else (),
        scores=scores,
        similarity=sim,
        representatives=reps,
        typical=typical,
        atypical=atypical,
        comparison=None if known is None else compare_clusters(final, known, classes),
        classes=classes,
        n_fitted=min(n, params.max_exact) if params.method == "agglomerative" else n,
    )


def _resolve_inputs(
    source: Any, features: Any, backbone: Any
) -> tuple[np.ndarray, list[str], np.ndarray | None, list[str]]:
    """(features, ids, labels or None, class names) from what the caller gave."""
    from dcsi.features import FeatureSet
    from dcsi.sources import ImageSet

    if features is None and source is None:
        raise InvalidParameterError(
            f"{_CALLER} needs images or features: give a source or features=(n, d) array."
        )
    if features is None:
        if isinstance(source, FeatureSet):
            fs = source
        else:
            from dcsi.features import extract_features

            fs = extract_features(source, backbone=backbone)
        return fs.features, list(fs.ids), fs.labels, list(fs.classes)
    feats = check_array(features, "features", _CALLER, ndim=2, dtype=np.float32)
    n = feats.shape[0]
    if source is None:
        return feats, [str(i) for i in range(n)], None, []
    if not isinstance(source, (ImageSet, FeatureSet)):
        raise InvalidParameterError(
            f"The 'source' parameter of {_CALLER} must be None, an ImageSet or a "
            f"FeatureSet when features are given. Got {type(source).__name__} instead."
        )
    if len(source) != n:
        raise InvalidParameterError(
            f"The 'features' parameter of {_CALLER} must have one row per image of the "
            f"source ({len(source)}). Got {n} rows instead."
        )
    return feats, list(source.ids), source.labels, list(source.classes)
