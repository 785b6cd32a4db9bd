"""Tests of dcsi.features: extraction against a reference, the cache, resumption."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dcsi.exceptions import DataError, InvalidParameterError  # noqa: E402
from dcsi.features import FeatureCache, FeatureSet, choose_num_threads, extract_features  # noqa: E402
from dcsi.sources import open_source  # noqa: E402


class MeanStd:
    """A tiny deterministic extractor: per-channel mean and std of an 8x8 resize.

    Counts the images it is called on; raises after ``fail_after`` batches.
    """

    name = "meanstd"
    weights_sha256 = "0" * 64
    image_size = 8
    cache_key = "meanstd-8"

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.images = 0
        self.fail_after = fail_after

    def transform(self, image):
        from PIL import Image

        arr = np.asarray(image.convert("RGB").resize((8, 8), Image.BILINEAR), np.float32)
        return torch.from_numpy(arr / 255.0).permute(2, 0, 1)

    def __call__(self, batch):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.images += batch.shape[0]
        return torch.cat([batch.mean(dim=(2, 3)), batch.std(dim=(2, 3))], dim=1)


def _reference(images: np.ndarray) -> np.ndarray:
    """The features of MeanStd, one image at a time, in float64."""
    from PIL import Image

    out = []
    for a in images:
        img = Image.fromarray(a).convert("RGB").resize((8, 8), Image.BILINEAR)
        x = np.asarray(img, np.float64) / 255.0
        out.append(np.concatenate([x.mean(axis=(0, 1)), x.std(axis=(0, 1), ddof=1)]))
    return np.asarray(out)


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, (23, 10, 12), dtype=np.uint8)


def test_features_match_reference(images, tmp_path):
    labels = np.arange(23) % 4
    fs = extract_features(
        images, labels=labels, backbone=MeanStd(), batch_size=5, cache=tmp_path / "c"
    )
    assert isinstance(fs, FeatureSet)
    assert fs.features.dtype == np.float32 and fs.features.shape == (23, 6)
    np.testing.assert_allclose(fs.features, _reference(images), rtol=1e-5, atol=1e-6)
    assert fs.labels.tolist() == labels.tolist() and fs.ids == [str(i) for i in range(23)]
    assert fs.classes == ["0", "1", "2", "3"] and len(fs) == 23
    assert fs.to_dict() == {
        "backbone": "meanstd",
        "weights_sha256": "0" * 64,
        "image_size": 8,
        "dim": 6,
        "pooling": "gap",
    }


def test_cache_hit_does_not_call_the_model(images, tmp_path):
    first = extract_features(images, backbone=MeanStd(), cache=tmp_path, batch_size=4)
    ext = MeanStd()
    second = extract_features(images, backbone=ext, cache=tmp_path, batch_size=4)
    assert ext.calls == 0 and second.n_cached == 23
    np.testing.assert_array_equal(second.features, first.features)
    # the shards are plain .npy files, readable without pickle
    shards = sorted((tmp_path / "features").glob("meanstd-*/shard-*.npy"))
    assert shards and all(np.load(p, allow_pickle=False).size for p in shards)
    # a subset (other dataset, same images) also hits
    ext = MeanStd()
    sub = extract_features(images[::3], backbone=ext, cache=tmp_path)
    assert ext.calls == 0
    np.testing.assert_array_equal(sub.features, first.features[::3])


def test_resume_after_interruption_computes_only_the_rest(images, tmp_path):
    # shards of 4 images, batches of 2: interrupted after 5 batches = 10 images: two
    # complete shards (8 images) and, flushed on the interruption, one of 2 images.
    with pytest.raises(KeyboardInterrupt):
        extract_features(
            images, backbone=MeanStd(fail_after=5), cache=tmp_path, batch_size=2, shard_size=4
        )
    store_dirs = list((tmp_path / "features").glob("meanstd-*"))
    assert len(store_dirs) == 1
    assert len(FeatureCache(store_dirs[0]).shards()) == 3
    ext = MeanStd()
    fs = extract_features(images, backbone=ext, cache=tmp_path, batch_size=2, shard_size=4)
    assert ext.images == 23 - 10 and fs.n_cached == 10
    np.testing.assert_allclose(fs.features, _reference(images), rtol=1e-5, atol=1e-6)
    ext = MeanStd()
    extract_features(images, backbone=ext, cache=tmp_path, batch_size=2, shard_size=4)
    assert ext.images == 0


def test_duplicates_computed_once(images, tmp_path):
    dup = np.concatenate([images[:5], images[:5], images[5:7]])
    ext = MeanStd()
    fs = extract_features(dup, backbone=ext, cache=tmp_path)
    assert ext.images == 7
    np.testing.assert_array_equal(fs.features[:5], fs.features[5:10])


def test_cache_false_and_extractor_without_hash(images, tmp_path, monkeypatch):
    monkeypatch.setenv("DCSI_CACHE", str(tmp_path / "env"))
    ext = MeanStd()
    extract_features(images, backbone=ext, cache=False)
    assert not (tmp_path / "env").exists()

    class NoHash(MeanStd):
        weights_sha256 = None

    ext = NoHash()
    fs = extract_features(images, backbone=ext)
    extract_features(images, backbone=ext)
    assert ext.images == 46 and fs.weights_sha256 is None
    assert not (tmp_path / "env").exists()
    # the default cache folder comes from DCSI_CACHE
    extract_features(images, backbone=MeanStd())
    assert list((tmp_path / "env" / "features").glob("meanstd-*/shard-*.keys.npy"))


def test_cache_key_separates_preprocessing(images, tmp_path):
    class Other(MeanStd):
        cache_key = "meanstd-other"

    extract_features(images, backbone=MeanStd(), cache=tmp_path)
    ext = Other()
    extract_features(images, backbone=ext, cache=tmp_path)
    assert ext.images == 23
    assert len(list((tmp_path / "features").glob("meanstd-*"))) == 2


def test_folder_source_with_loader_workers(tmp_path, rng):
    from PIL import Image

    arrays = rng.integers(0, 256, (9, 6, 6, 3), dtype=np.uint8)
    for i, a in enumerate(arrays):
        p = tmp_path / "f" / f"c{i % 2}" / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(p)
    fs0 = extract_features(tmp_path / "f", backbone=MeanStd(), cache=False, num_workers=0)
    fs1 = extract_features(
        tmp_path / "f", backbone=MeanStd(), cache=False, num_workers=1, batch_size=4
    )
    np.testing.assert_array_equal(fs0.features, fs1.features)
    order = [int(Path(i).stem) for i in fs0.ids]
    np.testing.assert_allclose(fs0.features, _reference(arrays[order]), rtol=1e-5, atol=1e-6)


def test_default_backbone_end_to_end(tmp_path):
    """sample:digits through EfficientNet-Lite0: the 8-px rule gives 64 px, and the
    pipeline's features equal the extractor applied by hand."""
    from dcsi.backbones import get_backbone

    ims = open_source("sample:digits", max_per_class=1)
    fs = extract_features(ims, cache=tmp_path, device="cpu")
    assert fs.image_size == 64 and fs.dim == 1280 and fs.features.shape == (10, 1280)
    assert fs.to_dict()["backbone"] == "efficientnet_lite0"
    assert len(fs.to_dict()["weights_sha256"]) == 64
    ext = get_backbone("efficientnet_lite0", image_size=64, device="cpu")
    batch = torch.stack([ext.transform(ims.load(i)) for i in range(len(ims))])
    ref = ext.model(ext.normalize(batch)).numpy()
    np.testing.assert_allclose(fs.features, ref, rtol=1e-4, atol=1e-4)
    cached = extract_features(ims, cache=tmp_path, device="cpu")
    assert cached.n_cached == 10
    np.testing.assert_array_equal(cached.features, fs.features)


def test_parameter_errors(images, monkeypatch):
    with pytest.raises(
        InvalidParameterError,
        match="'batch_size' parameter of extract_features must be an int >= 1",
    ):
        extract_features(images, backbone=MeanStd(), batch_size=0)
    with pytest.raises(
        InvalidParameterError,
        match="'backbone' parameter of extract_features must be a backbone name or an object",
    ):
        extract_features(images, backbone=3)
    with pytest.raises(InvalidParameterError, match="apply to registered backbones"):
        extract_features(images, backbone=MeanStd(), image_size=64)
    with pytest.raises(InvalidParameterError, match="'cache' parameter of extract_features"):
        extract_features(images, backbone=MeanStd(), cache=3)
    with pytest.raises(InvalidParameterError, match="'image_size' parameter of extract_features"):
        extract_features(images, image_size=8)

    class Bad(MeanStd):
        def __call__(self, batch):
            return torch.zeros(batch.shape[0] + 1, 2)

    with pytest.raises(
        DataError,
        match=r"returned features of shape \(6, 2\) for a batch "
        r"of 5 images",
    ):
        extract_features(images, backbone=Bad(), batch_size=5, cache=False)

    class NaN(MeanStd):
        def __call__(self, batch):
            return torch.full((batch.shape[0], 2), float("nan"))

    with pytest.raises(DataError, match="returned NaN or infinite features"):
        extract_features(images, backbone=NaN(), cache=False)
    monkeypatch.setenv("DCSI_NUM_THREADS", "two")
    with pytest.raises(InvalidParameterError, match="DCSI_NUM_THREADS must be a positive"):
        choose_num_threads()


def test_num_threads_restored(images):
    before = torch.get_num_threads()
    extract_features(images, backbone=MeanStd(), cache=False, num_threads=1)
    assert torch.get_num_threads() == before
    assert 1 <= choose_num_threads() <= (os.cpu_count() or 1)


def test_unreadable_cache_shard_is_ignored(images, tmp_path, caplog):
    extract_features(images, backbone=MeanStd(), cache=tmp_path)
    keys = next((tmp_path / "features").glob("meanstd-*/shard-*.keys.npy"))
    keys.write_bytes(b"garbage")
    ext = MeanStd()
    fs = extract_features(images, backbone=ext, cache=tmp_path)
    assert ext.images == 23 and "Ignoring unreadable cache shard" in caplog.text
    np.testing.assert_allclose(fs.features, _reference(images), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cache", ["cold", "warm", "off"])
def test_arrays_come_from_the_same_decode(tmp_path, cache):
    """``arrays=`` equals ``ImageSet.to_array`` for computed, cached and repeated images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "f"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            img = rng.integers(0, 256, (12 + i, 10, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.png")
    Image.open(root / "a" / "0.png").save(root / "b" / "copy.png")  # served once
    ims = open_source(root)
    store = False if cache == "off" else tmp_path / "cache"
    if cache == "warm":
        extract_features(ims, backbone=MeanStd(), cache=store, num_workers=0)
    fs = extract_features(ims, backbone=MeanStd(), cache=store, num_workers=0, arrays=(None, "L"))
    np.testing.assert_array_equal(fs.arrays, ims.to_array(mode="L"))
    assert fs.n_cached == (len(ims) if cache == "warm" else 0)
    rgb = extract_features(ims, backbone=MeanStd(), cache=False, num_workers=0, arrays=(8, "RGB"))
    np.testing.assert_array_equal(rgb.arrays, ims.to_array(size=8, mode="RGB"))


# -- hardening: broken shards are named, dropped and recomputed; Ctrl-C keeps work ---
def _store(tmp_path):
    (store,) = (tmp_path / "features").glob("meanstd-*")
    return store


@pytest.mark.parametrize("damage", ["truncate", "wrong-dim", "rows-vs-keys"])
def test_broken_cache_shard_is_dropped_and_recomputed(images, tmp_path, caplog, damage):
    class WithDim(MeanStd):  # records its dimension in the cache's meta.json
        dim = 6

    extract_features(images, backbone=WithDim(), cache=tmp_path)
    (feats,) = _store(tmp_path).glob("shard-*.feats.npy")
    if damage == "truncate":
        feats.write_bytes(feats.read_bytes()[:200])
    elif damage == "wrong-dim":
        np.save(feats, np.zeros((23, 5), np.float32))
    else:
        np.save(feats, np.zeros((7, 6), np.float32))
    ext = WithDim()
    fs = extract_features(images, backbone=ext, cache=tmp_path)
    assert ext.images == 23
    assert f"Ignoring unreadable cache shard {feats}" in caplog.text
    assert "will be recomputed" in caplog.text
    np.testing.assert_allclose(fs.features, _reference(images), rtol=1e-5, atol=1e-6)
    # the broken shard was removed and replaced by a good one: the next run is cached
    ext = WithDim()
    assert extract_features(images, backbone=ext, cache=tmp_path).n_cached == 23
    assert ext.images == 0


def test_interrupt_in_first_shard_keeps_computed_features(images, tmp_path):
    # before any shard is full (shard_size 2048): nothing was saved before the fix
    with pytest.raises(KeyboardInterrupt):
        extract_features(images, backbone=MeanStd(fail_after=3), cache=tmp_path, batch_size=4)
    ext = MeanStd()
    fs = extract_features(images, backbone=ext, cache=tmp_path, batch_size=4)
    assert fs.n_cached == 12 and ext.images == 23 - 12
    np.testing.assert_allclose(fs.features, _reference(images), rtol=1e-5, atol=1e-6)


def test_thread_count_ignores_load_and_torch_setting(monkeypatch):
    monkeypatch.delenv("DCSI_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        seen = set()
        for ambient, load in ((1, 9.0), (2, 0.0), (1, 0.0)):
            torch.set_num_threads(ambient)
            monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
            seen.add(choose_num_threads())
    finally:
        torch.set_num_threads(before)
    assert len(seen) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3,1")
    assert choose_num_threads() == 3
    monkeypatch.setenv("DCSI_NUM_THREADS", "2")
    assert choose_num_threads() == 2


def test_same_bytes_whatever_the_load_and_torch_threads(monkeypatch):
    """EfficientNet-Lite0 on a few tiny images: the card blocks built from the features
    are byte-identical whether torch was set to 1 or 2 threads and the machine idle or
    busy (before, the thread count followed the load and the bytes changed)."""
    from dcsi.card import card_to_json
    from dcsi.similarity.class_cosine import class_similarity

    monkeypatch.delenv("DCSI_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    ims = np.random.default_rng(0).integers(0, 256, (8, 20, 20, 3), dtype=np.uint8)
    labels = np.arange(8) % 2
    texts = []
    before = torch.get_num_threads()
    try:
        for ambient, load in ((1, 9.0), (2, 0.0)):
            torch.set_num_threads(ambient)
            monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
            fs = extract_features(ims, labels=labels, cache=False, device="cpu")
            sums = np.stack([fs.features[labels == c].astype(np.float64).sum(0) for c in (0, 1)])
            block = {
                "features": fs.features,
                "class_sums": sums,
                "cnn_cosine": class_similarity(fs.features, labels),
            }
            texts.append(card_to_json({k: np.asarray(v).tolist() for k, v in block.items()}))
    finally:
        torch.set_num_threads(before)
    assert texts[0] == texts[1]


def test_unwritable_cache_falls_back_to_no_cache(images, tmp_path, monkeypatch, caplog):
    import dcsi.features

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dcsi.features.tempfile, "NamedTemporaryFile", refuse)
    with caplog.at_level("WARNING", logger="dcsi.features"):
        fs = extract_features(images, backbone=MeanStd(), cache=tmp_path / "c", num_workers=0)
    assert fs.features.shape[0] == len(images) and fs.n_cached == 0
    assert any("cannot be written" in r.getMessage() for r in caplog.records)
    assert not list((tmp_path / "c").rglob("shard-*"))
