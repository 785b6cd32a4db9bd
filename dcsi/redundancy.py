"""Near-duplicate groups, redundant copies and label conflicts (Yousefzadeh's Algorithm 1).

Pipeline of the default ``method="wavelet"``:

1. **Wavelet rows** ``W`` (``db1``, level 1; :mod:`dcsi.similarity.wavelet`), in blocks.
2. **Rank-revealing QR** (:func:`dcsi.rrqr.select_columns`): keep the ``m`` most
   independent coefficients with ``cond(W[:, P[:m]]) < tau`` (skipped when ``n <= d``).
3. **Grouping** on the selected coefficients: for each image the approximation
   coefficients are centred on their mean (removing a uniform change of brightness)
   and the row is scaled to unit length (removing a change of contrast); the distance
   of two images is ``1 - cos`` of these rows.

   * ``n_clusters="auto"`` (default, near-duplicate search): every pair of images whose
     distance is ``<= threshold`` is linked, and groups are the connected components
     of that graph (:func:`neighbor_pairs`: an exact blockwise search; candidates from
     a 32-d projection, which can only shorten distances, then checked on all
     selected coefficients).  No ``n x n`` matrix is ever formed: memory is
     ``O(block_size * n)``.
   * Second, shift- and crop-tolerant stage (``align=True``, default; wavelet with
     ``"auto"``): the wavelet distance misses copies moved by a pixel or cropped by a
     pixel or two and resized back.  :func:`dcsi.aligned.aligned_pairs` links every
     pair whose *aligned distance* -- ``1 -`` Pearson correlation of coarse inner
     windows after the best of the identity, shifts by up to ``max_shift`` px and
     crops of up to ``max_crop`` px resized back -- is ``<= align_threshold``
     (default 0.0005; exact k-d tree search, never ``n x n``).  Links of both stages
     are united before the connected components.
   * ``n_clusters=int``: k-means (or ``clustering="spectral"``) with that many
     clusters, as in the paper; every cluster with two or more images is a group.

4. **Groups**: ``kind="redundant"`` when all members share one label (keep one:
   the member closest to the group centre, the ``representative``), ``"conflict"``
   when the members carry several labels (influential or mislabelled: all are kept
   and should be reviewed).

``method="ssim"`` links pairs with SSIM ``>= threshold`` (:mod:`dcsi.similarity.ssim`),
``method="cnn"`` uses CNN features (:func:`dcsi.extract_features`), mean-centred over
the dataset and unit-normalised, with a cosine-distance threshold.

Thresholds are absolute and have a meaning that does not depend on the dataset:
see :data:`DEFAULT_THRESHOLDS`.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dcsi._progress import progress
from dcsi._validation import check_choice, check_float, check_int
from dcsi.aligned import (ALIGN_DISTANCE, DEFAULT_ALIGN_THRESHOLD, DEFAULT_MAX_CROP,
                          DEFAULT_MAX_SHIFT, skip_reason)
from dcsi.exceptions import DataError, InvalidParameterError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Group",
    "RedundancyResult",
    "complete_groups",
    "connected_groups",
    "evaluate_duplicates",
    "find_redundancy",
    "find_redundancy_features",
    "neighbor_pairs",
    "prepare_rows",
]

logger = logging.getLogger(__name__)

#: Default absolute thresholds per method.
#: ``wavelet``: distance ``1 - cos`` of the RRQR-selected wavelet coefficients
#: (approximation band centred per image) ``<= 0.01``; ``cnn``: cosine distance of dataset-centred
#: CNN features ``<= 0.05``; ``ssim``: SSIM ``>= 0.95`` (skimage settings);
#: ``verify_threshold`` for the SSIM check of wavelet/cnn candidates: SSIM ``>= 0.8``.
DEFAULT_THRESHOLDS = {"wavelet": 0.01, "cnn": 0.05, "ssim": 0.95}
DEFAULT_VERIFY_THRESHOLD = 0.8
_METHODS = ("wavelet", "ssim", "cnn")


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Group:
    """One group of near-identical images.

    Attributes
    ----------
    members : tuple of str
        Item ids, representative first, then by distance to the centre.
    indices : tuple of int
        Row indices of the members in the analysed set (same order).
    labels : tuple of str
        Class name of each member (same order; empty when unlabelled).
    kind : {"redundant", "conflict"}
        ``"conflict"`` when the members carry more than one label.
    representative : str
        The member closest to the group centre (the copy to keep).
    distances : tuple of float
        Euclidean distance of each member's unit feature row to the mean row of the
        group (same order); for ``method="ssim"`` the mean ``1 - SSIM`` to the other
        members.
    """

    members: tuple[str, ...]
    indices: tuple[int, ...]
    labels: tuple[str, ...]
    kind: str
    representative: str
    distances: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.members)

    def to_dict(self) -> dict:
        """JSON-ready dict: members, labels, kind, representative, distances, size."""
        return {
            "members": list(self.members),
            "labels": list(self.labels),
            "kind": self.kind,
            "representative": self.representative,
            "distances": [round(float(d), 6) for d in self.distances],
            "size": len(self.members),
        }


@dataclass(frozen=True)
class RedundancyResult(Sequence):
    """Near-duplicate groups of a dataset; a read-only sequence of :class:`Group`.

    Attributes
    ----------
    groups : tuple of Group
        Largest groups first.
    method : str
    params : dict
        Every parameter that shaped the result (thresholds, wavelet, tau, ...).
    summary : dict
        Counts, the keep-list size, per-class redundancy rates and, for the wavelet
        method, the rank-revealing QR statistics.
    ids : tuple of str
        Ids of all analysed items (row order).
    keep : ndarray of shape (n,), bool
        The keep-list: False for the non-representative members of redundant groups.
    """

    groups: tuple[Group, ...]
    method: str
    params: dict
    summary: dict
    ids: tuple[str, ...] = field(repr=False)
    keep: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i):  # type: ignore[override]
        return self.groups[i]

    def __iter__(self) -> Iterator[Group]:
        return iter(self.groups)

    def keep_ids(self) -> list[str]:
        """Ids of the reduced dataset (one copy per redundant group, conflicts kept)."""
        return [i for i, k in zip(self.ids, self.keep) if k]

    def to_dict(self, *, max_groups: int | None = None) -> dict:
        """The card's ``redundancy`` block: ``method``, ``params``, ``summary``, ``groups``."""
        groups = self.groups if max_groups is None else self.groups[:max_groups]
        return {
            "method": self.method,
            "params": _jsonable(self.params),
            "summary": _jsonable(self.summary),
            "groups": [g.to_dict() for g in groups],
        }

    def groups_csv(self) -> str:
        """CSV text with one row per group member."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["group", "kind", "id", "label", "representative", "distance", "keep"])
        keep = dict(zip(self.ids, self.keep))
        for g_id, g in enumerate(self.groups):
            labels = g.labels or ("",) * len(g.members)
            for m, lab, d in zip(g.members, labels, g.distances):
                w.writerow([g_id, g.kind, m, lab, int(m == g.representative),
                            f"{d:.6g}", int(bool(keep[m]))])
        return buf.getvalue()

    def keep_csv(self) -> str:
        """CSV text of the keep-list: every analysed id and whether to keep it."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "keep"])
        for i, k in zip(self.ids, self.keep):
            w.writerow([i, int(bool(k))])
        return buf.getvalue()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


# --------------------------------------------------------------------------- geometry
def prepare_rows(X: np.ndarray, *, center: str = "row") -> np.ndarray:
    """Centre and unit-normalise rows, so that ``1 - x_i . x_j`` is the distance.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    center : {"row", "column", "none"}, default="row"
        ``"row"``: subtract each row's mean (distance = 1 - Pearson correlation);
        ``"column"``: subtract the dataset mean of each column; ``"none"``.

    Returns
    -------
    ndarray of shape (n, d), float32
        Zero rows stay zero.
    """
    check_choice(center, "center", "prepare_rows", ("row", "column", "none"))
    X = np.asarray(X)
    out = np.empty(X.shape, dtype=np.float32)
    col_mean = X.mean(axis=0, dtype=np.float64) if center == "column" else None
    step = 8192
    for s in range(0, X.shape[0], step):
        F = X[s:s + step].astype(np.float64)
        if center == "row":
            F -= F.mean(axis=1, keepdims=True)
        elif center == "column":
            F -= col_mean
        norms = np.linalg.norm(F, axis=1, keepdims=True)
        out[s:s + step] = F / np.where(norms > 0, norms, 1.0)
    return out


def _projection_basis(F: np.ndarray, n_components: int, seed: int = 0,
                      max_rows: int = 20000) -> np.ndarray:
    """An orthonormal (d, n_components) basis of the main directions of the rows of ``F``.

    Any orthonormal basis keeps ``||B^T (x - y)|| <= ||x - y||``, which is all the
    candidate search needs; principal directions (from at most ``max_rows`` rows) make
    the bound tight, so few candidates survive.
    """
    n, d = F.shape
    rows = F if n <= max_rows else F[np.random.default_rng(seed).choice(n, max_rows,
                                                                       replace=False)]
    rows = rows.astype(np.float32) - rows.mean(axis=0, dtype=np.float64).astype(np.float32)
    gram = (rows.T @ rows).astype(np.float64)
    _, vecs = np.linalg.eigh(gram)
    return np.ascontiguousarray(vecs[:, ::-1][:, :n_components], dtype=np.float32)


def neighbor_pairs(
    F: np.ndarray,
    *,
    threshold: float,
    n_components: int | None = 32,
    block_size: int = 1024,
    max_candidates: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of rows with distance ``1 - F_i . F_j <= threshold``, never n x n.

    Exact: for unit rows ``||F_i - F_j||^2 = 2 (1 - F_i . F_j)``, and an orthogonal
    projection never lengthens a difference, so every pair within the threshold is
    among the pairs whose *projected* distance is ``<= sqrt(2 threshold)``.  Those
    candidates are found block by block (rows ``[s, s+b)`` against rows ``>= s``) and
    then checked on all columns.

    Parameters
    ----------
    F : ndarray of shape (n, d)
        Unit-length (or zero) rows, see :func:`prepare_rows`.
    threshold : float
        Largest distance ``1 - F_i . F_j`` of a returned pair.
    n_components : int or None, default=32
        Dimension of the projection of the candidate search (``None``: no projection).
    block_size : int, default=1024
        Rows per block; peak extra memory is about ``block_size * n * 4 * 3`` bytes.
    max_candidates : int, default=None
        Refuse (DataError) when more candidates than this appear (default ``200 n``):
        the threshold is then far too loose for a near-duplicate search.
    seed : int, default=0
        Row subsample of the projection basis.

    Returns
    -------
    pairs : ndarray of shape (m, 2), int64
        ``i < j``, sorted.
    distances : ndarray of shape (m,), float64
        ``1 - F_i . F_j`` on all columns of ``F``.
    """
    F = np.ascontiguousarray(F, dtype=np.float32)
    n = F.shape[0]
    if n < 2:
        return np.empty((0, 2), dtype=np.int64), np.empty(0)
    if max_candidates is None:
        max_candidates = 200 * n
    if n_components is not None and n_components < F.shape[1]:
        P = F @ _projection_basis(F, n_components, seed)
    else:
        P = F
    radius2 = 2.0 * threshold * (1 + 1e-5) + 1e-6  # float32 slack: never lose a pair
    # Sort by the first coordinate: a pair within the radius differs by at most the
    # radius there, so each block only meets a window of the sorted rows.
    order = np.argsort(P[:, 0], kind="stable")
    P = P[order]
    first = P[:, 0].astype(np.float64)
    radius = float(np.sqrt(radius2))
    sq = np.einsum("ij,ij->i", P, P)
    found_i, found_j = [], []
    total = 0
    for s in progress(range(0, n, block_size), desc="neighbours", unit="block",
                      total=-(-n // block_size)):
        e = min(s + block_size, n)
        hi = int(np.searchsorted(first, first[e - 1] + radius, side="right"))
        d2 = P[s:e] @ P[s:hi].T
        d2 *= -2.0
        d2 += sq[s:e, None]
        d2 += sq[None, s:hi]
        ii, jj = np.nonzero(d2 <= radius2)
        del d2
        jj = jj + s
        ii = ii + s
        upper = jj > ii
        found_i.append(order[ii[upper]])
        found_j.append(order[jj[upper]])
        total += int(upper.sum())
        if total > max_candidates:
            raise DataError(
                f"The near-duplicate threshold {threshold} links more than "
                f"{max_candidates} candidate pairs among {n} images; it is far too loose "
                "for a near-duplicate search. Use a smaller threshold."
            )
    cand = np.stack([np.concatenate(found_i), np.concatenate(found_j)], 1).astype(np.int64)
    return verify_pairs(F, F, np.sort(cand, axis=1), threshold)


def verify_pairs(
    A: np.ndarray, B: np.ndarray, cand: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the candidate pairs whose exact distance ``1 - a . b`` is ``<= threshold``.

    Parameters
    ----------
    A : ndarray of shape (n_a, d)
    B : ndarray of shape (n_b, d)
        Unit rows (``B`` may be ``A`` for pairs within one set).
    cand : ndarray of shape (m, 2), int
        Candidate pairs ``(row of A, row of B)``.
    threshold : float

    Returns
    -------
    pairs : ndarray of shape (k, 2), int64
        The kept pairs, sorted by first then second index.
    distances : ndarray of shape (k,)
        Their distances (clipped at 0), in float64.
    """
    dist = np.empty(len(cand))
    step = 1 << 15
    for s in range(0, len(cand), step):
        c = cand[s:s + step]
        dist[s:s + step] = 1.0 - np.einsum("ij,ij->i", A[c[:, 0]], B[c[:, 1]],
                                           dtype=np.float64)
    dist = np.maximum(dist, 0.0)
    keep = dist <= threshold
    cand, dist = cand[keep], dist[keep]
    order = np.lexsort((cand[:, 1], cand[:, 0]))
    return cand[order], dist[order]


def connected_groups(n: int, pairs: np.ndarray) -> list[np.ndarray]:
    """Connected components with two or more members of the graph on ``n`` nodes.

    Parameters
    ----------
    n : int
    pairs : ndarray of shape (m, 2), int

    Returns
    -------
    list of ndarray of int
        Member indices of each component (sorted), largest first.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if n == 0 or len(pairs) == 0:
        return []
    g = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
                   shape=(n, n)).tocsr()
    _, comp = connected_components(g, directed=False)
    return _labels_to_groups(comp)


def _labels_to_groups(comp: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(comp, kind="stable")
    sizes = np.bincount(comp)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    out = [order[bounds[c]:bounds[c + 1]] for c in np.flatnonzero(sizes >= 2)]
    out = [np.sort(g) for g in out]
    out.sort(key=lambda g: (-len(g), int(g[0])))
    return out


#: Components larger than this keep single linkage (the refinement is quadratic in size).
MAX_REFINED_GROUP = 2000


def complete_groups(
    components: list[np.ndarray],
    link_score: Any,
    *,
    max_size: int = MAX_REFINED_GROUP,
) -> tuple[list[np.ndarray], int]:
    """Split connected components so that every pair inside a group is linked.

    Connected components chain: ``a ~ b`` and ``b ~ c`` put ``a`` and ``c`` together
    even when they look nothing alike.  Each component is re-clustered by complete
    linkage (:func:`scipy.cluster.hierarchy.linkage`) on the link score of all its
    pairs and cut at 1, so that every pair of a group scores ``<= 1`` (is linked).

    Parameters
    ----------
    components : list of ndarray of int
        Member indices of each component.
    link_score : callable
        ``link_score(members, pairs)`` -> ndarray of shape (m,): the score of the
        pairs ``(members[pairs[:, 0]], members[pairs[:, 1]])``, ``<= 1`` for a link.
    max_size : int, default=2000
        Larger components are kept whole (counted in the second return value).

    Returns
    -------
    groups : list of ndarray of int
        Sorted members, largest group first.
    n_unrefined : int
        Components kept whole because of their size.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    out, n_unrefined = [], 0
    for g in components:
        if len(g) <= 2 or len(g) > max_size:
            n_unrefined += len(g) > max_size
            out.append(g)
            continue
        iu = np.stack(np.triu_indices(len(g), 1), 1)
        score = np.minimum(np.asarray(link_score(g, iu), dtype=np.float64), 1e6)
        labels = fcluster(linkage(score, method="complete"), t=1.0, criterion="distance")
        out.extend(g[labels == c] for c in np.unique(labels) if np.sum(labels == c) >= 2)
    out = [np.sort(g) for g in out]
    out.sort(key=lambda g: (-len(g), int(g[0])))
    return out, n_unrefined


def _cluster(F: np.ndarray, n_clusters: int, clustering: str, seed: int) -> np.ndarray:
    n = F.shape[0]
    if n_clusters > n:
        raise InvalidParameterError(
            f"The 'n_clusters' parameter of find_redundancy must be <= the number of "
            f"images ({n}). Got {n_clusters} instead; use n_clusters='auto' for a "
            "near-duplicate search."
        )
    if clustering == "kmeans":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed)
        return km.fit_predict(F.astype(np.float64))
    from sklearn.cluster import SpectralClustering

    sc = SpectralClustering(n_clusters=n_clusters, affinity="nearest_neighbors",
                            n_neighbors=min(10, n - 1), random_state=seed,
                            assign_labels="cluster_qr")
    return sc.fit_predict(F.astype(np.float64))


# --------------------------------------------------------------------------- groups
def _make_groups(
    members: list[np.ndarray],
    F: np.ndarray | None,
    ids: Sequence[str],
    labels: np.ndarray | None,
    classes: Sequence[str],
    pair_dist: dict | None = None,
) -> list[Group]:
    out = []
    for idx in members:
        if F is not None:
            rows = F[idx].astype(np.float64)
            centre = rows.mean(axis=0)
            d = np.linalg.norm(rows - centre, axis=1)
        else:  # no vectors (SSIM): centre = the medoid by mean pair distance
            d = np.array([np.mean([pair_dist.get((min(a, b), max(a, b)), 1.0)
                                   for b in idx if b != a]) for a in idx])
        order = np.lexsort((idx, np.round(d, 12)))
        idx, d = idx[order], d[order]
        labs: tuple[str, ...] = ()
        kind = "redundant"
        if labels is not None:
            labs = tuple(str(classes[int(labels[i])]) if int(labels[i]) < len(classes)
                         else str(int(labels[i])) for i in idx)
            kind = "conflict" if len(set(labels[idx].tolist())) > 1 else "redundant"
        out.append(Group(
            members=tuple(str(ids[i]) for i in idx),
            indices=tuple(int(i) for i in idx),
            labels=labs,
            kind=kind,
            representative=str(ids[idx[0]]),
            distances=tuple(float(x) for x in d),
        ))
    out.sort(key=lambda g: (-len(g.members), g.indices[0]))
    return out


def _summarise(groups: list[Group], n: int, labels: np.ndarray | None,
               classes: Sequence[str]) -> tuple[np.ndarray, dict]:
    keep = np.ones(n, dtype=bool)
    for g in groups:
        if g.kind == "redundant":
            keep[list(g.indices[1:])] = False
    in_groups = sum(len(g) for g in groups)
    summary: dict[str, Any] = {
        "n_images": int(n),
        "n_groups": len(groups),
        "n_redundant_groups": sum(g.kind == "redundant" for g in groups),
        "n_conflict_groups": sum(g.kind == "conflict" for g in groups),
        "n_images_in_groups": int(in_groups),
        "n_images_in_conflicts": int(sum(len(g) for g in groups if g.kind == "conflict")),
        "n_removed": int(n - keep.sum()),
        "n_kept": int(keep.sum()),
        "redundancy_rate": float((n - keep.sum()) / n) if n else 0.0,
        "keep_rule": "redundant group: keep the representative (closest to the group "
                     "centre); conflict group: keep all members for review",
    }
    if labels is not None:
        k = len(classes)
        counts = np.bincount(labels, minlength=k)
        removed = np.bincount(labels[~keep], minlength=k)
        conflicted = np.zeros(k, dtype=np.int64)
        for g in groups:
            if g.kind == "conflict":
                np.add.at(conflicted, labels[list(g.indices)], 1)
        summary["per_class"] = {
            str(classes[c]) if c < len(classes) else str(c): {
                "n_images": int(counts[c]),
                "n_removed": int(removed[c]),
                "redundancy_rate": float(removed[c] / counts[c]) if counts[c] else None,
                "n_in_conflicts": int(conflicted[c]),
            }
            for c in range(len(counts))
        }
    return keep, summary


# --------------------------------------------------------------------------- entry points
def _wavelet_select(images: np.ndarray, *, wavelet: str, level: int, mode: str,
                    tau: float, rank_tol: float):
    """Wavelet rows restricted to the RRQR-selected columns.

    Returns ``(W[:, cols], cols, selection)``; ``cols`` index the full coefficient
    vector.  Constant columns are dropped first (the paper drops the all-zero ones):
    they carry nothing and make ``W`` singular.
    """
    from dcsi.rrqr import select_columns
    from dcsi.similarity.wavelet import wavelet_coefficients

    W = wavelet_coefficients(images, wavelet=wavelet, level=level, mode=mode)
    varying = np.flatnonzero(W.max(axis=0) > W.min(axis=0))
    if varying.size == 0:
        raise DataError("All images are identical: no wavelet coefficient varies, so "
                        "there is nothing to select (every image is a duplicate).")
    sel = select_columns(W[:, varying], tau=tau, rank_tol=rank_tol)
    cols = varying[sel.columns]
    return W[:, cols], cols, sel


def _wavelet_rows(W_selected: np.ndarray, cols: np.ndarray, n_approx: int) -> np.ndarray:
    """Unit rows from selected coefficients, the approximation band centred per image.

    Subtracting each image's mean approximation coefficient removes a uniform change
    of brightness (which only moves the approximation band); the detail bands have no
    constant part.  Scaling to unit length removes a change of contrast.
    """
    X = np.asarray(W_selected, dtype=np.float32).copy()
    approx = cols < n_approx
    if approx.any():
        X[:, approx] -= X[:, approx].mean(axis=1, keepdims=True)
    return prepare_rows(X, center="none")


def _n_approx(shape: tuple[int, ...], wavelet: str, level: int, mode: str) -> int:
    import pywt

    probe = pywt.wavedec2(np.zeros(shape, dtype=np.float32), wavelet, mode=mode,
                          level=level, axes=(0, 1))
    return int(probe[0].size)


def _link_score(F, threshold, images, verify, verify_threshold, align, align_threshold,
                max_shift, max_crop):
    """``link_score(members, pairs)`` for :func:`complete_groups`: the smaller of the
    feature distance over ``threshold`` (``inf`` when SSIM verification rejects the
    pair) and, with ``align``, the aligned distance over ``align_threshold``."""
    def score(members, pairs):
        a, b = members[pairs[:, 0]], members[pairs[:, 1]]
        d = 1.0 - np.einsum("ij,ij->i", F[a], F[b], dtype=np.float64)
        s = np.maximum(d, 0.0) / max(threshold, 1e-12)
        if verify == "ssim":
            from dcsi.similarity.ssim import ssim_pairs

            ok = np.asarray(ssim_pairs(images, np.stack([a, b], 1))) >= verify_threshold
            s = np.where(ok, s, np.inf)
        if align:
            from dcsi.aligned import aligned_distance

            da = aligned_distance(images, np.stack([a, b], 1), max_shift=max_shift,
                                  max_crop=max_crop)
            s = np.minimum(s, da / max(align_threshold, 1e-12))
        return s
    return score


def find_redundancy_features(
    features: np.ndarray,
    labels: Any = None,
    *,
    ids: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    threshold: float,
    n_clusters: int | str = "auto",
    clustering: str = "kmeans",
    scope: str = "all",
    center: str = "row",
    n_components: int | None = 32,
    block_size: int = 1024,
    seed: int = 0,
    images: np.ndarray | None = None,
    verify: str | None = None,
    verify_threshold: float = DEFAULT_VERIFY_THRESHOLD,
    align: bool = False,
    align_threshold: float = DEFAULT_ALIGN_THRESHOLD,
    max_shift: int = DEFAULT_MAX_SHIFT,
    max_crop: int = DEFAULT_MAX_CROP,
    group_linkage: str = "complete",
    method: str = "features",
    params: dict | None = None,
    extra_summary: dict | None = None,
) -> RedundancyResult:
    """Group near-identical rows of a feature matrix (the core of :func:`find_redundancy`).

    Parameters
    ----------
    features : ndarray of shape (n, d)
    labels : array-like of shape (n,), int, default=None
    ids : sequence of str, default=None
        Item ids (default: ``"0"``, ``"1"``, ...).
    classes : sequence of str, default=None
        Class names in label order.
    threshold : float
        Largest distance ``1 - cos`` (after ``center``) of a linked pair.
    n_clusters, clustering, scope, n_components, block_size, seed
        See :func:`find_redundancy`.
    center : {"row", "column", "none"}, default="row"
    images : ndarray of shape (n, h, w[, c]), uint8, default=None
        Needed when ``verify="ssim"``.
    verify : {None, "ssim"}, default=None
        Keep a linked pair only if its SSIM is ``>= verify_threshold``.
    align : bool, default=False
        Also link the pairs of :func:`dcsi.aligned.aligned_pairs` (shifted / cropped
        copies; needs
        ``images``, ``n_clusters="auto"``).
    align_threshold : float, default=0.0005
        Largest aligned distance of a linked pair.
    max_shift, max_crop : int, default=1, 2
        Shifts and crops the aligned stage tolerates (:func:`dcsi.aligned.copy_transforms`).
    group_linkage : {"complete", "single"}, default="complete"
        ``"single"``: groups are the connected components of the links;
        ``"complete"``: components are split so that every pair in a group is linked
        (:func:`complete_groups`).
    method : str
        Recorded in the result.

    Returns
    -------
    RedundancyResult
    """
    caller = "find_redundancy"
    F0 = np.asarray(features)
    n = F0.shape[0]
    y = None if labels is None else np.asarray(labels, dtype=np.int64)
    ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    if len(ids) != n:
        raise InvalidParameterError(
            f"The 'ids' parameter of {caller} must have one id per image ({n}). "
            f"Got {len(ids)} instead."
        )
    if classes is None:
        classes = [str(c) for c in range((int(y.max()) + 1) if y is not None and n else 0)]
    check_choice(scope, "scope", caller, ("all", "class"))
    if scope == "class" and y is None:
        raise InvalidParameterError(
            "The 'scope' parameter of find_redundancy can be 'class' only for labelled "
            "data. Got scope='class' without labels; pass labels= or use scope='all'."
        )
    F = prepare_rows(F0, center=center)
    parts = [np.arange(n)] if scope == "all" else [np.flatnonzero(y == c)
                                                  for c in np.unique(y)]
    members: list[np.ndarray] = []
    check_choice(group_linkage, "group_linkage", caller, ("complete", "single"))
    n_pairs = 0
    n_aligned = 0
    n_unrefined = 0
    for part in parts:
        Fp = F[part]
        if n_clusters == "auto":
            pairs, dist = neighbor_pairs(Fp, threshold=threshold,
                                         n_components=n_components, block_size=block_size,
                                         seed=seed)
            if verify == "ssim" and len(pairs):
                from dcsi.similarity.ssim import ssim_pairs

                s = np.asarray(ssim_pairs(images[part], pairs))
                pairs, dist = pairs[s >= verify_threshold], dist[s >= verify_threshold]
            if align:
                if images is None:
                    raise InvalidParameterError(
                        "The 'align' parameter of find_redundancy_features needs the "
                        "images. Got align=True without images=; pass images= or "
                        "align=False."
                    )
                from dcsi.aligned import aligned_pairs

                ap, _ = aligned_pairs(images[part], threshold=align_threshold,
                                      max_shift=max_shift, max_crop=max_crop, seed=seed)
                n_aligned += len(ap)
                if len(ap):
                    pairs = np.unique(np.concatenate([pairs.reshape(-1, 2), ap]), axis=0)
            n_pairs += len(pairs)
            comps = connected_groups(len(part), pairs)
            if group_linkage == "complete":
                score = _link_score(Fp, threshold, images[part] if images is not None
                                    else None, verify, verify_threshold, align,
                                    align_threshold, max_shift, max_crop)
                comps, unrefined = complete_groups(comps, score)
                n_unrefined += unrefined
            members.extend(part[g] for g in comps)
        else:
            if scope == "class" and len(part) < n_clusters:
                continue  # a class smaller than n_clusters has no shared cluster
            comp = _cluster(Fp, n_clusters, clustering, seed)
            members.extend(part[g] for g in _labels_to_groups(comp))
    groups = _make_groups(members, F, ids, y, classes)
    keep, summary = _summarise(groups, n, y, classes)
    summary["n_linked_pairs"] = int(n_pairs)
    if align and n_clusters == "auto":
        summary["n_aligned_pairs"] = int(n_aligned)
    if n_clusters == "auto" and group_linkage == "complete":
        summary["n_unrefined_groups"] = int(n_unrefined)
    if extra_summary:
        summary.update(extra_summary)
    return RedundancyResult(groups=tuple(groups), method=method, params=dict(params or {}),
                            summary=summary, ids=tuple(ids), keep=keep)


def find_redundancy(
    source_or_images: Any,
    labels: Any = None,
    method: str = "wavelet",
    *,
    n_clusters: int | str = "auto",
    tau: float = 1e5,
    threshold: float | None = None,
    verify: str | None = None,
    verify_threshold: float = DEFAULT_VERIFY_THRESHOLD,
    align: bool = True,
    align_threshold: float = DEFAULT_ALIGN_THRESHOLD,
    max_shift: int = DEFAULT_MAX_SHIFT,
    max_crop: int = DEFAULT_MAX_CROP,
    group_linkage: str = "complete",
    scope: str = "all",
    clustering: str = "kmeans",
    wavelet: str = "db1",
    level: int = 1,
    mode: str = "symmetric",
    rank_tol: float = 1e-5,
    size: int | tuple[int, int] | None = None,
    n_components: int | None = 32,
    block_size: int = 1024,
    ids: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    backbone: Any = "efficientnet_lite0",
    feature_kw: dict | None = None,
    seed: int = 0,
) -> RedundancyResult:
    """Find near-duplicate groups: redundant copies and label conflicts.

    Parameters
    ----------
    source_or_images : source, ImageSet, or ndarray of shape (n, h, w[, c]) uint8
        Anything :func:`dcsi.open_source` takes.
    labels : array-like of shape (n,), default=None
        Labels of in-memory images (unlabelled data gives only ``redundant`` groups).
    method : {"wavelet", "ssim", "cnn"}, default="wavelet"
    n_clusters : "auto" or int, default="auto"
        ``"auto"``: threshold + connected components (near-duplicate search);
        an int: k-means/spectral clusters as in the paper (not for ``method="ssim"``).
    tau : float, default=1e5
        Condition-number bound of the rank-revealing QR column selection (wavelet).
    threshold : float, default=None
        Absolute link threshold; ``None`` uses :data:`DEFAULT_THRESHOLDS`
        (wavelet: ``1 - cos <= 0.01``; cnn: cosine distance ``<= 0.05``; ssim:
        SSIM ``>= 0.95``).
    verify : {None, "ssim"}, default=None
        Second, finer check of every linked pair (wavelet/cnn with ``"auto"``).
    verify_threshold : float, default=0.8
        SSIM a verified pair must reach.
    align : bool, default=True
        ``method="wavelet"`` with ``n_clusters="auto"``: also link shifted and
        cropped copies (second stage, :func:`dcsi.aligned.aligned_pairs`): pairs whose
        aligned distance (``1 -`` correlation of the coarse inner windows after the
        best shift or crop-and-resize of either image) is ``<= align_threshold``.
    align_threshold : float, default=0.0005
    max_shift : int, default=1
        Largest shift (pixels, at the analysed size) the second stage tolerates.
    max_crop : int, default=2
        Largest crop (pixels per axis, resized back) it tolerates.
    group_linkage : {"complete", "single"}, default="complete"
        With ``n_clusters="auto"``: ``"complete"`` splits chains so that every two
        members of a group are linked (:func:`complete_groups`; components of more
        than 2,000 images are kept whole and counted in ``n_unrefined_groups``);
        ``"single"``: the connected components of the links.
    scope : {"all", "class"}, default="all"
        Search the whole set (the only way to find conflicts) or each class alone.
    clustering : {"kmeans", "spectral"}, default="kmeans"
        Used when ``n_clusters`` is an int.
    wavelet, level, mode : default "db1", 1, "symmetric"
        Wavelet decomposition (see :mod:`dcsi.similarity.wavelet`).
    rank_tol : float, default=1e-5
        Tolerance of the reported numerical rank.
    size : int or (h, w), default=None
        Size images are brought to (``None``: native or median size); grey levels.
    n_components, block_size
        Candidate search (see :func:`neighbor_pairs`).
    ids, classes : sequence of str, default=None
        For in-memory arrays (default: row numbers; label ids).
    backbone : str or Extractor, default="efficientnet_lite0"
        Backbone of ``method="cnn"``.
    feature_kw : dict, default=None
        Extra keyword arguments of :func:`dcsi.extract_features` (``method="cnn"``).
    seed : int, default=0

    Returns
    -------
    RedundancyResult
        A sequence of :class:`Group`, largest first; ``to_dict()`` is the card's
        ``redundancy`` block.
    """
    caller = "find_redundancy"
    check_choice(method, "method", caller, _METHODS)
    if not (n_clusters == "auto" or (isinstance(n_clusters, (int, np.integer))
                                     and not isinstance(n_clusters, bool))):
        raise InvalidParameterError(
            f"The 'n_clusters' parameter of {caller} must be 'auto' or an int >= 2. "
            f"Got {n_clusters!r} instead."
        )
    if n_clusters != "auto":
        check_int(n_clusters, "n_clusters", caller, min_value=2)
        if method == "ssim":
            raise InvalidParameterError(
                "The 'n_clusters' parameter of find_redundancy must be 'auto' for "
                f"method='ssim'. Got {n_clusters!r} instead."
            )
    tau = check_float(tau, "tau", caller, min_value=1.0, min_inclusive=False)
    check_choice(verify, "verify", caller, (None, "ssim"))
    check_choice(clustering, "clustering", caller, ("kmeans", "spectral"))
    check_choice(scope, "scope", caller, ("all", "class"))
    check_int(block_size, "block_size", caller, min_value=1)
    check_int(seed, "seed", caller, min_value=0)
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS[method]
    if method == "ssim":
        threshold = check_float(threshold, "threshold", caller, min_value=-1.0, max_value=1.0)
    else:
        threshold = check_float(threshold, "threshold", caller, min_value=0.0, max_value=2.0)
    verify_threshold = check_float(verify_threshold, "verify_threshold", caller,
                                   min_value=-1.0, max_value=1.0)
    if not isinstance(align, (bool, np.bool_)):
        raise InvalidParameterError(
            f"The 'align' parameter of {caller} must be True or False. Got {align!r} "
            "instead."
        )
    align_threshold = check_float(align_threshold, "align_threshold", caller,
                                  min_value=0.0, max_value=2.0)
    check_int(max_shift, "max_shift", caller, min_value=0)
    check_int(max_crop, "max_crop", caller, min_value=0)
    align = bool(align) and method == "wavelet" and n_clusters == "auto"

    arr, y, ids, classes, src = _load(source_or_images, labels, ids, classes, size)
    align_skipped = skip_reason(arr.shape[1:3], max_shift, max_crop) if align else None
    if align_skipped:
        align = False
        logger.warning("find_redundancy: %s", align_skipped)
    n = arr.shape[0] if arr is not None else len(src)
    if n == 0:
        raise DataError("find_redundancy got an empty dataset: there is nothing to compare.")
    params: dict[str, Any] = {"method": method, "threshold": threshold,
                              "n_clusters": n_clusters, "scope": scope, "seed": seed}
    if method == "ssim":
        return _ssim_redundancy(arr, y, ids, classes, threshold=threshold, scope=scope,
                                params=params)
    extra: dict[str, Any] = {}
    if method == "wavelet":
        Wsel, cols, sel = _wavelet_select(arr, wavelet=wavelet, level=level, mode=mode,
                                          tau=tau, rank_tol=rank_tol)
        F = _wavelet_rows(Wsel, cols, _n_approx(arr.shape[1:], wavelet, level, mode))
        del Wsel
        params.update({"wavelet": wavelet, "level": level, "mode": mode, "tau": tau,
                       "rank_tol": rank_tol, "distance": "1 - cosine of the selected "
                       "wavelet coefficients, approximation band centred per image"})
        extra["rrqr"] = {**sel.to_dict(), "n_coefficients": int(
            np.prod(_coeff_shape(arr, wavelet, level, mode)))}
        center = "none"
    else:
        from dcsi.features import extract_features

        fs = extract_features(src, backbone=backbone, **(feature_kw or {}))
        F = np.asarray(fs.features)
        params.update({"backbone": getattr(fs, "backbone", str(backbone)),
                       "distance": "cosine distance of dataset-centred CNN features"})
        center = "column"
    if n_clusters == "auto":
        params.update({"n_components": n_components, "group_linkage": group_linkage,
                       "verify": verify, "align": align})
        if align_skipped:
            params["align_skipped"] = align_skipped
        if verify:
            params["verify_threshold"] = verify_threshold
        if align:
            params.update({
                "align_threshold": align_threshold, "max_shift": max_shift,
                "max_crop": max_crop,
                "align_distance": ALIGN_DISTANCE,
            })
    else:
        params["clustering"] = clustering
    return find_redundancy_features(
        F, y, ids=ids, classes=classes, threshold=threshold, n_clusters=n_clusters,
        clustering=clustering, scope=scope, center=center,
        n_components=n_components, block_size=block_size, seed=seed,
        images=arr, verify=verify, verify_threshold=verify_threshold, align=align,
        align_threshold=align_threshold, max_shift=max_shift, max_crop=max_crop,
        group_linkage=group_linkage, method=method,
        params=params, extra_summary=extra,
    )


def _coeff_shape(arr: np.ndarray, wavelet: str, level: int, mode: str) -> tuple[int]:
    from dcsi.similarity.wavelet import n_coefficients

    return (n_coefficients(arr.shape[1:], wavelet=wavelet, level=level, mode=mode),)


def _load(source: Any, labels: Any, ids: Any, classes: Any, size: Any):
    """Images as a uint8 array (grey levels for sources), labels, ids, classes, ImageSet."""
    from dcsi.sources import ImageSet, open_source

    if isinstance(source, np.ndarray) and not isinstance(source, ImageSet):
        if source.dtype != np.uint8 or source.ndim not in (3, 4):
            raise InvalidParameterError(
                "The 'source_or_images' parameter of find_redundancy must be a uint8 "
                f"array (n, h, w[, c]). Got dtype {source.dtype} and shape {source.shape} "
                "instead."
            )
    kw = {}
    if isinstance(source, np.ndarray) and classes is not None:
        kw["classes"] = list(classes)
    src = open_source(source, labels=labels, **kw)
    if isinstance(source, np.ndarray):
        arr = source if source.ndim == 3 or source.shape[-1] != 1 else source[..., 0]
    else:
        arr = src.to_array(size=size, mode="L")
    y = None if src.labels is None else np.asarray(src.labels, dtype=np.int64)
    if ids is None:
        ids = list(src.ids)
    if classes is None:
        classes = list(src.classes)
    return arr, y, [str(i) for i in ids], list(classes), src


def _ssim_redundancy(arr, y, ids, classes, *, threshold, scope, params) -> RedundancyResult:
    try:
        from dcsi.similarity.ssim import ssim_threshold_pairs
    except ImportError as exc:  # pragma: no cover - lands with issue 5
        from dcsi.exceptions import MissingDependencyError

        raise MissingDependencyError(
            f"method='ssim' needs dcsi.similarity.ssim ({exc})."
        ) from None
    n = arr.shape[0]
    parts = [np.arange(n)] if scope == "all" else [np.flatnonzero(y == c) for c in np.unique(y)]
    members: list[np.ndarray] = []
    pair_dist: dict = {}
    for part in parts:
        out = ssim_threshold_pairs(arr[part], threshold)
        pairs, vals = (out if isinstance(out, tuple) else (out, None))
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if vals is None:
            from dcsi.similarity.ssim import ssim_pairs

            vals = ssim_pairs(arr[part], pairs) if len(pairs) else np.empty(0)
        for (a, b), v in zip(part[pairs], np.asarray(vals)):
            pair_dist[(min(a, b), max(a, b))] = 1.0 - float(v)
        members.extend(part[g] for g in connected_groups(len(part), pairs))
    groups = _make_groups(members, None, ids, y, classes, pair_dist)
    keep, summary = _summarise(groups, n, y, classes)
    summary["n_linked_pairs"] = len(pair_dist)
    params["distance"] = "1 - SSIM (skimage settings, grey levels)"
    return RedundancyResult(groups=tuple(groups), method="ssim", params=params,
                            summary=summary, ids=tuple(ids), keep=keep)


# --------------------------------------------------------------------------- evaluation
def _pairs_of(found: Any, name: str) -> set[tuple[str, str]]:
    """All unordered id pairs implied by groups or a duplicate map."""
    pairs: set[tuple[str, str]] = set()
    if isinstance(found, Mapping):
        for k, vs in found.items():
            if isinstance(vs, (str, bytes)):
                raise InvalidParameterError(
                    f"The {name!r} parameter of evaluate_duplicates must map each id to a "
                    f"list of duplicate ids. Got {vs!r} for {k!r} instead."
                )
            for v in vs:
                if isinstance(v, (tuple, list)):  # imagededup scores: (id, score)
                    v = v[0]
                a, b = str(k), str(v)
                if a != b:
                    pairs.add((min(a, b), max(a, b)))
        return pairs
    if isinstance(found, RedundancyResult) or isinstance(found, (list, tuple)):
        for g in found:
            members = g.members if isinstance(g, Group) else (
                g["members"] if isinstance(g, Mapping) else g)
            if isinstance(members, (str, bytes)):
                raise InvalidParameterError(
                    f"The {name!r} parameter of evaluate_duplicates must be groups of ids "
                    f"(lists), a RedundancyResult or a {{id: [ids]}} map. Got a group "
                    f"{members!r} instead."
                )
            m = sorted({str(x) for x in members})
            for i in range(len(m)):
                for j in range(i + 1, len(m)):
                    pairs.add((m[i], m[j]))
        return pairs
    raise InvalidParameterError(
        f"The {name!r} parameter of evaluate_duplicates must be a RedundancyResult, a list "
        f"of groups or a {{id: [duplicate ids]}} map. Got {type(found).__name__} instead."
    )


def evaluate_duplicates(found: Any, truth: Any) -> dict:
    """Pairwise precision, recall and F1 of found duplicates against a ground truth.

    Parameters
    ----------
    found : RedundancyResult, list of groups (lists of ids or Group), or mapping
        ``{id: [duplicate ids]}`` (imagededup's ``find_duplicates`` output; ``(id,
        score)`` tuples are accepted).
    truth : list of groups or mapping ``{id: [duplicate ids]}``
        Ground truth in the same shapes.  Every pair inside a group counts.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (``None`` when undefined: nothing found /
        nothing to find), ``n_found_pairs``, ``n_true_pairs``, ``n_correct_pairs``.

    Examples
    --------
    >>> evaluate_duplicates([["a", "b"]], {"a": ["b"], "b": ["a"], "c": []})["f1"]
    1.0
    """
    f = _pairs_of(found, "found")
    t = _pairs_of(truth, "truth")
    tp = len(f & t)
    precision = tp / len(f) if f else None
    recall = tp / len(t) if t else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0
          else (0.0 if precision is not None and recall is not None else None))
    return {"precision": precision, "recall": recall, "f1": f1,
            "n_found_pairs": len(f), "n_true_pairs": len(t), "n_correct_pairs": tp}
