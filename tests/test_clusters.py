"""Class clusters and the router (against a literal Algorithm 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dcsi.clusters import ClassClusters, Router, cluster_classes, routing_error
from dcsi.exceptions import DataError, InvalidParameterError
from dcsi.similarity.class_cosine import class_similarity, class_stats


def _grouped(rng, groups=((0, 1, 2), (3, 4), (5,)), n=20, d=16):
    """Classes that come in obvious groups: shared group centre + a small class offset."""
    k = sum(len(g) for g in groups)
    gc = np.eye(len(groups), d) * 6.0  # equally far-apart groups
    centres = np.empty((k, d))
    for gi, g in enumerate(groups):
        for c in g:
            centres[c] = gc[gi] + rng.normal(size=d) * 0.8
    y = np.repeat(np.arange(k), n)
    x = centres[y] + rng.normal(size=(k * n, d)) * 0.3
    return x, y


def test_partitions_follow_group_structure(rng):
    x, y = _grouped(rng)
    S = class_similarity(x, y)
    cc = cluster_classes(S, classes=list("abcdef"))
    assert cc.ks == [2, 3, 4, 5, 6]
    np.testing.assert_array_equal(cc.assignment(3), [0, 0, 0, 1, 1, 2])
    assert cc.recommended_k == 3
    assert cc.clusters(3) == [["a", "b", "c"], ["d", "e"], ["f"]]
    assert cc.assignment(6).tolist() == [0, 1, 2, 3, 4, 5]
    d = cc.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["partitions"]["3"] == [0, 0, 0, 1, 1, 2]
    assert d["sizes"]["3"] == [3, 2, 1]
    assert d["recommended_k"] == 3 and d["method"] == "hierarchical"
    assert "eigen-gap" in d["rule"]


@pytest.mark.parametrize("linkage", ["single", "complete", "average", "weighted", "ward"])
def test_linkages(rng, linkage):
    x, y = _grouped(rng)
    S = class_similarity(x, y)
    cc = cluster_classes(S, linkage=linkage, class_counts=np.bincount(y), rule="silhouette")
    np.testing.assert_array_equal(cc.assignment(3), [0, 0, 0, 1, 1, 2])
    assert cc.linkage == linkage
    assert "silhouette" in cc.rule


def test_distance_matrices_cluster_too(rng):
    x, y = _grouped(rng)
    D = class_similarity(x, y, "euclidean")
    cc = cluster_classes(D, kind="distance")
    np.testing.assert_array_equal(cc.assignment(3), [0, 0, 0, 1, 1, 2])


def test_small_k_edge_cases(rng):
    x, y = _grouped(rng, groups=((0,), (1,)))
    cc = cluster_classes(class_similarity(x, y))
    assert cc.ks == [2] and cc.recommended_k == 2
    assert cc.to_dict()["partitions"] == {"2": [0, 1]}
    x, y = _grouped(rng, groups=((0, 1), (2,)))
    S = class_similarity(x, y)
    cc = cluster_classes(S)
    assert cc.ks == [2, 3] and cc.recommended_k == 2
    np.testing.assert_array_equal(cc.assignment(), [0, 0, 1])
    cc = cluster_classes(S, rule="silhouette")
    assert cc.recommended_k == 2 and cc.scores[3] is None


def test_class_order_invariance(rng):
    x, y = _grouped(rng)
    S = class_similarity(x, y)
    perm = rng.permutation(6)
    a = cluster_classes(S).assignment(3)
    b = cluster_classes(S[np.ix_(perm, perm)]).assignment(3)
    # same grouping of classes, whatever the order
    for i in range(6):
        for j in range(6):
            assert (a[perm[i]] == a[perm[j]]) == (b[i] == b[j])


def test_cluster_errors(rng):
    S = np.eye(3)
    with pytest.raises(InvalidParameterError, match="The 'linkage' parameter of cluster_classes"):
        cluster_classes(S, linkage="centroid")
    with pytest.raises(InvalidParameterError, match="linkage='ward' needs Euclidean"):
        cluster_classes(S, linkage="ward")
    with pytest.raises(InvalidParameterError, match="needs at least 2 classes; got 1"):
        cluster_classes(np.ones((1, 1)))
    with pytest.raises(InvalidParameterError, match="must be a square K x K"):
        cluster_classes(np.ones((2, 3)))
    with pytest.raises(InvalidParameterError, match=r"The 'ks' parameter .* in the range \[2, 3\]"):
        cluster_classes(S, ks=[4])
    with pytest.raises(InvalidParameterError, match="must hold at least one int"):
        cluster_classes(S, ks=[])
    with pytest.raises(InvalidParameterError, match="NaN off-diagonal"):
        cluster_classes(np.array([[1.0, np.nan], [np.nan, 1.0]]))
    with pytest.raises(InvalidParameterError, match="No partition with k=5"):
        cluster_classes(S).assignment(5)


def _algorithm2(cluster_features, query):
    """Literal Algorithm 2: mean cosine distance of the query to every image of each
    cluster; the cluster with the smallest mean distance wins (first one on ties)."""
    best, best_h = None, None
    for c, feats in enumerate(cluster_features):
        total, count = 0.0, 0
        for s1 in feats:
            total += 1.0 - float(s1 @ query) / (np.linalg.norm(s1) * np.linalg.norm(query))
            count += 1
        h = total / count
        if best_h is None or h < best_h:
            best, best_h = c, h
    return best


def test_router_equals_literal_algorithm2(rng):
    x, y = _grouped(rng, n=12)
    assignment = np.array([0, 0, 1, 1, 2, 2])
    st = class_stats(x, y)
    router = Router(st.sums, st.counts, assignment)
    cluster_features = [x[assignment[y] == c] for c in range(3)]
    q = np.vstack([x[::5] + rng.normal(size=x[::5].shape), rng.normal(size=(20, 16))])
    expected = np.array([_algorithm2(cluster_features, qi) for qi in q])
    np.testing.assert_array_equal(router.route_features(q), expected)
    # scores are exactly the mean cosine similarities
    sc = router.scores(q[:3])
    for i in range(3):
        for c in range(3):
            f = cluster_features[c]
            ref = np.mean(f @ q[i] / (np.linalg.norm(f, axis=1) * np.linalg.norm(q[i])))
            assert sc[i, c] == pytest.approx(ref, abs=1e-12)
    literal = np.array([_algorithm2(cluster_features, xi) for xi in x])
    assert routing_error(router, x, y) == pytest.approx(np.mean(literal != assignment[y]))


def test_routing_error_counts_mistakes(rng):
    x, y = _grouped(rng, groups=((0,), (1,)), n=10)
    st = class_stats(x, y)
    router = Router(st.sums, st.counts, np.array([0, 1]))
    assert routing_error(router, x, y) == 0.0
    # a deliberately wrong assignment for evaluation: every query mis-routed
    assert routing_error(router, x, y, np.array([1, 0])) == 1.0


class _FakeExtractor:
    """A backbone that uses the mean grey level and its complement as features."""

    name = "fake"

    def transform(self, img):
        import torch

        a = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        return torch.tensor([a.mean(), 1.0 - a.mean()])

    def __call__(self, batch):
        return batch


def test_route_pil_images_with_extractor():
    pytest.importorskip("torch")
    from PIL import Image

    dark = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (0, 10, 20)]
    light = [Image.fromarray(np.full((5, 3), v, np.uint8)) for v in (240, 250)]
    ext = _FakeExtractor()
    feats = np.array([ext.transform(im).numpy() for im in dark + light])
    y = np.array([0, 0, 0, 1, 1])
    st = class_stats(feats, y)
    router = Router(st.sums, st.counts, np.array([0, 1]), ext)
    np.testing.assert_array_equal(router.route(dark + light, batch_size=2), y)
    assert routing_error(router, dark + light, y) == 0.0
    assert "fake" in repr(router)


def test_router_errors(rng):
    sums = rng.normal(size=(3, 4))
    counts = np.array([2, 3, 4])
    with pytest.raises(InvalidParameterError, match="one count per class"):
        Router(sums, counts[:2], np.array([0, 0, 1]))
    with pytest.raises(InvalidParameterError, match="one cluster id per class"):
        Router(sums, counts, np.array([0, 1]))
    with pytest.raises(InvalidParameterError, match="cluster ids >= 0"):
        Router(sums, counts, np.array([0, -1, 1]))
    with pytest.raises(InvalidParameterError, match=r"Clusters \[1\] of the Router have no images"):
        Router(sums, counts, np.array([0, 0, 2]))
    with pytest.raises(InvalidParameterError, match="must be non-negative"):
        Router(sums, np.array([1, -1, 2]), np.array([0, 1, 1]))
    router = Router(sums, counts, np.array([0, 1, 1]))
    with pytest.raises(InvalidParameterError, match="must have 4 columns"):
        router.route_features(rng.normal(size=(2, 5)))
    with pytest.raises(InvalidParameterError, match=r"class ids in \[0, 2\]"):
        routing_error(router, rng.normal(size=(2, 4)), np.array([0, 3]))
    with pytest.raises(InvalidParameterError, match="1-D array of int class ids"):
        routing_error(router, rng.normal(size=(2, 4)), np.array([0.0, 1.0]))
    with pytest.raises(InvalidParameterError, match="got 2 queries but 3 labels"):
        routing_error(router, rng.normal(size=(2, 4)), np.array([0, 1, 1]))


def test_classclusters_is_frozen(rng):
    cc = cluster_classes(class_similarity(*_grouped(rng)))
    assert isinstance(cc, ClassClusters)
    with pytest.raises(AttributeError):
        cc.linkage = "single"


# -- what the views read: the tree and the spectrum are stored ---------------------------
def _old_eigengap_scores(d, ks):
    """The eigen-gap scores as computed before the one Laplacian (reference)."""
    k = d.shape[0]
    masked = d + np.diag(np.full(k, np.inf))
    sigma = float(np.median(masked.min(axis=1)))
    a = np.exp(-(d**2) / (2.0 * sigma**2))
    deg = a.sum(axis=1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    lap = np.eye(k) - inv[:, None] * a * inv[None, :]
    lam = np.sort(np.linalg.eigvalsh(0.5 * (lap + lap.T)))
    return {c: (float(lam[c] - lam[c - 1]) if c < k else None) for c in ks}, lam


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eigengap_scores_unchanged_by_the_shared_laplacian(seed):
    rng = np.random.default_rng(seed)
    x, y = _grouped(rng, groups=((0, 1, 2), (3, 4), (5, 6, 7, 8), (9,)))
    S = class_similarity(x, y)
    cc = cluster_classes(S)
    d = np.maximum(0.5 * ((1.0 - S) + (1.0 - S).T), 0.0)
    np.fill_diagonal(d, 0.0)
    ref, lam = _old_eigengap_scores(d, cc.ks)
    assert cc.scores == ref  # bit for bit
    np.testing.assert_array_equal(cc.eigenvalues, np.clip(lam, 0.0, None))


def test_to_dict_stores_tree_and_spectrum(rng):
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    x, y = _grouped(rng)
    S = class_similarity(x, y)
    cc = cluster_classes(S, classes=list("abcdef"))
    d = cc.to_dict()
    json.dumps(d, allow_nan=False)
    dist = np.maximum(0.5 * ((1.0 - S) + (1.0 - S).T), 0.0)
    np.fill_diagonal(dist, 0.0)
    z = linkage(squareform(dist, checks=False), method="average")
    np.testing.assert_array_equal(d["linkage_matrix"], z)
    assert d["leaf_order"] == leaves_list(z).tolist()
    assert len(d["eigenvalues"]) == 6 and d["eigenvalues"] == sorted(d["eigenvalues"])
    assert d["tree_distance"] == "1 - similarity (symmetrised)"
    # the leaf order keeps each group of classes contiguous
    groups = np.array([0, 0, 0, 1, 1, 2])[d["leaf_order"]]
    assert (np.diff(groups) != 0).sum() == 2


def test_ward_tree_is_on_centroid_distances(rng):
    from dcsi.index import centroid_terms

    x, y = _grouped(rng)
    S = class_similarity(x, y)
    counts = np.bincount(y)
    cc = cluster_classes(S, linkage="ward", class_counts=counts)
    _, _, d2 = centroid_terms(S, counts)
    assert cc.to_dict()["tree_distance"].startswith("Euclidean distance between")
    # the first merge joins the two classes with the closest centroids
    iu = np.triu_indices(6, k=1)
    assert cc.linkage_matrix[0, 2] == pytest.approx(np.sqrt(d2[iu].min()))


def test_undefined_class_graph_stores_no_spectrum():
    S = np.ones((3, 3))  # every class at distance 0: sigma = 0
    d = cluster_classes(S).to_dict()
    assert "eigenvalues" not in d and "linkage_matrix" in d
    assert all(v is None for v in d["scores"].values())


# -- does a k separate the classes? --------------------------------------------------
DATA = Path(__file__).resolve().parent / "data"


def _blocks(rng, sizes=(4, 4, 4), within=0.8, between=0.4, noise=0.01):
    """A class matrix with planted groups of classes (symmetric, noisy)."""
    k = sum(sizes)
    g = np.repeat(np.arange(len(sizes)), sizes)
    s = np.where(g[:, None] == g[None, :], within, between) + rng.normal(size=(k, k)) * noise
    s = (s + s.T) / 2
    np.fill_diagonal(s, 0.9)
    return s, g


def _flat(rng, k=10, level=0.5, noise=0.01):
    """A class matrix with no group structure: equal off-diagonals plus noise."""
    s = level + rng.normal(size=(k, k)) * noise
    s = (s + s.T) / 2
    np.fill_diagonal(s, 0.9)
    return s


@pytest.mark.parametrize("rule", ["eigengap", "silhouette"])
def test_planted_groups_are_separable(rng, rule):
    s, g = _blocks(rng)
    cc = cluster_classes(s, rule=rule)
    assert cc.separable is True and cc.recommended_k == 3
    np.testing.assert_array_equal(cc.assignment(), g)
    assert cc.verdict.startswith("k = 3 separates the classes")
    assert cc.null_test["p_value"] <= 0.05 and cc.null_test["best_k"] == 3
    assert cc.null_test["statistic"] > cc.null_test["level"]


@pytest.mark.parametrize("rule", ["eigengap", "silhouette"])
def test_structureless_classes_get_no_k(rule):
    # a fixed draw: by design the test calls 5% of structureless draws separable
    s = _flat(np.random.default_rng(0))
    cc = cluster_classes(s, rule=rule, classes=[f"c{i}" for i in range(10)])
    assert cc.recommended_k is None and cc.separable is False
    assert cc.verdict.startswith("No k separates the classes")
    assert "95% level" in cc.verdict
    with pytest.raises(DataError, match="No k separates the classes.*pass k explicitly"):
        cc.assignment()
    assert cc.clusters(2)  # every partition stays available
    d = cc.to_dict()
    assert d["recommended_k"] is None and d["separable"] is False
    assert set(d["partitions"]) == {str(k) for k in range(2, 9)}
    json.dumps(d, allow_nan=False)


def test_structureless_draws_are_rarely_called_separable(rng):
    # the level holds: at alpha = 0.05, 40 structureless draws give about 2 false calls
    calls = sum(cluster_classes(_flat(rng), n_null=99).separable for _ in range(40))
    assert calls <= 8


def test_openclipart_classes_get_no_k():
    # the clip-art card: k = 2 isolates 'special' alone, best eigen-gap 0.0106
    ref = json.loads((DATA / "openclipart_cnn_cosine.json").read_text())
    cc = cluster_classes(
        np.asarray(ref["matrix"]), classes=ref["classes"], class_counts=ref["class_counts"]
    )
    assert cc.recommended_k is None and cc.separable is False
    assert "only isolates 'special'" in cc.verdict
    assert 2 in cc.null_test["peel_off"]


def test_peeling_off_one_class_is_not_a_separation(rng):
    # nine alike classes and one far away: k = 2 is the best score but only peels it off
    s = _flat(rng, level=0.6)
    s[9, :9] = s[:9, 9] = 0.1
    cc = cluster_classes(s, classes=list("abcdefghij"))
    assert cc.scores[2] == max(v for v in cc.scores.values() if v is not None)
    assert cc.recommended_k is None
    assert "only isolates 'j'" in cc.verdict or "only peels off" in cc.verdict


def test_small_k_is_not_tested(rng):
    x, y = _grouped(rng, groups=((0, 1), (2,)))
    cc = cluster_classes(class_similarity(x, y))
    assert cc.separable is None and cc.recommended_k == 2
    assert "not tested" in cc.verdict and cc.null_test is None
    cc = cluster_classes(_blocks(rng)[0], n_null=0)
    assert cc.separable is None and cc.recommended_k == 3


def test_separation_is_seeded(rng):
    s = _flat(rng)
    a, b = cluster_classes(s, seed=5).to_dict(), cluster_classes(s, seed=5).to_dict()
    assert a == b


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_null": -1}, "The 'n_null' parameter of cluster_classes"),
        ({"alpha": 1.5}, "The 'alpha' parameter of cluster_classes"),
        ({"seed": -2}, "The 'seed' parameter of cluster_classes"),
    ],
)
def test_separation_parameter_errors(kw, match):
    with pytest.raises(InvalidParameterError, match=match):
        cluster_classes(np.eye(5), **kw)
