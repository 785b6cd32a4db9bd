"""Class clusters from a class-similarity matrix, and the router to a cluster.

Parikh & Aggarwal (2020) cluster the classes of a dataset hierarchically on their
class-to-class distance matrix and train one model per cluster ("clustered training");
a query image goes to the cluster whose images have the smallest mean cosine distance
to it (their Algorithm 2).  Here:

- :func:`cluster_classes` runs scipy's agglomerative clustering on the distance
  ``1 - S`` (cosine similarity matrix; or on a distance matrix as is) for
  k = 2..min(K, 8), scores each k by a documented rule, and recommends a k only when
  it separates the classes (see "Does a k separate the classes?" below);
- :class:`Router` routes exactly through cluster sums: the mean cosine similarity of a
  query ``q`` to the images of cluster c is ``(q / |q|) . S_c / n_c`` with ``S_c`` the
  sum of the unit-normalised features of the cluster's images, so Algorithm 2 costs one
  dot product per cluster instead of a pass over the training set;
- :func:`routing_error` measures how often held-out labelled images are routed to a
  cluster other than their class's.

Does a k separate the classes?  A rule always has a best k, even on classes with no
group structure at all.  The best score is therefore compared with a null: the same
rule run on ``n_null`` (default 199) copies of the class distance matrix whose
off-diagonal entries are shuffled (one seeded permutation of the upper triangle,
mirrored), which keeps every distance the data has but none of the structure of which
classes are close to which.  The null statistic is the best score over all k of each
shuffled copy (so choosing k is paid for), and the p-value is
``(1 + #{null >= observed}) / (1 + n_null)``.  Two more rules: a partition whose
clusters are all single classes but one (it only peels off single classes while the
rest stay together) is never recommended when K >= 4; and with K <= 3 classes every
shuffle of the distances is a relabelling of the classes, so no null exists and the
rule's k is kept untested (``separable`` is None).  When the best remaining k is not
above the null (p > ``alpha``, default 0.05), ``recommended_k`` is None and
``verdict`` says so with the best score and the null's 95% level.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dcsi._json import to_jsonable
from dcsi._validation import check_array, check_choice, check_float, check_int
from dcsi.exceptions import DataError, InvalidParameterError

__all__ = [
    "LINKAGES",
    "RULES",
    "ClassClusters",
    "Router",
    "cluster_classes",
    "routing_error",
]

logger = logging.getLogger(__name__)

LINKAGES = ("single", "complete", "average", "weighted", "ward")
RULES = ("eigengap", "silhouette")
MAX_K = 8
N_NULL = 199  # shuffled copies of the class distances in the separation test
ALPHA = 0.05  # level of the separation test

_RULE_TEXT = {
    "eigengap": (
        "eigen-gap: affinity A = exp(-D^2 / (2 sigma^2)) on the class distance matrix D "
        "(sigma = median over classes of the distance to the nearest other class; "
        "self-loops A_cc = 1), symmetric normalised Laplacian I - A~ with eigenvalues "
        "l_1 <= ... <= l_K; recommended k = the k in ks with the largest gap "
        "l_{k+1} - l_k (k < K; k = 2 when K = 2)"
    ),
    "silhouette": (
        "silhouette: recommended k = the k in ks (2 <= k < K) whose partition has the "
        "largest mean silhouette on the precomputed class distance matrix D "
        "(k = 2 when K = 2)"
    ),
}


@dataclass(frozen=True)
class ClassClusters:
    """Hierarchical clusters of the classes for several k, and the recommended k.

    Attributes
    ----------
    linkage : str
    partitions : dict of int -> ndarray of shape (K,), int
        Cluster id per class for each k; ids numbered by first appearance in class
        order (class 0 is always in cluster 0).
    recommended_k : int or None
        None when no k separates the classes (see ``verdict``).
    rule : str
        The rule that chose ``recommended_k``, in words.
    scores : dict of int -> float
        The rule's score per k (eigen-gap or silhouette; None where undefined).
    classes : list of str or None
        Class names in label order.
    linkage_matrix : ndarray of shape (K - 1, 4) or None
        The scipy linkage matrix the partitions are cut from (rows: merged cluster
        ids, merge height, size); the dendrogram of the report is drawn from it.
    eigenvalues : ndarray of shape (K,) or None
        Ascending spectrum of the symmetric normalised Laplacian of the class graph
        the eigen-gap rule reads (see ``rule``; computed for either rule), clipped at
        0; None when the graph is undefined (all classes at distance 0).
    tree_distance : str or None
        What the merge heights measure, in words.
    separable : bool or None
        Whether the recommended k passed the separation test (module docstring);
        None when it could not be tested (K <= 3, or ``n_null=0``).
    verdict : str or None
        One line on the test's outcome: the k that separates the classes, or why none
        does, with the best score and the null's 95% level.
    null_test : dict or None
        The test's numbers: ``method``, ``n_permutations``, ``alpha``, ``seed``,
        ``statistic`` (best score of a k that does not only peel off single classes),
        ``best_k``, ``level`` (the null's 95% quantile), ``p_value``, ``peel_off``
        (the k whose partitions only peel off single classes).
    """

    linkage: str
    partitions: dict[int, np.ndarray]
    recommended_k: int | None
    rule: str
    scores: dict[int, float | None]
    classes: list[str] | None = None
    linkage_matrix: np.ndarray | None = None
    eigenvalues: np.ndarray | None = None
    tree_distance: str | None = None
    separable: bool | None = None
    verdict: str | None = None
    null_test: dict[str, Any] | None = None

    @property
    def ks(self) -> list[int]:
        """The k for which a partition is stored, ascending."""
        return sorted(self.partitions)

    def assignment(self, k: int | None = None) -> np.ndarray:
        """Cluster id per class, shape (K,), for ``k`` (default: the recommended k)."""
        if k is None:
            if self.recommended_k is None:
                raise DataError(
                    f"No k separates the classes ({self.verdict}); pass k explicitly, "
                    f"one of {self.ks}."
                )
            k = self.recommended_k
        if k not in self.partitions:
            raise InvalidParameterError(f"No partition with k={k!r}; available k: {self.ks}.")
        return self.partitions[k].copy()

    def clusters(self, k: int | None = None) -> list[list[Any]]:
        """Members of each cluster (class names, else class ids) for ``k``."""
        a = self.assignment(k)
        names = self.classes if self.classes is not None else list(range(a.shape[0]))
        return [[names[i] for i in np.flatnonzero(a == c)] for c in range(int(a.max()) + 1)]

    @property
    def leaf_order(self) -> np.ndarray | None:
        """Class ids in dendrogram leaf order, shape (K,) (None without a tree)."""
        if self.linkage_matrix is None:
            return None
        from scipy.cluster.hierarchy import leaves_list

        return leaves_list(np.asarray(self.linkage_matrix, dtype=np.float64))

    def to_dict(self) -> dict[str, Any]:
        """The card's ``class_clusters`` block (JSON-ready; keys of k are strings).

        Besides the partitions and scores it stores what the views draw, so that
        they need not recompute it: ``linkage_matrix`` (K - 1 rows of
        ``[cluster_a, cluster_b, height, size]``), ``leaf_order``, ``tree_distance``
        and ``eigenvalues`` (card schema 1.1).
        """
        out: dict[str, Any] = {
            "method": "hierarchical",
            "linkage": self.linkage,
            "recommended_k": None if self.recommended_k is None else int(self.recommended_k),
            "rule": self.rule,
            "partitions": {str(k): self.partitions[k] for k in self.ks},
            "sizes": {str(k): np.bincount(self.partitions[k]) for k in self.ks},
            "scores": {
                str(k): (None if (score := self.scores.get(k)) is None else float(score))
                for k in self.ks
            },
        }
        if self.classes is not None:
            out["members"] = {str(k): self.clusters(k) for k in self.ks}
        if self.linkage_matrix is not None:
            out["linkage_matrix"] = np.asarray(self.linkage_matrix, dtype=np.float64)
            out["leaf_order"] = self.leaf_order
        if self.tree_distance is not None:
            out["tree_distance"] = self.tree_distance
        if self.eigenvalues is not None:
            out["eigenvalues"] = np.asarray(self.eigenvalues, dtype=np.float64)
        if self.verdict is not None:
            out["separable"] = self.separable
            out["verdict"] = self.verdict
            out["null_test"] = self.null_test
        return to_jsonable(out)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Number clusters by first appearance in class order."""
    mapping: dict[int, int] = {}
    out = np.empty(labels.shape[0], dtype=np.int64)
    for i, v in enumerate(labels.tolist()):
        out[i] = mapping.setdefault(v, len(mapping))
    return out


def _distance_matrix(S: np.ndarray, kind: str) -> np.ndarray:
    d = 1.0 - S if kind == "similarity" else S.copy()
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    return np.maximum(d, 0.0)


def _centroid_distance(S: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Euclidean distances between the unit-feature class centroids (for ward)."""
    from dcsi.index import centroid_terms

    _, _, d2 = centroid_terms(S, counts)
    return np.sqrt(d2)


def _class_graph_spectrum(d: np.ndarray) -> np.ndarray | None:
    """Laplacian spectrum of the eigen-gap rule's class graph, shape (K,), or None."""
    from dcsi.spectral import laplacian_spectrum

    k = d.shape[0]
    masked = d + np.diag(np.full(k, np.inf))
    # scale: the median over classes of the distance to the nearest other class
    sigma = float(np.median(masked.min(axis=1)))
    if not sigma > 0:
        return None
    # the diagonal keeps exp(0) = 1 (self-loops), so that a class far from all others
    # still forms a component of its own (eigenvalue 0) instead of a degenerate row
    a = np.exp(-(d**2) / (2.0 * sigma**2))
    return laplacian_spectrum(a, kind="symmetric", self_loops=True, method="dense")


def _eigengap_scores(lam: np.ndarray | None, ks: Sequence[int]) -> dict[int, float | None]:
    if lam is None:
        return {c: None for c in ks}
    k = lam.shape[0]
    return {c: (float(lam[c] - lam[c - 1]) if c < k else None) for c in ks}


def _silhouette_scores(d: np.ndarray, parts: dict[int, np.ndarray]) -> dict[int, float | None]:
    from sklearn.metrics import silhouette_score

    k = d.shape[0]
    out: dict[int, float | None] = {}
    for c, lab in parts.items():
        n_lab = int(lab.max()) + 1
        out[c] = float(silhouette_score(d, lab, metric="precomputed")) if 2 <= n_lab < k else None
    return out


def _cut_tree(tree_d: np.ndarray, linkage: str, ks: Sequence[int]) -> tuple[Any, dict]:
    """scipy linkage matrix of ``tree_d`` (K, K) and the partition at each k."""
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage as scipy_linkage
    from scipy.spatial.distance import squareform

    z = scipy_linkage(squareform(tree_d, checks=False), method=linkage)
    return z, {k: _relabel(fcluster(z, t=k, criterion="maxclust")) for k in ks}


def _rule_scores(
    tree_d: np.ndarray, parts: dict[int, np.ndarray], lam: np.ndarray | None, rule: str
) -> dict[int, float | None]:
    if rule == "eigengap":
        return _eigengap_scores(lam, list(parts))
    return _silhouette_scores(tree_d, parts)


def _peels_off(part: np.ndarray) -> bool:
    """Every cluster is a single class but (at most) one."""
    return int(np.sum(np.bincount(part) >= 2)) <= 1


def _null_best_scores(
    tree_d: np.ndarray, *, linkage: str, ks: Sequence[int], rule: str, n_null: int, seed: int
) -> np.ndarray:
    """Best score over ``ks`` of the rule on ``n_null`` copies of ``tree_d`` with the
    off-diagonal entries shuffled symmetrically; shape (n_null,) (-inf: no score)."""
    k = tree_d.shape[0]
    rng = np.random.default_rng(seed)
    iu = np.triu_indices(k, 1)
    out = np.full(n_null, -np.inf)
    for b in range(n_null):
        d = np.zeros_like(tree_d)
        d[iu] = rng.permutation(tree_d[iu])
        d = d + d.T
        if rule == "eigengap":  # the eigen-gaps do not read the tree
            scores = _eigengap_scores(_class_graph_spectrum(d), list(ks))
        else:
            scores = _silhouette_scores(d, _cut_tree(d, linkage, ks)[1])
        valid = [v for v in scores.values() if v is not None]
        if valid:
            out[b] = max(valid)
    return out


def _separation(
    tree_d: np.ndarray,
    parts: dict[int, np.ndarray],
    scores: dict[int, float | None],
    *,
    linkage: str,
    rule: str,
    n_null: int,
    alpha: float,
    seed: int,
    classes: list[str] | None,
) -> tuple[int | None, bool | None, str, dict[str, Any] | None]:
    """Recommended k, separable, verdict and the null's numbers (module docstring)."""
    k_all = tree_d.shape[0]
    valid = {k: s for k, s in scores.items() if s is not None}
    best_any = max(valid, key=lambda k: (valid[k], -k)) if valid else min(parts)
    if k_all <= 3 or n_null == 0 or not valid:
        why = (
            f"with K = {k_all} classes every shuffle of the class distances is a "
            "relabelling, so there is no null"
            if k_all <= 3
            else ("no k has a score" if not valid else "the test was switched off (n_null=0)")
        )
        return best_any, None, f"k = {best_any} is the rule's choice, not tested: {why}.", None
    peel = [k for k in sorted(parts) if _peels_off(parts[k])]
    cand = {k: s for k, s in valid.items() if k not in peel}
    null = _null_best_scores(
        tree_d, linkage=linkage, ks=sorted(parts), rule=rule, n_null=n_null, seed=seed
    )
    level = float(np.quantile(null[np.isfinite(null)], 0.95)) if np.isfinite(null).any() else None
    test: dict[str, Any] = {
        "method": "best score over k on the class distances with the off-diagonal "
        "entries shuffled symmetrically (seeded permutations); p = (1 + #{null >= "
        "statistic}) / (1 + n_permutations)",
        "n_permutations": n_null,
        "alpha": alpha,
        "seed": seed,
        "level": level,
        "peel_off": peel,
        "best_k": None,
        "statistic": None,
        "p_value": None,
    }
    shown = "null" if level is None else f"{level:.4g}"
    if not cand:
        verdict = (
            "No k separates the classes: every scored partition only peels off single "
            f"classes while the rest stay together (best: k = {best_any}, score "
            f"{valid[best_any]:.4g}, isolates {_peeled_names(parts[best_any], classes)}; "
            f"null 95% level {shown})."
        )
        return None, False, verdict, test
    k_best = max(cand, key=lambda k: (cand[k], -k))
    stat = float(cand[k_best])
    p = float((1 + np.sum(null >= stat)) / (1 + n_null))
    test.update(best_k=k_best, statistic=stat, p_value=p)
    if p <= alpha:
        verdict = (
            f"k = {k_best} separates the classes: score {stat:.4g} above the 95% level "
            f"{shown} of shuffled class distances (p = {p:.3f})."
        )
        return k_best, True, verdict, test
    extra = ""
    if best_any != k_best:
        extra = (
            f"; k = {best_any} scores higher ({valid[best_any]:.4g}) but only isolates "
            f"{_peeled_names(parts[best_any], classes)}"
        )
    verdict = (
        f"No k separates the classes: the best score, {stat:.4g} (k = {k_best}), is within "
        f"what shuffled class distances give (95% level {shown}, p = {p:.2f}){extra}."
    )
    return None, False, verdict, test


def _peeled_names(part: np.ndarray, classes: list[str] | None) -> str:
    """The single classes a partition isolates, quoted, in class order."""
    sizes = np.bincount(part)
    alone = [i for i in range(part.shape[0]) if sizes[part[i]] == 1]
    return ", ".join(repr(classes[i]) if classes else str(i) for i in alone)


def cluster_classes(
    S: np.ndarray,
    *,
    linkage: str = "average",
    ks: Iterable[int] | None = None,
    kind: str = "similarity",
    rule: str = "eigengap",
    class_counts: np.ndarray | None = None,
    classes: list[str] | None = None,
    n_null: int = N_NULL,
    alpha: float = ALPHA,
    seed: int = 0,
) -> ClassClusters:
    """Hierarchical clustering of the classes on a class matrix.

    Parameters
    ----------
    S : ndarray of shape (K, K)
        Class matrix: mean pairwise cosine similarity (``kind="similarity"``, clustered
        on the distance ``1 - S``) or a mean pairwise distance (``kind="distance"``).
        The diagonal is ignored.
    linkage : {"single", "complete", "average", "weighted", "ward"}, default="average"
        scipy linkage.  ``"ward"`` assumes Euclidean distances between points, which a
        mean pairwise distance is not; it is accepted only for a cosine similarity
        matrix with ``class_counts``, and then clusters the Euclidean distances between
        the classes' unit-feature centroids (exact from S and the counts).
    ks : iterable of int, default=range(2, min(K, 8) + 1)
        Numbers of clusters to cut the tree at; each must be in [2, K].
    kind : {"similarity", "distance"}, default="similarity"
    rule : {"eigengap", "silhouette"}, default="eigengap"
        How the recommended k is chosen (``ClassClusters.rule`` says it in words).
    class_counts : array-like of shape (K,), default=None
        Images per class; needed for ``linkage="ward"``.
    classes : list of str, default=None
        Class names, for ``clusters()`` and ``to_dict()["members"]``.
    n_null : int, default=199
        Shuffled copies of the class distances in the separation test (module
        docstring); 0 switches the test off (the rule's best k is kept, untested).
    alpha : float, default=0.05
        Level of the separation test: a k is recommended only when p <= alpha.
    seed : int, default=0
        Seed of the shuffles.

    Returns
    -------
    ClassClusters
        ``recommended_k`` is None when no k separates the classes (``verdict`` says
        why); the partitions of every k are kept either way.

    Notes
    -----
    K = 2 gives the single partition ``{2: [0, 1]}``; K = 3 gives k = 2 and 3 with the
    eigen-gap rule choosing between them (the silhouette rule has only k = 2); with
    K <= 3 the choice is not tested.
    """
    from dcsi.index import square_class_matrix

    caller = "cluster_classes"
    m = square_class_matrix(S, caller)
    k_all = m.shape[0]
    if k_all < 2:
        raise InvalidParameterError(
            f"{caller} needs at least 2 classes; got {k_all}: there is nothing to cluster."
        )
    off = ~np.eye(k_all, dtype=bool)
    if not np.all(np.isfinite(m[off])):
        raise InvalidParameterError(
            f"The 'S' parameter of {caller} has NaN off-diagonal entries (a class with no "
            "images?); drop empty classes first."
        )
    check_choice(linkage, "linkage", caller, LINKAGES)
    check_choice(kind, "kind", caller, ["similarity", "distance"])
    check_choice(rule, "rule", caller, RULES)
    check_int(n_null, "n_null", caller, min_value=0)
    check_int(seed, "seed", caller, min_value=0)
    check_float(alpha, "alpha", caller, min_value=0.0, max_value=1.0)
    if ks is None:
        ks_list = list(range(2, min(k_all, MAX_K) + 1))
    else:
        ks_list = sorted({check_int(k, "ks", caller, min_value=2, max_value=k_all) for k in ks})
        if not ks_list:
            raise InvalidParameterError(
                f"The 'ks' parameter of {caller} must hold at least one int in "
                f"[2, {k_all}]. Got an empty sequence instead."
            )
    d = _distance_matrix(m, kind)
    if linkage == "ward":
        if kind != "similarity" or class_counts is None:
            raise InvalidParameterError(
                "linkage='ward' needs Euclidean distances: pass a cosine similarity "
                "matrix (kind='similarity') with class_counts, so that the classes' "
                "centroid distances can be used, or choose 'average'."
            )
        counts = np.asarray(class_counts)
        if counts.shape != (k_all,):
            raise InvalidParameterError(
                f"The 'class_counts' parameter of {caller} must have shape ({k_all},). "
                f"Got {counts.shape} instead."
            )
        tree_d = _centroid_distance(m, counts)
    else:
        tree_d = d
    z, parts = _cut_tree(tree_d, linkage, ks_list)
    # fcluster can return fewer clusters than asked when merge heights tie
    for k, lab in parts.items():
        if int(lab.max()) + 1 != k:
            logger.info(
                "cluster_classes: k=%d gave %d clusters (tied merge heights)", k, int(lab.max()) + 1
            )
    lam = _class_graph_spectrum(tree_d)
    scores = _rule_scores(tree_d, parts, lam, rule)
    recommended, separable, verdict, null_test = _separation(
        tree_d,
        parts,
        scores,
        linkage=linkage,
        rule=rule,
        n_null=n_null,
        alpha=alpha,
        seed=seed,
        classes=classes,
    )
    if linkage == "ward":
        tree_text = "Euclidean distance between the unit-feature class centroids"
    elif kind == "similarity":
        tree_text = "1 - similarity (symmetrised)"
    else:
        tree_text = "class distance (symmetrised)"
    return ClassClusters(
        linkage=linkage,
        partitions=parts,
        recommended_k=recommended,
        rule=_RULE_TEXT[rule],
        scores=scores,
        classes=None if classes is None else list(classes),
        linkage_matrix=z,
        eigenvalues=lam,
        tree_distance=tree_text,
        separable=separable,
        verdict=verdict,
        null_test=null_test,
    )


class Router:
    """Route query images to a class cluster (Parikh & Aggarwal's Algorithm 2, exact).

    Parameters
    ----------
    class_sums : ndarray of shape (K, dim)
        Sum of the unit-normalised features of each class (``ClassStats.sums``, the
        card's ``features.class_sums``).
    class_counts : ndarray of shape (K,)
        Images per class.
    assignment : ndarray of shape (K,), int
        Cluster id of each class.
    extractor : str or Extractor, default=None
        Backbone that made the class sums, used by :meth:`route` (a name for
        :func:`dcsi.get_backbone` or an Extractor object); None = the default backbone.
    image_size : int, default=None
        Input size the class features were extracted at (passed to the extractor).
    pooling : {"gap", "ga", "sap", "sam"}, default="gap"
        Pooling the class features were extracted with (for a backbone name).

    Notes
    -----
    The mean cosine similarity of a query ``q`` to the images of cluster c is
    ``(q / |q|) . S_c / n_c``, ``S_c`` = sum of the class sums of its classes and
    ``n_c`` their image count; routing picks the cluster with the largest value
    (= smallest mean cosine distance; ties go to the lower cluster id).
    """

    def __init__(
        self,
        class_sums: np.ndarray,
        class_counts: np.ndarray,
        assignment: np.ndarray,
        extractor: Any = None,
        *,
        image_size: int | None = None,
        pooling: str = "gap",
    ) -> None:
        caller = "Router"
        sums = check_array(class_sums, "class_sums", caller, ndim=2, dtype=np.float64)
        counts = check_array(class_counts, "class_counts", caller, ndim=1, dtype=np.float64)
        assign = np.asarray(assignment)
        if counts.shape[0] != sums.shape[0]:
            raise InvalidParameterError(
                f"The 'class_counts' parameter of Router must have one count per class "
                f"({sums.shape[0]}). Got shape {counts.shape} instead."
            )
        if np.any(counts < 0):
            raise InvalidParameterError(
                "The 'class_counts' parameter of Router must be non-negative. "
                f"Got {counts.tolist()!r} instead."
            )
        if assign.ndim != 1 or assign.shape[0] != sums.shape[0] or assign.dtype.kind not in "iu":
            raise InvalidParameterError(
                f"The 'assignment' parameter of Router must be a 1-D int array with one "
                f"cluster id per class ({sums.shape[0]}). Got {assign!r} instead."
            )
        if assign.min() < 0:
            raise InvalidParameterError(
                "The 'assignment' parameter of Router must hold cluster ids >= 0. "
                f"Got {int(assign.min())} instead."
            )
        n_clusters = int(assign.max()) + 1
        onehot = np.zeros((n_clusters, sums.shape[0]))
        onehot[assign, np.arange(sums.shape[0])] = 1.0
        self.cluster_sums = onehot @ sums  # (C, dim)
        self.cluster_counts = onehot @ counts  # (C,)
        if np.any(self.cluster_counts <= 0):
            empty = np.flatnonzero(self.cluster_counts <= 0).tolist()
            raise InvalidParameterError(
                f"Clusters {empty} of the Router have no images; number clusters "
                "0..C-1 with at least one non-empty class in each."
            )
        self.assignment = assign.astype(np.int64)
        self.extractor = extractor
        self.image_size = image_size
        self.pooling = pooling

    @property
    def n_clusters(self) -> int:
        """Number of clusters C."""
        return int(self.cluster_sums.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension d."""
        return int(self.cluster_sums.shape[1])

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Mean cosine similarity of each query to each cluster, shape (n, C)."""
        q = check_array(features, "features", "Router.scores", ndim=2, allow_empty=True)
        if q.shape[1] != self.dim:
            raise InvalidParameterError(
                f"The 'features' parameter of Router.route_features must have {self.dim} "
                f"columns (the class sums' dimension). Got {q.shape[1]} instead; extract "
                "the queries with the backbone that made the card."
            )
        q = np.asarray(q, dtype=np.float64)
        nrm = np.linalg.norm(q, axis=1, keepdims=True)
        q = q / np.where(nrm > 0, nrm, 1.0)
        return (q @ self.cluster_sums.T) / self.cluster_counts[None, :]

    def route_features(self, features: np.ndarray) -> np.ndarray:
        """Cluster id of each query feature vector.

        Parameters
        ----------
        features : ndarray of shape (n, dim)

        Returns
        -------
        ndarray of shape (n,), int64
        """
        return np.argmax(self.scores(features), axis=1).astype(np.int64)

    def _features_of(self, images: Any, *, batch_size: int, device: str) -> np.ndarray:
        if (
            isinstance(images, (list, tuple))
            and images
            and all(hasattr(im, "convert") and hasattr(im, "size") for im in images)
        ):
            return self._pil_features(list(images), batch_size=batch_size, device=device)
        from dcsi.features import extract_features

        kw: dict[str, Any] = {"batch_size": batch_size, "device": device}
        if self.extractor is None or isinstance(self.extractor, str):
            # a registered backbone: rebuild it at the size the class sums were made at
            kw["image_size"] = self.image_size
            kw["pooling"] = self.pooling
            if self.extractor is not None:
                kw["backbone"] = self.extractor
        else:
            kw["backbone"] = self.extractor  # an Extractor owns its preprocessing
        return np.asarray(extract_features(images, **kw).features)

    def _pil_features(self, images: list[Any], *, batch_size: int, device: str) -> np.ndarray:
        import torch

        from dcsi.backbones import get_backbone

        ext = self.extractor
        if ext is None or isinstance(ext, str):
            ext = get_backbone(
                ext or "efficientnet_lite0",
                image_size=self.image_size,
                device=device,
                pooling=self.pooling,
            )
        out = []
        for i in range(0, len(images), batch_size):
            batch = torch.stack([ext.transform(im) for im in images[i : i + batch_size]])
            with torch.no_grad():
                feats = ext(batch)
            out.append(np.asarray(feats.cpu().numpy() if hasattr(feats, "cpu") else feats))
        return np.concatenate(out, axis=0)

    def route(self, images: Any, *, batch_size: int = 64, device: str = "auto") -> np.ndarray:
        """Cluster id of each query image.

        Parameters
        ----------
        images : ndarray of shape (n, h, w) or (n, h, w, c), uint8; list of PIL images;
            or any source :func:`dcsi.open_source` takes
        batch_size : int, default=64
        device : str, default="auto"

        Returns
        -------
        ndarray of shape (n,), int64
        """
        return self.route_features(self._features_of(images, batch_size=batch_size, device=device))

    def __repr__(self) -> str:
        name = getattr(self.extractor, "name", self.extractor)
        return f"Router(n_clusters={self.n_clusters}, dim={self.dim}, extractor={name!r})"


def routing_error(
    router: Router,
    features_or_images: Any,
    labels: np.ndarray,
    assignment: np.ndarray | None = None,
) -> float:
    """Fraction of held-out labelled images routed to a cluster other than their class's.

    Parameters
    ----------
    router : Router
    features_or_images : ndarray of shape (n, dim) (float features) or images
        Images as for :meth:`Router.route` (uint8 arrays, PIL images, a source).
    labels : ndarray of shape (n,), int
        True class of each query.
    assignment : ndarray of shape (K,), int, default=None
        Cluster id of each class; the router's own when omitted.

    Returns
    -------
    float
        In [0, 1].
    """
    assign = router.assignment if assignment is None else np.asarray(assignment)
    y = np.asarray(labels)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise InvalidParameterError(
            "The 'labels' parameter of routing_error must be a 1-D array of int class "
            f"ids. Got {y.dtype} of shape {y.shape} instead."
        )
    if y.size and (y.min() < 0 or y.max() >= assign.shape[0]):
        raise InvalidParameterError(
            f"The 'labels' parameter of routing_error must hold class ids in "
            f"[0, {assign.shape[0] - 1}]. Got values in [{int(y.min())}, {int(y.max())}]."
        )
    x = features_or_images
    is_features = (
        isinstance(x, np.ndarray)
        and x.ndim == 2
        and x.dtype.kind == "f"
        and x.shape[1] == router.dim
    )
    pred = router.route_features(x) if is_features else router.route(x)
    if pred.shape[0] != y.shape[0]:
        raise InvalidParameterError(
            f"routing_error got {pred.shape[0]} queries but {y.shape[0]} labels."
        )
    if y.size == 0:
        return 0.0
    return float(np.mean(pred != assign[y]))
