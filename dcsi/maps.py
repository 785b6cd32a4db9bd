"""A 2-D map of a dataset's images from their features, and its picture.

:func:`image_map` places every image on a plane so that images with similar features
lie close together, as Thomas & Abraham show their clusters:

1. the features are L2-normalised and reduced by PCA (seeded) to 50 dimensions;
2. scikit-learn's ``TSNE`` (Barnes-Hut, PCA initialisation, seeded) embeds a seeded
   subsample of at most ``max_points`` (5,000) images;
3. every other image is placed at the mean embedding of its ``n_neighbors`` (5)
   nearest embedded images in the PCA space (Euclidean), searched blockwise against
   the subsample (a ``block_size`` x ``max_points`` distance block at a time, never
   n x n).

t-SNE and not UMAP: scikit-learn's t-SNE is maintained with dcsi's other
dependencies, while UMAP would add ``umap-learn`` and numba (a JIT compiler) for the
same picture; with the subsample and the neighbour placement a map of 60,000 images
costs one t-SNE of 5,000 points plus a linear pass.

:func:`plot_image_map` draws a map coloured by group (clusters or classes) as PNG bytes
(matplotlib's Agg canvas, no pyplot; small translucent markers so that 60,000 points stay
readable; a legend of up to 30 groups).

(The module is ``dcsi.maps`` and not ``dcsi.image_map``: a submodule named like the
public function would replace ``dcsi.image_map`` by the module once imported.)
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from dcsi._validation import Interval, check_array, validate_params
from dcsi.exceptions import InvalidParameterError

__all__ = ["MAX_LEGEND", "image_map", "place_by_neighbors", "plot_image_map"]

#: Groups named in the legend of :func:`plot_image_map` (the largest ones).
MAX_LEGEND = 30

_MAP_CONSTRAINTS: dict[str, list[Any]] = {
    "seed": [Interval(int, 0, None, closed="left")],
    "max_points": [Interval(int, 10, None, closed="left")],
    "n_components": [Interval(int, 2, None, closed="left")],
    "n_neighbors": [Interval(int, 1, None, closed="left")],
    "perplexity": [Interval(float, 0, None, closed="neither")],
    "block_size": [Interval(int, 1, None, closed="left")],
}


def image_map(
    features: Any,
    *,
    seed: int = 0,
    max_points: int = 5_000,
    n_components: int = 50,
    n_neighbors: int = 5,
    perplexity: float = 30.0,
    block_size: int = 2048,
) -> np.ndarray:
    """A 2-D embedding of images from their features (see the module docstring).

    Parameters
    ----------
    features : array-like of shape (n, d)
        Image features (e.g. ``FeatureSet.features``), n >= 3.
    seed : int, default=0
        Seeds the PCA, the subsample and t-SNE: a seed gives the same map every run.
    max_points : int, default=5000
        Images embedded by t-SNE itself; the rest are placed by their neighbours.
    n_components : int, default=50
        PCA dimensions before t-SNE and for the neighbour search.
    n_neighbors : int, default=5
        Embedded neighbours whose mean places a non-embedded image.
    perplexity : float, default=30.0
        t-SNE's perplexity (lowered to ``(m - 1) / 3`` for a small subsample of m).
    block_size : int, default=2048
        Rows per block of the neighbour search (memory only, never the result).

    Returns
    -------
    ndarray of shape (n, 2), float32
    """
    from sklearn.manifold import TSNE

    from dcsi.image_clusters import reduce_features

    caller = "image_map"
    p = validate_params(
        {
            "seed": seed,
            "max_points": max_points,
            "n_components": n_components,
            "n_neighbors": n_neighbors,
            "perplexity": perplexity,
            "block_size": block_size,
        },
        _MAP_CONSTRAINTS,
        caller,
    )
    x = check_array(features, "features", caller, ndim=2, dtype=np.float32)
    n = x.shape[0]
    if n < 3:
        raise InvalidParameterError(f"{caller} needs at least 3 images. Got {n} instead.")
    z = reduce_features(x, n_components=p["n_components"], seed=p["seed"])
    fit = np.arange(n)
    if n > p["max_points"]:
        rng = np.random.default_rng(p["seed"])
        fit = np.sort(rng.choice(n, p["max_points"], replace=False))
    tsne = TSNE(
        n_components=2,
        perplexity=min(p["perplexity"], (fit.size - 1) / 3),
        init="pca",
        learning_rate="auto",
        random_state=p["seed"],
    )
    out = np.empty((n, 2), dtype=np.float32)
    out[fit] = tsne.fit_transform(z[fit]).astype(np.float32)
    if fit.size < n:
        rest = np.setdiff1d(np.arange(n), fit)
        out[rest] = place_by_neighbors(
            z[rest], z[fit], out[fit], n_neighbors=p["n_neighbors"], block_size=p["block_size"]
        )
    return out


def place_by_neighbors(
    queries: np.ndarray,
    anchors: np.ndarray,
    anchor_positions: np.ndarray,
    *,
    n_neighbors: int = 5,
    block_size: int = 2048,
) -> np.ndarray:
    """Mean position of each query's nearest anchors (Euclidean), blockwise.

    Parameters
    ----------
    queries : ndarray of shape (q, m)
    anchors : ndarray of shape (a, m)
    anchor_positions : ndarray of shape (a, 2)
    n_neighbors : int, default=5
        Capped at ``a``.
    block_size : int, default=2048
        Queries per block: memory is ``block_size * a`` distances.

    Returns
    -------
    ndarray of shape (q, 2), float32
    """
    a = np.asarray(anchors, dtype=np.float64)
    pos = np.asarray(anchor_positions, dtype=np.float64)
    k = min(n_neighbors, a.shape[0])
    a2 = (a**2).sum(axis=1)
    out = np.empty((queries.shape[0], pos.shape[1]), dtype=np.float32)
    for s in range(0, queries.shape[0], block_size):
        q = np.asarray(queries[s : s + block_size], dtype=np.float64)
        d2 = a2[None, :] - 2.0 * q @ a.T  # + |q|^2, the same for every anchor of a row
        if k < a.shape[0]:
            near = np.argpartition(d2, k - 1, axis=1)[:, :k]
        else:
            near = np.broadcast_to(np.arange(k), (q.shape[0], k))
        out[s : s + block_size] = pos[near].mean(axis=1)
    return out


def plot_image_map(
    embedding: Any,
    colors: Any = None,
    *,
    names: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    max_legend: int = MAX_LEGEND,
    dpi: int = 120,
) -> bytes:
    """Draw a 2-D map coloured by group; return the PNG (and write it to ``path``).

    Parameters
    ----------
    embedding : array-like of shape (n, 2)
        From :func:`image_map`.
    colors : array-like of shape (n,), int, default=None
        Group per point (cluster ids or class ids, >= 0; -1: no group, drawn grey).
        None: one colour.
    names : sequence of str, default=None
        Name of each group id (default: the ids).
    path : path, default=None
        Also write the PNG there (atomically).
    title : str, default=None
    max_legend : int, default=30
        Groups named in the legend (the largest, listed in id order); points of the
        others keep their colour.
    dpi : int, default=120

    Returns
    -------
    bytes
        The PNG file's content.
    """
    caller = "plot_image_map"
    emb = check_array(embedding, "embedding", caller, ndim=2, dtype=np.float64)
    if emb.shape[1] != 2:
        raise InvalidParameterError(
            f"The 'embedding' parameter of {caller} must have shape (n, 2). "
            f"Got {emb.shape} instead."
        )
    n = emb.shape[0]
    groups = np.zeros(n, dtype=np.int64) if colors is None else np.asarray(colors)
    if groups.shape != (n,) or groups.dtype.kind not in "iu":
        raise InvalidParameterError(
            f"The 'colors' parameter of {caller} must be a 1-D int array of length {n} "
            f"(a group per point). Got {getattr(groups, 'shape', None)} instead."
        )
    fig = _draw(emb, groups.astype(np.int64), names, title, max_legend, colors is not None)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    data = buf.getvalue()
    if path is not None:
        from dcsi._io import atomic_write_bytes

        atomic_write_bytes(path, data)
    return data


def _palette(k: int) -> np.ndarray:
    import matplotlib

    if k <= 20:  # qualitative maps: colour j is entry j
        name = "tab10" if k <= 10 else "tab20"
        return np.asarray(matplotlib.colormaps[name](np.arange(k)))[:, :3]
    return np.asarray(matplotlib.colormaps["turbo"](np.linspace(0.02, 0.98, k)))[:, :3]


def _draw(
    emb: np.ndarray,
    groups: np.ndarray,
    names: Sequence[str] | None,
    title: str | None,
    max_legend: int,
    legend: bool,
) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    n = emb.shape[0]
    ids = np.unique(groups[groups >= 0])
    pal = _palette(max(ids.size, 1))
    rgb = np.full((n, 3), 0.6)
    for j, g in enumerate(ids):
        rgb[groups == g] = pal[j]
    size = float(np.clip(3000.0 / max(n, 1), 0.3, 12.0))
    alpha = float(np.clip(300.0 / np.sqrt(max(n, 1)), 0.15, 0.9))
    fig = Figure(figsize=(8.0, 7.0))
    FigureCanvasAgg(fig)  # Agg without pyplot: no global backend state
    ax = fig.add_subplot()
    order = np.random.default_rng(0).permutation(n)  # no group drawn on top of all
    ax.scatter(emb[order, 0], emb[order, 1], s=size, c=rgb[order], alpha=alpha, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    if legend and ids.size:
        counts = np.array([(groups == g).sum() for g in ids])
        shown = np.sort(ids[np.argsort(-counts, kind="stable")[:max_legend]])
        label = {g: (names[g] if names is not None and g < len(names) else str(g)) for g in ids}
        handles = [
            Line2D([], [], marker="o", ls="", color=pal[int(np.searchsorted(ids, g))], ms=6)
            for g in shown
        ]
        extra = f" (largest {max_legend} of {ids.size})" if ids.size > max_legend else ""
        ax.legend(
            handles,
            [label[int(g)] for g in shown],
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize=7,
            frameon=False,
            title=f"groups{extra}",
            title_fontsize=8,
        )
    fig.tight_layout()
    return fig
