"""Near-duplicate groups, keep-lists, conflicts and the pairwise evaluation."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

import dcsi
from dcsi.aligned import AlignOptions
from dcsi.exceptions import DataError, InvalidParameterError
from dcsi.neighbors import SearchOptions
from dcsi.redundancy import (
    Group,
    RedundancyParams,
    RedundancyResult,
    connected_groups,
    evaluate_duplicates,
    find_redundancy,
    find_redundancy_features,
)
from dcsi.similarity.wavelet import WaveletOptions


def _features_params(**kw):
    """Params of a search on given feature rows (no images: no aligned stage)."""
    return RedundancyParams(method="cnn", **kw)


def _planted(rng, n=240, k=4):
    """Random images (grey levels 30..200) with planted copies of known kinds.

    Returns images, labels, and the planted groups as lists of row indices:
    redundant (same label) and conflict (different label) groups.
    """
    imgs = rng.integers(30, 200, (n, 16, 16)).astype(np.uint8)
    y = rng.integers(0, k, n)
    perm = rng.permutation(n)
    redundant, conflict = [], []
    src, dst = perm[:30], perm[30:60]
    for t, (s, d) in enumerate(zip(src, dst)):
        x = imgs[s].astype(float)
        kind = t % 3
        if kind == 1:
            x = x + rng.normal(0, 2, x.shape)
        elif kind == 2:
            x = x + 25  # uniform brightness change
        imgs[d] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        if t < 24:
            y[d] = y[s]
            redundant.append(sorted([int(s), int(d)]))
        else:
            y[d] = (y[s] + 1) % k
            conflict.append(sorted([int(s), int(d)]))
    return imgs, y, redundant, conflict


def test_planted_duplicates_and_conflicts_recovered_exactly(rng):
    imgs, y, redundant, conflict = _planted(rng)
    res = find_redundancy(imgs, y)
    got_red = sorted(sorted(g.indices) for g in res if g.kind == "redundant")
    got_con = sorted(sorted(g.indices) for g in res if g.kind == "conflict")
    assert got_red == sorted(redundant)
    assert got_con == sorted(conflict)
    assert res.summary["n_redundant_groups"] == 24
    assert res.summary["n_conflict_groups"] == 6
    # keep-list: one per redundant group dropped, conflicts kept
    assert res.summary["n_removed"] == 24
    assert len(res.keep_ids()) == len(imgs) - 24
    for g in res:
        assert g.representative == g.members[0]
        assert g.distances[0] == min(g.distances)
    scores = evaluate_duplicates(res, redundant + conflict)
    assert scores["precision"] == scores["recall"] == scores["f1"] == 1.0


def test_per_class_rates_and_to_dict(rng):
    imgs, y, redundant, _ = _planted(rng)
    res = find_redundancy(imgs, y, classes=["a", "b", "c", "d"])
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert set(d) == {"method", "params", "summary", "groups", "blank"}
    assert d["method"] == "wavelet" and d["params"]["threshold"] == 0.01
    g0 = d["groups"][0]
    assert set(g0) >= {"members", "labels", "kind", "representative"}
    assert all(lab in "abcd" for lab in g0["labels"])
    removed = np.zeros(4, int)
    for a, _b in redundant:  # the representative is one of the two; the other goes
        g = next(g for g in res if a in g.indices)
        removed[y[[i for i in g.indices if str(i) != g.representative]]] += 1
    per = d["summary"]["per_class"]
    for c, name in enumerate("abcd"):
        assert per[name]["n_removed"] == removed[c]
        assert per[name]["redundancy_rate"] == pytest.approx(removed[c] / np.sum(y == c))
    assert "rrqr" in d["summary"] and d["summary"]["rrqr"]["m"] >= 1
    assert isinstance(res, RedundancyResult) and isinstance(res[0], Group)
    assert res.keep_csv().splitlines()[0] == "id,keep"
    assert res.groups_csv().count("\n") == 1 + res.summary["n_images_in_groups"]


def test_scope_class_finds_no_conflicts(rng):
    imgs, y, redundant, _ = _planted(rng)
    res = find_redundancy(imgs, y, scope="class")
    assert all(g.kind == "redundant" for g in res)
    assert sorted(sorted(g.indices) for g in res) == sorted(redundant)


def test_unlabelled_and_source_input(rng):
    imgs, _, redundant, conflict = _planted(rng)
    res = find_redundancy(imgs)
    assert sorted(sorted(g.indices) for g in res) == sorted(redundant + conflict)
    assert all(g.labels == () and g.kind == "redundant" for g in res)
    digits = find_redundancy("sample:digits")
    assert digits.summary["n_images"] == 1797


def test_connected_groups_transitive():
    groups = connected_groups(6, np.array([[0, 1], [1, 4], [2, 5]]))
    assert [g.tolist() for g in groups] == [[0, 1, 4], [2, 5]]
    assert connected_groups(3, np.empty((0, 2))) == []


def test_memory_stays_bounded(rng):
    n = 12000  # an n x n float64 matrix would take 1.15 GB
    X = rng.standard_normal((n, 16)).astype(np.float32)
    X[1::2] = X[0::2] + 1e-3 * rng.standard_normal((n // 2, 16)).astype(np.float32)
    tracemalloc.start()
    res = find_redundancy_features(
        X,
        params=_features_params(threshold=1e-3, search=SearchOptions(block_size=256)),
        center="none",
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < n * n * 8 / 20, peak
    assert len(res) == n // 2


def test_kmeans_and_spectral_clusters(rng):
    imgs, y, redundant, conflict = _planted(rng, n=120)
    res = find_redundancy(imgs, y, n_clusters=105, seed=0)
    assert res.params["clustering"] == "kmeans" and res.params["grouping"] == "kmeans"
    members = sorted(i for g in res for i in g.indices)
    assert len(members) == len(set(members))
    sp = find_redundancy(imgs, y, n_clusters=20, clustering="spectral", seed=0)
    assert sum(len(g) for g in sp) <= len(imgs)


def test_ssim_method_and_verification(rng):
    imgs, y, redundant, conflict = _planted(rng, n=80)
    res = find_redundancy(imgs, y, method="ssim", threshold=0.9)
    planted = redundant + conflict
    exact = [tuple(planted[t]) for t in range(0, 30, 3)]  # kind 0: exact copies
    found = {tuple(sorted(g.indices)) for g in res}
    assert set(exact) <= found  # SSIM of an exact copy is 1
    assert found <= {tuple(p) for p in planted}
    assert res.method == "ssim" and res.to_dict()["params"]["threshold"] == 0.9
    ver = find_redundancy(imgs, y, verify="ssim", verify_threshold=0.5)
    assert {tuple(sorted(g.indices)) for g in ver} <= {tuple(p) for p in redundant + conflict}


def test_evaluate_duplicates_against_brute_force(rng):
    ids = [f"i{k}" for k in range(12)]
    truth_groups = [["i0", "i1", "i2"], ["i5", "i6"]]
    found_groups = [["i0", "i1"], ["i5", "i7"], ["i8", "i9"]]
    got = evaluate_duplicates(found_groups, truth_groups)

    def pairs(groups):
        return {frozenset((a, b)) for g in groups for a in g for b in g if a != b}

    t, f = pairs(truth_groups), pairs(found_groups)
    assert got["precision"] == pytest.approx(len(t & f) / len(f))
    assert got["recall"] == pytest.approx(len(t & f) / len(t))
    p, r = got["precision"], got["recall"]
    assert got["f1"] == pytest.approx(2 * p * r / (p + r))
    # imagededup's map shape, with and without scores
    truth_map = {
        "i0": ["i1", "i2"],
        "i1": ["i0", "i2"],
        "i2": ["i0", "i1"],
        "i5": ["i6"],
        "i6": ["i5"],
        "i3": [],
    }
    assert evaluate_duplicates(found_groups, truth_map) == got
    scored = {"i0": [("i1", 3)], "i5": [("i7", 1)], "i8": [("i9", 0)]}
    assert evaluate_duplicates(scored, truth_map) == got
    assert evaluate_duplicates([], truth_map)["precision"] is None
    assert dcsi.evaluate_duplicates is evaluate_duplicates
    del ids


def test_errors(rng):
    imgs = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8)
    with pytest.raises(InvalidParameterError, match="'method' parameter of find_redundancy"):
        find_redundancy(imgs, method="phash")
    with pytest.raises(InvalidParameterError, match="must be an int >= 2 or None"):
        find_redundancy(imgs, n_clusters="many")
    with pytest.raises(
        InvalidParameterError, match="'n_clusters' parameter of find_redundancy must be an int >= 2"
    ):
        find_redundancy(imgs, n_clusters=1)
    with pytest.raises(InvalidParameterError, match="must be <= the number of images"):
        find_redundancy(imgs, n_clusters=50)
    with pytest.raises(InvalidParameterError, match="must be None for method='ssim'"):
        find_redundancy(imgs, method="ssim", n_clusters=5)
    with pytest.raises(InvalidParameterError, match="'tau' parameter of WaveletOptions"):
        find_redundancy(imgs, wavelet=WaveletOptions(tau=1.0))
    with pytest.raises(InvalidParameterError, match="'wavelet' parameter of find_redundancy"):
        find_redundancy(imgs, wavelet="db1")
    with pytest.raises(InvalidParameterError, match="'threshold' parameter of find_redundancy"):
        find_redundancy(imgs, threshold=3.0)
    with pytest.raises(InvalidParameterError, match="'verify' parameter"):
        find_redundancy(imgs, verify="pixels")
    with pytest.raises(InvalidParameterError, match="can be 'class' only for labelled"):
        find_redundancy(imgs, scope="class")
    with pytest.raises(InvalidParameterError, match="must be a uint8 array"):
        find_redundancy(imgs.astype(np.float32))
    with pytest.raises(InvalidParameterError, match="one id per image"):
        find_redundancy_features(np.ones((3, 2)), ids=["a"], params=_features_params(threshold=0.1))
    with pytest.raises(DataError, match="no wavelet coefficient varies"):
        find_redundancy(np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(InvalidParameterError, match="must be a RedundancyResult, a list"):
        evaluate_duplicates(42, [])
    with pytest.raises(InvalidParameterError, match="must map each id to a list"):
        evaluate_duplicates({"a": "b"}, [])
    with pytest.raises(InvalidParameterError, match="must be groups of ids"):
        evaluate_duplicates(["ab"], [])


class _PixelExtractor:
    """A stand-in backbone: the grey pixels as features (no weights, no download)."""

    name = "pixels-test"

    def transform(self, image):
        import torch

        arr = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        return torch.from_numpy(np.stack([arr] * 3))

    def __call__(self, batch):
        return batch[:, 0].reshape(batch.shape[0], -1)


def test_cnn_method_uses_extracted_features(rng):
    pytest.importorskip("torch")
    imgs, y, redundant, conflict = _planted(rng, n=60)
    from dcsi.features import extract_features

    feats = extract_features(imgs, backbone=_PixelExtractor(), cache=False, num_workers=0).features
    res = find_redundancy(imgs, y, method="cnn", features=feats, threshold=1e-6)
    found = {tuple(sorted(g.indices)) for g in res}
    planted = {tuple(p) for p in redundant + conflict}
    exact = {tuple((redundant + conflict)[t]) for t in range(0, 30, 3)}
    assert exact <= found <= planted
    assert res.method == "cnn"
    # without features, the backbone is run on the images (one extraction)
    again = find_redundancy(imgs, y, method="cnn", backbone=_PixelExtractor(), threshold=1e-6)
    assert [g.indices for g in again] == [g.indices for g in res]
    with pytest.raises(InvalidParameterError, match="one row per image"):
        find_redundancy(imgs, y, method="cnn", features=feats[:5])


# --------------------------------------------------------------------------- aligned stage
def _blob_images(rng, n, size=28):
    """Smooth object-like images: a few Gaussian blobs on a dark background."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    out = np.empty((n, size, size), np.uint8)
    for i in range(n):
        img = np.zeros((size, size))
        for _ in range(rng.integers(2, 5)):
            cy, cx = rng.uniform(7, size - 7, 2)
            sy, sx = rng.uniform(1.5, 4.5, 2)
            img += rng.uniform(80, 200) * np.exp(
                -((yy - cy) ** 2 / (2 * sy**2) + (xx - cx) ** 2 / (2 * sx**2))
            )
        out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def _shift(img, dy, dx):
    out = np.zeros_like(img)
    h, w = img.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _crop_resize(img, top, left):
    from PIL import Image

    h, w = img.shape
    crop = img[top : top + h - 2, left : left + w - 2]
    return np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR))


def test_shifted_and_cropped_copies_recovered(rng):
    n = 200
    imgs = _blob_images(rng, n)
    y = rng.integers(0, 3, n)
    perm = rng.permutation(n)
    truth = []
    shifts = [(0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, 1)]
    for t, (s, d) in enumerate(zip(perm[:24], perm[24:48])):
        if t < 12:
            imgs[d] = _shift(imgs[s], *shifts[t % len(shifts)])
        else:
            imgs[d] = _crop_resize(imgs[s], *rng.integers(0, 3, 2))
        y[d] = y[s]
        truth.append(sorted([int(s), int(d)]))
    # the aligned stage alone next to the first: the relative stage also links pairs of
    # 200 random blob images that happen to be far closer to each other than to the rest
    res = find_redundancy(imgs, y, relative=False)
    assert sorted(sorted(g.indices) for g in res) == sorted(truth)
    assert res.summary["n_aligned_pairs"] >= 24
    assert res.params["align"] is True and res.params["align_threshold"] == 0.0005
    assert res.params["grouping"] == "links" and res.params["n_clusters"] is None
    # the default geometry of 28-px images: 7 % and 15 % of the side
    assert res.params["max_shift"] == 2 and res.params["max_crop"] == 4
    # the first stage alone (fine wavelet distance) misses the shifted copies
    plain = find_redundancy(imgs, y, align=False, relative=False)
    found = {tuple(sorted(g.indices)) for g in plain}
    assert not any(tuple(p) in found for p in truth[:12])
    assert "n_aligned_pairs" not in plain.summary


def test_aligned_errors(rng):
    imgs = _blob_images(rng, 6, size=16)
    with pytest.raises(
        InvalidParameterError,
        match="'align' parameter of find_redundancy must be True, False or an AlignOptions",
    ):
        find_redundancy(imgs, align="yes")
    with pytest.raises(InvalidParameterError, match="'threshold' parameter of AlignOptions"):
        find_redundancy(imgs, align=AlignOptions(threshold=-0.1))
    with pytest.raises(InvalidParameterError, match="'max_crop' parameter of AlignOptions"):
        find_redundancy(imgs, align=AlignOptions(max_crop=-1))
    with pytest.raises(InvalidParameterError, match="need the images"):
        find_redundancy_features(np.eye(4), params=RedundancyParams(threshold=0.1))


def test_complete_linkage_splits_chains():
    from dcsi.redundancy import complete_groups

    # unit vectors at angles 0, t, 2t (a chain) and a tight triple at 90 degrees
    t = np.arccos(1 - 0.008)
    ang = np.array([0.0, t, 2 * t, np.pi / 2, np.pi / 2 + 0.01, np.pi / 2 + 0.02])
    F = np.stack([np.cos(ang), np.sin(ang)], 1)
    exact = SearchOptions(n_components=None)
    single = find_redundancy_features(
        F,
        params=_features_params(threshold=0.01, group_linkage="single", search=exact),
        center="none",
    )
    assert sorted(sorted(g.indices) for g in single) == [[0, 1, 2], [3, 4, 5]]
    res = find_redundancy_features(
        F, params=_features_params(threshold=0.01, search=exact), center="none"
    )
    groups = [set(g.indices) for g in res]
    assert {3, 4, 5} in groups  # a clique stays whole
    assert {0, 1} in groups or {1, 2} in groups  # the chain is cut
    assert res.summary["n_unrefined_groups"] == 0
    # every pair inside every group is linked
    for g in res:
        idx = list(g.indices)
        assert np.all(1 - F[idx] @ F[idx].T <= 0.01 + 1e-12)
    # components above max_size are kept whole and counted
    comps = [np.array([0, 1, 2])]

    def score(m, p):
        return 1 - np.einsum("ij,ij->i", F[m[p[:, 0]]], F[m[p[:, 1]]]) / 0.01

    kept, n_unrefined = complete_groups(comps, score, max_size=2)
    assert [list(g) for g in kept] == [[0, 1, 2]] and n_unrefined == 1
    with pytest.raises(InvalidParameterError, match="'group_linkage' parameter"):
        _features_params(threshold=0.01, group_linkage="average")


# --------------------------------------------------------------------------- declared checks
def _invalid_cases():
    for name, rules in RedundancyParams.CONSTRAINTS.items():
        for rule in rules:
            if rule is None:
                continue
            for value in rule.invalid_examples():
                if not any(r is not None and r.accepts(value) for r in rules):
                    yield name, value


@pytest.mark.parametrize(("name", "value"), list(_invalid_cases()))
def test_every_declared_constraint_refuses_invalid_values(name, value):
    """Generated from RedundancyParams.CONSTRAINTS: one line naming the parameter."""
    with pytest.raises(
        InvalidParameterError, match=f"The '{name}' parameter of find_redundancy must be"
    ):
        RedundancyParams(**{name: value})


@pytest.mark.parametrize("options", [AlignOptions, WaveletOptions, SearchOptions])
def test_option_objects_refuse_invalid_values(options):
    for name, rules in options.CONSTRAINTS.items():
        for rule in (r for r in rules if r is not None):
            for value in rule.invalid_examples():
                if any(r is not None and r.accepts(value) for r in rules):
                    continue
                with pytest.raises(
                    InvalidParameterError, match=f"The '{name}' parameter of {options.__name__}"
                ):
                    options(**{name: value})


def test_params_to_dict_is_the_cards_params(rng):
    imgs, y, _, _ = _planted(rng, n=60)
    p = RedundancyParams(align=AlignOptions(threshold=0.001).resolved(imgs.shape[1:3]))
    res = find_redundancy(imgs, y, align=AlignOptions(threshold=0.001))  # resolved there
    extra = ("distance", "working_size")
    assert {k: v for k, v in res.params.items() if k not in extra} == p.to_dict()
    assert RedundancyParams(method="ssim").threshold == 0.95
    assert RedundancyParams(method="cnn").align is None  # aligned links: wavelet only


def test_scope_class_needs_labels_for_every_method_and_numpy_bools_are_bools(rng):
    imgs = rng.integers(0, 256, (6, 16, 16), dtype=np.uint8)
    for method in ("wavelet", "ssim"):
        with pytest.raises(InvalidParameterError, match="can be 'class' only for labelled"):
            find_redundancy(imgs, method=method, scope="class")
    assert find_redundancy(imgs, align=np.True_).params["align"] is True
    assert find_redundancy(imgs, align=np.False_).params["align"] is False
    assert dcsi.find_leakage(imgs, imgs[:2], align=np.True_).params["align"] is True
