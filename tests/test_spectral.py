"""Graph Laplacians, eigen-gaps and spectral clustering on planted structure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import adjusted_rand_score

from dcsi.exceptions import InvalidParameterError
from dcsi.spectral import (
    LAPLACIANS,
    count_from_eigenvalues,
    eigengap_count,
    graph_laplacian,
    isolation_scores,
    laplacian_spectrum,
    similarity_graph,
    spectral_analysis,
    spectral_clustering,
)


def planted(
    rng: np.random.Generator,
    sizes: list[int],
    *,
    within: float = 0.8,
    between: float = 0.05,
    noise: float = 0.03,
) -> tuple[np.ndarray, np.ndarray]:
    """Block-structured symmetric similarity with noise, in a shuffled order."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    perm = rng.permutation(labels.size)
    labels = labels[perm]
    S = np.where(labels[:, None] == labels[None, :], within, between)
    E = rng.normal(0, noise, S.shape)
    S = S + (E + E.T) / 2
    np.fill_diagonal(S, 1.0)
    return S, labels


@pytest.mark.parametrize("laplacian", LAPLACIANS)
@pytest.mark.parametrize(
    "graph,kw", [("knn", {"k": 8}), ("threshold", {"threshold": 0.5}), ("full", {})]
)
def test_eigengap_rule_returns_planted_count(rng, laplacian, graph, kw):
    sizes = [int(v) for v in rng.integers(12, 30, size=4)]
    S, labels = planted(rng, sizes)
    assert eigengap_count(S, laplacian=laplacian, graph=graph, **kw) == 4
    res = spectral_analysis(S, laplacian=laplacian, graph=graph, seed=1, **kw)
    assert res.n_clusters == 4
    assert adjusted_rand_score(labels, res.labels) == pytest.approx(1.0)


def test_planted_count_varies_with_structure(rng):
    for k in (2, 3, 6):
        S, _ = planted(rng, [15] * k)
        assert eigengap_count(S, graph="knn", k=6) == k


def test_count_gaps_rule_on_a_known_spectrum():
    lam = np.array([0.0, 0.0, 0.01, 0.9, 0.95, 1.5, 1.52])
    assert count_from_eigenvalues(lam, gamma=0.4, rule="first_gap") == 3
    assert count_from_eigenvalues(lam, gamma=0.4, rule="count_gaps") == 2
    assert count_from_eigenvalues(lam, gamma=0.6, rule="first_gap") == 3
    # no gap above gamma: the number of zero eigenvalues (connected components)
    assert count_from_eigenvalues(lam, gamma=5.0) == 2
    assert count_from_eigenvalues(np.zeros(7)) == 7  # every vertex isolated
    assert count_from_eigenvalues(lam, gamma=5.0, rule="count_gaps") == 1
    with pytest.raises(InvalidParameterError, match="'rule' parameter"):
        count_from_eigenvalues(lam, rule="all")
    with pytest.raises(InvalidParameterError, match="'gamma' parameter"):
        count_from_eigenvalues(lam, gamma=0.0)


def random_affinity(rng: np.random.Generator, n: int, *, isolated: int = 0) -> np.ndarray:
    A = rng.random((n, n)) * (rng.random((n, n)) < 0.3)
    A = np.triu(A, 1)
    A = A + A.T
    A[:isolated] = 0.0
    A[:, :isolated] = 0.0
    return A


@pytest.mark.parametrize("kind", LAPLACIANS)
def test_laplacian_against_textbook_formulas(rng, kind):
    A = random_affinity(rng, 9, isolated=1)
    L = graph_laplacian(sp.csr_matrix(A), kind=kind).toarray()
    d = A.sum(axis=1)
    if kind == "unnormalized":
        ref = np.diag(d) - A
    else:
        ref = np.zeros_like(A)
        for i in range(9):
            for j in range(9):
                if d[i] == 0:
                    continue
                if kind == "symmetric":
                    ref[i, j] = (i == j) - (A[i, j] / np.sqrt(d[i] * d[j]) if d[j] else 0.0)
                else:
                    ref[i, j] = (i == j) - A[i, j] / d[i]
    np.testing.assert_allclose(L, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", LAPLACIANS)
def test_zero_multiplicity_counts_components(rng, kind):
    blocks = [random_affinity(rng, m) + 0.01 * (1 - np.eye(m)) for m in (5, 7, 4)]
    A = sp.block_diag([*blocks, np.zeros((2, 2))]).toarray()  # + 2 isolated vertices
    n_comp = connected_components(sp.csr_matrix(A), directed=False)[0]
    lam = laplacian_spectrum(A, kind=kind)
    assert n_comp == 5
    assert np.count_nonzero(lam < 1e-9) == 5


@pytest.mark.parametrize("kind", ["unnormalized", "symmetric"])
def test_lanczos_matches_dense(rng, kind):
    S, _ = planted(rng, [40, 50, 30])
    A = similarity_graph(S, graph="knn", k=6)
    dense = laplacian_spectrum(A, kind=kind, n_eigenvalues=8, method="dense")
    lanczos = laplacian_spectrum(A, kind=kind, n_eigenvalues=8, method="lanczos")
    np.testing.assert_allclose(lanczos, dense, rtol=0, atol=1e-8)
    full = np.linalg.eigvalsh(graph_laplacian(A, kind=kind).toarray())
    np.testing.assert_allclose(dense, np.clip(full[:8], 0, None), rtol=0, atol=1e-10)


def test_knn_graph_keeps_each_rows_top_k(rng):
    S, _ = planted(rng, [10, 10])
    k = 3
    A = similarity_graph(S, graph="knn", k=k).toarray()
    np.testing.assert_array_equal(A, A.T)
    assert np.all(np.diag(A) == 0)
    for i in range(S.shape[0]):
        row = S[i].copy()
        row[i] = -np.inf
        top = np.argsort(-row)[:k]
        np.testing.assert_allclose(A[i, top], np.maximum(S[i, top], 0))
    # any edge was in the top-k of one of its ends
    for i, j in zip(*np.nonzero(A)):
        ri, rj = S[i].copy(), S[j].copy()
        ri[i] = rj[j] = -np.inf
        assert j in np.argsort(-ri)[:k] or i in np.argsort(-rj)[:k]
    # the same graph from a sparse input holding all entries
    B = similarity_graph(sp.csr_matrix(S), graph="knn", k=k).toarray()
    np.testing.assert_allclose(B, A)


def test_threshold_graph_and_negative_entries(rng):
    S = np.array([[1.0, 0.9, -0.4], [0.9, 1.0, 0.2], [-0.4, 0.2, 1.0]])
    A = similarity_graph(S, graph="threshold", threshold=0.5).toarray()
    np.testing.assert_allclose(A, [[0, 0.9, 0], [0.9, 0, 0], [0, 0, 0]])
    F = similarity_graph(S, graph="full").toarray()
    np.testing.assert_allclose(F, [[0, 0.9, 0], [0.9, 0, 0.2], [0, 0.2, 0]])


def test_isolation_scores_brute_force(rng):
    S, _ = planted(rng, [6, 7])
    iso = isolation_scores(S)
    ref = [max(S[i, j] for j in range(S.shape[0]) if j != i) for i in range(S.shape[0])]
    np.testing.assert_allclose(iso, ref)
    np.testing.assert_allclose(isolation_scores(sp.csr_matrix(S)), ref)
    res = spectral_analysis(S, graph="knn", k=4, n_isolated=3)
    assert res.isolated.tolist() == np.argsort(ref, kind="stable")[:3].tolist()


def test_spectral_clustering_isolated_vertices_and_bounds(rng):
    A = np.zeros((5, 5))
    A[0, 1] = A[1, 0] = 1.0
    A[2, 3] = A[3, 2] = 1.0
    labels = spectral_clustering(A, 3)
    assert labels[0] == labels[1] and labels[2] == labels[3]
    assert len(set(labels.tolist())) == 3
    assert labels.tolist() == [0, 0, 1, 1, 2]  # components, numbered by first vertex
    assert spectral_clustering(A, 1).tolist() == [0] * 5
    assert spectral_clustering(A, 5).tolist() == list(range(5))
    with pytest.raises(InvalidParameterError, match="'n_clusters' parameter"):
        spectral_clustering(A, 6)


def test_result_to_dict_is_json(rng):
    S, _ = planted(rng, [8, 9, 10])
    res = spectral_analysis(S, graph="threshold", threshold=0.5)
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["n_clusters"] == 3 and d["n_components"] == 3
    assert len(d["eigenvalues"]) == 27 and d["eigenvalues"] == sorted(d["eigenvalues"])
    assert sorted(d["cluster_sizes"]) == [8, 9, 10]
    assert d["params"]["rule"] == "first_gap" and d["params"]["gamma"] == 0.4
    given = spectral_analysis(S, graph="threshold", threshold=0.5, n_clusters=2, cluster=False)
    assert given.n_clusters == 2 and given.labels is None


def test_class_matrix_use(rng):
    # a K x K class-similarity matrix: two groups of similar classes
    S = np.array(
        [[1.0, 0.9, 0.1, 0.1], [0.9, 1.0, 0.1, 0.1], [0.1, 0.1, 1.0, 0.8], [0.1, 0.1, 0.8, 1.0]]
    )
    assert eigengap_count(S) == 2


def test_input_errors():
    with pytest.raises(InvalidParameterError, match=r"must be a square \(n, n\) matrix"):
        eigengap_count(np.zeros((3, 4)))
    with pytest.raises(InvalidParameterError, match="must be symmetric"):
        eigengap_count(np.array([[1.0, 0.5], [0.1, 1.0]]))
    with pytest.raises(InvalidParameterError, match="NaN or infinite"):
        eigengap_count(np.array([[1.0, np.nan], [np.nan, 1.0]]))
    with pytest.raises(InvalidParameterError, match="must not be empty"):
        eigengap_count(np.zeros((0, 0)))
    with pytest.raises(InvalidParameterError, match="'graph' parameter of similarity_graph"):
        similarity_graph(np.eye(3), graph="mutual")
    with pytest.raises(InvalidParameterError, match="'threshold' parameter .* graph='threshold'"):
        similarity_graph(np.eye(3), graph="threshold")
    with pytest.raises(InvalidParameterError, match="'kind' parameter of graph_laplacian"):
        graph_laplacian(np.eye(3), kind="normalized")
    with pytest.raises(InvalidParameterError, match="non-negative weights"):
        graph_laplacian(np.array([[0.0, -1.0], [-1.0, 0.0]]))
    with pytest.raises(InvalidParameterError, match="'method' parameter of laplacian_spectrum"):
        laplacian_spectrum(np.eye(3), method="arpack")


def test_ssim_to_spectrum_end_to_end(rng):
    """SSIM of planted near-duplicate groups -> threshold graph -> nc = groups."""
    from dcsi.similarity.ssim import ssim_matrix

    bases = rng.integers(0, 256, size=(4, 12, 12))
    imgs = []
    for b in bases:
        for _ in range(5):
            imgs.append(np.clip(b + rng.integers(-6, 7, size=b.shape), 0, 255))
    x = np.array(imgs, dtype=np.uint8)
    M = ssim_matrix(x)
    res = spectral_analysis(M, graph="threshold", threshold=0.8)
    assert res.n_clusters == 4 and res.n_components == 4
    assert adjusted_rand_score(np.repeat(np.arange(4), 5), res.labels) == pytest.approx(1.0)


def test_kmeans_path_when_components_differ_from_count(rng):
    S, labels = planted(rng, [12, 14, 10], between=0.3, noise=0.02)
    A = similarity_graph(S, graph="full")
    assert connected_components(A, directed=False)[0] == 1
    found = spectral_clustering(A, 3, seed=2)
    assert adjusted_rand_score(labels, found) == pytest.approx(1.0)


# -- the one Laplacian: dense and sparse paths, self-loops ------------------------------
@pytest.mark.parametrize("kind", LAPLACIANS)
def test_dense_and_sparse_laplacians_agree(rng, kind):
    A = random_affinity(rng, 9, isolated=1)
    np.fill_diagonal(A, 0.7)  # ignored unless self_loops=True
    dense = graph_laplacian(A, kind=kind)
    sparse = graph_laplacian(sp.csr_matrix(A), kind=kind)
    assert isinstance(dense, np.ndarray) and sp.issparse(sparse)
    np.testing.assert_allclose(dense, sparse.toarray(), rtol=0, atol=1e-12)
    loops_dense = graph_laplacian(A, kind=kind, self_loops=True)
    loops_sparse = graph_laplacian(sp.csr_matrix(A), kind=kind, self_loops=True)
    np.testing.assert_allclose(loops_dense, loops_sparse.toarray(), rtol=0, atol=1e-12)
    # self-loops change the normalised Laplacians (D - A: they cancel)
    assert np.allclose(loops_dense, dense) == (kind == "unnormalized")
    np.testing.assert_array_equal(A.diagonal(), 0.7)  # the input is not modified


def test_self_loop_laplacian_against_textbook_formula(rng):
    k = 6
    d = rng.uniform(0, 1, size=(k, k))
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0.0)
    a = np.exp(-(d**2) / 0.5)  # self-loops exp(0) = 1 on the diagonal
    deg = a.sum(axis=1)
    ref = np.eye(k) - a / np.sqrt(np.outer(deg, deg))
    L = graph_laplacian(a, self_loops=True)
    np.testing.assert_allclose(L, ref, rtol=0, atol=1e-13)
    lam = laplacian_spectrum(a, self_loops=True)
    np.testing.assert_allclose(
        lam, np.clip(np.linalg.eigvalsh((ref + ref.T) / 2), 0, None), rtol=0, atol=1e-12
    )


def test_dense_spectrum_matches_sparse_spectrum(rng):
    S, _ = planted(rng, [6, 5, 4])
    A = similarity_graph(S, graph="knn", k=3)
    np.testing.assert_allclose(
        laplacian_spectrum(A.toarray()), laplacian_spectrum(A), rtol=0, atol=1e-12
    )


def test_two_blocks_give_two_zero_eigenvalues():
    b = np.kron(np.eye(2), np.ones((3, 3))) * 0.8
    ev = laplacian_spectrum(b)
    assert np.sum(ev < 1e-10) == 2 and ev.max() <= 2 + 1e-12


def test_graph_laplacian_rejects_bad_input():
    with pytest.raises(
        InvalidParameterError, match="'affinity' parameter of graph_laplacian must be a square"
    ):
        graph_laplacian(np.ones((2, 3)))
    with pytest.raises(
        InvalidParameterError,
        match="'affinity' parameter of graph_laplacian must have non-negative",
    ):
        graph_laplacian(np.array([[0.0, -1.0], [-1.0, 0.0]]))
    with pytest.raises(
        InvalidParameterError, match="'affinity' parameter of laplacian_spectrum must be a square"
    ):
        laplacian_spectrum(np.ones(3))
