"""The neighbour index: exact and faiss top-k against brute force, files, search."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dcsi.exceptions import DataError, InvalidParameterError
from dcsi.neighbor_index import (
    NeighborIndex,
    build_neighbor_index,
    faiss_topk,
    index_features,
    load_neighbor_index,
)
from dcsi.neighbors import best_per_row, exact_topk


def brute_topk(G: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k largest entries per row, ties by the smaller column (slow)."""
    return np.array(
        [sorted(range(G.shape[1]), key=lambda j: (-G[i, j], j))[:k] for i in range(len(G))]
    )


@pytest.mark.parametrize("block_bytes", [4 * 64, 4 * 3000 * 37, 1 << 28])
def test_exact_topk_equals_brute_force_with_ties(rng, block_bytes):
    # small integer vectors: every product is exact in float32 and ties abound; n is
    # large enough for the chunk-maxima bound (n >= 4 k 64)
    X = rng.integers(-2, 3, (2600, 5)).astype(np.float32)
    G = (X @ X.T).astype(np.float64)
    np.fill_diagonal(G, -np.inf)
    rows = rng.choice(len(X), 40, replace=False)
    got, scores = exact_topk(X, k=10, block_bytes=block_bytes)
    ref = brute_topk(G[rows], 10)
    np.testing.assert_array_equal(got[rows], ref)
    np.testing.assert_array_equal(scores[rows], np.take_along_axis(G[rows], ref, 1))


@pytest.mark.parametrize(("k", "block_bytes"), [(1, 4 * 600 * 7), (5, 4 * 600 * 50), (10, 1 << 28)])
def test_self_topk_computing_each_product_once_equals_brute_force(rng, monkeypatch, k, block_bytes):
    # a pilot of 16 rows: the one-product-per-pair path from n > 64, with weak bounds,
    # so the candidates are reduced several times; ties abound (and cross pieces)
    monkeypatch.setattr("dcsi.neighbors.PILOT_ROWS", 16)
    monkeypatch.setattr("dcsi.neighbors.STRIP_COLUMNS", 50)  # products cut in pieces
    X = rng.integers(-2, 3, (600, 4)).astype(np.float32)
    X[100:110] = X[5]  # exact duplicates across blocks
    G = (X @ X.T).astype(np.float64)
    np.fill_diagonal(G, -np.inf)
    got, scores = exact_topk(X, k=k, block_bytes=block_bytes)
    ref = brute_topk(G, k)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(scores, np.take_along_axis(G, ref, 1))


def test_self_topk_at_its_default_size_equals_brute_force(rng):
    X = rng.integers(-2, 3, (9000, 5)).astype(np.float32)  # > 4 * 2048 rows
    rows = rng.choice(len(X), 30, replace=False)
    G = (X[rows] @ X.T).astype(np.float64)
    G[np.arange(len(rows)), rows] = -np.inf
    got, scores = exact_topk(X, k=6)
    ref = brute_topk(G, 6)
    np.testing.assert_array_equal(got[rows], ref)
    np.testing.assert_array_equal(scores[rows], np.take_along_axis(G, ref, 1))


def test_best_per_row_orders_by_score_and_keeps_ties_in_their_order():
    rows = np.array([1, 0, 0, 0, 0, 1, 0])
    cols = np.array([9, 3, 5, 7, 8, 2, 1])
    vals = np.array([2.0, -0.0, 0.0, -np.inf, 0.5, 2.0, -1.5], dtype=np.float32)
    r, c, v = best_per_row(rows, cols, vals, 3)
    np.testing.assert_array_equal(r, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(c, [8, 3, 5, 9, 2])  # -0.0 == 0.0: a tie
    np.testing.assert_array_equal(v, [0.5, 0.0, 0.0, 2.0, 2.0])


def test_exact_topk_queries_small_n_and_k_equal_n(rng):
    X = rng.integers(-1, 2, (30, 3)).astype(np.float32)
    Q = rng.integers(-1, 2, (7, 3)).astype(np.float32)
    G = (Q @ X.T).astype(np.float64)
    for k in (1, 4, 30):
        got, scores = exact_topk(X, Q, k=k)
        np.testing.assert_array_equal(got, brute_topk(G, k))
        assert scores.dtype == np.float32 and scores.shape == (7, k)


def test_exact_topk_on_random_unit_rows(rng):
    X = rng.standard_normal((500, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    got, scores = exact_topk(X, k=8, block_bytes=4 * 500 * 17)
    G = X.astype(np.float64) @ X.T.astype(np.float64)
    np.fill_diagonal(G, -np.inf)
    ref_scores = -np.sort(-G, axis=1)[:, :8]
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(G, got, 1), ref_scores, atol=1e-6)
    assert not (got == np.arange(500)[:, None]).any()


def clustered(rng, n=6000, d=32, centres=60, spread=0.15):
    C = rng.standard_normal((centres, d))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    X = C[rng.integers(0, centres, n)] + rng.normal(0, spread / np.sqrt(d), (n, d))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def test_faiss_recall_against_exact_on_clustered_data(rng):
    pytest.importorskip("faiss")
    X = clustered(rng)
    exact, _ = exact_topk(X, k=10)
    found, scores, params = faiss_topk(X, k=10)
    assert params["index"] == "IVFFlat" and params["nlist"] > 1
    recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(found, exact)])
    assert recall >= 0.95, recall
    assert not (found == np.arange(len(X))[:, None]).any()
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first
    true = np.einsum("ij,ikj->ik", X, X[found])  # the scores are exact inner products
    np.testing.assert_allclose(scores, true, atol=1e-5)


def test_faiss_on_few_rows_is_a_flat_exact_search(rng):
    pytest.importorskip("faiss")
    X = clustered(rng, n=30, d=8)
    found, scores, params = faiss_topk(X, k=5)
    exact, exact_scores = exact_topk(X, k=5)
    assert params["index"] == "FlatIP"
    np.testing.assert_array_equal(found, exact)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-6)


def small_index(rng, n=50, k=4) -> NeighborIndex:
    F = rng.standard_normal((n, 12)).astype(np.float32)
    ids = [f"img/{i:03d}.png" for i in range(n)]
    info = {"backbone": "pixels8", "weights_sha256": None, "image_size": 8, "pooling": "gap"}
    return index_features(F, ids, k=k, method="exact", info=info)


def test_index_features_metadata_and_k_clipped(rng):
    idx = small_index(rng, n=5, k=10)
    assert idx.k == 4 and idx.metadata["k"] == 4 and idx.metadata["method"] == "exact"
    assert idx.neighbor_ids.shape == (5, 4) and idx.neighbor_ids.dtype == object
    np.testing.assert_allclose(np.linalg.norm(idx.vectors, axis=1), 1, atol=1e-6)
    with pytest.raises(DataError, match="at least 2 images"):
        index_features(np.zeros((1, 3), np.float32), ["a"], k=1)
    for bad in (0.0, 1.0, -0.5, float("nan"), "0.7"):
        with pytest.raises(InvalidParameterError, match="'link_ratio' parameter"):
            index_features(np.zeros((5, 3), np.float32), list("abcde"), k=1, link_ratio=bad)


def test_save_load_round_trip_through_parquet_and_datasets(rng, tmp_path):
    idx = small_index(rng)
    idx.save(tmp_path / "a")
    back = load_neighbor_index(tmp_path / "a")
    assert back.ids == idx.ids
    np.testing.assert_array_equal(back.neighbors, idx.neighbors)
    np.testing.assert_array_equal(back.scores, idx.scores)
    np.testing.assert_array_equal(back.vectors, idx.vectors)
    assert back.metadata["k"] == 4
    # same index, same bytes
    idx.save(tmp_path / "b")
    for name in ("neighbors.parquet", "vectors.npy", "index.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(
        "parquet",
        data_files=str(tmp_path / "a" / "neighbors.parquet"),
        split="train",
        cache_dir=str(tmp_path / "hf"),
    )
    assert ds.column_names == ["id", "neighbor_ids", "scores", "is_copy"] and len(ds) == 50
    row = ds[7]
    assert row["id"] == idx.ids[7]
    assert row["neighbor_ids"] == list(idx.neighbor_ids[7])
    np.testing.assert_allclose(row["scores"], idx.scores[7], rtol=0, atol=0)
    # a card folder holding neighbor_index/ is found too
    idx.save(tmp_path / "card" / "neighbor_index")
    assert load_neighbor_index(tmp_path / "card").ids == idx.ids


def test_load_errors_name_the_problem(rng, tmp_path):
    with pytest.raises(DataError, match="No neighbour index"):
        load_neighbor_index(tmp_path / "nothing")
    folder = small_index(rng).save(tmp_path / "idx")
    data = bytearray((folder / "neighbors.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "neighbors.parquet").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"neighbors.parquet does not match the sha256"):
        load_neighbor_index(folder)
    (folder / "neighbors.parquet").unlink()
    with pytest.raises(DataError, match="neighbors.parquet is missing"):
        load_neighbor_index(folder)
    (folder / "index.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_neighbor_index(folder)
    meta = {"format": "dcsi-neighbor-index", "format_version": 99}
    (folder / "index.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format version 99"):
        load_neighbor_index(folder)


def test_build_checks_parameters_before_reading(tmp_path):
    with pytest.raises(InvalidParameterError, match="'k' parameter"):
        build_neighbor_index(tmp_path / "missing", k=0)
    with pytest.raises(InvalidParameterError, match="'method' parameter"):
        build_neighbor_index(tmp_path / "missing", method="hnsw")
    with pytest.raises(InvalidParameterError, match="'pooling' parameter"):
        build_neighbor_index(tmp_path / "missing", pooling="max")


def test_search_embeds_new_images_like_the_index(rng, tmp_path, pixel_backbone):
    from PIL import Image

    images = rng.integers(0, 256, (20, 16, 16), dtype=np.uint8)
    idx = build_neighbor_index(images, k=5, backbone="pixels8", cache=False)
    assert idx.metadata["backbone"] == "pixels8" and idx.metadata["pooling"] == "gap"
    loaded = load_neighbor_index(idx.save(tmp_path / "idx"))
    ids, scores = loaded.search(images[[3, 11]], k=4, cache=False)
    assert ids.shape == (2, 4) and list(ids[:, 0]) == ["3", "11"]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    paths = []
    for i in (4, 9):
        paths.append(tmp_path / f"q{i}.png")
        Image.fromarray(images[i]).save(paths[-1])
    ids, _ = loaded.search(paths, k=2, cache=False)
    assert list(ids[:, 0]) == ["4", "9"]
    vec_ids, _ = loaded.search(loaded.vectors[[5]] * 3.0, k=1)  # vectors: normalised
    assert vec_ids[0, 0] == "5"
    with pytest.raises(DataError, match=r"shape \(m, 64\)"):
        loaded.search(np.zeros((2, 3), np.float32))
    with pytest.raises(InvalidParameterError, match="'k' parameter"):
        loaded.search(images[:1], k=21)


def test_index_with_a_head_saves_it_and_search_applies_it(rng, tmp_path, pixel_backbone):
    from dcsi.similarity_head import train_similarity_head

    images = rng.integers(0, 256, (24, 16, 16), dtype=np.uint8)
    fs_idx = build_neighbor_index(images, k=3, backbone="pixels8", cache=False)
    clusters = np.repeat(np.arange(6), 4)
    head = train_similarity_head(fs_idx.vectors, clusters, dim=8, epochs=2, seed=0)
    head.save(tmp_path / "head.safetensors")
    idx = build_neighbor_index(
        images, k=3, backbone="pixels8", cache=False, head=tmp_path / "head.safetensors"
    )
    assert idx.vectors.shape == (24, 8)
    assert idx.metadata["head"]["sha256"] == head.sha256
    folder = idx.save(tmp_path / "idx")
    assert (folder / "head.safetensors").read_bytes() == head.to_bytes()
    loaded = load_neighbor_index(folder)
    ids, scores = loaded.search(images[[7]], k=1, cache=False)
    assert ids[0, 0] == "7" and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    (folder / "head.safetensors").write_bytes(b"x")
    with pytest.raises(DataError, match="head.safetensors does not match"):
        load_neighbor_index(folder)
    with pytest.raises(DataError, match="no such file"):
        build_neighbor_index(images, backbone="pixels8", head=tmp_path / "none.safetensors")


def test_multi_layer_pooling_is_recorded_and_reused_by_search(rng, tmp_path):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    from dcsi.backbones import pooled_dim

    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(tv.models.resnet18(weights=None).state_dict(), weights)
    images = rng.integers(0, 256, (12, 20, 20), dtype=np.uint8)
    kw = {"weights": weights, "cache": False, "device": "cpu"}
    idx = build_neighbor_index(images, k=3, backbone="resnet18", image_size=32, pooling="sap", **kw)
    meta = idx.metadata
    assert meta["pooling"] == "sap" and meta["dim"] == pooled_dim("resnet18", "sap")
    assert meta["image_size"] == 32 and len(meta["weights_sha256"]) == 64
    loaded = load_neighbor_index(idx.save(tmp_path / "idx"))
    ids, scores = loaded.search(images[[2, 8]], k=1, **kw)
    assert list(ids[:, 0]) == ["2", "8"]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    with pytest.raises(DataError, match="pass the same weights file"):
        other = tmp_path / "other.pth"
        torch.manual_seed(1)
        torch.save(tv.models.resnet18(weights=None).state_dict(), other)
        loaded.search(images[:1], k=1, weights=other, cache=False, device="cpu")


def test_auto_uses_faiss_above_the_threshold(rng, monkeypatch):
    pytest.importorskip("faiss")
    from dcsi import neighbor_index

    X = clustered(rng, n=400, d=8)
    ids = [str(i) for i in range(400)]
    assert index_features(X, ids, k=5).metadata["method"] == "exact"
    monkeypatch.setattr(neighbor_index, "FAISS_THRESHOLD", 100)
    idx = index_features(X, ids, k=5)
    assert idx.metadata["method"] == "faiss" and idx.metadata["faiss"]["index"] == "IVFFlat"


def test_default_pooling_is_sam_where_the_backbone_has_layers_to_pool():
    from dcsi.neighbor_index import DEFAULT_POOLING, default_pooling

    assert DEFAULT_POOLING == "sam"
    assert default_pooling("efficientnet_lite0") == "sam"
    assert default_pooling("resnet18") == "sam"
    assert default_pooling("pixels8") == "gap"  # no intermediate layers
    assert default_pooling(object()) == "gap"  # an extractor object
