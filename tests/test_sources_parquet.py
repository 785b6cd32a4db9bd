"""Parquet sources of dcsi.sources: a .parquet file or a folder of them, read by position."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from dcsi.exceptions import DataError
from dcsi.sources import open_source

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def mixed_images(rng: np.random.Generator, n: int) -> list[bytes]:
    """PNGs of mixed sizes and modes: grey, RGB and RGBA (with transparent pixels)."""
    out = []
    for k in range(n):
        h, w = 10 + 3 * (k % 4), 12 + 2 * (k % 3)
        if k % 3 == 0:
            out.append(_png(rng.integers(0, 256, (h, w), dtype=np.uint8)))
        elif k % 3 == 1:
            out.append(_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
        else:
            out.append(_png(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA"))
    return out


def write_hf_parquet(path, images: list[bytes], labels: list[int], names, row_group_size=4):
    """A Parquet file as ``datasets``' ``to_parquet`` writes it: an Image struct column
    and a ClassLabel column declared in the ``huggingface`` schema metadata."""
    import json

    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": b, "path": None} for b in images],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "label": pa.array(labels, pa.int64()),
        }
    )
    meta = {
        "info": {
            "features": {
                "image": {"_type": "Image"},
                "label": {"names": list(names), "_type": "ClassLabel"},
            }
        }
    }
    table = table.replace_schema_metadata({"huggingface": json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)


def test_file_and_folder_of_files(tmp_path, rng):
    images = mixed_images(rng, 14)
    labels = [k % 3 for k in range(14)]
    write_hf_parquet(tmp_path / "d" / "train-00000-of-00002.parquet", images[:9], labels[:9], "abc")
    write_hf_parquet(tmp_path / "d" / "train-00001-of-00002.parquet", images[9:], labels[9:], "abc")
    ims = open_source(tmp_path / "d")
    assert len(ims) == 14 and ims.classes == ["a", "b", "c"] and ims.split == "train"
    assert ims.labels.tolist() == labels and ims.ids == [str(k) for k in range(14)]
    for k in (0, 5, 8, 9, 13, 2):  # across row groups and files, in any order
        want = Image.open(io.BytesIO(images[k]))
        assert ims.load(k).size == want.size
    one = open_source(tmp_path / "d" / "train-00000-of-00002.parquet")
    assert len(one) == 9 and one.name == "train-00000-of-00002"
    assert one.fingerprint() != ims.fingerprint()


def test_same_images_and_fingerprint_as_a_saved_hf_dataset(tmp_path, rng):
    datasets = pytest.importorskip("datasets")
    images = mixed_images(rng, 9)
    labels = [k % 2 for k in range(9)]
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in images], "label": labels},
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])}
        ),
    )
    ds.to_parquet(str(tmp_path / "data.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    got, ref = open_source(tmp_path / "data.parquet"), open_source(tmp_path / "saved")
    assert got.fingerprint() == ref.fingerprint() and got.classes == ref.classes == ["x", "y"]
    for k in range(9):
        assert got.load(k).tobytes() == ref.load(k).tobytes()
    np.testing.assert_array_equal(got.to_array(size=8), ref.to_array(size=8))


def test_plain_binary_column_and_string_labels(tmp_path, rng):
    images = mixed_images(rng, 6)
    table = pa.table({"png": pa.array(images, pa.binary()), "class": ["dog", "cat"] * 3})
    pq.write_table(table, tmp_path / "x.parquet")
    ims = open_source(tmp_path / "x.parquet", max_per_class=2)
    assert ims.classes == ["cat", "dog"] and ims.class_counts() == [2, 2]


def test_splits_from_file_names(tmp_path, rng):
    images = mixed_images(rng, 4)
    for split in ("train", "test"):
        write_hf_parquet(tmp_path / "data" / f"{split}-0.parquet", images, [0, 1, 0, 1], "ab")
    assert open_source(tmp_path).split == "train"
    assert open_source(tmp_path, split="test").split == "test"
    with pytest.raises(DataError, match="has no split 'dev'; available splits: test, train"):
        open_source(tmp_path, split="dev")
    write_hf_parquet(tmp_path / "plain" / "part.parquet", images, [0, 1, 0, 1], "ab")
    with pytest.raises(DataError, match="no Parquet file is named after a split"):
        open_source(tmp_path / "plain", split="train")


def test_unreadable_rows_are_skipped_like_hf_rows(tmp_path, rng):
    images = mixed_images(rng, 4)
    images[1] = b"not an image"
    cells = [{"bytes": b, "path": None} for b in images] + [None]
    table = pa.table({"image": cells, "label": [0, 1, 0, 1, 1]})
    pq.write_table(table, tmp_path / "x.parquet")
    ims = open_source(tmp_path / "x.parquet")
    assert ims.ids == ["0", "2", "3"]
    assert [s.reason.split(" (")[0] for s in ims.skipped] == ["not an image", "missing image"]


def test_column_errors(tmp_path, rng):
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"no image column \(columns: a \(int64\)\)"):
        open_source(tmp_path / "n.parquet")
    table = pa.table({"image": mixed_images(rng, 2), "label": [0, 1]})
    pq.write_table(table, tmp_path / "i.parquet")
    with pytest.raises(DataError, match="column 'label' is int64, not encoded images"):
        open_source(tmp_path / "i.parquet", image_column="label")
    with pytest.raises(DataError, match="no column 'lbl'"):
        open_source(tmp_path / "i.parquet", label_column="lbl")


def test_files_of_different_tables_refused(tmp_path, rng):
    (tmp_path / "d").mkdir()
    pq.write_table(pa.table({"image": mixed_images(rng, 2)}), tmp_path / "d" / "a.parquet")
    pq.write_table(pa.table({"img": mixed_images(rng, 2)}), tmp_path / "d" / "b.parquet")
    with pytest.raises(DataError, match="b.parquet has other columns than a.parquet"):
        open_source(tmp_path / "d")


def test_not_a_parquet_file(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 but no more")
    with pytest.raises(DataError, match="bad.parquet: cannot read the Parquet file"):
        open_source(tmp_path / "bad.parquet")


def test_image_folder_with_a_metadata_parquet_stays_an_image_folder(tmp_path, rng):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "0.png").write_bytes(mixed_images(rng, 1)[0])
    pq.write_table(pa.table({"file_name": ["a/0.png"]}), tmp_path / "metadata.parquet")
    assert open_source(tmp_path).classes == ["a", "b"]


def test_reads_one_row_group_and_pickles_without_its_data(tmp_path, rng, monkeypatch):
    """A row is read with its row group only; the pickled set (what a Ray actor gets)
    holds the paths and the layout, not the images."""
    images = mixed_images(rng, 12)
    write_hf_parquet(tmp_path / "x.parquet", images, [0, 1] * 6, "ab", row_group_size=4)
    ims = open_source(tmp_path / "x.parquet")
    read = []
    real = pq.ParquetFile.read_row_group
    monkeypatch.setattr(
        pq.ParquetFile, "read_row_group", lambda f, g, **kw: read.append(g) or real(f, g, **kw)
    )
    ims.load(5), ims.load(6), ims.load(9)
    assert read == [1, 2]
    blob = pickle.dumps(ims)
    assert images[9] not in blob and len(blob) < sum(map(len, images))
    again = pickle.loads(blob)
    assert again.load(5).tobytes() == ims.load(5).tobytes()
    assert again.storage() == [str(tmp_path / "x.parquet")]


def test_path_cells_read_inside_the_folder_only(tmp_path, rng):
    """A cell with a path and no bytes is read relative to the file's folder; a path
    leading out of it is skipped unless follow_symlinks=True."""
    (tmp_path / "d" / "img").mkdir(parents=True)
    inside, outside = mixed_images(rng, 2)
    (tmp_path / "d" / "img" / "0.png").write_bytes(inside)
    (tmp_path / "out.png").write_bytes(outside)
    cells = [{"bytes": None, "path": "img/0.png"}, {"bytes": None, "path": "../out.png"}]
    pq.write_table(pa.table({"image": cells}), tmp_path / "d" / "x.parquet")
    ims = open_source(tmp_path / "d" / "x.parquet")  # the folder holds img/: no Parquet folder
    assert ims.ids == ["0"] and "leads outside the dataset folder" in ims.skipped[0].reason
    assert len(open_source(tmp_path / "d" / "x.parquet", follow_symlinks=True)) == 2


def test_output_folder_inside_a_parquet_folder(tmp_path, rng, capsys):
    """``--out`` inside a folder of Parquet files: the next run still reads the files."""
    from dcsi.cli import main

    write_hf_parquet(tmp_path / "train.parquet", mixed_images(rng, 6), [0, 1] * 3, "ab")
    args = ["redundancy", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress"]
    for _ in range(2):
        assert main(args) == 0, capsys.readouterr().err
    assert open_source(tmp_path).split == "train"
