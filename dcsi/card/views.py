"""What the card's views read: a frozen view of the data and the stored class figures.

The report, the Hugging Face README and ``croissant.json`` render what the card holds;
they do not rerun the analysis.  :attr:`dcsi.Card.data` is the read-only card dict
(:func:`freeze`), and the two class figures the report draws come from the
``class_clusters`` block that :func:`dcsi.clusters.cluster_classes` stores (card
schema 1.1):

===================  ============================================  ====================
figure               stored as                                     read by
===================  ============================================  ====================
dendrogram, heatmap  ``class_clusters.linkage_matrix``,            :func:`class_tree`
order                ``leaf_order``, ``tree_distance``
Laplacian spectrum   ``class_clusters.eigenvalues``                :func:`class_spectrum`
other spectra        any ``eigenvalues`` list an analyzer stored   :func:`stored_spectra`
===================  ============================================  ====================

Cards written before schema 1.1 lack the first two; for them (only) the numbers are
recomputed from the stored similarity matrix with the same function the analysis uses
(:func:`dcsi.clusters.cluster_classes`), and the result says so (``stored=False``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from dcsi.exceptions import DcsiError

if TYPE_CHECKING:
    from dcsi.card.card import Card

__all__ = [
    "ClassSpectrum",
    "ClassTree",
    "class_spectrum",
    "class_tree",
    "freeze",
    "stored_spectra",
]

logger = logging.getLogger(__name__)

_SCALARS = frozenset((int, float, str, bool, type(None)))


def freeze(obj: Any) -> Any:
    """A read-only deep view of JSON data: mappings -> ``MappingProxyType``, lists -> tuples.

    Parameters
    ----------
    obj : dict, list, str, int, float, bool or None
        JSON-ready data (a card dict).

    Returns
    -------
    MappingProxyType, tuple or the scalar itself
        Containers are copied once (lists of scalars by one ``tuple()`` call), the
        scalars are shared; nothing reachable from the result can be mutated.

    Examples
    --------
    >>> d = freeze({"a": [1, 2], "b": {"c": [[1.0]]}})
    >>> d["a"], d["b"]["c"]
    ((1, 2), ((1.0,),))
    """
    if isinstance(obj, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        if set(map(type, obj)) <= _SCALARS:  # fast path: ids, matrix rows
            return tuple(obj)
        return tuple(freeze(v) for v in obj)
    return obj


@dataclass(frozen=True)
class ClassTree:
    """The hierarchical tree of the classes, as the report draws it.

    Attributes
    ----------
    linkage_matrix : ndarray of shape (K - 1, 4)
        scipy linkage matrix (``[cluster_a, cluster_b, height, size]`` per merge).
    leaf_order : ndarray of shape (K,), int
        Class ids in dendrogram leaf order.
    linkage : str
        The scipy method (``"average"``, ``"ward"``, ...).
    distance : str
        What the merge heights measure, in words.
    stored : bool
        True when read from the card; False when recomputed for a card older than
        schema 1.1.
    """

    linkage_matrix: np.ndarray
    leaf_order: np.ndarray
    linkage: str
    distance: str
    stored: bool


@dataclass(frozen=True)
class ClassSpectrum:
    """The Laplacian spectrum of the class graph the eigen-gap rule reads.

    Attributes
    ----------
    eigenvalues : ndarray of shape (K,)
        Ascending.
    label : str
        A legend entry saying which graph it is.
    stored : bool
        As in :class:`ClassTree`.
    """

    eigenvalues: np.ndarray
    label: str
    stored: bool


def _recluster(card: Card) -> Any | None:
    """``cluster_classes`` rerun on the card's matrix: the fallback for old cards."""
    from dcsi.clusters import cluster_classes

    data = card.data
    cc = data.get("class_clusters") or {}
    linkage = cc.get("linkage") or "average"
    feats = data.get("features") or {}
    counts = feats.get("class_counts") or data["dataset"]["class_counts"]
    try:
        s = card.similarity(card.primary_kind)
        return cluster_classes(
            s,
            linkage=linkage,
            class_counts=np.asarray(counts),
            classes=card.classes,
            n_null=0,  # the views read the tree and spectrum only
        )
    except DcsiError as exc:  # NaN entries, fewer than 2 classes, ...
        logger.info("class tree and spectrum not in the card and not recomputable: %s", exc)
        return None


def _stored_array(block: Mapping, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    value = block.get(key)
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    return arr if arr.shape == shape else None


def class_tree(card: Card, *, recompute: bool = True) -> ClassTree | None:
    """The stored class tree (``class_clusters.linkage_matrix`` and ``leaf_order``).

    Parameters
    ----------
    card : Card
    recompute : bool, default=True
        For a card without the stored tree (older than schema 1.1), rerun
        :func:`dcsi.clusters.cluster_classes` on its primary similarity matrix
        (``class_clusters.linkage``, default ``"average"``); ``False`` -> ``None``.

    Returns
    -------
    ClassTree or None
        None when the card has fewer than two classes or no similarity matrix, or
        when the tree is neither stored nor recomputable.
    """
    k = len(card.classes)
    if k < 2 or not card.similarity_kinds:
        return None
    cc = card.data.get("class_clusters") or {}
    z = _stored_array(cc, "linkage_matrix", (k - 1, 4))
    order = _stored_array(cc, "leaf_order", (k,))
    if z is not None and order is not None:
        return ClassTree(
            z,
            order.astype(np.int64),
            str(cc.get("linkage")),
            str(cc.get("tree_distance") or "class distance"),
            stored=True,
        )
    if not recompute:
        return None
    res = _recluster(card)
    if res is None:
        return None
    return ClassTree(
        np.asarray(res.linkage_matrix),
        np.asarray(res.leaf_order, dtype=np.int64),
        res.linkage,
        str(res.tree_distance),
        stored=False,
    )


def class_spectrum(card: Card, *, recompute: bool = True) -> ClassSpectrum | None:
    """The stored Laplacian spectrum of the class graph (``class_clusters.eigenvalues``).

    Parameters
    ----------
    card : Card
    recompute : bool, default=True
        As in :func:`class_tree`.

    Returns
    -------
    ClassSpectrum or None
    """
    k = len(card.classes)
    if k < 2 or not card.similarity_kinds:
        return None
    label = "class graph of the clusters (Gaussian affinity on {})"
    cc = card.data.get("class_clusters") or {}
    lam = _stored_array(cc, "eigenvalues", (k,))
    if lam is not None:
        return ClassSpectrum(
            lam, label.format(cc.get("tree_distance") or "class distance"), stored=True
        )
    if not recompute or cc.get("linkage_matrix") is not None:
        return None  # a new card without eigenvalues: the graph was undefined
    res = _recluster(card)
    if res is None or res.eigenvalues is None:
        return None
    return ClassSpectrum(
        np.asarray(res.eigenvalues), label.format(res.tree_distance) + ", recomputed", stored=False
    )


def stored_spectra(card: Card, *, max_depth: int = 3) -> dict[str, np.ndarray]:
    """Other eigenvalue lists stored in the card (key ``eigenvalues``), by path.

    Analyzers store spectra where they belong (``similarity.ssim.eigenvalues``, a
    spectral analysis block of the SSIM graph, the CSG peer of the index, ...); the
    report plots each one it finds.  ``class_clusters`` is left out (see
    :func:`class_spectrum`).

    Returns
    -------
    dict of str -> ndarray of shape (m,)
        Keys ``"<path> (stored)"``.
    """
    found: dict[str, np.ndarray] = {}

    def walk(obj: Any, path: str, depth: int) -> None:
        if not isinstance(obj, Mapping) or depth > max_depth:
            return
        ev = obj.get("eigenvalues")
        if (
            isinstance(ev, (list, tuple))
            and ev
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ev)
        ):
            found[f"{path} (stored)"] = np.asarray(ev, dtype=np.float64)
        for key, value in sorted(obj.items()):
            if key not in ("eigenvalues", "matrix", "stderr", "class_sums", "groups"):
                walk(value, f"{path}.{key}" if path else key, depth + 1)

    data = card.data
    walk({k: v for k, v in data.items() if k != "class_clusters"}, "", 0)
    return found
