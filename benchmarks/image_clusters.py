"""Image clusters and the map on Fashion-MNIST train, labels hidden from the clustering.

Thomas & Abraham cluster unlabelled images with k-means on pre-trained CNN features.
On Fashion-MNIST's train split (60,000 28x28 images, Debian's
``dataset-fashion-mnist``; features of EfficientNet-Lite0 at 64 px from dcsi's feature
cache, their extraction not timed), each row clusters the features (or pixels) without
the labels, then scores the clusters against the 10 classes (NMI, ARI, purity):

- ``dcsi default``: ``cluster_images(features=F)`` -- 100 k-means clusters of the unit
  PCA-50 features merged by average linkage, k chosen over 2..30 by the Davies-Bouldin
  gap (the index of structureless copies of a 5,000 sample over that of the sample);
- ``previous default``: ``method="kmeans", rule="davies_bouldin"`` (k-means, the plain
  Davies-Bouldin index), the default until issue 12's second pass;
- ``dcsi k-means, silhouette``: ``method="kmeans", rule="silhouette"``;
- ``dcsi agglomerative``: ``method="agglomerative"`` (kNN-graph Ward; tree on a seeded
  20,000 subsample, the rest to the nearest centroid), k by the Davies-Bouldin gap;
- ``dcsi merged / k-means, k = 10``: both methods given the true number of classes;
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

``--choice`` is the table the first default's rule (plain Davies-Bouldin rather than
silhouette) was chosen on: digits, 1,797 images, and a seeded 5,000-image subset of the
train split.  The present default was chosen on the pools below (see ``--pools``).

``--pools`` runs, in one process and for every seed of ``--seeds`` (default 0..7),
dcsi's default, the previous default, k-means with the new rule, both methods given the
true k, and pixel k-means with the true k, on six labelled pools: Fashion-MNIST train,
digits, the Oxygen and Adwaita icon themes (64 x 64 icons), the Tango icon theme
(32 x 32; icons' context folders as classes) and openclipart-png.  Seeds 0..3 are the
ones the default was designed on (seeds 0 and 1 for the rule, 0..3 to compare the
partitions), seeds 4..7 were first run in this benchmark, after the choice: the JSON
reports both means apart (``design_seeds``, ``fresh_seeds``), per pool and method, with
how many seeds put k within a factor 1.5 of the classes, and per run how much of each
of the three largest classes its largest cluster holds (ARI counts pairs of images, so
the largest classes weigh most).

Usage (from the repository root)::

    python benchmarks/image_clusters.py                 # all 60,000 images
    python benchmarks/image_clusters.py --n 5000        # a seeded subset, quick check
    python benchmarks/image_clusters.py --choice        # the table the defaults used
    python benchmarks/image_clusters.py --pools         # every labelled pool, 8 seeds

Prints a markdown table and writes ``benchmarks/results/image_clusters.json`` (with
``--choice``: ``image_clusters_choice.json``; ``--pools``:
``image_clusters_pools_seeds.json``; ``image_clusters_pools.json`` is the single-seed
run of the earlier version of this script, kept as history)
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
        "dcsi default (merged k-means, auto k: Davies-Bouldin gap)",
        lambda: dcsi.cluster_images(features=feats, seed=seed),
        cnn,
    )
    add(
        "previous default (k-means, auto k: Davies-Bouldin)",
        lambda: dcsi.cluster_images(
            features=feats, method="kmeans", rule="davies_bouldin", seed=seed
        ),
        cnn,
    )
    add(
        "dcsi k-means, auto k: silhouette",
        lambda: dcsi.cluster_images(features=feats, method="kmeans", rule="silhouette", seed=seed),
        cnn,
    )
    agg = add(
        "dcsi agglomerative (auto k: Davies-Bouldin gap)",
        lambda: dcsi.cluster_images(features=feats, method="agglomerative", seed=seed),
        cnn,
    )
    add(
        f"dcsi merged k-means, k = {true_k}",
        lambda: dcsi.cluster_images(features=feats, n_clusters=true_k, seed=seed),
        cnn,
    )
    add(
        f"dcsi k-means, k = {true_k}",
        lambda: dcsi.cluster_images(features=feats, n_clusters=true_k, method="kmeans", seed=seed),
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
        "designed on (seeds 0-3)",
    ),
    "digits": ("sample:digits", None, "designed on (seeds 0-3)"),
    "oxygen icons 64x64": (
        "/usr/share/icons/oxygen/base/64x64",
        None,
        "held out by the first default; designed on here (seeds 0-3)",
    ),
    "adwaita icons 64x64": (
        "/usr/share/icons/Adwaita/64x64",
        None,
        "held out by the first default; designed on here (seeds 0-3)",
    ),
    "tango icons 32x32": (
        "/usr/share/icons/Tango/32x32",
        None,
        "new in this pass; designed on here (seeds 0-3)",
    ),
    "openclipart-png": (
        "/usr/share/openclipart/png",
        None,
        "looked at by every pass (its ARI is the target the first default missed)",
    ),
    "glyphs A-J": (
        "glyphs",
        None,
        "held out: first run after the default was fixed (letters A-J in every installed "
        "TrueType/OpenType font, as notMNIST; classes that differ in shape)",
    ),
}

#: Debian packages the pools read: the images, and the fonts of the glyph pool.
PACKAGES = (
    "dataset-fashion-mnist",
    "oxygen-icon-theme",
    "adwaita-icon-theme",
    "tango-icon-theme",
    "openclipart-png",
    "fonts-urw-base35",
    "fonts-liberation",
    "fonts-freefont-ttf",
    "fonts-croscore",
    "fonts-crosextra-carlito",
    "fonts-crosextra-caladea",
    "fonts-ebgaramond",
    "fonts-lato",
    "fonts-open-sans",
    "fonts-roboto-unhinted",
)


def install_packages() -> None:
    """``apt-get install`` the :data:`PACKAGES` that ``dpkg`` does not list as installed
    (where ``apt-get`` exists; otherwise a missing pool fails when it is read)."""
    import shutil
    import subprocess

    if not shutil.which("apt-get") or not shutil.which("dpkg-query"):
        return
    missing = [
        p
        for p in PACKAGES
        if subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True
        ).stdout.strip()
        != "install ok installed"
    ]
    if missing:
        print(f"installing {' '.join(missing)}", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=False)


#: Where :func:`glyph_folder` renders its letters.
GLYPHS_DIR = Path.home() / ".cache" / "dcsi" / "benchmarks" / "glyphs-A-J"
#: Font families left out of the glyph pool: they map letters to symbols.
SYMBOL_FONTS = ("symbol", "dingbat", "d050000l")


def glyph_folder() -> Path:
    """Letters A-J, one 64 x 64 grey PNG per letter and font (``<letter>/<font>.png``),
    from every TrueType/OpenType font ``fc-list`` knows except symbol fonts (the font
    packages of :data:`PACKAGES`: 159 fonts on Debian 12, with DejaVu).  Each glyph is
    scaled into a 48-px box and centred.  Rendered once; the folder is reused."""
    import subprocess

    from PIL import Image, ImageDraw, ImageFont

    if GLYPHS_DIR.is_dir() and any(GLYPHS_DIR.iterdir()):
        return GLYPHS_DIR
    listed = subprocess.run(
        ["fc-list", ":", "file", "family"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    fonts = sorted(
        {
            line.split(":")[0].strip()
            for line in listed
            if line.split(":")[0].strip().lower().endswith((".ttf", ".otf"))
            and not any(w in line.lower() for w in SYMBOL_FONTS)
        }
    )
    tmp = GLYPHS_DIR.with_name(GLYPHS_DIR.name + ".partial")
    for letter in "ABCDEFGHIJ":
        (tmp / letter).mkdir(parents=True, exist_ok=True)
        for path in fonts:
            font = ImageFont.truetype(path, 96)
            left, top, right, bottom = font.getbbox(letter)
            if right - left < 2 or bottom - top < 2:
                continue
            big = Image.new("L", (right - left + 8, bottom - top + 8), 255)
            ImageDraw.Draw(big).text((4 - left, 4 - top), letter, font=font, fill=0)
            big.thumbnail((48, 48), Image.Resampling.LANCZOS)
            out = Image.new("L", (64, 64), 255)
            out.paste(big, ((64 - big.width) // 2, (64 - big.height) // 2))
            out.save(tmp / letter / f"{Path(path).stem}.png")
    tmp.rename(GLYPHS_DIR)
    return GLYPHS_DIR


#: Seeds the present default was designed on; the others of ``--seeds`` are fresh.
DESIGN_SEEDS = (0, 1, 2, 3)


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


def _pool_row(
    pool: str, name: str, seed: int, labels: np.ndarray, found: Any, secs: float
) -> dict[str, Any]:
    found = np.asarray(found, dtype=np.int64)
    row = {
        "name": name,
        "seed": seed,
        "k": int(np.unique(found).size),
        **_scores(labels, found),
        "seconds": secs,
        "largest_classes": _largest_classes(labels, found),
        "largest_cluster_share": float(np.bincount(found).max() / found.size),
    }
    print(
        f"{pool} seed {seed}: {name}: k={row['k']} NMI {row['nmi']:.3f} ARI {row['ari']:.3f}",
        file=sys.stderr,
    )
    return row


def _summary(rows: list[dict[str, Any]], true_k: int) -> dict[str, Any]:
    """Per method: mean NMI / ARI over the design and the fresh seeds, the k per seed and
    how many seeds put k within a factor 1.5 of the classes."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name]
        entry: dict[str, Any] = {
            "k_per_seed": {str(r["seed"]): r["k"] for r in mine},
            "k_within_1.5x": sum(true_k / 1.5 <= r["k"] <= 1.5 * true_k for r in mine),
            "n_seeds": len(mine),
        }
        for part, keep in (("design_seeds", True), ("fresh_seeds", False)):
            sel = [r for r in mine if (r["seed"] in DESIGN_SEEDS) == keep]
            entry[part] = (
                {
                    "n": len(sel),
                    "nmi": float(np.mean([r["nmi"] for r in sel])),
                    "ari": float(np.mean([r["ari"] for r in sel])),
                    "ari_min": float(np.min([r["ari"] for r in sel])),
                }
                if sel
                else None
            )
        out[name] = entry
    return out


def run_pools(seeds: list[int]) -> dict[str, Any]:
    """The default, the previous default, k-means with the new rule, both methods with
    the true k, and pixel k-means, on every pool of :data:`POOLS` for every seed."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    import dcsi

    install_packages()
    out = []
    for pool, (source, split, role) in POOLS.items():
        if source == "glyphs":
            source = str(glyph_folder())
        fs = cached_features(source, split=split)
        image_set = fs.image_set
        size = None if source.startswith("sample:") else 32
        pixels = image_set.to_array(size=size, mode="L").reshape(len(image_set), -1) / 255.0
        labels = np.asarray(fs.labels)
        true_k = len(fs.classes)
        rows: list[dict[str, Any]] = []
        runs = {
            "dcsi default (merged k-means, Davies-Bouldin gap)": {},
            "previous default (k-means, Davies-Bouldin)": {
                "method": "kmeans",
                "rule": "davies_bouldin",
            },
            "k-means, Davies-Bouldin gap": {"method": "kmeans"},
            f"merged k-means, true k = {true_k}": {"n_clusters": true_k},
            f"k-means, true k = {true_k}": {"n_clusters": true_k, "method": "kmeans"},
        }
        for seed in seeds:
            for name, kwargs in runs.items():
                with Timer() as t:
                    ic = dcsi.cluster_images(features=fs.features, seed=seed, **kwargs)
                rows.append(_pool_row(pool, name, seed, labels, ic.labels, t.seconds))
            with Timer() as t:
                model: Any = (
                    MiniBatchKMeans(true_k, n_init=3, random_state=seed, batch_size=2048)
                    if len(pixels) > 20_000
                    else KMeans(n_clusters=true_k, random_state=seed)
                )
                found = model.fit_predict(pixels)
            name = f"pixel k-means, true k = {true_k}"
            rows.append(_pool_row(pool, name, seed, labels, found, t.seconds))
        out.append(
            {
                "pool": pool,
                "source": source,
                "role": role,
                "n_images": len(labels),
                "true_k": true_k,
                "class_sizes": np.bincount(labels).tolist(),
                "classes": list(fs.classes),
                "summary": _summary(rows, true_k),
                "rows": rows,
            }
        )
    return {
        "seeds": seeds,
        "design_seeds": list(DESIGN_SEEDS),
        "features": "EfficientNet-Lite0 (default input size)",
        "pixels": "grey, 32 x 32 for the folders (native for the samples), / 255; "
        "MiniBatchKMeans above 20,000 images",
        "pools": out,
    }


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
        help="default, previous default and pixel k-means on every labelled pool, for "
        "every seed of --seeds (results/image_clusters_pools_seeds.json)",
    )
    parser.add_argument(
        "--seeds",
        default="0,1,2,3,4,5,6,7",
        help="comma-separated seeds of --pools (default 0..7; 0..3 are the design seeds)",
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
        res = run_pools([int(v) for v in args.seeds.split(",")])
        table = []
        for p in res["pools"]:
            for name, e in p["summary"].items():
                design, fresh = e["design_seeds"] or {}, e["fresh_seeds"] or {}
                table.append(
                    [
                        p["pool"],
                        name,
                        " ".join(str(k) for k in e["k_per_seed"].values()) + f" / {p['true_k']}",
                        f"{e['k_within_1.5x']} of {e['n_seeds']}",
                        design.get("nmi"),
                        design.get("ari"),
                        fresh.get("nmi"),
                        fresh.get("ari"),
                        fresh.get("ari_min"),
                    ]
                )
        print_table(
            table,
            [
                "pool",
                "method",
                "k per seed / classes",
                "k within 1.5x",
                "NMI design",
                "ARI design",
                "NMI fresh",
                "ARI fresh",
                "ARI fresh min",
            ],
        )
        write_results("image_clusters_pools_seeds", res)
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
