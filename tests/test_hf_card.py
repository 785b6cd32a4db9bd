"""The Hugging Face README view: the dcsi: block, existing front matter kept."""

from __future__ import annotations

import numpy as np
import pytest
from huggingface_hub import DatasetCard
from test_card import make_card_dict

from dcsi.card import Card
from dcsi.card.hf import HF_KEY, build_dataset_card, hf_block, write_readme
from dcsi.exceptions import DataError

EXISTING = """---
license: cc-by-4.0
tags:
- vision
- digits
pretty_name: My digits
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
dcsi:
  index: 0.1
  stale: true
---

# My digits

Hand-written text that must survive, with a table:

| a | b |
|---|---|
| 1 | 2 |
"""


@pytest.fixture
def card(rng):
    return Card(make_card_dict(rng))


def test_block_is_small_and_correct(card):
    block = hf_block(card)
    assert block["card"] == "dcsi.json"
    assert block["index"] == pytest.approx(0.4375)
    assert block["backbone"] == "efficientnet_lite0"
    assert block["n_classes"] == 4 and block["n_images"] == card.n_images
    # most similar pairs: same as a brute-force scan of the upper triangle
    s = card.similarity("cnn_cosine")
    names = card.classes
    brute = sorted(
        ((s[i, j], names[i], names[j]) for i in range(4) for j in range(i + 1, 4)), reverse=True
    )[:5]
    assert [p["classes"] for p in block["most_similar_pairs"]] == [[a, b] for _, a, b in brute]
    assert [p["similarity"] for p in block["most_similar_pairs"]] == pytest.approx(
        [v for v, *_ in brute], abs=1e-4
    )
    assert block["class_clusters"] == {
        "k": 2,
        "method": "hierarchical",
        "clusters": [["class_0", "class_1"], ["class_2", "class_3"]],
    }
    assert block["redundancy"]["redundant"] == 1 and block["redundancy"]["conflict"] == 1
    # no K x K matrix in the front matter
    flat = repr(block)
    assert "matrix" not in flat and "class_sums" not in flat


def test_new_readme_parses_back(card, tmp_path):
    path = write_readme(card, tmp_path)
    assert path == tmp_path / "README.md"
    loaded = DatasetCard.load(path)
    assert loaded.data[HF_KEY] == hf_block(card)
    assert loaded.data["pretty_name"] == "synthetic"
    assert loaded.data["task_categories"] == ["image-classification"]
    assert "How to read these numbers" in loaded.text
    a, b, v = card.top_pairs(n=1)[0]
    assert f"| {a} | {b} | {v:.4f} |" in loaded.text


def test_existing_front_matter_and_body_are_kept(card, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(EXISTING, encoding="utf-8")
    before = DatasetCard.load(readme)
    write_readme(card, tmp_path)
    after = DatasetCard.load(readme)
    old = before.data.to_dict()
    new = after.data.to_dict()
    assert new.pop(HF_KEY) == hf_block(card)  # replaced, stale keys gone
    old.pop(HF_KEY)
    assert new == old  # license, tags, configs, pretty_name untouched
    assert after.text == before.text  # body byte-identical
    raw = readme.read_text()
    positions = [
        raw.index(f"\n{key}:") for key in ("license", "tags", "pretty_name", "configs", "dcsi")
    ]
    assert positions == sorted(positions)  # original key order kept, dcsi where it was
    assert "How to read these numbers" not in raw
    # idempotent: a second write gives the same file
    text = readme.read_text()
    write_readme(card, readme)
    assert readme.read_text() == text


def test_readme_without_front_matter(card, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Just a title\n\nSome text.\n", encoding="utf-8")
    write_readme(card, readme)
    loaded = DatasetCard.load(readme)
    assert loaded.data[HF_KEY]["index"] == pytest.approx(0.4375)
    assert loaded.text.endswith("# Just a title\n\nSome text.\n")


def test_crlf_readme_keeps_line_endings(card, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_bytes(EXISTING.replace("\n", "\r\n").encode())
    write_readme(card, readme)
    raw = readme.read_bytes()
    assert b"\r\n" in raw and raw.count(b"\n") == raw.count(b"\r\n")


def test_bad_front_matter(card, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("---\n- a\n- b\n---\nbody\n", encoding="utf-8")
    with pytest.raises(DataError, match="front matter that is not a YAML mapping"):
        write_readme(card, readme)


def test_card_without_analyses(rng, tmp_path):
    d = make_card_dict(rng)
    for key in ("similarity", "index", "class_clusters", "redundancy", "features"):
        d.pop(key)
    card = Card(d)
    block = hf_block(card)
    assert set(block) == {
        "card",
        "card_sha256",
        "schema_version",
        "dcsi_version",
        "n_images",
        "n_classes",
    }
    hf = build_dataset_card(card)
    assert "The index was not computed" in hf.text
    assert DatasetCard(str(hf)).data[HF_KEY] == block


def test_block_with_many_classes_stays_small(rng):
    d = make_card_dict(rng, k=4)
    k = 120
    d["dataset"]["classes"] = [f"c{i}" for i in range(k)]
    d["dataset"]["class_counts"] = [5] * k
    m = np.random.default_rng(1).uniform(size=(k, k))
    d["similarity"] = {"cnn_cosine": {"matrix": m, "diagonal": "x", "params": {}}}
    d["class_clusters"]["partitions"] = {"2": [0] * 60 + [1] * 60}
    d.pop("features")
    block = hf_block(Card(d))
    assert len(block["most_similar_pairs"]) == 5
    assert len(str(DatasetCard(str(build_dataset_card(Card(d)))).data[HF_KEY])) < 3000


def test_image_size_pair_from_the_read_only_view(rng, tmp_path):
    d = make_card_dict(rng)
    d["features"]["image_size"] = [32, 48]
    card = Card(d)
    assert card.data["features"]["image_size"] == (32, 48)  # the view holds tuples
    block = hf_block(card)
    assert block["image_size"] == [32, 48] and type(block["image_size"]) is list
    text = write_readme(card, tmp_path).read_text(encoding="utf-8")
    assert "32x48" in text and "!!python" not in text


# -- hardening: only the dcsi: key changes, byte for byte ---------------------------
USER_FRONT_MATTER = """---
# a comment the user wrote
version: 1.10
zip: 012345
flag: yes
pretty_name:
maintainer: ~
defaults: &defaults   # an anchor
  resize: 64
train: *defaults
dcsi:
  index: 0.1
  stale:
  - old
# a comment after the dcsi block
license: mit
---
"""
USER_BODY = "\n# Title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"


def _without_dcsi(text):
    """The README text with the lines of its top-level dcsi: key removed."""
    lines = text.splitlines(keepends=True)
    out, skip = [], False
    for line in lines:
        if line.startswith("dcsi:"):
            skip = True
            continue
        if skip and (line.startswith((" ", "-")) and not line.startswith("---")):
            continue
        skip = False
        out.append(line)
    return "".join(out)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_existing_front_matter_kept_byte_for_byte(card, tmp_path, newline):
    readme = tmp_path / "README.md"
    original = (USER_FRONT_MATTER + USER_BODY).replace("\n", newline)
    readme.write_bytes(original.encode())
    write_readme(card, readme)
    raw = readme.read_bytes().decode()
    assert _without_dcsi(raw) == _without_dcsi(original)  # every other byte kept
    for kept in (
        "version: 1.10",
        "zip: 012345",
        "flag: yes",
        "pretty_name:" + newline,
        "maintainer: ~",
        "&defaults   # an anchor",
        "train: *defaults",
        "# a comment the user wrote",
        "# a comment after the dcsi block",
    ):
        assert kept in raw
    assert "stale" not in raw
    assert DatasetCard.load(readme).data[HF_KEY] == hf_block(card)
    assert raw.count("\n") == raw.count("\r\n") or newline == "\n"


def test_front_matter_without_dcsi_key_gets_it_appended(card, tmp_path):
    readme = tmp_path / "README.md"
    original = "---\nversion: 1.10  # keep\nflag: yes\n---\nbody\n"
    readme.write_text(original, encoding="utf-8")
    write_readme(card, readme)
    raw = readme.read_text(encoding="utf-8")
    assert raw.startswith("---\nversion: 1.10  # keep\nflag: yes\ndcsi:\n")
    assert raw.endswith("---\nbody\n")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"---\nlicense: mit\n\tindented: 1\n---\nbody\n", "not valid YAML .*line 3"),
        (b"---\nx: !!python/object:os.system ls\n---\nbody\n", "not valid YAML .*python/object"),
        (b"---\nlicense: mit\n---\n\xff\xfe binary\x00\n", "is not UTF-8 text"),
    ],
)
def test_unreadable_readme_is_one_line_and_untouched(card, tmp_path, content, match):
    readme = tmp_path / "README.md"
    readme.write_bytes(content)
    with pytest.raises(DataError, match=match) as exc:
        write_readme(card, readme)
    assert "\n" not in str(exc.value)
    assert readme.read_bytes() == content


def test_names_are_escaped_in_the_readme_body(rng, tmp_path):
    d = make_card_dict(rng)
    evil = ["<svg onload=alert(1)>", "a|b", "two\nlines", "`tick` & [link](x)"]
    d["dataset"]["classes"] = evil
    d["dataset"]["name"] = "<script>alert(1)</script>"
    d["dataset"]["source"] = "src`with`ticks\nand <b>"
    card = Card(d)
    write_readme(card, tmp_path)
    loaded = DatasetCard.load(tmp_path / "README.md")
    body = loaded.text
    import re

    outside_code = re.sub(r"```.*?```|`[^`\n]*`", "", body, flags=re.DOTALL)
    assert "<" not in outside_code  # no raw HTML: only inside code spans, shown as text
    assert "&lt;svg onload=alert(1)&gt;" in body and "a&#124;b" in body
    assert "two lines" in body and "&#96;tick&#96; &amp; &#91;link&#93;(x)" in body
    rows = [line for line in body.splitlines() if line.startswith("| ")]
    assert len(rows) == 6 and all(line.count("|") == 4 for line in rows)  # header + 5 pairs
    assert "(source `src'with'ticks and <b>`" in body  # inside a code span: shown as text
    # the front matter keeps the names as data
    names = {n for p in loaded.data[HF_KEY]["most_similar_pairs"] for n in p["classes"]}
    assert names <= set(evil)


def test_splice_edge_cases(card):
    from dcsi.card.hf import splice_readme

    block = {"index": 0.5}
    # a BOM stays first; the front matter behind it is found
    assert splice_readme("\ufeff---\nlicense: mit\n---\nbody\n", block) == (
        "\ufeff---\nlicense: mit\ndcsi:\n  index: 0.5\n---\nbody\n"
    )
    # an anchor in the old dcsi: block used by another key: refused, not rewritten
    with pytest.raises(DataError, match="cannot replace without touching other keys"):
        splice_readme("---\ndcsi: &x\n  a: 1\nother: *x\n---\n", block)
    # a duplicated top-level dcsi: key: both go, one new block where the first was
    out = splice_readme("---\ndcsi: 1\nlicense: mit\ndcsi:\n  - 2\n---\n", block)
    assert out == "---\ndcsi:\n  index: 0.5\nlicense: mit\n---\n"
