"""Blank and near-uniform images: detection, colour groups, redundancy and leakage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dcsi
from dcsi.blank import BLANK_TOLERANCE, blank_cross_pairs, find_blank
from dcsi.exceptions import InvalidParameterError
from dcsi.leakage import find_leakage
from dcsi.redundancy import find_redundancy


def _pictures(rng, n, size=16):
    """Random pictures (grey levels 30..200): never blank, never copies."""
    return rng.integers(30, 200, (n, size, size)).astype(np.uint8)


def test_find_blank_against_a_per_image_reference(rng):
    x = rng.integers(0, 256, (40, 9, 7, 3)).astype(np.uint8)
    x[::3] = rng.integers(0, 256, (14, 1, 1, 3))  # uniform colours
    x[1::6] = np.clip(x[1::6].astype(int) + rng.integers(-2, 3, (7, 9, 7, 3)), 0, 255)
    for tol in (0.0, 1.0, BLANK_TOLERANCE, 40.0):
        b = find_blank(x, tolerance=tol, batch_size=7)
        ref = [all(np.std(im[..., c].astype(float)) <= tol for c in range(3)) for im in x]
        assert b.mask.tolist() == ref
        np.testing.assert_allclose(b.colours, x.reshape(40, -1, 3).mean(axis=1), rtol=1e-12)


def test_blank_whatever_the_colour_and_not_a_low_contrast_picture(rng):
    h = w = 32
    white = np.full((h, w, 3), 255)
    black = np.zeros((h, w, 3))
    coloured = np.broadcast_to([10, 200, 30], (h, w, 3))
    noisy = np.clip(np.full((h, w, 3), 128.0) + rng.normal(0, 0.5, (h, w, 3)), 0, 255)
    faint = np.full((h, w, 3), 120.0)
    faint[8:24, 8:24] = 140  # a square 20 grey levels off its background
    ramp = np.broadcast_to(np.linspace(100, 125, w)[None, :, None], (h, w, 3))  # a faint ramp
    hue_only = np.broadcast_to([200, 0, 0], (h, w, 3)).copy()
    hue_only[:, : w // 2] = [0, 0, 200]  # a colour change: blank in grey, not in RGB
    x = np.stack([white, black, coloured, noisy, faint, ramp, hue_only]).astype(np.uint8)
    assert find_blank(x).mask.tolist() == [True, True, True, True, False, False, False]
    assert find_blank(x[..., 0]).mask[:6].tolist() == [True, True, True, True, False, False]


def test_transparent_and_uniform_images_of_a_folder_are_blank(tmp_path: Path, rng):
    """RGBA placeholders (fully transparent, any colour underneath) become white."""
    root = tmp_path / "d"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(3):
        rgba = rng.integers(0, 256, (20 + 10 * i, 30, 4)).astype(np.uint8)
        rgba[..., 3] = 0
        Image.fromarray(rgba, "RGBA").save(root / "a" / f"t{i}.png")
    Image.fromarray(np.full((30, 30), 255, np.uint8)).save(root / "b" / "white.png")
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(root / "b" / "black.png")
    for i in range(6):
        Image.fromarray(_pictures(rng, 1, 30)[0]).save(root / "b" / f"p{i}.png")
    res = find_redundancy(dcsi.open_source(root))
    assert res.blank is not None and res.blank["n_blank"] == 5
    assert set(res.blank["ids"]) == {
        "a/t0.png",
        "a/t1.png",
        "a/t2.png",
        "b/white.png",
        "b/black.png",
    }
    (g,) = [g for g in res if g.blank]
    assert set(g.members) == {"a/t0.png", "a/t1.png", "a/t2.png", "b/white.png"}
    assert g.kind == "conflict"  # blank images in two classes
    assert res.summary["n_blank"] == 5 and res.summary["n_blank_groups"] == 1
    assert res.to_dict()["groups"][0]["blank"] is True


def test_colour_groups_and_cross_pairs():
    x = np.array([255, 254, 0, 1, 100, 255, 60], dtype=np.uint8)[:, None, None] * np.ones(
        (1, 8, 8), np.uint8
    )
    x[6, :4] = 200  # a picture
    b = find_blank(x)
    assert b.mask.tolist() == [True] * 6 + [False]
    assert [g.tolist() for g in b.colour_groups()] == [[0, 1, 5], [2, 3]]
    assert [g.tolist() for g in b.colour_groups(np.array([0, 2, 3, 6]))] == [[2, 3]]
    test = find_blank(
        np.array([252, 100, 30], dtype=np.uint8)[:, None, None] * np.ones((1, 8, 8), np.uint8)
    )
    pairs, dist = blank_cross_pairs(test, b)
    assert pairs.tolist() == [[0, 1], [1, 4]]  # 252 is within 4 of 254; 30 has no match
    np.testing.assert_allclose(dist, [2 / 255, 0.0])


def test_redundancy_takes_blank_images_out_of_the_search(rng):
    x = _pictures(rng, 30)
    y = np.arange(30) % 3
    x[1] = x[0]  # a real copy
    x[[5, 8]] = 255  # white, classes 2 and 2
    x[9] = np.clip(255 - np.abs(rng.normal(0, 0.6, (16, 16))), 0, 255).astype(np.uint8)
    x[[12, 15]] = 0  # black, class 0
    for method in ("wavelet", "ssim"):
        res = find_redundancy(x, y, method=method)
        blank = {tuple(g.indices) for g in res if g.blank}
        assert blank == {(5, 8, 9), (12, 15)}, method
        assert any(set(g.indices) == {0, 1} and not g.blank for g in res)
        assert all(not (set(g.indices) & {5, 8, 9, 12, 15}) for g in res if not g.blank)
        kinds = {tuple(g.indices): g.kind for g in res if g.blank}
        assert kinds == {(5, 8, 9): "conflict", (12, 15): "redundant"}
        assert res.keep[[12, 15]].tolist().count(False) == 1  # one black copy removed
    off = find_redundancy(x, y, blank_tolerance=None)
    assert off.blank is None and not any(g.blank for g in off)
    with pytest.raises(
        InvalidParameterError, match="'blank_tolerance' parameter of find_redundancy"
    ):
        find_redundancy(x, y, blank_tolerance=-1.0)


def test_leakage_reports_blank_images_as_blank_leakage(rng):
    tr = _pictures(rng, 40)
    te = _pictures(rng, 12)
    tr[[3, 4]] = 255
    tr[6] = 0
    te[0] = 255  # leaked: white in both
    te[1] = 0  # leaked: black in both
    te[2] = 128  # blank, but no grey training image
    te[5] = tr[20]  # an ordinary copy
    res = find_leakage(tr, te)
    by_test = {p.test_id: p for p in res.pairs}
    assert set(by_test) == {"0", "1", "5"}
    assert by_test["0"].stage == "blank" and by_test["0"].distance == 0.0
    assert by_test["0"].train_id in {"3", "4"} and by_test["1"].train_id == "6"
    assert by_test["5"].stage == "features" and by_test["5"].train_id == "20"
    assert res.blank == {
        "tolerance": 2.0,
        "same_colour": 4.0,
        "n_train": 3,
        "n_test": 3,
        "n_leaked": 2,
        "test_ids": ["0", "1", "2"],
    }
    assert not {"0", "1", "2"} & {i for i, _ in res.farthest}  # never "farthest at 1.0"
    old = find_leakage(tr, te, blank_tolerance=None)
    assert {p.test_id for p in old.pairs} == {"5"} and old.blank is None
    assert old.to_dict()["blank"] is None


def test_card_shows_the_blank_images(rng):
    """Schema 1.3.0: redundancy.blank and group.blank validate and reach every view."""
    from test_card import make_card_dict

    from dcsi.card import Card
    from dcsi.card.hf import render_readme

    x = _pictures(rng, 12)
    x[[2, 7]] = 255
    ids = [f"img{i}" for i in range(12)]
    d = make_card_dict(rng)
    d["redundancy"] = find_redundancy(x, ids=ids).to_dict()
    card = Card(d)
    assert card.redundancy_counts["blank"] == 2
    assert card.redundancy[0].extra["blank"] is True
    assert "2 blank images" in card.summary()
    assert "2 blank or near-uniform images" in render_readme(card)
    old = make_card_dict(rng)  # a card without the block: no blank count, no line
    assert "blank" not in (Card(old).redundancy_counts or {})
