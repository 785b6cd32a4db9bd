"""ONNX Runtime inference for the registered backbones (``runtime="onnx"``).

:class:`OnnxExtractor` wraps a :class:`~dcsi.backbones.TorchExtractor` built from the
same weights: the torch module (any pooling, ``gap`` or the multi-layer ``ga``, ``sap``,
``sam`` whose forward hooks the tracer follows) is exported once with torch's
TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``: it needs the
``onnx`` package but not ``onnxscript``, and works offline) with a dynamic batch axis,
and run by an ONNX Runtime CPU session at graph optimisation level ``ORT_ENABLE_ALL``.
Preprocessing is the torch extractor's own (same ``transform``, the same float32
normalisation), so only the forward pass changes.

The exported file is cached by content under ``<cache>/onnx/<backbone>-<key>.onnx``,
``key`` a SHA-256 over the weights' SHA-256, the extractor's ``cache_key`` (input size,
normalisation, pooling), the opset, the torch and onnxruntime versions and
:data:`EXPORT_VERSION`; it is written atomically, so concurrent runs never read half a
file.  Without a cache (``cache_dir=None``) the model is exported in memory each time.

Features agree with torch eager within float32 rounding: on EfficientNet-Lite0 the
largest difference of L2-normalised rows is about 2e-6 (``tests/test_onnx_runtime.py``
holds it to ``rtol=1e-4, atol=1e-5``).  Their feature-cache key is the torch key plus
``;runtime=onnx``, so the two runtimes never share cached features, and torch's key is
unchanged.

Threads: a session is made per intra-op thread count, which is torch's current setting
when a batch arrives -- :func:`dcsi.extract_features` sets it to ``num_threads``
(:func:`dcsi.features.choose_num_threads` by default) for the run, so both runtimes use
the same count.  The device is the CPU only.

This module imports neither torch nor onnxruntime until an extractor is used.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from dcsi._io import atomic_write_bytes
from dcsi._validation import require
from dcsi.exceptions import InvalidParameterError

__all__ = ["EXPORT_VERSION", "OPSET", "RUNTIMES", "OnnxExtractor", "check_runtime"]

logger = logging.getLogger(__name__)

#: Inference runtimes of the registered backbones; ``torch`` is the default.
RUNTIMES = ("torch", "onnx")
#: ONNX opset of the exported graphs.
OPSET = 17
#: Version of how dcsi exports a backbone (input/output names, axes); part of the key.
EXPORT_VERSION = "1"

_SESSIONS: OrderedDict[tuple[str, int], Any] = OrderedDict()
_MAX_SESSIONS = 2


def check_runtime(runtime: Any, caller: str, *, device: str = "cpu") -> str:
    """Check an inference runtime (and that it can run on ``device``); return it.

    Raises
    ------
    InvalidParameterError
        ``runtime`` not in :data:`RUNTIMES`, or ``"onnx"`` with a CUDA device.
    MissingDependencyError
        ``"onnx"`` without the ``onnxruntime`` or ``onnx`` package (``dcsi[onnx]``).
    """
    if not isinstance(runtime, str) or runtime not in RUNTIMES:
        raise InvalidParameterError(
            f"The 'runtime' parameter of {caller} must be one of "
            f"{', '.join(map(repr, RUNTIMES))}. Got {runtime!r} instead."
        )
    if runtime == "onnx":
        if isinstance(device, str) and device.startswith("cuda"):
            raise InvalidParameterError(
                f"runtime='onnx' runs on the CPU only; got device={device!r}. Use "
                "--device cpu (device='cpu') or --runtime torch."
            )
        require("onnxruntime", "runtime='onnx' (ONNX Runtime inference)", "dcsi[onnx]")
        require("onnx", "runtime='onnx' (the ONNX export of the backbone)", "dcsi[onnx]")
    return runtime


def _version(package: str) -> str:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return "unknown"


class OnnxExtractor:
    """A registered backbone run by ONNX Runtime: an :class:`~dcsi.backbones.Extractor`.

    Parameters
    ----------
    inner : TorchExtractor
        The torch extractor it is exported from (its ``device`` must be ``"cpu"``); its
        name, weights, input size, dimension, pooling and preprocessing are kept.
    cache_dir : path, default=None
        Root of the cache; the exported model goes to ``cache_dir/onnx/``.  None: export
        in memory, no file.

    Attributes
    ----------
    runtime : str
        ``"onnx"``.
    cache_key : str
        ``inner.cache_key + ";runtime=onnx"`` (the feature cache's preprocessing key).
    """

    runtime = "onnx"

    def __init__(self, inner: Any, *, cache_dir: str | Path | None = None) -> None:
        if str(getattr(inner, "device", "cpu")) != "cpu":
            raise InvalidParameterError(
                f"runtime='onnx' runs on the CPU only; the extractor {inner.name!r} is on "
                f"{inner.device!r}. Build it with device='cpu'."
            )
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.image_size = inner.image_size
        self.weights_sha256 = inner.weights_sha256
        self.pooling = inner.pooling
        self.device = "cpu"
        self.cache_key = f"{inner.cache_key};runtime=onnx"
        self.cache_dir = None if cache_dir is None else Path(cache_dir).expanduser()
        self._sessions: dict[int, Any] = {}

    def __repr__(self) -> str:
        return (
            f"OnnxExtractor(name={self.name!r}, dim={self.dim}, "
            f"image_size={self.image_size}, pooling={self.pooling!r})"
        )

    def transform(self, image: Any) -> Any:
        """PIL image -> uint8 tensor of shape (3, s, s): the torch extractor's transform."""
        return self.inner.transform(image)

    @property
    def model_key(self) -> str:
        """Content key of the exported model (20 hex digits)."""
        meta = {
            "export_version": EXPORT_VERSION,
            "weights_sha256": self.weights_sha256,
            "preprocessing": self.inner.cache_key,
            "opset": OPSET,
            "torch": _version("torch"),
            "onnxruntime": _version("onnxruntime"),
        }
        return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]

    @property
    def model_path(self) -> Path | None:
        """Where the exported model is cached (None without a cache folder)."""
        if self.cache_dir is None:
            return None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
        return self.cache_dir / "onnx" / f"{safe}-{self.model_key}.onnx"

    def export(self) -> bytes:
        """The backbone as an ONNX model: input ``images`` (n, 3, s, s) float32, output
        ``features`` (n, dim) float32, ``n`` dynamic."""
        import torch

        s = self.image_size
        logger.info("Exporting %s (%d px, %s) to ONNX.", self.name, s, self.pooling)
        with (
            tempfile.TemporaryDirectory(prefix="dcsi-onnx-") as tmp,
            warnings.catch_warnings(),
            torch.inference_mode(False),
        ):
            # the TorchScript exporter's deprecation note and its tracer warnings about
            # sizes read as Python numbers: each exported graph is for one input size
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            path = Path(tmp) / "model.onnx"
            torch.onnx.export(
                self.inner.model,
                (torch.zeros(2, 3, s, s),),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "n"}, "features": {0: "n"}},
            )
            return path.read_bytes()

    def _model_source(self, *, fresh: bool = False) -> str | bytes:
        """The cached model file (exported and written first when missing, or when
        ``fresh``), or the model's bytes without a cache folder."""
        path = self.model_path
        if path is None:
            return self.export()
        if fresh or not path.is_file():
            data = self.export()
            try:
                atomic_write_bytes(path, data)
            except OSError as exc:
                logger.warning(
                    "Cannot cache the ONNX model at %s (%s); using it from memory.",
                    path,
                    exc.strerror or exc,
                )
                return data
        return str(path)

    def session(self, threads: int) -> Any:
        """The ONNX Runtime session with ``threads`` intra-op threads (kept per
        extractor, and for cached model files the last two made per file and count)."""
        ort = require("onnxruntime", "runtime='onnx' (ONNX Runtime inference)", "dcsi[onnx]")
        threads = int(threads)
        path = self.model_path
        key = None if path is None else (str(path), threads)
        if key is not None and key in _SESSIONS:
            _SESSIONS.move_to_end(key)
            return _SESSIONS[key]
        if threads in self._sessions:
            return self._sessions[threads]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        invalid = ort.capi.onnxruntime_pybind11_state.InvalidProtobuf
        try:
            session = ort.InferenceSession(self._model_source(), options, providers=providers)
        except invalid as exc:  # a cached file that is not a model: export it again
            logger.warning("Replacing unreadable cached ONNX model %s (%s).", path, exc)
            session = ort.InferenceSession(
                self._model_source(fresh=True), options, providers=providers
            )
        if key is None:
            self._sessions[threads] = session
        else:
            _SESSIONS[key] = session
            while len(_SESSIONS) > _MAX_SESSIONS:
                _SESSIONS.popitem(last=False)
        return session

    def normalize(self, batch: Any) -> np.ndarray:
        """uint8 (n, 3, s, s) -> float32 ``(x / 255 - mean) / std`` by the torch
        extractor's own :meth:`~dcsi.backbones.TorchExtractor.normalize`, C-contiguous;
        a float batch is taken as already normalised."""
        import torch

        x = torch.as_tensor(batch)
        if x.dtype == torch.uint8:
            x = self.inner.normalize(x)
        return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)

    def __call__(self, batch: Any) -> np.ndarray:
        """Features of a batch -> (n, dim) float32 ndarray.

        ``batch``: uint8 (n, 3, s, s) from :meth:`transform` (tensor or ndarray,
        normalised here) or float32 already normalised.
        """
        import torch

        session = self.session(torch.get_num_threads())
        return np.asarray(session.run(None, {"images": self.normalize(batch)})[0])
