"""Card model and schema: round trip, rejections, accessors, determinism, router."""

from __future__ import annotations

import copy
import json
import types

import numpy as np
import pytest

import dcsi
from dcsi.card import CARD_FILES, Card, card_to_json, load_card, validate_card, write_card_files
from dcsi.exceptions import CardSchemaError, DataError, InvalidParameterError


def _class_sums(
    rng: np.random.Generator, counts: list[int], dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random unit features per class; returns (features, labels, class sums)."""
    feats, labels = [], []
    centres = rng.normal(size=(len(counts), dim))
    for c, n in enumerate(counts):
        x = np.abs(centres[c] + 0.5 * rng.normal(size=(n, dim)))
        feats.append(x)
        labels.append(np.full(n, c))
    x = np.concatenate(feats)
    y = np.concatenate(labels)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sums = np.zeros((len(counts), dim))
    np.add.at(sums, y, unit)
    return x, y, sums


def make_card_dict(
    rng: np.random.Generator,
    k: int = 4,
    *,
    dim: int = 6,
    created: str = "2026-11-22T23:00:00+00:00",
) -> dict:
    """A small synthetic, valid card dict with K classes (numpy values inside)."""
    classes = [f"class_{c}" for c in range(k)]
    counts = [int(n) for n in rng.integers(3, 8, size=k)]
    x, y, sums = _class_sums(rng, counts, dim)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = np.empty((k, k))
    for a in range(k):  # obvious double loop (the card does not compute it, it stores it)
        for b in range(k):
            pairs = [
                float(unit[i] @ unit[j])
                for i in np.flatnonzero(y == a)
                for j in np.flatnonzero(y == b)
                if i != j
            ]
            s[a, b] = np.mean(pairs)
    ssim = rng.uniform(0, 1, size=(k, k))
    ssim = (ssim + ssim.T) / 2
    ssim[0, 0] = np.nan  # an undefined diagonal entry -> null
    part2 = [0] * (k // 2) + [1] * (k - k // 2)
    partitions = {"2": part2, str(k): list(range(k))}
    if k > 3:
        partitions["3"] = [0] + [1] * (k // 2 - 1) + [2] * (k - k // 2)
    return {
        "schema_version": "1.0.0",
        "dcsi_version": dcsi.__version__,
        "dataset": {
            "name": "synthetic",
            "source": "array",
            "split": "train",
            "fingerprint": "sha256:" + "ab" * 16,
            "n_images": sum(counts),
            "classes": classes,
            "class_counts": counts,
            "skipped": [{"id": "bad.png", "reason": "cannot decode"}],
        },
        "features": {
            "backbone": "efficientnet_lite0",
            "weights_sha256": "cd" * 32,
            "image_size": 64,
            "dim": dim,
            "class_sums": sums,
            "class_counts": np.array(counts),
        },
        "similarity": {
            "cnn_cosine": {
                "matrix": s,
                "diagonal": "within-class mean, self-pairs excluded",
                "params": {"metric": "cosine"},
            },
            "ssim": {
                "matrix": ssim,
                "diagonal": "within-class mean",
                "params": {"sigma": 1.5},
                "stderr": np.full((k, k), 0.01),
                "eigenvalues": [0.0, 0.3, 1.1],
            },
        },
        "index": {
            "value": np.float32(0.4375),
            "definition": "worst-pair contrast",
            "components": {"worst_pair": ["class_0", "class_1"]},
            "peers": {"csg": 1.2},
        },
        "class_clusters": {
            "method": "hierarchical",
            "linkage": "average",
            "recommended_k": 2,
            "rule": "largest gap",
            "partitions": partitions,
        },
        "redundancy": {
            "method": "wavelet",
            "params": {"tau": 1e5},
            "summary": {"n_groups": 2},
            "groups": [
                {
                    "members": ["img1", "img2", "img3"],
                    "labels": ["class_0"],
                    "kind": "redundant",
                    "representative": "img2",
                    "score": 0.99,
                },
                {
                    "members": ["img4", "img5"],
                    "labels": ["class_0", "class_1"],
                    "kind": "conflict",
                    "representative": "img4",
                },
            ],
        },
        "provenance": {
            "versions": {"dcsi": dcsi.__version__, "numpy": np.__version__},
            "parameters": {"seed": 0},
            "command": "dcsi analyze array --out x",
            "created": created,
        },
    }


@pytest.fixture
def card_dict(rng):
    return make_card_dict(rng)


@pytest.fixture
def card(card_dict):
    return Card(card_dict)


# -- round trip --------------------------------------------------------------------
def test_write_read_equal(card, tmp_path):
    path = card.save(tmp_path)
    assert path == tmp_path / "dcsi.json"
    again = load_card(tmp_path)
    assert again == card
    assert dcsi.load_card(path) == card
    assert again.to_dict() == card.to_dict()
    # a file path works too, and the file is plain JSON (no NaN, no pickles)
    card.save(tmp_path / "other.json")
    text = (tmp_path / "other.json").read_text(encoding="utf-8")
    assert "NaN" not in text
    assert json.loads(text) == card.to_dict()


def test_numpy_values_become_plain_python(card):
    d = card.to_dict()
    assert type(d["index"]["value"]) is float
    assert type(d["features"]["class_sums"][0][0]) is float
    assert type(d["features"]["class_counts"][0]) is int
    assert d["similarity"]["ssim"]["matrix"][0][0] is None  # NaN -> null


def test_to_dict_is_a_copy(card):
    d = card.to_dict()
    d["dataset"]["classes"][0] = "changed"
    assert card.classes[0] == "class_0"
    with pytest.raises(AttributeError, match="read-only"):
        card.index = 3.0


def test_deterministic_json(rng):
    seed = int(rng.integers(1 << 30))
    a = Card(make_card_dict(np.random.default_rng(seed), created="2026-01-01T00:00:00Z"))
    b = Card(make_card_dict(np.random.default_rng(seed), created="2026-06-01T12:00:00Z"))
    da, db = a.to_dict(), b.to_dict()
    da["provenance"].pop("created")
    db["provenance"].pop("created")
    assert card_to_json(da) == card_to_json(db)
    # key order of the input does not change the bytes
    shuffled = dict(reversed(list(a.to_dict().items())))
    assert Card(shuffled).to_json() == a.to_json()


def test_save_is_atomic_and_leaves_no_temp(card, tmp_path):
    card.save(tmp_path)
    card.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcsi.json"]


# -- accessors -----------------------------------------------------------------------
def test_accessors(card, card_dict):
    assert card.classes == card_dict["dataset"]["classes"]
    s = card.similarity("cnn_cosine")
    assert s.shape == (4, 4) and s.dtype == np.float64
    np.testing.assert_allclose(s, card_dict["similarity"]["cnn_cosine"]["matrix"], rtol=0, atol=0)
    ssim = card.similarity("ssim")
    assert np.isnan(ssim[0, 0]) and np.isfinite(ssim[1, 1])
    assert card.similarity_kinds == ["cnn_cosine", "ssim"]
    assert card.index == pytest.approx(0.4375)
    assert card.recommended_k == 2
    assert card.cluster_ks == [2, 3, 4]
    assert card.class_clusters() == [["class_0", "class_1"], ["class_2", "class_3"]]
    assert card.class_clusters(k=3) == [["class_0"], ["class_1"], ["class_2", "class_3"]]
    assert card.class_clusters(4) == [[c] for c in card.classes]
    groups = card.redundancy
    assert [g.kind for g in groups] == ["redundant", "conflict"]
    assert groups[0].members == ("img1", "img2", "img3") and groups[0].representative == "img2"
    assert groups[0].extra == {"score": 0.99}
    assert groups[0].to_dict() == card_dict["redundancy"]["groups"][0]
    assert card.redundancy_counts == {
        "groups": 2,
        "redundant": 1,
        "conflict": 1,
        "images_in_groups": 5,
        "removable": 2,
    }
    assert "synthetic" in repr(card)


def test_top_pairs_match_bruteforce(card):
    s = card.similarity("cnn_cosine")
    names = card.classes
    brute = sorted(
        ((s[i, j], names[i], names[j]) for i in range(4) for j in range(i + 1, 4)), reverse=True
    )
    got = card.top_pairs("cnn_cosine", n=3)
    assert [(a, b) for a, b, _ in got] == [(a, b) for _, a, b in brute[:3]]
    assert [v for *_, v in got] == pytest.approx([v for v, *_ in brute[:3]])


def test_cluster_ids_are_renumbered(card_dict):
    card_dict["class_clusters"]["partitions"]["2"] = [5, 5, 1, 1]  # e.g. 1-based / arbitrary ids
    card = Card(card_dict)
    np.testing.assert_array_equal(card.cluster_assignment(2), [0, 0, 1, 1])
    assert card.class_clusters() == [["class_0", "class_1"], ["class_2", "class_3"]]


def test_similarity_unknown_kind_lists_available(card):
    with pytest.raises(
        InvalidParameterError, match=r"must be one of 'cnn_cosine', 'ssim'. Got 'wavelet'"
    ):
        card.similarity("wavelet")


def test_class_clusters_unknown_k(card):
    with pytest.raises(
        InvalidParameterError,
        match=r"'k' parameter of Card.class_clusters must be one of \[2, 3, 4\] \(the partitions stored in the card\). Got 7 instead",
    ):
        card.class_clusters(k=7)


def test_missing_optional_blocks(card_dict):
    for key in ("similarity", "index", "class_clusters", "redundancy", "features"):
        card_dict.pop(key)
    card = Card(card_dict)
    assert card.similarity_kinds == []
    assert card.redundancy == [] and card.redundancy_counts is None
    with pytest.raises(DataError, match="no 'similarity' block"):
        card.similarity()
    with pytest.raises(DataError, match="no 'index' block"):
        card.index
    with pytest.raises(DataError, match="no 'class_clusters' block"):
        card.class_clusters()
    with pytest.raises(DataError, match="no 'features' block"):
        card.router()


def test_null_blocks_are_allowed(card_dict):
    card_dict["index"] = None
    card_dict["redundancy"] = None
    card = Card(card_dict)
    assert card.redundancy == []


def test_summary_says_when_no_k_separates(card_dict):
    card_dict["class_clusters"]["recommended_k"] = None
    card_dict["class_clusters"]["separable"] = False
    card_dict["class_clusters"]["verdict"] = "No k separates the classes: test line."
    text = Card(card_dict).summary()
    assert "  No k separates the classes: test line." in text
    assert "recommended k" not in text


def test_no_recommended_k(card_dict, caplog):
    card_dict["class_clusters"]["recommended_k"] = None
    card_dict["class_clusters"]["verdict"] = "No k separates the classes: test line."
    card = Card(card_dict)
    with caplog.at_level("WARNING", logger="dcsi"):
        groups = card.class_clusters()
    assert groups == [list(card.classes)]  # no grouping: one cluster, flat training
    assert "recommends no k: No k separates the classes: test line." in caplog.text
    assert "pass k= for a stored partition" in caplog.text
    assert len(card.class_clusters(k=3)) == 3


def test_index_null_is_nan(card_dict):
    card_dict["index"]["value"] = None
    assert np.isnan(Card(card_dict).index)


def test_extra_keys_are_kept(card_dict):
    card_dict["similarity"]["cnn_cosine"]["silhouette"] = 0.3
    card_dict["dataset"]["license"] = "cc-by-4.0"
    card_dict["my_extension"] = {"a": 1}
    d = Card(card_dict).to_dict()
    assert d["similarity"]["cnn_cosine"]["silhouette"] == 0.3
    assert d["my_extension"] == {"a": 1}


def test_schema_version_defaults(card_dict):
    card_dict.pop("schema_version")
    card_dict.pop("dcsi_version")
    card = Card(card_dict)
    assert card.schema_version == dcsi.card.SCHEMA_VERSION
    assert card.to_dict()["dcsi_version"] == dcsi.__version__


# -- rejections ------------------------------------------------------------------
def _plain(card_dict):
    return Card(card_dict).to_dict()


def test_rejects_missing_key(card_dict):
    d = _plain(card_dict)
    del d["dataset"]["classes"]
    with pytest.raises(CardSchemaError, match=r"at 'dataset': 'classes' is a required property"):
        validate_card(d)
    d = _plain(card_dict)
    del d["provenance"]
    with pytest.raises(CardSchemaError, match=r"'provenance' is a required property"):
        Card(d)
    d = _plain(card_dict)
    del d["similarity"]["ssim"]["diagonal"]
    with pytest.raises(
        CardSchemaError, match=r"at 'similarity.ssim': 'diagonal' is a required property"
    ):
        Card(d)


def test_rejects_wrong_type(card_dict):
    d = _plain(card_dict)
    d["dataset"]["n_images"] = "ten"
    with pytest.raises(
        CardSchemaError, match=r"at 'dataset.n_images': 'ten' is not of type 'integer'"
    ):
        Card(d)
    d = _plain(card_dict)
    d["index"]["value"] = "high"
    with pytest.raises(
        CardSchemaError, match=r"at 'index.value': 'high' is not of type 'number', 'null'"
    ):
        Card(d)
    d = _plain(card_dict)
    d["redundancy"]["groups"][1]["kind"] = "duplicate"
    with pytest.raises(
        CardSchemaError, match=r"at 'redundancy.groups\[1\].kind': 'duplicate' is not one of"
    ):
        Card(d)
    d = _plain(card_dict)
    d["similarity"]["cnn_cosine"]["matrix"][1][2] = "x"
    with pytest.raises(CardSchemaError, match=r"at 'similarity.cnn_cosine.matrix\[1\]\[2\]'"):
        Card(d)


def test_rejects_non_square_matrix(card_dict):
    d = _plain(card_dict)
    d["similarity"]["cnn_cosine"]["matrix"][2].pop()
    with pytest.raises(
        CardSchemaError,
        match=r"'similarity.cnn_cosine.matrix' is not square: it has 4 rows but row 2 has 3",
    ):
        Card(d)


def test_rejects_matrix_of_wrong_size(card_dict):
    d = _plain(card_dict)
    d["similarity"]["ssim"]["matrix"] = [[1.0, 0.5], [0.5, 1.0]]
    with pytest.raises(
        CardSchemaError, match=r"'similarity.ssim.matrix' is 2 x 2 but dataset.classes lists 4"
    ):
        Card(d)
    d = _plain(card_dict)
    d["similarity"]["ssim"]["stderr"] = [[0.1]]
    with pytest.raises(CardSchemaError, match=r"'similarity.ssim.stderr' is 1 x 1"):
        Card(d)


def test_rejects_other_size_mismatches(card_dict):
    d = _plain(card_dict)
    d["dataset"]["class_counts"].append(3)
    with pytest.raises(
        CardSchemaError, match=r"'dataset.class_counts' has 5 entries but dataset.classes lists 4"
    ):
        Card(d)
    d = _plain(card_dict)
    d["class_clusters"]["partitions"]["2"] = [0, 1]
    with pytest.raises(CardSchemaError, match=r"'class_clusters.partitions.2' has 2 entries"):
        Card(d)
    d = _plain(card_dict)
    d["class_clusters"]["recommended_k"] = 5
    with pytest.raises(
        CardSchemaError, match=r"recommended_k' is 5 but partitions has no entry '5'"
    ):
        Card(d)
    d = _plain(card_dict)
    d["features"]["class_sums"] = d["features"]["class_sums"][:3]
    with pytest.raises(CardSchemaError, match=r"'features.class_sums' has 3 rows"):
        Card(d)
    d = _plain(card_dict)
    d["features"]["dim"] = 99
    with pytest.raises(
        CardSchemaError,
        match=r"'features.class_sums' rows have lengths \[6\] but features.dim is 99",
    ):
        Card(d)
    d = _plain(card_dict)
    d["features"]["class_counts"] = [1]
    with pytest.raises(CardSchemaError, match=r"'features.class_counts' has 1 entries"):
        Card(d)


def test_rejects_newer_major_version(card_dict, tmp_path):
    d = _plain(card_dict)
    d["schema_version"] = "2.0.0"
    with pytest.raises(
        CardSchemaError,
        match=r"schema_version 2.0.0, a newer major version than this dcsi reads \(1.6.0\); upgrade",
    ):
        Card(d)
    # a newer minor version of the same major is read
    d["schema_version"] = "1.7.0"
    assert Card(d).schema_version == "1.7.0"
    # even when the newer-major file is otherwise unreadable, the version is the message
    (tmp_path / "dcsi.json").write_text(json.dumps({"schema_version": "3.1.0", "whatever": 1}))
    with pytest.raises(CardSchemaError, match=r"dcsi.json: The card has schema_version 3.1.0"):
        load_card(tmp_path)


def test_rejects_bad_version_strings(card_dict):
    d = _plain(card_dict)
    d["schema_version"] = "v1"
    with pytest.raises(
        CardSchemaError, match=r"'schema_version' must be a semver string such as '1.6.0'. Got 'v1'"
    ):
        Card(d)
    d["schema_version"] = 1
    with pytest.raises(CardSchemaError, match=r"no valid 'schema_version'.*got 1"):
        validate_card(d)


def test_load_requires_schema_version(card_dict, tmp_path):
    d = _plain(card_dict)
    del d["schema_version"]
    (tmp_path / "dcsi.json").write_text(json.dumps(d))
    with pytest.raises(CardSchemaError, match="no valid 'schema_version'"):
        load_card(tmp_path / "dcsi.json")


def test_rejects_non_json_values(card_dict):
    card_dict["provenance"]["parameters"]["fn"] = object()
    with pytest.raises(
        CardSchemaError, match=r"value of type object at 'card.provenance.parameters.fn'"
    ):
        Card(card_dict)
    with pytest.raises(CardSchemaError, match="must be a JSON object"):
        Card([1, 2])
    with pytest.raises(CardSchemaError, match="must be a JSON object"):
        validate_card("x")
    with pytest.raises(CardSchemaError, match="non-string key"):
        Card({"dataset": {(1, 2): 3}})


def test_rejects_bad_timestamp(card_dict):
    d = _plain(card_dict)
    d["provenance"]["created"] = "yesterday"
    with pytest.raises(
        CardSchemaError, match=r"at 'provenance.created': 'yesterday' does not match"
    ):
        Card(d)


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match=r"No dcsi card at .*expected a dcsi.json file or a folder"):
        load_card(tmp_path)
    (tmp_path / "dcsi.json").write_text("{not json")
    with pytest.raises(CardSchemaError, match="is not valid UTF-8 JSON"):
        load_card(tmp_path)


# -- all files ------------------------------------------------------------------
def test_write_card_files(card, tmp_path):
    written = write_card_files(card, tmp_path / "out")
    assert sorted(written) == sorted(CARD_FILES)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(CARD_FILES)
    assert load_card(tmp_path / "out") == card
    written2 = write_card_files(card, tmp_path / "out2", report=False)
    assert "report.html" not in written2


# -- router ------------------------------------------------------------------------
def test_router_from_card(rng):
    import dcsi.clusters as clusters

    d = make_card_dict(rng, k=4, dim=6)
    card = Card(d)
    router = card.router(extractor=object())
    assert isinstance(router, clusters.Router)
    # reference: a query goes to the cluster with the highest mean cosine similarity
    sums = np.asarray(d["features"]["class_sums"])
    assignment = card.cluster_assignment()
    q = np.abs(rng.normal(size=(20, 6)))
    qu = q / np.linalg.norm(q, axis=1, keepdims=True)
    counts = np.asarray(d["features"]["class_counts"], dtype=float)
    cl_sums = np.stack([sums[assignment == c].sum(0) for c in range(2)])
    cl_counts = np.array([counts[assignment == c].sum() for c in range(2)])
    expected = np.argmax(qu @ cl_sums.T / cl_counts, axis=1)
    np.testing.assert_array_equal(router.route_features(q), expected)


def test_router_needs_class_sums(card_dict):
    del card_dict["features"]["class_sums"]
    with pytest.raises(DataError, match="no 'features.class_sums'"):
        Card(card_dict).router(extractor=object())


def test_router_default_extractor(card, monkeypatch):
    """Without an extractor the router gets the card's backbone name and image size."""
    router = card.router()
    assert router.extractor == "efficientnet_lite0"
    assert router.image_size == 64
    assert router.n_clusters == 2
    assert card.router(k=3).n_clusters == 3
    np.testing.assert_array_equal(card.router(k=4).assignment, [0, 1, 2, 3])


def test_router_routes_images_with_default_backbone(card, monkeypatch):
    """route(images) builds the extractor through dcsi.get_backbone (mocked: no torch)."""
    import dcsi.features

    seen = {}

    def fake_extract(images, *, backbone=None, image_size=None, **kw):
        seen.update(backbone=backbone, image_size=image_size)
        return types.SimpleNamespace(features=np.asarray(card.to_dict()["features"]["class_sums"]))

    monkeypatch.setattr(dcsi.features, "extract_features", fake_extract)
    router = card.router()
    ids = router.route(np.zeros((4, 8, 8), np.uint8))
    assert seen == {"backbone": "efficientnet_lite0", "image_size": 64}
    np.testing.assert_array_equal(
        ids, router.route_features(np.asarray(card.to_dict()["features"]["class_sums"]))
    )


def test_card_copy_and_pickle(card):
    import pickle

    assert copy.deepcopy(card) == card
    assert pickle.loads(pickle.dumps(card)) == card


def test_rejects_bad_values_in_large_arrays(card_dict):
    d = _plain(card_dict)
    d["similarity"]["cnn_cosine"]["matrix"][0][1] = True
    with pytest.raises(
        CardSchemaError,
        match=r"at 'similarity.cnn_cosine.matrix\[0\]\[1\]': True is not of type 'number', 'null'",
    ):
        Card(d)
    d = _plain(card_dict)
    d["similarity"]["ssim"]["stderr"][3] = 0.5
    with pytest.raises(
        CardSchemaError, match=r"at 'similarity.ssim.stderr\[3\]': 0.5 is not of type 'array'"
    ):
        Card(d)
    d = _plain(card_dict)
    d["features"]["class_sums"][2][0] = None  # no nulls in the class sums
    with pytest.raises(
        CardSchemaError, match=r"at 'features.class_sums\[2\]\[0\]': None is not of type 'number'"
    ):
        Card(d)
    d = _plain(card_dict)
    d["features"]["class_sums"] = "sums"
    with pytest.raises(
        CardSchemaError, match=r"at 'features.class_sums': 'sums' is not of type 'array'"
    ):
        Card(d)


def test_json_text_round_trips_exactly(card_dict, rng):
    card = Card(card_dict)
    text = card.to_json()
    assert json.loads(text) == card.to_dict()
    assert "\n      [" in text  # matrices one row per line
    # nested arrays of mixed content, empty lists, a matrix inside a list, and strings
    # that look like the writer's placeholders all survive
    d = card.to_dict()
    d["provenance"]["parameters"].update(
        empty=[],
        nested=[[1, 2], [3, None]],
        mixed=[1, "a", [2.5]],
        deep=[[[1.0]]],
        tricky="@@dcsi-array-0@@",
        matrices=[[[0.5, 1.0]], [[2.0]]],
    )
    d["similarity"]["cnn_cosine"]["matrix"][0][0] = float(rng.normal())
    text = card_to_json(d)
    assert json.loads(text) == d
    d["provenance"]["parameters"].pop("tricky")
    assert json.loads(card_to_json(d)) == d


@pytest.mark.slow
def test_router_end_to_end_on_digits(tmp_path):
    """A card written and read back routes real images like its own features do."""
    pytest.importorskip("torch")
    from dcsi.features import extract_features
    from dcsi.samples import load_sample
    from dcsi.similarity.class_cosine import class_stats

    sample = load_sample("digits")
    images, labels = sample.images[:120], sample.labels[:120]
    fs = extract_features(images, labels=labels, image_size=32, batch_size=60, cache=False)
    stats = class_stats(fs.features, labels, n_classes=10)
    d = make_card_dict(np.random.default_rng(0), k=4)
    d["dataset"].update(classes=list(sample.classes), class_counts=stats.counts, n_images=120)
    d["features"] = {
        "backbone": "efficientnet_lite0",
        "weights_sha256": fs.weights_sha256,
        "image_size": 32,
        "dim": int(fs.features.shape[1]),
        "class_sums": stats.sums,
        "class_counts": stats.counts,
    }
    for key in ("similarity", "index", "redundancy"):
        d.pop(key)
    d["class_clusters"]["partitions"] = {"2": [0, 1, 0, 0, 1, 0, 0, 1, 0, 0]}
    Card(d).save(tmp_path)
    card = load_card(tmp_path)
    router = card.router()
    queries = sample.images[120:160]
    got = router.route(queries)
    expected = router.route_features(extract_features(queries, image_size=32, cache=False).features)
    np.testing.assert_array_equal(got, expected)
    # and the routing matches the brute-force mean cosine similarity to each cluster
    q = extract_features(queries, image_size=32, cache=False).features.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    x = fs.features.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cluster_of_image = np.array([0, 1, 0, 0, 1, 0, 0, 1, 0, 0])[labels]
    brute = np.stack([(q @ x[cluster_of_image == c].T).mean(axis=1) for c in (0, 1)], axis=1)
    np.testing.assert_array_equal(got, brute.argmax(axis=1))


# -- the read-only data view -----------------------------------------------------------
def test_data_is_a_read_only_view(card):
    data = card.data
    assert data["dataset"]["name"] == "synthetic"
    with pytest.raises(TypeError):
        data["dataset"] = {}
    with pytest.raises(TypeError):
        data["dataset"]["name"] = "other"
    with pytest.raises(TypeError):
        data["similarity"]["cnn_cosine"]["matrix"][0][0] = 1.0
    with pytest.raises(AttributeError):
        data["redundancy"]["groups"][0]["members"].append("img9")
    with pytest.raises(AttributeError):
        card.data = {}
    assert card.data is data  # built once per card
    assert card.to_dict()["dataset"]["name"] == "synthetic"


def test_data_equals_to_dict(card):
    from dcsi._json import to_jsonable

    assert to_jsonable(card.data) == card.to_dict()
    assert not hasattr(Card, "_view")


def test_data_of_a_big_card_is_cheap(card_dict):
    import time

    d = copy.deepcopy(card_dict)
    ids = [f"img{i:05d}" for i in range(60_000)]
    d["redundancy"]["groups"].append(
        {"members": ids, "labels": ["class_0"], "kind": "redundant", "representative": ids[0]}
    )
    card = Card(d)
    t0 = time.perf_counter()
    members = card.data["redundancy"]["groups"][-1]["members"]
    assert time.perf_counter() - t0 < 0.5
    assert members[-1] == "img59999" and isinstance(members, tuple)


def test_schema_1_1_class_cluster_fields(card_dict):
    from dcsi.clusters import cluster_classes

    s = np.asarray(card_dict["similarity"]["cnn_cosine"]["matrix"])
    d = copy.deepcopy(card_dict)
    d["class_clusters"] = cluster_classes(s, classes=d["dataset"]["classes"]).to_dict()
    cc = Card(d).data["class_clusters"]
    k = len(d["dataset"]["classes"])
    assert len(cc["linkage_matrix"]) == k - 1 and len(cc["eigenvalues"]) == k
    assert sorted(cc["leaf_order"]) == list(range(k))
    d["class_clusters"]["linkage_matrix"] = [[0, 1, "high", 2]]
    with pytest.raises(CardSchemaError, match=r"class_clusters\.linkage_matrix\[0\]\[2\]"):
        Card(d)
    # a 1.0 card (no tree, no spectrum) still loads
    assert "linkage_matrix" not in Card(card_dict).data["class_clusters"]


# -- hardening: pathological card files are one CardSchemaError line naming the key ---
def _card_text(card_dict) -> str:
    return Card(card_dict).to_json()


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda t: _replace_once(t, '"n_images": ', '"n_images": 1' + "0" * 5000 + ', "x": '),
            r"an integer of 5001 digits .* at 'dataset.n_images'",
        ),
        (
            lambda t: _replace_once(t, '"value": 0.4375', '"value": NaN'),
            r"NaN, which is not JSON .* at 'index.value'",
        ),
        (
            lambda t: _replace_once(t, '"value": 0.4375', '"value": Infinity'),
            r"Infinity, which is not JSON .* at 'index.value'",
        ),
        (
            lambda t: _replace_once(t, '"value": 0.4375', '"value": 1e400'),
            r"the number 1e400, too large .* at 'index.value'",
        ),
        (
            lambda t: _replace_once(t, '"value": 0.4375', '"value": 0.4375, "value": 0.9'),
            r"the key 'value' twice at 'index'",
        ),
        (
            lambda t: _replace_once(t, '"seed": 0', '"seed": ' + "[" * 100_000 + "]" * 100_000),
            r"nested more than 64 levels deep \(at line \d+, column \d+\)",
        ),
        (
            lambda t: _replace_once(t, '"seed": 0', '"seed": ' + "[" * 200 + "]" * 200),
            r"nested more than 64 levels deep at 'provenance.parameters.seed",
        ),
    ],
    ids=["5000-digit-int", "nan", "infinity", "1e400", "duplicate-key", "100000-deep", "200-deep"],
)
def test_pathological_card_file_is_one_line(card_dict, tmp_path, edit, match):
    (tmp_path / "dcsi.json").write_text(edit(_card_text(card_dict)), encoding="utf-8")
    with pytest.raises(CardSchemaError, match=match) as exc:
        load_card(tmp_path)
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 400


def test_bad_similarity_kind_name_is_short_and_named(card_dict, tmp_path):
    d = Card(card_dict).to_dict()
    d["similarity"]["Bad Kind " + "x" * 2000] = d["similarity"]["ssim"]
    (tmp_path / "dcsi.json").write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(
        CardSchemaError, match=r"at 'similarity\.Bad Kind xxx.*\.\.\.': the key name"
    ) as exc:
        load_card(tmp_path)
    assert len(str(exc.value)) < 400 and "\n" not in str(exc.value)
    with pytest.raises(CardSchemaError, match=r"must match '\^\[a-z\]"):
        Card(d)


def test_long_bad_value_is_truncated(card_dict):
    d = Card(card_dict).to_dict()
    d["dataset"]["n_images"] = "x" * 3000
    with pytest.raises(
        CardSchemaError, match=r"at 'dataset.n_images': 'xxx.*\.\.\. is not of type"
    ) as exc:
        Card(d)
    assert len(str(exc.value)) < 400


def test_deep_python_card_is_one_error(card_dict):
    d = Card(card_dict).to_dict()
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    d["provenance"]["parameters"]["deep"] = deep
    with pytest.raises(CardSchemaError, match="nested more than 64 levels deep"):
        Card(d)


def test_write_card_files_checks_the_readme_first_and_every_view_records_the_sha(
    card, tmp_path, rng
):
    import hashlib

    from dcsi.card.card import stale_views

    out = tmp_path / "o"
    out.mkdir()
    (out / "README.md").write_text("---\nkey: [unclosed\n---\nbody\n")
    with pytest.raises(DataError):
        write_card_files(card, out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md"]  # nothing written
    (out / "README.md").unlink()
    written = write_card_files(card, out)
    sha = hashlib.sha256(written["dcsi.json"].read_bytes()).hexdigest()
    assert f"content='{sha}'" in written["report.html"].read_text()
    assert stale_views(out) == []
    other = Card(make_card_dict(rng, k=3))
    other.save(out / "dcsi.json")  # a run killed after its first file
    assert set(stale_views(out)) == {"README.md", "croissant.json", "report.html"}
