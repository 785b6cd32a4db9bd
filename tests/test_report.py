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
from dcsi.report import class_distance, dendrogram_order, laplacian_spectrum, report_html, write_report

_IMG = re.compile(r'<figure id="([\w-]+)"><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


@pytest.fixture
def card(rng):
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
    assert "k = 2 (recommended)" in page
    assert "<table id=\"groups\">" in page and "img2" in page


def test_report_gallery_with_load_image(card_no_figures, tmp_path, monkeypatch):
    card = card_no_figures
    monkeypatch.setitem(sys.modules, "dcsi.gallery", None)  # force the built-in gallery
    seen = []

    def load_image(image_id):
        seen.append(image_id)
        return np.full((8, 8), 40 * len(seen), dtype=np.uint8)

    page = write_report(card, tmp_path / "r.html", load_image=load_image).read_text()
    assert seen == ["img4", "img5", "img1", "img2", "img3"]  # conflicts first
    thumbs = re.findall(r'<img class="thumb" title="(\w+)"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
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
    assert "per class, largest first: class_1: 0.4000, class_3: 0.3000, class_2: 0.2000, class_0: 0.1000" in page
    assert "4 x 4 matrix (in dcsi.json)" in page
    assert "<th>meaning</th>" in page and "within-class spread 1 - |mu|^2" in page


def test_report_plots_stored_spectra(rng):
    from dcsi.report import _stored_spectra

    d = make_card_dict(rng)
    d["spectral"] = {"ssim_graph": {"eigenvalues": [0.0, 0.1, 0.9], "n_clusters": 2}}
    d["index"]["components"]["csg"] = {"eigenvalues": [0.0, 0.5]}
    spectra = _stored_spectra(Card(d).to_dict())
    assert set(spectra) == {"similarity.ssim (stored)", "spectral.ssim_graph (stored)",
                            "index.components.csg (stored)"}
    np.testing.assert_array_equal(spectra["spectral.ssim_graph (stored)"], [0.0, 0.1, 0.9])
    page = report_html(Card(d))
    assert "fig-spectrum" in _figures(page)


def test_report_with_the_real_gallery(card_no_figures):
    pytest.importorskip("dcsi.gallery", reason="dcsi.gallery (issue 4) not merged yet")
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


# -- numerics against references -----------------------------------------------
def test_class_distance_reference(rng):
    k = 5
    s = rng.uniform(-1, 1, size=(k, k))
    s[1, 3] = np.nan
    d = class_distance(s)
    ref = np.zeros((k, k))
    finite = [1 - v for v in s.ravel() if np.isfinite(v)]
    for i in range(k):
        for j in range(k):
            a = 1 - s[i, j] if np.isfinite(s[i, j]) else max(finite)
            b = 1 - s[j, i] if np.isfinite(s[j, i]) else max(finite)
            ref[i, j] = 0.0 if i == j else max((a + b) / 2, 0.0)
    np.testing.assert_allclose(d, ref, atol=1e-12)


def test_dendrogram_order_groups_blocks(rng):
    # two well-separated blocks of classes: the leaf order keeps each block contiguous
    k = 6
    perm = rng.permutation(k)
    block = np.array([0, 0, 0, 1, 1, 1])[perm]
    s = np.where(block[:, None] == block[None, :], 0.9, 0.1) + rng.uniform(0, 0.05, size=(k, k))
    z, order = dendrogram_order(s, linkage="average")
    assert sorted(order.tolist()) == list(range(k))
    labels = block[order]
    assert (labels[:3] == labels[0]).all() and (labels[3:] == labels[3]).all()
    assert z.shape == (k - 1, 4)
    # the top merge height is the mean between-block distance (average linkage)
    d = class_distance(s)
    between = d[np.ix_(block == 0, block == 1)].mean()
    assert z[-1, 2] == pytest.approx(between)


def test_laplacian_spectrum_reference(rng):
    from scipy.sparse.csgraph import laplacian

    k = 7
    s = rng.uniform(0, 1, size=(k, k))
    s[2, 5] = np.nan
    sym = (s + s.T) / 2
    # obvious reference: min-max over the finite off-diagonal entries, loop by loop
    vals = [sym[i, j] for i in range(k) for j in range(k) if i != j and np.isfinite(sym[i, j])]
    lo, hi = min(vals), max(vals)
    w = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if i != j and np.isfinite(sym[i, j]):
                w[i, j] = (sym[i, j] - lo) / (hi - lo)
    ref = np.sort(np.linalg.eigvalsh(laplacian(w, normed=True)))
    np.testing.assert_allclose(laplacian_spectrum(s), ref, atol=1e-10)
    # without rescaling: plain clipped weights
    w0 = np.where(np.isfinite(sym), np.clip(sym, 0, None), 0)
    np.fill_diagonal(w0, 0)
    np.testing.assert_allclose(laplacian_spectrum(s, rescale=False),
                               np.sort(np.linalg.eigvalsh(laplacian(w0, normed=True))), atol=1e-10)
    # two disconnected blocks -> exactly two zero eigenvalues
    b = 0.2 + 0.6 * np.kron(np.eye(2), np.ones((3, 3)))  # within 0.8, between 0.2
    ev = laplacian_spectrum(b)
    assert np.sum(ev < 1e-10) == 2 and ev.max() <= 2 + 1e-12
