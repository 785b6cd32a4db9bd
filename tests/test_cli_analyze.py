"""`dcsi analyze` and the command line's exit-status contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dcsi import __version__
from dcsi.cli import main


@pytest.fixture
def folder(tmp_path, rng):
    """An image folder of 2 classes x 6 small PNGs."""
    from PIL import Image

    root = tmp_path / "data"
    for c, base in (("cats", 60), ("dogs", 180)):
        (root / c).mkdir(parents=True)
        for i in range(6):
            img = np.clip(base + rng.normal(0, 25, (20, 20)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.png")
    return root


def test_analyze_writes_the_card_files(folder, tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    rc = main(
        [
            "analyze",
            str(folder),
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "c"),
            "--no-progress",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "index (DCSI)" in text and "most similar class pairs" in text
    for name in ("dcsi.json", "README.md", "croissant.json", "report.html"):
        assert (out / name).is_file(), name
    card = json.loads((out / "dcsi.json").read_text())
    assert card["dataset"]["classes"] == ["cats", "dogs"]
    assert card["provenance"]["parameters"]["seed"] == 3
    assert card["provenance"]["command"].startswith("dcsi ")
    # the index's reading and the class clusters' verdict are printed
    assert f"reading: {card['index']['reading']['interpretation']}" in text
    assert card["class_clusters"]["verdict"] in text


def test_user_error_is_one_line_and_exit_1(tmp_path, capsys):
    rc = main(["analyze", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("dcsi: error: ") and err.count("\n") == 1
    assert "missing" in err and "Traceback" not in err


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "x", "--out", "o", "--device", "tpu"])
    assert exc.value.code == 2


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"dcsi {__version__}"


def test_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "DCSI_DEBUG": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dcsi",
            "analyze",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "dcsi: error:" in proc.stderr


@pytest.mark.slow
def test_demo_dataset_end_to_end(tmp_path, capsys):
    """`make demo`'s command on sklearn's digits: every analyzer, a valid card."""
    pytest.importorskip("torch")
    import dcsi

    out = tmp_path / "digits"
    assert (
        main(
            [
                "analyze",
                "sample:digits",
                "--out",
                str(out),
                "--no-progress",
                "--cache",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    card = dcsi.load_card(out)
    assert card.n_images == 1797 and card.classes == [str(d) for d in range(10)]
    assert set(card.similarity_kinds) == {"cnn_cosine", "ssim", "wavelet"}
    assert 0.0 < card.index < 1.0
    for kind in card.similarity_kinds:
        assert np.isfinite(card.similarity(kind)).all()


def _choices(command, option):
    """The documented values of a command's option, read from the parser."""
    import argparse

    from dcsi.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    return list(action.choices)


@pytest.mark.parametrize("method", _choices("analyze", "--redundancy-method"))
def test_every_redundancy_method_runs_end_to_end(folder, tmp_path, method):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    rc = main(
        [
            "analyze",
            str(folder),
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "c"),
            "--no-progress",
            "--analyzers",
            "wavelet",
            "--redundancy-method",
            method,
        ]
    )
    assert rc == 0
    card = json.loads((out / "dcsi.json").read_text())
    assert card["redundancy"]["method"] == method
    assert card["redundancy"]["summary"]["n_images"] == 12


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--image-size", "8"], "'image_size' parameter of analyze"),
        (["--backbone", "nope"], "'backbone' parameter of analyze"),
        (["--weights", "/nonexistent/w.pth"], "no such file"),
        (["--analyzers", "cnn,pixels"], "'analyzers' parameter of analyze"),
    ],
)
def test_bad_options_are_refused_before_reading_the_data(
    tmp_path, capsys, monkeypatch, argv, needle
):
    import dcsi.sources

    def refuse(*a, **k):
        raise AssertionError("the source was opened before the options were checked")

    monkeypatch.setattr(dcsi.sources, "open_source", refuse)
    rc = main(["analyze", str(tmp_path), "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and needle in err, err
