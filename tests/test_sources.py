"""Tests of dcsi.sources: every source kind, every bad-input kind, arrays and subsets."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcsi.exceptions import DataError, InvalidParameterError
from dcsi.sources import ImageSet, SkippedItem, decode_image, open_source


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def folder(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, dict[str, np.ndarray]]:
    """dir/<class>/<img>.png with 3 classes x 4 random 12x10 grey images."""
    root = tmp_path / "imgs"
    arrays = {}
    for c in ("cat", "dog", "eel"):
        for k in range(4):
            a = rng.integers(0, 256, size=(12, 10), dtype=np.uint8)
            rel = f"{c}/{k}.png"
            _write(root / rel, _png(a))
            arrays[rel] = a
    return root, arrays


# ----------------------------------------------------------------------------- folders


def test_image_folder_ids_labels_pixels(folder):
    root, arrays = folder
    ims = open_source(root)
    assert isinstance(ims, ImageSet)
    assert len(ims) == 12 and ims.classes == ["cat", "dog", "eel"]
    assert ims.ids == sorted(arrays)
    assert ims.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ims.class_counts() == [4, 4, 4]
    assert ims.skipped == []
    for i, rid in enumerate(ims.ids):
        img = ims.load(i)
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), arrays[rid])
    assert ims.native_size() == (12, 10) and ims.typical_side() == 12
    d = ims.to_dict()
    assert set(d) == {
        "name",
        "source",
        "split",
        "fingerprint",
        "n_images",
        "classes",
        "class_counts",
        "dropped_classes",
    }
    assert d["dropped_classes"] == []
    assert d["n_images"] == 12 and d["name"] == "imgs" and len(d["fingerprint"]) == 64


def test_fingerprint_tracks_bytes_and_labels(folder, tmp_path):
    root, arrays = folder
    fp = open_source(root).fingerprint()
    assert open_source(root).fingerprint() == fp  # stable
    # same images under other class names -> other labels -> other fingerprint
    moved = tmp_path / "moved"
    for rel, a in arrays.items():
        c, name = rel.split("/")
        _write(moved / {"cat": "dog", "dog": "cat", "eel": "eel"}[c] / name, _png(a))
    assert open_source(moved).fingerprint() != fp
    # one changed pixel -> other fingerprint
    a = arrays["eel/3.png"].copy()
    a[0, 0] ^= 1
    _write(root / "eel/3.png", _png(a))
    assert open_source(root).fingerprint() != fp
    # content hash is the SHA-256 of the file bytes
    import hashlib

    ims = open_source(root)
    i = ims.ids.index("eel/3.png")
    assert ims.content_hash(i) == hashlib.sha256((root / "eel/3.png").read_bytes()).hexdigest()


def test_folder_with_splits(tmp_path, rng):
    root = tmp_path / "ds"
    for split, classes in (("train", ("a", "b")), ("test", ("b", "c"))):
        for c in classes:
            for k in range(2):
                _write(
                    root / split / c / f"{k}.png",
                    _png(rng.integers(0, 256, (5, 5), dtype=np.uint8)),
                )
    train = open_source(root)
    assert train.split == "train"
    # a class of another split only has no image here: dropped, and named
    assert train.classes == ["a", "b"] and train.dropped_classes == ["c"]
    assert train.class_counts() == [2, 2]
    assert train.ids[0] == "train/a/0.png"
    test = open_source(root, split="test")
    assert test.classes == ["b", "c"] and test.labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(DataError, match="no split 'val'; available splits: test, train"):
        open_source(root, split="val")


def test_folder_several_splits_without_train(tmp_path):
    root = tmp_path / "ds"
    for split in ("val", "test"):
        _write(root / split / "a" / "0.png", _png(np.zeros((4, 4), np.uint8)))
    with pytest.raises(DataError, match="has several splits .*choose one with --split"):
        open_source(root)


def test_split_given_for_folder_without_splits(folder):
    with pytest.raises(DataError, match="has no split folders"):
        open_source(folder[0], split="train")


def test_unlabelled_folder(tmp_path, rng):
    for k in range(3):
        _write(tmp_path / "u" / f"{k}.png", _png(rng.integers(0, 256, (4, 6), np.uint8)))
    _write(tmp_path / "u" / "notes.txt", b"not listed")
    ims = open_source(tmp_path / "u")
    assert len(ims) == 3 and ims.labels is None and ims.classes == []
    assert ims.class_counts() == []
    assert ims.to_dict()["class_counts"] == []


def test_loose_images_beside_class_folders_are_ignored(folder, caplog):
    root, _ = folder
    _write(root / "stray.png", _png(np.zeros((4, 4), np.uint8)))
    with caplog.at_level(logging.WARNING, logger="dcsi.sources"):
        ims = open_source(root)
    assert len(ims) == 12 and "ignoring 1 image(s) outside the class folders" in caplog.text


def test_missing_path_and_file_path(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        open_source(tmp_path / "nope")
    f = _write(tmp_path / "x.png", _png(np.zeros((4, 4), np.uint8)))
    with pytest.raises(DataError, match="is a file; give the folder"):
        open_source(f)


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty\b.*dataset is empty|the dataset is empty"):
        open_source(tmp_path / "empty")


def test_columns_refused_for_folders(folder):
    with pytest.raises(InvalidParameterError, match="'image_column' parameter .* Hugging"):
        open_source(folder[0], image_column="img")


# ----------------------------------------------------------------------------- bad inputs


def _exif_rotated_jpeg(arr: np.ndarray, orientation: int) -> bytes:
    img = Image.fromarray(arr, "RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def test_bad_inputs_are_skipped_with_reasons(tmp_path, rng, caplog, monkeypatch):
    root = tmp_path / "bad"
    good = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    _write(root / "a" / "good.png", _png(good))
    full = _png(rng.integers(0, 256, (30, 30), dtype=np.uint8))
    _write(root / "a" / "truncated.png", full[: len(full) // 2])
    _write(root / "a" / "zero.png", b"")
    _write(root / "a" / "text.jpg", b"this is not an image at all")
    _write(root / "b" / "onepx.png", _png(np.zeros((1, 1), np.uint8)))
    _write(root / "b" / "line.png", _png(np.zeros((1, 30), np.uint8)))
    _write(root / "b" / "big.png", _png(np.zeros((40, 40), np.uint8)))
    # PIL's decompression-bomb limit, lowered so that a 40x40 image exceeds it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with caplog.at_level(logging.WARNING, logger="dcsi.sources"):
        ims = open_source(root)
    assert ims.ids == ["a/good.png"]
    reasons = {s.id: s.reason for s in ims.skipped}
    assert set(reasons) == {
        "a/truncated.png",
        "a/zero.png",
        "a/text.jpg",
        "b/onepx.png",
        "b/line.png",
        "b/big.png",
    }
    assert reasons["a/zero.png"] == "zero-byte file"
    assert reasons["a/text.jpg"].startswith("not an image")
    assert "truncated" in reasons["a/truncated.png"]
    assert reasons["b/onepx.png"].startswith("degenerate 1x1 image")
    assert reasons["b/line.png"].startswith("degenerate 30x1 image")
    assert "decompression-bomb limit" in reasons["b/big.png"]
    assert "MAX_IMAGE_PIXELS" in reasons["b/big.png"]
    assert "skipped 6 of 7 images" in caplog.text
    assert all(isinstance(s, SkippedItem) for s in ims.skipped)
    assert ims.skipped[0].to_dict().keys() == {"id", "reason"}
    np.testing.assert_array_equal(np.asarray(ims.load(0)), good)


def test_all_skipped_is_one_line_error(tmp_path):
    _write(tmp_path / "d" / "a" / "x.png", b"")
    _write(tmp_path / "d" / "a" / "y.png", b"garbage")
    with pytest.raises(
        DataError,
        match=r"all 2 images were skipped \(e.g. a/x.png: "
        r"zero-byte file\)",
    ) as info:
        open_source(tmp_path / "d")
    assert "\n" not in str(info.value)


def test_decode_image_error_message():
    with pytest.raises(DataError, match=r"Cannot use image: zero-byte file\."):
        decode_image(b"")
    with pytest.raises(DataError, match="Cannot use image: not an image"):
        decode_image(b"\x00\x01hello")


def test_mode_conversions_against_reference(rng):
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    alpha = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    # L stays L
    np.testing.assert_array_equal(np.asarray(decode_image(_png(grey))), grey)
    # LA: composited over white, exactly round(l * a + 255 * (1 - a))
    la = np.stack([grey, alpha], axis=-1)
    out = np.asarray(decode_image(_png(la, "LA")))
    a = alpha / 255.0
    np.testing.assert_array_equal(out, np.rint(grey * a + 255 * (1 - a)).astype(np.uint8))
    # RGBA: the same per channel
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1)
    out = np.asarray(decode_image(_png(rgba, "RGBA")))
    ref = np.rint(rgb * a[..., None] + 255 * (1 - a[..., None])).astype(np.uint8)
    np.testing.assert_array_equal(out, ref)
    # P (palette): the palette colours
    pal = Image.fromarray(rgb, "RGB").quantize(colors=16)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    out = decode_image(buf.getvalue())
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(pal.convert("RGB")))
    # CMYK (JPEG) -> RGB
    cmyk = Image.fromarray(rgb, "RGB").convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, format="TIFF")
    out = decode_image(buf.getvalue())
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(cmyk.convert("RGB")))


def test_16_bit_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 6 * 8).astype(np.uint16).reshape(6, 8)
    img = Image.fromarray(ramp)  # mode I;16
    assert img.mode.startswith("I;16")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out = np.asarray(decode_image(buf.getvalue()))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.rint(ramp / 257.0).astype(np.uint8))
    assert out.max() == 255 and out.min() == 0
    assert len(np.unique(out)) > 40  # a ramp, not a clipped block of 255s


def test_exif_rotation_applied(rng):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    data = _exif_rotated_jpeg(arr, 6)  # 6: rotate 90 degrees clockwise to display
    img = decode_image(data)
    assert img.size == (20, 40)  # (w, h) after rotation
    out = np.asarray(img.convert("L")).astype(int)
    assert out[:15].mean() > 200 and out[-15:].mean() < 50  # white half is now on top


def test_exif_rotated_size_in_scan(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    _write(tmp_path / "r" / "a" / "x.jpg", _exif_rotated_jpeg(arr, 6))
    ims = open_source(tmp_path / "r")
    assert ims.native_size() == (40, 20)
    assert ims.load(0).size == (20, 40)


# ----------------------------------------------------------------------------- arrays


def test_array_source(rng):
    x = rng.integers(0, 256, (7, 5, 6), dtype=np.uint8)
    ims = open_source(x, labels=[0, 1, 1, 2, 0, 2, 1])
    assert ims.ids == [str(i) for i in range(7)] and ims.classes == ["0", "1", "2"]
    assert ims.kind == "array"
    np.testing.assert_array_equal(np.asarray(ims.load(3)), x[3])
    np.testing.assert_array_equal(ims.to_array(), x)
    rgb = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    ims = open_source(rgb, labels=np.array(["b", "a", "b"]))
    assert ims.classes == ["a", "b"] and ims.labels.tolist() == [1, 0, 1]
    assert ims.load(0).mode == "RGB"
    ims = open_source(rgb, labels=[0, 1, 0], classes=["x", "y"])
    assert ims.classes == ["x", "y"]
    assert open_source(rgb).labels is None


def test_array_errors(rng):
    with pytest.raises(InvalidParameterError, match="must have dtype uint8"):
        open_source(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(InvalidParameterError, match=r"shape \(n, h, w\) or \(n, h, w, c\)"):
        open_source(np.zeros((2, 4), np.uint8))
    with pytest.raises(DataError, match="The image array is empty"):
        open_source(np.zeros((0, 4, 4), np.uint8))
    with pytest.raises(InvalidParameterError, match="1-D array of length 2"):
        open_source(np.zeros((2, 4, 4), np.uint8), labels=[0, 1, 2])
    with pytest.raises(InvalidParameterError, match="class ids >= 0"):
        open_source(np.zeros((2, 4, 4), np.uint8), labels=[0, -1])
    with pytest.raises(InvalidParameterError, match="names 1 classes but the labels go up"):
        open_source(np.zeros((2, 4, 4), np.uint8), labels=[0, 1], classes=["a"])
    with pytest.raises(
        InvalidParameterError,
        match="'labels' parameter of open_source is only for in-memory arrays",
    ):
        open_source("sample:digits", labels=[0])
    with pytest.raises(InvalidParameterError, match="'source' parameter of open_source must"):
        open_source(42)
    with pytest.raises(DataError, match="at least 2x2"):
        open_source(np.zeros((2, 1, 1), np.uint8))


def test_sample_digits_and_imageset_passthrough():
    ims = open_source("sample:digits")
    assert len(ims) == 1797 and ims.classes == [str(i) for i in range(10)]
    assert ims.native_size() == (8, 8) and ims.source == "sample:digits"
    assert open_source(ims) is ims
    with pytest.raises(InvalidParameterError, match="Unknown sample dataset 'nope'"):
        open_source("sample:nope")


def test_max_per_class_is_seeded_and_ordered(rng):
    x = rng.integers(0, 256, (30, 4, 4), dtype=np.uint8)
    labels = np.repeat([0, 1, 2], 10)
    a = open_source(x, labels=labels, max_per_class=3, seed=1)
    b = open_source(x, labels=labels, max_per_class=3, seed=1)
    assert a.ids == b.ids and a.class_counts() == [3, 3, 3]
    assert [int(i) for i in a.ids] == sorted(int(i) for i in a.ids)
    with pytest.raises(InvalidParameterError, match="'max_per_class' parameter"):
        open_source(x, max_per_class=0)


def test_iter_arrays_against_per_image_reference(folder):
    root, arrays = folder
    ims = open_source(root)
    got = ims.to_array(size=(6, 9), mode="RGB")
    assert got.shape == (12, 6, 9, 3)
    for i, rid in enumerate(ims.ids):
        ref = Image.fromarray(arrays[rid]).convert("RGB").resize((9, 6), Image.BILINEAR)
        np.testing.assert_array_equal(got[i], np.asarray(ref))
    batches = list(ims.iter_arrays(size=5, batch_size=5, indices=[3, 1, 7]))
    assert len(batches) == 1 and batches[0][0].tolist() == [3, 1, 7]
    assert batches[0][1].shape == (3, 5, 5)
    with pytest.raises(InvalidParameterError, match="'mode' parameter of iter_arrays"):
        next(ims.iter_arrays(mode="CMYK"))
    # the in-memory fast path equals the generic one
    x = np.stack(list(arrays.values()))
    arr = open_source(x)
    np.testing.assert_array_equal(arr.to_array(mode="RGB"), np.repeat(x[..., None], 3, -1))


def test_subset(folder):
    ims = open_source(folder[0])
    sub = ims.subset([5, 0, 11])
    assert sub.ids == [ims.ids[5], ims.ids[0], ims.ids[11]]
    assert sub.labels.tolist() == [1, 0, 2]
    assert sub.content_hash(1) == ims.content_hash(0)
    np.testing.assert_array_equal(np.asarray(sub.load(2)), np.asarray(ims.load(11)))
    with pytest.raises(IndexError):
        ims.subset([12])


# ----------------------------------------------------------------------------- HF datasets


def _hf_dataset(rng, n=6, with_label=True):
    datasets = pytest.importorskip("datasets")

    imgs = [Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(n)]
    data = {"img": imgs, "caption": [f"c{i}" for i in range(n)]}
    feats = {"img": datasets.Image(), "caption": datasets.Value("string")}
    if with_label:
        data["fine"] = [i % 3 for i in range(n)]
        feats["fine"] = datasets.ClassLabel(names=["x", "y", "z"])
    return datasets.Dataset.from_dict(data, features=datasets.Features(feats)), imgs


def test_saved_hf_dataset(tmp_path, rng):
    ds, imgs = _hf_dataset(rng)
    ds.save_to_disk(str(tmp_path / "saved"))
    ims = open_source(tmp_path / "saved")
    assert len(ims) == 6 and ims.classes == ["x", "y", "z"]
    assert ims.labels.tolist() == [0, 1, 2, 0, 1, 2] and ims.ids[:2] == ["0", "1"]
    for i in range(6):
        np.testing.assert_array_equal(np.asarray(ims.load(i)), np.asarray(imgs[i]))
    with pytest.raises(DataError, match=r"no column 'image' \(columns: img \(Image\)"):
        open_source(tmp_path / "saved", image_column="image")
    with pytest.raises(DataError, match="column 'caption' is Value, not an Image column"):
        open_source(tmp_path / "saved", image_column="caption")
    with pytest.raises(DataError, match="no column 'lbl'"):
        open_source(tmp_path / "saved", label_column="lbl")
    # a string column as labels: sorted names
    ims = open_source(tmp_path / "saved", label_column="caption")
    assert ims.classes == [f"c{i}" for i in range(6)]


def test_saved_hf_dataset_dict_and_unlabelled(tmp_path, rng):
    datasets = pytest.importorskip("datasets")

    ds, _ = _hf_dataset(rng, with_label=False)
    datasets.DatasetDict({"train": ds, "test": ds.select([0, 1])}).save_to_disk(
        str(tmp_path / "dd")
    )
    ims = open_source(tmp_path / "dd")
    assert ims.split == "train" and len(ims) == 6 and ims.labels is None
    assert len(open_source(tmp_path / "dd", split="test")) == 2
    with pytest.raises(DataError, match="no split 'dev'; available splits: train, test"):
        open_source(tmp_path / "dd", split="dev")


def test_hf_without_image_column(tmp_path):
    datasets = pytest.importorskip("datasets")

    datasets.Dataset.from_dict({"a": [1, 2]}).save_to_disk(str(tmp_path / "noimg"))
    with pytest.raises(
        DataError,
        match=r"no image column \(columns: a \(Value\)\); name it "
        "with --image-column",
    ):
        open_source(tmp_path / "noimg")


def test_hf_hub_id_through_load_dataset(monkeypatch, rng):
    datasets = pytest.importorskip("datasets")

    ds, _ = _hf_dataset(rng)
    calls = []

    def fake_load_dataset(repo, config=None):
        calls.append((repo, config))
        if repo == "missing/repo":
            raise FileNotFoundError("Couldn't find a dataset script")
        return datasets.DatasetDict({"train": ds})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ims = open_source("hf:user/repo:cfg")
    assert calls == [("user/repo", "cfg")]
    assert len(ims) == 6 and ims.name == "user/repo:cfg" and ims.source == "hf:user/repo:cfg"
    with pytest.raises(
        DataError,
        match=r"hf:missing/repo: datasets.load_dataset\('missing/"
        r"repo'\) failed: FileNotFoundError.*HF_DATASETS_OFFLINE",
    ):
        open_source("hf:missing/repo")
    with pytest.raises(InvalidParameterError, match="must name a dataset after 'hf:'"):
        open_source("hf:")


def test_hf_bad_rows_are_skipped(tmp_path, rng):
    datasets = pytest.importorskip("datasets")

    good = _png(rng.integers(0, 256, (8, 8), dtype=np.uint8))
    ds = datasets.Dataset.from_dict(
        {
            "image": [
                {"bytes": good, "path": None},
                {"bytes": b"", "path": None},
                {"bytes": good[:40], "path": None},
            ],
            "label": [0, 1, 1],
        },
        features=datasets.Features(
            {"image": datasets.Image(decode=False), "label": datasets.Value("int64")}
        ),
    )
    ds = ds.cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "bad"))
    ims = open_source(tmp_path / "bad")
    assert ims.ids == ["0"] and ims.classes == ["0"]
    assert ims.dropped_classes == ["1"]  # its rows were all skipped
    assert [s.id for s in ims.skipped] == ["1", "2"]
    assert ims.skipped[0].reason == "zero-byte file"
