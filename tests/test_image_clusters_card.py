"""The image-clusters block in the card and its views (map, report, README, Croissant)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_pipeline import PixelExtractor  # noqa: E402

import dcsi  # noqa: E402
from dcsi.card import load_card, write_card_files  # noqa: E402
from dcsi.cli import main  # noqa: E402


def _images(rng, n_per=15, k=3):
    protos = rng.integers(0, 256, (k, 16, 16))
    labels = np.repeat(np.arange(k), n_per)
    noise = rng.normal(0, 15, (k * n_per, 16, 16))
    return np.clip(protos[labels] + noise, 0, 255).astype(np.uint8), labels


def _analyzed(rng, labelled):
    """Images, labels and their card (the `cnn` analyzer on pixel features)."""
    images, labels = _images(rng)
    card = dcsi.analyze(
        images,
        labels=labels if labelled else None,
        backbone=PixelExtractor(),
        cache=False,
        analyzers="cnn",
    )
    return images, labels, card


@pytest.mark.parametrize("labelled", [True, False])
def test_analyze_writes_image_clusters_and_every_view_shows_them(rng, tmp_path, labelled):
    images, labels, card = _analyzed(rng, labelled)
    ic = card.to_dict()["image_clusters"]
    assert ic["n_clusters"] >= 2 and sum(c["size"] for c in ic["clusters"]) == 45
    assert len(ic["labels"]) == 45 and len(ic["map"]["xy"]) == 45
    if labelled:  # three well separated prototypes: the clusters are the classes
        assert ic["n_clusters"] == 3 and ic["comparison"]["ari"] == pytest.approx(1.0)
        assert ic["map"]["label"] == labels.tolist()
    else:
        assert ic["comparison"] is None and ic["map"]["label"] is None
    written = write_card_files(card, tmp_path / "out", load_image=lambda i: images[int(i)])
    assert written["map.png"].read_bytes()[:4] == b"\x89PNG"
    page = written["report.html"].read_text()
    assert "id='image-clusters'" in page and 'id="fig-image-map"' in page
    assert ('id="fig-image-map-classes"' in page) == labelled
    readme = written["README.md"].read_text()
    assert "image_clusters:" in readme
    croissant = json.loads(written["croissant.json"].read_text())
    assert "image_clusters" in {rs["@id"] for rs in croissant["recordSet"]}
    assert load_card(tmp_path / "out").to_dict()["image_clusters"] == ic
    line = card.summary().splitlines()[-1]
    assert line.startswith("image clusters (merged): k = ") and ("ARI" in line) == labelled


def test_report_draws_the_map_from_the_card_alone(rng, monkeypatch):
    images, labels = _images(rng)
    card = dcsi.analyze(
        images, labels=labels, backbone=PixelExtractor(), cache=False, analyzers="cnn"
    )
    from dcsi import image_clusters as clustering
    from dcsi import maps
    from dcsi.report import report_html

    def refuse(*a, **k):
        raise AssertionError("the report recomputed the clusters or the map")

    monkeypatch.setattr(maps, "image_map", refuse)
    monkeypatch.setattr(clustering, "cluster_images", refuse)
    assert 'id="fig-image-map"' in report_html(card)


def test_croissant_with_image_clusters_validates(rng, tmp_path):
    mlc = pytest.importorskip("mlcroissant")
    images, labels = _images(rng)
    card = dcsi.analyze(
        images, labels=labels, backbone=PixelExtractor(), cache=False, analyzers="cnn"
    )
    write_card_files(card, tmp_path, readme=False, report=False)
    ds = mlc.Dataset(jsonld=str(tmp_path / "croissant.json"))
    assert not ds.metadata.issues.errors, ds.metadata.issues.report()
    recs = list(ds.records("image_clusters"))
    assert sorted(int(r["image_clusters/size"]) for r in recs) == [15, 15, 15]


def test_cli_analyze_on_an_unlabelled_folder(rng, tmp_path, monkeypatch):
    from PIL import Image

    images, _ = _images(rng)
    root = tmp_path / "photos"
    root.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / f"{i:02d}.png")
    from dcsi import backbones

    monkeypatch.setattr(backbones, "get_backbone", lambda *a, **k: PixelExtractor())
    monkeypatch.setattr(backbones, "list_backbones", lambda: ["efficientnet_lite0"])
    out = tmp_path / "out"
    assert main(["analyze", str(root), "--out", str(out), "--no-cache", "--no-progress"]) == 0
    card = json.loads((out / "dcsi.json").read_text())
    assert card["image_clusters"]["n_clusters"] >= 2 and card["dataset"]["classes"] == []
    assert (out / "map.png").is_file()


def test_the_map_embeds_only_the_points_the_card_keeps(rng, monkeypatch):
    from dcsi import maps, pipeline

    images, labels = _images(rng)
    features = rng.normal(size=(45, 8)).astype(np.float32)
    seen = []

    def spy(x, **kwargs):
        seen.append(np.asarray(x).shape[0])
        return real(x, **kwargs)

    def refuse(*a, **k):
        raise AssertionError("images the card does not keep were placed on the map")

    real = maps.image_map
    monkeypatch.setattr(pipeline, "MAP_POINTS", 20)
    monkeypatch.setattr(maps, "image_map", spy)
    monkeypatch.setattr(maps, "place_by_neighbors", refuse)
    ims = dcsi.open_source(images, labels=labels)
    block = pipeline.image_clusters_block(ims, features, seed=3)
    keep = np.sort(np.random.default_rng(3).choice(45, 20, replace=False))
    assert seen == [20]
    expected = np.round(real(features[keep], seed=3, max_points=20), 3)
    assert np.array_equal(np.asarray(block["map"]["xy"]), expected)
    assert block["map"]["label"] == labels[keep].tolist()
    assert block["map"]["cluster"] == [block["labels"][i] for i in keep]


@pytest.mark.parametrize("labelled", [True, False])
def test_write_card_files_draws_each_map_once(rng, tmp_path, monkeypatch, labelled):
    from dcsi import report

    images, labels, card = _analyzed(rng, labelled)
    drawn = []
    real = report.map_png

    def count(block, **kwargs):
        drawn.append(kwargs.get("color_by", "cluster"))
        return real(block, **kwargs)

    monkeypatch.setattr(report, "map_png", count)
    written = write_card_files(card, tmp_path, readme=False, croissant=False)
    assert drawn == (["cluster", "label"] if labelled else ["cluster"])
    png = written["map.png"].read_bytes()
    page = written["report.html"].read_text()
    assert base64.b64encode(png).decode("ascii") in page  # the same picture, drawn once
