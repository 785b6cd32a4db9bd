"""The bounded working size of the pixel-space stages, mixed sizes, RGBA, memory checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dcsi
import dcsi._validation
from dcsi.exceptions import DataError
from dcsi.redundancy import find_redundancy
from dcsi.similarity.ssim import class_ssim
from dcsi.similarity.wavelet import wavelet_rows
from dcsi.sources import MAX_WORKING_SIDE, bounded_size


def _smooth(rng, side):
    """A smooth picture: a random 8 x 8 image enlarged to ``side`` (bilinear)."""
    small = Image.fromarray(rng.integers(0, 256, (8, 8)).astype(np.uint8))
    return np.asarray(small.resize((side, side), Image.Resampling.BILINEAR))


def _folder(root: Path, pictures: dict[str, np.ndarray]) -> Path:
    for name, arr in pictures.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)
    return root


@pytest.mark.parametrize(
    ("hw", "expected"),
    [((8, 8), (8, 8)), ((28, 28), (28, 28)), ((32, 32), (32, 32)), ((64, 64), (32, 32)),
     ((2000, 2000), (32, 32)), ((213, 221), (31, 32)), ((100, 300), (11, 32)),
     ((3000, 2), (32, 1))],
)  # fmt: skip
def test_bounded_size(hw, expected):
    assert bounded_size(hw) == expected
    assert max(bounded_size(hw)) <= MAX_WORKING_SIDE


def test_2000_px_images_cost_what_64_px_images_cost(tmp_path: Path, rng):
    """Same working size, same wavelet row length, and the same picture is linked."""
    base = [rng.integers(0, 256, (8, 8)).astype(np.uint8) for _ in range(6)]

    def picture(i, side):
        return np.asarray(Image.fromarray(base[i]).resize((side, side), Image.Resampling.BILINEAR))

    big = _folder(tmp_path / "big", {f"c/{i}.png": picture(i, 2000) for i in range(6)})
    small = _folder(tmp_path / "small", {f"c/{i}.png": picture(i, 64) for i in range(6)})
    mixed = _folder(
        tmp_path / "mixed",
        {
            "c/big0.png": picture(0, 2000),
            "c/small0.png": picture(0, 64),
            "c/x.png": picture(1, 500),
        },
    )
    ims_big, ims_small = dcsi.open_source(big), dcsi.open_source(small)
    assert ims_big.working_size() == ims_small.working_size() == (32, 32)
    a, b = ims_big.to_array(), ims_small.to_array()
    assert a.shape == b.shape == (6, 32, 32)
    assert wavelet_rows(a).n_coefficients == wavelet_rows(b).n_coefficients == 1024
    res = find_redundancy(dcsi.open_source(mixed))
    assert res.params["working_size"] == [32, 32]
    assert [set(g.members) for g in res] == [{"c/big0.png", "c/small0.png"}]


def test_mixed_sizes_and_aspects_are_stretched_to_the_median_aspect(tmp_path: Path, rng):
    root = _folder(
        tmp_path / "d",
        {
            "a/wide0.png": _smooth(rng, 300)[:100],
            "a/wide1.png": _smooth(rng, 600)[:200],
            "b/wide2.png": _smooth(rng, 90)[:30],
            "b/tall.png": _smooth(rng, 300)[:, :100],
            "b/square.png": _smooth(rng, 300),
        },
    )
    ims = dcsi.open_source(root)
    assert ims.native_size() == (200, 300)  # the median height and the median width
    assert ims.working_size() == bounded_size((200, 300)) == (21, 32)
    assert ims.to_array().shape == (5, 21, 32)
    assert ims.working_size(16) == (16, 16)  # an explicit size wins
    assert ims.to_array(size=(20, 10)).shape == (5, 20, 10)


def test_in_memory_arrays_are_bounded_and_rgba_composited(rng):
    x = np.repeat(np.repeat(rng.integers(0, 256, (6, 10, 10)).astype(np.uint8), 20, 1), 20, 2)
    res = find_redundancy(x)  # (6, 200, 200)
    assert res.params["working_size"] == [32, 32]
    rgba = np.zeros((6, 16, 16, 4), np.uint8)
    rgba[..., :3] = rng.integers(0, 256, (6, 16, 16, 3))
    rgba[:3, ..., 3] = 255  # opaque pictures
    res = find_redundancy(rgba)  # three fully transparent images: white, blank
    assert res.blank is not None and res.blank["ids"] == ["3", "4", "5"]


def test_analyze_records_the_working_size(tmp_path: Path, rng):
    root = _folder(
        tmp_path / "d",
        {f"{c}/{i}.png": _smooth(rng, 120) for c in ("a", "b") for i in range(4)},
    )
    card = dcsi.analyze(str(root), analyzers="ssim,wavelet", cache=False)
    params = card.to_dict()["provenance"]["parameters"]
    assert params["size"] is None and params["working_size"] == [32, 32]
    assert card.to_dict()["similarity"]["ssim"]["params"]["image_size"] == [32, 32]
    assert card.to_dict()["redundancy"]["params"]["working_size"] == [32, 32]


def test_memory_check_names_the_option(monkeypatch, rng):
    ims = dcsi.open_source(rng.integers(0, 256, (50, 16, 16)).astype(np.uint8))
    monkeypatch.setattr(dcsi._validation, "available_memory", lambda: 1000)
    with pytest.raises(
        DataError, match=r"^Decoding 50 images at 40 x 40 pixels needs about .*--size"
    ) as info:
        ims.to_array(size=40)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=r"wavelet rows of 50 images .*--size on the command line"):
        wavelet_rows(rng.integers(0, 256, (50, 16, 16)).astype(np.uint8))


def test_class_ssim_caps_its_images_in_all(rng):
    x = rng.integers(0, 256, (60, 8, 8)).astype(np.uint8)
    y = np.arange(60) % 30  # 30 classes of 2
    assert class_ssim(x, y).params["max_per_class"] == 166  # 5000 // 30
    assert class_ssim(x, y % 4).params["max_per_class"] == 500
    assert class_ssim(x, y, max_per_class=3).params["max_per_class"] == 3


def test_compositing_over_white_is_exact_for_every_colour_and_alpha():
    """``round(c * a / 255 + 255 - a)`` for all 256 x 256 (colour, alpha) pairs."""
    import io

    from dcsi.sources import decode_image

    c = np.repeat(np.arange(256), 256).reshape(256, 256)
    a = np.tile(np.arange(256), 256).reshape(256, 256)
    ref = np.rint(c * (a / 255.0) + 255.0 * (1 - a / 255.0)).astype(np.uint8)
    for mode, arr in (
        ("LA", np.stack([c, a], -1)),
        ("RGBA", np.stack([c, 255 - c, c, a], -1)),
    ):
        buf = io.BytesIO()
        Image.fromarray(arr.astype(np.uint8), mode).save(buf, format="PNG")
        out = np.asarray(decode_image(buf.getvalue()))
        got = out if mode == "LA" else out[..., 0]
        np.testing.assert_array_equal(got, ref)
        if mode == "RGBA":
            ref_g = np.rint((255 - c) * (a / 255.0) + 255.0 * (1 - a / 255.0)).astype(np.uint8)
            np.testing.assert_array_equal(out[..., 1], ref_g)
