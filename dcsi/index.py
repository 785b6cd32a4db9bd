"""The Dataset Class Similarity Index (DCSI) and the peers it competes with.

Parikh & Aggarwal (2020) name a "Dataset Class Similarity Index" but never define it.
dcsi defines it from the cnn_cosine class matrix ``S`` (mean pairwise cosine similarity,
diagonal = within-class mean without self-pairs) and the class counts alone:

1. Class centroids of the unit-normalised features, ``mu_c = s_c / n_c``, are known
   exactly through ``S``: ``mu_a . mu_b = S[a, b]`` (a != b) and
   ``|mu_c|^2 = (S[c, c] (n_c - 1) + 1) / n_c`` (self-pairs added back).
2. Within-class spread ``v_c = 1 - |mu_c|^2`` = mean squared distance of a unit feature
   of class c to its centroid.
3. For each pair of classes, the squared centroid distance
   ``D2[a, b] = |mu_a|^2 + |mu_b|^2 - 2 S[a, b]`` and the separation ratio
   ``F[a, b] = D2[a, b] / (v_a + v_b)`` (a Fisher-type ratio: between-class over
   within-class spread).
4. Pair overlap ``o[a, b] = exp(-F[a, b] / t)`` in (0, 1] (``t`` = ``temperature``),
   1 when the two classes coincide, 0 when they are infinitely far apart.
5. Class confusability ``c_a = 1 - prod_{b != a} (1 - o[a, b])`` -- the chance that at
   least one other class overlaps class a, were the overlaps independent.
6. ``DCSI = mean_a c_a``.

The result is in [0, 1], higher when classes are more alike (harder), invariant to the
order of the classes (it is a symmetric function of the pairs), and defined for K >= 2.
For K = 2 it is the overlap of the one pair; with more classes it grows as each class
gains confusable neighbours, as a classifier's error does.  What else was tried and how
well each variant tracked a classifier's error is in the README (docs/readme).

Peers, computed on the same features by :func:`index_report`:

- the Cumulative Spectral Gradient (Branchaud-Charron, Achkar & Jodoin, CVPR 2019):
  k-NN estimates of ``P(class j | x)`` for M samples per class, class-overlap matrix,
  Bray-Curtis similarity ``W``, Laplacian spectrum, CSG = sum of the cumulative maximum
  of the normalised eigen-gaps ``(lambda_{i+1} - lambda_i) / (K - i)``;
- the mean cosine silhouette over class labels, exact through the class sums (equal to
  ``sklearn.metrics.silhouette_score(features, labels, metric="cosine")``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dcsi._validation import check_array, check_choice, check_float, check_int, check_labels
from dcsi.exceptions import InvalidParameterError

__all__ = [
    "IndexResult",
    "compute_index",
    "index_components",
    "index_report",
    "cumulative_spectral_gradient",
    "cosine_silhouette_samples",
    "cosine_silhouette",
    "DEFAULT_TEMPERATURE",
    "DEFINITION",
]

logger = logging.getLogger(__name__)

#: temperature ``t`` of the pair overlap ``exp(-F / t)``
DEFAULT_TEMPERATURE = 0.1

DEFINITION = (
    "DCSI = mean over classes a of [1 - prod over classes b != a of (1 - o_ab)], "
    "with pair overlap o_ab = exp(-F_ab / t), separation F_ab = |mu_a - mu_b|^2 / "
    "(v_a + v_b), mu_c the centroid of the unit-normalised CNN features of class c "
    "(|mu_c|^2 = (S_cc (n_c - 1) + 1) / n_c, mu_a . mu_b = S_ab from the cnn_cosine "
    "matrix S) and v_c = 1 - |mu_c|^2 the within-class spread; t = {t:g}. "
    "In [0, 1]; higher = classes more alike = harder to tell apart."
)


@dataclass(frozen=True)
class IndexResult:
    """The DCSI, its components and its peers.

    Attributes
    ----------
    value : float
        The DCSI in [0, 1].
    temperature : float
    classes : list of str or None
    separation : ndarray of shape (K, K)
        ``F[a, b]``; ``inf`` on the diagonal.
    overlap : ndarray of shape (K, K)
        ``o[a, b]``; 0 on the diagonal.
    confusability : ndarray of shape (K,)
        ``c_a``.
    spread : ndarray of shape (K,)
        ``v_c``.
    csg : float or None
        Cumulative Spectral Gradient (None when features were not given).
    silhouette : float or None
        Mean cosine silhouette over class labels (None without features).
    peer_params : dict
    """

    value: float
    temperature: float
    separation: np.ndarray
    overlap: np.ndarray
    confusability: np.ndarray
    spread: np.ndarray
    classes: list[str] | None = None
    csg: float | None = None
    silhouette: float | None = None
    peer_params: dict[str, Any] = field(default_factory=dict)

    @property
    def hardest_pair(self) -> tuple[int, int]:
        """Class ids ``(a, b)``, ``a < b``, of the pair with the largest overlap."""
        o = np.triu(self.overlap, k=1)
        a, b = np.unravel_index(int(np.argmax(o)), o.shape)
        return (int(min(a, b)), int(max(a, b)))

    def to_dict(self) -> dict[str, Any]:
        """The card's ``index`` block (JSON-ready plain Python, no NaN)."""
        a, b = self.hardest_pair
        names = self.classes
        k = self.overlap.shape[0]
        iu = np.triu_indices(k, 1)
        return {
            "value": _f(self.value),
            "definition": DEFINITION.format(t=self.temperature),
            "components": {
                "n_classes": int(k),
                "temperature": _f(self.temperature),
                "confusability": [_f(v) for v in self.confusability],
                "spread": [_f(v) for v in self.spread],
                "hardest_pair": [names[a], names[b]] if names else [a, b],
                "hardest_pair_overlap": _f(self.overlap[a, b]),
                "hardest_pair_separation": _f(self.separation[a, b]),
                "mean_pair_overlap": _f(float(np.mean(self.overlap[iu]))),
                "overlap": [[_f(v) for v in row] for row in self.overlap],
            },
            "peers": {
                "csg": _f(self.csg),
                "silhouette": _f(self.silhouette),
                "params": dict(self.peer_params),
            },
        }


def _f(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def square_class_matrix(S: Any, caller: str) -> np.ndarray:
    """``S`` as a float64 K x K array; NaN allowed (the diagonal of tiny classes)."""
    try:
        m = np.asarray(S, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"The 'S' parameter of {caller} must be a K x K array of numbers: {exc}"
        ) from None
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise InvalidParameterError(
            f"The 'S' parameter of {caller} must be a square K x K class matrix. "
            f"Got shape {m.shape} instead."
        )
    return m


def _check_S_counts(S: Any, class_counts: Any, caller: str) -> tuple[np.ndarray, np.ndarray]:
    m = square_class_matrix(S, caller)
    n = np.asarray(class_counts)
    if n.ndim != 1 or n.shape[0] != m.shape[0]:
        raise InvalidParameterError(
            f"The 'class_counts' parameter of {caller} must be a 1-D array with one "
            f"count per class ({m.shape[0]}). Got shape {n.shape} instead."
        )
    if n.size and (n.dtype.kind not in "iuf" or np.any(n < 0) or np.any(n != np.round(n))):
        raise InvalidParameterError(
            f"The 'class_counts' parameter of {caller} must hold non-negative integer "
            f"counts. Got {n.tolist()!r} instead."
        )
    keep = n > 0
    if int(keep.sum()) < 2:
        raise InvalidParameterError(
            f"{caller} needs at least 2 classes with images (K >= 2); got "
            f"{int(keep.sum())}: a similarity index compares classes."
        )
    m = m[np.ix_(keep, keep)]
    n = n[keep].astype(np.float64)
    off = ~np.eye(m.shape[0], dtype=bool)
    if not np.all(np.isfinite(m[off])):
        raise InvalidParameterError(
            f"The 'S' parameter of {caller} has NaN off-diagonal entries for classes "
            "with images; pass the cnn_cosine matrix of dcsi.class_similarity."
        )
    return m, n


def _centroid_terms(S: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squared centroid norms, spreads and squared centroid distances."""
    diag = np.diag(S).copy()
    # a class with one image: its centroid is the unit vector itself
    diag = np.where(n >= 2, diag, 0.0)
    sq = (diag * (n - 1.0) + 1.0) / n
    sq = np.clip(sq, 0.0, 1.0)
    spread = 1.0 - sq
    d2 = sq[:, None] + sq[None, :] - 2.0 * S
    d2 = np.maximum(d2, 0.0)
    np.fill_diagonal(d2, 0.0)
    return sq, spread, d2


def index_components(
    S: np.ndarray, class_counts: np.ndarray, *, temperature: float = DEFAULT_TEMPERATURE
) -> dict[str, np.ndarray | float]:
    """The DCSI and its components.

    Parameters
    ----------
    S : ndarray of shape (K, K)
        cnn_cosine class matrix from :func:`dcsi.class_similarity` (diagonal = within-class
        mean without self-pairs).
    class_counts : ndarray of shape (K,)
        Images per class.  Classes with no image are left out.
    temperature : float, default=0.1
        ``t`` of the pair overlap ``exp(-F / t)``.

    Returns
    -------
    dict
        ``value`` (float), ``separation`` (K', K'), ``overlap`` (K', K'),
        ``confusability`` (K',), ``spread`` (K',), ``kept`` (K,) bool mask of the
        classes with images (K' of them).
    """
    caller = "compute_index"
    t = check_float(temperature, "temperature", caller, min_value=0.0, min_inclusive=False)
    m, n = _check_S_counts(S, class_counts, caller)
    _, spread, d2 = _centroid_terms(m, n)
    denom = spread[:, None] + spread[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        sep = np.where(denom > 0, d2 / denom, np.where(d2 > 0, np.inf, 0.0))
    np.fill_diagonal(sep, np.inf)
    overlap = np.exp(-sep / t)
    np.fill_diagonal(overlap, 0.0)
    # 1 - prod(1 - o) through logs, stable when overlaps are tiny
    log_keep = np.log1p(-np.minimum(overlap, 1.0 - 1e-300)).sum(axis=1)
    conf = -np.expm1(log_keep)
    value = float(np.clip(np.mean(conf), 0.0, 1.0))
    kept = np.asarray(class_counts) > 0
    return {"value": value, "separation": sep, "overlap": overlap,
            "confusability": conf, "spread": spread, "kept": kept}


def compute_index(
    S: np.ndarray, class_counts: np.ndarray, *, temperature: float = DEFAULT_TEMPERATURE
) -> float:
    """The Dataset Class Similarity Index (DCSI) of a class matrix.

    ``DCSI = mean_a [1 - prod_{b != a} (1 - exp(-F_ab / t))]`` with
    ``F_ab = |mu_a - mu_b|^2 / (v_a + v_b)`` (see the module docstring), all exact
    from the cnn_cosine matrix and the class counts.

    Parameters
    ----------
    S : ndarray of shape (K, K)
        Mean pairwise cosine similarity between classes, diagonal = within-class mean
        without self-pairs (``dcsi.class_similarity(features, labels)``).
    class_counts : array-like of shape (K,)
        Images per class (classes with no image are left out).
    temperature : float, default=0.1

    Returns
    -------
    float
        In [0, 1]; higher = classes more alike = harder.  Invariant to class order.

    Raises
    ------
    InvalidParameterError
        Fewer than two classes with images, a non-square ``S`` or bad counts.

    Examples
    --------
    >>> import numpy as np
    >>> S = np.array([[0.9, 0.88], [0.88, 0.9]])   # two close classes
    >>> round(compute_index(S, [50, 50]), 4)
    0.1059
    """
    return float(index_components(S, class_counts, temperature=temperature)["value"])


# --------------------------------------------------------------------------- peers


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    nrm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(nrm > 0, nrm, 1.0)


def cosine_silhouette_samples(
    features: np.ndarray, labels: np.ndarray, *, block_size: int = 4096
) -> np.ndarray:
    """Cosine silhouette of every image over its class label, exact via class sums.

    With unit features ``u_i`` and class sums ``s_c``: ``a(i) = 1 - (u_i . s_a - 1) /
    (n_a - 1)`` (own class, self excluded), ``b(i) = min_{c != a} 1 - u_i . s_c / n_c``,
    ``s(i) = (b - a) / max(a, b)``; 0 for a class of one image (scikit-learn's rule).
    O(N K d) time, ``block_size`` x K memory.

    Parameters
    ----------
    features : ndarray of shape (n_images, dim)
    labels : ndarray of shape (n_images,), int
    block_size : int, default=4096

    Returns
    -------
    ndarray of shape (n_images,), float64
        Equal to ``sklearn.metrics.silhouette_samples(features, labels, metric="cosine")``.
    """
    caller = "cosine_silhouette_samples"
    x = check_array(features, "features", caller, ndim=2)
    y = check_labels(labels, x.shape[0], caller)
    bs = check_int(block_size, "block_size", caller, min_value=1)
    present, y = np.unique(y, return_inverse=True)
    if present.size < 2:
        raise InvalidParameterError(
            f"{caller} needs at least 2 classes; got {present.size}."
        )
    u = _unit(x)
    k = present.size
    sums = np.zeros((k, u.shape[1]))
    np.add.at(sums, y, u)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    out = np.empty(x.shape[0])
    nz = np.linalg.norm(x, axis=1) > 0  # a zero vector has cosine 0 with itself too
    for i0 in range(0, x.shape[0], bs):
        sl = slice(i0, i0 + bs)
        dots = u[sl] @ sums.T  # (b, K)
        yy = y[sl]
        rows = np.arange(dots.shape[0])
        own_n = counts[yy]
        self_dot = nz[sl].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = 1.0 - (dots[rows, yy] - self_dot) / (own_n - 1.0)
        other = 1.0 - dots / counts[None, :]
        other[rows, yy] = np.inf
        b = other.min(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (b - a) / np.maximum(a, b)
        s = np.where(own_n > 1, np.nan_to_num(s, nan=0.0), 0.0)
        out[sl] = s
    return out


def cosine_silhouette(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean cosine silhouette over class labels (see :func:`cosine_silhouette_samples`)."""
    return float(np.mean(cosine_silhouette_samples(features, labels)))


def cumulative_spectral_gradient(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    n_samples: int = 250,
    n_neighbors: int = 10,
    laplacian: str = "unnormalized",
    seed: int = 0,
    return_details: bool = False,
) -> float | tuple[float, dict[str, np.ndarray]]:
    """Cumulative Spectral Gradient (Branchaud-Charron, Achkar & Jodoin, CVPR 2019).

    1. Draw up to ``n_samples`` images per class (seeded).
    2. For every drawn image, the fraction of its ``n_neighbors`` nearest drawn images
       (cosine distance, itself excluded) in each class estimates ``P(class j | x)``;
       averaging over the drawn images of class i gives the class-overlap matrix
       ``Q[i, j]``.
    3. ``W[i, j] = 1 - BrayCurtis(Q[i], Q[j])``, zero diagonal.
    4. Laplacian of ``W`` (symmetric normalised by default, or ``D - W``), eigenvalues
       ``lambda_0 <= ... <= lambda_{K-1}``.
    5. ``CSG = sum_i max_{j <= i} (lambda_{j+1} - lambda_j) / (K - j - 1)`` over
       ``i = 0..K-2`` (0-based: the gap after ``lambda_j`` divided by the number of
       eigenvalues left after it).

    Parameters
    ----------
    features : ndarray of shape (n_images, dim)
    labels : ndarray of shape (n_images,), int
    n_samples : int, default=250
        Images drawn per class (all when the class has fewer).
    n_neighbors : int, default=10
    laplacian : {"unnormalized", "normalized"}, default="unnormalized"
    seed : int, default=0
    return_details : bool, default=False
        Also return ``{"Q", "W", "eigenvalues"}``.

    Returns
    -------
    float, or (float, dict)
        CSG >= 0; higher = classes overlap more = harder.
    """
    from scipy.sparse.csgraph import laplacian as csgraph_laplacian
    from scipy.spatial.distance import braycurtis
    from sklearn.neighbors import NearestNeighbors

    caller = "cumulative_spectral_gradient"
    x = check_array(features, "features", caller, ndim=2)
    y = check_labels(labels, x.shape[0], caller)
    m = check_int(n_samples, "n_samples", caller, min_value=1)
    kn = check_int(n_neighbors, "n_neighbors", caller, min_value=1)
    check_choice(laplacian, "laplacian", caller, ["normalized", "unnormalized"])
    present, y = np.unique(y, return_inverse=True)
    k = present.size
    if k < 2:
        raise InvalidParameterError(f"{caller} needs at least 2 classes; got {k}.")
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(k):
        members = np.flatnonzero(y == c)
        picks.append(rng.permutation(members)[:m] if members.size > m else members)
    idx = np.concatenate(picks)
    xs, ys = _unit(x[idx]), y[idx]
    kk = min(kn, xs.shape[0] - 1)
    if kk < 1:
        raise InvalidParameterError(f"{caller} needs at least 2 images.")
    nn = NearestNeighbors(n_neighbors=kk + 1).fit(xs)
    _, nbr = nn.kneighbors(xs)
    # drop the point itself (the first neighbour unless there are exact duplicates)
    own = np.arange(xs.shape[0])
    nbr_wo = np.empty((xs.shape[0], kk), dtype=np.int64)
    for r in range(xs.shape[0]):
        row = nbr[r][nbr[r] != own[r]][:kk]
        nbr_wo[r] = row
    prob = np.zeros((xs.shape[0], k))
    np.add.at(prob, (np.repeat(own, kk), ys[nbr_wo].ravel()), 1.0 / kk)
    Q = np.zeros((k, k))
    np.add.at(Q, ys, prob)
    Q /= np.bincount(ys, minlength=k)[:, None]
    W = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            W[i, j] = W[j, i] = 1.0 - braycurtis(Q[i], Q[j])
    L = csgraph_laplacian(W, normed=(laplacian == "normalized"))
    lam = np.sort(np.linalg.eigvalsh(L))
    gaps = np.diff(lam) / (k - np.arange(1, k))
    csg = float(np.sum(np.maximum.accumulate(gaps)))
    if return_details:
        return csg, {"Q": Q, "W": W, "eigenvalues": lam}
    return csg


def index_report(
    S: np.ndarray,
    class_counts: np.ndarray,
    *,
    features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    classes: list[str] | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    csg_samples: int = 250,
    csg_neighbors: int = 10,
    seed: int = 0,
) -> IndexResult:
    """The DCSI with its components and, given the features, its peers.

    Parameters
    ----------
    S : ndarray of shape (K, K)
        cnn_cosine class matrix.
    class_counts : array-like of shape (K,)
    features : ndarray of shape (n_images, dim), default=None
        The features behind ``S``; needed for the peers (CSG, silhouette).
    labels : ndarray of shape (n_images,), int, default=None
    classes : list of str, default=None
        Class names in label order (for the hardest pair in ``to_dict()``).
    temperature : float, default=0.1
    csg_samples, csg_neighbors : int, default=250, 10
        ``n_samples`` / ``n_neighbors`` of :func:`cumulative_spectral_gradient`.
    seed : int, default=0

    Returns
    -------
    IndexResult
        ``to_dict()`` is the card's ``index`` block.
    """
    comp = index_components(S, class_counts, temperature=temperature)
    kept = comp["kept"]
    names = None
    if classes is not None:
        if len(classes) != kept.shape[0]:
            raise InvalidParameterError(
                f"The 'classes' parameter of index_report must name the {kept.shape[0]} "
                f"classes of S. Got {len(classes)} names instead."
            )
        names = [c for c, k in zip(classes, kept) if k]
    csg = sil = None
    params: dict[str, Any] = {}
    if (features is None) != (labels is None):
        raise InvalidParameterError(
            "index_report needs both 'features' and 'labels' (or neither) to compute "
            "the peers."
        )
    if features is not None:
        csg = cumulative_spectral_gradient(features, labels, n_samples=csg_samples,
                                           n_neighbors=csg_neighbors, seed=seed)
        sil = cosine_silhouette(features, labels)
        params = {"csg": {"n_samples": csg_samples, "n_neighbors": csg_neighbors,
                          "laplacian": "unnormalized", "distance": "cosine", "seed": seed},
                  "silhouette": {"metric": "cosine", "labels": "classes"}}
    return IndexResult(
        value=float(comp["value"]), temperature=float(temperature),
        separation=comp["separation"], overlap=comp["overlap"],
        confusability=comp["confusability"], spread=comp["spread"], classes=names,
        csg=csg, silhouette=sil, peer_params=params,
    )
