"""The Ray engine: the same card bytes as the local engine, and clear errors."""

from __future__ import annotations

import json
import socket
import sys

import numpy as np
import pytest

from dcsi.cli import main
from dcsi.exceptions import EngineError, InvalidParameterError, MissingDependencyError
from dcsi.ray_engine import check_engine, ray_session

#: The only keys two identical runs may differ in: wall-clock timestamps.
TIMESTAMPS = ("created", "finished")


def _bytes(card: dict) -> str:
    card = json.loads(json.dumps(card))
    for key in TIMESTAMPS:
        card["provenance"].pop(key, None)
    return json.dumps(card, sort_keys=True)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- errors


def test_unknown_engine():
    with pytest.raises(InvalidParameterError, match="'engine' parameter of analyze must be"):
        check_engine("spark", None)


def test_address_without_ray_engine():
    with pytest.raises(InvalidParameterError, match="applies to engine='ray'"):
        check_engine("local", "10.0.0.5:6379")


def test_ray_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'dcsi\[ray\]'"):
        check_engine("ray", None)


def test_unreachable_address_fails_fast():
    pytest.importorskip("ray")
    address = f"127.0.0.1:{_closed_port()}"
    match = f"Cannot reach a Ray cluster at {address}"
    with pytest.raises(EngineError, match=match), ray_session(address):
        pass


def test_malformed_address():
    pytest.importorskip("ray")
    with pytest.raises(InvalidParameterError, match="is not HOST:PORT"), ray_session("no-port"):
        pass


def test_cli_unreachable_address_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    port = _closed_port()
    rc = main(
        [
            "analyze",
            "sample:digits",
            "--out",
            str(tmp_path / "out"),
            "--engine",
            "ray",
            "--ray-address",
            f"127.0.0.1:{port}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "Cannot reach a Ray cluster" in err and "ray start --head" in err
    assert not (tmp_path / "out" / "dcsi.json").exists()


def test_cli_address_needs_ray_engine(tmp_path, capsys):
    rc = main(["analyze", "sample:digits", "--out", str(tmp_path), "--ray-address", "auto"])
    assert rc == 1 and "applies to engine='ray'" in capsys.readouterr().err


def test_cli_unknown_engine(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "sample:digits", "--out", str(tmp_path), "--engine", "spark"])
    assert exc.value.code == 2 and "invalid choice: 'spark'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- runner contract


class _Mean:
    """A tiny extractor: per-channel means and the image's row sums (no torch model)."""

    name = "mean"
    image_size = 8

    def transform(self, img):
        import torch

        a = np.asarray(img.convert("RGB").resize((8, 8)), dtype=np.float32) / 255.0
        return torch.from_numpy(a.transpose(2, 0, 1).copy())

    def __call__(self, batch):
        return batch.mean(dim=(2,)).flatten(1)


def test_batches_in_any_order_land_in_source_order(rng):
    """What a runner yields is placed by position: features and arrays come out in the
    source's order whatever order the batches arrive in."""
    pytest.importorskip("torch")
    from dcsi.features import extract_features

    images = rng.integers(0, 256, (50, 8, 8), dtype=np.uint8)
    labels = np.arange(50) % 3
    ref = extract_features(images, labels=labels, backbone=_Mean(), cache=False, batch_size=8)

    def reversed_batches(image_set, todo, extractor, *, batch_size, arrays):
        import torch

        out = []
        for s in range(0, len(todo), batch_size):
            part = todo[s : s + batch_size]
            imgs = [image_set.load(int(i)) for i in part]
            x = torch.stack([extractor.transform(im) for im in imgs])
            side = np.stack([np.asarray(im.convert("L")) for im in imgs])
            out.append((part, extractor(x), side if arrays else None))
        yield from reversed(out)

    fs = extract_features(
        images,
        labels=labels,
        backbone=_Mean(),
        cache=False,
        batch_size=8,
        runner=reversed_batches,
        arrays=((8, 8), "L"),
    )
    assert fs.features.tobytes() == ref.features.tobytes()
    np.testing.assert_array_equal(fs.arrays, images)


# ----------------------------------------------------------------------------- same bytes


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs, shared by the tests below (analyze reuses it)."""
    pytest.importorskip("ray.data")
    pytest.importorskip("torch")
    with ray_session(num_cpus=2) as ray:
        yield ray


def test_digits_card_same_bytes_as_local(local_ray):
    import dcsi

    kw = {"analyzers": "cnn", "max_per_class": 8, "cache": False}
    local = dcsi.analyze("sample:digits", engine="local", **kw)
    distributed = dcsi.analyze("sample:digits", engine="ray", **kw)
    assert _bytes(distributed.to_dict()) == _bytes(local.to_dict())


def test_folder_card_same_bytes_through_cli(local_ray, tmp_path, rng, capsys):
    """An image folder (files read by the actors) through ``--engine ray``, with the
    feature cache on (the driver writes the actors' rows to it)."""
    from PIL import Image

    root = tmp_path / "data"
    for c, base in (("cats", 60), ("dogs", 180)):
        (root / c).mkdir(parents=True)
        for i in range(6):
            img = np.clip(base + rng.normal(0, 25, (20, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.png")
    texts = {}
    for engine in ("ray", "local"):
        out = tmp_path / "out"  # one folder: the command line is in the provenance
        args = ["analyze", str(root), "--out", str(out), "--no-progress", "--batch-size", "4"]
        args += ["--analyzers", "cnn"]
        args += ["--cache", str(tmp_path / f"cache-{engine}"), "--engine", engine]
        assert main(args) == 0, capsys.readouterr().err
        card = json.loads((out / "dcsi.json").read_text(encoding="utf-8"))
        texts[engine] = _bytes(card)
    assert texts["ray"] == texts["local"]
    shards = list((tmp_path / "cache-ray").glob("features/*/shard-*.feats.npy"))
    assert shards  # the driver stored what the actors computed


@pytest.mark.slow
def test_saved_hf_dataset_same_features(local_ray, tmp_path, rng):
    """A saved Hugging Face dataset: the actors read its Arrow files (slow: one more
    actor start, about 15 s on a busy 2-core machine)."""
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    from dcsi.features import choose_num_threads, extract_features
    from dcsi.ray_engine import feature_runner
    from dcsi.sources import open_source

    imgs = [Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)) for _ in range(10)]
    ds = datasets.Dataset.from_dict(
        {"image": imgs, "label": [i % 2 for i in range(10)]},
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}
        ),
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    images = open_source(tmp_path / "saved")
    threads = choose_num_threads()
    kw = {"cache": False, "batch_size": 4, "num_threads": threads, "arrays": (None, "L")}
    ref = extract_features(images, **kw)
    runner = feature_runner(
        "ray",
        backbone="efficientnet_lite0",
        weights=None,
        pooling="gap",
        threads=threads,
        device="auto",
    )
    fs = extract_features(images, runner=runner, **kw)
    assert fs.features.tobytes() == ref.features.tobytes()
    assert fs.arrays.tobytes() == ref.arrays.tobytes()


def test_actor_error_reaches_the_driver_as_itself(local_ray, tmp_path, rng):
    """An image spoilt after the source was opened: the actor's DataError is raised on
    the driver with its own message, not as a Ray traceback."""
    from PIL import Image

    from dcsi.exceptions import DataError
    from dcsi.features import extract_features
    from dcsi.ray_engine import feature_runner
    from dcsi.sources import open_source

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            img = rng.integers(0, 256, (10, 10), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / c / f"{i}.png")
    images = open_source(tmp_path)
    (tmp_path / "a" / "1.png").write_bytes(b"not a png any more")
    runner = feature_runner(
        "ray", backbone="efficientnet_lite0", weights=None, pooling="gap", threads=1, device="cpu"
    )
    with pytest.raises(DataError, match=r"^Cannot read .*1\.png: not an image"):
        extract_features(images, runner=runner, cache=False)


@pytest.mark.slow
def test_full_digits_card_same_bytes_as_local(local_ray):
    """The must-show: every analyzer on all 1,797 digits (about 4 minutes here)."""
    import dcsi

    local = dcsi.analyze("sample:digits", engine="local", cache=False)
    distributed = dcsi.analyze("sample:digits", engine="ray", cache=False)
    assert _bytes(distributed.to_dict()) == _bytes(local.to_dict())


# ----------------------------------------------------------------------------- per-block statistics


def test_covered_block_stats_only_whole_blocks(rng):
    """An item's partials: the blocks all of whose positions it computed, with the
    arithmetic of class_stats on those rows (no Ray needed)."""
    from dcsi.ray_engine import BlockTask, covered_block_stats
    from dcsi.similarity.class_cosine import block_stats

    x = rng.standard_normal((23, 6)).astype(np.float32)
    y = rng.integers(0, 3, 23)
    task = BlockTask(y, 3, 5)
    pos = np.array([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 20, 21, 22])  # 0-2, 15-19 cached
    found = covered_block_stats(pos, x[pos], task, 23)
    assert sorted(found) == [1, 2, 4]  # 5-9, 10-14 and the short last block 20-22
    ref = block_stats(x[20:23], y[20:23], 3)
    assert found[4].sums.tobytes() == ref.sums.tobytes()
    assert found[4].counts.tolist() == np.bincount(y[20:23], minlength=3).tolist()


def _several_blocks(monkeypatch):
    """Statistics blocks of 16 rows (two feature batches of 8): a small set spans several."""
    from dcsi.similarity import class_cosine

    monkeypatch.setattr(class_cosine, "STATS_BLOCK_ROWS", 16)


def test_runner_partials_merge_bit_for_bit(local_ray, monkeypatch, tmp_path):
    """The actors' block statistics, merged on the driver with the blocks they did not
    cover (a partially warm cache), equal class_stats on the features bit for bit."""
    from dcsi.features import extract_features
    from dcsi.ray_engine import BlockTask, feature_runner
    from dcsi.samples import load_sample
    from dcsi.similarity.class_cosine import class_stats, stats_block_rows
    from dcsi.similarity.wavelet import wavelet_coefficients

    _several_blocks(monkeypatch)
    sample = load_sample("digits")
    images, y = sample.images[:70], sample.labels[:70]
    kw = {"labels": y, "batch_size": 8, "num_threads": 1, "cache": tmp_path}
    extract_features(images[20:30], **{**kw, "labels": y[20:30]})  # warms rows 20-29
    rows = stats_block_rows(8)
    task = BlockTask(np.asarray(y), 10, rows, wavelet=("db1", 1, "symmetric"))
    runner = feature_runner(
        "ray",
        backbone="efficientnet_lite0",
        weights=None,
        pooling="gap",
        threads=1,
        device="cpu",
        blocks=task,
    )
    fs = extract_features(images, runner=runner, arrays=(None, "L"), **kw)
    assert rows == 16 and fs.n_cached == 10
    # items of 16 computed rows: 0-15 (block 0) and 58-69 (block 4, 64-69) hold whole
    # blocks; block 1 lost rows 20-29 to the cache, the others are split between items
    assert 0 in runner.partials and 4 in runner.partials and 1 not in runner.partials
    whole = class_stats(fs.features, y, 10, block_rows=rows)
    merged = class_stats(fs.features, y, 10, block_rows=rows, partials=runner.partials)
    for name in ("sums", "counts", "raw_sums", "sq_norms"):
        assert getattr(merged, name).tobytes() == getattr(whole, name).tobytes(), name
    # the actors' wavelet coefficient rows (60 images) and the driver's (the 10 cached)
    assert sum(len(p) for p, _ in runner.coefficient_rows) == 60
    W = runner.coefficients(fs.arrays)
    assert W.tobytes() == wavelet_coefficients(fs.arrays).tobytes()


def test_card_over_several_blocks_same_bytes_as_local(local_ray, monkeypatch):
    """Several statistics blocks, each computed by an actor and merged on the driver;
    the actors' wavelet rows feed the wavelet class matrix and the near-duplicate
    search, whose query blocks run as Ray tasks."""
    import dcsi

    _several_blocks(monkeypatch)
    kw = {"analyzers": "cnn,wavelet", "max_per_class": 6, "cache": False, "batch_size": 8}
    local = dcsi.analyze("sample:digits", engine="local", **kw)
    distributed = dcsi.analyze("sample:digits", engine="ray", **kw)
    assert _bytes(distributed.to_dict()) == _bytes(local.to_dict())


# ----------------------------------------------------------------------------- candidate pairs


def test_ray_map_candidate_pairs_equal_local(local_ray, rng):
    """The exact search's query blocks as Ray tasks: the local pairs and distances."""
    from dcsi.neighbors import radius_pairs, unit_rows
    from dcsi.ray_engine import ray_map

    x = rng.standard_normal((400, 30))
    x[350:] = x[:50] + 0.01 * rng.standard_normal((50, 30))
    x = unit_rows(x).astype(np.float32)
    kw = {"threshold": 0.01, "block_size": 64, "n_components": 8}
    ref_pairs, ref_dist = radius_pairs(x, **kw)
    pairs, dist = radius_pairs(x, map_blocks=ray_map, **kw)
    assert len(ref_pairs) >= 50
    np.testing.assert_array_equal(pairs, ref_pairs)
    assert dist.tobytes() == ref_dist.tobytes()
    cross, _ = radius_pairs(x[:200], x[200:], map_blocks=ray_map, **kw)
    np.testing.assert_array_equal(cross, radius_pairs(x[:200], x[200:], **kw)[0])


def test_ray_map_aligned_pairs_equal_local(local_ray, rng):
    """The aligned stage's query blocks as Ray tasks (the k-d tree put once)."""
    from test_redundancy import _blob_images, _shift

    from dcsi.aligned import AlignOptions, aligned_pairs
    from dcsi.ray_engine import ray_map

    imgs = _blob_images(rng, 40)
    for t in range(5):
        imgs[20 + t] = _shift(imgs[t], 0, 1)
    options = AlignOptions(block_size=8)
    ref_pairs, ref_dist = aligned_pairs(imgs, options=options)
    pairs, dist = aligned_pairs(imgs, options=options, map_blocks=ray_map)
    assert len(ref_pairs) >= 5
    np.testing.assert_array_equal(pairs, ref_pairs)
    assert dist.tobytes() == ref_dist.tobytes()


# ----------------------------------------------------------------------------- Parquet, ONNX


def _parquet_source(tmp_path, rng):
    """A Parquet file of 12 RGBA, RGB and grey PNGs of mixed sizes, 3 rows a row group."""
    from test_sources_parquet import mixed_images, write_hf_parquet

    path = tmp_path / "data" / "train.parquet"
    labels = [k % 2 for k in range(12)]
    write_hf_parquet(path, mixed_images(rng, 12), labels, ["a", "b"], row_group_size=3)
    return path


def test_parquet_card_same_bytes_through_cli(local_ray, tmp_path, rng, capsys):
    """The actors read their rows from the Parquet file (by row group), not from arrays
    shipped by the driver: the card is the local engine's, byte for byte."""
    path = _parquet_source(tmp_path, rng)
    texts = {}
    for engine in ("ray", "local"):
        out = tmp_path / "out"
        args = ["analyze", str(path), "--out", str(out), "--no-progress", "--batch-size", "5"]
        args += ["--analyzers", "cnn,wavelet", "--no-cache", "--engine", engine]
        assert main(args) == 0, capsys.readouterr().err
        card = json.loads((out / "dcsi.json").read_text(encoding="utf-8"))
        texts[engine] = _bytes(card)
    assert texts["ray"] == texts["local"]
    assert json.loads(texts["ray"])["dataset"]["n_images"] == 12


def test_check_storage_names_the_missing_path(tmp_path, rng):
    from dcsi.ray_engine import check_storage
    from dcsi.sources import open_source

    path = _parquet_source(tmp_path, rng)
    images = open_source(path)
    check_storage(images)
    check_storage(open_source(np.zeros((3, 4, 4), np.uint8)))  # in memory: nothing to see
    path.rename(tmp_path / "moved.parquet")
    with pytest.raises(EngineError, match=r"cannot see .*train\.parquet, where the images"):
        check_storage(images)


def test_actor_that_cannot_see_the_source_fails_in_one_line(local_ray, tmp_path, rng):
    """A node without the driver's storage (here: the file moved once the source was
    opened) stops the run at the actor's start, with the EngineError itself."""
    from dcsi.features import extract_features
    from dcsi.ray_engine import feature_runner
    from dcsi.sources import open_source

    path = _parquet_source(tmp_path, rng)
    images = open_source(path)
    path.rename(tmp_path / "moved.parquet")
    runner = feature_runner(
        "ray", backbone="efficientnet_lite0", weights=None, pooling="gap", threads=1, device="cpu"
    )
    with pytest.raises(EngineError, match=r"^The Ray node .* cannot see .*train\.parquet"):
        extract_features(images, runner=runner, cache=False)


def test_onnx_runtime_card_same_bytes_as_local(local_ray, tmp_path):
    """runtime="onnx": each actor exports the backbone and runs ONNX Runtime with the
    driver's thread count, as the local engine does."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import dcsi

    kw = {"analyzers": "cnn", "max_per_class": 8, "runtime": "onnx", "cache": tmp_path}
    local = dcsi.analyze("sample:digits", engine="local", **kw)
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
    distributed = dcsi.analyze("sample:digits", engine="ray", **{**kw, "cache": False})
    assert distributed.to_dict()["provenance"]["parameters"]["runtime"] == "onnx"
    assert _bytes(distributed.to_dict()) == _bytes(local.to_dict())


def test_source_looked_up_on_every_node_before_it_is_read(local_ray, tmp_path, rng):
    """With --ray-address, a path source is looked up on each node (here the one local
    node, which sees it) before the driver hashes the images."""
    from dcsi.ray_engine import check_source_on_nodes

    path = _parquet_source(tmp_path, rng)
    check_source_on_nodes(str(path), "auto")
    check_source_on_nodes("hf:nothing-to-check", "auto")


def test_node_without_the_source_refused_before_reading(monkeypatch, tmp_path):
    """A cluster whose nodes lack the path: one EngineError naming them, before
    open_source (which would hash every image) is reached."""
    import dcsi
    import dcsi.ray_engine
    import dcsi.sources

    pytest.importorskip("ray")
    monkeypatch.setattr(dcsi.ray_engine, "_nodes_missing", lambda path: ["10.0.0.7"])
    monkeypatch.setattr(dcsi.ray_engine, "ray_session", lambda *a, **k: _null())
    opened = []
    monkeypatch.setattr(dcsi.sources, "open_source", lambda *a, **k: opened.append(a))
    match = rf"1 node\(s\) of the Ray cluster at 10.0.0.5:6379 cannot see {tmp_path} \(10.0.0.7\)"
    with pytest.raises(EngineError, match=match):
        dcsi.analyze(str(tmp_path), engine="ray", ray_address="10.0.0.5:6379", cache=False)
    assert not opened
    check = dcsi.ray_engine.check_source_on_nodes
    check(str(tmp_path), None)  # a local Ray: same machine, nothing to check


def test_cli_node_without_the_source_one_line(monkeypatch, tmp_path, capsys):
    """The command line checks the nodes too, before the source is opened: one line."""
    import dcsi.ray_engine
    import dcsi.sources

    pytest.importorskip("ray")
    monkeypatch.setattr(dcsi.ray_engine, "_nodes_missing", lambda path: ["10.0.0.7"])
    monkeypatch.setattr(dcsi.ray_engine, "ray_session", lambda *a, **k: _null())
    opened = []
    monkeypatch.setattr(dcsi.sources, "open_source", lambda *a, **k: opened.append(a))
    data = tmp_path / "data"
    data.mkdir()
    rc = main(
        [
            "analyze",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--engine",
            "ray",
            "--ray-address",
            "10.0.0.5:6379",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and not opened
    assert len(err.splitlines()) == 1
    assert f"1 node(s) of the Ray cluster at 10.0.0.5:6379 cannot see {data} (10.0.0.7)" in err


def _null():
    import contextlib

    return contextlib.nullcontext()
