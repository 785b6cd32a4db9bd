"""Cost of the neighbour index: Fashion-MNIST at 60,000 images, synthetic data at 10^6.

Part 1 -- Fashion-MNIST train (60,000 28x28 images, Debian's ``dataset-fashion-mnist``;
EfficientNet-Lite0 features at 64 px, 1,280 dims, from dcsi's feature cache, their
extraction not timed): ``index_features`` with ``method="exact"`` (every image's 10
nearest images) and ``method="faiss"`` (IVF-flat, recall@10 against exact), time and
peak memory (tracemalloc: numpy buffers, not faiss's own C++ allocations; the
process's peak RSS is reported at the end); ``NeighborIndex.save`` (size of
``neighbors.parquet`` and ``vectors.npy``), ``load_neighbor_index`` (hashes checked),
and ``NeighborIndex.search`` on 1,000 stored vectors (queries/s of the search alone;
embedding a query image costs what feature extraction costs, see
``benchmarks/features.py``).

Part 2 -- synthetic vectors, clustered like image features (a Gaussian mixture: 2,000
centres on the unit sphere, points drawn around them with per-cluster spread, then
unit-normalised; seeded): 10^6 vectors of 128 dims and 200,000 of 1,280 dims (10^6 x
1,280 float32 is 5 GB, too much for the shared 24 GiB machine; 100,000 vectors of 1,280
dims instead).  For each: the exact search of 2,000 seeded query rows against all rows
(its time scaled to all rows estimates the exact self-search, hours at 10^6); the faiss
IVF-flat index (build: k-means on 40 rows per list + adding all rows, timed in full;
search timed on 20,000 seeded rows and scaled to all rows); recall@10 of faiss against
exact on the 2,000 rows, and a sweep of ``nprobe``.  The noise around each centre is
isotropic in all ``d`` dimensions, a hard case for inverted lists (real features have
far fewer effective dimensions: compare the Fashion-MNIST recall).

Usage (from the repository root)::

    python benchmarks/neighbor_index.py              # both parts (about 15 minutes)
    python benchmarks/neighbor_index.py --quick      # 10,000 images / 100,000 vectors
    python benchmarks/neighbor_index.py --pixel-check   # only the pixel check at 60,000
    python benchmarks/neighbor_index.py --pixel-check --source /usr/share/openclipart/png \
        --out neighbor_index_pixel_check_openclipart     # the same on colour clip art

``--pixel-check`` times what the index's pixel check adds (``verify=True``) on the
60,000 Fashion-MNIST train images (features from the cache; the CNN's top 10 from
faiss, timed apart): decoding them at 32 x 32 RGB (:func:`dcsi.copy_verification.
thumbnails`), stage 1 (``PixelCheck.build``: each image's 5 nearest others in coarse
colour rows, exact), both stages applied (``verify_neighbors``: stage 2's distances
of every image to its 10 CNN neighbours and its stage-1 copies, per channel for
colour images, its stage-1 copies and its partners in the copy search's links, whose
search is timed apart), the partners of new query images (``query_partners``, what
``NeighborIndex.search`` adds: one seeded image of the set as a query, the first call
on the index, which computes what the search reads of the indexed images and keeps
it, then one and 100 more), the
size of ``thumbnails.npy`` and the process's peak RSS
(``neighbor_index_pixel_check.json``; ``--source`` measures another source, features
extracted first when they are not cached, and ``--out`` names the JSON).

Prints a markdown table and writes ``benchmarks/results/neighbor_index.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    Timer,
    cached_features,
    peak_rss_mib,
    print_table,
    traced_peak_mib,
    write_results,
)

K = 10
N_QUERIES = 2000
#: New query images whose partners the pixel check times (one, then all of them).
QUERY_IMAGES = 100


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's true top-k found (recall@k)."""
    hits = [len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / truth.shape[1])


def _timed(fn: Any) -> tuple[Any, float, float]:
    with Timer() as t:
        out, peak = traced_peak_mib(fn)
    return out, t.seconds, peak


def fashion_mnist(n: int | None, seed: int) -> dict[str, Any]:
    """Part 1: build, save, load and query the index of Fashion-MNIST train."""
    from dcsi.neighbor_index import feature_info, index_features, load_neighbor_index

    fs = cached_features("sample:fashion-mnist", n=n, seed=seed, split="train")
    info = feature_info(fs)
    exact, t_exact, m_exact = _timed(
        lambda: index_features(fs.features, fs.ids, k=K, method="exact", info=info)
    )
    approx, t_faiss, m_faiss = _timed(
        lambda: index_features(fs.features, fs.ids, k=K, method="faiss", info=info, seed=seed)
    )
    out: dict[str, Any] = {
        "n": len(fs),
        "dim": fs.dim,
        "k": K,
        "exact": {"build_s": t_exact, "peak_mib": m_exact},
        "faiss": {
            "build_s": t_faiss,
            "peak_mib": m_faiss,
            "params": approx.metadata["faiss"],
            "recall_at_10": _recall(approx.neighbors, exact.neighbors),
        },
    }
    tmp = Path(tempfile.mkdtemp(prefix="dcsi-bench-index-"))
    try:
        with Timer() as t:
            exact.save(tmp / "index")
        out["save_s"] = t.seconds
        out["files_bytes"] = {p.name: p.stat().st_size for p in sorted((tmp / "index").iterdir())}
        with Timer() as t:
            loaded = load_neighbor_index(tmp / "index")
        out["load_s"] = t.seconds
        assert np.array_equal(loaded.neighbors, exact.neighbors)
        queries = exact.vectors[np.random.default_rng(seed).choice(len(exact), 1000, False)]
        with Timer() as t:
            loaded.search(queries, k=4)
        out["search_1000_vectors_s"] = t.seconds
        out["queries_per_s"] = 1000 / t.seconds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def mixture(n: int, d: int, seed: int, n_centres: int = 2000) -> np.ndarray:
    """``n`` unit vectors of a Gaussian mixture (clustered, like image features)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    which = rng.integers(0, n_centres, n)
    spread = rng.uniform(0.5, 1.5, n_centres).astype(np.float32) / np.sqrt(d)
    X = np.empty((n, d), dtype=np.float32)
    step = 100_000
    for s in range(0, n, step):
        w = which[s : s + step]
        noise = rng.standard_normal((len(w), d)).astype(np.float32) * spread[w, None]
        X[s : s + step] = centres[w] + noise
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def _without_self(q: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Each query row's hits with the row itself left out, first ``K``."""
    return np.stack([row[row != r][:K] for r, row in zip(q, found, strict=True)])


def synthetic(n: int, d: int, seed: int, n_sample: int) -> dict[str, Any]:
    """Part 2: faiss against exact on ``n`` clustered vectors of ``d`` dims.

    Both self-searches are timed on seeded query rows (``N_QUERIES`` for exact,
    ``n_sample`` for faiss) and scaled to all ``n`` rows.
    """
    from dcsi.neighbor_index import ivf_index
    from dcsi.neighbors import exact_topk

    X = mixture(n, d, seed)
    rng = np.random.default_rng(seed + 1)
    q = np.sort(rng.choice(n, N_QUERIES, replace=False))
    (truth, _), t_exact, _ = _timed(lambda: exact_topk(X, X[q], k=K + 1))
    truth = _without_self(q, truth)
    (index, params), t_build, m_build = _timed(lambda: ivf_index(X, seed=seed))
    qs = np.sort(rng.choice(n, n_sample, replace=False))
    with Timer() as t:
        index.search(X[qs], K + 1)
    t_search = t.seconds
    _, got = index.search(X[q], K + 1)
    sweep = []
    for nprobe in (8, 16, 32, 64, 128):
        index.nprobe = nprobe
        with Timer() as t:
            _, hits = index.search(X[q], K + 1)
        sweep.append(
            {
                "nprobe": nprobe,
                "recall_at_10": _recall(_without_self(q, hits), truth),
                "ms_per_query": 1e3 * t.seconds / N_QUERIES,
            }
        )
    return {
        "n": n,
        "dim": d,
        "k": K,
        "exact": {
            "queries": N_QUERIES,
            "seconds": t_exact,
            "ms_per_query": 1e3 * t_exact / N_QUERIES,
            "self_knn_estimate_s": t_exact * n / N_QUERIES,
        },
        "faiss": {
            "params": params,
            "build_s": t_build,
            "build_peak_mib": m_build,
            "search_queries": n_sample,
            "ms_per_query": 1e3 * t_search / n_sample,
            "self_knn_estimate_s": t_build + t_search * n / n_sample,
            "recall_at_10": _recall(_without_self(q, got), truth),
            "nprobe_sweep": sweep,
        },
    }


def pixel_check(
    source: str = "sample:fashion-mnist", split: str | None = "train"
) -> dict[str, Any]:
    """Time and size of the pixel check on Fashion-MNIST train (60,000 images), or on
    another source (``--source``: a colour folder such as openclipart-png)."""
    import dataclasses

    from dcsi.copy_verification import (
        SHORTLIST,
        PixelCheck,
        link_partners,
        query_partners,
        thumbnails,
        verify_neighbors,
    )
    from dcsi.neighbors import faiss_topk, unit_rows

    fs = cached_features(source, split=split)
    X = unit_rows(fs.features, np.float32)
    with Timer() as cnn:  # the CNN's top 10: what the index searches anyway (k = 10)
        shortlist, scores, _ = faiss_topk(X, k=SHORTLIST)
    with Timer() as decode:
        thumbs = thumbnails(fs.image_set)
    with Timer() as build:
        check, cand, dist, ok = PixelCheck.build(thumbs)
    with Timer() as links:
        *partners, link_reference = link_partners(thumbs)
    with Timer() as order:
        top, _, is_copy = verify_neighbors(
            check, shortlist, scores, shortlist, (cand, dist, ok), X, X,
            rows=np.arange(len(X)), partners=tuple(partners),
        )  # fmt: skip
    # new queries' partners (NeighborIndex.search): the copy search's cross search
    queried = dataclasses.replace(check, link_reference=link_reference)
    picks = thumbs[np.random.default_rng(0).choice(len(X), QUERY_IMAGES, replace=False)]
    query_links = {}
    for name, m in (("first call, 1", 1), ("then 1", 1), (f"then {QUERY_IMAGES}", QUERY_IMAGES)):
        with Timer() as t:  # the first call computes what it reads of the indexed images
            query_partners(queried, picks[:m])
        query_links[f"query_links_s ({name} image{'s' if m > 1 else ''})"] = round(t.seconds, 2)
    out = {
        "source": source,
        "n": len(X),
        "cnn_shortlist_faiss_s (not part of the check)": round(cnn.seconds, 1),
        "thumbnails_s": round(decode.seconds, 1),
        "stage1_build_s": round(build.seconds, 1),
        "copy_search_links_s": round(links.seconds, 1),
        "stages_applied_s (stage 2's aligned distances included)": round(order.seconds, 1),
        **query_links,
        "images_with_a_stage1_copy_first": int(is_copy[:, 0].sum()),
        "images_whose_first_result_changed": int((top[:, 0] != shortlist[:, 0]).sum()),
        "thumbnails_npy_mib": round(thumbs.nbytes / 2**20, 1),
        "peak_rss_mib": peak_rss_mib(),
        "load_average_at_end": list(os.getloadavg()),
    }
    print_table([[k, v] for k, v in out.items()], [f"pixel check, {source}", ""])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a quick check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-fashion", action="store_true")
    parser.add_argument("--pixel-check", action="store_true", help="only the pixel check's cost")
    parser.add_argument("--source", help="--pixel-check on this source (default Fashion-MNIST)")
    parser.add_argument("--out", default="neighbor_index_pixel_check", help="--pixel-check results")
    args = parser.parse_args()
    os.environ.setdefault("DCSI_DISABLE_PROGRESS", "1")
    if args.pixel_check:
        found = pixel_check(args.source, None) if args.source else pixel_check()
        print(f"\nwrote {write_results(args.out, found)}")
        return
    import faiss

    results: dict[str, Any] = {"threads": {"faiss_omp": faiss.omp_get_max_threads()}}
    if not args.skip_fashion:
        results["fashion_mnist"] = fashion_mnist(10_000 if args.quick else None, args.seed)
    sizes = [(100_000, 128), (20_000, 1280)] if args.quick else [(1_000_000, 128), (100_000, 1280)]
    results["synthetic"] = [synthetic(n, d, args.seed, 20_000) for n, d in sizes]
    results["peak_rss_mib"] = peak_rss_mib()
    results["load_average_at_end"] = list(os.getloadavg())  # the machine is shared
    rows = []
    fm = results.get("fashion_mnist")
    if fm:
        size = sum(fm["files_bytes"].values()) / 2**20
        rows.append(
            [
                f"Fashion-MNIST train, {fm['n']:,} x {fm['dim']}",
                fm["exact"]["build_s"],
                fm["faiss"]["build_s"],
                fm["faiss"]["recall_at_10"],
                f"{fm['files_bytes']['neighbors.parquet'] / 2**20:.1f} MiB parquet, {size:.0f} MiB all",
                fm["queries_per_s"],
            ]
        )
    for s in results["synthetic"]:
        rows.append(
            [
                f"mixture, {s['n']:,} x {s['dim']}",
                f"{s['exact']['self_knn_estimate_s']:.0f} (est. from {N_QUERIES:,} queries)",
                f"{s['faiss']['self_knn_estimate_s']:.0f} (build + est. from "
                f"{s['faiss']['search_queries']:,} queries)",
                s["faiss"]["recall_at_10"],
                "-",
                "-",
            ]
        )
    print_table(
        rows,
        ["data", "exact self-kNN s", "faiss self-kNN s", "faiss recall@10", "files", "search q/s"],
    )
    for s in results["synthetic"]:
        print(
            f"\nnprobe sweep, {s['n']:,} x {s['dim']} (exact: {s['exact']['ms_per_query']:.2f} ms/query):"
        )
        print_table(
            [
                [r["nprobe"], r["recall_at_10"], r["ms_per_query"]]
                for r in s["faiss"]["nprobe_sweep"]
            ],
            ["nprobe", "recall@10", "ms/query"],
        )
    print(f"\nwrote {write_results('neighbor_index', results)}")


if __name__ == "__main__":
    main()
