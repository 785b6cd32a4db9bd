"""Train/test leakage: planted test copies are found, farthest items are right."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dcsi
from dcsi.exceptions import InvalidParameterError
from dcsi.leakage import find_leakage, find_leakage_features
from dcsi.neighbors import SearchOptions, prepare_rows


def test_planted_test_copies_found(rng):
    train = rng.integers(30, 200, (150, 16, 16)).astype(np.uint8)
    test = rng.integers(30, 200, (60, 16, 16)).astype(np.uint8)
    ytr = rng.integers(0, 3, 150)
    yte = rng.integers(0, 3, 60)
    planted = {}
    for t, (a, b) in enumerate(zip(range(0, 20), rng.choice(150, 20, replace=False))):
        x = train[b].astype(float) + (rng.normal(0, 2, (16, 16)) if t % 2 else 0)
        test[a] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        yte[a] = ytr[b] if t < 15 else (ytr[b] + 1) % 3
        planted[str(a)] = str(b)
    res = find_leakage(train, test, train_labels=ytr, test_labels=yte)
    assert {p.test_id: p.train_id for p in res.pairs} == planted
    assert res.share == pytest.approx(20 / 60)
    assert res.n_label_mismatch == 5
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["n_leaked"] == 20 and sum(v["n_leaked"] for v in d["per_class"].values()) == 20
    assert dcsi.find_leakage is find_leakage


def test_farthest_matches_brute_force(rng):
    A = prepare_rows(rng.standard_normal((40, 10)), center="none")  # test
    B = prepare_rows(rng.standard_normal((90, 10)), center="none")  # train
    res = find_leakage_features(
        B, A, threshold=0.01, n_farthest=5, search=SearchOptions(n_components=3, block_size=7)
    )
    nearest = 1.0 - (A.astype(np.float64) @ B.T.astype(np.float64)).max(axis=1)
    ref = np.argsort(-nearest)[:5]
    assert [i for i, _ in res.farthest] == [str(i) for i in ref]
    np.testing.assert_allclose([d for _, d in res.farthest], nearest[ref], atol=1e-5)
    assert res.n_leaked == int(np.sum(nearest <= 0.01))


def test_errors(rng):
    a = rng.integers(0, 256, (10, 8, 8), dtype=np.uint8)
    with pytest.raises(InvalidParameterError, match="'method' parameter of find_leakage"):
        find_leakage(a, a, method="ssim")
    with pytest.raises(InvalidParameterError, match="'threshold' parameter of find_leakage"):
        find_leakage(a, a, threshold=-1.0)
    with pytest.raises(InvalidParameterError, match="must have one size"):
        find_leakage(a, rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(InvalidParameterError, match="'blank_tolerance' parameter"):
        find_leakage(a, a, blank_tolerance=-1.0)
    # a test set of another size is brought to the training set's working size
    res = find_leakage(a, rng.integers(0, 256, (4, 6, 6), dtype=np.uint8))
    assert res.params["working_size"] == [8, 8]


# --------------------------------------------------------------------------- aligned stage
def test_shifted_and_cropped_test_copies_found(rng):
    from test_redundancy import _blob_images, _crop_resize, _shift

    train = _blob_images(rng, 120)
    test = _blob_images(rng, 40)
    shifts = [(0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, 1)]
    src = rng.choice(120, 16, replace=False)
    planted = {}
    for t, b in enumerate(src):
        if t < 8:
            test[t] = _shift(train[b], *shifts[t % len(shifts)])
        else:
            test[t] = _crop_resize(train[b], *rng.integers(0, 3, 2))
        planted[str(t)] = str(b)
    # the aligned stage next to the first only: the relative stage also links random
    # blob images that happen to be far closer to each other than to the rest
    res = find_leakage(train, test, relative=False)
    assert {p.test_id: p.train_id for p in res.pairs} == planted
    assert {p.stage for p in res.pairs} <= {"features", "aligned"}
    assert sum(p.stage == "aligned" for p in res.pairs) >= 8
    assert res.params["align"] is True and res.params["align_threshold"] == 0.0005
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert all(p["stage"] in ("features", "aligned") for p in d["pairs"])
    # without the second stage the shifted copies are missed
    plain = find_leakage(train, test, align=False, relative=False)
    found = {p.test_id for p in plain.pairs}
    assert not any(str(t) in found for t in range(8))
    assert plain.params["align"] is False


def test_align_errors(rng):
    a = rng.integers(0, 256, (10, 8, 8), dtype=np.uint8)
    with pytest.raises(InvalidParameterError, match="'align' parameter of find_leakage"):
        find_leakage(a, a, align="yes")
    with pytest.raises(InvalidParameterError, match="'wavelet' parameter of find_leakage"):
        find_leakage(a, a, wavelet={"tau": 10})
    with pytest.raises(InvalidParameterError, match="'n_farthest' parameter of find_leakage"):
        find_leakage(a, a, n_farthest=-1)


def test_leakage_and_redundancy_share_the_align_defaults(rng):
    from test_redundancy import _blob_images

    from dcsi.aligned import AlignOptions

    train, test = _blob_images(rng, 30), _blob_images(rng, 10)
    res = find_leakage(train, test)
    red = dcsi.find_redundancy(train)
    shared = ("align_threshold", "max_shift", "max_crop", "align_distance")
    assert (
        {k: res.params[k] for k in shared}
        == {k: red.params[k] for k in shared}
        == AlignOptions().resolved(train.shape[1:3]).to_dict()
    )


def test_disjoint_class_names_are_warned_about(rng, caplog):
    a = rng.integers(0, 256, (12, 16, 16), dtype=np.uint8)
    b = rng.integers(0, 256, (6, 16, 16), dtype=np.uint8)
    with caplog.at_level("WARNING", logger="dcsi.leakage"):
        find_leakage(
            a, b, train_labels=["cat", "dog"] * 6, test_labels=["car", "bus"] * 3, align=False
        )
    assert any("share no name" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="dcsi.leakage"):
        find_leakage(
            a, b, train_labels=["cat", "dog"] * 6, test_labels=["cat", "x"] * 3, align=False
        )
    assert not any("share no name" in r.getMessage() for r in caplog.records)
