"""The registered distance against scipy's affine transform and a loop over pairs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dcsi.registration import (
    BLURS,
    GRID,
    MIN_MOVE,
    despeckled_rows,
    moves,
    recentred_rows,
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


def content_frame(g: np.ndarray) -> tuple[float, float, float, float, float]:
    """One grey image's frame by loops: the border's median as background, the centre and
    spreads of the pixel positions weighted by the distance to it (the middle and a
    quarter of the sides for a uniform image; spreads at least 0.5)."""
    h, w = g.shape
    border = [g[0, x] for x in range(w)] + [g[h - 1, x] for x in range(w)]
    border += [g[y, 0] for y in range(1, h - 1)] + [g[y, w - 1] for y in range(1, h - 1)]
    bg = float(np.median(border))
    total = cy = cx = 0.0
    for y in range(h):
        for x in range(w):
            wt = abs(g[y, x] - bg)
            total, cy, cx = total + wt, cy + wt * y, cx + wt * x
    if total <= 1e-9 * h * w:
        return bg, (h - 1) / 2, (w - 1) / 2, h / 4, w / 4
    cy, cx = cy / total, cx / total
    vy = sum(abs(g[y, x] - bg) * (y - cy) ** 2 for y in range(h) for x in range(w))
    vx = sum(abs(g[y, x] - bg) * (x - cx) ** 2 for y in range(h) for x in range(w))
    return bg, cy, cx, max(np.sqrt(vy / total), 0.5), max(np.sqrt(vx / total), 0.5)


def recentred_reference(img: np.ndarray, sigma: float) -> np.ndarray:
    """One image's recentred window by loops: the grey image smoothed by scipy's
    Gaussian, its content's centre (:func:`content_frame`), the mean of the ``p x p``
    pixels ending ``p // 2`` after each pixel (edge pixels repeated), read bilinearly
    (coordinates clamped to the image) on a ``g x g`` lattice ``p`` px apart about the
    centre, shifted so that each point reads the block centred on it; centred, unit."""
    g = smoothed_grey(img, sigma)
    h, w = g.shape
    m, p = window_geometry((h, w))
    side = (min(h, w) - 2 * m) // p
    _, cy, cx, _, _ = content_frame(g)
    box = np.empty_like(g)
    for y in range(h):
        for x in range(w):
            box[y, x] = np.mean(
                [
                    g[min(max(y - p // 2 + u, 0), h - 1), min(max(x - p // 2 + v, 0), w - 1)]
                    for u in range(p)
                    for v in range(p)
                ]
            )
    delta = (p - 1) / 2 - p // 2  # where the block of index i is centred, less i

    def read(y: float, x: float) -> float:
        y, x = min(max(y, 0.0), h - 1.0), min(max(x, 0.0), w - 1.0)
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
        fy, fx = y - y0, x - x0
        top = (1 - fx) * box[y0, x0] + fx * box[y0, x1]
        return float((1 - fy) * top + fy * ((1 - fx) * box[y1, x0] + fx * box[y1, x1]))

    t = [(j - (side - 1) / 2) * p - delta for j in range(side)]
    z = np.array([read(cy + a, cx + b) for a in t for b in t])
    z = z - z.mean()
    return z / np.linalg.norm(z) if np.linalg.norm(z) > 1e-4 else np.zeros_like(z)


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


@pytest.mark.parametrize("shape", [(28, 28), (17, 23), (32, 32, 3), (8, 8)])
@pytest.mark.parametrize("chunk", [2, 4096])
def test_recentred_rows_match_loops(rng, shape, chunk, monkeypatch):
    import dcsi.registration as registration

    monkeypatch.setattr(registration, "_CHUNK", chunk)
    images = rng.integers(0, 256, size=(5, *shape), dtype=np.uint8)
    images[1] = 77  # uniform: a zero row
    images[2] = 255
    images[2][3:8, 4:11] = 0  # a dark drawing on white, off the middle
    for sigma in (0.0, 1.0):
        want = np.stack([recentred_reference(x, sigma) for x in images])
        np.testing.assert_allclose(recentred_rows(images, sigma), want, atol=2e-6)
    assert not recentred_rows(images[1:2]).any()
    W = registered_windows(images)
    np.testing.assert_array_equal(W.recentred, recentred_rows(images))
    centres = [content_frame(smoothed_grey(x, 1.0))[1:3] for x in images]
    np.testing.assert_allclose(W.centre, centres, atol=1e-9)


def test_recentred_windows_undo_a_move_in_any_direction(rng):
    """A drawing on a plain ground moved by whole pixels, in any direction and farther
    than the transforms reach, reads the same about its content's centre."""
    base = np.full((32, 32), 255, np.uint8)
    base[10:22, 11:21] = rng.integers(0, 120, size=(12, 10))
    moved = [np.roll(base, shift, axis=(0, 1)) for shift in [(4, -5), (-5, 3), (0, 6), (-6, -6)]]
    images = np.stack([base, *moved])
    W = registered_windows(images)
    zeros, others = np.zeros(4, np.int64), np.arange(1, 5)
    np.testing.assert_allclose(1.0 - W.recentred[others] @ W.recentred[0], 0.0, atol=1e-5)
    assert np.all(1.0 - W.identity[others] @ W.identity[0] > 0.3)
    np.testing.assert_allclose(registered_distance(W, W, zeros, others), 0.0, atol=1e-5)


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
    images[2] = 0
    images[2][3:9, 6:13] = rng.integers(60, 256, size=(6, 7))  # a drawing on a plain ground
    images[3] = np.roll(images[2], (5, -4), axis=(0, 1))  # moved: the recentred windows match
    R = registered_rows(images)  # every transform of every image: the reference's rows
    M = despeckled_rows(images)
    C = recentred_rows(images)
    W = registered_windows(images)
    a, b = np.triu_indices(len(images), 1)
    got = registered_distance(W, W, a, b, block=block)

    def moved(i: int, j: int) -> bool:
        return bool(np.abs(W.centre[i] - W.centre[j]).max() >= MIN_MOVE)

    want = [
        max(
            0.0,
            1.0
            - max(
                M[i] @ M[j],
                C[i] @ C[j] if moved(i, j) else -np.inf,
                *(max(R[i, t] @ R[j, 0], R[j, t] @ R[i, 0]) for t in range(R.shape[1])),
            ),
        )
        for i, j in zip(a, b)
    ]
    assert moved(2, 3) and not all(moved(i, j) for i, j in zip(a, b))
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(registered_distance(W, W, b, a), got, atol=1e-12)  # symmetric


def test_registered_windows_hold_the_untransformed_views_only(rng):
    images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    W = registered_windows(images, sigma=0.5)
    np.testing.assert_array_equal(W.identity, registered_rows(images, sigma=0.5)[:, 0])
    np.testing.assert_array_equal(W.despeckled, despeckled_rows(images, sigma=0.5))
    np.testing.assert_array_equal(W.recentred, recentred_rows(images, sigma=0.5))
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
    CA, CB = recentred_rows(A_img), recentred_rows(B_img)
    a, b = rng.integers(0, 11, 60), rng.integers(0, 8, 60)
    WA, WB = registered_windows(A_img), registered_windows(B_img)
    got = registered_distance(WA, WB, a, b, block=5)
    moved = np.abs(WA.centre[a] - WB.centre[b]).max(axis=1) >= MIN_MOVE
    assert moved.any() and not moved.all()
    c = np.maximum(
        np.einsum("mtq,mq->mt", RA[a], RB[b, 0], dtype=np.float64),
        np.einsum("mtq,mq->mt", RB[b], RA[a, 0], dtype=np.float64),
    )
    views = [np.einsum("mq,mq->m", X[a], Y[b], dtype=np.float64) for X, Y in ((MA, MB), (CA, CB))]
    views[1] = np.where(moved, views[1], -np.inf)
    c = np.concatenate([c, np.stack(views, axis=1)], 1)
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
