"""Bad output folders are refused before any work, for every command that writes."""

from __future__ import annotations

import json

import pytest

from dcsi.cli import main


def _argv(command, out):
    if command == "leakage":
        return ["leakage", "--train", "sample:digits", "--test", "sample:digits", "--out", str(out)]
    return [command, "sample:digits", "--out", str(out)]


@pytest.fixture
def no_reading(monkeypatch):
    import dcsi.sources

    def refuse(*a, **k):
        raise AssertionError("the source was opened before --out was checked")

    monkeypatch.setattr(dcsi.sources, "open_source", refuse)


@pytest.mark.parametrize("command", ["analyze", "redundancy", "leakage"])
@pytest.mark.parametrize("case", ["file", "under_file", "broken_link"])
def test_bad_out_is_one_line_before_any_work(tmp_path, capsys, no_reading, command, case):
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    out = {"file": f, "under_file": f / "sub" / "out", "broken_link": tmp_path / "link"}[case]
    if case == "broken_link":
        out.symlink_to(tmp_path / "missing-target")
    rc = main(_argv(command, out))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err and "--out" in err, err
    assert f.read_text() == "not a folder"
    assert not (tmp_path / "missing-target").exists()


def test_read_only_place_is_refused(tmp_path, capsys, no_reading, monkeypatch):
    import tempfile

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", denied)
    rc = main(_argv("redundancy", tmp_path / "new" / "out"))
    err = capsys.readouterr().err
    assert rc == 1 and "cannot write" in err and err.count("\n") == 1


def test_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    import dcsi.redundancy

    def too_big(*a, **k):
        raise MemoryError

    monkeypatch.setattr(dcsi.redundancy, "find_redundancy", too_big)
    rc = main(["redundancy", "sample:digits", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "out of memory" in err
    assert "--max-per-class" in err and not (tmp_path / "o").exists()


def test_work_that_cannot_fit_is_refused_before_allocating(tmp_path, capsys, monkeypatch):
    import dcsi._validation

    monkeypatch.setattr(dcsi._validation, "available_memory", lambda: 1 << 10)  # 1 KiB
    rc = main(["redundancy", "sample:digits", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "GiB of memory" in err and "--size" in err
    monkeypatch.setattr(dcsi._validation, "available_memory", lambda: None)  # unknown: go on
    assert (
        main(
            [
                "redundancy",
                "sample:digits",
                "--out",
                str(tmp_path / "o"),
                "--size",
                "6",
                "--no-align",
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "o" / "redundancy.json").read_text())
    assert data["summary"]["rrqr"]["n_coefficients"] == 36


def test_analyze_size_option_sets_the_pixel_stages_size(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "o"
    assert (
        main(
            [
                "analyze",
                "sample:digits",
                "--out",
                str(out),
                "--analyzers",
                "wavelet",
                "--size",
                "6",
                "--max-per-class",
                "20",
                "--no-progress",
            ]
        )
        == 0
    )
    card = json.loads((out / "dcsi.json").read_text())
    assert card["redundancy"]["summary"]["rrqr"]["n_coefficients"] == 36
    assert card["provenance"]["parameters"]["size"] == 6
