"""cluster_images against slow references: blobs, brute-force medoids, sklearn metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.neighbors import kneighbors_graph

import dcsi
from dcsi import image_clusters as icm
from dcsi.exceptions import InvalidParameterError
from dcsi.image_clusters import (
    ImageClusterParams,
    cluster_images,
    cluster_summaries,
    compare_clusters,
    cut_tree_labels,
    merged_labels,
    reduce_features,
    reference_davies_bouldin,
)


def _blobs(rng, k=5, per=80, dim=64, noise=0.5):
    """Well separated Gaussian blobs in feature space (distinct directions)."""
    centres = rng.normal(size=(k, dim)) * 10.0
    truth = np.repeat(np.arange(k), per)
    feats = centres[truth] + rng.normal(scale=noise, size=(k * per, dim))
    perm = rng.permutation(truth.size)
    return feats[perm].astype(np.float32), truth[perm]


@pytest.mark.parametrize("method", ["merged", "kmeans", "agglomerative"])
def test_blobs_recovered_with_true_k(rng, method):
    x, truth = _blobs(rng)
    ic = cluster_images(features=x, n_clusters=5, method=method)
    assert ic.n_clusters == 5
    assert adjusted_rand_score(truth, ic.labels) > 0.99
    assert ic.labels.shape == (x.shape[0],) and ic.labels.dtype == np.int64
    assert ic.ids == [str(i) for i in range(x.shape[0])]


@pytest.mark.parametrize("method", ["merged", "kmeans", "agglomerative"])
@pytest.mark.parametrize("rule", ["davies_bouldin_gap", "silhouette", "davies_bouldin"])
def test_auto_finds_the_true_k(rng, method, rule):
    x, truth = _blobs(rng, k=6)
    ic = cluster_images(features=x, method=method, rule=rule, k_range=range(2, 13))
    assert ic.n_clusters == 6
    assert ic.k_tried == tuple(range(2, 13))
    assert len(ic.scores) == 11
    assert adjusted_rand_score(truth, ic.labels) > 0.99
    d = ic.to_dict()
    assert d["choice"]["chosen"] == 6 and d["choice"]["rule"] == rule


def test_agglomerative_subsample_assigns_the_rest(rng):
    x, truth = _blobs(rng, k=4, per=150)
    ic = cluster_images(features=x, n_clusters=4, method="agglomerative", max_exact=200)
    assert ic.n_fitted == 200
    assert adjusted_rand_score(truth, ic.labels) > 0.99


def test_merged_matches_kmeans_then_scipy_average_linkage(rng):
    """The slow reference: scikit-learn k-means into the small clusters, scipy's own
    average-linkage cut (``fcluster(..., "maxclust")``) of their centroids, then every
    image takes its small cluster's group."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.cluster import KMeans

    x = reduce_features(_blobs(rng, k=5, per=60, noise=4.0)[0])
    params = ImageClusterParams(n_fine=20, seed=2)
    fine = KMeans(n_clusters=20, n_init=3, random_state=2).fit(x)
    tree = linkage(fine.cluster_centers_, method="average", metric="cosine")
    for k in (2, 4, 7):
        want = fcluster(tree, k, criterion="maxclust")[fine.labels_]
        got = merged_labels(x, k, params)
        assert np.unique(got).size == k
        assert adjusted_rand_score(want, got) == pytest.approx(1.0)


def _cap(rng, centre, sd, n):
    """n unit vectors scattered around ``centre`` (3-d, so no PCA: the sphere itself)."""
    c = np.asarray(centre, dtype=float) / np.linalg.norm(centre)
    p = c + rng.normal(scale=sd, size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def test_merged_keeps_a_large_wide_group_that_kmeans_cuts():
    """600 images spread around one direction and four tight groups of 40: k-means with
    k = 5 cuts the large group (cheaper than joining two small ones, the uniform effect
    of k-means); merging small clusters keeps it whole."""
    rng = np.random.default_rng(0)
    big = _cap(rng, [1, 0, 0], 0.25, 600)
    small = [_cap(rng, [0, a, b], 0.08, 40) for a in (1, -1) for b in (0.6, -0.6)]
    x = np.concatenate([big, *small]).astype(np.float32)
    truth = np.repeat(np.arange(5), [600, 40, 40, 40, 40])
    merged = cluster_images(features=x, n_clusters=5, method="merged", n_fine=40)
    kmeans = cluster_images(features=x, n_clusters=5, method="kmeans")
    assert adjusted_rand_score(truth, merged.labels) > 0.95
    assert adjusted_rand_score(truth, kmeans.labels) < 0.6


def test_reference_davies_bouldin_against_a_loop_and_at_chance(rng):
    """Against scikit-learn on the same permuted copies, and a gap of about 0 where
    the data have no structure (they are their own reference), large on blobs."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import davies_bouldin_score

    noise = reduce_features(rng.normal(size=(600, 12)))
    ks = [2, 3, 5, 8]
    got = reference_davies_bouldin(noise, ks, n_references=3, seed=4)
    r = np.random.default_rng(4)
    copies = []
    for _ in range(3):
        c = r.permuted(noise, axis=0)  # every column shuffled on its own
        assert np.array_equal(np.sort(c, axis=0), np.sort(noise, axis=0))
        copies.append(c / np.linalg.norm(c, axis=1, keepdims=True))
    for k, value in zip(ks, got):
        loop = [
            davies_bouldin_score(c, KMeans(n_clusters=k, n_init=1, random_state=4).fit_predict(c))
            for c in copies
        ]
        assert value == pytest.approx(np.mean(loop), rel=1e-6)
        own = davies_bouldin_score(
            noise, KMeans(n_clusters=k, n_init=1, random_state=4).fit_predict(noise)
        )
        assert abs(value - own) < 0.1 * own  # chance level: within 10 %
    blobs = reduce_features(_blobs(rng, k=5)[0])
    ref = reference_davies_bouldin(blobs, [5])[0]
    own = davies_bouldin_score(
        blobs, KMeans(n_clusters=5, n_init=3, random_state=0).fit_predict(blobs)
    )
    assert ref - own > 1.0


def test_default_k_range():
    p = ImageClusterParams()
    assert p.resolve_k_range(1000) == tuple(range(2, 31))
    assert p.resolve_k_range(55) == (2, 3, 4, 5)
    assert p.resolve_k_range(5) == (2,)
    assert ImageClusterParams(k_range=(2, 3, 9)).resolve_k_range(5) == (2, 3)
    assert ImageClusterParams(n_clusters=7).resolve_k_range(100) == (7,)


def test_cut_tree_matches_agglomerative_clustering(rng):
    from sklearn.cluster import ward_tree

    x = rng.normal(size=(120, 6))
    graph = kneighbors_graph(x, n_neighbors=8)
    children = ward_tree(x, connectivity=graph)[0]
    cuts = cut_tree_labels(children, 120, [2, 3, 7, 15, 120])
    for k, lab in cuts.items():
        ref = AgglomerativeClustering(n_clusters=k, connectivity=graph, linkage="ward")
        assert adjusted_rand_score(ref.fit_predict(x), lab) == pytest.approx(1.0), k
        assert np.unique(lab).size == k


def test_summaries_match_a_brute_force_loop(rng):
    x = rng.normal(size=(90, 7))
    labels = rng.integers(0, 4, size=90)
    sim, reps, typical, atypical = cluster_summaries(x, labels, 4)
    for c in range(4):
        members = [i for i in range(90) if labels[i] == c]
        centre = np.zeros(7)
        for i in members:
            centre += x[i] / np.linalg.norm(x[i])
        cos = {
            i: float(x[i] @ centre / np.linalg.norm(x[i]) / np.linalg.norm(centre)) for i in members
        }
        ranked = sorted(members, key=lambda i: (-cos[i], i))
        assert reps[c] == ranked[0]
        assert list(typical[c]) == ranked[1:4]
        assert list(atypical[c]) == ranked[1:][::-1][:3]
        for i in members:
            assert sim[i] == pytest.approx(cos[i], abs=1e-6)


def test_cluster_ids_are_numbered_by_size(rng):
    x, _ = _blobs(rng, k=3, per=30)
    x = np.concatenate([x, x[:40] + 0.01])  # make the clusters unequal
    ic = cluster_images(features=x, n_clusters=3)
    sizes = ic.sizes
    assert list(sizes) == sorted(sizes, reverse=True)


def test_deterministic_for_a_seed(rng):
    x, _ = _blobs(rng, k=4, per=60, noise=3.0)
    for method in ("merged", "kmeans", "agglomerative"):
        a = cluster_images(features=x, method=method, seed=3, k_range=[2, 3, 4, 5])
        b = cluster_images(features=x, method=method, seed=3, k_range=[2, 3, 4, 5])
        assert np.array_equal(a.labels, b.labels)
        assert a.to_dict() == b.to_dict()


def test_comparison_against_sklearn_and_a_hand_purity():
    clusters = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    labels = np.array([0, 0, 1, 1, 1, 1, 2, 0, 1, 2])
    cmp = compare_clusters(clusters, labels, ["a", "b", "c"])
    assert cmp.ari == pytest.approx(adjusted_rand_score(labels, clusters))
    assert cmp.nmi == pytest.approx(normalized_mutual_info_score(labels, clusters))
    # cluster 0: 2 of class a; cluster 1: 3 of class b; cluster 2: 2 of class c
    assert cmp.purity == pytest.approx((2 + 3 + 2) / 10)
    # class a: 2 in cluster 0, 1 in cluster 2 -> 2/3, not split; class b: 1, 3, 1 of 5
    # -> 3/5 not split; class c: 2 of 2 in cluster 2 -> not split
    assert cmp.split_classes == []
    # cluster 2: a 1, b 1, c 2 of 4 -> 2/4 = 0.5, not < 0.5 -> not merged
    assert cmp.merged_clusters == []
    clusters2 = np.array([0, 1, 2, 0, 1, 2, 3, 3, 3, 3])
    cmp2 = compare_clusters(clusters2, labels, ["a", "b", "c"])
    split = {d["class"]: d["share"] for d in cmp2.split_classes}
    # class a (rows 0, 1, 7): clusters 0, 1, 3 -> largest 1/3; class b (rows 2, 3, 4,
    # 5, 8): clusters 2, 0, 1, 2, 3 -> largest 2/5; class c: 2 of 2 in cluster 3
    assert split == {"a": pytest.approx(1 / 3), "b": pytest.approx(0.4)}
    merged = {d["cluster"]: d for d in cmp2.merged_clusters}
    # cluster 3 (rows 6..9): c, a, b, c -> 2/4 -> not merged; cluster 0: a, b -> 1/2
    assert set(merged) == set()
    assert cmp2.contingency.sum() == 10


def test_merged_and_split_lists():
    clusters = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    labels = np.array([0, 1, 2, 2, 3, 3, 3, 3])
    cmp = compare_clusters(clusters, labels, ["a", "b", "c", "d"])
    assert [d["cluster"] for d in cmp.merged_clusters] == []  # c holds 2/4
    clusters = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    labels = np.array([0, 1, 2, 3, 3, 3, 3, 3])
    cmp = compare_clusters(clusters, labels, ["a", "b", "c", "d"])
    assert [d["cluster"] for d in cmp.merged_clusters] == [0]
    assert cmp.merged_clusters[0]["classes"] == [
        {"class": name, "share": pytest.approx(1 / 3)} for name in "abc"
    ]
    # d: clusters 1 (2), 2 (1), 3 (2) of 5 -> largest 2/5 -> split
    assert [d["class"] for d in cmp.split_classes] == ["d"]
    assert [c["cluster"] for c in cmp.split_classes[0]["clusters"]] == [1, 3, 2]


def test_labels_give_a_comparison_and_compare_agrees(rng):
    x, truth = _blobs(rng, k=3, per=40)
    ic = cluster_images(features=x, n_clusters=3, labels=truth)
    assert ic.comparison is not None and ic.comparison.ari > 0.99
    again = ic.compare(truth, ["x", "y", "z"])
    assert again.nmi == pytest.approx(ic.comparison.nmi)
    assert cluster_images(features=x, n_clusters=3).comparison is None


def test_to_dict_is_json_and_caps_the_labels(rng, monkeypatch):
    x, truth = _blobs(rng, k=3, per=40)
    ic = cluster_images(features=x, labels=truth, k_range=[2, 3, 4])
    d = ic.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    assert d["labels"] == ic.labels.tolist()
    assert d["n_clusters"] == ic.n_clusters == len(d["clusters"])
    c0 = d["clusters"][0]
    assert set(c0) == {"id", "size", "representative", "typical", "atypical", "mean_similarity"}
    assert len(c0["typical"]) == 3 and len(c0["atypical"]) == 3
    assert d["comparison"]["ari"] > 0.99
    monkeypatch.setattr(icm, "LABELS_CAP", 50)
    assert ic.to_dict()["labels"] is None


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_identical_rows_give_json_without_nan():
    x = np.ones((20, 4), dtype=np.float32)
    d = cluster_images(features=x, k_range=[2, 3]).to_dict()
    json.dumps(d, allow_nan=False)
    assert d["choice"]["scores"] == [None, None] and d["n_clusters"] == 1


@pytest.mark.parametrize("method", ["merged", "kmeans", "agglomerative"])
def test_zero_rows_are_clustered_without_error(method):
    """All-zero feature rows (e.g. a backbone's output for blank images) stay zero
    after normalisation; every method still returns clusters."""
    x = np.vstack([np.zeros((20, 4)), np.eye(4)[np.arange(20) % 2] * 3.0]).astype(np.float32)
    ic = cluster_images(features=x, n_clusters=3, method=method)
    assert ic.n_clusters == 3
    assert np.unique(ic.labels[:20]).size == 1


def test_feature_set_and_image_set_sources(rng):
    images = rng.integers(0, 256, size=(30, 8, 8), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 10)
    image_set = dcsi.open_source(images, labels=labels)
    feats = images.reshape(30, -1).astype(np.float32)
    ic = cluster_images(image_set, features=feats, n_clusters=3)
    assert ic.ids == image_set.ids
    assert ic.comparison is not None


def test_reduce_features_unit_rows(rng):
    x = rng.normal(size=(40, 80))
    z = reduce_features(x, n_components=10)
    assert z.shape == (40, 10)
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- errors
def _invalid_cases():
    for name, rules in ImageClusterParams.CONSTRAINTS.items():
        for rule in rules:
            for bad in rule.invalid_examples():
                if not any(r.accepts(bad) for r in rules):
                    yield name, bad


@pytest.mark.parametrize(("name", "bad"), list(_invalid_cases()))
def test_declared_constraints_reject_bad_values(name, bad):
    with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of cluster_images"):
        cluster_images(features=np.zeros((5, 3)), **{name: bad})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k_range": [1, 2]}, r"'k_range' parameter .* ints >= 2"),
        ({"k_range": []}, r"'k_range' parameter .* non-empty"),
        ({"k_range": "2-5"}, r"'k_range' parameter"),
        ({"k_range": [50, 60]}, r"k <= n_images - 1 = 9"),
        ({"n_clusters": 11}, r"'n_clusters' parameter .* range \[2, 10\]"),
        ({"features": np.full((10, 3), np.nan)}, "NaN or infinite"),
        ({"features": np.zeros(10)}, r"must be a 2-D array"),
        ({"features": np.zeros((2, 3))}, "at least 3 images"),
        ({"labels": np.zeros(4, dtype=int)}, r"'labels' parameter .* length 10"),
        ({"labels": np.zeros(10)}, "integer class ids"),
        ({"source": "sample:digits"}, r"'source' parameter .* ImageSet"),
    ],
)
def test_bad_inputs_give_one_line_errors(kwargs, match):
    args = {"features": np.random.default_rng(0).normal(size=(10, 3))}
    args.update(kwargs)
    source = args.pop("source", None)
    with pytest.raises(InvalidParameterError, match=match) as info:
        cluster_images(source, **args)
    assert "\n" not in str(info.value)


def test_nothing_given():
    with pytest.raises(InvalidParameterError, match="needs images or features"):
        cluster_images()


def test_public_names():
    assert dcsi.cluster_images is cluster_images
    assert dcsi.ImageClusters is icm.ImageClusters


class _GreyHistogram:
    """A backbone whose features are a coarse grey-level histogram (no weights)."""

    name = "grey-histogram"

    def transform(self, img):
        import torch

        a = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        hist = np.histogram(a, bins=8, range=(0.0, 1.0))[0].astype(np.float32)
        return torch.from_numpy(hist + 0.01)

    def __call__(self, batch):
        return batch


def test_images_go_through_extract_features(rng):
    pytest.importorskip("torch")
    dark = rng.integers(0, 60, size=(20, 6, 6))
    light = rng.integers(190, 256, size=(20, 6, 6))
    images = np.concatenate([dark, light]).astype(np.uint8)
    labels = np.repeat([0, 1], 20)
    ic = cluster_images(images, n_clusters=2, backbone=_GreyHistogram(), labels=labels, seed=1)
    assert len(ic.ids) == 40
    assert ic.comparison is not None and ic.comparison.ari == pytest.approx(1.0)
