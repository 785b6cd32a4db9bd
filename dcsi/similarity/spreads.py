"""Directional class spreads: how widely each class lies along the line to another.

The class matrices (mean pairwise cosines) know each class's *total* spread, summed
over every direction of the feature space, but a classifier separating two classes
only meets their spread along the line that joins their centres.  For L2-normalised
rows ``x`` with class centres ``mu_c`` (the mean unit row of class c) this module
computes, for every ordered pair of classes,

``V[a, b] = (n_a - 1) / n_a^2 * sum_{i in a} ((x_i - mu_a^(-i)) . u_ab^(-i))^2``,
``u_ab^(-i) = (mu_a^(-i) - mu_b) / |mu_a^(-i) - mu_b|``,

the variance of class a along the unit direction from class b's centre to its own,
each image measured along the line estimated *without it* (``mu_a^(-i)``, the centre
of the other ``n_a - 1`` images of class a), so that an image's pull on its own centre
does not bias the spread of small classes; the factor ``(n_a - 1) / n_a^2`` makes it
an unbiased variance along a fixed line (``x_i - mu_a^(-i)`` has variance ``n_a / (n_a
- 1)`` times the class's).  ``V[a, b]`` is at most the total spread ``1 - S[a, a]``.

With ``e_i = x_i - mu_a``, ``p_i = e_i . (mu_a - mu_b)`` and ``s_i = |e_i|^2``, the
projection is ``n / (n - 1) (p_i - s_i / (n - 1))`` over the norm ``sqrt(|mu_a - mu_b|^2
- 2 p_i / (n - 1) + s_i / (n - 1)^2)``, and with ``G = X mu^T``, ``M = mu mu^T``:
``p_i = G[i, a] - G[i, b] - M[a, a] + M[a, b]``, ``s_i = |x_i|^2 - 2 G[i, a] + M[a,
a]``.  One (n, d) x (d, K) product per block, O(N d K), and no direction vector is ever
formed.  The per-block sums (:func:`spread_sums`) add up across blocks and shards;
:func:`spreads_from_sums` scales them.

The DCSI (definition 4, :mod:`dcsi.index`) divides the squared distance between two
class centres by ``V[a, b] + V[b, a]``: Fisher's criterion along the centres' line.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix

from dcsi._validation import check_int
from dcsi.exceptions import InvalidParameterError
from dcsi.similarity.class_cosine import check_class_inputs, class_stats

__all__ = ["class_spreads", "spread_sums", "spreads_from_sums"]

#: Rows per block of :func:`class_spreads` (float64 work of ``block_rows x K``).
BLOCK_ROWS = 4096


def spread_sums(
    rows: np.ndarray, labels: np.ndarray, centres: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Sums of squared leave-one-out projections of one block of rows.

    Parameters
    ----------
    rows : ndarray of shape (m, d)
        Feature rows (L2-normalised here; a zero row stays zero).
    labels : ndarray of shape (m,), int
        Class ids in ``0..K-1``.
    centres : ndarray of shape (K, d), float64
        Mean unit row of each class over *all* images (not only this block).
    counts : ndarray of shape (K,)
        Images per class over all images.

    Returns
    -------
    ndarray of shape (K, K), float64
        ``T[a, b] = sum_{i in a, i in block} ((x_i - mu_a^(-i)) . u_ab^(-i))^2`` (module
        docstring); 0 on the diagonal, for classes of fewer than two images, towards a
        class with none, and where a line has no direction.
    """
    x = np.asarray(rows, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    mu = np.asarray(centres, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)[y][:, None]  # (m, 1): own class size
    k = mu.shape[0]
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    length = (norms > 0).astype(np.float64)  # |x_i| after L2 normalisation: 1, or 0
    # (m, K): x_i . mu_b of the unit rows, the rows scaled after the product
    gram = (x @ mu.T) / np.where(norms > 0, norms, 1.0)
    mm = mu @ mu.T  # (K, K)
    sq = np.diag(mm)
    own = gram[np.arange(len(y)), y][:, None]  # x_i . mu_a
    p = own - gram - mm[y, y][:, None] + mm[y]  # e_i . (mu_a - mu_b), (m, K)
    s = (length - 2.0 * own + mm[y, y][:, None]).clip(0.0)  # |e_i|^2
    dist2 = np.maximum(sq[y][:, None] + sq[None, :] - 2.0 * mm[y], 0.0)  # |mu_a - mu_b|^2
    with np.errstate(divide="ignore", invalid="ignore"):
        m1 = n - 1.0
        num = n / m1 * (p - s / m1)
        den = dist2 - 2.0 * p / m1 + s / m1**2
        sq_proj = np.where((n >= 2) & (den > 0) & (dist2 > 0), num**2 / den, 0.0)
    members = coo_matrix((np.ones(len(y)), (y, np.arange(len(y)))), shape=(k, len(y)))
    out = np.asarray(members.tocsr() @ sq_proj)  # sums over each class's rows, O(m K)
    out[:, np.asarray(counts) == 0] = 0.0
    np.fill_diagonal(out, 0.0)
    return out


def spreads_from_sums(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Directional variances ``V`` from the summed squared projections.

    Parameters
    ----------
    sums : ndarray of shape (K, K)
        :func:`spread_sums`, added over every block.
    counts : ndarray of shape (K,)
        Images per class.

    Returns
    -------
    ndarray of shape (K, K), float64
        ``V[a, b] = (n_a - 1) / n_a^2 * sums[a, b]``; 0 for a class of one image.
    """
    n = np.asarray(counts, dtype=np.float64)
    scale = np.where(n >= 2, (n - 1.0) / np.maximum(n, 1.0) ** 2, 0.0)
    return np.asarray(sums, dtype=np.float64) * scale[:, None]


def class_spreads(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int | None = None,
    centres: np.ndarray | None = None,
    block_rows: int = BLOCK_ROWS,
) -> np.ndarray:
    """Variance of each class of unit rows along the line to every other class's centre.

    Parameters
    ----------
    features : ndarray of shape (n_images, dim)
        Feature rows (L2-normalised here, as the cosine class matrix does).
    labels : ndarray of shape (n_images,), int
        Class ids in ``0..n_classes-1``.
    n_classes : int, default=None
        ``labels.max() + 1`` when omitted.
    centres : ndarray of shape (n_classes, dim), default=None
        The mean unit row of each class, when already known (``ClassStats.sums /
        counts``); computed from ``features`` when omitted (a first pass).
    block_rows : int, default=4096
        Rows per block.

    Returns
    -------
    ndarray of shape (n_classes, n_classes), float64
        ``V[a, b]`` of the module docstring (see :func:`spreads_from_sums` for the
        zero entries).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = np.stack([np.ones(1000), rng.normal(0, 0.2, 1000), np.zeros(1000)], axis=1)
    >>> x = np.vstack([a, a + [0.0, 0.0, 0.02]])   # centres apart along the third axis
    >>> V = class_spreads(x, np.repeat([0, 1], 1000))
    >>> V.shape, bool(V[0, 1] < 1e-4)    # the classes spread across that line, not along
    ((2, 2), True)
    """
    x, y, k = check_class_inputs(features, labels, n_classes, "class_spreads")
    block_rows = check_int(block_rows, "block_rows", "class_spreads", min_value=1)
    counts = np.bincount(y, minlength=k)
    if centres is None:
        centres = class_stats(x, y, k, block_rows=block_rows).centres
    elif np.shape(centres) != (k, x.shape[1]):
        raise InvalidParameterError(
            f"The 'centres' parameter of class_spreads must have shape ({k}, "
            f"{x.shape[1]}). Got {np.shape(centres)} instead."
        )
    total = np.zeros((k, k))
    for s in range(0, x.shape[0], block_rows):
        total += spread_sums(x[s : s + block_rows], y[s : s + block_rows], centres, counts)
    return spreads_from_sums(total, counts)
