"""Hardening of dcsi.sources: inputs that used to crash, hang, leak or lose data silently.

Each test names the break of the "Hardening" issue it covers (1, 2, 3, 9, 10, 15).
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dcsi
from dcsi.cli import main
from dcsi.sources import open_source

REPO = Path(dcsi.__file__).resolve().parent.parent


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _write(path: Path | bytes, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _images(
    root: Path, rng: np.random.Generator, classes=("a", "b"), n: int = 3, side: int = 12
) -> None:
    for c, base in zip(classes, range(40, 256, 70)):
        for k in range(n):
            arr = np.clip(base + rng.normal(0, 20, (side, side)), 0, 255).astype(np.uint8)
            _write(root / c / f"{k}.png", _png(arr))


def _deny(monkeypatch, *denied: Path) -> None:
    """Make ``os.scandir``/``os.listdir`` fail with EACCES on ``denied`` (tests run as
    root, where chmod 000 does not stop reads)."""
    real_scandir, real_listdir = os.scandir, os.listdir
    bad = {os.path.realpath(p) for p in denied}

    def check(path):
        if os.path.realpath(os.fsdecode(path)) in bad:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))

    def scandir(path="."):
        check(path)
        return real_scandir(path)

    def listdir(path="."):
        check(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)


def _isolated(code: str, *, timeout: float = 30) -> dict:
    """Run ``code`` in a fresh interpreter with 4 GiB of address space and a timeout;
    it prints one JSON line, returned here (a hang or a crash fails the test)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * 1024**3, 4 * 1024**3))

    env = {**os.environ, "PYTHONPATH": str(REPO), "DCSI_DISABLE_PROGRESS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            preexec_fn=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for more than {timeout} s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- 1: empty classes


def _empty_folder(root, monkeypatch):
    (root / "c").mkdir()


def _all_skipped(root, monkeypatch):
    _write(root / "c" / "x.png", b"")
    _write(root / "c" / "y.png", b"not an image")


def _unreadable(root, monkeypatch):
    _write(root / "c" / "x.png", _png(np.zeros((8, 8), np.uint8)))
    _deny(monkeypatch, root / "c")


def _output_folder(root, monkeypatch):
    _write(root / "c" / "dcsi.json", b"{}")
    _write(root / "c" / "README.md", b"# card")


@pytest.mark.parametrize("make", [_empty_folder, _all_skipped, _unreadable])
def test_empty_classes_are_dropped_with_one_warning(tmp_path, rng, caplog, monkeypatch, make):
    root = tmp_path / "d"
    _images(root, rng)
    make(root, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="dcsi.sources"):
        ims = open_source(root)
    assert ims.classes == ["a", "b"] and ims.dropped_classes == ["c"]
    assert ims.labels.tolist() == [0, 0, 0, 1, 1, 1] and ims.class_counts() == [3, 3]
    assert ims.to_dict()["dropped_classes"] == ["c"]
    dropped = [r for r in caplog.records if "no usable image" in r.getMessage()]
    assert len(dropped) == 1 and "c" in dropped[0].getMessage()


def test_class_only_in_another_split_is_dropped(tmp_path, rng):
    _images(tmp_path / "d" / "train", rng)
    _images(tmp_path / "d" / "test", rng, classes=("a", "b", "z"))
    train = open_source(tmp_path / "d")
    assert train.classes == ["a", "b"] and train.dropped_classes == ["z"]
    test = open_source(tmp_path / "d", split="test")
    assert test.classes == ["a", "b", "z"] and test.dropped_classes == []


def test_dcsi_output_folder_is_not_a_class(tmp_path, rng, caplog, monkeypatch):
    root = tmp_path / "d"
    _images(root, rng)
    _output_folder(root, monkeypatch)
    _write(root / "a" / "card" / "redundancy.json", b"{}")  # nested output folder
    _write(root / "a" / "card" / "thumb.png", _png(np.zeros((8, 8), np.uint8)))
    with caplog.at_level(logging.WARNING, logger="dcsi.sources"):
        ims = open_source(root)
    assert ims.classes == ["a", "b"] and ims.dropped_classes == [] and len(ims) == 6
    assert "dcsi output folder" in caplog.text and "a/card" in caplog.text


def test_analyze_twice_with_out_inside_the_dataset_and_an_empty_class(tmp_path, rng, capsys):
    pytest.importorskip("torch")
    root = tmp_path / "d"
    _images(root, rng, n=4, side=16)
    (root / "empty").mkdir()
    out = root / "card"
    for _ in range(2):  # the second run sees card/ inside the dataset
        rc = main(
            [
                "analyze",
                str(root),
                "--out",
                str(out),
                "--analyzers",
                "cnn",
                "--cache",
                str(tmp_path / "cache"),
                "--no-progress",
            ]
        )
        assert rc == 0, capsys.readouterr().err
        card = json.loads((out / "dcsi.json").read_text())
        assert card["dataset"]["classes"] == ["a", "b"]
        assert card["dataset"]["dropped_classes"] == ["empty"]


# ----------------------------------------------------------------------------- 2: file names


def _non_utf8_folder(root: Path, rng) -> bytes:
    _images(root, rng, n=4, side=16)
    raw = os.fsencode(root)
    dup = (root / "a" / "0.png").read_bytes()
    _write(raw + b"/a/caf\xe9.png", dup)  # a copy of a/0.png: it lands in a group
    _write(raw + b"/r\xe9d/0.png", (root / "b" / "0.png").read_bytes())
    _write(raw + b"/r\xe9d/1.png", (root / "b" / "1.png").read_bytes())
    return dup


def test_non_utf8_names_give_text_ids_that_load(tmp_path, rng):
    root = tmp_path / "d"
    dup = _non_utf8_folder(root, rng)
    ims = open_source(root)
    assert "a/caf\\xe9.png" in ims.ids and "r\\xe9d" in ims.classes
    for text in ims.ids + ims.classes:
        text.encode("utf-8")  # valid text, no lone surrogates
    i = ims.ids.index("a/caf\\xe9.png")
    assert np.asarray(ims.load(i)).tobytes() == np.asarray(Image.open(io.BytesIO(dup))).tobytes()
    json.dumps(ims.to_dict(), ensure_ascii=False).encode("utf-8")


def test_non_utf8_names_redundancy_and_analyze_end_to_end(tmp_path, rng, capsys):
    root = tmp_path / "d"
    _non_utf8_folder(root, rng)
    out = tmp_path / "r"
    assert main(["redundancy", str(root), "--out", str(out), "--no-progress"]) == 0, (
        capsys.readouterr().err
    )
    assert "a/caf\\xe9.png" in (out / "keep_list.csv").read_text(encoding="utf-8") + (
        out / "redundancy.csv"
    ).read_text(encoding="utf-8")
    json.loads((out / "redundancy.json").read_text(encoding="utf-8"))
    test = tmp_path / "t"  # a test set holding a copy of a/caf\xe9.png: a leaked pair
    _write(os.fsencode(test) + b"/a/caf\xe9.png", (root / "a" / "0.png").read_bytes())
    _write(test / "a" / "x.png", (root / "b" / "2.png").read_bytes())
    out = tmp_path / "l"
    assert (
        main(
            [
                "leakage",
                "--train",
                str(root),
                "--test",
                str(test),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert "caf\\xe9.png" in (out / "leakage.csv").read_text(encoding="utf-8")
    json.loads((out / "leakage.json").read_text(encoding="utf-8"))
    pytest.importorskip("torch")
    out = tmp_path / "c"
    assert (
        main(
            [
                "analyze",
                str(root),
                "--out",
                str(out),
                "--analyzers",
                "cnn",
                "--cache",
                str(tmp_path / "cache"),
                "--no-progress",
            ]
        )
        == 0
    ), capsys.readouterr().err
    card = json.loads((out / "dcsi.json").read_text(encoding="utf-8"))
    assert "r\\xe9d" in card["dataset"]["classes"]


# ----------------------------------------------------------------------------- 3: special files


# The peak is this interpreter's own (VmHWM, reset by exec): ru_maxrss of a child started
# with preexec_fn (fork + exec) starts at the parent's peak, which a long pytest session
# can push past 1 GiB.
_OPEN_AND_REPORT = """
    import json, os, resource, time
    from dcsi.sources import open_source
    t = time.perf_counter()
    ims = open_source({root!r}{kw})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if os.path.exists("/proc/self/status"):
        with open("/proc/self/status") as fh:
            peak = next((int(l.split()[1]) for l in fh if l.startswith("VmHWM:")), peak)
    print(json.dumps({{"ids": ims.ids, "skipped": {{s.id: s.reason for s in ims.skipped}},
                      "seconds": time.perf_counter() - t, "maxrss_kib": peak}}))
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_named_png_is_skipped_without_hanging(tmp_path, rng):
    root = tmp_path / "d"
    _images(root, rng)
    os.mkfifo(root / "a" / "x.png")
    got = _isolated(_OPEN_AND_REPORT.format(root=str(root), kw=""))
    assert len(got["ids"]) == 6
    assert got["skipped"]["a/x.png"].startswith("not a regular file (FIFO)")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_link_to_a_device_is_skipped_without_reading_it(tmp_path, rng):
    root = tmp_path / "d"
    _images(root, rng)
    os.symlink("/dev/zero", root / "a" / "zero.png")
    got = _isolated(_OPEN_AND_REPORT.format(root=str(root), kw=", follow_symlinks=True"))
    assert len(got["ids"]) == 6
    assert got["skipped"]["a/zero.png"].startswith("not a regular file (character device)")


def test_huge_file_of_zeros_is_rejected_from_its_header(tmp_path, rng):
    root = tmp_path / "d"
    _images(root, rng)
    with open(root / "a" / "zeros.png", "wb") as f:
        f.truncate(2 * 1024**3)  # sparse: costs no disk
    got = _isolated(_OPEN_AND_REPORT.format(root=str(root), kw=""))
    assert got["skipped"]["a/zeros.png"].startswith("not an image")
    assert got["maxrss_kib"] < 1024**2  # never held the 2 GiB in memory
    assert got["seconds"] < 10


# ----------------------------------------------------------------------------- 9: unreadable


def test_unreadable_folders_are_listed_as_skipped(tmp_path, rng, caplog, monkeypatch):
    root = tmp_path / "d"
    _images(root, rng, classes=("a", "b", "c"))
    _write(root / "a" / "sub" / "9.png", _png(np.zeros((8, 8), np.uint8)))
    _deny(monkeypatch, root / "c", root / "a" / "sub")
    with caplog.at_level(logging.WARNING, logger="dcsi.sources"):
        ims = open_source(root)
    assert len(ims) == 6 and ims.classes == ["a", "b"]
    reasons = {s.id: s.reason for s in ims.skipped}
    assert set(reasons) == {"a/sub/", "c/"}
    assert all(
        r.startswith("cannot list the folder") and "Permission denied" in r
        for r in reasons.values()
    )
    assert "2 folders" in caplog.text


def test_unreadable_root_is_one_line_error(tmp_path, rng, monkeypatch):
    root = tmp_path / "d"
    _images(root, rng)
    _deny(monkeypatch, root)
    with pytest.raises(
        dcsi.DataError,
        match=r"cannot list the folder \(.*Permission denied"
        r".*\); check its permissions",
    ):
        open_source(root)


# ----------------------------------------------------------------------------- 10: outside


def test_symlinks_out_of_the_root_are_skipped_unless_followed(tmp_path, rng, caplog):
    root, outside = tmp_path / "d", tmp_path / "outside"
    _images(root, rng)
    _images(outside, rng, classes=("z",))
    os.symlink(outside / "z" / "0.png", root / "a" / "stolen.png")
    os.symlink(outside / "z", root / "z")
    os.symlink(root / "a" / "0.png", root / "b" / "alias.png")  # inside: read
    with caplog.at_level(logging.WARNING, logger="dcsi.sources"):
        ims = open_source(root)
    assert sorted(ims.ids) == sorted(
        [f"a/{k}.png" for k in range(3)] + [f"b/{k}.png" for k in range(3)] + ["b/alias.png"]
    )
    reasons = {s.id: s.reason for s in ims.skipped}
    assert set(reasons) == {"a/stolen.png", "z/"}
    assert all(
        "outside the dataset folder" in r and "follow_symlinks" in r for r in reasons.values()
    )
    assert ims.classes == ["a", "b"]
    ims = open_source(root, follow_symlinks=True)
    assert "a/stolen.png" in ims.ids and ims.classes == ["a", "b", "z"]
    assert ims.skipped == []


def test_follow_symlinks_command_line_flag(tmp_path, rng, capsys):
    root, outside = tmp_path / "d", tmp_path / "outside"
    _images(root, rng, n=4, side=16)
    _images(outside, rng, classes=("z",), n=4, side=16)
    os.symlink(outside / "z", root / "z")
    for flag, expected in (([], False), (["--follow-symlinks"], True)):
        out = tmp_path / f"r{len(flag)}"
        assert main(["redundancy", str(root), "--out", str(out), "--no-progress", *flag]) == 0
        assert ("z/0.png" in (out / "keep_list.csv").read_text()) is expected


def _crafted_hf(tmp_path: Path, cells: list[dict], monkeypatch) -> Path:
    """A saved dataset whose Image cells hold paths and no bytes (``save_to_disk`` embeds
    the files; a dataset written by another tool need not)."""
    datasets = pytest.importorskip("datasets")
    arrow_writer = pytest.importorskip("datasets.arrow_writer")

    saved = tmp_path / "hf"
    ds = datasets.Dataset.from_dict(
        {"image": cells, "label": list(range(len(cells)))},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    with monkeypatch.context() as m:
        m.setattr(arrow_writer, "embed_table_storage", lambda t, **kw: t)
        m.chdir(saved.parent / "work")  # the size estimate stats relative paths
        ds.save_to_disk(str(saved))
    return saved


def test_hf_image_paths_outside_the_dataset_are_refused(tmp_path, rng, monkeypatch):
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png(rng.integers(0, 256, (8, 8), dtype=np.uint8)))
    _write(tmp_path / "work" / "inside.png", b"x")
    saved = _crafted_hf(
        tmp_path,
        [
            {"bytes": None, "path": "../secret.png"},
            {"bytes": None, "path": str(secret)},
            {"bytes": None, "path": "inside.png"},
        ],
        monkeypatch,
    )
    (saved / "inside.png").write_bytes(_png(rng.integers(0, 256, (8, 8), dtype=np.uint8)))
    ims = open_source(saved)
    assert ims.ids == ["2"]
    reasons = {s.id: s.reason for s in ims.skipped}
    assert set(reasons) == {"0", "1"}
    assert all("outside the dataset folder" in r for r in reasons.values())
    assert len(open_source(saved, follow_symlinks=True)) == 3


# ----------------------------------------------------------------------------- 15: messages


def test_skip_warning_names_the_first_items_and_the_card_field(tmp_path, rng, caplog):
    root = tmp_path / "d"
    _images(root, rng)
    _write(root / "a" / "empty.png", b"")
    _write(root / "b" / "text.png", b"hello")
    with caplog.at_level(logging.WARNING, logger="dcsi.sources"):
        open_source(root)
    (msg,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert "skipped 2 of 8 images" in msg
    assert "a/empty.png (zero-byte file)" in msg and "b/text.png (not an image" in msg
    assert "dataset.skipped" in msg and "ImageSet.skipped" in msg


def test_reading_bar_ends_at_100_percent(tmp_path, rng, monkeypatch):
    from dcsi import sources
    from dcsi._progress import set_progress

    root = tmp_path / "d"
    _images(root, rng)
    _write(root / "a" / "empty.png", b"")
    buf = io.StringIO()
    real = sources.progress
    monkeypatch.setattr(sources, "progress", lambda *a, **kw: real(*a, **kw, file=buf, delay=0))
    set_progress(True)
    try:
        open_source(root)
    finally:
        set_progress(None)
    frames = [f for f in buf.getvalue().split("\r") if f.strip()]
    assert frames and "100%" in frames[-1] and "7/7" in frames[-1], frames


def test_nested_folders_merged_are_reported_once(tmp_path, rng, caplog):
    root = tmp_path / "d"
    _images(root, rng)
    _write(root / "a" / "x" / "0.png", _png(np.zeros((8, 8), np.uint8)))
    _write(root / "a" / "x" / "y" / "0.png", _png(np.zeros((8, 8), np.uint8)))
    _write(root / "b" / "z" / "0.png", _png(np.zeros((8, 8), np.uint8)))
    with caplog.at_level(logging.WARNING, logger="dcsi.sources"):
        ims = open_source(root)
    assert "a/x/y/0.png" in ims.ids and ims.classes == ["a", "b"]
    merged = [r.getMessage() for r in caplog.records if "sub-folder" in r.getMessage()]
    assert len(merged) == 1 and "merged 3 sub-folder(s)" in merged[0]


def test_nothing_readable_is_one_line_error(tmp_path, rng, monkeypatch):
    root = tmp_path / "d"
    _images(root, rng, classes=("a",))
    _deny(monkeypatch, root / "a")
    with pytest.raises(
        dcsi.DataError,
        match=r"no image could be read \(1 item\(s\) skipped, "
        r"e.g. a/: cannot list the folder",
    ) as info:
        open_source(root)
    assert "\n" not in str(info.value)


def test_follow_symlinks_must_be_a_bool(tmp_path):
    with pytest.raises(
        dcsi.InvalidParameterError,
        match="The 'follow_symlinks' parameter of open_source must be a bool. Got 'yes' instead.",
    ):
        open_source(tmp_path, follow_symlinks="yes")


def test_links_inside_the_root_read_each_folder_once(tmp_path, rng):
    root = tmp_path / "d"
    _images(root, rng)
    os.symlink(root / "a", root / "kittens")  # the same class twice
    os.symlink(root, root / "b" / "loop")  # a loop back to the root
    ims = open_source(root)
    assert len(ims) == 6 and ims.classes == ["a", "b"]
    assert ims.dropped_classes == ["kittens"]
    reasons = {s.id: s.reason for s in ims.skipped}
    assert reasons == {
        "kittens/": "same folder as a/ (a symbolic link); read once",
        "b/loop/": "same folder as the dataset folder (a symbolic link); read once",
    }
