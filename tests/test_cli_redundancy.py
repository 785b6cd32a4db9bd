"""`dcsi redundancy`, `dcsi leakage` and the gallery."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dcsi.cli import main
from dcsi.gallery import gallery_html, write_gallery
from dcsi.redundancy import find_redundancy


@pytest.fixture
def folder(tmp_path, rng):
    """An image folder with 2 classes, one redundant copy and one label conflict."""
    from PIL import Image

    imgs = rng.integers(30, 200, (12, 16, 16)).astype(np.uint8)
    imgs[1] = imgs[0]  # same class a: redundant
    imgs[11] = imgs[2]  # 2 in class a, 11 in class b: conflict
    root = tmp_path / "data"
    for i, img in enumerate(imgs):
        cls = "a" if i < 6 else "b"
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / cls / f"img{i:02d}.png")
    return root


def test_redundancy_command(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["redundancy", str(folder), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "2 groups (1 redundant, 1 label conflicts)" in text
    card = json.loads((out / "redundancy.json").read_text())
    assert {g["kind"] for g in card["groups"]} == {"redundant", "conflict"}
    assert (out / "redundancy.csv").read_text().startswith("group,kind,id,label")
    keep = (out / "keep_list.csv").read_text().splitlines()
    assert len(keep) == 13 and sum(line.endswith(",0") for line in keep) == 1
    page = (out / "gallery.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<!DOCTYPE html>" in page


def test_redundancy_command_options(folder, tmp_path):
    out = tmp_path / "o2"
    assert (
        main(
            [
                "redundancy",
                str(folder),
                "--out",
                str(out),
                "--n-clusters",
                "10",
                "--tau",
                "1e4",
                "--scope",
                "all",
            ]
        )
        == 0
    )
    card = json.loads((out / "redundancy.json").read_text())
    assert card["params"]["n_clusters"] == 10 and card["params"]["tau"] == 1e4
    out = tmp_path / "o3"
    assert (
        main(
            [
                "redundancy",
                str(folder),
                "--out",
                str(out),
                "--align-threshold",
                "0.02",
                "--max-crop",
                "1",
                "--group-linkage",
                "single",
            ]
        )
        == 0
    )
    card = json.loads((out / "redundancy.json").read_text())
    assert card["params"]["align"] is True
    assert card["params"]["align_threshold"] == 0.02
    assert card["params"]["max_crop"] == 1
    assert card["params"]["group_linkage"] == "single"
    out = tmp_path / "o4"
    assert main(["redundancy", str(folder), "--out", str(out), "--no-align"]) == 0
    card = json.loads((out / "redundancy.json").read_text())
    assert card["params"]["align"] is False and "align_threshold" not in card["params"]
    assert card["params"]["relative"]["ratio"] == 0.25 and not card["params"]["relative"]["flips"]
    out = tmp_path / "o5"
    args = ["redundancy", str(folder), "--out", str(out), "--relative-ratio", "0.4", "--flips"]
    assert main(args) == 0
    card = json.loads((out / "redundancy.json").read_text())
    assert card["params"]["relative"]["ratio"] == 0.4 and card["params"]["relative"]["flips"]
    assert card["params"]["relative"]["registered"] is True
    out = tmp_path / "o7"
    assert main(["redundancy", str(folder), "--out", str(out), "--no-registered"]) == 0
    card = json.loads((out / "redundancy.json").read_text())
    assert card["params"]["relative"]["registered"] is False
    assert card["params"]["relative"]["halves"] is False
    assert card["params"]["relative"]["centred"] is False
    assert card["params"]["relative"]["equalised"] is False
    out = tmp_path / "o9"
    assert main(["redundancy", str(folder), "--out", str(out), "--centred"]) == 0
    card = json.loads((out / "redundancy.json").read_text())
    assert card["params"]["relative"]["centred"] is True
    out = tmp_path / "o10"
    assert main(["redundancy", str(folder), "--out", str(out), "--equalised"]) == 0
    card = json.loads((out / "redundancy.json").read_text())
    assert card["params"]["relative"]["equalised"] is True
    assert card["params"]["relative"]["centred"] is False
    out = tmp_path / "o8"
    assert main(["redundancy", str(folder), "--out", str(out), "--halves"]) == 0
    card = json.loads((out / "redundancy.json").read_text())
    assert card["params"]["relative"]["halves"] is True
    out = tmp_path / "o6"
    assert main(["redundancy", str(folder), "--out", str(out), "--no-relative"]) == 0
    assert json.loads((out / "redundancy.json").read_text())["params"]["relative"] is None


def test_relative_ratio_errors_are_one_line(folder, tmp_path, capsys):
    out = str(tmp_path / "x")
    assert main(["redundancy", str(folder), "--out", out, "--relative-ratio", "1.5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dcsi: error: The 'ratio' parameter of RelativeOptions")
    assert err.count("\n") == 1
    assert not (tmp_path / "x").exists()
    args = ["leakage", "--train", str(folder), "--test", str(folder), "--out", out]
    assert main([*args, "--relative-ratio", "0"]) == 1
    assert "'ratio' parameter of RelativeOptions" in capsys.readouterr().err


def test_leakage_command(folder, tmp_path, capsys):
    out = tmp_path / "leak"
    assert main(["leakage", "--train", str(folder), "--test", str(folder), "--out", str(out)]) == 0
    assert "12 test items (100.00%)" in capsys.readouterr().out
    d = json.loads((out / "leakage.json").read_text())
    assert d["n_leaked"] == 12
    assert d["params"]["align"] is True and d["params"]["align_threshold"] == 0.0005
    assert (out / "leakage.csv").read_text().startswith("test_id,train_id")
    out = tmp_path / "leak2"
    assert (
        main(
            [
                "leakage",
                "--train",
                str(folder),
                "--test",
                str(folder),
                "--out",
                str(out),
                "--no-align",
                "--align-threshold",
                "0.01",
            ]
        )
        == 0
    )
    d = json.loads((out / "leakage.json").read_text())
    assert d["params"]["align"] is False and "align_threshold" not in d["params"]
    assert d["n_leaked"] == 12
    out = tmp_path / "leak3"
    args = ["leakage", "--train", str(folder), "--test", str(folder), "--out", str(out)]
    assert main([*args, "--halves"]) == 0
    d = json.loads((out / "leakage.json").read_text())
    assert d["params"]["relative"]["halves"] is True
    assert d["params"]["relative"]["despeckle"] is True
    assert d["n_leaked"] == 12


def test_user_errors_are_one_line(folder, tmp_path, capsys):
    assert main(["redundancy", str(folder), "--out", str(tmp_path / "x"), "--tau", "0.5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dcsi: error: The 'tau' parameter") and err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        main(["redundancy", str(folder), "--out", "x", "--n-clusters", "many"])
    assert exc.value.code == 2


def test_gallery_fragment(rng, tmp_path):
    imgs = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    imgs[3] = imgs[0]
    res = find_redundancy(imgs)
    frag = gallery_html(res, lambda m: imgs[int(m)], max_groups=5)
    assert frag.startswith("<style>") and frag.count("<img") == 2
    assert 'class="rep"' in frag
    dict_frag = gallery_html(res.to_dict()["groups"], lambda m: imgs[int(m)])
    assert dict_frag.count("<img") == 2
    assert gallery_html(res, lambda m: imgs[int(m)], max_groups=0).count("<img") == 0
    p = write_gallery(tmp_path / "g.html", res, lambda m: imgs[int(m)], title="T<1>")
    assert "T&lt;1&gt;" in p.read_text()
    from dcsi.exceptions import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="'max_groups' parameter of gallery_html"):
        gallery_html(res, lambda m: imgs[int(m)], max_groups=-1)


def test_search_option(folder, tmp_path, capsys):
    pytest.importorskip("faiss")
    exact = tmp_path / "exact"
    ann = tmp_path / "ann"
    assert main(["redundancy", str(folder), "--out", str(exact), "--search", "exact"]) == 0
    assert main(["redundancy", str(folder), "--out", str(ann), "--search", "ann"]) == 0
    e = json.loads((exact / "redundancy.json").read_text())
    a = json.loads((ann / "redundancy.json").read_text())
    assert "search" not in e["params"] and a["params"]["search"] == "ann"
    assert a["groups"] == e["groups"]
    leak = tmp_path / "leak"
    args = ["leakage", "--train", str(folder), "--test", str(folder), "--out", str(leak)]
    assert main([*args, "--search", "ann"]) == 0
    assert json.loads((leak / "leakage.json").read_text())["params"]["search"] == "ann"
    with pytest.raises(SystemExit) as exc:
        main(["redundancy", str(folder), "--out", str(tmp_path / "x"), "--search", "fast"])
    assert exc.value.code == 2
    assert "--search" in capsys.readouterr().err
