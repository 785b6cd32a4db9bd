"""Image clusters of an (unlabelled) image set, after Thomas & Abraham.

Thomas & Abraham cluster unlabelled images by running k-means on the features of a
pre-trained CNN (ResNet50 without its classification layer).  :func:`cluster_images`
does the same on dcsi's features (any registered backbone, EfficientNet-Lite0 by
default), with the choices the paper leaves open made explicit:

1. **Features.**  Each row is L2-normalised (cosine geometry: CNN features differ
   mostly in direction) and reduced by PCA (seeded) to ``n_components`` (50)
   dimensions, then normalised again, so that Euclidean k-means on the result is
   close to spherical (cosine) k-means and costs O(n * 50) per step.
2. **Method.**  ``"merged"`` (the default): k-means into ``n_fine`` (100, at most
   n // 10) small clusters, then average linkage (cosine) of their centroids, cut at
   k; every image takes the group of its small cluster.  k-means alone makes clusters
   of similar size, and cuts a large, uniform kind of image (openclipart's 1,645
   *shapes*, Oxygen's page-shaped *mimetypes*) into pieces; merging small clusters
   lets one group grow as large as the data make it.  ``"kmeans"`` (the paper):
   k-means with k clusters.  Both use scikit-learn ``KMeans`` up to ``max_exact``
   (20,000) images, ``MiniBatchKMeans`` above, seeded.  ``"agglomerative"``: Ward
   linkage restricted to a k-nearest-neighbour graph (``kneighbors_graph``, sparse:
   never an n x n matrix), which can follow elongated, non-spherical groups that
   k-means cuts in pieces; above ``max_exact`` images the tree is built on a seeded
   subsample of ``max_exact`` images and every other image joins the cluster with the
   nearest centroid.  The tree is built once and cut at every k tried (a graph in
   several pieces is joined by scikit-learn, which links its pieces by their nearest
   points).
3. **Number of clusters.**  ``n_clusters="auto"`` scores every k of ``k_range``
   (default 2..min(30, n // 10)) on a seeded subsample of at most ``max_scored`` =
   5,000 images, the same subsample for every k, and keeps the best (ties: the
   smaller k).  The partitions scored are k-means' (``"merged"`` and ``"kmeans"``) or
   the tree's cuts (``"agglomerative"``).  ``rule="davies_bouldin_gap"`` (default):
   the log of the ratio of two Davies-Bouldin indices (the mean over clusters of the
   largest ratio (scatter_i + scatter_j) / distance(centroid_i, centroid_j), Euclidean
   on the unit PCA rows): the mean index of ``n_references`` (2) structureless copies
   of the subsample (each column permuted on its own, rows normalised again;
   clustered by k-means with one start) over the index of the subsample itself -- how
   much better than chance the data split into k groups, in the manner of the gap
   statistic (Tibshirani, Walther & Hastie, 2001), which compares log dispersions.  On
   Fashion-MNIST the plain index scored k = 2 and k = 9 within 0.001 and picked k = 2
   at 7 of 8 seeds; the gap picks 7-11 at every seed.  Where the score keeps rising to
   the end of the range (icons grouped by context, letters in many typefaces) both
   return a k near 30 (``python benchmarks/image_clusters.py --pools``).
   ``rule="davies_bouldin"`` keeps the smallest plain index, ``rule="silhouette"``
   the largest mean silhouette (cosine distance).  All need no
   labels and compare partitions with different k on one scale (unlike the k-means
   inertia, which always falls with k); every score is recorded.  Internal indices
   cannot know how finely a user wants the images split: give ``n_clusters`` when the
   number of kinds of image is known.
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
    "merged_labels",
    "reduce_features",
    "reference_davies_bouldin",
]

logger = logging.getLogger(__name__)

METHODS = ("merged", "kmeans", "agglomerative")
#: Rules choosing k for ``n_clusters="auto"`` (see the module docstring).
RULES = ("davies_bouldin_gap", "davies_bouldin", "silhouette")
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
    method : {"merged", "kmeans", "agglomerative"}, default="merged"
    rule : {"davies_bouldin_gap", "davies_bouldin", "silhouette"}, default="davies_bouldin_gap"
        How ``"auto"`` chooses k: the largest log ratio of the Davies-Bouldin index of
        structureless copies to that of the data, the smallest index, or the largest
        mean silhouette (cosine), all on the same seeded subsample.
    k_range : tuple of int or None, default=None
        The k tried by ``"auto"``; None: 2..min(30, n // 10) (at least 2..2), resolved
        by :meth:`resolve_k_range`.
    n_components : int, default=50
        PCA dimensions the clustering runs in.
    n_neighbors : int, default=10
        Neighbours per image in the graph of ``"agglomerative"``.
    n_fine : int, default=100
        Small k-means clusters that ``"merged"`` joins (at most n // 10, at least k).
    n_references : int, default=2
        Structureless copies of the scored subsample for ``"davies_bouldin_gap"``.
    max_exact : int, default=20000
        Above this many images: ``MiniBatchKMeans`` / the agglomerative tree on a
        subsample of this size.
    max_scored : int, default=5000
        Images in the subsample the rule's score is computed on.
    seed : int, default=0
    """

    n_clusters: int | str = "auto"
    method: str = "merged"
    rule: str = "davies_bouldin_gap"
    k_range: tuple[int, ...] | None = None
    n_components: int = 50
    n_neighbors: int = 10
    n_fine: int = 100
    n_references: int = 2
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
        "n_fine": [Interval(int, 2, None, closed="left")],
        "n_references": [Interval(int, 1, None, closed="left")],
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
            "n_fine": self.n_fine,
            "n_references": self.n_references,
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
        The rule's score of each k tried (empty when ``n_clusters`` was given).
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
                _RULE_TEXT[self.params.rule].format(
                    m=self.params.max_scored, r=self.params.n_references
                )
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


def _kmeans(x: np.ndarray, k: int, params: ImageClusterParams) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-means (mini-batch above ``max_exact`` rows): labels and centres."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if x.shape[0] > params.max_exact:
        model: Any = MiniBatchKMeans(
            n_clusters=k, random_state=params.seed, n_init=3, batch_size=2048
        )
    else:
        model = KMeans(n_clusters=k, random_state=params.seed, n_init=3)
    labels = np.asarray(model.fit_predict(x), dtype=np.int64)
    return labels, model.cluster_centers_


def _fit_kmeans(x: np.ndarray, ks: Sequence[int], params: ImageClusterParams) -> dict[int, Any]:
    return {k: _kmeans(x, k, params)[0] for k in ks}


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


def merged_labels(x: np.ndarray, k: int, params: ImageClusterParams) -> np.ndarray:
    """Method ``"merged"``: k-means into ``n_fine`` small clusters (at most n // 10, at
    least k), average linkage (cosine) of their centroids, cut at k.

    Parameters
    ----------
    x : ndarray of shape (n, m)
        :func:`reduce_features` rows.
    k : int
        Clusters wanted, ``<= n``.
    params : ImageClusterParams
        ``n_fine``, ``max_exact`` and ``seed`` are used.

    Returns
    -------
    ndarray of shape (n,), int64
        Arbitrary cluster numbers (:func:`cluster_images` numbers them by size).
    """
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import pdist

    n_fine = min(x.shape[0], max(k, min(params.n_fine, x.shape[0] // 10)))
    fine, centres = _kmeans(x, n_fine, params)
    if n_fine == k:
        return fine
    # average linkage of the cosine distance; on unit rows it is half the squared
    # Euclidean distance, which stays finite for a zero centre (zero feature rows).
    # Condensed distances: a square array of centres would be taken for a matrix.
    tree = linkage(pdist(_unit(centres), "sqeuclidean"), method="average")
    groups = cut_tree_labels(tree[:, :2].astype(np.int64), n_fine, [k])[k]
    return groups[fine]


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
    "davies_bouldin_gap": (
        "largest log ratio of the mean Davies-Bouldin index of {r} structureless "
        "copies of the sample (each column permuted on its own, rows normalised again, "
        "k-means with one start) to the index of the sample itself, on a seeded "
        "subsample of at most {m} images; ties: the smaller k"
    ),
    "silhouette": (
        "largest mean silhouette (cosine distance) over the k tried, on a seeded "
        "subsample of at most {m} images; ties: the smaller k"
    ),
    "davies_bouldin": (
        "smallest Davies-Bouldin index over the k tried, on a seeded subsample of at "
        "most {m} images; ties: the smaller k"
    ),
}


def _index(x: np.ndarray, labels: np.ndarray, silhouette: bool = False) -> float | None:
    """sklearn's Davies-Bouldin index, or the mean silhouette (cosine distance); None
    when undefined (one cluster, or every row in its own)."""
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    if not 2 <= np.unique(labels).size <= x.shape[0] - 1:
        return None
    if silhouette:
        return float(silhouette_score(x, labels, metric="cosine"))
    return float(davies_bouldin_score(x, labels))


def reference_davies_bouldin(
    x: np.ndarray, ks: Sequence[int], *, n_references: int = 2, seed: int = 0
) -> tuple[float | None, ...]:
    """Mean Davies-Bouldin index of k-means on structureless copies of ``x``, per k.

    Each copy permutes every column of ``x`` on its own (seeded), which keeps each
    coordinate's spread and removes any joint structure, and normalises the rows again
    (``x`` holds unit rows); it is split by ``KMeans(k, n_init=1, random_state=seed)``.

    Parameters
    ----------
    x : ndarray of shape (n, m)
        The scored rows (unit rows).
    ks : sequence of int
        Cluster counts, each ``<= n - 1``.
    n_references : int, default=2
    seed : int, default=0

    Returns
    -------
    tuple of (float or None)
        Per k, the mean index over the copies (None where a copy's index is undefined).
    """
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    copies = [_unit(rng.permuted(x, axis=0)) for _ in range(n_references)]
    out: list[float | None] = []
    for k in ks:
        scores = [
            _index(c, KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(c))
            for c in copies
        ]
        defined = [v for v in scores if v is not None]
        out.append(float(np.mean(defined)) if len(defined) == len(scores) else None)
    return tuple(out)


def _choose_k(
    x: np.ndarray, fits: dict[int, np.ndarray], params: ImageClusterParams
) -> tuple[int, tuple[float | None, ...]]:
    """The k chosen by ``params.rule`` and the score of every k (None: undefined, when
    the subsample holds one cluster or every image in its own)."""
    n = x.shape[0]
    rows = np.arange(n)
    if n > params.max_scored:
        rng = np.random.default_rng(params.seed)
        rows = np.sort(rng.choice(n, params.max_scored, replace=False))
    ks = sorted(fits)
    sample = x[rows]
    silhouette = params.rule == "silhouette"
    out = [_index(sample, fits[k][rows], silhouette) for k in ks]
    if params.rule == "davies_bouldin_gap":
        ref = reference_davies_bouldin(
            sample, ks, n_references=params.n_references, seed=params.seed
        )
        out = [
            None if d is None or r is None or min(d, r) <= 0.0 else float(np.log(r / d))
            for d, r in zip(out, ref)
        ]
    sign = -1.0 if params.rule == "davies_bouldin" else 1.0
    best = [sign * s if s is not None else -np.inf for s in out]
    return ks[int(np.argmax(best))], tuple(out)


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
    method: str = "merged",
    seed: int = 0,
    features: Any = None,
    labels: Any = None,
    backbone: Any = "efficientnet_lite0",
    k_range: Sequence[int] | None = None,
    rule: str = "davies_bouldin_gap",
    n_components: int = 50,
    n_neighbors: int = 10,
    n_fine: int = 100,
    n_references: int = 2,
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
    method : {"merged", "kmeans", "agglomerative"}, default="merged"
    seed : int, default=0
    features : array-like of shape (n, d), default=None
        Precomputed features (skips extraction).
    labels : array-like of shape (n,), int, default=None
        Class ids to compare the clusters with (default: the source's labels).
    backbone : str or Extractor, default="efficientnet_lite0"
    k_range : sequence of int >= 2, default=None
        The k tried by "auto"; None: 2..min(30, n // 10).
    rule : {"davies_bouldin_gap", "davies_bouldin", "silhouette"}, \
default="davies_bouldin_gap"
        How "auto" chooses k (see the module docstring).
    n_components, n_neighbors, n_fine, n_references, max_exact, max_scored : int
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
        n_fine=n_fine,
        n_references=n_references,
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
    auto = params.n_clusters == "auto"
    fits: dict[int, Any] = {}
    if params.method == "agglomerative":
        fits = _fit_agglomerative(x, ks, params)
    elif params.method == "kmeans" or auto:
        fits = _fit_kmeans(x, ks, params)  # "merged" scores k on k-means partitions
    scores: tuple[float | None, ...] = ()
    chosen = ks[0]
    if auto:
        chosen, scores = _choose_k(x, fits, params)
        logger.info("cluster_images: %s %s -> k = %d", params.rule, scores, chosen)
    found = merged_labels(x, chosen, params) if params.method == "merged" else fits[chosen]
    final = _by_size(found)
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
