"""A similarity head: a small linear layer on frozen features, trained on cluster data.

Kim et al. learn a 128-d "visual feature" on top of multi-layer CNN features from
*clusters* -- sets of images of the same or a similar object -- rather than from labelled
pairs.  :func:`train_similarity_head` does that on features already extracted
(:func:`dcsi.extract_features`, any pooling):

- model: ``y = normalise(W normalise(x) + b)``, ``W`` of shape (dim, input_dim): the
  input rows are scaled to unit length, the outputs are unit rows compared by cosine;
- triplets (anchor, positive, negative): every image of a cluster (id >= 0) of at least
  two images is an anchor once per epoch, with a random other member of its cluster as
  the positive and, as the negative, the most similar (under the current head) of
  ``negatives`` images drawn from outside the cluster (images with id -1, in no
  cluster, are negatives only);
- loss (:func:`triplet_loss`), with ``d = 1 - cos``: ``"triplet"`` (default), the
  ranking form ``max(0, margin + d(a, p) - d(a, n))``; or ``"pair"``, the form Kim et
  al. write, ``max(0, d(a, p) - t) + max(0, t - d(a, n))`` with ``t = threshold``
  (0.5): same-cluster pairs pulled within ``t``, others pushed beyond it.  On synthetic
  clusters (``tests/test_similarity_head.py``'s data, 100 training clusters) the
  ranking form reached a held-out top-1 of 0.99 where the pair form stopped at 0.60:
  once every pair is on the right side of ``t`` the pair form has no gradient left;
- Adam on shuffled mini-batches of triplets; the random
  draws come from ``seed`` alone and training runs on one torch thread, so the same
  input and seed give the same file, byte for byte.

A head is saved as a ``.safetensors`` file (tensors ``weight`` and ``bias``; its
:attr:`SimilarityHead.config` as JSON under the metadata key ``dcsi``) and loaded by
:func:`load_similarity_head`, which never unpickles anything.

Examples
--------
>>> fs = dcsi.extract_features("icons/", pooling="ga")              # doctest: +SKIP
>>> head = dcsi.train_similarity_head(fs, fs.labels)                # doctest: +SKIP
>>> head.save("head.safetensors")                                   # doctest: +SKIP
>>> v = dcsi.load_similarity_head("head.safetensors").apply(fs.features)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from dcsi._io import atomic_write_bytes
from dcsi._progress import progress
from dcsi._validation import check_array, check_choice, check_float, check_int, require
from dcsi.exceptions import DataError, InvalidParameterError
from dcsi.neighbors import unit_rows

__all__ = [
    "HEAD_FORMAT",
    "LOSSES",
    "SimilarityHead",
    "clusters_from_groups",
    "load_similarity_head",
    "train_similarity_head",
    "triplet_loss",
]

#: ``format`` of a head file's config; ``version`` is :data:`HEAD_VERSION`.
HEAD_FORMAT = "dcsi-similarity-head"
HEAD_VERSION = 1
LOSSES = ("triplet", "pair")
_APPLY_BLOCK = 65536
_MIN_CLUSTERED = 2


class SimilarityHead:
    """A trained similarity head (see the module docstring).

    Parameters
    ----------
    weight : ndarray of shape (dim, input_dim), float32
    bias : ndarray of shape (dim,), float32
    config : dict
        JSON-ready: ``format``, ``version``, ``input_dim``, ``dim``, ``backbone`` and
        ``pooling`` of the training features (None for a plain array), ``features`` (their
        whole features block: image size, weights hash; or None), the training
        parameters (``loss``, ``threshold``, ``margin``, ``epochs``, ...) and
        ``training`` (counts and the loss per epoch).
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, config: dict[str, Any]) -> None:
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.config = dict(config)

    @property
    def input_dim(self) -> int:
        """Dimension of the features the head takes."""
        return int(self.weight.shape[1])

    @property
    def dim(self) -> int:
        """Dimension of the head's output."""
        return int(self.weight.shape[0])

    def __repr__(self) -> str:
        return (
            f"SimilarityHead(input_dim={self.input_dim}, dim={self.dim}, "
            f"backbone={self.config.get('backbone')!r}, pooling={self.config.get('pooling')!r})"
        )

    def apply(self, features: Any) -> np.ndarray:
        """Map features to unit vectors.

        Parameters
        ----------
        features : array-like of shape (n, input_dim)

        Returns
        -------
        ndarray of shape (n, dim), float32
            Unit rows (a zero row stays zero); computed in blocks of 65,536 rows.
        """
        x = check_array(features, "features", "SimilarityHead.apply", ndim=2, allow_empty=True)
        if x.shape[1] != self.input_dim:
            raise InvalidParameterError(
                f"The 'features' parameter of SimilarityHead.apply must have "
                f"{self.input_dim} columns (the features the head was trained on: "
                f"{self.config.get('features')}). Got {x.shape[1]} instead."
            )
        out = np.empty((x.shape[0], self.dim), dtype=np.float32)
        for start in range(0, x.shape[0], _APPLY_BLOCK):
            block = unit_rows(np.asarray(x[start : start + _APPLY_BLOCK], dtype=np.float32))
            out[start : start + len(block)] = unit_rows(block @ self.weight.T + self.bias)
        return out

    __call__ = apply

    def to_bytes(self) -> bytes:
        """The ``.safetensors`` file's bytes (deterministic)."""
        require("safetensors", "saving a similarity head", "dcsi[torch]")
        from safetensors.numpy import save

        meta = json.dumps(self.config, sort_keys=True, separators=(",", ":"))
        return save({"weight": self.weight, "bias": self.bias}, metadata={"dcsi": meta})

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of :meth:`to_bytes`: the saved file's hash."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the head to ``path`` (atomically); returns the path."""
        out = Path(path).expanduser()
        atomic_write_bytes(out, self.to_bytes())
        return out


def triplet_loss(
    anchor: Any,
    positive: Any,
    negative: Any,
    *,
    loss: str = "triplet",
    threshold: float = 0.5,
    margin: float = 0.2,
) -> Any:
    """The hinge loss of each triplet on cosine distances ``d = 1 - cos``.

    Parameters
    ----------
    anchor, positive, negative : tensor of shape (m, k)
        Need not be unit rows.
    loss : {"triplet", "pair"}, default="triplet"
        ``"triplet"``: ``max(0, margin + d(a, p) - d(a, n))``;
        ``"pair"``: ``max(0, d(a, p) - threshold) + max(0, threshold - d(a, n))``.
    threshold : float, default=0.5
    margin : float, default=0.2

    Returns
    -------
    tensor of shape (m,)
    """
    import torch.nn.functional as F

    d_pos = 1.0 - F.cosine_similarity(anchor, positive, dim=1, eps=1e-12)
    d_neg = 1.0 - F.cosine_similarity(anchor, negative, dim=1, eps=1e-12)
    if loss == "pair":
        return (d_pos - threshold).clamp_min(0.0) + (threshold - d_neg).clamp_min(0.0)
    return (margin + d_pos - d_neg).clamp_min(0.0)


def clusters_from_groups(groups: Any, n: int) -> np.ndarray:
    """Cluster ids from near-duplicate groups (:func:`dcsi.find_redundancy`'s result).

    Parameters
    ----------
    groups : iterable of Group
        Each with ``indices`` (row indices of its members).
    n : int
        Number of images.

    Returns
    -------
    ndarray of shape (n,), int64
        The group number of each image in a group, -1 for the others.
    """
    out = np.full(n, -1, dtype=np.int64)
    for k, group in enumerate(groups):
        out[np.asarray(group.indices, dtype=np.int64)] = k
    return out


def _cluster_members(clusters: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Anchors (images in a cluster of >= 2) and, per anchor, its cluster's members."""
    ids, inverse, counts = np.unique(clusters, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.cumsum(counts)[:-1])
    keep = (ids >= 0) & (counts >= _MIN_CLUSTERED)
    anchors = np.flatnonzero(keep[inverse])
    return anchors, [members[inverse[a]] for a in anchors]


def _draw_triplets(
    clusters: np.ndarray,
    anchors: np.ndarray,
    members: list[np.ndarray],
    negatives: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anchor, positive, candidate negatives (m, negatives)) for one epoch."""
    n = len(clusters)
    pos = np.empty(len(anchors), dtype=np.int64)
    for k, (a, group) in enumerate(zip(anchors, members, strict=True)):
        j = int(rng.integers(len(group) - 1))
        pos[k] = group[j] if group[j] != a else group[-1]
    cand = rng.integers(0, n, size=(len(anchors), negatives))
    same = (clusters[cand] == clusters[anchors][:, None]) & (clusters[anchors][:, None] >= 0)
    while same.any():  # redraw the candidates that fell in the anchor's cluster
        cand[same] = rng.integers(0, n, size=int(same.sum()))
        same = (clusters[cand] == clusters[anchors][:, None]) & (clusters[anchors][:, None] >= 0)
    perm = rng.permutation(len(anchors))
    return anchors[perm], pos[perm], cand[perm]


def _check_training(
    features: Any, clusters: Any, dim: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    caller = "train_similarity_head"
    block = features.to_dict() if hasattr(features, "to_dict") else None
    x = check_array(getattr(features, "features", features), "features", caller, ndim=2)
    c = np.asarray(clusters)
    if c.shape != (x.shape[0],) or c.dtype.kind not in "iu":
        raise InvalidParameterError(
            f"The 'clusters' parameter of {caller} must be an int array with one cluster "
            f"id per feature row ({x.shape[0]}; -1 = in no cluster). Got "
            f"{c.dtype} of shape {c.shape} instead."
        )
    c = c.astype(np.int64)
    anchors, _ = _cluster_members(c)
    if len(anchors) == 0:
        raise DataError(
            f"{caller}: no cluster holds two images, so there is no same-cluster pair to "
            "learn from; give clusters of at least two images each."
        )
    if np.all(c == c[anchors[0]]):
        raise DataError(
            f"{caller}: every image is in the same cluster, so there is no negative to "
            "learn from; give at least two clusters (or images with cluster -1)."
        )
    if dim > x.shape[1]:
        raise InvalidParameterError(
            f"The 'dim' parameter of {caller} must be at most the feature dimension "
            f"({x.shape[1]}). Got {dim} instead."
        )
    return np.asarray(x, dtype=np.float32), c, block


def train_similarity_head(
    features: Any,
    clusters: Any,
    *,
    dim: int = 128,
    loss: str = "triplet",
    threshold: float = 0.5,
    margin: float = 0.2,
    epochs: int = 30,
    batch_size: int = 32,
    negatives: int = 16,
    learning_rate: float = 1e-2,
    seed: int = 0,
) -> SimilarityHead:
    """Train a similarity head on frozen features with cluster data.

    Parameters
    ----------
    features : FeatureSet or array-like of shape (n, input_dim)
        A :class:`~dcsi.features.FeatureSet` also records its backbone and pooling in
        the head's config (``config["features"]``).
    clusters : array-like of shape (n,), int
        Cluster id of each image; -1 = in no cluster (a negative only).  Only clusters
        of two images or more give anchors.
    dim : int, default=128
        Output dimension.
    loss : {"triplet", "pair"}, default="triplet"
        See :func:`triplet_loss`.
    threshold : float, default=0.5
        Cosine distance that separates same-cluster from other pairs (``"pair"``).
    margin : float, default=0.2
        Ranking margin (``"triplet"``).
    epochs : int, default=30
        Passes over the anchors (each anchor once per epoch).
    batch_size : int, default=32
        Triplets per gradient step.
    negatives : int, default=16
        Random outside-cluster candidates per anchor; the hardest under the current head
        is the negative (1 = a random negative).
    learning_rate : float, default=1e-2
        Adam's step size.
    seed : int, default=0
        Seeds the initial weights and every draw.

    Returns
    -------
    SimilarityHead

    Raises
    ------
    InvalidParameterError
        A bad parameter; clusters of the wrong shape.
    DataError
        No cluster of two images, or no negative.
    """
    caller = "train_similarity_head"
    dim = check_int(dim, "dim", caller, min_value=1)
    check_choice(loss, "loss", caller, LOSSES)
    threshold = check_float(threshold, "threshold", caller, min_value=0.0, max_value=2.0)
    margin = check_float(margin, "margin", caller, min_value=0.0, max_value=2.0)
    epochs = check_int(epochs, "epochs", caller, min_value=1)
    batch_size = check_int(batch_size, "batch_size", caller, min_value=1)
    negatives = check_int(negatives, "negatives", caller, min_value=1)
    learning_rate = check_float(
        learning_rate, "learning_rate", caller, min_value=0.0, min_inclusive=False
    )
    seed = check_int(seed, "seed", caller, min_value=0)
    require("torch", "training a similarity head", "dcsi[torch]")
    x, c, block = _check_training(features, clusters, dim)
    params: dict[str, Any] = {
        "loss": loss,
        "threshold": threshold,
        "margin": margin,
        "epochs": epochs,
        "batch_size": batch_size,
        "negatives": negatives,
        "learning_rate": learning_rate,
        "seed": seed,
    }
    weight, bias, summary = _fit(x, c, dim=dim, **params)
    config = {
        "format": HEAD_FORMAT,
        "version": HEAD_VERSION,
        "input_dim": int(x.shape[1]),
        "dim": dim,
        "backbone": None if block is None else block["backbone"],
        "pooling": None if block is None else block["pooling"],
        "features": block,
        **params,
        "training": summary,
    }
    return SimilarityHead(weight, bias, config)


def _fit(
    x: np.ndarray,
    c: np.ndarray,
    *,
    dim: int,
    loss: str,
    threshold: float,
    margin: float,
    epochs: int,
    batch_size: int,
    negatives: int,
    learning_rate: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The training loop (one torch thread, restored afterwards)."""
    import torch

    rng = np.random.default_rng(seed)
    anchors, members = _cluster_members(c)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(seed)
        layer = torch.nn.Linear(x.shape[1], dim)
        bound = 1.0 / math.sqrt(x.shape[1])
        with torch.no_grad():
            layer.weight.uniform_(-bound, bound, generator=gen)
            layer.bias.uniform_(-bound, bound, generator=gen)
        opt = torch.optim.Adam(layer.parameters(), lr=learning_rate)
        xt = torch.from_numpy(unit_rows(x))
        history = []
        for _ in progress(range(epochs), desc="Training similarity head", unit="epoch"):
            a, p, cand = _draw_triplets(c, anchors, members, negatives, rng)
            total = 0.0
            for s in range(0, len(a), batch_size):
                ia, ip, ic = (torch.from_numpy(v[s : s + batch_size]) for v in (a, p, cand))
                ya, yp = layer(xt[ia]), layer(xt[ip])
                yn = _hardest(layer, xt, ya, ic)
                batch = triplet_loss(ya, yp, yn, loss=loss, threshold=threshold, margin=margin)
                step = batch.mean()
                opt.zero_grad()
                step.backward()
                opt.step()
                total += float(batch.detach().sum())
            history.append(round(total / len(a), 6))
        weight = layer.weight.detach().numpy().astype(np.float32)
        bias = layer.bias.detach().numpy().astype(np.float32)
    finally:
        torch.set_num_threads(previous)
    summary = {
        "n_images": len(c),
        "n_clusters": len(np.unique(c[anchors])),
        "n_anchors": len(anchors),
        "n_unclustered": int(np.sum(c < 0)),
        "loss_per_epoch": history,
    }
    return weight, bias, summary


def _hardest(layer: Any, xt: Any, ya: Any, cand: Any) -> Any:
    """The outputs of the candidate negative most similar to each anchor, (b, dim)."""
    import torch
    import torch.nn.functional as F

    if cand.shape[1] == 1:
        return layer(xt[cand[:, 0]])
    with torch.no_grad():
        yc = layer(xt[cand.reshape(-1)]).view(cand.shape[0], cand.shape[1], -1)
        cos = F.cosine_similarity(ya.detach()[:, None, :], yc, dim=2, eps=1e-12)
        pick = cand[torch.arange(cand.shape[0]), cos.argmax(dim=1)]
    return layer(xt[pick])


def load_similarity_head(path: str | os.PathLike[str]) -> SimilarityHead:
    """Load a head written by :meth:`SimilarityHead.save` (no pickle is read).

    Parameters
    ----------
    path : path-like
        A ``.safetensors`` file.

    Returns
    -------
    SimilarityHead

    Raises
    ------
    DataError
        No such file, not a safetensors file, or not a dcsi similarity head (the
        message says which and how to get a good one).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(
            f"Similarity head {str(path)!r}: no such file; train one with "
            "`dcsi train-head SOURCE --out HEAD.safetensors`."
        )
    require("safetensors", "loading a similarity head", "dcsi[torch]")
    data = p.read_bytes()
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(
            f"Similarity head {p}: not a safetensors file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); give a file written "
            "by SimilarityHead.save or `dcsi train-head`."
        ) from None
    config = _head_config(p, header.get("__metadata__") or {})
    weight, bias = tensors.get("weight"), tensors.get("bias")
    want = (config["dim"], config["input_dim"])
    if (
        weight is None
        or bias is None
        or weight.shape != want
        or bias.shape != (config["dim"],)
        or weight.dtype != np.float32
        or bias.dtype != np.float32
    ):
        raise DataError(
            f"Similarity head {p}: its tensors are not float32 'weight' of shape {want} and "
            f"'bias' of shape ({config['dim']},) as its config says; the file is damaged."
        )
    if not (np.all(np.isfinite(weight)) and np.all(np.isfinite(bias))):
        raise DataError(f"Similarity head {p}: its weights hold NaN or infinite values.")
    return SimilarityHead(weight, bias, config)


def _head_config(path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """The config stored in a head file's metadata, checked."""
    try:
        config = json.loads(metadata["dcsi"])
    except (KeyError, TypeError, ValueError):
        config = None
    if not isinstance(config, dict) or config.get("format") != HEAD_FORMAT:
        raise DataError(
            f"Similarity head {path}: a safetensors file but not a dcsi similarity head (no "
            "'dcsi' config in its metadata); give a file written by `dcsi train-head`."
        )
    if config.get("version") != HEAD_VERSION:
        raise DataError(
            f"Similarity head {path}: format version {config.get('version')!r}, this dcsi "
            f"reads version {HEAD_VERSION}; retrain the head with this dcsi."
        )
    for key in ("input_dim", "dim"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DataError(f"Similarity head {path}: its config has no valid {key!r}.")
    return config
