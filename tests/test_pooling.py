"""Multi-layer pooled features (ga, sap, sam) against a slow reference; gap unchanged."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dcsi.backbones import (  # noqa: E402
    POOL_LAYERS,
    POOLINGS,
    check_pooling,
    get_backbone,
    pooled_dim,
    register_backbone,
)
from dcsi.backbones.efficientnet_lite import EfficientNetLite0, FeatureModel  # noqa: E402
from dcsi.backbones.pooling import (  # noqa: E402
    MultiLayerFeatures,
    layer_poolings,
    pool_layer,
    window_bounds,
)
from dcsi.exceptions import InvalidParameterError  # noqa: E402
from dcsi.features import extract_features  # noqa: E402

#: float32 forward passes and pooling against a float64 loop
TOL = {"rtol": 1e-5, "atol": 1e-6}


def _positions(size):
    """The two windows' positions along an axis, by their definition: the first third
    and second third (``3 p < 2 s``), and everything from ``floor(s / 3)`` on."""
    first = [p for p in range(size) if 3 * p < 2 * size]
    second = [p for p in range(size) if 3 * p >= size - size % 3]
    return first, second


def _pool_reference(fmap, how, spatial):
    """One layer, (n, c, h, w) -> (n, c) or (n, 4c), with python loops over windows."""
    x = np.asarray(fmap, dtype=np.float64)
    n, c, h, w = x.shape
    windows = (
        [(rows, cols) for rows in _positions(h) for cols in _positions(w)]
        if spatial
        else [(list(range(h)), list(range(w)))]
    )
    out = []
    for rows, cols in windows:
        acc = np.zeros((n, c)) if how == "avg" else np.full((n, c), -np.inf)
        for i in rows:
            for j in cols:
                acc = acc + x[:, :, i, j] if how == "avg" else np.maximum(acc, x[:, :, i, j])
        out.append(acc / (len(rows) * len(cols)) if how == "avg" else acc)
    return np.concatenate(out, axis=1)


def _features_reference(maps, pooling):
    hows = {
        "ga": ["avg"] * 4,
        "sap": ["avg"] * 4,
        "sam": ["avg", "max", "max", "avg"],
    }[pooling]
    blocks = []
    for fmap, how in zip(maps, hows, strict=True):
        b = _pool_reference(fmap, how, pooling != "ga")
        blocks.append(b / np.linalg.norm(b, axis=1, keepdims=True) / 2.0)  # sqrt(4 layers)
    return np.concatenate(blocks, axis=1)


def _lite0_maps(net, x):
    """Per-layer maps of EfficientNet-Lite0, by running its blocks in a plain loop."""
    import torch.nn.functional as F

    h = F.hardtanh(net._bn0(net._conv_stem(x)), 0.0, 6.0)
    maps = []
    for i, block in enumerate(net._blocks):
        h = block(h)
        if i in (2, 4, 10, 15):
            maps.append(h.clone())
    return maps


def _resnet_maps(net, x):
    h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    maps = []
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        h = layer(h)
        maps.append(h.clone())
    return maps


@pytest.fixture(scope="module")
def lite0_net():
    torch.manual_seed(0)
    net = EfficientNetLite0()
    for m in net.modules():  # random running statistics: batch norms are not identities
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize("size", range(1, 13))
def test_window_bounds_match_their_definition(size):
    (a0, a1), (b0, b1) = window_bounds(size)
    first, second = _positions(size)
    assert list(range(a0, a1)) == first and list(range(b0, b1)) == second


@pytest.mark.parametrize("how", ["avg", "max"])
@pytest.mark.parametrize("spatial", [False, True])
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (7, 7), (5, 9)])
def test_pool_layer_matches_loops(how, spatial, hw, rng):
    fmap = torch.from_numpy(rng.normal(size=(3, 4, *hw)).astype(np.float32))
    got = pool_layer(fmap, how, spatial).numpy()
    np.testing.assert_allclose(got, _pool_reference(fmap.numpy(), how, spatial), **TOL)


def test_layer_poolings():
    assert layer_poolings("sam", 4) == [
        ("avg", True),
        ("max", True),
        ("max", True),
        ("avg", True),
    ]
    assert layer_poolings("ga", 2) == [("avg", False)] * 2
    with pytest.raises(ValueError, match="not a multi-layer pooling"):
        layer_poolings("gap", 4)


@pytest.mark.parametrize("pooling", ["ga", "sap", "sam"])
@pytest.mark.parametrize("side", [40, 64])
def test_lite0_multi_layer_matches_reference(lite0_net, pooling, side, rng):
    x = torch.from_numpy(rng.normal(size=(3, 3, side, side)).astype(np.float32))
    layers = [p for p, _ in POOL_LAYERS["efficientnet_lite0"]]
    model = MultiLayerFeatures(FeatureModel(lite0_net), layers, pooling).eval()
    with torch.inference_mode():
        got = model(x).numpy()
        ref = _features_reference([m.numpy() for m in _lite0_maps(lite0_net, x)], pooling)
    assert got.shape == (3, pooled_dim("efficientnet_lite0", pooling))
    np.testing.assert_allclose(got, ref, **TOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["ga", "sap", "sam"])
def test_resnet18_multi_layer_matches_reference(pooling, rng):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(1)
    net = tv.models.resnet18(weights=None).eval()
    x = torch.from_numpy(rng.normal(size=(2, 3, 64, 64)).astype(np.float32))
    model = MultiLayerFeatures(net, [p for p, _ in POOL_LAYERS["resnet18"]], pooling).eval()
    with torch.inference_mode():
        got = model(x).numpy()
        ref = _features_reference([m.numpy() for m in _resnet_maps(net, x)], pooling)
    assert got.shape == (2, pooled_dim("resnet18", pooling))
    np.testing.assert_allclose(got, ref, **TOL)


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.save(tv.models.resnet18(weights=None).state_dict(), path)
    return path


def test_extract_features_pooling_and_cache_keys(resnet18_weights, rng, tmp_path):
    images = rng.integers(0, 256, (5, 20, 20), dtype=np.uint8)
    kw = {"backbone": "resnet18", "weights": resnet18_weights, "image_size": 32}
    out = {}
    for pooling in POOLINGS:
        fs = extract_features(images, cache=tmp_path, pooling=pooling, device="cpu", **kw)
        assert fs.pooling == pooling and fs.to_dict()["pooling"] == pooling
        assert fs.dim == (pooled_dim("resnet18", pooling) or 512)
        out[pooling] = fs.features
    # one cache folder per mode
    folders = sorted((tmp_path / "features").iterdir())
    assert len(folders) == 4
    again = extract_features(images, cache=tmp_path, pooling="sam", device="cpu", **kw)
    assert again.n_cached == 5
    np.testing.assert_array_equal(again.features, out["sam"])


def test_gap_is_unchanged(lite0_net, resnet18_weights):
    """gap: the model's own features and the cache key it always had."""
    ext = get_backbone("resnet18", weights=resnet18_weights, image_size=32, device="cpu")
    assert ext.pooling == "gap"
    assert ext.cache_key == (
        "resize=bilinear-square-32;mean=(0.485, 0.456, 0.406);std=(0.229, 0.224, 0.225);"
        "grey=repeat3"
    )
    assert not isinstance(ext.model, MultiLayerFeatures)
    sap = get_backbone(
        "resnet18", weights=resnet18_weights, image_size=32, device="cpu", pooling="sap"
    )
    assert sap.cache_key.startswith(ext.cache_key + ";pooling=sap;layers=layer1,")
    assert isinstance(sap.model, MultiLayerFeatures) and sap.dim == 3840


class _Custom:
    name = "custom"

    def transform(self, image):
        return image

    def __call__(self, batch):
        return batch


@pytest.fixture(scope="module")
def custom_backbone():
    from dcsi.backbones import list_backbones

    if "pooling_test_custom" not in list_backbones():
        register_backbone("pooling_test_custom", lambda **kw: _Custom())
    return "pooling_test_custom"


def test_pooling_errors(resnet18_weights, custom_backbone):
    with pytest.raises(InvalidParameterError, match="'pooling' parameter of get_backbone"):
        get_backbone("resnet18", weights=resnet18_weights, pooling="max")
    with pytest.raises(InvalidParameterError, match="'pooling' parameter of extract_features"):
        extract_features(np.zeros((2, 8, 8), np.uint8), pooling="GA")
    assert check_pooling("gap", "anything") == "gap"
    with pytest.raises(InvalidParameterError, match="has no multi-layer pooling"):
        get_backbone(custom_backbone, pooling="sap")
    with pytest.raises(InvalidParameterError, match="pools as 'gap'"):
        extract_features(np.zeros((2, 8, 8), np.uint8), backbone=_Custom(), pooling="ga")


def test_cli_pooling_is_checked_before_work(tmp_path, capsys, custom_backbone):
    from dcsi.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["analyze", "sample:digits", "--out", str(tmp_path), "--pooling", "max"])
    assert exc.value.code == 2
    assert "--pooling" in capsys.readouterr().err
    args = ["analyze", "sample:digits", "--out", str(tmp_path), "--pooling", "sap"]
    status = main([*args, "--backbone", custom_backbone])
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no multi-layer pooling" in err[0]


def test_analyze_records_the_pooling(rng, tmp_path):
    import dcsi

    images = rng.integers(0, 256, (24, 12, 12), dtype=np.uint8)
    card = dcsi.analyze(
        images,
        labels=np.arange(24) % 3,
        analyzers="cnn",
        pooling="ga",
        image_size=32,
        device="cpu",
        cache=tmp_path,
    )
    d = card.to_dict()
    assert d["features"]["pooling"] == "ga" and d["features"]["dim"] == 496
    assert d["provenance"]["parameters"]["pooling"] == "ga"
    assert "pooling ga" in card.summary()
    router = card.router()
    assert router.pooling == "ga" and router.dim == 496
    assert router.route(images[:3]).shape == (3,)
