"""The registered distance against scipy's affine transform and a loop over pairs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dcsi.registration import (
    moves,
    registered_distance,
    registered_rows,
    window_geometry,
)


def registered_reference(img: np.ndarray, sigma: float) -> np.ndarray:
    """One image's rows by the definition: scipy's Gaussian and affine transform (bilinear,
    nearest edge), the inner window, block means by reshaping, centred unit rows."""
    g = img.astype(np.float64)
    if g.ndim == 3:
        g = g.mean(axis=2)
    if sigma > 0:
        g = ndimage.gaussian_filter(g, sigma, mode="nearest")
    h, w = g.shape
    m, p = window_geometry((h, w))
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    out = []
    for angle, scale_y, scale_x in moves():
        t = np.deg2rad(angle)
        turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        inv = np.diag([1 / scale_y, 1 / scale_x]) @ turn
        moved = ndimage.affine_transform(
            g, inv, offset=centre - inv @ centre, order=1, mode="nearest"
        )
        win = moved[m : h - m, m : w - m]
        ih, iw = win.shape[0] // p * p, win.shape[1] // p * p
        z = win[:ih, :iw].reshape(ih // p, p, iw // p, p).mean(axis=(1, 3)).ravel()
        z = z - z.mean()
        out.append(z / np.linalg.norm(z) if np.linalg.norm(z) > 1e-6 else z)
    return np.stack(out)


@pytest.mark.parametrize("shape", [(28, 28), (17, 23), (32, 32, 3), (8, 8)])
def test_registered_rows_match_scipy(rng, shape):
    images = rng.integers(0, 256, size=(5, *shape), dtype=np.uint8)
    got = registered_rows(images, sigma=1.0)
    want = np.stack([registered_reference(x, 1.0) for x in images])
    assert got.shape == want.shape == (5, len(moves()), want.shape[2])
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_window_geometry():
    assert window_geometry((28, 28)) == (3, 2)
    assert window_geometry((32, 32)) == (3, 2)
    assert window_geometry((8, 8)) == (1, 1)
    assert window_geometry((256, 300)) == (26, 17)


def test_constant_images_give_zero_rows():
    rows = registered_rows(np.full((2, 16, 16), 200, np.uint8))
    assert not rows.any()


def test_registered_distance_is_the_best_transform_of_either_image(rng):
    images = rng.integers(0, 256, size=(9, 20, 20), dtype=np.uint8)
    R = registered_rows(images)
    a, b = np.triu_indices(len(images), 1)
    got = registered_distance(R, R, a, b, block=7)
    want = [
        max(0.0, 1.0 - max(max(R[i, t] @ R[j, 0], R[j, t] @ R[i, 0]) for t in range(R.shape[1])))
        for i, j in zip(a, b)
    ]
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(registered_distance(R, R, b, a), got, atol=1e-12)  # symmetric


@pytest.mark.parametrize("angle", [-8.0, -5.0, 3.0, 8.0])
def test_a_rotated_copy_is_close_only_after_registration(rng, angle):
    smooth = ndimage.gaussian_filter(rng.normal(size=(48, 48)), 3.0)
    img = np.clip(128 + 600 * smooth, 0, 255).astype(np.uint8)
    turned = ndimage.rotate(img, angle, reshape=False, order=1, mode="nearest")
    R = registered_rows(np.stack([img, turned]))
    plain = 1.0 - float(R[0, 0] @ R[1, 0])
    registered = registered_distance(R, R, np.array([0]), np.array([1]))[0]
    assert registered < 0.25 * plain
