"""``analyze``: the one place where the stages are chained into a dataset card.

images -> features -> class similarity -> class clusters + index
       -> SSIM / wavelet class matrices -> redundancy groups -> Card

The source is opened once (:func:`analyze`, or the CLI; opening checks every file) and
every stage takes the opened :class:`~dcsi.sources.ImageSet` or arrays.  Each image is
decoded once more after that: the feature extractor returns the grey array of every
image it decodes (``extract_features(..., arrays=...)``; images served from the
feature cache are decoded for the array alone), and that one array feeds the SSIM and
wavelet class matrices and the near-duplicate search.  The CNN features serve both the
class matrix and ``redundancy_method="cnn"``.

``engine="ray"`` runs that feature stage (decode, forward pass, grey arrays) in Ray
model actors (:mod:`dcsi.ray_engine`), which also return the class sums of the blocks
they cover and the wavelet coefficient rows; the driver merges them, and the exact
near-duplicate search runs its query blocks as Ray tasks.  The card is the same, byte
for byte: the class sums are added in blocks of ``stats_block_rows(batch_size)`` rows
on both engines.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from dcsi import __version__
from dcsi._json import to_jsonable
from dcsi._validation import check_choice, check_int
from dcsi.exceptions import DataError, InvalidParameterError
from dcsi.ray_engine import (
    BlockTask,
    block_map,
    check_engine,
    engine_session,
    feature_runner,
)
from dcsi.redundancy import METHODS

__all__ = ["ANALYZERS", "analyze", "analyze_images", "check_parameters"]

logger = logging.getLogger(__name__)

ANALYZERS = ("cnn", "ssim", "wavelet")
DEFAULT_ANALYZERS = ANALYZERS


def _parse_analyzers(analyzers: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(analyzers, str):
        analyzers = [a.strip() for a in analyzers.split(",") if a.strip()]
    out = []
    for a in analyzers:
        check_choice(a, "analyzers", "analyze", ANALYZERS)
        if a not in out:
            out.append(a)
    if not out:
        raise InvalidParameterError(
            "The 'analyzers' parameter of analyze must name at least one of "
            + ", ".join(ANALYZERS)
            + ". Got an empty list instead."
        )
    return tuple(out)


def check_parameters(
    *,
    analyzers: str | Sequence[str] = DEFAULT_ANALYZERS,
    seed: int = 0,
    batch_size: int = 64,
    redundancy_method: str = "wavelet",
    backbone: Any = "efficientnet_lite0",
    weights: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    size: int | None = None,
    pooling: str = "gap",
    runtime: str = "torch",
    device: str = "auto",
    engine: str = "local",
    ray_address: str | None = None,
) -> tuple[str, ...]:
    """Check :func:`analyze`'s own options before any data is read.

    Returns the chosen analyzers; raises :class:`~dcsi.exceptions.InvalidParameterError`
    (or :class:`~dcsi.exceptions.DataError` for a missing weights file) with one line
    saying what to change.
    """
    chosen = _parse_analyzers(analyzers)
    check_int(seed, "seed", "analyze", min_value=0)
    check_int(batch_size, "batch_size", "analyze", min_value=1)
    check_choice(redundancy_method, "redundancy_method", "analyze", METHODS)
    if image_size is not None:
        check_int(image_size, "image_size", "analyze", min_value=32, max_value=1024)
    if size is not None:
        check_int(size, "size", "analyze", min_value=4)
    if isinstance(backbone, str):
        from dcsi.backbones import list_backbones

        check_choice(backbone, "backbone", "analyze", list_backbones())
    from dcsi.backbones import check_pooling

    check_pooling(pooling, backbone, "analyze")
    from dcsi.backbones.onnx_runtime import check_runtime

    check_runtime(runtime, "analyze", device=device)
    check_engine(engine, ray_address)
    if weights is not None and not Path(weights).expanduser().is_file():
        raise DataError(
            f"--weights {weights}: no such file. Give a state-dict file "
            "(torch.save(model.state_dict())) or leave --weights out."
        )
    return chosen


def _versions(runtime: str = "torch") -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "dcsi": __version__}
    for pkg in (
        "numpy",
        "scipy",
        "scikit-learn",
        "scikit-image",
        "PyWavelets",
        "torch",
        "torchvision",
        *(("onnxruntime", "onnx") if runtime == "onnx" else ()),
    ):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def analyze(
    source: Any,
    *,
    labels: Any = None,
    backbone: Any = "efficientnet_lite0",
    weights: str | None = None,
    analyzers: str | Sequence[str] = DEFAULT_ANALYZERS,
    image_size: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    max_per_class: int | None = None,
    seed: int = 0,
    cache: Any = None,
    split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    linkage: str = "average",
    redundancy_method: str = "wavelet",
    size: int | None = None,
    neighbor_index: str | os.PathLike[str] | None = None,
    neighbor_k: int = 10,
    command: str | None = None,
    pooling: str = "gap",
    runtime: str = "torch",
    engine: str = "local",
    ray_address: str | None = None,
):
    """Analyze an image dataset and return its dataset card.

    Parameters
    ----------
    source : str, path, ndarray of shape (n, h, w[, c]) uint8, or ImageSet
        An image folder, a saved Hugging Face dataset, ``"hf:<repo>[:<config>]"``,
        ``"sample:digits"`` / ``"sample:fashion-mnist"``, or in-memory images.
    labels : array-like of shape (n,), default=None
        Labels for in-memory images.
    backbone : str or Extractor, default="efficientnet_lite0"
        Feature extractor for the ``cnn`` analyzer (see ``dcsi.list_backbones()``).
    weights : str, default=None
        Path to backbone weights (a state dict loaded with ``weights_only=True``).
    analyzers : str or sequence of {"cnn", "ssim", "wavelet"}, default=all three
        Class-similarity analyzers to run; a comma-separated string is accepted.
    image_size : int, default=None
        Backbone input size; ``None`` picks it from the images (see ``extract_features``).
    batch_size : int, default=64
    device : {"auto", "cpu", "cuda"}, default="auto"
    max_per_class : int, default=None
        Use at most this many images per class (a seeded random subset).
    seed : int, default=0
        Seed for every random choice; same input and seed give the same card.
    cache : str, path or False, default=None
        Feature cache folder (``None``: ``$DCSI_CACHE`` or ``~/.cache/dcsi``).
    split, image_column, label_column : str, default=None
        Which split and columns to read (auto-detected when omitted).
    linkage : {"single", "complete", "average", "ward"}, default="average"
        Linkage of the hierarchical clustering of classes.
    redundancy_method : {"wavelet", "ssim", "cnn"}, default="wavelet"
        Method of the near-duplicate search stored in the card.
    size : int, default=None
        Size (pixels, square) at which the pixel-space stages (SSIM and wavelet class
        matrices, the near-duplicate search) compare the images; ``None``: the working
        size of :meth:`~dcsi.sources.ImageSet.working_size` (the native or median size,
        its longer side capped at 32 px, aspect kept), recorded in
        ``provenance.parameters.working_size``.
    neighbor_index : path, default=None
        Also build the neighbour index from the CNN features (extracted once) and write
        it to this folder, normally ``<card folder>/neighbor_index``; the card's
        ``neighbor_index`` block gives its files relative to the folder's parent (the
        card folder).  See :func:`dcsi.build_neighbor_index`.
    neighbor_k : int, default=10
        Neighbours per image in the index.
    command : str, default=None
        The command line, recorded in the card's provenance.
    pooling : {"gap", "ga", "sap", "sam"}, default="gap"
        Feature pooling of the backbone (see :func:`dcsi.extract_features`); the card's
        ``features.pooling``.
    runtime : {"torch", "onnx"}, default="torch"
        What runs the backbone's forward pass (see :func:`dcsi.extract_features`):
        ONNX Runtime on the CPU needs ``dcsi[onnx]``; recorded in
        ``provenance.parameters.runtime``.
    engine : {"local", "ray"}, default="local"
        Where the per-image work (decode, CNN features, grey arrays) runs: this
        process, or Ray model actors (:mod:`dcsi.ray_engine`; needs ``dcsi[ray]``).
        Both give the same card bytes (outside the timestamps).
    ray_address : str, default=None
        With ``engine="ray"``: ``None`` starts a local Ray for the call (shut down
        afterwards); ``"auto"``, ``HOST:PORT`` or ``ray://HOST:PORT`` connects to a
        running cluster.

    Returns
    -------
    Card
    """
    from dcsi.sources import open_source

    check_parameters(
        analyzers=analyzers,
        seed=seed,
        batch_size=batch_size,
        redundancy_method=redundancy_method,
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        size=size,
        pooling=pooling,
        runtime=runtime,
        device=device,
        engine=engine,
        ray_address=ray_address,
    )
    # reached before the source is read; a cluster's nodes are checked for the source
    with engine_session(engine, ray_address, source):
        images = open_source(
            source,
            labels=labels,
            split=split,
            image_column=image_column,
            label_column=label_column,
            max_per_class=max_per_class,
            seed=seed,
        )
        return analyze_images(
            images,
            backbone=backbone,
            weights=weights,
            analyzers=analyzers,
            image_size=image_size,
            batch_size=batch_size,
            device=device,
            max_per_class=max_per_class,
            seed=seed,
            cache=cache,
            linkage=linkage,
            redundancy_method=redundancy_method,
            size=size,
            neighbor_index=neighbor_index,
            neighbor_k=neighbor_k,
            command=command,
            pooling=pooling,
            runtime=runtime,
            engine=engine,
            ray_address=ray_address,
        )


def analyze_images(
    images: Any,
    *,
    backbone: Any = "efficientnet_lite0",
    weights: str | None = None,
    analyzers: str | Sequence[str] = DEFAULT_ANALYZERS,
    image_size: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    max_per_class: int | None = None,
    seed: int = 0,
    cache: Any = None,
    linkage: str = "average",
    redundancy_method: str = "wavelet",
    size: int | None = None,
    neighbor_index: str | os.PathLike[str] | None = None,
    neighbor_k: int = 10,
    command: str | None = None,
    pooling: str = "gap",
    runtime: str = "torch",
    engine: str = "local",
    ray_address: str | None = None,
):
    """:func:`analyze` on an already opened :class:`~dcsi.sources.ImageSet`.

    The parameters are those of :func:`analyze`; ``max_per_class`` only caps the
    per-class SSIM estimator here (the subset is taken when the source is opened).
    With ``engine="ray"``, a Ray session already open in this process is used as is.
    """
    from dcsi.card import Card

    chosen = check_parameters(
        analyzers=analyzers,
        seed=seed,
        batch_size=batch_size,
        redundancy_method=redundancy_method,
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        size=size,
        pooling=pooling,
        runtime=runtime,
        device=device,
        engine=engine,
        ray_address=ray_address,
    )
    started = datetime.now(timezone.utc)

    n_classes = len(images.classes)
    class_level = images.labels is not None and n_classes >= 2
    if images.labels is not None and n_classes < 2:
        logger.warning("%s has fewer than two classes: no class-level analysis.", images.name)
    dataset = images.to_dict()
    dataset["skipped"] = [s.to_dict() for s in images.skipped]
    data: dict[str, Any] = {"dataset": dataset, "similarity": {}}

    features = grey = runner = None
    num_threads = None
    check_int(neighbor_k, "neighbor_k", "analyze", min_value=1)
    working = images.working_size(size)  # the pixel-space stages' size, bounded
    # one Ray session for the feature stage and the candidate search (the running one
    # when the caller holds it; engine="local": nothing)
    with engine_session(engine, ray_address):
        if "cnn" in chosen or redundancy_method == "cnn" or neighbor_index is not None:
            from dcsi.features import choose_num_threads, extract_features

            num_threads = choose_num_threads()
            runner = feature_runner(
                engine,
                backbone=backbone,
                weights=weights,
                pooling=pooling,
                threads=num_threads,
                device=device,
                blocks=_block_task(
                    images,
                    class_sums=class_level and "cnn" in chosen,
                    wavelet=redundancy_method == "wavelet" or (class_level and "wavelet" in chosen),
                    working=working,
                    batch_size=batch_size,
                )
                if engine == "ray"
                else None,
                runtime=runtime,
                cache=cache,
            )
            fs = extract_features(
                images,
                backbone=backbone,
                weights=weights,
                image_size=image_size,
                batch_size=batch_size,
                device=device,
                cache=cache,
                num_threads=num_threads,
                arrays=(working, "L"),
                pooling=pooling,
                runtime=runtime,
                runner=runner,
            )
            features, grey = fs.features, fs.arrays
        if neighbor_index is not None:
            data["neighbor_index"] = _neighbor_index_block(fs, neighbor_index, neighbor_k, seed)
        if features is not None and len(images) >= 3:  # Thomas & Abraham, labelled or not
            data["image_clusters"] = image_clusters_block(images, features, seed=seed)
        if grey is None:  # decoded once, shared by the stages below
            grey = images.to_array(size=working, mode="L")
        # the Ray actors' wavelet coefficient rows (None: computed by the stages below)
        coefficients = None if runner is None else runner.coefficients(grey)
        wavelet = None
        if class_level and "wavelet" in chosen:  # before the index, which it feeds
            from dcsi.similarity.wavelet import class_wavelet_similarity

            wavelet = class_wavelet_similarity(
                grey,
                images.labels,
                n_classes=n_classes,
                classes=list(images.classes),
                coefficients=coefficients,
            )
        if "cnn" in chosen:
            cnn = _cnn_blocks(
                fs,
                images,
                class_level,
                linkage=linkage,
                batch_size=batch_size,
                partials=None if runner is None else runner.partials,
                wavelet=None if wavelet is None else (wavelet.matrix, wavelet.spreads),
            )
            data["similarity"].update(cnn.pop("similarity", {}))
            data.update(cnn)
        if class_level and "ssim" in chosen:
            from dcsi.similarity.ssim import class_ssim

            data["similarity"]["ssim"] = class_ssim(
                grey,
                images.labels,
                n_classes=n_classes,
                max_per_class=max_per_class,
                seed=seed,
            ).to_dict()
        if class_level and "ssim" in chosen:  # Yousefzadeh's per-class views (§5.4)
            from dcsi.class_views import class_views

            data["class_views"] = class_views(
                grey, images.labels, list(images.classes), ids=list(images.ids), seed=seed
            ).to_dict()
        if wavelet is not None:
            data["similarity"]["wavelet"] = wavelet.to_dict()

        from dcsi.redundancy import find_redundancy

        data["redundancy"] = find_redundancy(
            grey,
            images.labels,
            method=redundancy_method,
            features=features,
            backbone=backbone,
            ids=list(images.ids),
            classes=list(images.classes),
            seed=seed,
            map_blocks=block_map(engine),
            coefficients=coefficients if redundancy_method == "wavelet" else None,
        ).to_dict()

    data["provenance"] = {
        "versions": _versions(runtime),
        "parameters": {
            "analyzers": list(chosen),
            "backbone": backbone
            if isinstance(backbone, str)
            else getattr(backbone, "name", "custom"),
            "weights": str(weights) if weights is not None else None,
            "image_size": image_size,
            "pooling": pooling,
            "runtime": runtime,
            "batch_size": batch_size,
            "device": device,
            "max_per_class": max_per_class,
            "seed": seed,
            "linkage": linkage,
            "redundancy_method": redundancy_method,
            "size": size,
            "working_size": list(working),
            "num_threads": num_threads,
        },
        "command": command or " ".join(sys.argv),
        "created": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return Card.from_dict(data)


#: Points of the image map kept in the card (a seeded sample; the report draws them).
MAP_POINTS = 5000


def image_clusters_block(images: Any, features: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """The card's ``image_clusters`` block: :func:`dcsi.cluster_images` on the features
    (compared with the classes when there are labels) and a 2-D map of the images.

    Parameters
    ----------
    images : ImageSet
        Lends the ids, labels and class names.
    features : ndarray of shape (n, d)
    seed : int, default=0

    Returns
    -------
    dict
        ``ImageClusters.to_dict()`` plus ``map``: ``method``, ``xy`` (the
        :func:`dcsi.image_map` of a seeded sample of at most :data:`MAP_POINTS`
        images, drawn first so that only the kept points are embedded; rounded to 3
        decimals), ``cluster`` and, with labels, ``label`` of each point.
    """
    from dcsi.image_clusters import cluster_images
    from dcsi.maps import image_map

    ic = cluster_images(images, features=features, seed=seed)
    block = ic.to_dict()
    n = len(features)
    # the sample first: only the kept points are embedded (t-SNE of at most MAP_POINTS
    # images, no neighbour placement of the others, which the card would not keep)
    keep = np.sort(np.random.default_rng(seed).choice(n, min(n, MAP_POINTS), replace=False))
    xy = image_map(np.asarray(features)[keep], seed=seed, max_points=MAP_POINTS)
    block["map"] = {
        "method": "t-SNE (scikit-learn) of the features reduced by PCA to 50 dimensions, on "
        f"a seeded sample of at most {MAP_POINTS:,} images; the card keeps the "
        f"{len(keep)} embedded points of the {n} images.",
        "xy": np.round(xy, 3).tolist(),
        "cluster": ic.labels[keep].tolist(),
        "label": None if images.labels is None else np.asarray(images.labels)[keep].tolist(),
    }
    return block


def _block_task(
    images: Any, *, class_sums: bool, wavelet: bool, working: tuple[int, int], batch_size: int
) -> BlockTask | None:
    """What the Ray actors compute besides the features (:class:`BlockTask`): the class
    sums of their blocks (labelled data, cnn analyzer) and the wavelet coefficient rows
    of their images (the default wavelet options of the wavelet class matrix and the
    near-duplicate search), these only while ``W`` stays within
    :data:`~dcsi.similarity.wavelet.KEEP_COEFFICIENTS_BYTES` (above it the driver
    streams ``W`` block by block, as the local engine does)."""
    from dcsi.similarity.class_cosine import stats_block_rows
    from dcsi.similarity.wavelet import KEEP_COEFFICIENTS_BYTES, WaveletOptions, n_coefficients

    opts = WaveletOptions()
    d = n_coefficients(working, wavelet=opts.wavelet, level=opts.level, mode=opts.mode)
    wavelet = wavelet and 4 * len(images) * d <= KEEP_COEFFICIENTS_BYTES
    if not (class_sums or wavelet):
        return None
    return BlockTask(
        labels=np.asarray(images.labels) if class_sums else None,
        n_classes=len(images.classes),
        block_rows=stats_block_rows(batch_size),
        wavelet=(opts.wavelet, opts.level, opts.mode) if wavelet else None,
    )


def _neighbor_index_block(
    fs: Any, folder: str | os.PathLike[str], k: int, seed: int
) -> dict[str, Any]:
    """Build the neighbour index from the features, save it, return the card block."""
    from dcsi.neighbor_index import card_block, feature_info, index_features

    idx = index_features(
        fs.features, fs.ids, k=k, info=feature_info(fs), seed=seed, images=fs.image_set
    )
    saved = idx.save(folder)
    return card_block(idx, saved, saved.parent, seed=seed)


def _cnn_blocks(
    fs: Any,
    images: Any,
    class_level: bool,
    *,
    linkage: str,
    batch_size: int,
    partials: dict[int, Any] | None,
    wavelet: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> dict[str, Any]:
    """The features block, the cnn_cosine matrix (with the directional spreads), the
    index (with its reading) and the class clusters; ``wavelet``, the wavelet class
    matrix (K, K) and its directional spreads (K, K), feeds the index too.

    The class sums are added in blocks of :func:`stats_block_rows` ``(batch_size)``
    rows, on every engine; ``partials`` holds the blocks the Ray actors computed."""
    from dcsi.clusters import cluster_classes
    from dcsi.index import index_report
    from dcsi.index_reading import index_reading
    from dcsi.similarity.class_cosine import (
        class_stats,
        compute_class_similarity,
        stats_block_rows,
    )
    from dcsi.similarity.spreads import class_spreads

    out: dict[str, Any] = {"features": fs.to_dict()}
    if not class_level:
        return out
    y = np.asarray(images.labels)
    k = len(images.classes)
    rows = stats_block_rows(batch_size)
    stats = class_stats(fs.features, y, k, block_rows=rows, partials=partials)
    logger.info(
        "Class sums: %d of %d blocks from the Ray actors.", len(partials or {}), -(-len(y) // rows)
    )
    sim = compute_class_similarity(fs.features, y, metric="cosine", n_classes=k, stats=stats)
    out["features"]["class_sums"] = np.round(stats.sums, 8).tolist()
    out["features"]["class_counts"] = stats.counts.tolist()
    spreads = class_spreads(fs.features, y, n_classes=k, centres=stats.centres)
    out["similarity"] = {"cnn_cosine": {**sim.to_dict(), "spreads": to_jsonable(spreads)}}
    classes = list(images.classes)
    w_matrix, w_spreads = (None, None) if wavelet is None else wavelet
    result = index_report(
        sim.matrix,
        stats.counts,
        wavelet=w_matrix,
        spreads=spreads,
        wavelet_spreads=w_spreads,
        features=fs.features,
        labels=y,
        classes=classes,
    )
    out["index"] = result.to_dict()
    out["index"]["reading"] = index_reading(
        out["index"], result.classes or classes, fingerprint=images.fingerprint()
    ).to_dict()
    out["class_clusters"] = cluster_classes(
        sim.matrix, linkage=linkage, class_counts=stats.counts, classes=classes
    ).to_dict()
    return out
