"""Spectral analysis of a similarity matrix: graph, Laplacian, eigen-gaps, clusters.

Yousefzadeh's Algorithm 2 (lines 8-10): build the graph Laplacian of the image
similarity matrix (e.g. all-pairs SSIM), read the number of clusters ``nc`` off the
eigen-gaps of its spectrum, then run spectral clustering with ``nc`` clusters.  The same
functions work on any symmetric, non-negative similarity matrix, dense or
``scipy.sparse`` -- an image-level SSIM matrix as well as a K x K class-similarity matrix
(:func:`eigengap_count`).

Choices, and why:

- **Sparsified graph.** A dense similarity matrix is a complete graph whose spectrum
  says little about clusters; the graph keeps each image's ``k`` most similar images
  (``graph="knn"``, symmetrised by union) or the pairs above a threshold
  (``graph="threshold"``), as in von Luxburg (2007).  ``graph="full"`` keeps every
  positive entry (for small matrices such as class matrices).  Negative similarities
  (SSIM can be < 0) are dropped: edge weights must be non-negative.
- **Laplacians.** ``"unnormalized"`` ``L = D - A``, ``"symmetric"``
  ``L = I - D^-1/2 A D^-1/2`` (default) and ``"random_walk"`` ``L = I - D^-1 A`` (same
  eigenvalues as ``"symmetric"``).  An isolated vertex (degree 0) is its own connected
  component; its row of the normalised Laplacians is set to 0 so that, for every kind,
  the multiplicity of the eigenvalue 0 equals the number of connected components.
- **Eigen-gap rule.** ``rule="first_gap"`` (default) returns the position of the first
  gap ``lambda_{i+1} - lambda_i > gamma`` in the ascending spectrum: the eigengap
  heuristic of von Luxburg (2007) -- ``nc`` eigenvalues close to 0, then a jump.
  ``rule="count_gaps"`` counts every gap ``> gamma``, the literal reading of the paper's
  "count the eigen-gaps larger than gamma".  We default to the first because counting
  gaps anywhere in the spectrum mixes gaps at the top of the spectrum (not related to
  clusters) with the one that separates the cluster eigenvalues, and because the
  normalised Laplacians have eigenvalues in [0, 2], so at most ``2 / gamma`` gaps can
  exceed gamma: the paper's "454 clusters from gaps > 0.4" cannot come from counting
  gaps of a normalised Laplacian; the first-gap rule on a sparsified graph gives counts
  of that size (each near-duplicate group and each isolated image is a component).
  For ``"unnormalized"`` the eigenvalues scale with the degrees, so the rule is applied
  to the eigenvalues divided by the mean degree (``gamma`` stays comparable).
  ``gamma`` defaults to the paper's 0.4.  When no gap exceeds gamma, ``nc`` is the
  number of zero eigenvalues (the connected components).
- **Eigenvalues.** Dense ``numpy.linalg.eigh`` up to ``dense_max`` vertices; beyond it
  the smallest ``n_eigenvalues`` by Lanczos (``scipy.sparse.linalg.eigsh``) on the
  shifted matrix ``c I - L``, whose largest eigenvalues are the smallest of ``L``.
- **Most isolated images**: the smallest largest-similarity to any other image
  (nearest-neighbour similarity), computed on the similarity matrix itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from dcsi._json import to_jsonable
from dcsi._validation import check_choice, check_float, check_int
from dcsi.exceptions import InvalidParameterError

__all__ = [
    "DEFAULT_GAMMA",
    "GAP_RULES",
    "LAPLACIANS",
    "SpectralResult",
    "count_from_eigenvalues",
    "eigengap_count",
    "graph_laplacian",
    "isolation_scores",
    "laplacian_spectrum",
    "similarity_graph",
    "spectral_analysis",
    "spectral_clustering",
]

logger = logging.getLogger(__name__)

LAPLACIANS = ("unnormalized", "symmetric", "random_walk")
GAP_RULES = ("first_gap", "count_gaps")
GRAPHS = ("knn", "threshold", "full")
#: default eigen-gap threshold: the paper's 0.4 (normalised Laplacians: eigenvalues in [0, 2])
DEFAULT_GAMMA = 0.4
_ZERO_TOL = 1e-9
#: vertices up to which the spectrum is computed densely
DENSE_MAX = 2000


def _as_similarity(S: Any, caller: str) -> Any:
    """Validate a square similarity matrix (dense ndarray or scipy.sparse)."""
    import scipy.sparse as sp

    if sp.issparse(S):
        S = sp.csr_matrix(S, dtype=np.float64)
        data = S.data
    else:
        S = np.asarray(S, dtype=np.float64)
        data = S
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise InvalidParameterError(
            f"The 'similarity' parameter of {caller} must be a square (n, n) matrix. "
            f"Got shape {S.shape} instead."
        )
    if S.shape[0] == 0:
        raise InvalidParameterError(
            f"The 'similarity' parameter of {caller} must not be empty. Got shape "
            f"{S.shape} instead."
        )
    if not np.all(np.isfinite(data)):
        raise InvalidParameterError(
            f"The 'similarity' parameter of {caller} contains NaN or infinite values; "
            "replace undefined entries (e.g. with 0) first."
        )
    asym = abs(S - S.T)
    if asym.max() > 1e-8 * max(1.0, float(abs(data).max())):
        raise InvalidParameterError(
            f"The 'similarity' parameter of {caller} must be symmetric; "
            "symmetrise it first, e.g. (S + S.T) / 2."
        )
    return S


def similarity_graph(
    similarity: Any,
    *,
    graph: str = "knn",
    k: int = 10,
    threshold: float | None = None,
) -> Any:
    """Sparsified, symmetric, non-negative affinity graph of a similarity matrix.

    Parameters
    ----------
    similarity : ndarray or scipy.sparse matrix of shape (n, n)
        Symmetric similarities (e.g. SSIM); larger means more similar.
    graph : {"knn", "threshold", "full"}, default="knn"
        ``"knn"``: keep each vertex's ``k`` largest off-diagonal similarities, and an
        edge when either endpoint kept it (union); ``"threshold"``: keep similarities
        ``>= threshold``; ``"full"``: keep every off-diagonal entry.
    k : int, default=10
        Neighbours per vertex for ``"knn"`` (capped at n - 1).
    threshold : float, default=None
        Required for ``"threshold"``.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n, n)
        Zero diagonal, entries > 0 only (negative similarities are dropped).
    """
    import scipy.sparse as sp

    caller = "similarity_graph"
    S = _as_similarity(similarity, caller)
    graph = check_choice(graph, "graph", caller, GRAPHS)
    n = S.shape[0]
    if graph == "knn":
        k = check_int(k, "k", caller, min_value=1)
        k = min(k, n - 1)
        if k == 0:
            return sp.csr_matrix((n, n))
        if sp.issparse(S):
            A = S.tolil()
            A.setdiag(0)
            A = A.tocsr()
            A.eliminate_zeros()
            rows, cols, vals = [], [], []
            for i in range(n):
                lo, hi = A.indptr[i], A.indptr[i + 1]
                d, j = A.data[lo:hi], A.indices[lo:hi]
                if d.size > k:
                    keep = np.argpartition(-d, k - 1)[:k]
                    d, j = d[keep], j[keep]
                rows.append(np.full(d.size, i))
                cols.append(j)
                vals.append(d)
            r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        else:
            M = S.copy()
            np.fill_diagonal(M, -np.inf)
            c = np.argpartition(-M, k - 1, axis=1)[:, :k]
            r = np.repeat(np.arange(n), k)
            c = c.ravel()
            v = M[r, c]
        A = sp.csr_matrix((v, (r, c)), shape=(n, n))
        A = A.maximum(A.T)
    elif graph == "threshold":
        if threshold is None:
            raise InvalidParameterError(
                "The 'threshold' parameter of similarity_graph must be a float when "
                "graph='threshold'. Got None instead."
            )
        threshold = check_float(threshold, "threshold", caller)
        if sp.issparse(S):
            A = S.copy()
            A.data[A.data < threshold] = 0.0
        else:
            A = sp.csr_matrix(np.where(threshold <= S, S, 0.0))
    else:
        A = sp.csr_matrix(S)
    A = A.tolil()
    A.setdiag(0)
    A = A.tocsr()
    A.data[A.data < 0] = 0.0
    A.eliminate_zeros()
    return A


def graph_laplacian(affinity: Any, *, kind: str = "symmetric", self_loops: bool = False) -> Any:
    """Graph Laplacian of a non-negative symmetric affinity matrix (the one builder).

    Every Laplacian in dcsi is built here: the image graphs of
    :func:`spectral_analysis`, the class graph whose eigen-gaps pick the number of
    class clusters (:func:`dcsi.clusters.cluster_classes`, stored in the card as
    ``class_clusters.eigenvalues``, which the report plots).

    Parameters
    ----------
    affinity : ndarray or scipy.sparse matrix of shape (n, n)
        Edge weights.  A dense ndarray gives a dense result computed with numpy, a
        sparse matrix a sparse one.
    kind : {"unnormalized", "symmetric", "random_walk"}, default="symmetric"
        ``D - A``, ``I - D^-1/2 A D^-1/2`` or ``I - D^-1 A``.  Rows of isolated
        vertices are 0 (each is a component with eigenvalue 0).
    self_loops : bool, default=False
        Keep the diagonal of ``affinity`` as self-loop weights (they enter the
        degrees and ``A``); by default the diagonal is ignored.

    Returns
    -------
    ndarray or scipy.sparse.csr_matrix of shape (n, n)
        Same kind of matrix as ``affinity``.
    """
    import scipy.sparse as sp

    caller = "graph_laplacian"
    kind = check_choice(kind, "kind", caller, LAPLACIANS)
    if not sp.issparse(affinity):
        A = np.array(affinity, dtype=np.float64)  # a copy
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise InvalidParameterError(
                f"The 'affinity' parameter of {caller} must be a square (n, n) matrix. "
                f"Got shape {A.shape} instead."
            )
        if not self_loops:
            np.fill_diagonal(A, 0.0)
        if A.size and A.min() < 0:
            raise InvalidParameterError(
                f"The 'affinity' parameter of {caller} must have non-negative weights. "
                f"Got a minimum of {A.min():.4g}; build it with similarity_graph()."
            )
        deg = A.sum(axis=1)
        if kind == "unnormalized":
            return np.diag(deg) - A
        has = deg > 0
        safe = np.where(has, deg, 1.0)
        if kind == "symmetric":
            inv = np.where(has, 1.0 / np.sqrt(safe), 0.0)
            return np.diag(has.astype(np.float64)) - inv[:, None] * A * inv[None, :]
        inv = np.where(has, 1.0 / safe, 0.0)
        return np.diag(has.astype(np.float64)) - inv[:, None] * A
    A = sp.csr_matrix(affinity, dtype=np.float64).tolil()
    if not self_loops:
        A.setdiag(0)
    A = A.tocsr()
    if A.nnz and A.data.min() < 0:
        raise InvalidParameterError(
            f"The 'affinity' parameter of {caller} must have non-negative weights. "
            f"Got a minimum of {A.data.min():.4g}; build it with similarity_graph()."
        )
    deg = np.asarray(A.sum(axis=1)).ravel()
    n = A.shape[0]
    if kind == "unnormalized":
        return (sp.diags(deg) - A).tocsr()
    has = deg > 0
    eye = sp.diags(has.astype(float))
    if kind == "symmetric":
        inv = np.zeros(n)
        inv[has] = 1.0 / np.sqrt(deg[has])
        Dm = sp.diags(inv)
        return (eye - Dm @ A @ Dm).tocsr()
    inv = np.zeros(n)
    inv[has] = 1.0 / deg[has]
    return (eye - sp.diags(inv) @ A).tocsr()


def _sym_for_spectrum(A: Any, kind: str, self_loops: bool = False) -> tuple[Any, float]:
    """A symmetric matrix with the Laplacian's eigenvalues, and the gap scale."""
    import scipy.sparse as sp

    if kind == "random_walk":
        kind = "symmetric"  # similar matrices: identical eigenvalues
    L = graph_laplacian(A, kind=kind, self_loops=self_loops)
    scale = 1.0
    if kind == "unnormalized":
        deg = np.asarray(sp.csr_matrix(A).sum(axis=1)).ravel()
        mean_deg = float(deg.mean()) if deg.size else 0.0
        scale = mean_deg if mean_deg > 0 else 1.0
    return L, scale


@overload
def laplacian_spectrum(
    affinity: Any,
    *,
    kind: str = ...,
    n_eigenvalues: int | None = ...,
    method: str = ...,
    return_vectors: Literal[False] = ...,
    self_loops: bool = ...,
    seed: int = ...,
) -> np.ndarray: ...


@overload
def laplacian_spectrum(
    affinity: Any,
    *,
    kind: str = ...,
    n_eigenvalues: int | None = ...,
    method: str = ...,
    return_vectors: Literal[True],
    self_loops: bool = ...,
    seed: int = ...,
) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def laplacian_spectrum(
    affinity: Any,
    *,
    kind: str = ...,
    n_eigenvalues: int | None = ...,
    method: str = ...,
    return_vectors: bool,
    self_loops: bool = ...,
    seed: int = ...,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]: ...


def laplacian_spectrum(
    affinity: Any,
    *,
    kind: str = "symmetric",
    n_eigenvalues: int | None = None,
    method: str = "auto",
    return_vectors: bool = False,
    self_loops: bool = False,
    seed: int = 0,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Smallest eigenvalues of the graph Laplacian, ascending.

    The Laplacian is built by :func:`graph_laplacian`; a dense ``affinity`` whose
    spectrum is computed densely stays dense throughout (numpy), a sparse one is
    handled with scipy.sparse.

    Parameters
    ----------
    affinity : ndarray or scipy.sparse matrix of shape (n, n)
        Non-negative symmetric edge weights (see :func:`similarity_graph`).
    kind : {"unnormalized", "symmetric", "random_walk"}, default="symmetric"
    n_eigenvalues : int, default=None
        How many of the smallest eigenvalues (``None``: all when dense, 100 otherwise).
    method : {"auto", "dense", "lanczos"}, default="auto"
        ``"auto"``: dense up to 2,000 vertices, Lanczos (``eigsh``) beyond.
    return_vectors : bool, default=False
        Also return the eigenvectors of the *symmetric* form (for ``"random_walk"``,
        ``D^-1/2`` times them are the random-walk eigenvectors).
    self_loops : bool, default=False
        Keep the diagonal of ``affinity`` as self-loops (see :func:`graph_laplacian`).
    seed : int, default=0
        Start vector of Lanczos.

    Returns
    -------
    eigenvalues : ndarray of shape (m,)
        Clipped at 0 below (rounding can make a zero eigenvalue slightly negative).
    eigenvectors : ndarray of shape (n, m), only with ``return_vectors=True``
    """
    import scipy.sparse as sp

    caller = "laplacian_spectrum"
    method = check_choice(method, "method", caller, ("auto", "dense", "lanczos"))
    kind = check_choice(kind, "kind", caller, LAPLACIANS)
    A = (
        sp.csr_matrix(affinity, dtype=np.float64)
        if sp.issparse(affinity)
        else np.asarray(affinity, dtype=np.float64)
    )
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise InvalidParameterError(
            f"The 'affinity' parameter of {caller} must be a square (n, n) matrix. "
            f"Got shape {A.shape} instead."
        )
    n = A.shape[0]
    dense = method == "dense" or (method == "auto" and n <= DENSE_MAX)
    if n_eigenvalues is None:
        m = n if dense else min(n, 100)
    else:
        m = check_int(n_eigenvalues, "n_eigenvalues", caller, min_value=1, max_value=n)
    dense = dense or m >= n - 1
    if not dense:
        A = sp.csr_matrix(A)
    L, _ = _sym_for_spectrum(A, kind, self_loops)
    if dense:
        Ld = L.toarray() if sp.issparse(L) else L
        Ld = (Ld + Ld.T) / 2
        if return_vectors:
            w, V = np.linalg.eigh(Ld)
            return np.clip(w[:m], 0.0, None), V[:, :m]
        w = np.linalg.eigvalsh(Ld)
        return np.clip(w[:m], 0.0, None)
    from scipy.sparse.linalg import eigsh

    # largest eigenvalues of c I - L are the smallest of L (Gershgorin bound for c)
    c = float(abs(L).sum(axis=1).max()) + 1.0
    M = (sp.identity(n) * c - L).tocsr()
    v0 = np.random.default_rng(seed).random(n)
    if return_vectors:
        w, V = eigsh(M, k=m, which="LA", v0=v0)
        order = np.argsort(c - w)
        return np.clip((c - w)[order], 0.0, None), V[:, order]
    w = eigsh(M, k=m, which="LA", v0=v0, return_eigenvectors=False)
    return np.clip(np.sort(c - w), 0.0, None)


def count_from_eigenvalues(
    eigenvalues: Any,
    *,
    gamma: float = DEFAULT_GAMMA,
    rule: str = "first_gap",
) -> int:
    """Number of clusters from an ascending Laplacian spectrum.

    Parameters
    ----------
    eigenvalues : array-like of shape (m,)
        Smallest Laplacian eigenvalues, ascending (already scaled, see the module notes).
    gamma : float, default=0.4
        Gap threshold.
    rule : {"first_gap", "count_gaps"}, default="first_gap"
        ``"first_gap"``: ``i + 1`` for the first ``lambda_{i+1} - lambda_i > gamma``;
        when no gap exceeds gamma, the number of zero eigenvalues (``<= 1e-9``: the
        connected components, the only structure the spectrum shows) and a logged
        message.  ``"count_gaps"``: the number of
        gaps ``> gamma`` (at least 1).

    Returns
    -------
    int
    """
    caller = "count_from_eigenvalues"
    rule = check_choice(rule, "rule", caller, GAP_RULES)
    gamma = check_float(gamma, "gamma", caller, min_value=0.0, min_inclusive=False)
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())
    if lam.size < 2:
        return int(lam.size)
    gaps = np.diff(lam)
    if rule == "count_gaps":
        return max(1, int(np.count_nonzero(gaps > gamma)))
    big = np.flatnonzero(gaps > gamma)
    if big.size:
        return int(big[0] + 1)
    n_zero = max(1, int(np.count_nonzero(lam <= _ZERO_TOL)))
    logger.info(
        "no eigen-gap exceeds gamma=%g among %d eigenvalues; nc = %d, the number "
        "of zero eigenvalues (connected components)",
        gamma,
        lam.size,
        n_zero,
    )
    return n_zero


def eigengap_count(
    similarity: Any,
    *,
    gamma: float = DEFAULT_GAMMA,
    rule: str = "first_gap",
    laplacian: str = "symmetric",
    graph: str = "full",
    k: int = 10,
    threshold: float | None = None,
    n_eigenvalues: int | None = None,
) -> int:
    """Number of clusters of a similarity matrix from the eigen-gaps of its Laplacian.

    Works for any symmetric similarity matrix, e.g. a K x K class-similarity matrix
    (``graph="full"``, the default here) or an image SSIM matrix (``graph="knn"`` or
    ``"threshold"``).

    Parameters
    ----------
    similarity : ndarray or scipy.sparse matrix of shape (n, n)
    gamma, rule
        See :func:`count_from_eigenvalues`.
    laplacian : {"unnormalized", "symmetric", "random_walk"}, default="symmetric"
    graph, k, threshold
        See :func:`similarity_graph`.
    n_eigenvalues : int, default=None
        See :func:`laplacian_spectrum`.

    Returns
    -------
    int
    """
    A = similarity_graph(similarity, graph=graph, k=k, threshold=threshold)
    lam = laplacian_spectrum(A, kind=laplacian, n_eigenvalues=n_eigenvalues)
    _, scale = _sym_for_spectrum(A, laplacian)
    return count_from_eigenvalues(lam / scale, gamma=gamma, rule=rule)


def spectral_clustering(
    affinity: Any,
    n_clusters: int,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Spectral clustering of a precomputed affinity graph (Ng, Jordan & Weiss).

    The ``n_clusters`` eigenvectors of the symmetric normalised Laplacian with the
    smallest eigenvalues, rows normalised to unit length, clustered by k-means
    (``sklearn.cluster.KMeans``, seeded).  When the graph has exactly ``n_clusters``
    connected components, those are the clusters (what the embedding gives, exactly);
    isolated vertices are then their own clusters.

    Parameters
    ----------
    affinity : ndarray or scipy.sparse matrix of shape (n, n)
        Non-negative symmetric weights (see :func:`similarity_graph`).
    n_clusters : int
        ``1 <= n_clusters <= n``.
    seed : int, default=0

    Returns
    -------
    ndarray of shape (n,), int64
        Cluster ids 0..n_clusters-1.
    """
    import scipy.sparse as sp
    from sklearn.cluster import KMeans

    caller = "spectral_clustering"
    A = sp.csr_matrix(affinity, dtype=np.float64)
    n = A.shape[0]
    n_clusters = check_int(n_clusters, "n_clusters", caller, min_value=1, max_value=n)
    seed = check_int(seed, "seed", caller, min_value=0)
    if n_clusters == 1:
        return np.zeros(n, dtype=np.int64)
    if n_clusters == n:
        return np.arange(n, dtype=np.int64)
    from scipy.sparse.csgraph import connected_components

    n_comp, comp = connected_components(A, directed=False)
    if n_comp == n_clusters:
        # the nc zero eigenvalues' eigenvectors are the component indicators: the
        # clustering is the components (exact, and no k-means with hundreds of centres)
        _, first = np.unique(comp, return_index=True)
        rank = np.empty(n_comp, dtype=np.int64)
        rank[np.argsort(first)] = np.arange(n_comp)
        return rank[comp]
    _, V = laplacian_spectrum(
        A, kind="symmetric", n_eigenvalues=n_clusters, return_vectors=True, seed=seed
    )
    norms = np.linalg.norm(V, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    U = V / norms
    km = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed)
    return km.fit_predict(U).astype(np.int64)


def isolation_scores(similarity: Any) -> np.ndarray:
    """Each vertex's largest similarity to any *other* vertex (low = isolated).

    Parameters
    ----------
    similarity : ndarray or scipy.sparse matrix of shape (n, n)
        For a sparse matrix, missing entries count as "not similar" (-inf).

    Returns
    -------
    ndarray of shape (n,)
        ``-inf`` for a vertex without any other entry.
    """
    import scipy.sparse as sp

    S = _as_similarity(similarity, "isolation_scores")
    n = S.shape[0]
    if n < 2:
        return np.full(n, -np.inf)
    if sp.issparse(S):
        out = np.full(n, -np.inf)
        coo = S.tocoo()
        off = coo.row != coo.col
        np.maximum.at(out, coo.row[off], coo.data[off])
        return out
    M = S.copy()
    np.fill_diagonal(M, -np.inf)
    return M.max(axis=1)


@dataclass(frozen=True)
class SpectralResult:
    """Spectrum, cluster count and clusters of a similarity matrix.

    Attributes
    ----------
    eigenvalues : ndarray of shape (m,)
        Smallest Laplacian eigenvalues, ascending (unscaled).
    n_clusters : int
        ``nc`` from the eigen-gap rule.
    labels : ndarray of shape (n,) or None
        Spectral clusters (None when clustering was not asked for).
    n_components : int
        Connected components of the sparsified graph.
    isolated : ndarray of shape (t,)
        Indices of the most isolated vertices, most isolated first.
    isolation : ndarray of shape (t,)
        Their largest similarity to any other vertex.
    params : dict
        Graph, Laplacian, rule and gamma (JSON-ready).
    """

    eigenvalues: np.ndarray
    n_clusters: int
    labels: np.ndarray | None
    n_components: int
    isolated: np.ndarray
    isolation: np.ndarray
    params: dict[str, Any]

    def to_dict(self, *, max_eigenvalues: int = 200) -> dict[str, Any]:
        """JSON-ready summary: leading eigenvalues (for a spectrum plot), nc, clusters."""
        lam = np.asarray(self.eigenvalues[:max_eigenvalues], dtype=np.float64)
        sizes = np.bincount(self.labels) if self.labels is not None else None
        return to_jsonable(
            {
                "eigenvalues": lam,
                "n_clusters": int(self.n_clusters),
                "n_components": int(self.n_components),
                "cluster_sizes": sizes,
                "labels": self.labels,
                "most_isolated": np.asarray(self.isolated, dtype=np.int64),
                "isolation": np.asarray(self.isolation, dtype=np.float64),
                "params": self.params,
            }
        )


def spectral_analysis(
    similarity: Any,
    *,
    graph: str = "knn",
    k: int = 10,
    threshold: float | None = None,
    laplacian: str = "symmetric",
    rule: str = "first_gap",
    gamma: float = DEFAULT_GAMMA,
    n_eigenvalues: int | None = None,
    n_clusters: int | None = None,
    cluster: bool = True,
    n_isolated: int = 5,
    seed: int = 0,
) -> SpectralResult:
    """Yousefzadeh's Algorithm 2, lines 8-10, plus the most isolated images.

    Parameters
    ----------
    similarity : ndarray or scipy.sparse matrix of shape (n, n)
        E.g. :func:`dcsi.ssim_matrix` output.
    graph, k, threshold
        Sparsification, see :func:`similarity_graph`.
    laplacian : {"unnormalized", "symmetric", "random_walk"}, default="symmetric"
    rule : {"first_gap", "count_gaps"}, default="first_gap"
    gamma : float, default=0.4
        See :func:`count_from_eigenvalues` and the module notes.
    n_eigenvalues : int, default=None
        See :func:`laplacian_spectrum`.
    n_clusters : int, default=None
        Skip the eigen-gap rule and use this count (prior knowledge).
    cluster : bool, default=True
        Run spectral clustering with the count.
    n_isolated : int, default=5
        How many of the most isolated vertices to report.
    seed : int, default=0

    Returns
    -------
    SpectralResult
    """
    from scipy.sparse.csgraph import connected_components

    caller = "spectral_analysis"
    n_isolated = check_int(n_isolated, "n_isolated", caller, min_value=0)
    S = _as_similarity(similarity, caller)
    A = similarity_graph(S, graph=graph, k=k, threshold=threshold)
    lam = laplacian_spectrum(A, kind=laplacian, n_eigenvalues=n_eigenvalues, seed=seed)
    _, scale = _sym_for_spectrum(A, laplacian)
    if n_clusters is None:
        nc = count_from_eigenvalues(lam / scale, gamma=gamma, rule=rule)
    else:
        nc = check_int(n_clusters, "n_clusters", caller, min_value=1, max_value=S.shape[0])
    labels = spectral_clustering(A, nc, seed=seed) if cluster else None
    n_comp = int(connected_components(A, directed=False)[0])
    iso = isolation_scores(S)
    order = np.lexsort((np.arange(iso.size), iso))[:n_isolated]
    params = {
        "graph": graph,
        "k": int(k) if graph == "knn" else None,
        "threshold": float(threshold) if threshold is not None else None,
        "laplacian": laplacian,
        "rule": rule,
        "gamma": float(gamma),
        "gap_scale": float(scale),
        "n_clusters_given": n_clusters is not None,
        "seed": int(seed),
    }
    return SpectralResult(lam, int(nc), labels, n_comp, order.astype(np.int64), iso[order], params)
