"""The equalised view (dcsi.equalised_view): PIL's equalisation, vectorised, and the
copies it links that the coarse rows miss."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from dcsi.equalised_view import equalise
from dcsi.relative_links import RelativeOptions, relative_cross_pairs, relative_links


def _pil(img: np.ndarray) -> np.ndarray:
    return np.asarray(ImageOps.equalize(Image.fromarray(img)))


@pytest.mark.parametrize("shape", [(28, 28), (13, 17), (1, 5)])
def test_equalise_is_pils(rng, shape):
    cases = [
        rng.integers(0, 256, shape, dtype=np.uint8),  # every level
        np.full(shape, 7, np.uint8),  # one level: unchanged
        (rng.integers(0, 3, shape) * 100).astype(np.uint8),  # three levels
        ((rng.random(shape) < 0.05) * 255).astype(np.uint8),  # a few bright pixels
        np.clip(rng.normal(30, 10, shape), 0, 255).astype(np.uint8),  # a narrow range
    ]
    got = equalise(np.stack(cases))
    for img, out in zip(cases, got, strict=True):
        np.testing.assert_array_equal(out, _pil(img))


def test_colour_images_are_equalised_in_grey(rng):
    rgb = rng.integers(0, 256, (4, 9, 11, 3), dtype=np.uint8)
    grey = np.rint(rgb.astype(np.float32).mean(axis=3)).astype(np.uint8)
    np.testing.assert_array_equal(equalise(rgb), np.stack([_pil(g) for g in grey]))


def test_the_equalised_view_links_copies_through_a_monotone_map():
    """Fashion-MNIST test images, and copies of 20 of them equalised or put through a
    strong gamma: the coarse rows link few of them, the equalised view most; the
    score agrees, and leakage finds them with the view on."""
    from dcsi.samples import load_sample

    rng = np.random.default_rng(0)
    images = load_sample("fashion-mnist", "test").images[:1500].copy()
    src, dst = np.arange(20), np.arange(1480, 1500)
    for i, (a, b) in enumerate(zip(src, dst, strict=True)):
        if i % 2:
            images[b] = _pil(images[a])
        else:
            images[b] = np.rint(255 * (images[a] / 255.0) ** rng.uniform(2.5, 3.5))
    planted = {(int(a), int(b)) for a, b in zip(src, dst, strict=True)}
    on = relative_links(images, RelativeOptions(equalised=True))
    off = relative_links(images)
    found_on = planted & {tuple(p) for p in on.pairs.tolist()}
    found_off = planted & {tuple(p) for p in off.pairs.tolist()}
    assert len(found_on) >= 12 and len(found_off) <= 5  # 13 and 3
    a, b = np.array(sorted(found_on)).T
    assert np.all(on.score(a, b) <= 1.0)
    test, train = images[1480:], images[:1480]
    pairs, _ = relative_cross_pairs(test, train, RelativeOptions(equalised=True))
    leaked = {(int(t), int(r)) for t, r in pairs.tolist()}
    assert len({(i, i) for i in range(20)} & leaked) >= 12
