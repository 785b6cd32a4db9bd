"""All-pairs SSIM against scikit-image's structural_similarity, pair by pair."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from dcsi.exceptions import InvalidParameterError
from dcsi.similarity.ssim import (
    DEFAULT_WIN_SIZE,
    class_ssim,
    ssim_cross,
    ssim_matrix,
    ssim_pairs,
    ssim_threshold_pairs,
    ssim_topk,
)

TOL = 1e-5  # the contract; float64 values agree to ~1e-12


def ref_ssim(
    a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0, win_size: int | None = None
) -> float:
    """The slow, obviously-correct reference: one skimage call per pair."""
    return float(
        structural_similarity(
            a,
            b,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=data_range,
            channel_axis=-1 if a.ndim == 3 else None,
            win_size=win_size,
        )
    )


def ref_matrix(x: np.ndarray, y: np.ndarray | None = None, **kw) -> np.ndarray:
    y = x if y is None else y
    return np.array([[ref_ssim(a, b, **kw) for b in y] for a in x])


def smooth_images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Random images with some structure (noise + a random gradient), uint8."""
    base = rng.integers(0, 256, size=(n, *shape)).astype(float)
    h, w = shape[:2]
    grad = np.linspace(0, 1, h)[:, None] * np.linspace(0, 1, w)[None, :]
    if len(shape) == 3:
        grad = grad[..., None]
    mix = rng.random((n,) + (1,) * len(shape))
    return np.clip(mix * base + (1 - mix) * 255 * grad, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(13, 17), (11, 11), (12, 19), (15, 12, 3), (11, 14, 1)])
def test_matrix_matches_skimage_every_pair(rng, shape):
    x = smooth_images(rng, 7, shape)
    M = ssim_matrix(x, block_size=3)
    R = ref_matrix(x)
    assert M.shape == (7, 7) and M.dtype == np.float64
    np.testing.assert_allclose(M, R, rtol=0, atol=TOL)
    assert np.abs(M - R).max() < 1e-10  # in practice it is exact to rounding
    np.testing.assert_array_equal(M, M.T)


def test_identical_and_constant_images(rng):
    x = smooth_images(rng, 4, (12, 12))
    x[1] = x[0]  # an exact duplicate
    x[2] = 100  # a flat image
    x[3] = 100
    M = ssim_matrix(x)
    np.testing.assert_allclose(M, ref_matrix(x), rtol=0, atol=TOL)
    assert M[0, 1] == pytest.approx(1.0, abs=1e-12)
    assert M[2, 3] == pytest.approx(1.0, abs=1e-12)


def hard_images(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Images where float32 products or a careless E[xy] - mu_x mu_y would lose digits:
    bright flat images, flat images with a faint texture, black/white halves, saturated
    noise and a natural-looking gradient; colour images get different channels."""
    h, w = shape[:2]
    c = shape[2] if len(shape) == 3 else 1
    out = np.empty((8, h, w, c))
    out[0] = 254
    out[1] = 250 + rng.integers(0, 3, size=(h, w, c))
    out[2] = 255.0 * (np.arange(w) >= w // 2)[None, :, None]
    out[3] = 255.0 * (np.arange(h) >= h // 3)[:, None, None]
    out[4] = 255.0 * rng.integers(0, 2, size=(h, w, c))
    out[5] = 200 + rng.integers(0, 56, size=(h, w, c))
    out[6] = np.linspace(0, 255, w)[None, :, None] * np.linspace(0.5, 1, c)[None, None, :]
    out[7] = 3 + rng.integers(0, 2, size=(h, w, c))
    return out.astype(np.uint8).reshape((8, *shape))


@pytest.mark.parametrize("shape", [(16, 15), (14, 17, 3)])
def test_hard_images_match_skimage_to_rounding(rng, shape):
    # the Gram products, the folded constants and the moment products stay in float64:
    # agreement with skimage is at the level of float64 rounding, not float32's
    x = hard_images(rng, shape)
    M = ssim_matrix(x)
    R = ref_matrix(x)
    np.testing.assert_allclose(M, R, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ssim_cross(x[:3], x, block_size=2), R[:3], rtol=0, atol=1e-9)


def test_default_blocks_with_a_remainder_match_skimage(rng):
    # 35 colour images: one default CPU block of 32 plus a block of 3, so the cached
    # right sides, the diagonal blocks and the short block all meet skimage (rows on
    # both sides of the block boundary, against every image)
    x = smooth_images(rng, 35, (13, 12, 3))
    rows = [0, 17, 31, 32, 34]
    for imgs in (x, x[..., 0]):
        M = ssim_matrix(imgs)
        R = ref_matrix(imgs[rows], imgs)
        np.testing.assert_allclose(M[rows], R, rtol=0, atol=TOL)
        assert np.abs(M[rows] - R).max() < 1e-10
        np.testing.assert_allclose(ssim_matrix(imgs, block_size=7), M, rtol=0, atol=1e-12)


def test_float_images_with_data_range(rng):
    x = rng.random((5, 12, 13))
    M = ssim_matrix(x, data_range=1.0)
    np.testing.assert_allclose(M, ref_matrix(x, data_range=1.0), rtol=0, atol=TOL)


def test_float_images_need_data_range(rng):
    with pytest.raises(InvalidParameterError, match="'data_range' parameter of ssim_matrix"):
        ssim_matrix(rng.random((3, 12, 12)))
    with pytest.raises(InvalidParameterError, match="data_range"):
        ssim_matrix(rng.random((3, 12, 12)), data_range=0.0)


@pytest.mark.parametrize("block_size", [1, 2, 5, 6, 64])
def test_block_boundaries_change_nothing(rng, block_size):
    x = smooth_images(rng, 11, (12, 13))
    full = ssim_matrix(x, block_size=11)
    np.testing.assert_allclose(ssim_matrix(x, block_size=block_size), full, rtol=0, atol=1e-12)


def test_colour_block_boundaries_and_cross(rng):
    x = smooth_images(rng, 6, (11, 13, 3))
    y = smooth_images(rng, 4, (11, 13, 3))
    C = ssim_cross(x, y, block_size=4)
    np.testing.assert_allclose(C, ref_matrix(x, y), rtol=0, atol=TOL)
    np.testing.assert_allclose(ssim_cross(x, y, block_size=1), C, rtol=0, atol=1e-12)


def test_cross_shape_mismatch(rng):
    with pytest.raises(InvalidParameterError, match="image shape and dtype of images_a"):
        ssim_cross(smooth_images(rng, 2, (12, 12)), smooth_images(rng, 2, (12, 13)))


# --- small images: skimage's rule ----------------------------------------------------


def test_skimage_refuses_small_images_without_win_size(rng):
    x = smooth_images(rng, 2, (8, 8))
    with pytest.raises(ValueError):
        ref_ssim(x[0], x[1])
    with pytest.raises(
        InvalidParameterError, match=r"at least 11x11 pixels; got 8x8: pass win_size=7"
    ):
        ssim_matrix(x)


@pytest.mark.parametrize("shape,win", [((8, 8), 7), ((9, 6), 5), ((8, 8), 3), ((7, 9, 3), 7)])
def test_small_images_with_win_size_match_skimage(rng, shape, win):
    x = smooth_images(rng, 5, shape)
    M = ssim_matrix(x, win_size=win, block_size=2)
    np.testing.assert_allclose(M, ref_matrix(x, win_size=win), rtol=0, atol=TOL)


def test_win_size_must_be_odd(rng):
    with pytest.raises(InvalidParameterError, match="must be an odd int"):
        ssim_matrix(smooth_images(rng, 2, (12, 12)), win_size=6)


def test_default_window_is_skimage_default():
    assert DEFAULT_WIN_SIZE == 2 * int(3.5 * 1.5 + 0.5) + 1 == 11


def test_bad_image_arrays(rng):
    with pytest.raises(InvalidParameterError, match="must be a 3-D or 4-D array"):
        ssim_matrix(np.zeros((12, 12), dtype=np.uint8))
    with pytest.raises(InvalidParameterError, match=r"channels-last"):
        ssim_matrix(np.zeros((2, 12, 12, 5), dtype=np.uint8))
    with pytest.raises(InvalidParameterError, match="must hold numbers"):
        ssim_matrix(np.zeros((2, 12, 12), dtype=bool))


def test_backend_and_device_errors(rng):
    x = smooth_images(rng, 2, (12, 12))
    with pytest.raises(InvalidParameterError, match="'backend' parameter of ssim_matrix"):
        ssim_matrix(x, backend="jax")
    with pytest.raises(InvalidParameterError, match="with backend='numpy'"):
        ssim_matrix(x, backend="numpy", device="cuda")


def test_torch_backend_matches_numpy(rng):
    torch = pytest.importorskip("torch")
    x = smooth_images(rng, 6, (13, 12, 3))
    M = ssim_matrix(x, backend="torch", device="cpu", block_size=4)
    np.testing.assert_allclose(M, ssim_matrix(x, backend="numpy"), rtol=0, atol=1e-12)
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="torch sees no CUDA device"):
            ssim_matrix(x, backend="torch", device="cuda")


# --- matched pairs, threshold pass, top-k ----------------------------------------------


def test_pairs_match_skimage(rng):
    x = smooth_images(rng, 9, (14, 11))
    pairs = rng.integers(0, 9, size=(25, 2))
    vals = ssim_pairs(x, pairs)
    ref = [ref_ssim(x[i], x[j]) for i, j in pairs]
    np.testing.assert_allclose(vals, ref, rtol=0, atol=TOL)
    assert ssim_pairs(x, np.empty((0, 2), dtype=int)).shape == (0,)


def test_pairs_chunking_changes_nothing(rng, monkeypatch):
    import dcsi.similarity.ssim as mod

    x = smooth_images(rng, 6, (12, 12, 3))
    pairs = rng.integers(0, 6, size=(13, 2))
    whole = ssim_pairs(x, pairs)
    monkeypatch.setattr(mod, "_PAIR_BYTES", 1)  # one pair per chunk
    np.testing.assert_allclose(ssim_pairs(x, pairs), whole, rtol=0, atol=1e-12)
    monkeypatch.setattr(mod, "_MOMENT_BYTES", 0)  # moments per chunk, not precomputed
    np.testing.assert_allclose(ssim_pairs(x, pairs), whole, rtol=0, atol=1e-12)
    monkeypatch.setattr(mod, "_PAIR_BYTES", 2**20)
    np.testing.assert_allclose(ssim_pairs(x, pairs), whole, rtol=0, atol=1e-12)


def test_pairs_errors(rng):
    x = smooth_images(rng, 3, (12, 12))
    with pytest.raises(InvalidParameterError, match=r"must be an \(m, 2\) array"):
        ssim_pairs(x, np.zeros((4, 3), dtype=int))
    with pytest.raises(InvalidParameterError, match=r"must hold indices in \[0, 2\]"):
        ssim_pairs(x, np.array([[0, 3]]))


@pytest.mark.parametrize("block_size", [2, 3, 20])
def test_threshold_pairs_equal_brute_force(rng, block_size):
    x = smooth_images(rng, 12, (12, 12))
    x[5] = x[2]
    M = ssim_matrix(x)
    # halfway between two neighbouring values, so that no pair sits within rounding
    # of the threshold (a GPU's blocks round differently from the CPU's)
    v = np.sort(M[np.triu_indices(12, 1)])
    t = float((v[46] + v[47]) / 2)
    pairs, vals = ssim_threshold_pairs(x, t, block_size=block_size)
    ii, jj = np.nonzero(np.triu(t <= M, 1))
    np.testing.assert_array_equal(pairs, np.stack([ii, jj], axis=1))
    np.testing.assert_allclose(vals, M[ii, jj], rtol=0, atol=1e-12)
    assert [2, 5] in pairs.tolist()


def test_threshold_pairs_none_found_and_errors(rng):
    x = smooth_images(rng, 3, (12, 12))
    pairs, vals = ssim_threshold_pairs(x, 1.0)
    assert pairs.shape == (0, 2) and vals.shape == (0,)
    with pytest.raises(InvalidParameterError, match=r"'threshold' parameter .* \[-1.0, 1.0\]"):
        ssim_threshold_pairs(x, 1.5)


@pytest.mark.parametrize("block_size", [2, 5, 30])
def test_topk_equals_brute_force(rng, block_size):
    x = smooth_images(rng, 11, (12, 13))
    M = ssim_matrix(x)
    np.fill_diagonal(M, -np.inf)
    k = 3
    idx, vals = ssim_topk(x, k, block_size=block_size)
    ref_idx = np.argsort(-M, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(vals, np.take_along_axis(M, ref_idx, 1), rtol=0, atol=1e-12)


def test_topk_errors(rng):
    x = smooth_images(rng, 3, (12, 12))
    with pytest.raises(InvalidParameterError, match=r"'k' parameter of ssim_topk .* \[1, 2\]"):
        ssim_topk(x, 3)
    with pytest.raises(InvalidParameterError, match="at least 2 images"):
        ssim_topk(x[:1], 1)


# --- class-level SSIM -------------------------------------------------------------------


def brute_class_means(x: np.ndarray, y: np.ndarray, K: int, **kw) -> np.ndarray:
    R = ref_matrix(x, **kw)
    out = np.full((K, K), np.nan)
    for a in range(K):
        for b in range(K):
            ia, ib = np.flatnonzero(y == a), np.flatnonzero(y == b)
            if a == b:
                if ia.size >= 2:
                    sub = R[np.ix_(ia, ia)]
                    out[a, a] = (sub.sum() - np.trace(sub)) / (ia.size * (ia.size - 1))
            elif ia.size and ib.size:
                out[a, b] = R[np.ix_(ia, ib)].mean()
    return out


def test_class_ssim_exact_matches_brute_force(rng):
    x = smooth_images(rng, 14, (12, 12))
    y = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2, 0, 1, 3])  # class 3 has one image
    res = class_ssim(x, y, n_classes=5, block_size=4)  # class 4 is empty
    ref = brute_class_means(x, y, 5)
    np.testing.assert_allclose(res.matrix, ref, rtol=0, atol=TOL, equal_nan=True)
    assert math.isnan(res.matrix[3, 3]) and np.isnan(res.matrix[4]).all()
    assert res.exact and res.params["exact"] is True
    finite = np.isfinite(res.matrix)
    np.testing.assert_array_equal(res.stderr[finite], 0.0)
    d = res.to_dict()
    assert set(d) == {"matrix", "diagonal", "params", "stderr"}
    assert d["matrix"][3][3] is None and d["stderr"][4][0] is None
    json.dumps(d, allow_nan=False)


def test_class_ssim_small_images_use_a_smaller_window(rng):
    x = smooth_images(rng, 8, (8, 8))
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    res = class_ssim(x, y)
    assert res.params["win_size"] == 7
    np.testing.assert_allclose(res.matrix, brute_class_means(x, y, 2, win_size=7), rtol=0, atol=TOL)
    with pytest.raises(InvalidParameterError, match="pass win_size=7"):
        class_ssim(x, y, win_size=None)


def test_class_ssim_on_digits_runs():
    from dcsi.samples import load_sample

    s = load_sample("digits")
    keep = np.flatnonzero(s.labels < 3)[:90]
    res = class_ssim(s.images[keep], s.labels[keep], n_classes=3)
    assert res.matrix.shape == (3, 3) and np.isfinite(res.matrix).all()
    # digits of one class look more alike than digits of two classes
    assert np.all(
        np.diag(res.matrix) > res.matrix.max(axis=1, where=~np.eye(3, dtype=bool), initial=-1)
    )


def test_class_ssim_subsample_is_seeded_and_unbiased(rng):
    x = smooth_images(rng, 40, (11, 11))
    y = np.repeat([0, 1], 20)
    exact = class_ssim(x, y).matrix
    a = class_ssim(x, y, max_per_class=6, seed=3)
    b = class_ssim(x, y, max_per_class=6, seed=3)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert not a.exact and a.params["n_used"] == [6, 6]
    assert "random subset of at most 6" in a.params["estimator"]
    assert np.all(a.stderr > 0)
    # the stated standard error is calibrated: over many seeds the estimates scatter
    # around the exact value with about the stated spread
    est = np.array([class_ssim(x, y, max_per_class=6, seed=s).matrix for s in range(120)])
    se = np.array([class_ssim(x, y, max_per_class=6, seed=s).stderr for s in range(0, 120, 4)])
    spread = est.std(axis=0)
    stated = np.sqrt((se**2).mean(axis=0))
    assert np.all(np.abs(est.mean(axis=0) - exact) < 4 * spread / np.sqrt(120) + 1e-9)
    assert np.all(stated / spread > 0.5) and np.all(stated / spread < 2.0)


def test_class_ssim_errors(rng):
    x = smooth_images(rng, 4, (12, 12))
    with pytest.raises(InvalidParameterError, match="class ids < n_classes=2"):
        class_ssim(x, np.array([0, 1, 2, 0]), n_classes=2)
    with pytest.raises(InvalidParameterError, match="'max_per_class' parameter of class_ssim"):
        class_ssim(x, np.array([0, 1, 1, 0]), max_per_class=1)
    with pytest.raises(InvalidParameterError, match="'labels' parameter of class_ssim"):
        class_ssim(x, np.array([0, 1]))


def test_block_cache_changes_nothing(rng, monkeypatch):
    import dcsi.similarity.ssim as mod

    x = smooth_images(rng, 9, (12, 12))
    cached = ssim_matrix(x, block_size=2)
    monkeypatch.setattr(mod, "_CACHE_BYTES", 0)  # recompute every column block
    np.testing.assert_allclose(ssim_matrix(x, block_size=2), cached, rtol=0, atol=1e-12)
    pairs, _ = ssim_threshold_pairs(x, -1.0, block_size=2)
    assert len(pairs) == 9 * 8 // 2


def test_auto_win_size():
    from dcsi.similarity.ssim import auto_win_size

    assert auto_win_size(28, 28) == 11 and auto_win_size(11, 40) == 11
    assert auto_win_size(8, 8) == 7 and auto_win_size(10, 12) == 9 and auto_win_size(1, 5) == 1
