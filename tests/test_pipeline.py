"""`dcsi.analyze`: the stages chained into a valid, reproducible card."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import functools
import operator

import dcsi
from dcsi.exceptions import InvalidParameterError


class PixelExtractor:
    """A tiny deterministic extractor: the 8x8 grey thumbnail as a 64-d vector."""

    name = "pixels8"
    weights_sha256 = "1" * 64
    image_size = 8
    cache_key = "pixels8"

    def transform(self, image):
        from PIL import Image

        arr = np.asarray(image.convert("L").resize((8, 8), Image.BILINEAR), np.float32)
        return torch.from_numpy(arr / 255.0)[None]

    def __call__(self, batch):
        return batch.flatten(1) + 0.01


@pytest.fixture
def data(rng):
    """3 classes of 12 images, 16x16, each class a noisy copy of its own prototype."""
    protos = rng.integers(0, 256, (3, 16, 16))
    labels = np.repeat(np.arange(3), 12)
    noise = rng.normal(0, 20, (36, 16, 16))
    images = np.clip(protos[labels] + noise, 0, 255).astype(np.uint8)
    images[5] = images[4]  # one redundant pair inside class 0
    return images, labels


def _analyze(data, tmp_path, **kw):
    images, labels = data
    kw.setdefault("backbone", PixelExtractor())
    return dcsi.analyze(images, labels=labels, cache=tmp_path / "cache", **kw)


def test_card_has_every_block_and_validates(data, tmp_path):
    card = _analyze(data, tmp_path)
    d = card.to_dict()
    assert d["dataset"]["n_images"] == 36 and d["dataset"]["class_counts"] == [12, 12, 12]
    assert set(card.similarity_kinds) == {"cnn_cosine", "ssim", "wavelet"}
    assert d["features"]["backbone"] == "pixels8" and d["features"]["dim"] == 64
    assert 0.0 <= card.index <= 1.0
    reading = card.index_reading
    assert reading["interpretation"].startswith(f"{card.index:.2f}: ")
    assert reading["reference_points"]  # the shipped points, same definition
    assert {c for p in reading["drivers"]["pairs"] for c in p["classes"]} <= set(card.classes)
    assert "not tested" in d["class_clusters"]["verdict"]  # K = 3: no null exists
    assert sorted(functools.reduce(operator.iadd, card.class_clusters(), [])) == card.classes
    kinds = {g.kind for g in card.redundancy}
    assert "redundant" in kinds
    card.save(tmp_path / "card")
    assert dcsi.load_card(tmp_path / "card") == card


def test_cnn_matrix_equals_building_blocks(data, tmp_path):
    """The card's matrix is the class_similarity of the extracted features (1e-7)."""
    images, labels = data
    card = _analyze(data, tmp_path, analyzers="cnn")
    fs = dcsi.extract_features(images, labels=labels, backbone=PixelExtractor(), cache=False)
    expected = dcsi.class_similarity(fs.features, fs.labels)
    np.testing.assert_allclose(card.similarity("cnn_cosine"), expected, atol=1e-7)
    spreads = dcsi.class_spreads(fs.features, fs.labels)
    sims = card.to_dict()["similarity"]
    np.testing.assert_allclose(sims["cnn_cosine"]["spreads"], spreads, rtol=1e-6, atol=1e-12)
    assert card.index == pytest.approx(
        dcsi.compute_index(expected, [12, 12, 12], spreads=spreads), abs=1e-7
    )
    assert card.to_dict()["index"]["components"]["views"] == ["cnn_cosine"]
    assert card.to_dict()["index"]["definition_version"] == 4


def test_index_uses_the_cards_wavelet_view(data, tmp_path):
    """With the wavelet analyzer the card's index is compute_index of its two matrices."""
    card = _analyze(data, tmp_path, analyzers=("cnn", "wavelet"))
    d = card.to_dict()
    counts = d["dataset"]["class_counts"]
    S, W = card.similarity("cnn_cosine"), card.similarity("wavelet")
    spreads = d["similarity"]["cnn_cosine"]["spreads"]
    wavelet_spreads = d["similarity"]["wavelet"]["spreads"]
    value = dcsi.compute_index(
        S, counts, wavelet=W, spreads=spreads, wavelet_spreads=wavelet_spreads
    )
    assert card.index == pytest.approx(value, abs=1e-7)
    assert card.to_dict()["index"]["components"]["views"] == ["cnn_cosine", "wavelet"]


def test_router_from_card_matches_cluster_sums(data, tmp_path):
    images, labels = data
    card = _analyze(data, tmp_path, analyzers="cnn")
    fs = dcsi.extract_features(images, labels=labels, backbone=PixelExtractor(), cache=False)
    router = card.router(extractor=PixelExtractor())
    assignment = np.asarray(card.cluster_assignment())
    unit = fs.features / np.linalg.norm(fs.features, axis=1, keepdims=True)
    sums = np.stack(
        [
            unit[assignment[labels] == c].sum(0) / (assignment[labels] == c).sum()
            for c in range(assignment.max() + 1)
        ]
    )
    np.testing.assert_array_equal(
        router.route_features(fs.features), np.argmax(unit @ sums.T, axis=1)
    )
    np.testing.assert_array_equal(router.route(images), router.route_features(fs.features))


def test_same_input_and_seed_give_the_same_card(data, tmp_path):
    a = _analyze(data, tmp_path).to_dict()
    b = _analyze(data, tmp_path).to_dict()
    for d in (a, b):
        for key in ("created", "finished", "command"):
            d["provenance"].pop(key)
    assert a == b


def test_unlabelled_data_gets_redundancy_only(data, tmp_path):
    images, _ = data
    card = dcsi.analyze(images, backbone=PixelExtractor(), cache=False)
    d = card.to_dict()
    assert d["similarity"] == {} and d.get("index") is None
    assert d["redundancy"]["summary"]["n_groups"] >= 1


def test_single_class_warns_and_skips_class_level(data, tmp_path, caplog):
    images, _ = data
    with caplog.at_level(logging.WARNING, logger="dcsi.pipeline"):
        card = dcsi.analyze(
            images, labels=np.zeros(36, int), backbone=PixelExtractor(), cache=False
        )
    assert "fewer than two classes" in caplog.text
    assert card.to_dict()["similarity"] == {}


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"analyzers": "cnn,pixels"}, r"'analyzers' parameter of analyze must be one of"),
        ({"analyzers": ""}, r"must name at least one of cnn, ssim, wavelet"),
        ({"seed": -1}, r"'seed' parameter of analyze must be an int >= 0"),
        ({"redundancy_method": "hash"}, r"'redundancy_method' parameter of analyze"),
    ],
)
def test_parameter_errors(data, tmp_path, kw, match):
    with pytest.raises(InvalidParameterError, match=match):
        _analyze(data, tmp_path, **kw)
