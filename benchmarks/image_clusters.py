"""Image clusters and the map on Fashion-MNIST train, labels hidden from the clustering.

Thomas & Abraham cluster unlabelled images with k-means on pre-trained CNN features.
On Fashion-MNIST's train split (60,000 28x28 images, Debian's
``dataset-fashion-mnist``; features of EfficientNet-Lite0 at 64 px from dcsi's feature
cache, their extraction not timed), each row clusters the features (or pixels) without
the labels, then scores the clusters against the 10 classes (NMI, ARI, purity):

- ``dcsi default``: ``cluster_images(features=F)`` -- k-means on unit PCA-50 features,
  k chosen by the Davies-Bouldin index over 2..30;
- ``dcsi k-means, silhouette``: the same with ``rule="silhouette"``;
- ``dcsi agglomerative``: ``method="agglomerative"`` (kNN-graph Ward; tree on a seeded
  20,000 subsample, the rest to the nearest centroid), k by Davies-Bouldin;
- ``dcsi k-means, k = 10``: dcsi's k-means given the true number of classes;
- ``paper's recipe, k = 10``: scikit-learn ``KMeans(10)`` on the raw CNN features (no
  normalisation, no PCA), as the paper does -- on EfficientNet-Lite0 features, because
  the paper's ResNet50 is not run here (see ``resnet50`` in the JSON: whether its
  weights load offline; extracting 60,000 new feature vectors is out of scope);
- ``pixels, k-means k = 10``: ``KMeans(10)`` on the raw pixels / 255.

Then ``image_map(F)`` (t-SNE of a 5,000 subsample, the rest placed by 5 neighbours)
and ``plot_image_map`` (coloured by class; the map itself never sees the labels).  Time
of every step from a plain run, and its peak Python-heap memory (tracemalloc; numpy and
scikit-learn's numpy buffers, not BLAS scratch) from a second, traced run of the same
step (tracing slows t-SNE about 2x); the peak RSS of the process at the end.

The defaults (method, rule) were chosen on other data before this run (``--choice``:
digits, 1,797 images, and a seeded 5,000-image subset of the train split, as
Fashion-MNIST's test split has no cached features); the figures of this script on the
full train split are held out.

``--pools`` runs, in one process, dcsi's default, dcsi's k-means given the true k,
a candidate default that was not adopted (k-means with 50, 100 or 200 clusters merged by
average linkage of their centroids, k by the same Davies-Bouldin rule) and pixel k-means
on five labelled pools: Fashion-MNIST train, digits, the Oxygen and Adwaita icon themes
(64 x 64 icons, their context folders as classes) and openclipart-png.  Each pool
records its role in the choice (chosen on, held out, looked at) and, per method, how much
of each of the three largest classes its largest cluster holds (ARI counts pairs of
images, so the largest classes weigh most).

Usage (from the repository root)::

    python benchmarks/image_clusters.py                 # all 60,000 images
    python benchmarks/image_clusters.py --n 5000        # a seeded subset, quick check
    python benchmarks/image_clusters.py --choice        # the table the defaults used
    python benchmarks/image_clusters.py --pools         # every labelled pool

Prints a markdown table and writes ``benchmarks/results/image_clusters.json`` (with
``--choice``: ``image_clusters_choice.json``; ``--pools``: ``image_clusters_pools.json``)
and the map as
``benchmarks/results/image_clusters_map.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    RESULTS_DIR,
    Timer,
    cached_features,
    peak_rss_mib,
    print_table,
    traced_peak_mib,
    write_results,
)


def _scores(labels: np.ndarray, found: np.ndarray) -> dict[str, float]:
    from dcsi.image_clusters import compare_clusters

    cmp = compare_clusters(np.asarray(found, dtype=np.int64), labels)
    return {"nmi": cmp.nmi, "ari": cmp.ari, "purity": cmp.purity}


def _timed(fn: Any) -> tuple[Any, float, float]:
    """``fn()``'s result, its seconds and its peak traced MiB, from two runs: the time
    of a plain run (tracemalloc slows allocation-heavy code such as t-SNE's gradient
    loop up to 2x), the memory of a second, traced one (same seed, same result)."""
    with Timer() as t:
        out = fn()
    _, peak = traced_peak_mib(fn)
    return out, t.seconds, peak


def _resnet50_status() -> str:
    import dcsi
    from dcsi.exceptions import DcsiError

    if "resnet50" not in dcsi.list_backbones():
        return "not registered"
    try:
        dcsi.get_backbone("resnet50", device="cpu")
    except (DcsiError, OSError, RuntimeError) as exc:
        return f"weights not available offline: {str(exc).splitlines()[0][:160]}"
    return "weights load offline (features not extracted: out of scope for this run)"


def _load(
    n: int | None, seed: int, source: str = "sample:fashion-mnist"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], Any]:
    split = "train" if source.startswith("sample:") else None
    fs = cached_features(source, n=n, seed=seed, split=split)
    image_set = fs.image_set
    size = None if source.startswith("sample:") else 32  # real sizes differ: 32 x 32 grey
    pixels = image_set.to_array(size=size, mode="L").reshape(len(image_set), -1)
    assert fs.labels is not None
    return fs.features, fs.labels, pixels, list(fs.classes), image_set


def run_main(n: int | None, seed: int, source: str = "sample:fashion-mnist") -> dict[str, Any]:
    from sklearn.cluster import KMeans

    import dcsi

    feats, labels, pixels, classes, image_set = _load(n, seed, source)
    true_k = len(classes)
    rows: list[dict[str, Any]] = []

    def add(name: str, fn: Any, what: str) -> Any:
        out, secs, peak = _timed(fn)
        found = out.labels if hasattr(out, "labels") else out
        k = int(np.unique(found).size)
        rows.append(
            {
                "name": name,
                "input": what,
                "k": k,
                **_scores(labels, found),
                "seconds": secs,
                "peak_traced_mib": peak,
            }
        )
        print(f"{name}: k={k} {rows[-1]['nmi']:.3f} NMI, {secs:.1f} s", file=sys.stderr)
        return out

    cnn = "EfficientNet-Lite0 (default input size)"
    default = add(
        "dcsi default (k-means, auto k: Davies-Bouldin)",
        lambda: dcsi.cluster_images(features=feats, seed=seed),
        cnn,
    )
    add(
        "dcsi k-means, auto k: silhouette",
        lambda: dcsi.cluster_images(features=feats, rule="silhouette", seed=seed),
        cnn,
    )
    agg = add(
        "dcsi agglomerative (auto k: Davies-Bouldin)",
        lambda: dcsi.cluster_images(features=feats, method="agglomerative", seed=seed),
        cnn,
    )
    add(
        f"dcsi k-means, k = {true_k}",
        lambda: dcsi.cluster_images(features=feats, n_clusters=true_k, seed=seed),
        cnn,
    )
    add(
        f"paper's recipe: KMeans({true_k}) on raw CNN features",
        lambda: KMeans(n_clusters=true_k, random_state=seed).fit_predict(feats),
        cnn,
    )
    add(
        f"KMeans({true_k}) on raw pixels",
        lambda: KMeans(n_clusters=true_k, random_state=seed).fit_predict(pixels / 255.0),
        "grey pixels" + ("" if source.startswith("sample:") else " at 32x32"),
    )

    from dcsi.pipeline import image_clusters_block

    # what `dcsi analyze` runs: the default clusters + the map of the card's sample
    _, block_s, block_peak = _timed(lambda: image_clusters_block(image_set, feats, seed=seed))
    emb, map_s, map_peak = _timed(lambda: dcsi.image_map(feats, seed=seed))
    tag = "" if source == "sample:fashion-mnist" else "_" + "_".join(Path(source).parts[-2:])
    png_path = RESULTS_DIR / f"image_clusters{tag}_map.png"
    with Timer() as t_plot:
        dcsi.plot_image_map(
            emb,
            labels,
            names=classes,
            path=png_path,
            title=f"{source} ({len(feats):,}): map without labels, coloured by class",
        )
    return {
        "source": source,
        "true_k": true_k,
        "n_images": len(feats),
        "seed": seed,
        "features": cnn,
        "resnet50": _resnet50_status(),
        "rows": rows,
        "default_choice": default.to_dict()["choice"],
        "agglomerative_choice": agg.to_dict()["choice"],
        "default_comparison": {
            k: v
            for k, v in default.compare(labels, classes).to_dict().items()
            if k in ("split_classes", "merged_clusters")
        },
        "analyze_block": {
            "what": "pipeline.image_clusters_block: default clusters + map of the card's sample",
            "seconds": block_s,
            "peak_traced_mib": block_peak,
        },
        "map": {
            "seconds": map_s,
            "peak_traced_mib": map_peak,
            "plot_seconds": t_plot.seconds,
            "png": png_path.name,
        },
        "peak_rss_mib": peak_rss_mib(),
    }


#: Labelled pools of ``--pools``: name -> (source, split, role in the choice of the default).
POOLS = {
    "fashion-mnist train": (
        "sample:fashion-mnist",
        "train",
        "chosen on (the old default's rule was chosen on a 5,000 subset)",
    ),
    "digits": ("sample:digits", None, "chosen on (the old default's rule)"),
    "oxygen icons 64x64": (
        "/usr/share/icons/oxygen/base/64x64",
        None,
        "held out: not looked at before this run's candidates were written",
    ),
    "adwaita icons 64x64": (
        "/usr/share/icons/Adwaita/64x64",
        None,
        "held out: not looked at before this run's candidates were written",
    ),
    "openclipart-png": (
        "/usr/share/openclipart/png",
        None,
        "looked at: the old default's figures and contingency table were seen first",
    ),
}


def merged_kmeans(
    x: np.ndarray, ks: list[int], *, n_fine: int = 100, seed: int = 0
) -> dict[int, np.ndarray]:
    """Candidate not adopted: k-means with ``min(n_fine, n // 10)`` clusters, then average
    linkage (cosine) of their centroids, cut at every k of ``ks``.

    Parameters
    ----------
    x : ndarray of shape (n, m)
        ``reduce_features`` rows.

    Returns
    -------
    dict of int to ndarray of shape (n,), int64
    """
    from scipy.cluster.hierarchy import linkage
    from sklearn.cluster import KMeans, MiniBatchKMeans

    from dcsi.image_clusters import cut_tree_labels

    n_fine = min(n_fine, x.shape[0] // 10)
    model: Any = (
        MiniBatchKMeans(n_fine, n_init=3, random_state=seed, batch_size=2048)
        if x.shape[0] > 20_000
        else KMeans(n_fine, n_init=3, random_state=seed)
    )
    fine = model.fit_predict(x)
    tree = linkage(model.cluster_centers_, method="average", metric="cosine")
    cuts = cut_tree_labels(tree[:, :2].astype(np.int64), n_fine, [k for k in ks if k <= n_fine])
    return {k: lab[fine] for k, lab in cuts.items()}


def _auto_k(x: np.ndarray, fits: dict[int, np.ndarray], seed: int) -> int:
    """The k of smallest Davies-Bouldin index on dcsi's 5,000-row sample (its rule)."""
    from sklearn.metrics import davies_bouldin_score

    rows = np.arange(x.shape[0])
    if rows.size > 5000:
        rows = np.sort(np.random.default_rng(seed).choice(rows.size, 5000, replace=False))
    scores = {k: davies_bouldin_score(x[rows], lab[rows]) for k, lab in sorted(fits.items())}
    return min(scores, key=lambda k: (scores[k], k))


def _largest_classes(labels: np.ndarray, found: np.ndarray, top: int = 3) -> list[dict[str, Any]]:
    """For the ``top`` largest classes: their size and the share of them in their
    largest cluster (what ARI, a count of pairs, weighs most)."""
    out = []
    for c in np.argsort(-np.bincount(labels), kind="stable")[:top]:
        members = found[labels == c]
        out.append(
            {
                "class": int(c),
                "size": int(members.size),
                "share_in_largest_cluster": float(np.bincount(members).max() / members.size),
            }
        )
    return out


def _pool_row(pool: str, name: str, labels: np.ndarray, found: Any, secs: float) -> dict[str, Any]:
    found = np.asarray(found, dtype=np.int64)
    row = {
        "name": name,
        "k": int(np.unique(found).size),
        **_scores(labels, found),
        "seconds": secs,
        "largest_classes": _largest_classes(labels, found),
        "largest_cluster_share": float(np.bincount(found).max() / found.size),
    }
    print(
        f"{pool}: {name}: k={row['k']} NMI {row['nmi']:.3f} ARI {row['ari']:.3f}", file=sys.stderr
    )
    return row


def run_pools(seed: int) -> dict[str, Any]:
    """dcsi's default, candidates and pixel k-means on every pool of :data:`POOLS`."""
    from sklearn.cluster import KMeans

    import dcsi
    from dcsi.image_clusters import reduce_features

    out = []
    for pool, (source, split, role) in POOLS.items():
        fs = cached_features(source, split=split)
        image_set = fs.image_set
        size = None if source.startswith("sample:") else 32
        pixels = image_set.to_array(size=size, mode="L").reshape(len(image_set), -1) / 255.0
        labels = np.asarray(fs.labels)
        true_k = len(fs.classes)
        x = reduce_features(fs.features, seed=seed)
        ks = list(range(2, max(2, min(30, len(x) // 10)) + 1))
        rows: list[dict[str, Any]] = []

        def add(name: str, found: Any, secs: float) -> None:
            rows.append(_pool_row(pool, name, labels, found, secs))  # noqa: B023 (called at once)

        with Timer() as t:
            ic = dcsi.cluster_images(features=fs.features, seed=seed)
        add("dcsi default = old default (k-means, Davies-Bouldin)", ic.labels, t.seconds)
        with Timer() as t:
            ic = dcsi.cluster_images(features=fs.features, n_clusters=true_k, seed=seed)
        add(f"dcsi k-means, true k = {true_k}", ic.labels, t.seconds)
        for n_fine in (50, 100, 200):
            with Timer() as t:
                fits = merged_kmeans(x, ks, n_fine=n_fine, seed=seed)
                found = fits[_auto_k(x, fits, seed)]
            add(f"candidate: k-means({n_fine}) + average-linkage merge, DB", found, t.seconds)
        with Timer() as t:
            found = KMeans(n_clusters=true_k, random_state=seed).fit_predict(pixels)
        add(f"KMeans({true_k}) on raw pixels", found, t.seconds)
        out.append(
            {
                "pool": pool,
                "source": source,
                "role": role,
                "n_images": len(x),
                "true_k": true_k,
                "class_sizes": np.bincount(labels).tolist(),
                "classes": list(fs.classes),
                "rows": rows,
            }
        )
    return {"seed": seed, "features": "EfficientNet-Lite0 (default input size)", "pools": out}


def run_choice(seed: int) -> dict[str, Any]:
    """The data the defaults were chosen on: rule x method on digits and train-5k."""
    import dcsi

    image_set = dcsi.open_source("sample:fashion-mnist", split="train")
    rows = np.sort(np.random.default_rng(1).choice(len(image_set), 5000, replace=False))
    sets = {
        "digits": dcsi.extract_features("sample:digits"),
        "fashion-mnist train 5k (seed 1)": dcsi.extract_features(image_set.subset(rows)),
    }
    out = []
    for name, fs in sets.items():
        for method in ("kmeans", "agglomerative"):
            for rule in ("silhouette", "davies_bouldin"):
                params = {"method": method, "rule": rule, "seed": seed}
                ic, secs, _ = _timed(
                    lambda fs=fs, params=params: dcsi.cluster_images(features=fs.features, **params)
                )
                out.append(
                    {
                        "data": name,
                        "method": method,
                        "rule": rule,
                        "k": ic.n_clusters,
                        **_scores(fs.labels, ic.labels),
                        "seconds": secs,
                    }
                )
                print(out[-1], file=sys.stderr)
    return {"rows": out}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="seeded subset of the train split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--choice", action="store_true", help="the choice-data table only")
    parser.add_argument(
        "--pools",
        action="store_true",
        help="default, candidates and pixel k-means on every labelled pool "
        "(results/image_clusters_pools.json)",
    )
    parser.add_argument(
        "--source",
        default="sample:fashion-mnist",
        help="another labelled image folder, e.g. /usr/share/openclipart/png (labels hidden "
        "from the clustering; results/image_clusters_<folder>.json)",
    )
    args = parser.parse_args(argv)
    if args.choice:
        res = run_choice(args.seed)
        print_table(
            [
                [
                    r["data"],
                    r["method"],
                    r["rule"],
                    r["k"],
                    r["nmi"],
                    r["ari"],
                    r["purity"],
                    r["seconds"],
                ]
                for r in res["rows"]
            ],
            ["data", "method", "rule", "k", "NMI", "ARI", "purity", "s"],
        )
        write_results("image_clusters_choice", res)
        return
    if args.pools:
        res = run_pools(args.seed)
        print_table(
            [
                [
                    p["pool"],
                    f"{r['k']} / {p['true_k']}",
                    r["name"],
                    r["nmi"],
                    r["ari"],
                    r["purity"],
                    r["largest_classes"][0]["share_in_largest_cluster"],
                    r["seconds"],
                ]
                for p in res["pools"]
                for r in p["rows"]
            ],
            ["pool", "k / true", "method", "NMI", "ARI", "purity", "largest class kept", "s"],
        )
        write_results("image_clusters_pools", res)
        return
    res = run_main(args.n, args.seed, args.source)
    table = [
        [
            r["name"],
            r["input"],
            r["k"],
            r["nmi"],
            r["ari"],
            r["purity"],
            r["seconds"],
            r["peak_traced_mib"],
        ]
        for r in res["rows"]
    ]
    b = res["analyze_block"]
    table.append(
        [
            "dcsi analyze's image_clusters block (default clusters + map of 5,000)",
            res["features"],
            None,
            None,
            None,
            None,
            b["seconds"],
            b["peak_traced_mib"],
        ]
    )
    m = res["map"]
    table.append(
        [
            "image_map of every image (t-SNE 5,000 + neighbours)",
            res["features"],
            None,
            None,
            None,
            None,
            m["seconds"],
            m["peak_traced_mib"],
        ]
    )
    print(
        f"{res['source']}, {res['n_images']:,} images, {res['true_k']} classes (labels hidden); "
        f"ResNet50: {res['resnet50']}"
    )
    print_table(table, ["method", "input", "k", "NMI", "ARI", "purity", "s", "peak traced MiB"])
    print(f"peak RSS of the process: {res['peak_rss_mib']:.0f} MiB")
    name = (
        "image_clusters"
        if args.source == "sample:fashion-mnist"
        else ("image_clusters_" + "_".join(Path(args.source).parts[-2:]))
    )
    name += "" if args.n is None else f"_n{args.n}"
    write_results(name, res)


if __name__ == "__main__":
    main()
