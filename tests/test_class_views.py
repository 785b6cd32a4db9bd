"""Per-class §5.4 views: against brute-force skimage loops, determinism, card, report."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from test_card import make_card_dict

from dcsi.card import Card
from dcsi.card.card import card_to_json
from dcsi.class_views import class_views, graph_layout, knn_edges
from dcsi.exceptions import CardSchemaError, InvalidParameterError
from dcsi.report import report_html


def _data(rng, counts=(7, 9, 5), size=12):
    labels = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(labels)
    images = rng.integers(0, 256, size=(labels.size, size, size), dtype=np.uint8)
    # a little shared structure, so SSIMs differ more than noise does
    images[: labels.size // 2, :6] //= 3
    return images, labels


def _skimage_matrix(images):
    from skimage.metrics import structural_similarity

    n = len(images)
    S = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            S[i, j] = S[j, i] = structural_similarity(
                images[i],
                images[j],
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=255,
            )
    return S


@pytest.fixture
def data(rng):
    return _data(rng)


@pytest.fixture
def views(data):
    images, labels = data
    ids = [f"img{i:02d}" for i in range(len(labels))]
    return class_views(images, labels, ["a", "b", "c"], ids=ids, max_per_class=8, k=3)


def test_views_match_bruteforce_skimage(data, views):
    images, labels = data
    assert [v.name for v in views] == ["a", "b", "c"]
    for v in views:
        members = np.flatnonzero(labels == v.class_id)
        assert v.n_images == members.size
        assert set(v.indices) <= set(members) and len(v.indices) == min(8, members.size)
        assert v.ids == [f"img{i:02d}" for i in v.indices]
        S = _skimage_matrix(images[v.indices])
        np.testing.assert_allclose(v.ssim, S, atol=1e-9)
        m = len(S)
        # most isolated: lowest mean SSIM to the others
        means = [np.mean([S[i, j] for j in range(m) if j != i]) for i in range(m)]
        assert v.isolated == int(np.argmin(means))
        assert v.isolated_mean_ssim == pytest.approx(min(means), abs=1e-9)
        # most dissimilar pair: lowest SSIM over all pairs
        best = min((S[i, j], i, j) for i in range(m) for j in range(i + 1, m))
        assert v.pair == (best[1], best[2])
        assert v.pair_ssim == pytest.approx(best[0], abs=1e-9)
        # kNN edges: each image to its k most similar others, union
        want = set()
        for i in range(m):
            others = sorted((j for j in range(m) if j != i), key=lambda j: -S[i, j])
            want |= {(min(i, j), max(i, j)) for j in others[:3]}
        assert {tuple(e) for e in v.edges.tolist()} == want
        # most similar group: starts at the most similar pair, every pair above threshold
        top = max((S[i, j], i, j) for i in range(m) for j in range(i + 1, m))
        assert sorted(v.group[:2]) == [top[1], top[2]]
        offdiag = [S[i, j] for i in range(m) for j in range(i + 1, m)]
        assert v.group_threshold == pytest.approx(np.quantile(offdiag, 0.95), abs=1e-9)
        inside = [S[i, j] for i in v.group for j in v.group if i < j]
        assert min(inside) >= v.group_threshold - 1e-12
        assert v.group_min_ssim == pytest.approx(min(inside), abs=1e-9)
        assert len(set(v.group)) == len(v.group) <= 8
        # no outsider could have joined
        if len(v.group) < 8:
            for o in set(range(m)) - set(v.group):
                assert min(S[o, g] for g in v.group) < v.group_threshold
        assert v.layout.shape == (m, 2) and np.all(np.abs(v.layout) <= 1.0)


def test_knn_edges_ties_and_small_classes():
    S = np.ones((3, 3))
    assert knn_edges(S, 1).tolist() == [[0, 1], [0, 2]]  # ties go to the lower index
    assert knn_edges(S, 10).tolist() == [[0, 1], [0, 2], [1, 2]]  # k capped at n - 1
    assert knn_edges(np.ones((1, 1)), 3).shape == (0, 2)
    pos = graph_layout(np.array([[0, 1]]), 2)
    assert pos.shape == (2, 2) and np.isfinite(pos).all()


def test_deterministic_for_a_seed(data):
    images, labels = data
    a = class_views(images, labels, ["a", "b", "c"], max_per_class=4, seed=3).to_dict()
    b = class_views(images, labels, ["a", "b", "c"], max_per_class=4, seed=3).to_dict()
    assert json.dumps(a) == json.dumps(b)
    # a class's sample does not depend on which other classes are shown
    one = class_views(images, labels, ["a", "b", "c"], max_per_class=4, seed=3, max_classes=1)
    assert one[0].to_dict() == next(c for c in a["classes"] if c["class"] == one[0].name)
    others = [
        class_views(images, labels, ["a", "b", "c"], max_per_class=4, seed=s).to_dict()
        for s in (4, 5, 6)
    ]
    assert any(o["classes"][1]["ids"] != a["classes"][1]["ids"] for o in others)


def test_omitted_classes(rng):
    images, labels = _data(rng, counts=(4, 1, 6, 3))
    names = ["a", "b", "c", "d", "e"]  # "e" has no image
    r = class_views(images, labels, names, max_classes=2)
    assert [v.name for v in r] == ["a", "c"]  # the two largest, in class order
    assert r.to_dict()["omitted"] == [
        {"class": "b", "reason": "fewer than 2 images"},
        {"class": "e", "reason": "fewer than 2 images"},
        {"class": "d", "reason": "not among the 2 largest classes"},
    ]


def test_small_images_use_skimage_small_window(rng):
    images, labels = _data(rng, counts=(3, 2), size=8)
    r = class_views(images, labels, ["a", "b"])
    assert r.params["win_size"] == 7
    assert r[1].pair == (0, 1) and r[1].group == [0, 1]


def test_to_dict_is_json_and_validates_in_a_card(rng, views):
    block = views.to_dict()
    text = json.dumps(block, allow_nan=False)
    assert json.loads(text) == block
    d = make_card_dict(rng)
    d["schema_version"] = "1.2.0"
    d["class_views"] = block
    card = Card(d)
    again = Card(json.loads(card_to_json(card.to_dict())))
    assert again.to_dict()["class_views"] == block
    c0 = block["classes"][0]
    assert c0["group"]["ids"] == [c0["ids"][i] for i in c0["group"]["members"]]
    assert c0["isolated"]["id"] == c0["ids"][c0["isolated"]["member"]]
    assert all(round(x, 3) == x for xy in c0["layout"] for x in xy)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("edges", [[0, "1"]], r"'class_views\.classes\[1\]\.edges\[0\]\[1\]': '1' is not of type"),
        ("edges", [[0, -1]], r"'class_views\.classes\[1\]\.edges\[0\]': \[0, -1\] should hold two"),
        ("edges", [[0.5, 1]], r"'class_views\.classes\[1\]\.edges\[0\]': \[0\.5, 1\] should hold"),
        ("layout", [[0.1, 0.2, 0.3]], r"'class_views\.classes\[1\]\.layout\[0\]': .* 2 items"),
        ("layout", [[0.1, None]], r"'class_views\.classes\[1\]\.layout\[0\]\[1\]': None"),
        ("ids", ["x"], r"class_views\.classes\[1\]\.ids"),
        ("group", {"members": [0]}, r"class_views\.classes\[1\]\.group"),
    ],
)
def test_card_rejects_bad_class_views(rng, views, key, value, match):
    block = views.to_dict()
    block["classes"][1][key] = value
    d = make_card_dict(rng)
    d["class_views"] = block
    with pytest.raises(CardSchemaError, match=match):
        Card(d)


def test_report_draws_the_stored_views_without_recomputing(rng, views, monkeypatch):
    import dcsi.similarity.ssim as ssim_mod

    d = make_card_dict(rng)
    d.pop("similarity")  # no other figures: fast
    d["class_views"] = views.to_dict()

    def boom(*args, **kwargs):
        raise AssertionError("the report must not compute SSIM")

    monkeypatch.setattr(ssim_mod, "ssim_matrix", boom)
    seen = []

    def load_image(image_id):
        seen.append(image_id)
        return np.zeros((12, 12), np.uint8)

    page = report_html(Card(d), load_image=load_image)
    assert "<h2 id='class-views'>" in page
    figs = re.findall(
        r'<figure id="(fig-class-view-\d+)"><img alt="[^"]*" src="data:image/png', page
    )
    assert figs == ["fig-class-view-0", "fig-class-view-1", "fig-class-view-2"]
    want = []
    for v in views:
        want += [v.ids[i] for i in v.group] + [v.ids[i] for i in v.pair] + [v.ids[v.isolated]]
    assert seen[: len(want)] == want  # then the near-duplicate gallery
    # without load_image the ids are listed; without the block there is no section
    page = report_html(Card(d))
    assert f"<code>{views[0].ids[views[0].isolated]}</code>" in page
    d.pop("class_views")
    assert "class-views" not in report_html(Card(d))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"classes": ["a", "b"]}, r"'labels' parameter of class_views must hold class ids < "),
        ({"ids": ["x"]}, r"'ids' parameter of class_views must have one id per image"),
        ({"max_per_class": 1}, r"'max_per_class' parameter of class_views must be an int >= 2"),
        ({"max_classes": 0}, r"'max_classes' parameter of class_views must be an int >= 1"),
        ({"k": 0}, r"'k' parameter of class_views must be an int >= 1"),
        ({"group_quantile": 1.5}, r"'group_quantile' parameter of class_views must be a float"),
        ({"max_group": 1}, r"'max_group' parameter of class_views must be an int >= 2"),
        ({"seed": -1}, r"'seed' parameter of class_views must be an int >= 0"),
    ],
)
def test_invalid_parameters(data, kwargs, match):
    images, labels = data
    kwargs = {"classes": ["a", "b", "c"], **kwargs}
    classes = kwargs.pop("classes")
    with pytest.raises(InvalidParameterError, match=match):
        class_views(images, labels, classes, **kwargs)
