"""The HTML report: every figure embedded, self-contained, numerics against references."""

from __future__ import annotations

import base64
import io
import re
import sys
import types

import numpy as np
import pytest
from PIL import Image
from test_card import make_card_dict

from dcsi.card import Card
from dcsi.card.views import class_spectrum, class_tree, stored_spectra
from dcsi.clusters import cluster_classes
from dcsi.report import report_html, write_report

_IMG = re.compile(
    r'<figure id="([\w-]+)"><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">'
)


def make_new_card_dict(rng: np.random.Generator, k: int = 4) -> dict:
    """A schema-1.1 card: ``class_clusters`` as the analysis stores it (tree, spectrum)."""
    d = make_card_dict(rng, k)
    s = np.asarray(d["similarity"]["cnn_cosine"]["matrix"])
    d["class_clusters"] = cluster_classes(s, classes=d["dataset"]["classes"]).to_dict()
    d["schema_version"] = "1.1.0"
    return d


@pytest.fixture
def card(rng):
    return Card(make_new_card_dict(rng))


@pytest.fixture
def old_card(rng):
    """A card written before schema 1.1: no stored class tree or spectrum."""
    return Card(make_card_dict(rng))


@pytest.fixture
def card_no_figures(rng):
    """A card without similarity matrices: the page renders without plotting (fast)."""
    d = make_card_dict(rng)
    d.pop("similarity")
    return Card(d)


def _figures(page: str) -> dict[str, Image.Image]:
    out = {}
    for fig_id, b64 in _IMG.findall(page):
        raw = base64.b64decode(b64)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        img = Image.open(io.BytesIO(raw))
        img.load()
        out[fig_id] = img
    return out


def test_report_embeds_every_figure(card, tmp_path):
    path = write_report(card, tmp_path)
    assert path == tmp_path / "report.html"
    page = path.read_text(encoding="utf-8")
    figs = _figures(page)
    assert set(figs) == {"fig-heatmap", "fig-dendrogram", "fig-spectrum"}
    for img in figs.values():
        assert img.size[0] > 100 and img.size[1] > 100
        assert len(np.unique(np.asarray(img.convert("L")))) > 5  # not a blank canvas
    # self-contained: no external scripts, styles or images
    assert not re.search(r'(src|href)="https?://', page)
    assert "<script" not in page
    # the index with its components explained
    assert "DCSI = 0.4375" in page and "worst-pair contrast" in page
    assert "<table id='components'>" in page and "worst_pair" in page
    assert "csg" in page  # peers
    assert "<th>meaning</th>" not in page  # no definitions stored -> no empty column
    # clusters and groups (table, no load_image)
    if card.recommended_k is None:  # random classes: the separation test says so
        assert "No k separates the classes" in page and "(recommended)" not in page
    else:
        assert f"k = {card.recommended_k} (recommended)" in page
    assert "recomputed" not in page
    assert '<table id="groups">' in page and "img2" in page


def test_report_gallery_with_load_image(card_no_figures, tmp_path, monkeypatch):
    card = card_no_figures
    monkeypatch.setitem(sys.modules, "dcsi.gallery", None)  # force the built-in gallery
    seen = []

    def load_image(image_id):
        seen.append(image_id)
        return np.full((8, 8), 40 * len(seen), dtype=np.uint8)

    page = write_report(card, tmp_path / "r.html", load_image=load_image).read_text()
    assert seen == ["img4", "img5", "img1", "img2", "img3"]  # conflicts first
    thumbs = re.findall(
        r'<img class="thumb" title="(\w+)"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page
    )
    assert [t for t, _ in thumbs] == seen
    img = Image.open(io.BytesIO(base64.b64decode(thumbs[0][1])))
    assert img.size == (64, 64)  # 8x8 upscaled for visibility
    assert 'title="img2"' in page and "outline:3px" in page  # the representative is marked


def test_report_uses_shared_gallery_when_available(card_no_figures, tmp_path, monkeypatch):
    card = card_no_figures
    fake = types.ModuleType("dcsi.gallery")
    calls = []

    def gallery_html(groups, load_image, *, max_groups):
        calls.append([tuple(g["members"]) for g in groups])
        return "<div>SHARED GALLERY</div>"

    fake.gallery_html = gallery_html
    monkeypatch.setitem(sys.modules, "dcsi.gallery", fake)
    page = report_html(card, load_image=lambda i: np.zeros((4, 4), np.uint8))
    assert "SHARED GALLERY" in page
    assert calls == [[("img1", "img2", "img3"), ("img4", "img5")]]


def test_report_components_readable(rng):
    d = make_card_dict(rng)
    d["index"]["components"] = {"spread": [0.1, 0.4, 0.2, 0.3], "overlap": np.eye(4), "t": 1.0}
    d["index"]["component_definitions"] = {"spread": "within-class spread 1 - |mu|^2"}
    d.pop("similarity")
    page = report_html(Card(d))
    assert (
        "per class, largest first: class_1: 0.4000, class_3: 0.3000, class_2: 0.2000, class_0: 0.1000"
        in page
    )
    assert "4 x 4 matrix (in dcsi.json)" in page
    assert "<th>meaning</th>" in page and "within-class spread 1 - |mu|^2" in page


def test_report_plots_stored_spectra(rng):
    d = make_new_card_dict(rng)
    d["spectral"] = {"ssim_graph": {"eigenvalues": [0.0, 0.1, 0.9], "n_clusters": 2}}
    d["index"]["components"]["csg"] = {"eigenvalues": [0.0, 0.5]}
    spectra = stored_spectra(Card(d))
    # class_clusters.eigenvalues is plotted as the class-graph spectrum, not twice
    assert set(spectra) == {
        "similarity.ssim (stored)",
        "spectral.ssim_graph (stored)",
        "index.components.csg (stored)",
    }
    np.testing.assert_array_equal(spectra["spectral.ssim_graph (stored)"], [0.0, 0.1, 0.9])
    page = report_html(Card(d))
    assert "fig-spectrum" in _figures(page)


def test_report_with_the_real_gallery(card_no_figures):
    page = report_html(card_no_figures, load_image=lambda i: np.full((8, 8), 99, np.uint8))
    assert '<div id="gallery">' in page
    for member in ("img1", "img2", "img3", "img4", "img5"):
        assert member in page
    assert page.count("data:image/png;base64,") >= 5


def test_report_without_analyses(rng):
    d = make_card_dict(rng)
    for key in ("similarity", "index", "class_clusters", "redundancy"):
        d.pop(key)
    page = report_html(Card(d))
    assert _figures(page) == {}
    assert "The index was not computed" in page and "Not run." in page


def test_report_many_classes_without_labels(rng):
    d = make_card_dict(rng)
    k = 80
    d["dataset"]["classes"] = [f"c{i}" for i in range(k)]
    d["dataset"]["class_counts"] = [3] * k
    s = np.random.default_rng(0).uniform(size=(k, k))
    d["similarity"] = {"cnn_cosine": {"matrix": (s + s.T) / 2, "diagonal": "x", "params": {}}}
    for key in ("class_clusters", "features"):
        d.pop(key)
    figs = _figures(report_html(Card(d)))
    assert set(figs) == {"fig-heatmap", "fig-dendrogram", "fig-spectrum"}


# -- the report reads the card, it does not recompute ---------------------------------
def _forbid_recomputation(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the report recomputed an analysis result")

    import scipy.cluster.hierarchy

    import dcsi.clusters
    import dcsi.spectral

    monkeypatch.setattr(dcsi.clusters, "cluster_classes", boom)
    monkeypatch.setattr(dcsi.spectral, "graph_laplacian", boom)
    monkeypatch.setattr(dcsi.spectral, "laplacian_spectrum", boom)
    monkeypatch.setattr(scipy.cluster.hierarchy, "linkage", boom)
    monkeypatch.setattr(np.linalg, "eigvalsh", boom)


def test_report_renders_from_the_card_without_recomputation(card, monkeypatch):
    _forbid_recomputation(monkeypatch)
    page = report_html(card)
    assert set(_figures(page)) == {"fig-heatmap", "fig-dendrogram", "fig-spectrum"}
    assert "recomputed" not in page
    tree, spectrum = class_tree(card), class_spectrum(card)
    assert tree.stored and spectrum.stored
    cc = card.data["class_clusters"]
    np.testing.assert_array_equal(tree.linkage_matrix, cc["linkage_matrix"])
    np.testing.assert_array_equal(tree.leaf_order, cc["leaf_order"])
    np.testing.assert_array_equal(spectrum.eigenvalues, cc["eigenvalues"])
    assert "1 - similarity" in page  # the dendrogram's axis: the stored tree_distance


def test_stored_views_equal_the_analysis(card):
    s = card.similarity("cnn_cosine")
    res = cluster_classes(s, classes=card.classes)
    np.testing.assert_array_equal(class_tree(card).linkage_matrix, res.linkage_matrix)
    np.testing.assert_array_equal(class_tree(card).leaf_order, res.leaf_order)
    np.testing.assert_array_equal(class_spectrum(card).eigenvalues, res.eigenvalues)


def test_old_card_falls_back_to_recomputation(old_card, card, monkeypatch):
    assert "linkage_matrix" not in old_card.data["class_clusters"]
    tree, spectrum = class_tree(old_card), class_spectrum(old_card)
    assert not tree.stored and not spectrum.stored
    res = cluster_classes(old_card.similarity("cnn_cosine"), linkage="average")
    np.testing.assert_array_equal(tree.linkage_matrix, res.linkage_matrix)
    np.testing.assert_array_equal(spectrum.eigenvalues, res.eigenvalues)
    assert class_tree(old_card, recompute=False) is None
    assert class_spectrum(old_card, recompute=False) is None
    page = report_html(old_card)
    assert set(_figures(page)) == {"fig-heatmap", "fig-dendrogram", "fig-spectrum"}
    assert "schema older than 1.1" in page and "recomputed" in page


def test_old_card_that_cannot_be_recomputed_omits_the_dendrogram(rng):
    d = make_card_dict(rng)
    m = np.asarray(d["similarity"]["cnn_cosine"]["matrix"])
    m[0, 1] = m[1, 0] = np.nan  # an undefined pair: no tree can be built
    d["similarity"]["cnn_cosine"]["matrix"] = m
    card = Card(d)
    assert class_tree(card) is None and class_spectrum(card) is None
    page = report_html(card)
    figs = _figures(page)
    assert "fig-dendrogram" not in figs and "fig-heatmap" in figs
    assert "No dendrogram" in page
    assert "fig-spectrum" in figs  # the stored ssim spectrum is still plotted


def test_stored_tree_with_a_wrong_shape_is_not_used(rng):
    d = make_new_card_dict(rng)
    d["class_clusters"]["linkage_matrix"] = [[0, 1, 0.5, 2]]  # K - 1 = 3 rows expected
    tree = class_tree(Card(d))
    assert tree is not None and not tree.stored
