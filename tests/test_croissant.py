"""The Croissant view: JSON-LD content, dcsi vocabulary, mlcroissant validation."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from test_card import make_card_dict

from dcsi.card import Card, write_card_files
from dcsi.card.croissant import (
    CROISSANT_VERSION,
    DCSI_VOCAB,
    MAX_INLINE_CLASSES,
    croissant_dict,
    write_croissant,
)


@pytest.fixture
def card(rng):
    return Card(make_card_dict(rng))


def _records(doc, rs_id):
    rs = next(r for r in doc["recordSet"] if r["@id"] == rs_id)
    prefix = rs_id + "/"
    return [{k[len(prefix) :]: v for k, v in row.items()} for row in rs["data"]]


def test_structure_and_vocabulary(card):
    doc = croissant_dict(card)
    assert doc["conformsTo"] == CROISSANT_VERSION
    assert doc["@context"]["dcsi"] == DCSI_VOCAB
    assert doc["@context"]["cr"] == "http://mlcommons.org/croissant/"
    assert doc["dcsi:index"] == pytest.approx(0.4375)
    assert doc["dcsi:recommendedK"] == 2
    assert doc["dcsi:backbone"] == "efficientnet_lite0"
    assert doc["dcsi:redundantGroups"] == 1 and doc["dcsi:conflictGroups"] == 1
    fo = doc["distribution"][0]
    assert fo["contentUrl"] == "dcsi.json"
    assert fo["sha256"] == hashlib.sha256(card.to_json().encode()).hexdigest()
    json.dumps(doc, allow_nan=False)  # JSON-ready


def test_matrix_records_rebuild_the_matrix(card):
    doc = croissant_dict(card)
    names = card.classes
    for kind in card.similarity_kinds:
        rebuilt = np.full((4, 4), -9.0)
        for r in _records(doc, f"class_similarity_{kind}"):
            v = r["similarity"]
            rebuilt[names.index(r["class_a"]), names.index(r["class_b"])] = (
                np.nan if v is None else v
            )
        np.testing.assert_array_equal(rebuilt, card.similarity(kind))


def test_cluster_records(card):
    doc = croissant_dict(card)
    recs = _records(doc, "class_clusters")
    for k in card.cluster_ks:
        got = {r["class"]: r["cluster"] for r in recs if r["k"] == k}
        assert [got[c] for c in card.classes] == card.cluster_assignment(k).tolist()
    classes = _records(doc, "classes")
    assert [r["name"] for r in classes] == card.classes
    assert [r["cluster"] for r in classes] == card.cluster_assignment().tolist()
    assert [r["n_images"] for r in classes] == card.class_counts


def test_large_k_is_not_inlined(rng):
    d = make_card_dict(rng)
    k = MAX_INLINE_CLASSES + 1
    d["dataset"]["classes"] = [f"c{i}" for i in range(k)]
    d["dataset"]["class_counts"] = [1] * k
    d["similarity"] = {"cnn_cosine": {"matrix": np.eye(k), "diagonal": "x", "params": {}}}
    for key in ("class_clusters", "features"):
        d.pop(key)
    doc = croissant_dict(Card(d))
    assert [r["@id"] for r in doc["recordSet"]] == ["classes"]


def test_written_file_hash_matches_card_file(card, tmp_path):
    write_card_files(card, tmp_path, readme=False, report=False)
    doc = json.loads((tmp_path / "croissant.json").read_text())
    assert (
        doc["distribution"][0]["sha256"]
        == hashlib.sha256((tmp_path / "dcsi.json").read_bytes()).hexdigest()
    )
    assert write_croissant(card, tmp_path / "c2.json").name == "c2.json"


def test_mlcroissant_validates_and_reads_records(card, tmp_path):
    mlc = pytest.importorskip(
        "mlcroissant", reason="mlcroissant not installed (optional validator)"
    )
    write_card_files(card, tmp_path, readme=False, report=False)
    ds = mlc.Dataset(jsonld=str(tmp_path / "croissant.json"))
    issues = ds.metadata.issues
    assert not issues.errors, issues.report()
    assert {rs.id for rs in ds.metadata.record_sets} == {
        "classes",
        "class_clusters",
        "class_similarity_cnn_cosine",
        "class_similarity_ssim",
    }
    recs = list(ds.records("class_similarity_cnn_cosine"))
    s = card.similarity("cnn_cosine")
    names = card.classes
    assert len(recs) == 16
    for r in recs:
        a = r["class_similarity_cnn_cosine/class_a"]
        b = r["class_similarity_cnn_cosine/class_b"]
        a, b = (x.decode() if isinstance(x, bytes) else x for x in (a, b))
        assert r["class_similarity_cnn_cosine/similarity"] == pytest.approx(
            s[names.index(a), names.index(b)]
        )


def test_mlcroissant_rejects_a_broken_file(card, tmp_path):
    """The validation test can fail: a record set with wrong columns is an error."""
    mlc = pytest.importorskip(
        "mlcroissant", reason="mlcroissant not installed (optional validator)"
    )
    doc = croissant_dict(card)
    doc["recordSet"][0]["data"][0].pop("classes/name")
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(mlc.ValidationError, match="expected columns"):
        mlc.Dataset(jsonld=str(tmp_path / "bad.json"))
