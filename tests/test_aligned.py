"""The shift- and crop-tolerant copy search against a slow PIL/numpy reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image
from test_redundancy import _blob_images, _crop_resize, _shift

from dcsi.aligned import (
    AlignOptions,
    aligned_cross_pairs,
    aligned_distance,
    aligned_pairs,
    copy_transforms,
    transformed_rows,
)
from dcsi.exceptions import InvalidParameterError


# --------------------------------------------------------------------------- reference
def _variants_reference(img, max_shift, max_crop):
    """Every transform of one image, spelled out: numpy shifts and PIL crop + resize."""
    x = img.astype(np.float32)
    h, w = x.shape
    out = [x]
    for dy, dx in itertools.product(range(-max_shift, max_shift + 1), repeat=2):
        if (dy, dx) != (0, 0):
            rows = np.clip(np.arange(h) - dy, 0, h - 1)
            cols = np.clip(np.arange(w) - dx, 0, w - 1)
            out.append(x[rows][:, cols])
    for c in range(1, max_crop + 1):
        for t, left in itertools.product(range(c + 1), repeat=2):
            crop = Image.fromarray(x[t : t + h - c, left : left + w - c], mode="F")
            out.append(np.asarray(crop.resize((w, h), Image.BILINEAR)))
    return out


def _coarse(x, margin):
    """Block means of the inner window, as a flat vector (loops)."""
    h, w = x.shape
    inner = x[margin : h - margin, margin : w - margin]
    py, px = max(1, inner.shape[0] // 12), max(1, inner.shape[1] // 12)
    ky, kx = inner.shape[0] // py, inner.shape[1] // px
    return np.array(
        [
            [inner[i * py : (i + 1) * py, j * px : (j + 1) * px].mean() for j in range(kx)]
            for i in range(ky)
        ]
    ).ravel()


def _corr_distance(u, v):
    if u.std() < 1e-9 or v.std() < 1e-9:
        return 1.0
    return 1.0 - np.corrcoef(u, v)[0, 1]


def _aligned_distance_reference(a, b, max_shift=1, max_crop=2):
    best = 2.0
    for p, q in ((a, b), (b, a)):
        target = _coarse(q.astype(np.float64), max_shift)
        for v in _variants_reference(p, max_shift, max_crop):
            best = min(best, _corr_distance(_coarse(v.astype(np.float64), max_shift), target))
    return max(best, 0.0)


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("shape,max_shift,max_crop", [((28, 30), 1, 2), ((13, 11), 2, 1)])
def test_aligned_distance_matches_slow_reference(rng, shape, max_shift, max_crop):
    imgs = rng.integers(0, 256, (10, *shape), dtype=np.uint8)
    imgs[3] = _shift(imgs[2], 1, 0)
    imgs[5] = 7  # constant: correlation 0 with everything
    pairs = np.array(
        [*[(i, j) for i in range(10) for j in range(10) if i != j][::4], (2, 3), (5, 6)]
    )
    got = aligned_distance(imgs, pairs, max_shift=max_shift, max_crop=max_crop)
    blocked = aligned_distance(imgs, pairs, max_shift=max_shift, max_crop=max_crop, block=3)
    np.testing.assert_array_equal(blocked, got)
    want = np.array(
        [_aligned_distance_reference(imgs[i], imgs[j], max_shift, max_crop) for i, j in pairs]
    )
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got[-2] < 1e-6 and got[-1] == 1.0
    # colour images: the channel mean
    col = np.stack([imgs, imgs, imgs], -1)
    np.testing.assert_allclose(
        aligned_distance(col, pairs, max_shift=max_shift, max_crop=max_crop), got, atol=1e-6
    )


def test_transforms_match_pil_crop_and_resize(rng):
    img = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    ts = copy_transforms((28, 28), half_shifts=False)
    assert [t.name for t in ts][:2] == ["identity", "shift(-1,-1)"]
    assert len(ts) == 1 + 8 + 4 + 9
    ref = _variants_reference(img, 1, 2)
    for t, v in zip(ts, ref):
        want = _coarse(v.astype(np.float64), 1)
        want = (want - want.mean()) / np.linalg.norm(want - want.mean())
        np.testing.assert_allclose(
            transformed_rows(img[None], t)[0], want, atol=2e-6, err_msg=t.name
        )
    assert len(copy_transforms((28, 28))) == 1 + 4 + 4 + 9  # half the shifts


def test_shifted_and_cropped_copies_are_near_zero(rng):
    imgs = _blob_images(rng, 12)
    imgs[1] = _shift(imgs[0], 0, -1)
    imgs[2] = _shift(imgs[0], 1, 1)
    for k, (t, left) in enumerate([(0, 0), (1, 1), (2, 0), (0, 2)]):
        imgs[3 + k] = _crop_resize(imgs[0], t, left)
    d = aligned_distance(imgs, np.array([[0, j] for j in range(1, 12)]))
    assert np.all(d[:2] < 1e-6)  # shifts are exact on the inner window
    assert np.all(d[2:6] < 1e-4)  # crops: uint8 rounding only
    assert np.all(d[6:] > 5e-4)  # unrelated images


def test_aligned_pairs_are_exactly_the_pairs_within_the_threshold(rng):
    imgs = _blob_images(rng, 60)
    for t in range(6):
        imgs[30 + t] = _crop_resize(imgs[t], *rng.integers(0, 3, 2))
        imgs[40 + t] = _shift(imgs[10 + t], *[(0, 1), (1, 0), (-1, 1)][t % 3])
    allp = np.array([(i, j) for i in range(60) for j in range(i + 1, 60)])
    # 1-px shifts and 2-px crops: at these loose thresholds the searched half of the
    # shifts gives the distance of every pair; with larger shifts it is exact only for
    # copies (the default threshold, checked below with the default geometry)
    D = aligned_distance(imgs, allp, max_shift=1, max_crop=2)
    for thr in (5e-4, 0.01, 0.05):
        opts = AlignOptions(threshold=thr, block_size=7, max_shift=1, max_crop=2)
        pairs, dist = aligned_pairs(imgs, options=opts)
        want = allp[thr >= D]
        np.testing.assert_array_equal(pairs, want)
        np.testing.assert_allclose(dist, D[thr >= D], atol=1e-6)
    planted = {(t, 30 + t) for t in range(6)} | {(10 + t, 40 + t) for t in range(6)}
    assert {tuple(map(int, p)) for p in aligned_pairs(imgs)[0]} == planted
    D = aligned_distance(imgs, allp)  # the default geometry of 28-px images: 2 px, 4 px
    assert {tuple(map(int, p)) for p in allp[D <= 5e-4]} == planted


def test_aligned_cross_pairs_match_brute_force(rng):
    a = _blob_images(rng, 25)
    b = _blob_images(rng, 20)
    b[0] = _crop_resize(a[3], 0, 2)
    a[7] = _crop_resize(b[5], 2, 1)  # the copy can sit in either set
    b[9] = _shift(a[11], -1, 0)
    both = np.concatenate([a, b])
    allp = np.array([(i, j) for i in range(25) for j in range(20)])
    D = aligned_distance(both, np.stack([allp[:, 0], 25 + allp[:, 1]], 1))
    for thr in (5e-4, 0.02):
        pairs, dist = aligned_cross_pairs(a, b, options=AlignOptions(threshold=thr, block_size=6))
        np.testing.assert_array_equal(pairs, allp[thr >= D])
        np.testing.assert_allclose(dist, D[thr >= D], atol=1e-6)
    assert {tuple(map(int, p)) for p in aligned_cross_pairs(a, b)[0]} == {(3, 0), (7, 5), (11, 9)}


def test_errors(rng):
    imgs = _blob_images(rng, 4, size=16)
    with pytest.raises(InvalidParameterError, match="must leave an inner window"):
        aligned_distance(imgs, np.array([[0, 1]]), max_shift=8)
    with pytest.raises(InvalidParameterError, match="'threshold' parameter of AlignOptions"):
        aligned_pairs(imgs, options=AlignOptions(threshold=-1))
    with pytest.raises(InvalidParameterError, match="must have one size"):
        aligned_cross_pairs(imgs, _blob_images(rng, 3, size=20))
    assert aligned_pairs(imgs[:1])[0].shape == (0, 2)


def test_memory_stays_far_below_n_by_n(rng):
    import tracemalloc

    n = 4000  # an n x n float64 matrix would take 128 MB
    imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    imgs[1] = _shift(imgs[0], 0, 1)
    tracemalloc.start()
    try:
        pairs, _ = aligned_pairs(imgs, options=AlignOptions(block_size=1024))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (0, 1) in {tuple(map(int, p)) for p in pairs}
    assert peak < 40e6, peak


def test_tiny_images_skip_the_second_stage(rng, caplog):
    from dcsi import find_leakage, find_redundancy

    imgs = rng.integers(0, 256, (20, 3, 3), dtype=np.uint8)
    imgs[1] = imgs[0]
    with caplog.at_level("WARNING"):
        res = find_redundancy(imgs)
    assert [tuple(g.indices) for g in res] == [(0, 1)]
    assert res.params["align"] is False and "too small" in res.params["align_skipped"]
    assert "too small" in caplog.text
    leak = find_leakage(imgs[:10], imgs[10:])
    assert leak.params["align"] is False and "align_skipped" in leak.params


def test_aligned_pairs_through_any_block_map(rng):
    """Query blocks run backwards but yielded in order (as Ray tasks are): the pairs
    and distances of the local loop."""
    imgs = _blob_images(rng, 40)
    for t in range(5):
        imgs[20 + t] = _shift(imgs[t], *[(0, 1), (1, 0), (-1, 1)][t % 3])
    seen = []

    def backwards(fn, shared, items):
        results = {item: fn(*shared, item) for item in reversed(list(items))}
        seen.extend(items)
        yield from (results[item] for item in items)

    options = AlignOptions(block_size=7)
    ref_pairs, ref_dist = aligned_pairs(imgs, options=options)
    pairs, dist = aligned_pairs(imgs, options=options, map_blocks=backwards)
    # 6 query blocks for each k-d tree (one tree per TREE_TRANSFORMS transforms)
    assert len(seen) % 6 == 0 and len(seen) > 6 and len(ref_pairs) >= 5
    np.testing.assert_array_equal(pairs, ref_pairs)
    assert dist.tobytes() == ref_dist.tobytes()


def test_default_geometry_follows_the_image_size(rng):
    from dcsi.aligned import default_geometry

    assert default_geometry((8, 8)) == (1, 2)  # digits: as small as the stage goes
    assert default_geometry((28, 28)) == (2, 4)
    assert default_geometry((31, 32)) == (2, 5)
    assert default_geometry((16, 40)) == (1, 2)
    opts = AlignOptions().resolved((28, 28))
    assert (opts.max_shift, opts.max_crop) == (2, 4)
    assert AlignOptions(max_shift=3).resolved((8, 8)).max_shift == 3  # given: kept
    # a 2-px shift and a 4-px crop of a 28-px image are found with the defaults alone
    imgs = _blob_images(rng, 40)
    imgs[20] = _shift(imgs[0], 2, -2)
    crop = imgs[1][1:25, 3:27]  # 4 px off each axis, resized back
    imgs[21] = np.asarray(Image.fromarray(crop).resize((28, 28), Image.BILINEAR))
    found = {tuple(map(int, p)) for p in aligned_pairs(imgs)[0]}
    assert {(0, 20), (1, 21)} <= found
