"""The DCSI, its components and its peers (CSG, cosine silhouette)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import braycurtis
from sklearn.metrics import silhouette_samples

from dcsi.exceptions import InvalidParameterError
from dcsi.index import (
    TEMPERATURE,
    compute_index,
    cosine_silhouette,
    cosine_silhouette_samples,
    cumulative_spectral_gradient,
    index_components,
    index_report,
)
from dcsi.similarity.class_cosine import class_similarity
from dcsi.similarity.spreads import class_spreads
from dcsi.similarity.wavelet import class_wavelet_similarity


def _blobs(rng, k=4, n=30, d=12, sep=2.0):
    centres = rng.normal(size=(k, d)) * sep
    y = np.repeat(np.arange(k), n)
    x = centres[y] + rng.normal(size=(k * n, d)) + 5.0  # positive-ish, like ReLU features
    return x, y


def _haar_rows(images):
    """Wavelet rows the slow way: pywt.wavedec2 (Haar, level 1) image by image, the
    approximation and detail arrays flattened and concatenated."""
    import pywt

    rows = []
    for img in images.astype(np.float64):
        cA, (cH, cV, cD) = pywt.wavedec2(img, "db1", level=1)
        rows.append(np.concatenate([cA.ravel(), cH.ravel(), cV.ravel(), cD.ravel()]))
    return np.array(rows)


def _view_fisher(x, y):
    """One view's Fisher ratios, loop by loop from its vectors: unbiased |m_c|^2 and
    m_a . m_b as means over pairs of distinct images, spreads, F_ab."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    k = int(y.max()) + 1
    members = [np.flatnonzero(y == c) for c in range(k)]

    def mean_dot(a, b):
        dots = [float(u[i] @ u[j]) for i in members[a] for j in members[b] if i != j]
        return sum(dots) / len(dots) if dots else 1.0  # a single image: |m|^2 = 1

    q = [mean_dot(c, c) for c in range(k)]
    F = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            if b != a:
                d2 = max(q[a] + q[b] - 2.0 * mean_dot(a, b), 0.0)
                v = (1.0 - q[a]) + (1.0 - q[b])
                F[a, b] = d2 / v if v > 0 else (math.inf if d2 > 0 else 0.0)
    return F


def _two_views(seed, sep):
    """Features (29, 12) and 8 x 8 grey images of 4 classes of unequal size (9, 7, 5, 8
    images), and their labels."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), [9, 7, 5, 8])
    centres = rng.integers(40, 200, size=(4, 1, 1))
    images = np.clip(centres[y] + rng.normal(0, 60, size=(len(y), 8, 8)), 0, 255).astype(np.uint8)
    x, _ = _blobs(rng, k=4, n=10, sep=sep)
    return x[:29], images, y


def _reference_dcsi(x, y, tau=TEMPERATURE, images=None):
    """Slow reference of definition 3: per class, the chance of overlapping at least one
    other class, with pair overlaps the smallest over the views (features ``x``; the
    Haar rows of ``images`` when given), averaged over the classes."""
    views = [_view_fisher(x, y)]
    if images is not None:
        views.append(_view_fisher(_haar_rows(images), y))
    k = views[0].shape[0]
    total = 0.0
    for a in range(k):
        apart = 1.0  # the chance that class a overlaps none of the others
        for b in range(k):
            if b != a:
                o = min(math.exp(-F[a, b] / tau) for F in views)
                apart *= 1.0 - o
        total += 1.0 - apart
    return total / k


@pytest.mark.parametrize("sep", [0.25, 0.35, 0.5])
def test_index_equals_reference_from_features(rng, sep):
    x, y = _blobs(rng, sep=sep)
    S = class_similarity(x, y)
    got = compute_index(S, np.bincount(y))
    assert got == pytest.approx(_reference_dcsi(x, y), abs=1e-10)
    assert 0.0 < got < 1.0


def test_index_unequal_counts_and_singleton(rng):
    x, y = _blobs(rng, k=3, n=20, sep=0.05)
    keep = (y != 2) | (np.arange(len(y)) % 7 == 0)
    x, y = x[keep], y[keep]
    x = np.vstack([x, x[:1] + 0.1])
    y = np.append(y, 3)  # a class of one image: no within-class pair, spread 0
    S = class_similarity(x, y)
    comp = index_components(S, np.bincount(y))
    assert comp["spread"][3] == pytest.approx(0.0, abs=1e-12)
    assert comp["value"] == pytest.approx(_reference_dcsi(x, y), abs=1e-10)


def test_index_class_order_invariant_and_monotone(rng):
    x, y = _blobs(rng, k=5, sep=0.05)
    S = class_similarity(x, y)
    n = np.bincount(y)
    perm = rng.permutation(5)
    assert compute_index(S[np.ix_(perm, perm)], n[perm]) == pytest.approx(
        compute_index(S, n), abs=1e-12
    )
    # classes further apart -> lower index; near-identical classes -> higher
    x_far, _ = _blobs(np.random.default_rng(1), k=5, sep=3.0)
    x_near, _ = _blobs(np.random.default_rng(1), k=5, sep=0.01)
    far = compute_index(class_similarity(x_far, y), n)
    near = compute_index(class_similarity(x_near, y), n)
    assert far < near
    assert far < 1e-6 and near > 0.5


@pytest.mark.parametrize("scale", [0.2, 1.0, 5.0])
def test_index_shuffled_labels_near_one_whatever_the_spread(scale):
    """Classes drawn from one distribution (shuffled labels) sit near 1, for tight and
    wide spreads alike, and for 2 and 8 classes."""
    rng = np.random.default_rng(3)
    x = np.abs(rng.normal(size=(800, 64))) * scale + 1.0  # positive, like ReLU features
    for k in (2, 8):
        y = rng.permutation(np.arange(800) % k)
        assert compute_index(class_similarity(x, y), np.bincount(y)) > 0.9


def test_index_planted_separation_near_zero():
    """Two classes whose centres differ clearly relative to their spread: near 0."""
    rng = np.random.default_rng(4)
    base = np.abs(rng.normal(size=(400, 64))) + 1.0
    shift = np.zeros(64)
    shift[:8] = 3.0
    y = np.repeat([0, 1], 200)
    x = base + shift * y[:, None]
    assert compute_index(class_similarity(x, y), np.bincount(y)) < 0.01


@pytest.mark.parametrize("seed", [0, 1])
def test_index_with_wavelet_view_equals_reference(seed):
    """Both views (features and the Haar rows of grey images), 4 classes of unequal
    size, against the loop reference with pywt image by image (1e-6: dcsi keeps the
    coefficient rows in float32; the CNN view alone to 1e-10)."""
    x, images, y = _two_views(seed, sep=0.2)
    W = class_wavelet_similarity(images, y).matrix
    got = compute_index(class_similarity(x, y), np.bincount(y), wavelet=W)
    assert got == pytest.approx(_reference_dcsi(x, y, images=images), abs=1e-6)
    cnn_only = compute_index(class_similarity(x, y), np.bincount(y))
    assert cnn_only == pytest.approx(_reference_dcsi(x, y), abs=1e-10)
    assert got <= cnn_only + 1e-12  # a second view can only separate pairs further


def test_index_pair_separated_by_one_view_is_separated():
    """Two classes the CNN view cannot tell apart but the pixels separate clearly: the
    pair overlaps as little as its best view says (the smaller overlap)."""
    S = np.array([[0.5, 0.5], [0.5, 0.5]])  # cnn: one distribution, overlap 1
    W = np.array([[0.9, 0.2], [0.2, 0.9]])  # pixels: far apart
    assert compute_index(S, [10, 10]) == pytest.approx(1.0)
    assert compute_index(S, [10, 10], wavelet=W) < 1e-6
    comp = index_components(S, [10, 10], W)
    assert comp["fisher"][0, 1] == 0.0 and comp["fisher_wavelet"][0, 1] > 1.0


def test_index_is_mean_chance_of_overlapping_another_class():
    """Hand computation with three classes: overlaps o_01, o_02, o_12 from Fisher ratios
    chosen through S, then c_a = 1 - prod (1 - o_ab) and their mean."""
    # q = 0.9 for all (v = 0.1 each, v_a + v_b = 0.2): F_ab = (1.8 - 2 S_ab) / 0.2
    S = np.array([[0.9, 0.895, 0.85], [0.895, 0.9, 0.88], [0.85, 0.88, 0.9]])
    F = {(0, 1): 0.05, (0, 2): 0.5, (1, 2): 0.2}
    o = {p: math.exp(-f / TEMPERATURE) for p, f in F.items()}
    c0 = 1 - (1 - o[0, 1]) * (1 - o[0, 2])
    c1 = 1 - (1 - o[0, 1]) * (1 - o[1, 2])
    c2 = 1 - (1 - o[0, 2]) * (1 - o[1, 2])
    comp = index_components(S, [40, 40, 40])
    np.testing.assert_allclose(comp["confusability"], [c0, c1, c2], atol=1e-12)
    assert comp["value"] == pytest.approx((c0 + c1 + c2) / 3, abs=1e-12)
    assert list(comp["nearest"]) == [1, 0, 1]


def test_index_two_classes_is_pair_overlap(rng):
    x, y = _blobs(rng, k=2, sep=0.05)
    comp = index_components(class_similarity(x, y), np.bincount(y))
    assert comp["value"] == pytest.approx(comp["overlap"][0, 1])
    assert comp["value"] > 0.0


def test_index_identical_and_spreadless_classes():
    # the same class matrix entries for both classes: D = 0, overlap 1
    S = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert compute_index(S, [10, 10]) == pytest.approx(1.0)
    # no spread (all images of a class identical): apart -> 0, same centre -> 1
    assert compute_index(np.array([[1.0, 0.2], [0.2, 1.0]]), [3, 3]) == 0.0
    assert compute_index(np.array([[1.0, 1.0], [1.0, 1.0]]), [3, 3]) == pytest.approx(1.0)
    # hand computation: D = 0.04, v_a + v_b = 0.2, F = 0.2
    S2 = np.array([[0.9, 0.88], [0.88, 0.9]])
    assert compute_index(S2, [50, 50]) == pytest.approx(math.exp(-0.2 / TEMPERATURE), abs=1e-12)


def test_index_skips_empty_classes(rng):
    x, y = _blobs(rng, k=3)
    S4 = class_similarity(x, y, n_classes=4)
    n4 = np.bincount(y, minlength=4)
    assert compute_index(S4, n4) == pytest.approx(
        compute_index(class_similarity(x, y), np.bincount(y))
    )


def test_index_errors():
    S = np.array([[0.9, 0.1], [0.1, 0.9]])
    with pytest.raises(InvalidParameterError, match=r"at least 2 classes with images \(K >= 2\)"):
        compute_index(S[:1, :1], [10])
    with pytest.raises(InvalidParameterError, match=r"at least 2 classes with images"):
        compute_index(S, [10, 0])
    with pytest.raises(InvalidParameterError, match="must be a square K x K"):
        compute_index(np.ones((2, 3)), [1, 2])
    with pytest.raises(InvalidParameterError, match="one count per class"):
        compute_index(S, [1, 2, 3])
    with pytest.raises(InvalidParameterError, match="non-negative integer counts"):
        compute_index(S, [1.5, 2])
    with pytest.raises(InvalidParameterError, match="NaN off-diagonal"):
        compute_index(np.array([[0.9, np.nan], [np.nan, 0.9]]), [3, 3])
    with pytest.raises(InvalidParameterError, match="'wavelet' parameter .* same 2 classes"):
        compute_index(S, [3, 3], wavelet=np.eye(3))
    with pytest.raises(InvalidParameterError, match="'wavelet' parameter .* square K x K"):
        compute_index(S, [3, 3], wavelet=np.ones((2, 3)))
    with pytest.raises(InvalidParameterError, match="'wavelet' parameter .* NaN off-diagonal"):
        compute_index(S, [3, 3], wavelet=np.array([[0.9, np.nan], [np.nan, 0.9]]))


def test_silhouette_equals_sklearn(rng):
    x, y = _blobs(rng, k=4, n=15, sep=0.5)
    y[0] = 3
    x = np.vstack([x, rng.normal(size=(1, x.shape[1]))])
    y = np.append(y, 5)  # a singleton class (silhouette 0) and a missing class id 4
    got = cosine_silhouette_samples(x, y, block_size=7)
    ref = silhouette_samples(x, y, metric="cosine")
    np.testing.assert_allclose(got, ref, atol=1e-10)
    assert cosine_silhouette(x, y) == pytest.approx(float(ref.mean()), abs=1e-10)


def test_silhouette_errors(rng):
    with pytest.raises(InvalidParameterError, match="needs at least 2 classes; got 1"):
        cosine_silhouette_samples(rng.normal(size=(4, 2)), np.zeros(4, dtype=int))


def _csg_reference(x, y, k_nn, normed=False):
    """Slow CSG on all points, written loop by loop."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    k = int(y.max()) + 1
    n = len(y)
    Q = np.zeros((k, k))
    for i in range(n):
        d = [np.sum((u[i] - u[j]) ** 2) if j != i else np.inf for j in range(n)]
        nb = np.argsort(d, kind="stable")[:k_nn]
        for j in nb:
            Q[y[i], y[j]] += 1.0 / k_nn
    Q /= np.bincount(y)[:, None]
    W = np.array(
        [[0.0 if a == b else 1 - braycurtis(Q[a], Q[b]) for b in range(k)] for a in range(k)]
    )
    deg = W.sum(axis=1)
    L = np.eye(k) - W / np.sqrt(np.outer(deg, deg)) if normed else np.diag(deg) - W
    lam = np.sort(np.linalg.eigvalsh(L))
    total, best = 0.0, -np.inf
    for i in range(k - 1):
        best = max(best, (lam[i + 1] - lam[i]) / (k - i - 1))
        total += best
    return total


def test_csg_equals_reference(rng):
    x, y = _blobs(rng, k=4, n=12, sep=0.4)
    got, det = cumulative_spectral_gradient(x, y, n_samples=100, n_neighbors=5, return_details=True)
    assert got == pytest.approx(_csg_reference(x, y, 5), abs=1e-10)
    normed = cumulative_spectral_gradient(
        x, y, n_samples=100, n_neighbors=5, laplacian="normalized"
    )
    assert normed == pytest.approx(_csg_reference(x, y, 5, normed=True), abs=1e-10)
    np.testing.assert_allclose(det["Q"].sum(axis=1), 1.0)


def test_csg_tracks_overlap():
    y = np.repeat(np.arange(3), 40)
    sep = [
        cumulative_spectral_gradient(
            _blobs(np.random.default_rng(2), k=3, n=40, sep=s)[0], y, n_neighbors=5
        )
        for s in (0.1, 3.0)
    ]
    assert sep[0] > sep[1]


def test_csg_errors(rng):
    x, y = _blobs(rng, k=2, n=5)
    with pytest.raises(InvalidParameterError, match="'laplacian' parameter"):
        cumulative_spectral_gradient(x, y, laplacian="random-walk")
    with pytest.raises(InvalidParameterError, match="'n_neighbors' parameter"):
        cumulative_spectral_gradient(x, y, n_neighbors=0)
    with pytest.raises(InvalidParameterError, match="needs at least 2 classes; got 1"):
        cumulative_spectral_gradient(x, np.zeros(len(y), dtype=int))


def test_index_report_to_dict(rng):
    x, y = _blobs(rng, k=3, n=20, sep=0.5)
    S = class_similarity(x, y)
    rep = index_report(S, np.bincount(y), features=x, labels=y, classes=["a", "b", "c"])
    d = rep.to_dict()
    json.dumps(d, allow_nan=False)
    assert set(d) == {
        "value",
        "definition",
        "definition_version",
        "previous_definitions",
        "components",
        "peers",
    }
    assert d["definition_version"] == 3
    assert [p["version"] for p in d["previous_definitions"]] == [1, 2]
    assert "theta_a + theta_b - phi_ab" in d["previous_definitions"][0]["definition"]
    assert "max over pairs" in d["previous_definitions"][1]["definition"]
    assert d["value"] == pytest.approx(compute_index(S, np.bincount(y)))
    assert d["peers"]["csg"] == pytest.approx(cumulative_spectral_gradient(x, y))
    assert d["peers"]["silhouette"] == pytest.approx(cosine_silhouette(x, y))
    assert set(d["components"]["hardest_pair"]) <= {"a", "b", "c"}
    assert "DCSI" in d["definition"]
    comp = d["components"]
    assert len(comp["confusability"]) == 3 and set(comp["nearest_class"]) <= {"a", "b", "c"}
    assert d["value"] == pytest.approx(np.mean(comp["confusability"]))
    assert comp["hardest_pair_overlap"] == pytest.approx(np.max(comp["overlap"]))
    assert comp["views"] == ["cnn_cosine"] and "fisher_wavelet" not in comp
    W = class_similarity(x + 0.3, y)  # any K x K matrix of the same classes
    both = index_report(S, np.bincount(y), wavelet=W).to_dict()
    assert both["components"]["views"] == ["cnn_cosine", "wavelet"]
    assert both["value"] == pytest.approx(compute_index(S, np.bincount(y), wavelet=W))
    assert len(both["components"]["fisher_wavelet"]) == 3
    bare = index_report(S=S, class_counts=np.bincount(y)).to_dict()
    assert bare["peers"]["csg"] is None and bare["value"] == d["value"]
    with pytest.raises(InvalidParameterError, match="both 'features' and 'labels'"):
        index_report(S, np.bincount(y), features=x)
    with pytest.raises(InvalidParameterError, match="must name the 3 classes"):
        index_report(S, np.bincount(y), classes=["a"])


# --------------------------------------------------------------------------- definition 4


def _directional_spreads(x, y):
    """V[a, b] pair by pair and image by image: each image of class a minus the mean of
    the other images of its class, projected on the unit vector from class b's mean to
    that mean, squared, summed, times (n - 1) / n^2."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    k = int(y.max()) + 1
    V = np.zeros((k, k))
    for a in range(k):
        ia = np.flatnonzero(y == a)
        for b in range(k):
            if a != b and len(ia) > 1:
                for i in ia:
                    rest = u[ia[ia != i]].mean(0)
                    diff = rest - u[y == b].mean(0)
                    V[a, b] += float((u[i] - rest) @ diff / np.linalg.norm(diff)) ** 2
                V[a, b] *= (len(ia) - 1) / len(ia) ** 2
    return V


def _overlapping_coefficient(F):
    """Area under the smaller of two normal densities of equal variance (sigma = 1)
    whose Fisher ratio delta^2 / (2 sigma^2) is F, by numerical integration."""
    from scipy.integrate import quad
    from scipy.stats import norm

    if math.isinf(F):
        return 0.0
    delta = math.sqrt(2.0 * F)
    area, _ = quad(lambda t: min(norm.pdf(t), norm.pdf(t, loc=delta)), -12, delta + 12, limit=200)
    return area


def _reference_dcsi_4(x, y, images=None):
    """Slow reference of definition 4: per view, D from the loop means over pairs of
    distinct images, F = D / (V_ab + V_ba) from the loop spreads, the overlapping
    coefficient integrated numerically; the smaller over the views; the mean chance of
    overlapping another class."""
    views = [(x, _view_fisher(x, y))]
    if images is not None:
        rows = _haar_rows(images)
        views.append((rows, _view_fisher(rows, y)))
    k = int(y.max()) + 1
    overlaps = []
    for rows, F_total in views:
        V = _directional_spreads(rows, y)
        u = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        q = [
            np.mean(
                [
                    u[i] @ u[j]
                    for i in np.flatnonzero(y == c)
                    for j in np.flatnonzero(y == c)
                    if i != j
                ]
            )
            for c in range(k)
        ]
        v = 1.0 - np.array(q)
        ov = np.zeros((k, k))
        for a in range(k):
            for b in range(k):
                if a != b:
                    d2 = F_total[a, b] * (v[a] + v[b])  # the loop's unbiased D
                    s = V[a, b] + V[b, a]
                    F = d2 / s if s > 0 else (math.inf if d2 > 0 else 0.0)
                    ov[a, b] = _overlapping_coefficient(F)
        overlaps.append(ov)
    ov = np.minimum.reduce(overlaps)
    return float(
        np.mean([1.0 - np.prod([1.0 - ov[a, b] for b in range(k) if b != a]) for a in range(k)])
    )


@pytest.mark.parametrize("F", [0.0, 0.01, 0.3, 1.0, 4.0, 30.0])
def test_overlap_shape_is_the_overlapping_coefficient(F):
    S = np.array([[0.8, 0.8 - F * 0.01], [0.8 - F * 0.01, 0.8]])  # D = 0.02 F
    V = np.full((2, 2), 0.01) - np.diag([0.01, 0.01])  # V_ab + V_ba = 0.02
    assert compute_index(S, [9, 9], spreads=V) == pytest.approx(
        _overlapping_coefficient(F), abs=1e-9
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_definition_4_equals_reference(seed):
    """Both views and the CNN view alone, 4 classes of unequal size, against loops over
    pairs and a numerically integrated overlap (1e-6 with the wavelet view, whose rows
    dcsi keeps in float32; 1e-8 for the CNN view alone)."""
    x, images, y = _two_views(seed, sep=0.15)
    rng = np.random.default_rng(seed)
    S, n = class_similarity(x, y), np.bincount(y)
    wav = class_wavelet_similarity(images, y)
    V = class_spreads(x, y)
    cnn_only = compute_index(S, n, spreads=V)
    assert cnn_only == pytest.approx(_reference_dcsi_4(x, y), abs=1e-8)
    both = compute_index(S, n, wavelet=wav.matrix, spreads=V, wavelet_spreads=wav.spreads)
    assert both == pytest.approx(_reference_dcsi_4(x, y, images=images), abs=1e-6)
    assert both <= cnn_only + 1e-12
    assert 0.0 < both < 1.0
    perm = rng.permutation(4)
    assert compute_index(
        S[np.ix_(perm, perm)], n[perm], spreads=V[np.ix_(perm, perm)]
    ) == pytest.approx(cnn_only, abs=1e-12)


@pytest.mark.parametrize("scale", [0.2, 1.0, 5.0])
def test_definition_4_shuffled_labels_near_one(scale):
    rng = np.random.default_rng(3)
    x = np.abs(rng.normal(size=(800, 64))) * scale + 1.0
    for k in (2, 8):
        y = rng.permutation(np.arange(800) % k)
        value = compute_index(class_similarity(x, y), np.bincount(y), spreads=class_spreads(x, y))
        assert value > 0.9


@pytest.mark.parametrize("dim", [64, 512])
def test_definition_4_planted_separation_near_zero(dim):
    """A shift along 8 coordinates, clear against the spread along it, reads near 0
    whatever the number of other coordinates; definition 3 (total spread, which grows
    with them) reads it as overlapping in 512 dimensions."""
    rng = np.random.default_rng(4)
    base = np.abs(rng.normal(size=(400, dim))) + 1.0
    shift = np.zeros(dim)
    shift[:8] = 1.5
    y = np.repeat([0, 1], 200)
    x = base + shift * y[:, None]
    S, n = class_similarity(x, y), np.bincount(y)
    assert compute_index(S, n, spreads=class_spreads(x, y)) < 0.01
    assert (compute_index(S, n) > 0.3) == (dim == 512)


def test_definition_4_errors_and_report(rng):
    x, y = _blobs(rng, k=3, n=20, sep=0.5)
    S, n, V = class_similarity(x, y), np.bincount(y), class_spreads(x, y)
    W = class_similarity(x + 0.3, y)
    with pytest.raises(InvalidParameterError, match="no 'wavelet_spreads'"):
        compute_index(S, n, wavelet=W, spreads=V)
    with pytest.raises(InvalidParameterError, match="'wavelet_spreads' without spreads"):
        compute_index(S, n, wavelet=W, wavelet_spreads=V)
    with pytest.raises(InvalidParameterError, match="'wavelet_spreads' without wavelet"):
        compute_index(S, n, spreads=V, wavelet_spreads=V)
    with pytest.raises(InvalidParameterError, match="'spreads' .* same 3 classes"):
        compute_index(S, n, spreads=np.zeros((2, 2)))
    with pytest.raises(InvalidParameterError, match="finite non-negative"):
        compute_index(S, n, spreads=-V)
    d = index_report(
        S, n, wavelet=W, spreads=V, wavelet_spreads=V, classes=["a", "b", "c"]
    ).to_dict()
    assert d["definition_version"] == 4 and "erfc" in d["definition"]
    assert [p["version"] for p in d["previous_definitions"]] == [1, 2, 3]
    assert d["components"]["overlap_shape"] == "erfc(sqrt(F) / 2)"
    assert "temperature" not in d["components"]
    assert d["value"] == pytest.approx(
        compute_index(S, n, wavelet=W, spreads=V, wavelet_spreads=V), abs=1e-12
    )
