"""Multi-layer pooled features: the ``ga``, ``sap`` and ``sam`` modes of a backbone.

Each mode reads the output maps of a few intermediate layers (the last block of each
resolution stage but the first, :data:`dcsi.backbones.POOL_LAYERS`), pools each map to a
vector, scales every layer's vector to unit length and concatenates them:

=======  =====================================================================  ==========
mode     pooling of a layer's map (c, h, w)                                     size
=======  =====================================================================  ==========
``ga``   global average over the h x w positions                                c
``sap``  average over each of 2 x 2 overlapping windows                         4 c
``sam``  ``sap`` on the first and last layer; max over the windows on the       4 c
         middle ones
=======  =====================================================================  ==========

Windows: along an axis of ``s`` positions, two windows ``[0, ceil(2 s / 3))`` and
``[floor(s / 3), s)``: each spans two thirds of the axis and they overlap by one third
(a window twice its stride, as in Kim et al.'s 32 x 32 windows of stride 16, on any map
size; on a 1-position axis both windows are that position).  The four windows are taken
row-major (top-left, top-right, bottom-left, bottom-right) and, in the output, each
layer's block is window-major: ``[window 0: c values, window 1: c values, ...]``.

Normalisation: each layer's pooled block (all its windows together) is divided by its
L2 norm (a zero block stays zero) and by ``sqrt(L)`` for ``L`` layers, so that every
layer weighs the same in a cosine similarity whatever its channel count or activation
scale, and a feature row has unit length.

Layers are read with forward hooks that pool a map as soon as its module returns it:
the full-size maps are never kept, later in-place operations (DenseNet's final ReLU)
cannot change them, and any module works -- torchvision's
``create_feature_extractor`` traces the model with ``torch.fx``, which cannot follow
EfficientNet-Lite0's TensorFlow "SAME" padding (computed in Python from the input
shape).

This module imports torch at import time; :mod:`dcsi.backbones` imports it lazily.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "MULTI_LAYER_POOLINGS",
    "MultiLayerFeatures",
    "layer_poolings",
    "pool_layer",
    "pool_layers",
    "window_bounds",
]

#: The multi-layer modes (``gap`` is the backbone's own last-layer feature).
MULTI_LAYER_POOLINGS = ("ga", "sap", "sam")
_EPS = 1e-12


def window_bounds(size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The two overlapping windows along an axis of ``size`` positions.

    Parameters
    ----------
    size : int
        Positions along the axis, at least 1.

    Returns
    -------
    ((start, stop), (start, stop))
        ``[0, ceil(2 size / 3))`` and ``[floor(size / 3), size)``.

    Examples
    --------
    >>> window_bounds(7)
    ((0, 5), (2, 7))
    >>> window_bounds(1)
    ((0, 1), (0, 1))
    """
    # ceil(2 size / 3) written with non-negative operands only: an ONNX export traces
    # the map size, and ONNX's integer division truncates where Python's floors
    return (0, (2 * size + 2) // 3), (size // 3, size)


def layer_poolings(pooling: str, n_layers: int) -> list[tuple[str, bool]]:
    """How each of ``n_layers`` layers is pooled under ``pooling``.

    Returns
    -------
    list of (how, spatial)
        ``how`` in {"avg", "max"}; ``spatial``: over the 2 x 2 windows (else global).
    """
    if pooling == "ga":
        return [("avg", False)] * n_layers
    if pooling == "sap":
        return [("avg", True)] * n_layers
    if pooling == "sam":
        return [("avg" if i in (0, n_layers - 1) else "max", True) for i in range(n_layers)]
    raise ValueError(f"not a multi-layer pooling: {pooling!r}")


def pool_layer(fmap: torch.Tensor, how: str, spatial: bool) -> torch.Tensor:
    """Pool one layer's maps.

    Parameters
    ----------
    fmap : tensor of shape (n, c, h, w)
    how : {"avg", "max"}
    spatial : bool
        Over the 2 x 2 windows of :func:`window_bounds` (else over the whole map).

    Returns
    -------
    tensor of shape (n, c) or, spatial, (n, 4 c), float32; window-major.
    """
    fmap = fmap.float()
    if not spatial:
        return fmap.mean(dim=(2, 3)) if how == "avg" else fmap.amax(dim=(2, 3))
    rows, cols = window_bounds(fmap.shape[2]), window_bounds(fmap.shape[3])
    parts = []
    for r0, r1 in rows:
        for c0, c1 in cols:
            win = fmap[:, :, r0:r1, c0:c1]
            parts.append(win.mean(dim=(2, 3)) if how == "avg" else win.amax(dim=(2, 3)))
    return torch.cat(parts, dim=1)


def pool_layers(pooled: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-layer pooled blocks, each scaled to length ``1 / sqrt(L)``.

    Parameters
    ----------
    pooled : sequence of L tensors of shape (n, m_l)

    Returns
    -------
    tensor of shape (n, sum of m_l), float32; rows of unit length (unless all zero).
    """
    scale = 1.0 / math.sqrt(len(pooled))
    blocks = [p / p.norm(dim=1, keepdim=True).clamp_min(_EPS) * scale for p in pooled]
    return torch.cat(blocks, dim=1)


class MultiLayerFeatures(nn.Module):
    """A network whose ``forward`` returns multi-layer pooled features.

    Parameters
    ----------
    net : nn.Module
        The backbone; its own output is ignored.
    layers : sequence of str
        Module paths inside ``net`` (``net.get_submodule``), shallow to deep.
    pooling : {"ga", "sap", "sam"}

    Notes
    -----
    ``forward(x)`` maps (n, 3, h, w) images to (n, D) features, D = sum over layers of
    c or 4 c (see the module docstring).
    """

    def __init__(self, net: nn.Module, layers: Sequence[str], pooling: str) -> None:
        super().__init__()
        self.net = net
        self.layers = tuple(layers)
        self.pooling = pooling
        self._how = layer_poolings(pooling, len(self.layers))
        self._pooled: dict[int, torch.Tensor] = {}
        for i, path in enumerate(self.layers):
            net.get_submodule(path).register_forward_hook(self._hook(i))

    def _hook(self, i: int) -> Any:
        how, spatial = self._how[i]

        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self._pooled[i] = pool_layer(output, how, spatial)

        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._pooled = {}
        self.net(x)
        pooled = [self._pooled.pop(i) for i in range(len(self.layers))]
        return pool_layers(pooled)
