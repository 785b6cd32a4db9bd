"""Wavelet coefficient rows and the class-level wavelet similarity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pywt

from dcsi.exceptions import InvalidParameterError
from dcsi.similarity.wavelet import (
    class_wavelet_similarity,
    iter_wavelet_blocks,
    n_coefficients,
    wavelet_coefficients,
)


def _reference_row(img, wavelet, level, mode):
    """One image at a time, coefficient arrays flattened in wavedec2 order."""
    coeffs = pywt.wavedec2(img.astype(np.float64), wavelet, mode=mode, level=level, axes=(0, 1))
    parts = [coeffs[0].ravel()] + [c.ravel() for d in coeffs[1:] for c in d]
    return np.concatenate(parts)


@pytest.mark.parametrize(
    "shape,wavelet,level", [((12, 12), "db1", 1), ((16, 16), "db2", 2), ((8, 8, 3), "db1", 1)]
)
def test_rows_match_per_image_reference(rng, shape, wavelet, level):
    imgs = rng.integers(0, 256, (7, *shape), dtype=np.uint8)
    W = wavelet_coefficients(imgs, wavelet=wavelet, level=level, batch_size=3)
    for i in range(len(imgs)):
        ref = _reference_row(imgs[i], wavelet, level, "symmetric")
        assert W[i].shape == ref.shape
        np.testing.assert_allclose(np.sort(W[i]), np.sort(ref), rtol=1e-5, atol=1e-3)
    if len(shape) == 2:  # same order for grey images
        np.testing.assert_allclose(
            W[0], _reference_row(imgs[0], wavelet, level, "symmetric"), rtol=1e-5, atol=1e-3
        )


def test_paper_sizes():
    assert n_coefficients((28, 28)) == 784
    assert n_coefficients((32, 32, 3)) == 3072


def test_blocks_cover_all_rows(rng):
    imgs = rng.integers(0, 256, (10, 8, 8), dtype=np.uint8)
    starts = [s for s, b in iter_wavelet_blocks(imgs, batch_size=4)]
    assert starts == [0, 4, 8]


def test_class_similarity_matches_pairwise_loop(rng):
    imgs = rng.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 3, 30)
    y[:3] = [0, 1, 2]
    got = class_wavelet_similarity(imgs, y, batch_size=7)
    W = wavelet_coefficients(imgs).astype(np.float64)
    U = W / np.linalg.norm(W, axis=1, keepdims=True)
    C = U @ U.T
    for a in range(3):
        for b in range(3):
            ia, ib = np.flatnonzero(y == a), np.flatnonzero(y == b)
            block = C[np.ix_(ia, ib)]
            if a == b:
                ref = (block.sum() - np.trace(block)) / (len(ia) * (len(ia) - 1))
            else:
                ref = block.mean()
            np.testing.assert_allclose(got.matrix[a, b], ref, rtol=1e-6)
            # the directional spread: each row of class a minus the mean of the others,
            # projected on the line from class b's centre to that mean
            if a != b:
                total = 0.0
                for i in ia:
                    rest = U[ia[ia != i]].mean(0)
                    line = rest - U[ib].mean(0)
                    total += float((U[i] - rest) @ line / np.linalg.norm(line)) ** 2
                want = total * (len(ia) - 1) / len(ia) ** 2
                np.testing.assert_allclose(got.spreads[a, b], want, rtol=1e-5)
    assert np.all(np.diag(got.spreads) == 0)
    assert class_wavelet_similarity(imgs, y, spreads=False).spreads is None
    d = got.to_dict()
    assert set(d) == {"matrix", "diagonal", "params", "spreads"}
    json.dumps(d, allow_nan=False)
    assert d["params"]["wavelet"] == "db1"


def test_class_similarity_from_an_image_set_equals_the_arrays():
    from dcsi.sources import open_source

    images = open_source("sample:digits")
    got = class_wavelet_similarity(images)
    assert got.matrix.shape == (10, 10)
    assert got.classes[0] == "0"
    same = class_wavelet_similarity(
        images.to_array(mode="L"), images.labels, classes=list(images.classes)
    )
    np.testing.assert_array_equal(got.matrix, same.matrix)
    # the spreads' second pass reads the image set again, to the same rows
    np.testing.assert_array_equal(got.spreads, same.spreads)
    with pytest.raises(InvalidParameterError, match="must be an ImageSet"):
        class_wavelet_similarity("sample:digits")


def test_wavelet_rows_select_and_reuse_columns(rng):
    from dcsi.similarity.wavelet import WaveletOptions, wavelet_rows

    imgs = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    wr = wavelet_rows(imgs, options=WaveletOptions(tau=1e3))
    assert wr.rows.shape == (40, len(wr.columns)) and wr.selection is not None
    np.testing.assert_allclose(np.linalg.norm(wr.rows, axis=1), 1.0, atol=1e-5)
    # the approximation band is centred per image: brightness does not move a row
    brighter = wavelet_rows(
        np.clip(imgs.astype(int) + 3, 0, 255).astype(np.uint8), columns=wr.columns
    )
    assert brighter.selection is None and brighter.summary()["m"] == len(wr.columns)
    W = wavelet_coefficients(imgs)[:, wr.columns].astype(np.float64)
    approx = wr.columns < 16  # 4 x 4 approximation coefficients of an 8 x 8 image
    W[:, approx] -= W[:, approx].mean(axis=1, keepdims=True)
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    np.testing.assert_allclose(wr.rows, W, atol=1e-5)
    assert wr.summary()["n_coefficients"] == 64


def test_errors(rng):
    imgs = rng.integers(0, 256, (4, 8, 8), dtype=np.uint8)
    with pytest.raises(InvalidParameterError, match="'wavelet' parameter of wavelet_coefficients"):
        wavelet_coefficients(imgs, wavelet="nope")
    with pytest.raises(InvalidParameterError, match="'level' parameter"):
        wavelet_coefficients(imgs, level=0)
    with pytest.raises(InvalidParameterError, match="'mode' parameter"):
        wavelet_coefficients(imgs, mode="bad")
    with pytest.raises(InvalidParameterError, match="must be uint8 images"):
        wavelet_coefficients(imgs.astype(float))
    with pytest.raises(InvalidParameterError, match="must be a 3-D or 4-D array"):
        wavelet_coefficients(imgs[0])
    with pytest.raises(InvalidParameterError, match="'color' parameter"):
        class_wavelet_similarity(imgs, [0, 1, 0, 1], color="CMYK")


def test_given_coefficients_give_the_same_bits(rng):
    """W computed elsewhere, image by image (the Ray actors), replaces W computed here:
    the same wavelet rows and class matrix, bit for bit."""
    from dcsi.similarity.wavelet import wavelet_rows

    images = rng.integers(0, 256, (120, 12, 10), dtype=np.uint8)
    y = np.arange(120) % 4
    W = np.concatenate([wavelet_coefficients(images[i : i + 1]) for i in range(120)])
    ref, got = wavelet_rows(images), wavelet_rows(images, coefficients=W)
    assert got.rows.tobytes() == ref.rows.tobytes()
    np.testing.assert_array_equal(got.columns, ref.columns)
    kw = {"n_classes": 4, "batch_size": 50}
    a = class_wavelet_similarity(images, y, **kw)
    b = class_wavelet_similarity(images, y, coefficients=W, **kw)
    assert a.matrix.tobytes() == b.matrix.tobytes() and a.sums.tobytes() == b.sums.tobytes()
    with pytest.raises(InvalidParameterError, match="'coefficients' parameter of wavelet_rows"):
        wavelet_rows(images, coefficients=W[:, :5])
