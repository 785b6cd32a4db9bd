"""Class-to-class similarity of feature vectors through per-class sums.

The mean pairwise cosine similarity between classes a and b,
``mean_{i in a, j in b} cos(x_i, x_j)``, equals ``s_a . s_b / (n_a n_b)`` where
``s_c`` is the sum of the unit-normalised features of class c.  This makes the exact
K x K matrix an O(N d + K^2 d) computation instead of the O(N^2 d) double loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcsi._validation import check_array, check_labels

__all__ = ["ClassStats", "class_stats", "class_similarity"]


@dataclass(frozen=True)
class ClassStats:
    """Mergeable per-class partial sums of unit-normalised features.

    Attributes
    ----------
    sums : ndarray of shape (n_classes, dim), float64
        Sum of the unit-normalised feature vectors of each class.
    counts : ndarray of shape (n_classes,), int64
        Number of images of each class.

    Two ``ClassStats`` computed on disjoint shards merge with ``+``.
    """

    sums: np.ndarray
    counts: np.ndarray

    def __add__(self, other: ClassStats) -> ClassStats:
        return ClassStats(self.sums + other.sums, self.counts + other.counts)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def class_stats(features: np.ndarray, labels: np.ndarray, n_classes: int | None = None) -> ClassStats:
    """Per-class sums of unit-normalised features.

    Parameters
    ----------
    features : ndarray of shape (n_images, dim)
    labels : ndarray of shape (n_images,), int
        Class ids in ``0..n_classes-1``.
    n_classes : int, default=None
        Number of classes; ``labels.max() + 1`` when omitted.

    Returns
    -------
    ClassStats
    """
    x = check_array(features, "features", "class_stats", ndim=2)
    y = check_labels(labels, x.shape[0], "class_stats")
    k = int(y.max()) + 1 if n_classes is None else int(n_classes)
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(sums, y, _unit_rows(x))
    counts = np.bincount(y, minlength=k).astype(np.int64)
    return ClassStats(sums, counts)


def class_similarity(
    features: np.ndarray,
    labels: np.ndarray,
    metric: str = "cosine",
    *,
    n_classes: int | None = None,
) -> np.ndarray:
    """K x K matrix of mean pairwise similarity between the images of two classes.

    Parameters
    ----------
    features : ndarray of shape (n_images, dim)
    labels : ndarray of shape (n_images,), int
    metric : {"cosine"}, default="cosine"
    n_classes : int, default=None

    Returns
    -------
    ndarray of shape (n_classes, n_classes), float64
        Off-diagonal: mean over all cross-class pairs.  Diagonal: mean over
        within-class pairs excluding self-pairs, ``(|s_c|^2 - n_c) / (n_c (n_c - 1))``;
        NaN for a class with fewer than two images.
    """
    stats = class_stats(features, labels, n_classes)
    return cosine_from_stats(stats)


def cosine_from_stats(stats: ClassStats) -> np.ndarray:
    """Mean pairwise cosine similarity matrix from merged :class:`ClassStats`."""
    s, n = stats.sums, stats.counts.astype(np.float64)
    gram = s @ s.T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = gram / np.outer(n, n)
        diag = (np.diag(gram) - n) / (n * (n - 1))
    np.fill_diagonal(out, np.where(n >= 2, diag, np.nan))
    return out
