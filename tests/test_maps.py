"""dcsi.maps (image_map, plot_image_map): neighbour placement against a brute-force loop."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from dcsi.exceptions import InvalidParameterError
from dcsi.image_clusters import reduce_features
from dcsi.maps import image_map, place_by_neighbors, plot_image_map


def _blobs(rng, k=4, per=60, dim=30):
    centres = rng.normal(size=(k, dim)) * 10.0
    truth = np.repeat(np.arange(k), per)
    return (centres[truth] + rng.normal(size=(truth.size, dim))).astype(np.float32), truth


@pytest.mark.parametrize("block_size", [1, 7, 4096])
def test_placement_matches_a_brute_force_loop(rng, block_size):
    anchors = rng.normal(size=(40, 6))
    pos = rng.normal(size=(40, 2))
    queries = rng.normal(size=(25, 6))
    got = place_by_neighbors(queries, anchors, pos, n_neighbors=5, block_size=block_size)
    for i, q in enumerate(queries):
        d = [float(np.sum((q - a) ** 2)) for a in anchors]
        nearest = sorted(range(40), key=lambda j: d[j])[:5]
        ref = np.mean([pos[j] for j in nearest], axis=0)
        assert got[i] == pytest.approx(ref, abs=1e-5)


def test_placement_with_fewer_anchors_than_neighbours(rng):
    got = place_by_neighbors(rng.normal(size=(3, 2)), np.eye(2), np.eye(2), n_neighbors=5)
    assert np.allclose(got, 0.5)


def test_map_is_deterministic_and_keeps_blobs_apart(rng):
    x, truth = _blobs(rng)
    a = image_map(x, seed=1)
    b = image_map(x, seed=1)
    assert a.shape == (x.shape[0], 2) and a.dtype == np.float32
    assert np.array_equal(a, b)
    found = KMeans(n_clusters=4, n_init=3, random_state=0).fit_predict(a)
    assert adjusted_rand_score(truth, found) > 0.95


def test_subsample_then_neighbour_placement(rng):
    x, truth = _blobs(rng, per=50)
    emb = image_map(x, seed=2, max_points=60, n_components=10)
    # the same subsample and PCA as image_map, placement by the reference loop
    z = reduce_features(x, n_components=10, seed=2)
    fit = np.sort(np.random.default_rng(2).choice(x.shape[0], 60, replace=False))
    rest = np.setdiff1d(np.arange(x.shape[0]), fit)
    for i in rest[:20]:
        d = ((z[fit] - z[i]) ** 2).sum(axis=1)
        ref = emb[fit][np.argsort(d)[:5]].mean(axis=0)
        assert emb[i] == pytest.approx(ref, abs=1e-4)
    found = KMeans(n_clusters=4, n_init=3, random_state=0).fit_predict(emb)
    assert adjusted_rand_score(truth, found) > 0.9


def test_plot_returns_png_and_writes_it(rng, tmp_path):
    emb = rng.normal(size=(500, 2))
    groups = rng.integers(0, 40, size=500)
    groups[:5] = -1
    out = tmp_path / "map.png"
    png = plot_image_map(emb, groups, names=[f"g{i}" for i in range(40)], path=out, title="t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.read_bytes() == png
    assert plot_image_map(emb) == plot_image_map(emb)  # no timestamp in the file


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1}, "The 'seed' parameter of image_map must be an int >= 0"),
        ({"max_points": 2}, "The 'max_points' parameter of image_map"),
        ({"n_neighbors": 0}, "The 'n_neighbors' parameter of image_map"),
        ({"perplexity": 0.0}, "The 'perplexity' parameter of image_map"),
        ({"n_components": 1.5}, "The 'n_components' parameter of image_map"),
    ],
)
def test_map_bad_parameters(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        image_map(np.zeros((10, 3)), **kwargs)


def test_map_bad_features():
    with pytest.raises(InvalidParameterError, match="at least 3 images"):
        image_map(np.zeros((2, 3)))
    with pytest.raises(InvalidParameterError, match="must be a 2-D array"):
        image_map(np.zeros(5))


def test_plot_bad_inputs():
    with pytest.raises(InvalidParameterError, match=r"must have shape \(n, 2\)"):
        plot_image_map(np.zeros((4, 3)))
    with pytest.raises(InvalidParameterError, match="'colors' parameter of plot_image_map"):
        plot_image_map(np.zeros((4, 2)), np.zeros(3, dtype=int))
    with pytest.raises(InvalidParameterError, match="'colors' parameter of plot_image_map"):
        plot_image_map(np.zeros((4, 2)), np.zeros(4))


def test_public_names():
    # the module is dcsi.maps, not dcsi.image_map: importing a submodule named like
    # the function would replace dcsi.image_map (the function) by the module
    import dcsi.maps

    assert dcsi.image_map is image_map
    assert dcsi.plot_image_map is plot_image_map
