"""The approximate (faiss) index of dcsi: one IVF-flat index for top-k and radius search.

Two searches share :func:`ivf_index`, a faiss IVF-flat index (inverted lists of the
exact vectors; ``nlist = 4 sqrt(n)`` k-means lists trained on a seeded sample of 40
rows per list, ``nprobe`` lists searched per query):

- the neighbour index's top-``k`` (:func:`dcsi.neighbors.faiss_topk`, inner
  product on the full unit rows);
- the near-duplicate and leakage *candidate* search (:func:`ivf_radius_candidates`,
  squared Euclidean distance on the rows projected as for the exact search,
  :func:`dcsi.neighbors.radius_pairs` with ``search="ann"``), whose every candidate is
  then checked on all columns, so only the recall is approximate.

IVF-flat rather than HNSW: faiss answers *range* queries on it (HNSW gives top-``k``
only, and a near-duplicate group has no fixed size), it builds in seconds, its k-means
is seeded (the same input gives the same lists), and its distances are exact, so a pair
is lost only when its two rows fall in lists that are not probed together.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dcsi._progress import progress
from dcsi._validation import require

__all__ = ["DEFAULT_RANGE_NPROBE", "TRAIN_PER_LIST", "ivf_index", "ivf_radius_candidates"]

#: Training rows per inverted list of the faiss k-means (faiss asks for at least 39).
TRAIN_PER_LIST = 40
#: Lists probed per query by the radius search: recall 1.0 of the exact pairs on 10^5
#: and 3 x 10^5 Fashion-MNIST mixtures (``benchmarks/scale.py``), half the time of 32.
DEFAULT_RANGE_NPROBE = 16


def ivf_index(
    X: np.ndarray,
    *,
    nlist: int | None = None,
    nprobe: int = 32,
    seed: int = 0,
    metric: str = "ip",
) -> tuple[Any, dict[str, Any]]:
    """A faiss index of the rows: IVF-flat, or flat when ``n`` is small.

    Parameters
    ----------
    X : ndarray of shape (n, d), float32
        Unit rows (``metric="ip"``) or any rows (``"l2"``).
    nlist : int, default=None
        Inverted lists (k-means centroids); None: ``4 sqrt(n)``, at most
        ``n / TRAIN_PER_LIST`` (below 2: one flat, exact list).
    nprobe : int, default=32
        Lists searched per query (more: higher recall, slower).
    seed : int, default=0
        Seed of the k-means (10 iterations) and of its training sample
        (:data:`TRAIN_PER_LIST` rows per list).
    metric : {"ip", "l2"}, default="ip"
        Inner product or squared Euclidean distance.

    Returns
    -------
    index : faiss.Index
        With every row added.
    params : dict
        ``index`` (``"IVFFlat"`` or ``"FlatIP"`` / ``"FlatL2"``), ``nlist``,
        ``nprobe``, ``seed``.
    """
    faiss = require("faiss", "The faiss neighbour search", "dcsi[index]")
    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    if nlist is None:
        nlist = int(max(1, min(4 * np.sqrt(n), n // TRAIN_PER_LIST)))
    flat = faiss.IndexFlatIP if metric == "ip" else faiss.IndexFlatL2
    if nlist < 2:  # too few rows for inverted lists: one flat list (exact)
        index = flat(d)
        params: dict[str, Any] = {"index": "FlatIP" if metric == "ip" else "FlatL2"}
    else:
        rng = np.random.default_rng(seed)
        m = TRAIN_PER_LIST * nlist
        train = X if n <= m else X[np.sort(rng.choice(n, m, replace=False))]
        kind = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        index = faiss.IndexIVFFlat(flat(d), d, nlist, kind)
        index.cp.seed = seed
        index.cp.niter = 10
        index.train(train)
        index.nprobe = min(nprobe, nlist)
        params = {"index": "IVFFlat", "nlist": int(nlist), "nprobe": int(index.nprobe)}
    index.add(X)
    params["seed"] = seed
    return index, params


def ivf_radius_candidates(
    PA: np.ndarray,
    PB: np.ndarray | None,
    radius2: float,
    *,
    nprobe: int = DEFAULT_RANGE_NPROBE,
    seed: int = 0,
    batch_size: int = 65536,
    desc: str = "faiss radius search",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Pairs of rows within a squared Euclidean radius, from a faiss IVF-flat index.

    Approximate: a pair is missed when its rows fall in lists that are not probed
    together; every returned pair is within the radius (faiss's distances are exact).

    Parameters
    ----------
    PA : ndarray of shape (n_a, k), float32
        Query rows.
    PB : ndarray of shape (n_b, k), float32, default=None
        Indexed rows; ``None``: pairs within ``PA``.
    radius2 : float
        Largest squared Euclidean distance of a pair.
    nprobe : int, default=16
        Lists searched per query.
    seed : int, default=0
        Seed of the index's k-means.
    batch_size : int, default=65536
        Queries per call into faiss (memory: their results only).
    desc : str, default="faiss radius search"
        Label of the progress bar.

    Returns
    -------
    pairs : ndarray of shape (m, 2), int64
        ``(row of PA, row of PB)``; within one set ``i < j``, each pair once (found
        from either of its rows), sorted.
    params : dict
        The index's parameters (:func:`ivf_index`).
    """
    same = PB is None
    PA = np.ascontiguousarray(PA, dtype=np.float32)
    index, params = ivf_index(PA if PB is None else PB, nprobe=nprobe, seed=seed, metric="l2")
    found = []
    n = PA.shape[0]
    for s in progress(range(0, n, batch_size), desc=desc, unit="batch", total=-(-n // batch_size)):
        lims, _, found_j = index.range_search(PA[s : s + batch_size], float(radius2))
        counts = np.diff(lims).astype(np.int64)
        i = np.repeat(np.arange(s, s + len(counts), dtype=np.int64), counts)
        j = found_j.astype(np.int64)
        pairs = np.stack([i, j], 1)
        if same:  # a pair may be found from one side only: keep it from either
            pairs = np.sort(pairs[i != j], axis=1)
        found.append(pairs)
    pairs = np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)
    return (np.unique(pairs, axis=0) if same else pairs), params
