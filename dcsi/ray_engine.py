"""The Ray engine: the per-image and per-block work of :func:`dcsi.analyze` on Ray.

``engine="ray"`` (``dcsi analyze ... --engine ray [--ray-address ADDR]``) moves the
work whose cost grows with every image and every pixel -- read, decode, preprocess,
the CNN forward pass, the working-size grey array, the per-block class sums, the
wavelet coefficients and the query blocks of the exact near-duplicate search -- onto
Ray, and merges the results on the driver, so that the card is the local engine's
byte for byte (outside the ``created`` / ``finished`` timestamps):

======================  ==========================================================
where                   what
======================  ==========================================================
driver                  opens the source (lists the files or rows, hashes them: the
                        fingerprint and the cache keys), looks the features up in the
                        cache, cuts the images to compute into items of
                        :func:`~dcsi.similarity.class_cosine.stats_block_rows` images
                        (whole feature batches ``todo[0:b]``, ``todo[b:2b]``, ...;
                        one batch an item when no statistics are asked for)
Ray Data                one row per item (``from_items``), ``map_batches`` over a pool
                        of model actors: one per GPU when the cluster has GPUs, else
                        ``CPUs // threads`` CPU actors; results come back in source
                        order (``preserve_order``)
model actor             checks that its node sees the source's paths
(:class:`BlockActor`)   (:func:`check_storage`), builds the backbone once (same name,
                        weights, input size and pooling as the driver's; wrapped in
                        the ONNX extractor for ``runtime="onnx"``), reads each image of
                        its item from the source (a folder on shared storage, the row
                        groups of Parquet files, the Arrow files of a saved Hugging
                        Face dataset, or the array shipped with the actor), decodes it
                        with dcsi's decoder (:meth:`ImageSet.load`), runs the forward
                        pass batch by batch with the driver's thread count, makes the
                        grey working-size array from the same decode, the wavelet
                        coefficient row of that array (per image), and the
                        :class:`~dcsi.similarity.class_cosine.ClassStats` of every
                        positional block of ``block_rows`` images the item covers whole
driver                  stores the rows in source order, writes the cache shards,
                        merges the block statistics in block order
                        (:func:`~dcsi.similarity.class_cosine.class_stats` with
                        ``partials``: it computes only the blocks no actor covered
                        whole: those with cached or repeated images and, the items
                        being cut from the images to compute, those that a partly
                        warm cache leaves across two items), stacks the coefficient rows
                        (computing those of cached images), then runs the cnn_cosine
                        matrix, the index, clusters, the wavelet / SSIM matrices and
                        the near-duplicate search on them
Ray tasks               the query blocks of the exact candidate search
(:func:`ray_map`)       (:func:`dcsi.neighbors.radius_pairs`) and of the aligned stage
                        (:func:`dcsi.aligned.aligned_pairs`, against the k-d tree the
                        driver built), the shared arrays put in the object store once;
                        the driver concatenates the blocks' results in block order and
                        verifies the candidates exactly, as the local loop does.  The
                        faiss IVF search (``search="ann"``), the RRQR column
                        selection and the grouping stay on the driver
======================  ==========================================================

Sources a cluster can read: what the actors receive is the opened
:class:`~dcsi.sources.ImageSet` -- ids, labels, content hashes and a reader that knows
where each image lies (:meth:`~dcsi.sources.ImageSet.storage`) -- never the decoded
images, except for an in-memory array, which travels with the actors.  An image folder
is read by absolute path, Parquet files by row group (pyarrow, in the actor), a saved
Hugging Face dataset from its Arrow files.  These paths must be the same on every node
(shared storage): with ``--ray-address`` the driver looks a path source up on every
node before it reads it (:func:`check_source_on_nodes`), and each actor checks its node
when it starts; either fails in one :class:`~dcsi.exceptions.EngineError`.  Ray Data's
``read_parquet`` is not used: its blocks follow files and row groups, not the local
engine's batches, and it would decode with Ray's reader, not dcsi's.

``runtime="onnx"``: each actor exports the backbone it built (or reads the export the
driver's cache folder already holds) and runs an ONNX Runtime session with the driver's
thread count, exactly as :func:`dcsi.extract_features` does in one process; the actors
are CPU actors.

Identical bytes come from identical arithmetic: each actor sees the same batches, the
same decoder and the same torch thread count as the local engine (a forward pass's
reductions depend on both); a block's class sums are
:func:`~dcsi.similarity.class_cosine.block_stats` of the same float32 rows, whichever
process runs it, and both engines add the blocks in the same order from zeros; a
wavelet row depends on its image alone; the candidate blocks are the local loop's
blocks, merged in its order.

:func:`ray_session` starts a local Ray (``address=None``; the command's own, shut down
afterwards) or connects to a running cluster, with Ray's logging kept off the terminal.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dcsi import exceptions
from dcsi._validation import require
from dcsi.block_map import BlockMap, available_cpus, local_map
from dcsi.exceptions import DcsiError, EngineError, InvalidParameterError

__all__ = [
    "ENGINES",
    "BlockActor",
    "BlockTask",
    "FeatureActor",
    "RayRunner",
    "block_map",
    "check_engine",
    "check_source_on_nodes",
    "check_storage",
    "covered_block_stats",
    "engine_session",
    "feature_runner",
    "ray_map",
    "ray_session",
]

logger = logging.getLogger(__name__)

#: Engines of :func:`dcsi.analyze`.
ENGINES = ("local", "ray")
#: Brackets a dcsi error raised in an actor, so that the driver raises it again.
_MARK = "<<dcsi-error>>"
#: The fix of a source that a node of the cluster cannot see.
_STORAGE_FIX = (
    "Every node reads the source where it lies: put it on storage all nodes mount at the "
    "same absolute path, or leave --ray-address out to run on this machine."
)
#: Seconds to wait for a TCP connection to ``--ray-address`` before giving up.
CONNECT_TIMEOUT = 5.0


def check_engine(engine: str, ray_address: str | None, caller: str = "analyze") -> None:
    """Check ``engine`` and ``ray_address`` before any data is read.

    Raises
    ------
    InvalidParameterError
        An unknown engine, or an address given to the local engine.
    MissingDependencyError
        ``engine="ray"`` without Ray installed.
    """
    from dcsi._validation import check_choice

    check_choice(engine, "engine", caller, ENGINES)
    if engine == "local" and ray_address is not None:
        raise InvalidParameterError(
            f"The 'ray_address' parameter of {caller} applies to engine='ray' "
            "(--engine ray). Add it, or leave the address out."
        )
    if engine == "ray":
        require("ray.data", "The Ray engine", "dcsi[ray]")


def _probe(address: str) -> None:
    """Fail fast, in one line, when ``host:port`` does not accept a connection."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise InvalidParameterError(
            f"The Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT, or 'auto'). "
            "Give the head node's address, e.g. 10.0.0.5:6379."
        )
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise EngineError(
            f"Cannot reach a Ray cluster at {address} ({exc.strerror or exc}). Start one "
            "with `ray start --head` there, check the address, or leave --ray-address out "
            "to start a local Ray."
        ) from None


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, connected for the block: the running session, a cluster, or a local one.

    Parameters
    ----------
    address : str, default=None
        ``None``: start a local Ray for this block (``num_cpus`` CPUs, no dashboard,
        worker logs kept off the terminal) and shut it down afterwards.  ``"auto"``,
        ``HOST:PORT`` or ``ray://HOST:PORT``: connect to that cluster (left running).
        When Ray is already initialised in this process, that session is used as is.
    num_cpus : int, default=None
        CPUs of a local Ray; None: the CPUs this process may use.

    Yields
    ------
    module
        The ``ray`` module.

    Raises
    ------
    EngineError
        The cluster cannot be reached (checked with a TCP connection first, within
        :data:`CONNECT_TIMEOUT` seconds, before any long work).
    """
    ray = require("ray", "The Ray engine", "dcsi[ray]")
    if ray.is_initialized():
        yield ray
        return
    if address is not None and address != "auto":
        _probe(address)
    _quiet()
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    if address is None:
        kwargs["num_cpus"] = num_cpus or available_cpus()
        # Ray runs its workers at nice 15 by default; the command's own Ray does the
        # command's main work, at the command's priority (a cluster keeps its setting)
        kwargs["_system_config"] = {"worker_niceness": 0}
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise EngineError(
            f"Cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]} "
            "Start one with `ray start --head`, or leave --ray-address out to start a "
            "local Ray."
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def engine_session(
    engine: str, ray_address: str | None, source: Any = None
) -> contextlib.AbstractContextManager:
    """:func:`ray_session` for ``engine="ray"``, a no-op for the local engine.

    ``source`` (what :func:`dcsi.open_source` is about to open): once connected, it is
    looked up on every node of the cluster (:func:`check_source_on_nodes`) before the
    source is read."""
    if engine == "ray":
        return _checked_session(ray_address, source)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _checked_session(ray_address: str | None, source: Any) -> Iterator[Any]:
    with ray_session(ray_address) as ray:
        check_source_on_nodes(source, ray_address)
        yield ray


def feature_runner(
    engine: str,
    *,
    backbone: Any,
    weights: str | os.PathLike[str] | None,
    pooling: str,
    threads: int,
    device: str,
    blocks: BlockTask | None = None,
    runtime: str = "torch",
    cache: str | os.PathLike[str] | bool | None = None,
) -> RayRunner | None:
    """The :class:`dcsi.features.BatchRunner` of an engine (None: the local one).

    A registered backbone (a name) is rebuilt in each actor from these options; an
    extractor object is shipped to the actors as it is.  ``runtime="onnx"`` wraps the
    rebuilt backbone in :class:`~dcsi.backbones.onnx_runtime.OnnxExtractor` as
    :func:`dcsi.extract_features` does (the exported model cached under ``cache``, the
    same folder as the driver's), on CPU actors only.  ``blocks``: the actors also
    compute the class statistics of the blocks they cover (:attr:`RayRunner.partials`).
    """
    if engine != "ray":
        return None
    build = None
    if isinstance(backbone, str):
        build = {"name": backbone, "weights": weights, "pooling": pooling}
        if runtime == "onnx":
            from dcsi.features import cache_root

            root = cache_root(cache)
            build.update(runtime="onnx", onnx_cache=None if root is None else str(root))
    return RayRunner(
        build=build,
        threads=threads,
        device="cpu" if runtime == "onnx" else device,
        blocks=blocks,
    )


def check_source_on_nodes(source: Any, ray_address: str | None) -> None:
    """Before a source is read: check that every node of a Ray cluster sees it.

    Call it inside :func:`ray_session`.  With ``ray_address`` (a cluster the command
    connected to), a source given as a path -- an image folder, Parquet files, a saved
    Hugging Face dataset -- is looked up on every alive node at the absolute path the
    driver sees, by one zero-CPU task per node, before the driver spends its time
    hashing the images.  A local Ray (``ray_address=None``), ``hf:`` and ``sample:``
    sources and in-memory arrays are not checked here (a path that does not exist at
    all is :func:`dcsi.open_source`'s error); each model actor checks its node again
    (:func:`check_storage`).

    Raises
    ------
    EngineError
        Nodes that do not see the path, named.
    """
    if ray_address is None or not isinstance(source, (str, os.PathLike)):
        return
    text = os.fspath(source)
    if text.startswith(("hf:", "sample:")) or not os.path.exists(os.path.expanduser(text)):
        return
    path = os.path.abspath(os.path.expanduser(text))
    missing = _nodes_missing(path)
    if missing:
        raise EngineError(
            f"{len(missing)} node(s) of the Ray cluster at {ray_address} cannot see {path} "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}). {_STORAGE_FIX}"
        )


def _path_exists(path: str) -> bool:
    return os.path.exists(path)


def _nodes_missing(path: str) -> list[str]:
    """Addresses of the alive nodes of the connected cluster where ``path`` is not."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_path_exists)
    nodes = [node for node in ray.nodes() if node["Alive"]]
    refs = [
        probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(path)
        for node in nodes
    ]
    seen = ray.get(refs)
    return [str(node["NodeManagerAddress"]) for node, ok in zip(nodes, seen) if not ok]


def check_storage(image_set: Any) -> None:
    """Check, on the node this runs on, that the paths the images are read from exist.

    Parameters
    ----------
    image_set : ImageSet

    Raises
    ------
    EngineError
        A path of :meth:`ImageSet.storage` (the image folder, the Parquet files, the
        Arrow files of a Hugging Face dataset) is not there: the node does not mount
        the driver's storage at the same path.
    """
    for path in image_set.storage():
        if not os.path.exists(path):
            raise EngineError(
                f"The Ray node {socket.gethostname()} cannot see {path}, where the images "
                f"of {image_set.source} are read from. {_STORAGE_FIX}"
            )


def _quiet() -> None:
    """Keep Ray's and Ray Data's log lines off the terminal (Ray Data sets its own
    levels when imported, so this runs again after the import)."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class FeatureActor:
    """A Ray actor holding one backbone: one batch of positions in, its rows out.

    Parameters
    ----------
    image_set : ImageSet
        The opened source (its backend reads each image from where it lies).
    todo : ndarray of shape (m,), int64
        Positions to compute; an item row ``{"start", "stop", "batch"}`` indexes it
        (``batch``: the feature batch size, which cuts the item as the local engine
        cuts ``todo``).
    build : dict or Extractor
        Keyword arguments of :func:`dcsi.backbones.get_backbone` (a registered
        backbone, rebuilt here), or the extractor object itself.
    threads : int
        torch intra-op threads (the driver's count: same reductions, same bytes).
    arrays : ((h, w), mode) or None
        Also return each image as :func:`dcsi.sources.image_to_array` makes it.
    """

    def __init__(
        self,
        image_set: Any,
        todo: np.ndarray,
        build: Any,
        threads: int,
        arrays: tuple[tuple[int, int], str] | None,
    ) -> None:
        import torch

        try:
            check_storage(image_set)
        except DcsiError as exc:
            raise _marked(exc) from exc
        torch.set_num_threads(threads)
        if isinstance(build, dict):
            from dcsi.backbones import get_backbone

            options = dict(build)
            runtime = options.pop("runtime", "torch")
            onnx_cache = options.pop("onnx_cache", None)
            build = get_backbone(**options)
            if runtime == "onnx":
                from dcsi.backbones.onnx_runtime import OnnxExtractor

                build = OnnxExtractor(build, cache_dir=onnx_cache)
        self.extractor = build
        self.image_set = image_set
        self.todo = todo
        self.arrays = arrays

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows ``pos`` (b,), ``features`` (b, d) and, when asked, ``arrays`` of the
        items ``todo[start:stop]`` of ``batch``, each run in feature batches of
        ``batch`` images.  A dcsi error is passed on with its class and message marked,
        for the driver to raise it again as it was."""
        try:
            return self._rows(batch)
        except DcsiError as exc:
            raise _marked(exc) from exc

    def _rows(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {"pos": [], "features": [], "arrays": []}
        for start, stop, size in zip(batch["start"], batch["stop"], batch["batch"]):
            # an item of whole feature batches, cut as the local engine cuts ``todo``
            for s in range(int(start), int(stop), int(size)):
                self._batch(self.todo[s : min(s + int(size), int(stop))], out)
        return {k: np.concatenate(v) for k, v in out.items() if v}

    def _batch(self, part: np.ndarray, out: dict[str, list[np.ndarray]]) -> None:
        """Positions, features and (when asked) arrays of one feature batch, appended
        to ``out``'s lists."""
        import torch

        from dcsi.features import TransformedImages

        view = TransformedImages(self.image_set, part, self.extractor.transform, self.arrays)
        items = [view[k] for k in range(len(view))]
        inputs = items if self.arrays is None else [x for x, _ in items]
        with torch.inference_mode():
            feats = self.extractor(torch.stack(inputs))
        if hasattr(feats, "detach"):
            feats = feats.detach().cpu().numpy()
        out["pos"].append(np.asarray(part, dtype=np.int64))
        out["features"].append(np.asarray(feats))
        if self.arrays is not None:
            out["arrays"].append(np.stack([a for _, a in items]))


@dataclass(frozen=True)
class BlockTask:
    """What the actors compute besides the features: the per-block class statistics
    and the per-image wavelet coefficient rows of their items.

    Attributes
    ----------
    labels : ndarray of shape (n,), int64, or None
        Class id of every image of the source (shipped once with each actor); None:
        no class statistics.
    n_classes : int
    block_rows : int
        Rows per positional block of :func:`dcsi.similarity.class_cosine.class_stats`
        (:func:`~dcsi.similarity.class_cosine.stats_block_rows` of the batch size: whole
        feature batches); the images of one Ray item.
    wavelet : (wavelet, level, mode) or None
        Also the rows of :func:`dcsi.similarity.wavelet.wavelet_coefficients` of each
        grey array (one image each: the same bits wherever computed).
    """

    labels: np.ndarray | None
    n_classes: int
    block_rows: int
    wavelet: tuple[str, int, str] | None = None


class BlockActor(FeatureActor):
    """A :class:`FeatureActor` that also returns the class statistics of every
    positional block its item covers whole, and the wavelet coefficients of its images.

    An item covers block ``j`` when it computed every position of
    ``[j * block_rows, (j + 1) * block_rows)`` (a block with cached or repeated images
    is left to the driver).  The :func:`~dcsi.similarity.class_cosine.block_stats` of
    the block's float32 feature rows -- the arithmetic the driver's
    :func:`~dcsi.similarity.class_cosine.class_stats` would run on the same rows --
    come back in the ``stats`` column (first row of the item: ``{j: ClassStats}``), the
    coefficient rows in ``coefficients``.

    Parameters
    ----------
    blocks : BlockTask or None
        None: features and arrays only.
    **kwargs
        Those of :class:`FeatureActor`.
    """

    def __init__(self, *, blocks: BlockTask | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.blocks = blocks

    def _rows(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super()._rows(batch)
        task = self.blocks
        if task is None or not len(out["pos"]):
            return out
        if task.labels is not None:
            stats = np.empty(len(out["pos"]), dtype=object)
            stats[0] = covered_block_stats(out["pos"], out["features"], task, len(self.image_set))
            out["stats"] = stats
        if task.wavelet is not None and "arrays" in out:
            from dcsi.similarity.wavelet import wavelet_coefficients

            name, level, mode = task.wavelet
            out["coefficients"] = wavelet_coefficients(
                out["arrays"], wavelet=name, level=level, mode=mode
            )
        return out


def covered_block_stats(
    pos: np.ndarray, features: np.ndarray, blocks: BlockTask, n: int
) -> dict[int, Any]:
    """:func:`~dcsi.similarity.class_cosine.block_stats` of every positional block
    whose positions all lie in ``pos``.

    Parameters
    ----------
    pos : ndarray of shape (m,), int64
        Positions computed, in ascending order (the order of ``todo``).
    features : ndarray of shape (m, d)
        Their features (taken as float32, as the driver stores them).
    blocks : BlockTask
    n : int
        Images in the source (the last block may be shorter).

    Returns
    -------
    dict of int to ClassStats
        By block number.
    """
    from dcsi.similarity.class_cosine import block_stats

    rows = blocks.block_rows
    assert blocks.labels is not None  # the caller asks for class statistics
    out: dict[int, Any] = {}
    for j in np.unique(pos // rows):
        lo, hi = int(j) * rows, min((int(j) + 1) * rows, n)
        sel = np.flatnonzero((pos >= lo) & (pos < hi))
        if len(sel) == hi - lo and np.array_equal(pos[sel], np.arange(lo, hi)):
            x = np.asarray(features[sel], dtype=np.float32)
            out[int(j)] = block_stats(x, blocks.labels[lo:hi], blocks.n_classes)
    return out


@dataclass(frozen=True)
class RayRunner:
    """A :class:`dcsi.features.BatchRunner` that runs the model in Ray actors.

    Call it inside :func:`ray_session`.  One actor per GPU when the cluster has GPUs
    (and ``device`` is not ``"cpu"``); else ``max(1, CPUs // threads)`` CPU actors,
    each reserving ``min(threads, largest node's CPUs)`` CPUs; never more actors than
    items.  Each item (a feature batch, or with ``blocks`` one statistics block of whole
    batches) is one block of the Ray dataset, so every actor gets work.

    Parameters
    ----------
    build : dict or None
        Keyword arguments of :func:`dcsi.backbones.get_backbone` except ``image_size``
        and ``device`` (taken from the driver's extractor and the actor's device);
        None ships the driver's extractor object to the actors as it is.
    threads : int
        torch intra-op threads in each actor: the driver's
        :func:`dcsi.features.choose_num_threads` (the same reductions as the local
        engine, hence the same bytes).
    device : {"auto", "cpu", "cuda"}, default="auto"
    blocks : BlockTask, default=None
        Also compute the class statistics of the positional blocks and the wavelet
        coefficient rows: each Ray item is then one block of ``todo`` (``block_rows``
        images, whole feature batches); the actors' :func:`covered_block_stats` land
        in :attr:`partials`, their coefficient rows in :attr:`coefficient_rows`
        (gathered by :meth:`coefficients`).
    partials : dict of int to ClassStats
        Filled by each call (emptied first): the ``partials`` argument of
        :func:`dcsi.similarity.class_cosine.class_stats`.
    coefficient_rows : list of (positions, rows)
        Filled by each call (emptied first): the actors' wavelet coefficient rows.
    """

    build: dict[str, Any] | None
    threads: int
    device: str = "auto"
    blocks: BlockTask | None = None
    partials: dict[int, Any] = field(default_factory=dict, compare=False, repr=False)
    coefficient_rows: list[tuple[np.ndarray, np.ndarray]] = field(
        default_factory=list, compare=False, repr=False
    )

    def coefficients(self, grey: np.ndarray) -> np.ndarray | None:
        """The wavelet coefficient rows of every image (None unless the actors made
        them, :attr:`BlockTask.wavelet`): the actors' rows at their positions, the
        other images' (cached or repeated) computed here from ``grey``.

        Parameters
        ----------
        grey : ndarray of shape (n, h, w), uint8
            The arrays of every image (the actors' among them).

        Returns
        -------
        ndarray of shape (n, d), float32, or None
        """
        if self.blocks is None or self.blocks.wavelet is None:
            return None
        from dcsi.similarity.wavelet import n_coefficients, wavelet_coefficients

        name, level, mode = self.blocks.wavelet
        kw: dict[str, Any] = {"wavelet": name, "level": level, "mode": mode}
        W = np.empty((len(grey), n_coefficients(grey.shape[1:], **kw)), dtype=np.float32)
        done = np.zeros(len(grey), dtype=bool)
        for pos, rows in self.coefficient_rows:
            W[pos] = rows
            done[pos] = True
        rest = np.flatnonzero(~done)
        if len(rest):
            W[rest] = wavelet_coefficients(grey[rest], **kw)
        return W

    def __call__(
        self,
        image_set: Any,
        todo: np.ndarray,
        extractor: Any,
        *,
        batch_size: int,
        arrays: tuple[tuple[int, int], str] | None,
    ) -> Iterator[tuple[np.ndarray, Any, np.ndarray | None]]:
        import ray
        import ray.data

        _quiet()
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        total = ray.cluster_resources()
        gpus = int(total.get("GPU", 0)) if self.device != "cpu" else 0
        if self.device.startswith("cuda") and gpus == 0:
            raise EngineError(
                "--device cuda with --engine ray needs GPUs in the Ray cluster, which has "
                "none. Use --device auto or cpu, or add GPU nodes."
            )
        build: Any = extractor
        if self.build is not None:
            size = getattr(extractor, "image_size", None)
            build = {**self.build, "image_size": size, "device": "cuda" if gpus else "cpu"}
        n = len(todo)
        # one item per statistics block (whole feature batches), else per feature batch
        step = batch_size if self.blocks is None else self.blocks.block_rows
        rows = [
            {"start": s, "stop": min(s + step, n), "batch": batch_size} for s in range(0, n, step)
        ]
        options: dict[str, Any]
        if gpus:
            actors = min(gpus, len(rows))
            options = {"num_gpus": 1, "compute": ray.data.ActorPoolStrategy(size=actors)}
        else:
            node_cpus = max(
                (node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]),
                default=1,
            )
            cpus = max(1.0, min(float(self.threads), float(node_cpus)))
            actors = max(1, min(int(total.get("CPU", 1) // cpus), len(rows)))
            options = {"num_cpus": cpus, "compute": ray.data.ActorPoolStrategy(size=actors)}
        logger.info(
            "Ray engine: %d items of %d images (batches of %d) over %s.",
            len(rows),
            step,
            batch_size,
            f"{gpus} GPU actor(s)"
            if gpus
            else f"{actors} CPU actor(s) of {self.threads} torch thread(s)",
        )
        # one Ray block per item, so that every actor of the pool gets work
        self.partials.clear()
        self.coefficient_rows.clear()
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            BlockActor,
            fn_constructor_kwargs={
                "blocks": self.blocks,
                "image_set": image_set,
                "todo": np.asarray(todo, dtype=np.int64),
                "build": build,
                "threads": self.threads,
                "arrays": arrays,
            },
            batch_size=1,
            batch_format="numpy",
            **options,
        )
        failed: DcsiError | None = None
        try:
            for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for found in out.get("stats", ()):
                    self.partials.update(found or {})
                if "coefficients" in out:
                    self.coefficient_rows.append(
                        (np.asarray(out["pos"]), np.asarray(out["coefficients"]))
                    )
                side = out.get("arrays")
                yield (
                    np.asarray(out["pos"]),
                    np.asarray(out["features"]),
                    None if side is None else np.asarray(side),
                )
        except ray.exceptions.RayError as exc:
            failed = _dcsi_error(exc)
            if failed is None:
                raise
        if failed is not None:
            # Ray's traceback is gone with the except block: collecting it now stops the
            # executor and frees its actors' CPUs (else held until the collector runs,
            # and a later Ray stage in this process could wait on them for ever)
            del ds
            gc.collect()
            raise failed


def ray_map(fn: Any, shared: tuple[Any, ...], items: Sequence[Any]) -> Iterator[Any]:
    """The Ray :class:`dcsi.block_map.BlockMap`: one Ray task (1 CPU) per item.

    ``shared`` is put in the object store once and read by every task without a copy
    (numpy arrays); the tasks are all submitted, then their results are yielded in
    item order.  Call it inside :func:`ray_session`.
    """
    import ray

    refs = [ray.put(a) for a in shared]
    task = ray.remote(num_cpus=1)(fn)
    pending = [task.remote(*refs, item) for item in items]
    try:
        for ref in pending:
            yield ray.get(ref)
    except ray.exceptions.RayError as exc:
        raise (_dcsi_error(exc) or exc) from exc


def block_map(engine: str) -> BlockMap:
    """The :class:`dcsi.block_map.BlockMap` of an engine: :func:`ray_map` or
    :func:`dcsi.block_map.local_map`."""
    return ray_map if engine == "ray" else local_map


def _marked(exc: DcsiError) -> RuntimeError:
    """An actor's dcsi error, its class and message marked for :func:`_dcsi_error`."""
    return RuntimeError(f"{_MARK}{type(exc).__name__}:{exc}{_MARK}")


def _dcsi_error(exc: BaseException) -> DcsiError | None:
    """The dcsi error an actor marked in ``exc``'s text (:class:`FeatureActor`)."""
    text = str(exc)
    start = text.find(_MARK)
    end = text.find(_MARK, start + len(_MARK))
    if start < 0 or end < 0:
        return None
    name, _, message = text[start + len(_MARK) : end].partition(":")
    cls = getattr(exceptions, name, None)
    if not (isinstance(cls, type) and issubclass(cls, DcsiError)):
        cls = DcsiError
    return cls(message)
