"""The approximate candidate search (faiss IVF-flat) against the exact one, its options,
and the block sizes that keep the near-duplicate audit of 10^6 images off ``n x n``."""

from __future__ import annotations

import numpy as np
import pytest

import dcsi.ann as ann
from dcsi.exceptions import InvalidParameterError
from dcsi.neighbors import (
    ANN_THRESHOLD,
    SearchOptions,
    prepare_rows,
    radius_pairs,
)
from dcsi.redundancy import find_redundancy
from dcsi.rrqr import select_columns
from dcsi.similarity import wavelet as wavelet_module
from dcsi.similarity.wavelet import wavelet_rows


def _planted_rows(rng: np.random.Generator, n: int = 3000, d: int = 64, m: int = 150):
    """Unit rows with ``m`` planted near-copies (distance ~1e-4) of random rows."""
    X = rng.standard_normal((n, d))
    src = rng.choice(n, m, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), m, replace=False)
    X[dst] = X[src] + 0.01 * rng.standard_normal((m, d))
    return prepare_rows(X, center="none")


def _brute_pairs(A: np.ndarray, B: np.ndarray | None, threshold: float) -> set:
    S = A.astype(np.float64) @ (A if B is None else B).astype(np.float64).T
    i, j = np.nonzero(threshold >= 1.0 - S)
    if B is None:
        keep = i < j
        i, j = i[keep], j[keep]
    return set(zip(i.tolist(), j.tolist()))


def test_ann_finds_the_exact_pairs_within_one_set(rng):
    pytest.importorskip("faiss")
    F = _planted_rows(rng)
    exact, d_exact = radius_pairs(F, threshold=0.01, search="exact")
    approx, d_approx = radius_pairs(F, threshold=0.01, search="ann")
    assert set(map(tuple, exact.tolist())) == _brute_pairs(F, None, 0.01)
    assert len(exact) >= 150  # the planted pairs, at least
    np.testing.assert_array_equal(approx, exact)  # recall 1.0, same order
    np.testing.assert_allclose(d_approx, d_exact)


def test_ann_finds_the_exact_pairs_between_two_sets(rng):
    pytest.importorskip("faiss")
    F = _planted_rows(rng, n=4000)
    A, B = F[:1500], F[1500:]
    exact, _ = radius_pairs(A, B, threshold=0.01, search="exact")
    approx, _ = radius_pairs(A, B, threshold=0.01, search="ann")
    assert set(map(tuple, exact.tolist())) == _brute_pairs(A, B, 0.01)
    np.testing.assert_array_equal(approx, exact)


def test_every_ann_pair_is_checked_exactly(rng, monkeypatch):
    """A candidate search that returns every pair gives the exact pairs: the check on
    all columns, not the index, decides (precision does not depend on the index)."""
    F = _planted_rows(rng, n=400, m=20)

    def everything(PA, PB, radius2, **kw):
        i, j = np.triu_indices(len(PA), 1)
        return np.stack([i, j], 1).astype(np.int64), {}

    monkeypatch.setattr("dcsi.neighbors.ivf_radius_candidates", everything)
    approx, _ = radius_pairs(F, threshold=0.01, search="ann")
    assert set(map(tuple, approx.tolist())) == _brute_pairs(F, None, 0.01)


def test_find_redundancy_auto_switches_to_ann_above_the_threshold(rng):
    pytest.importorskip("faiss")
    images = rng.integers(0, 256, (600, 16, 16), dtype=np.uint8)
    images[300:330] = images[:30]
    exact = find_redundancy(images, search="exact")
    auto = find_redundancy(images, search=SearchOptions(ann_threshold=100))
    assert "search" not in exact.params
    assert auto.params["search"] == "ann" and auto.params["nprobe"] == 16
    assert [g.members for g in auto] == [g.members for g in exact]
    assert len(exact) >= 30


def test_search_options_are_validated():
    assert SearchOptions().method == "auto" and SearchOptions().ann_threshold == ANN_THRESHOLD
    assert SearchOptions.from_arg("ann", "f").method == "ann"
    for bad in ({"method": "hnsw"}, {"nprobe": 0}, {"ann_threshold": -1}):
        with pytest.raises(InvalidParameterError, match="SearchOptions"):
            SearchOptions(**bad)
    with pytest.raises(InvalidParameterError, match="'search' parameter of find_redundancy"):
        find_redundancy(np.zeros((4, 8, 8), np.uint8), search="fast")
    with pytest.raises(InvalidParameterError, match="'search'"):
        radius_pairs(np.eye(3, dtype=np.float32), threshold=0.1, search="auto")
    assert SearchOptions(ann_threshold=10).resolve(10) == "exact"
    assert SearchOptions(ann_threshold=10).resolve(11) == "ann"
    assert SearchOptions(method="exact", ann_threshold=0).resolve(10**9) == "exact"


def test_ann_without_faiss_fails_before_the_work(monkeypatch):
    from dcsi.exceptions import MissingDependencyError

    def missing(module, feature, extra):
        raise MissingDependencyError(f"{feature} needs {module}: pip install '{extra}'")

    monkeypatch.setattr("dcsi.neighbors.require", missing)
    with pytest.raises(MissingDependencyError, match="dcsi\\[index\\]"):
        find_redundancy(np.zeros((4, 8, 8), np.uint8), search="ann")


def test_the_faiss_radius_search_queries_in_bounded_batches(rng, monkeypatch):
    """Never ``n x n``: faiss is asked ``batch_size`` queries at a time."""
    pytest.importorskip("faiss")
    P = rng.standard_normal((1000, 8)).astype(np.float32)
    seen = []
    real = ann.ivf_index

    def spy(X, **kw):
        index, params = real(X, **kw)
        search = index.range_search

        class Spy:
            def range_search(self, q, r):
                seen.append(len(q))
                return search(q, r)

        return Spy(), params

    monkeypatch.setattr(ann, "ivf_index", spy)
    pairs, _ = ann.ivf_radius_candidates(P, None, 2.0, batch_size=128)
    assert max(seen) <= 128 and sum(seen) == 1000
    assert np.all(pairs[:, 0] < pairs[:, 1])
    assert len(np.unique(pairs, axis=0)) == len(pairs)


def test_streamed_wavelet_rows_equal_the_kept_ones(rng, monkeypatch):
    """Above KEEP_COEFFICIENTS_BYTES, W is recomputed per pass, never held: same bytes."""
    images = rng.integers(0, 256, (5000, 12, 12), dtype=np.uint8)
    kept = wavelet_rows(images)
    monkeypatch.setattr(wavelet_module, "KEEP_COEFFICIENTS_BYTES", 0)
    streamed = wavelet_rows(images)
    np.testing.assert_array_equal(streamed.rows, kept.rows)
    np.testing.assert_array_equal(streamed.columns, kept.columns)
    assert streamed.summary() == kept.summary()


def test_select_columns_from_a_callable_of_blocks(rng):
    W = rng.standard_normal((9000, 20)) @ rng.standard_normal((20, 30))
    W[:, 5] = W[:, 0] + W[:, 1]
    whole = select_columns(W)
    blocks = select_columns(lambda: (W[i : i + 4096] for i in range(0, len(W), 4096)))
    np.testing.assert_array_equal(blocks.columns, whole.columns)
    assert blocks.n_rows == 9000 and blocks.m == whole.m


def test_prepare_rows_in_place_writes_into_the_input(rng):
    X = rng.standard_normal((50, 7)).astype(np.float32)
    expected = prepare_rows(X, center="none")
    out = prepare_rows(X, center="none", out=X)
    assert out is X
    np.testing.assert_array_equal(X, expected)
