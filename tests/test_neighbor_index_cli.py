"""``dcsi index``, ``dcsi search``, ``analyze --index``: files, card block, views, attach."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dcsi.card import load_card
from dcsi.cli import main

pytest.importorskip("torch")
pytest.importorskip("pyarrow")


@pytest.fixture
def folder(tmp_path, rng):
    """An image folder of 2 classes x 8 small PNGs."""
    from PIL import Image

    root = tmp_path / "data"
    for c, base in (("cats", 60), ("dogs", 180)):
        (root / c).mkdir(parents=True)
        for i in range(8):
            img = np.clip(base + rng.normal(0, 40, (16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.png")
    return root


def test_index_and_search_commands(folder, tmp_path, capsys, pixel_backbone):
    out = tmp_path / "idx"
    assert main(["index", str(folder), "--out", str(out), "-k", "3", "--no-cache"]) == 0
    assert "indexed 16 images: k = 3, exact" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"index.json", "neighbors.parquet", "vectors.npy"}
    queries = [str(folder / "cats" / "2.png"), str(folder / "dogs" / "5.png")]
    assert main(["search", str(out), *queries, "-k", "2", "--no-cache"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == f"query: {queries[0]}" and text[2].split()[-1] == "cats/2.png"
    assert text[2].split()[:2] == ["1", "1.0000"]
    assert main(["search", str(out), queries[1], "-k", "3", "--json", "--no-cache"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc[0]["query"] == queries[1] and len(doc[0]["neighbors"]) == 3
    assert doc[0]["neighbors"][0]["id"] == "dogs/5.png"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["index", "{folder}", "--out", "{tmp}/o", "-k", "0"], "-k must be at least 1"),
        (["index", "{folder}", "--out", "{tmp}/o", "--head", "{tmp}/no.st"], "--head"),
        (["search", "{tmp}/none", "{folder}/cats/0.png"], "No neighbour index"),
        (["search", "{tmp}/idx", "{tmp}/missing.png"], "no such image file"),
        (["search", "{tmp}/idx", "{folder}/cats/0.png", "-k", "99"], "more than the 16"),
    ],
)
def test_errors_are_one_line(folder, tmp_path, capsys, pixel_backbone, argv, message):
    main(["index", str(folder), "--out", str(tmp_path / "idx"), "--no-cache"])
    capsys.readouterr()
    argv = [a.format(folder=folder, tmp=tmp_path) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_analyze_index_records_the_index_in_every_view(folder, tmp_path, capsys, pixel_backbone):
    out = tmp_path / "card"
    argv = ["analyze", str(folder), "--out", str(out), "--no-cache", "--analyzers", "cnn"]
    assert main([*argv, "--index", "--index-k", "5"]) == 0
    assert "neighbour index: k = 5 for 16 images (exact" in capsys.readouterr().out
    card = load_card(out)
    assert card.schema_version == "1.6.0"
    block = card.data["neighbor_index"]
    assert block["k"] == 5 and block["n"] == 16 and block["path"] == "neighbor_index"
    assert block["head"] is None and block["pooling"] == "gap"
    files = {f["path"] for f in block["files"]}
    assert files == {
        f"neighbor_index/{n}" for n in ("index.json", "neighbors.parquet", "vectors.npy")
    }
    assert len(block["samples"]) == 8 and len(block["samples"][0]["neighbors"]) == 4
    page = (out / "report.html").read_text()
    assert "id='neighbor-index'" in page and page.count('<img class="thumb"') >= 40
    assert "neighbor_index:" in (out / "README.md").read_text()
    croissant = json.loads((out / "croissant.json").read_text())
    urls = {d["contentUrl"] for d in croissant["distribution"]}
    assert "neighbor_index/neighbors.parquet" in urls
    # the index the card points at answers queries
    assert main(["search", str(out), str(folder / "dogs" / "1.png"), "--no-cache"]) == 0
    assert "dogs/1.png" in capsys.readouterr().out


def test_croissant_with_the_index_validates(folder, tmp_path, pixel_backbone):
    mlc = pytest.importorskip("mlcroissant")
    out = tmp_path / "card"
    argv = ["analyze", str(folder), "--out", str(out), "--no-cache", "--analyzers", "cnn"]
    assert main([*argv, "--index"]) == 0
    ds = mlc.Dataset(jsonld=str(out / "croissant.json"))
    assert not ds.metadata.issues.errors, ds.metadata.issues.report()


def test_index_into_a_card_folder_updates_the_card(folder, tmp_path, capsys, pixel_backbone):
    out = tmp_path / "card"
    argv = ["analyze", str(folder), "--out", str(out), "--no-cache", "--analyzers", "cnn"]
    assert main(argv) == 0
    assert "neighbor_index" not in load_card(out).data
    assert main(["index", str(folder), "--out", str(out), "-k", "2", "--no-cache"]) == 0
    assert f"wrote {out / 'neighbor_index'}" in capsys.readouterr().out
    block = load_card(out).data["neighbor_index"]
    assert block["k"] == 2 and (out / "neighbor_index" / "neighbors.parquet").is_file()
    assert main(["card", "validate", str(out)]) == 0
    # another dataset cannot be recorded in this card
    other = tmp_path / "other" / "x"
    other.mkdir(parents=True)
    for i in range(3):
        (other / f"{i}.png").write_bytes((folder / "cats" / f"{i}.png").read_bytes())
    capsys.readouterr()
    assert main(["index", str(other.parent), "--out", str(out), "--no-cache"]) == 1
    assert "describes another dataset" in capsys.readouterr().err


def test_attach_carries_the_index_and_checks_it(folder, tmp_path, capsys, pixel_backbone):
    out = tmp_path / "card"
    argv = ["analyze", str(folder), "--out", str(out), "--no-cache", "--analyzers", "cnn"]
    assert main([*argv, "--index"]) == 0
    dest = tmp_path / "dataset"
    dest.mkdir()
    assert main(["card", "attach", str(out), "--to", str(dest)]) == 0
    assert "neighbor_index/neighbors.parquet" in capsys.readouterr().out
    for name in ("index.json", "neighbors.parquet", "vectors.npy"):
        src = (out / "neighbor_index" / name).read_bytes()
        assert (dest / "neighbor_index" / name).read_bytes() == src
    from dcsi.neighbor_index import load_neighbor_index

    assert len(load_neighbor_index(dest)) == 16
    # a changed index file stops attach before anything is written
    (out / "neighbor_index" / "vectors.npy").write_bytes(b"changed")
    dest2 = tmp_path / "dataset2"
    dest2.mkdir()
    assert main(["card", "attach", str(out), "--to", str(dest2)]) == 1
    assert "does not match the sha256" in capsys.readouterr().err
    assert not any(dest2.iterdir())


def test_card_with_an_index_path_outside_the_folder_is_refused(folder, tmp_path, pixel_backbone):
    from dcsi.cli.card import attach_card
    from dcsi.exceptions import DcsiError

    out = tmp_path / "card"
    argv = ["analyze", str(folder), "--out", str(out), "--no-cache", "--analyzers", "cnn"]
    assert main([*argv, "--index"]) == 0
    data = json.loads((out / "dcsi.json").read_text())
    data["neighbor_index"]["files"][0]["path"] = "../../etc/passwd"
    (out / "dcsi.json").write_text(json.dumps(data))
    dest = tmp_path / "dataset"
    dest.mkdir()
    with pytest.raises(DcsiError, match="outside its folder"):
        attach_card(out, str(dest))
