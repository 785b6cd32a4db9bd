"""The reading of an index value: reference points, drivers, one line; the shipped file."""

from __future__ import annotations

import json
from fnmatch import fnmatch
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import tomllib
from test_card import make_card_dict

import dcsi
from dcsi.card import Card
from dcsi.card.hf import render_readme
from dcsi.exceptions import DataError, InvalidParameterError
from dcsi.index import index_report
from dcsi.index_reading import (
    REFERENCES_RESOURCE,
    definition_version,
    index_reading,
    load_references,
)
from dcsi.report import report_html

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["cat", "dog", "car", "bus"]


def _block(value: float = 0.4) -> dict:
    """A hand-made index block: dog~cat overlap most, then bus~car; car~cat not at all."""
    o = np.array(
        [
            [0.0, 0.6, 0.0, 0.1],
            [0.6, 0.0, 0.05, 0.0],
            [0.0, 0.05, 0.0, 0.3],
            [0.1, 0.0, 0.3, 0.0],
        ]
    )
    return {
        "value": value,
        "definition": "hand-made",
        "components": {
            "overlap": o.tolist(),
            "confusability": o.max(axis=1).tolist(),
            "nearest_class": ["dog", "cat", "bus", "car"],
        },
    }


def _refs(version: str, values=(("low", 0.2), ("mid", 0.5), ("high", 0.9))) -> list[dict]:
    return [
        {
            "name": name,
            "n_classes": 10,
            "n_images": 100,
            "value": v,
            "source": "test",
            "definition_version": version,
        }
        for name, v in values
    ]


def test_drivers_name_the_pairs_and_classes_that_overlap_most():
    block = _block()
    r = index_reading(block, NAMES, references=_refs(definition_version(block)), n_pairs=3)
    assert r.drivers["pairs"] == [
        {"classes": ["cat", "dog"], "overlap": 0.6},
        {"classes": ["car", "bus"], "overlap": 0.3},
        {"classes": ["cat", "bus"], "overlap": 0.1},
    ]
    assert [c["class"] for c in r.drivers["classes"]] == ["cat", "dog", "car", "bus"]
    assert r.drivers["classes"][0] == {"class": "cat", "confusability": 0.6, "nearest_class": "dog"}
    # only pairs that overlap at all: 4 of the 6
    r = index_reading(block, NAMES, references=[], n_pairs=6)
    assert len(r.drivers["pairs"]) == 4


@pytest.mark.parametrize(
    ("value", "words", "position"),
    [
        (0.4, "0.40: between low (0.20) and mid (0.50)", {"below": "low", "above": "mid"}),
        (0.1, "0.10: below every reference point (the lowest: low (0.20))", {"above": "low"}),
        (0.95, "0.95: above every reference point (the highest: high (0.90))", {"below": "high"}),
        (0.502, "0.50: at the level of mid (0.50)", {"at": "mid"}),
    ],
)
def test_interpretation_places_the_value_among_the_reference_points(value, words, position):
    block = _block(value)
    r = index_reading(block, NAMES, references=_refs(definition_version(block)))
    assert r.interpretation == f"{words}; most overlap between 'cat' and 'dog' (0.60)."
    for key, name in position.items():
        assert r.position[key] == name
    assert [p["name"] for p in r.reference_points] == ["low", "mid", "high"]


def test_reference_points_of_another_definition_are_not_compared():
    block = _block()
    refs = _refs("another") + _refs(definition_version(block), (("same", 0.3),))
    r = index_reading(block, NAMES, references=refs)
    assert [p["name"] for p in r.reference_points] == ["same"] and r.references_skipped == 3
    r = index_reading(block, NAMES, references=_refs("another"))
    assert r.reference_points == [] and "make index-references" in r.interpretation
    # the version follows the definition text, or the block's own version
    assert definition_version({"definition": "a"}) != definition_version({"definition": "b"})
    assert definition_version({"definition": "a", "definition_version": "2"}) == "2"


def test_reading_without_overlap_or_value():
    block = {"value": None, "definition": "d", "components": {}}
    r = index_reading(block, ["a", "b"], references=[])
    assert r.interpretation == "The index is undefined for this dataset; no two classes overlap."
    assert r.drivers == {"pairs": [], "classes": []}
    with pytest.raises(InvalidParameterError, match="'overlap' has shape"):
        index_reading(_block(), ["a", "b"], references=[])
    with pytest.raises(InvalidParameterError, match="The 'n_pairs' parameter of index_reading"):
        index_reading(_block(), NAMES, references=[], n_pairs=0)


def test_shipped_references_validate_and_come_with_the_package():
    refs = load_references()
    assert len(refs) >= 5
    text = files("dcsi").joinpath(REFERENCES_RESOURCE).read_text("utf-8")
    assert json.loads(text)["references"] == refs
    names = {r["name"] for r in refs}
    assert {"Fashion-MNIST", "Fashion-MNIST, labels shuffled"} <= names
    # the wheel carries it: package-data names the file
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["dcsi"]
    assert any(fnmatch(REFERENCES_RESOURCE, g) for g in globs)


def test_shipped_references_use_the_current_definition():
    # fails after a change of the index definition until `make index-references` reran
    k = 3
    s = np.full((k, k), 0.5) + np.eye(k) * 0.4
    v = np.full((k, k), 0.01) - np.eye(k) * 0.01  # directional spreads, as analyze has
    block = index_report(s, [10] * k, wavelet=s, spreads=v, wavelet_spreads=v).to_dict()
    cnn_only = index_report(s, [10] * k, spreads=v).to_dict()  # --analyzers cnn
    both, alone = definition_version(block), definition_version(cnn_only)
    assert alone == f"{both} (cnn_cosine)"
    refs = load_references()
    assert {r["definition_version"] for r in refs} == {both, alone}
    # every point exists for both: a CNN-only value is read against CNN-only points only
    names = {
        v: sorted(r["name"] for r in refs if r["definition_version"] == v) for v in (both, alone)
    }
    assert names[both] == names[alone] and len(names[both]) >= 3
    r = index_reading(cnn_only, ["a", "b", "c"])
    assert r.definition_version == alone
    assert len(r.reference_points) == len(names[alone])
    assert r.references_skipped == len(refs) - len(names[alone])
    # with points of both views only, the line says which views are missing
    r = index_reading(cnn_only, ["a", "b", "c"], references=_refs(both))
    assert r.reference_points == []
    assert "analyze with the wavelet analyzer too" in r.interpretation


def test_bad_reference_files_are_refused(tmp_path):
    bad = tmp_path / "refs.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="Cannot read the index reference points"):
        load_references(bad)
    bad.write_text(json.dumps({"references": [{"name": "x"}]}))
    with pytest.raises(DataError, match="fail the schema: 'n_classes' is a required"):
        load_references(bad)


def _card_with_reading(rng) -> Card:
    d = make_card_dict(rng, 4)
    block = _block(0.4)
    d["index"]["reading"] = index_reading(
        block, d["dataset"]["classes"], references=_refs(definition_version(block))
    ).to_dict()
    return Card(d)


def test_card_schema_takes_a_card_with_and_without_reading(rng):
    card = _card_with_reading(rng)
    assert card.index_reading["interpretation"].startswith("0.40: between low (0.20)")
    assert Card(json.loads(card.to_json())) == card
    assert Card(make_card_dict(rng, 4)).index_reading is None
    d = card.to_dict()
    d["index"]["reading"]["reference_points"][0].pop("value")
    with pytest.raises(dcsi.CardSchemaError, match="value"):
        Card(d)


def test_views_render_the_reading(rng):
    card = _card_with_reading(rng)
    line = card.index_reading["interpretation"]
    assert f"reading: {line}" in card.summary()
    readme = render_readme(card, None)
    assert "index_reading:" in readme and "| mid | 10 | 100 | 0.5000 |" in readme
    page = report_html(card)
    assert "id='index-reading'" in page and 'id="fig-index-reading"' in page
    assert "<table id='index-drivers'>" in page and "class_0" in page
    plain = report_html(Card(make_card_dict(rng, 4)))
    assert "index-reading" not in plain


def test_a_dataset_is_not_read_against_itself():
    block = _block(0.5)
    refs = _refs(definition_version(block))
    refs[1]["fingerprint"] = "abc"  # "mid" (0.5) is this very dataset
    r = index_reading(block, NAMES, references=refs, fingerprint="abc")
    assert [p["name"] for p in r.reference_points] == ["low", "high"]
    assert r.interpretation.startswith("0.50: between low (0.20) and high (0.90)")
    r = index_reading(block, NAMES, references=refs, fingerprint="other")
    assert r.interpretation.startswith("0.50: at the level of mid (0.50)")
