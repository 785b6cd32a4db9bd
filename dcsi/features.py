"""Batched, cached CNN feature extraction: any source -> :class:`FeatureSet`.

:func:`extract_features` takes an opened image set (or opens a source with
:func:`dcsi.sources.open_source`'s defaults), builds the
backbone (:func:`dcsi.backbones.get_backbone`), looks every image up in an on-disk cache
and runs the model only on the images not found there:

- batches of ``batch_size`` under ``torch.inference_mode``; decoding and preprocessing
  run in ``DataLoader`` workers overlapping the forward pass (``num_workers=None``: none
  for in-memory arrays, where preprocessing costs little next to the model, one or more
  for encoded files);
- a progress bar on stderr with images/s; float32 output;
- the cache lives under ``cache`` (default ``$DCSI_CACHE`` or ``~/.cache/dcsi``;
  ``cache=False`` turns it off) in a folder keyed by backbone name + weights SHA-256 +
  preprocessing (input size, normalisation) + pooling (for the multi-layer modes; the
  default ``gap`` keeps the key it always had) + runtime (``runtime="onnx"`` only: torch
  keeps the key it always had) + decoding rules.  Inside, features are
  stored per image content hash (SHA-256 of the encoded bytes), in shards of
  ``shard_size`` images written atomically as pairs of ``.npy`` files
  (``shard-*.keys.npy``: content hashes, ``shard-*.feats.npy``: float32 features), read
  back with ``allow_pickle=False``.  An interrupted run keeps the shards it finished, so
  the next run computes only the rest; identical images (in one dataset or across
  datasets) are computed once.

Examples
--------
>>> import dcsi
>>> fs = dcsi.extract_features("sample:digits")          # doctest: +SKIP
>>> fs.features.shape, fs.image_size                      # doctest: +SKIP
((1797, 1280), 64)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from dcsi._io import atomic_write_bytes, atomic_write_json
from dcsi._progress import progress
from dcsi._validation import check_int, require
from dcsi.backbones import (
    Extractor,
    TorchExtractor,
    check_pooling,
    default_image_size,
    get_backbone,
)
from dcsi.backbones.onnx_runtime import OnnxExtractor, check_runtime
from dcsi.exceptions import DataError, InvalidParameterError
from dcsi.sources import DECODE_VERSION, ImageSet, image_to_array, open_source

__all__ = [
    "BatchRunner",
    "FeatureCache",
    "FeatureSet",
    "TransformedImages",
    "cache_root",
    "choose_num_threads",
    "default_cache_dir",
    "extract_features",
]

logger = logging.getLogger(__name__)

#: Version of the cache layout and of how features are computed; part of the key.
CACHE_VERSION = "1"
#: Images per cache shard.
SHARD_SIZE = 2048


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Features of a dataset's images.

    Attributes
    ----------
    features : ndarray of shape (n, dim), float32
    labels : ndarray of shape (n,), int64, or None
    ids : list of str, length n
    classes : list of str, length K
    backbone : str
    weights_sha256 : str or None
        SHA-256 of the weights file (None for a user extractor that does not say).
    image_size : int or None
        Input size fed to the backbone, in pixels.
    dim : int
    image_set : ImageSet
        The opened source (fingerprint, skipped items, ...); not part of ``to_dict``.
    n_cached : int
        How many images came from the cache.
    arrays : ndarray of shape (n, h, w) or (n, h, w, 3), uint8, or None
        The images as arrays, when asked for with ``arrays=`` (made from the same
        decode as the features; not part of ``to_dict``).
    pooling : {"gap", "ga", "sap", "sam"}
        How the features were pooled (:func:`dcsi.backbones.get_backbone`).
    runtime : {"torch", "onnx"}
        What ran the forward pass (not part of ``to_dict``: both runtimes give the
        same features within float32 rounding).
    """

    features: np.ndarray
    labels: np.ndarray | None
    ids: list[str]
    classes: list[str]
    backbone: str
    weights_sha256: str | None
    image_size: int | None
    dim: int
    image_set: ImageSet | None = field(default=None, repr=False)
    n_cached: int = 0
    arrays: np.ndarray | None = field(default=None, repr=False)
    pooling: str = "gap"
    runtime: str = "torch"

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """The card's ``features`` block: backbone, weights_sha256, image_size, dim,
        pooling."""
        return {
            "backbone": self.backbone,
            "weights_sha256": self.weights_sha256,
            "image_size": None if self.image_size is None else int(self.image_size),
            "dim": int(self.dim),
            "pooling": self.pooling,
        }


def default_cache_dir() -> Path:
    """``$DCSI_CACHE`` if set, else ``~/.cache/dcsi``."""
    env = os.environ.get("DCSI_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dcsi"


def cache_root(cache: str | os.PathLike[str] | bool | None) -> Path | None:
    """The cache folder a ``cache`` argument names: None or True ->
    :func:`default_cache_dir`, False -> None (no cache), a path -> that folder."""
    if cache is False:
        return None
    return default_cache_dir() if cache is None or cache is True else Path(cache).expanduser()


# ----------------------------------------------------------------------------- cache


class FeatureCache:
    """Feature shards of one (backbone, weights, preprocessing) key.

    Parameters
    ----------
    directory : path
        The key's folder, ``<cache>/features/<backbone>-<key>``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @classmethod
    def for_key(
        cls, root: Path, *, backbone: str, weights_sha256: str, preprocessing: str, dim: int | None
    ) -> FeatureCache:
        """The cache folder for one extractor configuration under ``root``.

        Raises ``OSError`` when the folder cannot be created or refuses a new file.
        """
        meta = {
            "cache_version": CACHE_VERSION,
            "decode_version": DECODE_VERSION,
            "backbone": backbone,
            "weights_sha256": weights_sha256,
            "preprocessing": preprocessing,
        }
        key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in backbone)
        cache = cls(Path(root) / "features" / f"{safe}-{key}")
        meta_path = cache.directory / "meta.json"
        if not meta_path.is_file():
            atomic_write_json(meta_path, {**meta, "dim": dim})
        with tempfile.NamedTemporaryFile(dir=cache.directory, prefix=".probe-"):
            pass  # a folder that refuses new files fails here, before any work
        return cache

    def shards(self) -> list[str]:
        """Names (without suffix) of the complete shards, sorted."""
        if not self.directory.is_dir():
            return []
        out = []
        for p in sorted(self.directory.glob("shard-*.keys.npy")):
            stem = p.name[: -len(".keys.npy")]
            if (self.directory / f"{stem}.feats.npy").is_file():
                out.append(stem)
        return out

    def _expected_dim(self) -> int | None:
        """The feature dimension recorded in ``meta.json`` (None when unknown)."""
        try:
            dim = json.loads((self.directory / "meta.json").read_text(encoding="utf-8")).get("dim")
        except (OSError, ValueError, AttributeError):
            return None
        return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None

    def _drop(self, stem: str, why: str) -> None:
        """Remove a broken shard, so that its images are computed (and stored) again."""
        logger.warning(
            "Ignoring unreadable cache shard %s (%s); removing it, its images will be recomputed.",
            self.directory / f"{stem}.feats.npy",
            why,
        )
        for suffix in (".feats.npy", ".keys.npy"):
            try:
                (self.directory / f"{stem}{suffix}").unlink(missing_ok=True)
            except OSError as exc:  # read-only cache: the shard is skipped all the same
                logger.warning("Could not remove %s (%s).", self.directory / f"{stem}{suffix}", exc)

    def _check_shard(self, stem: str, dim: int | None) -> tuple[list[str], int] | str:
        """The keys and dimension of a shard, or why it cannot be used."""
        try:
            keys = np.load(self.directory / f"{stem}.keys.npy", allow_pickle=False)
            feats = np.load(self.directory / f"{stem}.feats.npy", mmap_mode="r", allow_pickle=False)
            if keys.ndim != 1 or keys.dtype.kind != "S":
                return f"keys of dtype {keys.dtype} and shape {keys.shape}, not content hashes"
            hashes = [k.decode("ascii") for k in keys.tolist()]
        except (OSError, ValueError, EOFError) as exc:
            return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        shape = feats.shape
        del feats
        if len(shape) != 2 or shape[0] != len(hashes):
            return f"features of shape {shape} for {len(hashes)} keys"
        if dim is not None and shape[1] != dim:
            return f"{shape[1]}-d features where the cache holds {dim}-d ones"
        return hashes, int(shape[1])

    def lookup(self, hashes: set[str]) -> dict[str, tuple[str, int]]:
        """Where each of ``hashes`` is stored: ``{hash: (shard, row)}`` (hits only).

        A shard that cannot be read (truncated, not ``.npy``), whose feature rows do not
        match its keys, or whose dimension differs from the cache's (``meta.json``, else
        the first good shard) is logged with a warning naming the file and removed; its
        images are then computed again.
        """
        found: dict[str, tuple[str, int]] = {}
        dim = self._expected_dim()
        for stem in self.shards():
            checked = self._check_shard(stem, dim)
            if isinstance(checked, str):
                self._drop(stem, checked)
                continue
            keys, dim = checked
            for row, h in enumerate(keys):
                if h in hashes and h not in found:
                    found[h] = (stem, row)
        return found

    def read(self, stem: str) -> np.ndarray:
        """The features of one shard, shape (m, dim), memory-mapped."""
        return np.load(self.directory / f"{stem}.feats.npy", mmap_mode="r", allow_pickle=False)

    def write(self, hashes: Sequence[str], feats: np.ndarray) -> str:
        """Store one shard atomically (features first, then keys); returns its name."""
        keys = np.asarray([h.encode("ascii") for h in hashes], dtype="S64")
        stem = "shard-" + hashlib.sha256(keys.tobytes()).hexdigest()[:16]
        atomic_write_bytes(
            self.directory / f"{stem}.feats.npy",
            _npy_bytes(np.ascontiguousarray(feats, dtype=np.float32)),
        )
        atomic_write_bytes(self.directory / f"{stem}.keys.npy", _npy_bytes(keys))
        return stem


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


# ----------------------------------------------------------------------------- extraction


class TransformedImages:
    """torch Dataset view: position k -> transformed image ``positions[k]``, and with
    ``arrays=(hw, mode)`` also that image as a uint8 array (one decode for both).

    What every :class:`BatchRunner` feeds the model: the local DataLoader workers and
    the Ray engine's actors (:class:`dcsi.ray_engine.FeatureActor`)."""

    def __init__(
        self,
        image_set: ImageSet,
        positions: np.ndarray,
        transform: Any,
        arrays: tuple[tuple[int, int], str] | None = None,
    ) -> None:
        self.image_set = image_set
        self.positions = positions
        self.transform = transform
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int) -> Any:
        img = self.image_set.load(int(self.positions[k]))
        if self.arrays is None:
            return self.transform(img)
        return self.transform(img), np.array(image_to_array(img, *self.arrays))  # writable


def choose_num_threads() -> int:
    """Intra-op threads for the forward pass when ``num_threads=None``.

    ``$DCSI_NUM_THREADS`` if set; else ``$OMP_NUM_THREADS`` if set; else the number of
    CPUs this process may run on (``os.sched_getaffinity``, else ``os.cpu_count``).

    The count depends on the machine and the environment only, never on the load
    average or on torch's current setting: reductions in the forward pass are split
    by thread, so 1 and 2 threads give features that differ by about 1e-8, which
    changes ``cnn_cosine``, ``class_sums`` and the index in the card.  With a fixed
    count, the same input and seed give the same bytes whatever the machine's load.
    On a shared, busy machine set ``DCSI_NUM_THREADS=1`` (oversubscribed OpenMP
    threads spin against each other) -- and keep it set to reproduce that card.

    Returns
    -------
    int
        At least 1.
    """
    env = os.environ.get("DCSI_NUM_THREADS", "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise InvalidParameterError(
                f"DCSI_NUM_THREADS must be a positive integer. Got {env!r} instead."
            )
        return value
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()  # "4,2": nested
    if omp.isdigit() and int(omp) >= 1:
        return int(omp)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not available on this platform
        return max(1, os.cpu_count() or 1)


def _auto_workers(image_set: ImageSet) -> int:
    if image_set.kind == "array":
        return 0
    cpus = os.cpu_count() or 1
    return 1 if cpus <= 2 else min(4, cpus // 2)


def _as_features(out: Any, n: int, name: str) -> np.ndarray:
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    arr = np.asarray(out, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise DataError(
            f"Backbone {name!r} returned features of shape {arr.shape} for a batch of {n} "
            "images; an extractor must return (n, d)."
        )
    if not np.all(np.isfinite(arr)):
        raise DataError(f"Backbone {name!r} returned NaN or infinite features.")
    return arr


def extract_features(
    source: Any,
    *,
    backbone: str | Extractor = "efficientnet_lite0",
    weights: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    cache: str | os.PathLike[str] | bool | None = None,
    num_workers: int | None = None,
    shard_size: int = SHARD_SIZE,
    num_threads: int | None = None,
    labels: Any = None,
    arrays: tuple[int | tuple[int, int] | None, str] | None = None,
    pooling: str = "gap",
    runtime: str = "torch",
    runner: BatchRunner | None = None,
) -> FeatureSet:
    """CNN features of every image of a source.

    Parameters
    ----------
    source : ImageSet, ndarray or a source
        An opened :class:`~dcsi.sources.ImageSet` (what the pipeline passes), or
        anything :func:`dcsi.sources.open_source` accepts with its defaults (open it
        yourself to choose a split, columns or a per-class subset).
    backbone : str or Extractor, default="efficientnet_lite0"
        A registered name (:func:`dcsi.backbones.list_backbones`) or an extractor object.
    weights : path, default=None
        Weights file for a registered backbone (default: packaged / torch hub cache).
    image_size : int, default=None
        Input size in pixels.  None: ``clip(32 * ceil(2 * s / 32), 64, 224)`` with ``s``
        the dataset's median longer side (8-px digits and 28-px Fashion-MNIST -> 64;
        112 px and more -> 224), see :func:`dcsi.backbones.default_image_size`.
    batch_size : int, default=64
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        ``"auto"`` uses CUDA when present.
    cache : path or bool, default=None
        Cache folder; None or True: :func:`default_cache_dir`; False: no cache.
    num_workers : int, default=None
        DataLoader worker processes decoding images while the model runs.  None: 0 for
        in-memory arrays, else 1 on a machine with 2 cores or fewer, else
        ``min(4, cores // 2)``.
    shard_size : int, default=2048
        Images per cache shard (the unit of resumption).
    num_threads : int, default=None
        Intra-op threads of the forward pass: torch's (restored afterwards), which
        ``runtime="onnx"`` gives its ONNX Runtime session too.  None:
        :func:`choose_num_threads` (the idle cores, at least 1).
    labels : array-like of shape (n,), default=None
        Labels of an in-memory array.
    arrays : (size, mode), default=None
        Also return every image as a uint8 array (``FeatureSet.arrays``), as
        ``ImageSet.to_array(size=size, mode=mode)`` makes it, from the same decode as
        its features (images served from the cache are decoded for this alone).
    pooling : {"gap", "ga", "sap", "sam"}, default="gap"
        ``"gap"``: the backbone's last layer, global-average-pooled.  ``"ga"``,
        ``"sap"``, ``"sam"``: pooled maps of several intermediate layers of a
        registered backbone (see :mod:`dcsi.backbones`, which lists the layers and the
        dimension of each mode, and :mod:`dcsi.backbones.pooling`); cached under
        their own key.  An extractor object pools as it does (its ``pooling``
        attribute, ``"gap"`` when absent); naming another mode is an error.
    runtime : {"torch", "onnx"}, default="torch"
        What runs the forward pass of a registered backbone (or of a
        :class:`~dcsi.backbones.TorchExtractor` passed as ``backbone``): torch eager,
        or ONNX Runtime on the CPU (``pip install 'dcsi[onnx]'``;
        :mod:`dcsi.backbones.onnx_runtime`), which exports the same weights once,
        caches the ``.onnx`` file under ``cache`` and gives the same features within
        float32 rounding, faster (README, "Faster CPU inference").  Its features are
        cached under their own key.
    runner : BatchRunner, default=None
        What runs the model on the images the cache lacks.  None: ``num_workers``
        DataLoader workers decode and this process runs the forward pass;
        :class:`dcsi.ray_engine.RayRunner`: Ray model actors (``engine="ray"`` of
        :func:`dcsi.analyze`).  The cache, the checks and the arrays are the same.

    Returns
    -------
    FeatureSet
        ``features`` of shape (n, dim), float32, in the order of the source's ids.

    Raises
    ------
    DataError
        Unusable source (see :func:`~dcsi.sources.open_source`).
    InvalidParameterError
        Unknown backbone or bad parameter.
    WeightsNotFoundError
        No weights available offline.
    """
    caller = "extract_features"
    batch_size = check_int(batch_size, "batch_size", caller, min_value=1)
    shard_size = check_int(shard_size, "shard_size", caller, min_value=1)
    if num_workers is not None:
        num_workers = check_int(num_workers, "num_workers", caller, min_value=0)
    if num_threads is not None:
        num_threads = check_int(num_threads, "num_threads", caller, min_value=1)
    if image_size is not None:
        image_size = check_int(image_size, "image_size", caller, min_value=32, max_value=1024)
    check_pooling(pooling, backbone, caller)
    check_runtime(runtime, caller, device=device)
    if runtime == "onnx" and device == "auto":
        device = "cpu"
    if not (cache is None or isinstance(cache, (bool, str, os.PathLike))):
        raise InvalidParameterError(
            f"The 'cache' parameter of {caller} must be a folder path, True, False or "
            f"None. Got {type(cache).__name__} instead."
        )
    image_set = open_source(source, labels=labels)
    if len(image_set) == 0:
        raise DataError(f"{image_set.source}: the dataset has no usable images.")
    root = cache_root(cache)

    if isinstance(backbone, str):
        size = (
            image_size if image_size is not None else default_image_size(image_set.typical_side())
        )
        extractor: Any = get_backbone(
            backbone, weights=weights, image_size=size, device=device, pooling=pooling
        )
    elif isinstance(backbone, Extractor):
        if weights is not None or image_size is not None:
            raise InvalidParameterError(
                f"The 'weights' and 'image_size' parameters of {caller} apply to "
                "registered backbones; an extractor object owns its weights and "
                "preprocessing."
            )
        own = getattr(backbone, "pooling", "gap")
        if pooling != "gap" and pooling != own:
            raise InvalidParameterError(
                f"The 'pooling' parameter of {caller} applies to registered backbones; "
                f"the extractor object {backbone.name!r} pools as {own!r}. Build it with "
                "dcsi.get_backbone(name, pooling=...) or leave pooling out."
            )
        extractor = backbone
        if runtime == "onnx" and not isinstance(backbone, TorchExtractor):
            raise InvalidParameterError(
                f"runtime='onnx' applies to registered backbones and TorchExtractor "
                f"objects; the extractor {backbone.name!r} is a {type(backbone).__name__}. "
                "Leave runtime='torch'."
            )
    else:
        raise InvalidParameterError(
            f"The 'backbone' parameter of {caller} must be a backbone name or an object "
            "with name, transform and __call__ (dcsi.backbones.Extractor). "
            f"Got {type(backbone).__name__} instead."
        )
    if runtime == "onnx":
        extractor = OnnxExtractor(extractor, cache_dir=root)
    name = str(extractor.name)
    weights_sha = getattr(extractor, "weights_sha256", None)
    ext_size = getattr(extractor, "image_size", None)

    store: FeatureCache | None = None
    if root is not None:
        if weights_sha is None:
            logger.info("Extractor %r has no weights_sha256; not caching its features.", name)
        else:
            try:
                store = FeatureCache.for_key(
                    root,
                    backbone=name,
                    weights_sha256=str(weights_sha),
                    preprocessing=str(getattr(extractor, "cache_key", f"image_size={ext_size}")),
                    dim=getattr(extractor, "dim", None),
                )
            except OSError as exc:
                logger.warning(
                    "The feature cache under %s cannot be written (%s); running without a "
                    "cache. Point $DCSI_CACHE or --cache at a writable folder to keep features.",
                    root,
                    exc.strerror or exc,
                )

    hashes = image_set.content_hashes() if store is not None else None
    n = len(image_set)
    features: np.ndarray | None = None
    n_cached = 0
    todo = np.arange(n)
    rows_of: dict[str, list[int]] = {}
    if store is not None:
        assert hashes is not None
        for i, h in enumerate(hashes):
            rows_of.setdefault(h, []).append(i)
        found = store.lookup(set(rows_of))
        if found:
            by_shard: dict[str, list[tuple[int, str]]] = {}
            for h, (stem, row) in found.items():
                by_shard.setdefault(stem, []).append((row, h))
            for stem, items in by_shard.items():
                feats = store.read(stem)
                if features is None:
                    features = np.empty((n, feats.shape[1]), dtype=np.float32)
                items.sort()
                block = np.asarray(feats[[r for r, _ in items]], dtype=np.float32)
                for (_, h), f in zip(items, block, strict=True):
                    features[rows_of[h]] = f
                    n_cached += len(rows_of[h])
        # one computation per distinct missing content hash
        todo = np.asarray(
            [rows[0] for h, rows in rows_of.items() if h not in found], dtype=np.int64
        )
        logger.info("%s: %d of %d images cached; computing %d.", name, n_cached, n, len(todo))

    side = None
    if arrays is not None:
        hw = image_set.resolve_size(arrays[0])
        side = (hw, arrays[1])
        out_arrays = np.empty((n, *hw) + ((3,) if arrays[1] == "RGB" else ()), np.uint8)
    if len(todo):
        require("torch", "CNN feature extraction", "dcsi[torch]")
        workers = _auto_workers(image_set) if num_workers is None else num_workers
        threads = choose_num_threads() if num_threads is None else num_threads
        logger.info(
            "%s: %d images, batch %d, %d torch thread(s), %d loader worker(s).",
            name,
            len(todo),
            batch_size,
            threads,
            workers,
        )
        with _torch_threads(threads):
            features = _run(
                image_set,
                todo,
                extractor,
                name=name,
                batch_size=batch_size,
                runner=runner or partial(_local_batches, workers=workers),
                store=store,
                shard_size=shard_size,
                hashes=hashes,
                rows_of=rows_of,
                features=features,
                n=n,
                arrays=None if side is None else (out_arrays, side),
            )
    assert features is not None
    if side is not None:
        done = np.zeros(n, dtype=bool)
        done[todo] = True
        for rows in rows_of.values():  # an image seen twice was computed once
            if done[rows[0]]:
                out_arrays[rows[1:]] = out_arrays[rows[0]]
                done[rows] = True
        rest = np.flatnonzero(~done)
        if len(rest):
            out_arrays[rest] = image_set.to_array(size=hw, mode=side[1], indices=rest)
    return FeatureSet(
        features=features,
        labels=image_set.labels,
        ids=list(image_set.ids),
        classes=list(image_set.classes),
        backbone=name,
        weights_sha256=None if weights_sha is None else str(weights_sha),
        image_size=None if ext_size is None else int(ext_size),
        dim=int(features.shape[1]),
        image_set=image_set,
        n_cached=n_cached,
        arrays=None if side is None else out_arrays,
        pooling=str(getattr(extractor, "pooling", "gap")),
        runtime=runtime,
    )


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` for the block, then restored."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class BatchRunner(Protocol):
    """Computes the features of the images at ``todo`` batch by batch.

    :func:`extract_features` runs the model through one: the default decodes and
    preprocesses in ``DataLoader`` workers and runs the forward pass in this process;
    :class:`dcsi.ray_engine.RayRunner` runs it in Ray model actors.  The caller stores
    what comes back (features, cache shards, arrays), so every runner shares the cache
    and the checks.

    Parameters of ``__call__``
    --------------------------
    image_set : ImageSet
    todo : ndarray of shape (m,), int64
        Positions to compute, in order.
    extractor : Extractor
        The backbone as built in this process (name, ``transform``, ``image_size``).
    batch_size : int
        Images per forward pass; a runner must cut ``todo`` into the same batches
        (``todo[0:b]``, ``todo[b:2b]``, ...), since a forward pass's float reductions
        can depend on the batch.
    arrays : ((h, w), mode) or None
        Also return each image as ``image_to_array(image, h, w, mode)``.

    Yields
    ------
    positions : ndarray of shape (b,), int64
        Positions of the batch, in the order of ``todo``.
    features : tensor or ndarray of shape (b, d)
    arrays : ndarray of shape (b, h, w[, 3]), uint8, or None
    """

    def __call__(
        self,
        image_set: ImageSet,
        todo: np.ndarray,
        extractor: Any,
        *,
        batch_size: int,
        arrays: tuple[tuple[int, int], str] | None,
    ) -> Iterator[tuple[np.ndarray, Any, np.ndarray | None]]: ...


def _local_batches(
    image_set: ImageSet,
    todo: np.ndarray,
    extractor: Any,
    *,
    batch_size: int,
    arrays: tuple[tuple[int, int], str] | None,
    workers: int,
) -> Iterator[tuple[np.ndarray, Any, np.ndarray | None]]:
    """The default :class:`BatchRunner`: ``DataLoader`` workers decode, this process
    runs the model."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    pin = str(getattr(extractor, "device", "cpu")).startswith("cuda")
    images = TransformedImages(image_set, todo, extractor.transform, arrays)
    loader: DataLoader[Any] = DataLoader(
        cast("Dataset[Any]", images),  # a map-style dataset: __len__ and __getitem__
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=False,
    )
    done = 0
    for batch in loader:
        side = None
        if arrays is not None:
            batch, side = batch
            side = np.asarray(side)
        b = int(batch.shape[0]) if hasattr(batch, "shape") else len(batch)
        with torch.inference_mode():
            out = extractor(batch)
        yield todo[done : done + b], out, side
        done += b


def _run(
    image_set: ImageSet,
    todo: np.ndarray,
    extractor: Any,
    *,
    name: str,
    batch_size: int,
    runner: BatchRunner,
    store: FeatureCache | None,
    shard_size: int,
    hashes: list[str] | None,
    rows_of: dict[str, list[int]],
    features: np.ndarray | None,
    n: int,
    arrays: tuple[np.ndarray, tuple[tuple[int, int], str]] | None = None,
) -> np.ndarray:
    """Run the model on the images at ``todo`` through ``runner`` and fill ``features``
    (and the cache, and ``arrays[0]`` at ``todo`` when asked); Ctrl-C keeps the
    partial shard."""
    pending_keys: list[str] = []
    pending: list[np.ndarray] = []
    size = getattr(extractor, "image_size", None)
    desc = f"Features {name}" + (f" {size}px" if size else "")
    if len(todo) != n:  # say why the bar counts fewer images than the dataset holds
        desc += f" ({len(todo)} to compute of {n} images: the rest cached or repeated)"
    batches = runner(
        image_set,
        todo,
        extractor,
        batch_size=batch_size,
        arrays=None if arrays is None else arrays[1],
    )
    try:
        with progress(desc=desc, total=len(todo), unit="img") as bar:
            for part, raw, side in batches:
                b = len(part)
                if arrays is not None:
                    arrays[0][part] = side
                out = _as_features(raw, b, name)
                if features is None:
                    features = np.empty((n, out.shape[1]), dtype=np.float32)
                elif out.shape[1] != features.shape[1]:
                    raise DataError(
                        f"Backbone {name!r} returned {out.shape[1]}-d features but its cache "
                        f"holds {features.shape[1]}-d ones; clear {store.directory if store else ''}."
                    )
                if store is None:
                    features[part] = out
                else:
                    assert hashes is not None
                    keys = [hashes[i] for i in part]
                    for h, f in zip(keys, out, strict=True):
                        features[rows_of[h]] = f
                    pending_keys.extend(keys)
                    pending.append(out)
                    while len(pending_keys) >= shard_size:
                        block = np.concatenate(pending)
                        store.write(pending_keys[:shard_size], block[:shard_size])
                        # one statement: an interruption never sees keys and rows apart
                        pending_keys, pending = (
                            pending_keys[shard_size:],
                            [block[shard_size:]] if len(pending_keys) > shard_size else [],
                        )
                bar.update(b)
    except BaseException:
        # Ctrl-C (or an error) mid-run: keep what was computed since the last shard
        if store is not None and pending_keys:
            _flush_partial(store, pending_keys, pending)
        raise
    if store is not None and pending_keys:
        store.write(pending_keys, np.concatenate(pending))
    assert features is not None
    return features


def _flush_partial(store: FeatureCache, keys: list[str], blocks: list[np.ndarray]) -> None:
    """Write the features computed since the last full shard as one (smaller) shard.

    Called when extraction stops early (KeyboardInterrupt or an error), so that the next
    run computes only the rest.  Shards may hold any number of images, so this fits the
    cache as it is; a failure to write is logged, never raised over the interruption.
    """
    feats = np.concatenate(blocks) if blocks else np.empty((0, 0), np.float32)
    n = min(len(keys), feats.shape[0])  # an interruption between the two appends
    if n == 0:
        return
    try:
        store.write(keys[:n], feats[:n])
    except OSError as exc:
        logger.warning("Could not save %d computed features to the cache (%s).", n, exc)
        return
    logger.info("Saved %d computed features to the cache before stopping.", n)
