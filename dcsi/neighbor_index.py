"""The neighbour index: every image's nearest images, published next to the dataset.

:func:`build_neighbor_index` embeds every image of a source (the backbone, its pooling
and an optional trained similarity head), unit-normalises the vectors and finds, for
each image, the ``k`` other images of highest cosine similarity:

- ``method="exact"`` (the default up to :data:`FAISS_THRESHOLD` images): blockwise
  matrix products reduced to their top ``k`` at once (:func:`dcsi.neighbors.exact_topk`;
  never an ``n x n`` matrix; ties broken by the smaller row);
- ``method="faiss"`` (``"auto"`` above the threshold): a faiss IVF-flat index (inverted
  lists of the exact vectors, inner product; ``nlist = 4 sqrt(n)`` k-means lists trained
  on a seeded sample of 40 rows per list, ``nprobe = 32`` lists searched per query).  IVF-flat rather than HNSW:
  it builds in seconds, its k-means is seeded, and its scores are exact inner products,
  so only the recall is approximate (measured against exact in
  ``benchmarks/neighbor_index.py``).

Then the pixels check the list (``verify=True``, the default; :mod:`dcsi.copy_verification`):
the pixel-closest of an image's 10 CNN neighbours, its *verified copies* (the images
that the copy search's density-relative rule links to it on coarse colour rows) and
its partners in the copy search's links goes first when it is a copy or a partner or
stands out from the others, then the other verified copies, closest first, then the
CNN's order.  CNN features rank a re-encoded, noisy, recoloured or shifted copy below a
look-alike more often than the pixels do (README, "Similarity index").

A :class:`NeighborIndex` answers queries from new images with the same backbone,
pooling, head and pixel check (:meth:`NeighborIndex.search`), and is saved as a folder
(:meth:`NeighborIndex.save`, :func:`load_neighbor_index`):

==================  =================================================================
file                what it holds
==================  =================================================================
neighbors.parquet   one row per image: ``id`` (string), ``neighbor_ids``
                    (list<string>, best first), ``scores`` (list<float32>, cosine),
                    ``is_copy`` (list<bool>, verified copies);
                    ``datasets.load_dataset("parquet", data_files=...)`` reads it
vectors.npy         the unit vectors (n, d) float32 in the order of the rows (a plain
                    ``.npy`` read with ``allow_pickle=False``)
thumbnails.npy      the images stretched to 32 x 32 RGB (n, 32, 32, 3) uint8, and
pixel_reference.npy their reference distances (n,) float64, with ``verify=True``
link_reference.npy  their reference distances in the copy search's links (n, 2)
                    float64, when the index weighed them (``verify.links > 0``)
head.safetensors    the similarity head, when one was used
index.json          what made the vectors (backbone, weights sha256, input size,
                    pooling, head config), the pixel check (``verify``), k, n, the
                    method, and the sha256 of each file
==================  =================================================================

Every file is written atomically and ``index.json`` last; :func:`load_neighbor_index`
checks each file against the sha256 recorded there.

Examples
--------
>>> import dcsi
>>> idx = dcsi.build_neighbor_index("sample:digits", k=10)      # doctest: +SKIP
>>> ids, scores = idx.search(["query.png"], k=4)                # doctest: +SKIP
>>> idx.save("out/neighbor_index")                              # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dcsi import __version__
from dcsi._io import atomic_write_bytes, atomic_write_json
from dcsi._validation import check_choice, check_float, check_int, require
from dcsi.ann import ivf_index
from dcsi.copy_verification import (
    LINK_PARTNERS,
    LINK_RATIO,
    SHORTLIST,
    PixelCheck,
    link_partners,
    query_partners,
    thumbnails,
    verify_neighbors,
)
from dcsi.exceptions import DataError, InvalidParameterError
from dcsi.neighbors import exact_topk, faiss_topk, unit_rows
from dcsi.registration import DISTANCE_VERSION
from dcsi.relative_links import DEFAULT_RATIO, RelativeOptions

__all__ = [
    "DEFAULT_K",
    "DEFAULT_POOLING",
    "FAISS_THRESHOLD",
    "INDEX_FILE",
    "INDEX_FOLDER",
    "METHODS",
    "NeighborIndex",
    "build_neighbor_index",
    "card_block",
    "default_pooling",
    "embed",
    "faiss_topk",
    "feature_info",
    "find_index_dir",
    "index_features",
    "ivf_index",
    "load_neighbor_index",
]

logger = logging.getLogger(__name__)

#: Neighbours stored per image by default.
DEFAULT_K = 10
#: Pooling of :func:`build_neighbor_index` by default: the multi-layer ``sam`` pooling found
#: the same icon / the planted copy first more often than ``gap`` on every held-out set of
#: ``benchmarks/retrieval.py`` (chosen on oxygen half A and the copies' selection split).
DEFAULT_POOLING = "sam"
#: ``method="auto"`` uses faiss above this many images (exact up to it); see the README's
#: figures: exact self-search costs ``n^2 d`` and passes an hour on 2 cores near here.
FAISS_THRESHOLD = 200_000
#: The metadata file of an index folder.
INDEX_FILE = "index.json"
#: Folder of the index inside a card folder (``dcsi analyze --index``, ``dcsi index``).
INDEX_FOLDER = "neighbor_index"
NEIGHBORS_FILE = "neighbors.parquet"
VECTORS_FILE = "vectors.npy"
HEAD_FILE = "head.safetensors"
THUMBNAILS_FILE = "thumbnails.npy"
REFERENCE_FILE = "pixel_reference.npy"
LINKS_FILE = "link_reference.npy"
FORMAT = "dcsi-neighbor-index"
#: Version 2 adds the pixel check (``thumbnails.npy``, ``pixel_reference.npy``, ``is_copy``);
#: version 1 folders are still read (without the check).
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
METHODS = ("auto", "exact", "faiss")


# -- the index -----------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class NeighborIndex:
    """Every image's ``k`` nearest images, and the vectors to answer new queries.

    Attributes
    ----------
    ids : list of str, length n
        The source's image ids, in its order.
    vectors : ndarray of shape (n, d), float32
        Unit vectors (features, pooled and passed through the head).
    neighbors : ndarray of shape (n, k), int64
        Rows of each image's neighbours, best first (the image itself left out).
    scores : ndarray of shape (n, k), float32
        Their cosine similarities.
    metadata : dict
        What :func:`load_neighbor_index` needs to embed a query as the images were:
        ``backbone``, ``weights_sha256``, ``image_size``, ``pooling``, ``head``
        (``sha256``, ``config``) or None, ``verify`` (the pixel check's rule) or None,
        ``k``, ``n``, ``dim``, ``method`` (and ``faiss`` parameters), ``dataset``,
        ``dcsi_version``.
    head_bytes : bytes or None
        The head's safetensors file (saved as ``head.safetensors``).
    is_copy : ndarray of shape (n, k), bool, or None
        Which neighbours are verified copies (None: all False).
    pixels : PixelCheck or None
        The pixel check of the indexed images (None: not checked).
    """

    ids: list[str]
    vectors: np.ndarray
    neighbors: np.ndarray
    scores: np.ndarray
    metadata: dict[str, Any]
    head_bytes: bytes | None = field(default=None, repr=False)
    is_copy: np.ndarray | None = field(default=None, repr=False)
    pixels: PixelCheck | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.is_copy is None:
            object.__setattr__(self, "is_copy", np.zeros(self.neighbors.shape, dtype=bool))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def k(self) -> int:
        """Neighbours stored per image."""
        return int(self.neighbors.shape[1])

    @property
    def neighbor_ids(self) -> np.ndarray:
        """ndarray of shape (n, k), object: the neighbours' ids."""
        return np.asarray(self.ids, dtype=object)[self.neighbors]

    def search(
        self,
        query: Any,
        k: int = 4,
        *,
        weights: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        device: str = "auto",
        cache: Any = None,
        return_copies: bool = False,
        links: bool = True,
    ) -> Any:
        """The ``k`` most similar indexed images of each query, best first.

        With the index's pixel check (``verify``), the pixel-closest of the query's 10
        CNN neighbours, its verified copies and its partners in the copy search's links
        comes first when it is a verified copy or a partner, or stands out, then the
        other verified copies, closest first, then the CNN's order
        (:mod:`dcsi.copy_verification`; query vectors have no pixels and are not
        checked).

        Parameters
        ----------
        query : ndarray, path, sequence of paths, or a source
            Float vectors of shape (m, d) already made like the index's; an image file
            or a list of them; or anything :func:`dcsi.open_source` opens (a folder, a
            uint8 array (m, h, w[, c]), an ImageSet).  Images are embedded with the
            index's backbone, input size, pooling and head.
        k : int, default=4
            ``1 <= k <= n``.  Exact search over all indexed vectors.
        weights : path, default=None
            Backbone weights file, when the index was built with one (its sha256 is
            checked against ``index.json``).
        batch_size, device, cache
            As in :func:`dcsi.extract_features`.
        return_copies : bool, default=False
            Also return which results are verified copies.
        links : bool, default=True
            Weigh each query's partners in the copy search's links to the indexed
            images (:func:`dcsi.copy_verification.query_partners`) when the index holds
            their references (``verify.links > 0``, ``link_reference.npy``): the copy
            search's cross search against every indexed image.  The first call
            computes what it reads of the indexed images and keeps it (about 18 s at
            60,000 images on 2 cores); each later call costs about 3 s.  False skips
            it.

        Returns
        -------
        ids : ndarray of shape (m, k), object (str)
        scores : ndarray of shape (m, k), float32
            Cosine similarities.
        is_copy : ndarray of shape (m, k), bool
            Only with ``return_copies=True``.
        """
        k = check_int(k, "k", "NeighborIndex.search", min_value=1, max_value=len(self))
        Q, images = self._query_vectors(
            query, weights=weights, batch_size=batch_size, device=device, cache=cache
        )
        check = self.pixels if images is not None else None
        wide = k if check is None else max(k, min(SHORTLIST, len(self)))
        shortlist, scores = exact_topk(self.vectors, Q, k=wide, desc="searching")
        rows, scores = shortlist[:, :k], scores[:, :k]
        is_copy = np.zeros(rows.shape, dtype=bool)
        if check is not None:
            q_thumbs = thumbnails(images, size=check.thumbnails.shape[1])
            partners = None
            if links and check.link_reference is not None:
                partners = query_partners(check, q_thumbs)
            rows, scores, is_copy = verify_neighbors(
                check,
                rows,
                scores,
                shortlist[:, :SHORTLIST],
                check.query(q_thumbs),
                Q,
                self.vectors,
                query_thumbs=q_thumbs,
                partners=partners,
            )
        ids = np.asarray(self.ids, dtype=object)[rows]
        return (ids, scores, is_copy) if return_copies else (ids, scores)

    def _query_vectors(self, query: Any, **kw: Any) -> tuple[np.ndarray, Any]:
        """The query's unit vectors and its ImageSet (None for vectors given)."""
        dim = self.vectors.shape[1]
        if isinstance(query, np.ndarray) and np.issubdtype(query.dtype, np.floating):
            if query.ndim != 2 or query.shape[1] != dim:
                raise DataError(
                    f"Query vectors must have shape (m, {dim}) like the index's. Got "
                    f"{query.shape} instead; pass images to embed them."
                )
            return np.ascontiguousarray(unit_rows(query, np.float32)), None
        if isinstance(query, (str, os.PathLike)) and Path(query).expanduser().is_file():
            query = [query]  # one image file
        if isinstance(query, (list, tuple)):
            from dcsi.sources import open_files

            query = open_files(query)
        else:
            from dcsi.sources import open_source

            query = open_source(query)
        return embed(query, self.metadata, head_bytes=self.head_bytes, **kw), query

    # -- files
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index folder (see the module docstring); returns its path.

        Each file is written atomically, ``index.json`` last, with the sha256 of every
        other file.
        """
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        files: dict[str, dict[str, Any]] = {}
        blobs = [(NEIGHBORS_FILE, self._parquet_bytes()), (VECTORS_FILE, _npy_bytes(self.vectors))]
        if self.pixels is not None:
            blobs.append((THUMBNAILS_FILE, _npy_bytes(self.pixels.thumbnails, np.uint8)))
            blobs.append((REFERENCE_FILE, _npy_bytes(self.pixels.reference, np.float64)))
            if self.pixels.link_reference is not None:
                blobs.append((LINKS_FILE, _npy_bytes(self.pixels.link_reference, np.float64)))
        if self.head_bytes is not None:
            blobs.append((HEAD_FILE, self.head_bytes))
        for name, data in blobs:
            atomic_write_bytes(out / name, data)
            files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        atomic_write_json(out / INDEX_FILE, {**self.metadata, "files": files})
        # files left by an earlier index with a head or a pixel check
        if self.head_bytes is None:
            (out / HEAD_FILE).unlink(missing_ok=True)
        if self.pixels is None:
            (out / THUMBNAILS_FILE).unlink(missing_ok=True)
            (out / REFERENCE_FILE).unlink(missing_ok=True)
        if self.pixels is None or self.pixels.link_reference is None:
            (out / LINKS_FILE).unlink(missing_ok=True)
        return out

    def _parquet_bytes(self) -> bytes:
        pa = require("pyarrow", "Writing the neighbour index", "dcsi[index]")
        import pyarrow.parquet as pq

        n, k = self.neighbors.shape
        offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
        table = pa.table(
            {
                "id": pa.array(self.ids, pa.string()),
                "neighbor_ids": pa.ListArray.from_arrays(
                    offsets, pa.array(self.neighbor_ids.ravel(), pa.string())
                ),
                "scores": pa.ListArray.from_arrays(
                    offsets, pa.array(self.scores.ravel(), pa.float32())
                ),
                "is_copy": pa.ListArray.from_arrays(
                    offsets, pa.array(np.asarray(self.is_copy).ravel(), pa.bool_())
                ),
            }
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue().to_pybytes()

    def sample_queries(self, n: int = 8, *, k: int = 4, seed: int = 0) -> list[dict[str, Any]]:
        """``n`` seeded images with their top ``k`` neighbours (the card's samples).

        Returns
        -------
        list of dict
            ``id``, ``neighbors`` (ids), ``scores`` (rounded to 4 decimals).
        """
        rows = np.sort(np.random.default_rng(seed).choice(len(self), min(n, len(self)), False))
        k = min(k, self.k)
        return [
            {
                "id": self.ids[r],
                "neighbors": [self.ids[j] for j in self.neighbors[r, :k]],
                "scores": [round(float(s), 4) for s in self.scores[r, :k]],
            }
            for r in rows
        ]


def _npy_bytes(arr: np.ndarray, dtype: Any = np.float32) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, dtype=dtype), allow_pickle=False)
    return buf.getvalue()


# -- building ------------------------------------------------------------------------
def default_pooling(backbone: Any) -> str:
    """:data:`DEFAULT_POOLING` for a backbone with intermediate layers to pool
    (``dcsi.backbones.POOL_LAYERS``), ``"gap"`` for any other backbone or extractor."""
    from dcsi.backbones import POOL_LAYERS

    return DEFAULT_POOLING if isinstance(backbone, str) and backbone in POOL_LAYERS else "gap"


def _check_options(
    k: int,
    method: str,
    pooling: str | None,
    backbone: Any = None,
    *,
    link_ratio: float = LINK_RATIO,
) -> tuple[int, str, str]:
    from dcsi.backbones import check_pooling

    caller = "build_neighbor_index"
    k = check_int(k, "k", caller, min_value=1)
    check_choice(method, "method", caller, METHODS)
    check_float(
        link_ratio,
        "link_ratio",
        caller,
        min_value=0.0,
        max_value=1.0,
        min_inclusive=False,
        max_inclusive=False,
    )
    pooling = check_pooling(
        default_pooling(backbone) if pooling is None else pooling, backbone, caller
    )
    return k, method, pooling


def _load_head(head: Any) -> tuple[Any, bytes | None]:
    """The head object and its safetensors bytes (a path is loaded and checked)."""
    if head is None:
        return None, None
    if isinstance(head, (str, os.PathLike)):
        from dcsi.similarity_head import load_similarity_head

        path = Path(head).expanduser()
        if not path.is_file():
            raise DataError(f"--head {head}: no such file; give a head saved by dcsi.")
        head = load_similarity_head(path)
    if not (hasattr(head, "apply") and hasattr(head, "to_bytes")):
        raise InvalidParameterError(
            "The 'head' parameter of build_neighbor_index must be a path to a similarity "
            f"head (safetensors) or a SimilarityHead. Got {type(head).__name__} instead."
        )
    return head, head.to_bytes()


def embed(
    source: Any,
    info: dict[str, Any],
    *,
    head_bytes: bytes | None = None,
    weights: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    cache: Any = None,
) -> np.ndarray:
    """Unit vectors of a source's images, made as ``info`` (an index's metadata) says.

    Parameters
    ----------
    source : ImageSet or a source
    info : dict
        ``backbone``, ``image_size``, ``pooling``, ``weights_sha256`` and ``head``.
    head_bytes : bytes, default=None
        The head's safetensors file (required when ``info["head"]`` is set).
    weights, batch_size, device, cache
        As in :func:`dcsi.extract_features`.

    Returns
    -------
    ndarray of shape (m, d), float32
    """
    from dcsi.features import extract_features

    fs = extract_features(
        source,
        backbone=info["backbone"],
        weights=weights,
        image_size=info["image_size"],
        batch_size=batch_size,
        device=device,
        cache=cache,
        pooling=info.get("pooling") or "gap",
    )
    if info.get("weights_sha256") and fs.weights_sha256 != info["weights_sha256"]:
        raise DataError(
            f"The index was built with {info['backbone']} weights of sha256 "
            f"{info['weights_sha256'][:12]}..., these are {str(fs.weights_sha256)[:12]}...; "
            "pass the same weights file (--weights)."
        )
    return _vectors(fs.features, _head_from_bytes(info.get("head"), head_bytes))


def _head_from_bytes(meta: Any, data: bytes | None) -> Any:
    if not meta:
        return None
    if data is None:
        raise DataError("The index uses a similarity head but its head file is missing.")
    import tempfile

    from dcsi.similarity_head import load_similarity_head

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / HEAD_FILE
        path.write_bytes(data)
        return load_similarity_head(path)


def _vectors(features: np.ndarray, head: Any) -> np.ndarray:
    """Unit rows of the features, through the head when there is one."""
    return np.ascontiguousarray(
        unit_rows(features if head is None else head.apply(features), np.float32)
    )


def index_features(
    features: np.ndarray,
    ids: Sequence[str],
    *,
    k: int = DEFAULT_K,
    method: str = "auto",
    info: dict[str, Any] | None = None,
    head: Any = None,
    seed: int = 0,
    images: Any = None,
    verify: bool = True,
    link_ratio: float = LINK_RATIO,
) -> NeighborIndex:
    """A :class:`NeighborIndex` from features already extracted (``dcsi analyze --index``).

    Parameters
    ----------
    features : ndarray of shape (n, d)
        Backbone features (before the head).
    ids : sequence of str, length n
    k : int, default=10
        Clipped to ``n - 1``.
    method : {"auto", "exact", "faiss"}, default="auto"
    info : dict, default=None
        ``backbone``, ``weights_sha256``, ``image_size``, ``pooling``, ``dataset``
        (recorded in ``index.json``).
    head : path or SimilarityHead, default=None
    seed : int, default=0
        Seed of the faiss k-means.
    images : ImageSet, default=None
        The images of the rows, for the pixel check (None: no check).
    verify : bool, default=True
        Put each image's pixel-closest neighbour (among its 10 CNN neighbours, its
        verified copies and, up to 200,000 images, its partners in the copy search's
        links) first when it stands out, is a verified copy or a partner the copy
        search links at its own ratio, then its other verified copies
        (:mod:`dcsi.copy_verification`); skipped below
        ``RelativeOptions().min_images`` images.
    link_ratio : float, default=LINK_RATIO
        The ratio, in (0, 1), of the copy search's links that make the partners
        (0.25, the copy search's own; a looser one such as 0.7 brings more candidates,
        README "Copies first"; recorded as ``verify.link_ratio``).

    Returns
    -------
    NeighborIndex
    """
    k, method, _ = _check_options(k, method, (info or {}).get("pooling"), link_ratio=link_ratio)
    n = len(ids)
    if n < 2 or features.shape[0] != n:
        raise DataError(
            f"A neighbour index needs at least 2 images with one feature row each; got "
            f"{features.shape[0]} rows for {n} ids."
        )
    if k > n - 1:
        logger.info("k = %d is more than the %d other images; using k = %d.", k, n - 1, n - 1)
        k = n - 1
    head_obj, head_bytes = _load_head(head)
    X = _vectors(features, head_obj)
    chosen = ("faiss" if n > FAISS_THRESHOLD else "exact") if method == "auto" else method
    checked = verify and images is not None and not RelativeOptions().skips(n)
    if checked and len(images) != n:
        raise DataError(f"{len(images)} images were given for {n} feature rows.")
    wide = max(k, min(SHORTLIST, n - 1)) if checked else k
    faiss_params = None
    if chosen == "faiss":
        shortlist, scores, faiss_params = faiss_topk(X, k=wide, seed=seed)
    else:
        shortlist, scores = exact_topk(X, k=wide)
    neighbors, scores = shortlist[:, :k], scores[:, :k]
    pixels, is_copy, partners = None, None, None
    if checked:
        thumbs = thumbnails(images)
        link_reference = None
        # the copy search over every image costs what `dcsi redundancy` does: not at
        # the sizes faiss is used for
        if chosen != "faiss":
            partner_rows, linked, close, link_reference = link_partners(thumbs, ratio=link_ratio)
            partners = (partner_rows, linked, close)
        pixels, cand, dist, ok = PixelCheck.build(
            thumbs,
            search="faiss" if chosen == "faiss" else "exact",
            seed=seed,
            link_reference=link_reference,
            link_ratio=link_ratio,
        )
        neighbors, scores, is_copy = verify_neighbors(
            pixels,
            neighbors,
            scores,
            shortlist[:, :SHORTLIST],
            (cand, dist, ok),
            X,
            X,
            rows=np.arange(n),
            partners=partners,
        )
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dcsi_version": __version__,
        **{key: (info or {}).get(key) for key in ("backbone", "weights_sha256", "image_size")},
        "pooling": (info or {}).get("pooling") or "gap",
        "head": None
        if head_obj is None
        else {
            "file": HEAD_FILE,
            "sha256": hashlib.sha256(head_bytes or b"").hexdigest(),
            "config": dict(head_obj.config),
        },
        "verify": None
        if pixels is None
        else {**pixels.to_dict(), "links": 0 if partners is None else LINK_PARTNERS},
        "metric": "cosine",
        "n": n,
        "dim": int(X.shape[1]),
        "k": k,
        "method": chosen,
        "faiss": faiss_params,
        "dataset": (info or {}).get("dataset"),
    }
    return NeighborIndex(list(ids), X, neighbors, scores, meta, head_bytes, is_copy, pixels)


def build_neighbor_index(
    source: Any,
    *,
    k: int = DEFAULT_K,
    backbone: str = "efficientnet_lite0",
    weights: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    pooling: str | None = None,
    head: Any = None,
    method: str = "auto",
    batch_size: int = 64,
    device: str = "auto",
    cache: Any = None,
    num_threads: int | None = None,
    seed: int = 0,
    runtime: str = "torch",
    verify: bool = True,
    link_ratio: float = LINK_RATIO,
) -> NeighborIndex:
    """Embed every image of a source and find each one's ``k`` nearest images.

    Parameters
    ----------
    source : str, path, ndarray or ImageSet
        Anything :func:`dcsi.open_source` opens.
    k : int, default=10
        Neighbours per image (clipped to ``n - 1``).
    backbone : str, default="efficientnet_lite0"
    weights : path, default=None
    image_size : int, default=None
        Backbone input size (None: chosen from the images).
    pooling : {"gap", "ga", "sap", "sam"}, default=None
        Pooling of the backbone's feature maps (see :func:`dcsi.extract_features`);
        None: :data:`DEFAULT_POOLING` (``"sam"``, the best on held-out retrieval sets)
        for a backbone with multi-layer pooling (``dcsi.backbones.POOL_LAYERS``), else
        ``"gap"``.
    head : path or SimilarityHead, default=None
        A trained similarity head applied to the features (``dcsi.train_similarity_head``;
        its input must match the backbone and pooling).
    method : {"auto", "exact", "faiss"}, default="auto"
        ``"auto"``: exact up to :data:`FAISS_THRESHOLD` images, faiss above.
    batch_size, device, cache, num_threads
        As in :func:`dcsi.extract_features`.
    seed : int, default=0
        Seed of the faiss k-means.
    runtime : {"torch", "onnx"}, default="torch"
        What runs the backbone (see :func:`dcsi.extract_features`).
    verify : bool, default=True
        Put each image's pixel-closest neighbour or its verified copies ahead of the
        CNN's order (see :func:`index_features` and :mod:`dcsi.copy_verification`).
    link_ratio : float, default=LINK_RATIO
        As in :func:`index_features`.

    Returns
    -------
    NeighborIndex
    """
    from dcsi.backbones.onnx_runtime import check_runtime
    from dcsi.features import extract_features

    k, method, pooling = _check_options(k, method, pooling, backbone, link_ratio=link_ratio)
    check_runtime(runtime, "build_neighbor_index", device=device)
    if method == "faiss":  # fail before the features are extracted
        require("faiss", "The faiss neighbour search", "dcsi[index]")
    require("pyarrow", "The neighbour index", "dcsi[index]")
    head, _ = _load_head(head)  # a bad head file stops here, before the features
    fs = extract_features(
        source,
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        batch_size=batch_size,
        device=device,
        cache=cache,
        num_threads=num_threads,
        pooling=pooling,
        runtime=runtime,
    )
    return index_features(
        fs.features,
        fs.ids,
        k=k,
        method=method,
        info=feature_info(fs),
        head=head,
        seed=seed,
        images=fs.image_set,
        verify=verify,
        link_ratio=link_ratio,
    )


def feature_info(fs: Any) -> dict[str, Any]:
    """What made a FeatureSet's vectors, for ``index.json``: backbone, weights, input
    size, pooling and the dataset's name, source, split and fingerprint."""
    ims = fs.image_set
    return {
        "backbone": fs.backbone,
        "weights_sha256": fs.weights_sha256,
        "image_size": fs.image_size,
        "pooling": fs.pooling,
        "dataset": None
        if ims is None
        else {
            "name": ims.name,
            "source": ims.source,
            "split": ims.split,
            "fingerprint": ims.fingerprint(),
        },
    }


# -- loading -------------------------------------------------------------------------
def find_index_dir(path: str | os.PathLike[str]) -> Path:
    """The index folder at ``path``: the folder itself, or its ``neighbor_index/``
    (a card folder), or the folder of an ``index.json`` given directly."""
    p = Path(path).expanduser()
    if p.is_file() and p.name == INDEX_FILE:
        return p.parent
    if (p / INDEX_FILE).is_file():
        return p
    if (p / INDEX_FOLDER / INDEX_FILE).is_file():
        return p / INDEX_FOLDER
    raise DataError(
        f"No neighbour index at {os.fspath(path)!r}: expected {INDEX_FILE} there or in its "
        f"{INDEX_FOLDER}/ folder (written by `dcsi index SOURCE --out DIR` or "
        "`dcsi analyze --index`)."
    )


def _read_checked(folder: Path, name: str, entry: Any) -> bytes:
    path = folder / name
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise DataError(f"{folder / INDEX_FILE}: no sha256 recorded for {name}; rebuild the index.")
    if not path.is_file():
        raise DataError(f"{path} is missing; copy the whole index folder or rebuild it.")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise DataError(
            f"{path} does not match the sha256 recorded in {INDEX_FILE} (changed or "
            "truncated after the index was written); rebuild the index with `dcsi index`."
        )
    return data


def _read_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / INDEX_FILE).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(
            f"{folder / INDEX_FILE} is not valid JSON ({exc}); rebuild the index."
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{folder / INDEX_FILE} is not a dcsi neighbour index file.")
    if meta.get("format_version") not in READ_VERSIONS:
        raise DataError(
            f"{folder / INDEX_FILE} has format version {meta.get('format_version')!r}; this "
            f"dcsi reads versions {', '.join(map(str, READ_VERSIONS))}. Upgrade dcsi or "
            "rebuild the index."
        )
    files = meta.get("files")
    if not isinstance(files, dict) or NEIGHBORS_FILE not in files or VECTORS_FILE not in files:
        raise DataError(f"{folder / INDEX_FILE} does not list its files; rebuild the index.")
    return meta


def load_neighbor_index(path: str | os.PathLike[str]) -> NeighborIndex:
    """Read an index folder written by :meth:`NeighborIndex.save`, checking every file.

    Parameters
    ----------
    path : path-like
        The index folder, a card folder holding ``neighbor_index/``, or ``index.json``.

    Returns
    -------
    NeighborIndex

    Raises
    ------
    DataError
        No index there, a missing file, or a file whose sha256 differs from the one
        recorded in ``index.json`` (changed, truncated or tampered with).
    """
    pa = require("pyarrow", "Reading the neighbour index", "dcsi[index]")
    import pyarrow.parquet as pq

    folder = find_index_dir(path)
    meta = _read_meta(folder)
    files = meta.pop("files")
    table = pq.read_table(
        pa.BufferReader(_read_checked(folder, NEIGHBORS_FILE, files[NEIGHBORS_FILE]))
    )
    vectors = np.load(
        io.BytesIO(_read_checked(folder, VECTORS_FILE, files[VECTORS_FILE])), allow_pickle=False
    )
    head_bytes = None
    if meta.get("head"):
        head_bytes = _read_checked(folder, HEAD_FILE, files.get(HEAD_FILE))
    pixels = _read_pixels(folder, meta, files)
    ids = table.column("id").to_pylist()
    n, k = len(ids), int(meta.get("k", -1))
    flat = table.column("neighbor_ids").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    scores = table.column("scores").combine_chunks().flatten().to_numpy()
    is_copy = None
    if "is_copy" in table.column_names:
        is_copy = table.column("is_copy").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    if (
        vectors.shape[0] != n
        or len(flat) != n * k
        or len(scores) != n * k
        or (is_copy is not None and len(is_copy) != n * k)
        or (pixels is not None and len(pixels.reference) != n)
    ):
        raise DataError(f"{folder}: the files disagree on the number of images or k; rebuild it.")
    row = {item: i for i, item in enumerate(ids)}
    neighbors = np.fromiter((row[x] for x in flat), dtype=np.int64, count=n * k).reshape(n, k)
    return NeighborIndex(
        ids,
        np.ascontiguousarray(vectors, dtype=np.float32),
        neighbors,
        scores.astype(np.float32).reshape(n, k),
        meta,
        head_bytes,
        None if is_copy is None else is_copy.astype(bool).reshape(n, k),
        pixels,
    )


def _read_pixels(folder: Path, meta: dict[str, Any], files: dict[str, Any]) -> PixelCheck | None:
    """The pixel check of an index folder (None when it was built without one)."""
    rule = meta.get("verify")
    if not rule:
        return None
    thumbs = np.load(
        io.BytesIO(_read_checked(folder, THUMBNAILS_FILE, files.get(THUMBNAILS_FILE))),
        allow_pickle=False,
    )
    reference = np.load(
        io.BytesIO(_read_checked(folder, REFERENCE_FILE, files.get(REFERENCE_FILE))),
        allow_pickle=False,
    )
    size = rule.get("size")
    if (
        thumbs.dtype != np.uint8
        or thumbs.shape[1:] != (size, size, 3)
        or reference.shape != thumbs.shape[:1]
    ):
        raise DataError(f"{folder}: its pixel check's files do not match; rebuild the index.")
    registered = bool(rule.get("registered", False))  # absent: written before it existed
    version = rule.get("registration", 1)  # absent: written before the versions
    if registered and version != DISTANCE_VERSION:
        logger.warning(
            "%s: its pixel check was built with version %s of the registered distance and "
            "this dcsi measures version %s, so new queries may put a different copy first "
            "than the stored neighbours do; rebuild the index with `dcsi index` to match.",
            folder / INDEX_FILE,
            version,
            DISTANCE_VERSION,
        )
    link_reference = None
    if rule.get("links") and LINKS_FILE in files:  # absent: written before it existed
        link_reference = np.load(
            io.BytesIO(_read_checked(folder, LINKS_FILE, files[LINKS_FILE])), allow_pickle=False
        )
        if link_reference.shape != (len(thumbs), 2):
            raise DataError(f"{folder}: its pixel check's files do not match; rebuild the index.")
    options = RelativeOptions(
        ratio=rule["ratio"],
        k=rule["k"],
        max_distance=rule["max_distance"],
        sigma=rule["sigma"],
        registered=registered,
        despeckle=bool(rule.get("despeckle", False)),  # absent: written before it existed
    )
    return PixelCheck(
        thumbs,
        reference.astype(np.float64),
        options,
        rule["align_ratio"],
        colour=bool(rule.get("colour", False)),  # absent: written before it existed
        link_reference=None if link_reference is None else link_reference.astype(np.float64),
        # absent: written before it was recorded, when the partners were the copy
        # search's links at its own ratio
        link_ratio=float(rule.get("link_ratio", DEFAULT_RATIO)),
    )


# -- the card ------------------------------------------------------------------------
#: Sample queries the card keeps for the report's gallery, and results shown for each.
CARD_SAMPLES = 8
CARD_SAMPLE_K = 4


def card_block(
    index: NeighborIndex,
    folder: str | os.PathLike[str],
    card_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """The card's ``neighbor_index`` block for an index saved in ``folder``.

    Parameters
    ----------
    index : NeighborIndex
    folder : path-like
        Where ``index.save`` wrote it.
    card_dir : path-like
        The card folder; file paths in the block are relative to it.
    seed : int, default=0
        Seed of the sample queries.

    Returns
    -------
    dict
        ``backbone``, ``weights_sha256``, ``image_size``, ``pooling``, ``head``
        (``sha256`` and ``config``, or None), ``k``, ``n``, ``dim``, ``metric``,
        ``method``, ``faiss`` (or None), ``path`` (the folder), ``files`` (``path``,
        ``sha256``, ``bytes`` of each file, ``index.json`` included) and ``samples``
        (:data:`CARD_SAMPLES` seeded images with their top :data:`CARD_SAMPLE_K`).
    """
    folder = Path(folder)
    rel = Path(os.path.relpath(folder, card_dir)).as_posix()
    meta_bytes = (folder / INDEX_FILE).read_bytes()
    listed = json.loads(meta_bytes)["files"]
    files = [
        {"path": f"{rel}/{name}", "sha256": entry["sha256"], "bytes": entry["bytes"]}
        for name, entry in sorted(listed.items())
    ]
    files.append(
        {
            "path": f"{rel}/{INDEX_FILE}",
            "sha256": hashlib.sha256(meta_bytes).hexdigest(),
            "bytes": len(meta_bytes),
        }
    )
    m = index.metadata
    head = m.get("head")
    return {
        **{key: m.get(key) for key in ("backbone", "weights_sha256", "image_size", "pooling")},
        "head": None if not head else {"sha256": head["sha256"], "config": head["config"]},
        **{key: m.get(key) for key in ("k", "n", "dim", "metric", "method", "faiss")},
        "path": rel,
        "files": files,
        "samples": index.sample_queries(CARD_SAMPLES, k=CARD_SAMPLE_K, seed=seed),
    }
