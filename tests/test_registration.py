"""The registered distance against scipy's affine transform and a loop over pairs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dcsi.registration import (
    BLURS,
    GRID,
    despeckled_rows,
    moves,
    registered_distance,
    registered_rows,
    registered_windows,
    window_geometry,
)


def smoothed_grey(img: np.ndarray, sigma: float) -> np.ndarray:
    """One image in float64 grey levels (the channel mean), smoothed by scipy's Gaussian
    (nearest edge; none for ``sigma = 0``)."""
    g = img.astype(np.float64)
    if g.ndim == 3:
        g = g.mean(axis=2)
    return ndimage.gaussian_filter(g, sigma, mode="nearest") if sigma > 0 else g


def registered_reference(img: np.ndarray, sigma: float, grid: int = GRID) -> np.ndarray:
    """One image's rows by the definition: scipy's Gaussian and affine transform (bilinear,
    nearest edge), then scipy's Gaussian again for each blur; the inner window, block
    means by reshaping, centred unit rows."""
    g = smoothed_grey(img, sigma)
    h, w = g.shape
    m, p = window_geometry((h, w), grid)
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    views = []
    for angle, scale_y, scale_x in moves():
        t = np.deg2rad(angle)
        turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        inv = np.diag([1 / scale_y, 1 / scale_x]) @ turn
        views.append(
            ndimage.affine_transform(g, inv, offset=centre - inv @ centre, order=1, mode="nearest")
        )
    views += [ndimage.gaussian_filter(g, s, mode="nearest") for s in BLURS]
    out = []
    for moved in views:
        win = moved[m : h - m, m : w - m]
        ih, iw = win.shape[0] // p * p, win.shape[1] // p * p
        z = win[:ih, :iw].reshape(ih // p, p, iw // p, p).mean(axis=(1, 3)).ravel()
        z = z - z.mean()
        out.append(z / np.linalg.norm(z) if np.linalg.norm(z) > 1e-6 else z)
    return np.stack(out)


def despeckle_reference(g: np.ndarray) -> np.ndarray:
    """One grey image, by loops: each pixel clipped to the smallest and largest of its
    8 neighbours (the edge pixel repeated outside)."""
    h, w = g.shape
    out = g.copy()
    for i in range(h):
        for j in range(w):
            nb = [
                g[min(max(i + di, 0), h - 1), min(max(j + dj, 0), w - 1)]
                for di in (-1, 0, 1)
                for dj in (-1, 0, 1)
                if (di, dj) != (0, 0)
            ]
            out[i, j] = min(max(g[i, j], min(nb)), max(nb))
    return out


def despeckled_reference(img: np.ndarray, sigma: float) -> np.ndarray:
    """One image's despeckled view by the definition: the grey image despeckled by
    loops, then the untransformed row of :func:`registered_reference`."""
    g = img.astype(np.float64)
    if g.ndim == 3:
        g = g.mean(axis=2)
    return registered_reference(despeckle_reference(g), sigma)[0]


@pytest.mark.parametrize("shape", [(28, 28), (17, 23), (32, 32, 3), (8, 8)])
@pytest.mark.parametrize("chunk", [2, 4096])
def test_despeckled_rows_match_loops(rng, shape, chunk, monkeypatch):
    """Against loops, image by image; in chunks of 2 images the chunks run on threads."""
    import dcsi.registration as registration

    monkeypatch.setattr(registration, "_CHUNK", chunk)
    images = rng.integers(0, 256, size=(5, *shape), dtype=np.uint8)
    want = np.stack([despeckled_reference(x, 1.0) for x in images])
    np.testing.assert_allclose(despeckled_rows(images, sigma=1.0), want, atol=2e-6)
    assert despeckled_rows(images[:0]).shape == (0, want.shape[1])


@pytest.mark.parametrize("shape", [(28, 28), (17, 23), (32, 32, 3), (8, 8)])
def test_registered_rows_match_scipy(rng, shape):
    images = rng.integers(0, 256, size=(5, *shape), dtype=np.uint8)
    got = registered_rows(images, sigma=1.0)
    want = np.stack([registered_reference(x, 1.0) for x in images])
    assert got.shape == want.shape == (5, len(moves()) + len(BLURS), want.shape[2])
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_window_geometry():
    assert window_geometry((28, 28), grid=6) == (3, 4)
    assert window_geometry((28, 28)) == (3, 2)
    assert window_geometry((32, 32)) == (3, 2)
    assert window_geometry((8, 8)) == (1, 1)
    assert window_geometry((256, 300)) == (26, 17)


def test_constant_images_give_zero_rows():
    rows = registered_rows(np.full((2, 16, 16), 200, np.uint8))
    assert not rows.any()
    assert not despeckled_rows(np.full((2, 16, 16), 200, np.uint8)).any()


@pytest.mark.parametrize("block", [7, 1024])
def test_registered_distance_is_the_best_transform_of_either_image(rng, block):
    images = rng.integers(0, 256, size=(9, 20, 20), dtype=np.uint8)
    R = registered_rows(images)  # every transform of every image: the reference's rows
    M = despeckled_rows(images)
    W = registered_windows(images)
    a, b = np.triu_indices(len(images), 1)
    got = registered_distance(W, W, a, b, block=block)
    want = [
        max(
            0.0,
            1.0
            - max(
                M[i] @ M[j], *(max(R[i, t] @ R[j, 0], R[j, t] @ R[i, 0]) for t in range(R.shape[1]))
            ),
        )
        for i, j in zip(a, b)
    ]
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(registered_distance(W, W, b, a), got, atol=1e-12)  # symmetric


def test_registered_windows_hold_the_identity_rows_only(rng):
    images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    W = registered_windows(images, sigma=0.5)
    np.testing.assert_array_equal(W.identity, registered_rows(images, sigma=0.5)[:, 0])
    np.testing.assert_array_equal(W.despeckled, despeckled_rows(images, sigma=0.5))
    assert W.identity.shape == (6, 121) and W.images is images and len(W) == 6


def test_registered_distance_across_batches_and_sets(rng, monkeypatch):
    """Pairs spread over several batches of images (a batch of 3 images here) and two
    different sets give, bit for bit, what one product over every transform gives."""
    import dcsi.registration as registration

    monkeypatch.setattr(registration, "_CHUNK", 3)
    A_img = rng.integers(0, 256, size=(11, 24, 24, 3), dtype=np.uint8)
    B_img = rng.integers(0, 256, size=(8, 24, 24, 3), dtype=np.uint8)
    RA, RB = registered_rows(A_img), registered_rows(B_img)
    MA, MB = despeckled_rows(A_img), despeckled_rows(B_img)
    a, b = rng.integers(0, 11, 60), rng.integers(0, 8, 60)
    got = registered_distance(registered_windows(A_img), registered_windows(B_img), a, b, block=5)
    c = np.maximum(
        np.einsum("mtq,mq->mt", RA[a], RB[b, 0], dtype=np.float64),
        np.einsum("mtq,mq->mt", RB[b], RA[a, 0], dtype=np.float64),
    )
    c = np.concatenate([c, np.einsum("mq,mq->m", MA[a], MB[b], dtype=np.float64)[:, None]], 1)
    np.testing.assert_array_equal(got, np.maximum(1.0 - c.max(axis=1), 0.0))
    assert registered_distance(
        registered_windows(A_img), registered_windows(B_img), a[:0], b[:0]
    ).shape == (0,)


@pytest.mark.parametrize("angle", [-8.0, -5.0, 3.0, 8.0])
def test_a_rotated_copy_is_close_only_after_registration(rng, angle):
    smooth = ndimage.gaussian_filter(rng.normal(size=(48, 48)), 3.0)
    img = np.clip(128 + 600 * smooth, 0, 255).astype(np.uint8)
    turned = ndimage.rotate(img, angle, reshape=False, order=1, mode="nearest")
    W = registered_windows(np.stack([img, turned]))
    plain = 1.0 - float(W.identity[0] @ W.identity[1])
    registered = registered_distance(W, W, np.array([0]), np.array([1]))[0]
    assert registered < 0.25 * plain


def test_a_thumbnail_enlarged_back_is_close_only_after_registration(rng):
    """A thumbnail enlarged back is a smoothed copy: the blur transform of the sharp
    original finds it, whichever of the two is passed first."""
    from PIL import Image

    img = rng.integers(0, 256, size=(32, 32), dtype=np.uint8)
    img = ndimage.gaussian_filter(img.astype(float), 0.7).astype(np.uint8)
    small = Image.fromarray(img).resize((14, 14), Image.Resampling.BILINEAR)
    thumb = np.asarray(small.resize((32, 32), Image.Resampling.BILINEAR))
    W = registered_windows(np.stack([img, thumb]))
    plain = 1.0 - float(W.identity[0] @ W.identity[1])
    both = registered_distance(W, W, np.array([0, 1]), np.array([1, 0]))
    assert both[0] == both[1] < 0.5 * plain


def test_a_copy_with_impulse_noise_is_close_only_in_the_despeckled_view(rng):
    """Specks of impulse noise leave the despeckled view of a smooth image almost as it
    was."""
    smooth = ndimage.gaussian_filter(rng.normal(size=(32, 32)), 2.0)
    img = np.clip(128 + 600 * smooth, 0, 255).astype(np.uint8)
    noisy = img.copy()
    hit = rng.random(img.shape) < 0.02
    noisy[hit] = np.where(rng.random(int(hit.sum())) < 0.5, 0, 255)
    W = registered_windows(np.stack([img, noisy]))
    plain = 1.0 - float(W.identity[0] @ W.identity[1])
    assert 1.0 - float(W.despeckled[0] @ W.despeckled[1]) < 0.25 * plain
    assert registered_distance(W, W, np.array([0]), np.array([1]))[0] < 0.25 * plain
