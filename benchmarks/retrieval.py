"""Retrieval as Kim et al. measure it: is an image of the query's cluster at rank 1 / in the top 4?

For every query, an exact cosine search over the gallery (the query itself left out);
*top-1*: the first image returned is of the query's cluster; *top-4*: one of the first
four is.  Rows: EfficientNet-Lite0 features with each pooling of
:mod:`dcsi.backbones.pooling` -- ``gap`` (the last layer: dcsi's default until now),
``ga``, ``sap``, ``sam`` -- and similarity heads (:func:`dcsi.train_similarity_head`,
default settings) trained on clusters disjoint from the evaluated ones.

Data with true clusters:

- **oxygen** (Debian ``oxygen-icon-theme``): each icon (context/name) at the sizes it
  comes in, 8-256 px, one cluster; regular PNG files only (the theme's 2,517 symbolic
  links repeat files), and names whose files are byte-identical merged into one
  cluster.  RGBA, composited over white as dcsi reads it.  The icon names are split in
  two halves (seeded): heads train on half A, every row is reported on half B (queries
  and gallery from B only), and the no-head rows also on all icons.
- **tango** (Debian ``tango-icon-theme``, 16-32 px): the leave-dataset-out check.
  Nothing is chosen on it: the poolings and the head trained on oxygen's half A are
  applied as they are.
- **copies** (Fashion-MNIST train, Debian ``dataset-fashion-mnist``): 10,000 images,
  2,000 of them originals with one planted copy each (``copy_kinds.py``: 24 kinds in 6
  families, strength drawn per copy; colour kinds on the grey images promoted to RGB;
  no flips), 12,000 images in all.  1,000 originals form the *selection* split (their
  copies are the queries on which the pooling to recommend is chosen, and the heads'
  training clusters: original + copy, with the 8,000 images that are no original as
  negatives); the copies of the other 1,000 are the reported queries.  Top-1 here: the
  original is the first image returned.

Which pooling to recommend is decided on selection data only (oxygen half A, the copies'
selection split), then read on the held-out data; tango is never looked at to choose.

The four poolings come from one forward pass per image (an extractor object that pools
the hooked layers every way at once, cached by dcsi under its own key); the script
first checks on 32 images that each of them equals ``extract_features(pooling=...)``.

Usage (from the repository root; installs nothing: needs the Debian packages
``oxygen-icon-theme``, ``tango-icon-theme``, ``dataset-fashion-mnist``)::

    python benchmarks/retrieval.py            # everything: 19 min cold on 2 busy cores
    python benchmarks/retrieval.py --quick    # 1/5 of each dataset, a smoke run
    python benchmarks/retrieval.py --quick --image-size 128   # the backbone at 128 px

Prints markdown tables and writes ``benchmarks/results/retrieval.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import Timer, print_table, write_results
from copy_kinds import FAMILIES, KINDS, plant_copies

from dcsi.neighbors import unit_rows

POOLINGS = ("gap", "ga", "sap", "sam")
BACKBONE = "efficientnet_lite0"
OXYGEN = Path("/usr/share/icons/oxygen/base")
TANGO = Path("/usr/share/icons/Tango")
SEED = 0


# ----------------------------------------------------------------------------- features


class AllPoolings:
    """An extractor returning ``[gap | ga | sap | sam]`` side by side from one pass.

    Wraps dcsi's ``gap`` extractor (whose output is the ``gap`` block) and pools the
    layers of :data:`dcsi.backbones.POOL_LAYERS` with the functions of
    :mod:`dcsi.backbones.pooling`, exactly as ``pooling="ga"|"sap"|"sam"`` do.
    """

    def __init__(self, image_size: int) -> None:
        from dcsi.backbones import POOL_LAYERS, get_backbone

        self.base = get_backbone(BACKBONE, image_size=image_size, device="cpu")
        self.name = f"{BACKBONE}-all-poolings"
        self.weights_sha256 = self.base.weights_sha256
        self.image_size = image_size
        self.cache_key = self.base.cache_key + ";all-poolings=gap|ga|sap|sam"
        self.layers = [p for p, _ in POOL_LAYERS[BACKBONE]]
        self.dims = {
            "gap": 1280,
            **{
                m: (1 if m == "ga" else 4) * sum(c for _, c in POOL_LAYERS[BACKBONE])
                for m in POOLINGS[1:]
            },
        }
        self.dim = sum(self.dims.values())
        self.transform = self.base.transform
        self._maps: dict[int, Any] = {}
        self._hooked = False

    def _hook(self, i: int) -> Any:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            self._maps[i] = output.detach().clone()

        return hook

    def __call__(self, batch: Any) -> Any:
        import torch

        from dcsi.backbones.pooling import layer_poolings, pool_layer, pool_layers

        if not self._hooked:
            for i, path in enumerate(self.layers):
                self.base.model.get_submodule(path).register_forward_hook(self._hook(i))
            self._hooked = True
        gap = self.base(batch)
        maps = [self._maps[i] for i in range(len(self.layers))]
        parts = [gap]
        for mode in POOLINGS[1:]:
            hows = layer_poolings(mode, len(maps))
            parts.append(pool_layers([pool_layer(m, h, s) for m, (h, s) in zip(maps, hows)]))
        return torch.cat(parts, dim=1)

    def split(self, features: np.ndarray) -> dict[str, np.ndarray]:
        out, start = {}, 0
        for mode in POOLINGS:
            out[mode] = np.ascontiguousarray(features[:, start : start + self.dims[mode]])
            start += self.dims[mode]
        return out


def features_of(images: Any, image_size: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The four poolings of every image of an ImageSet, and timing."""
    from dcsi.features import extract_features

    ext = AllPoolings(image_size)
    with Timer() as t:
        fs = extract_features(images, backbone=ext, batch_size=64)
    return ext.split(fs.features), {
        "n_images": len(fs),
        "n_cached": fs.n_cached,
        "seconds": round(t.seconds, 1),
        "image_size": image_size,
    }


def check_against_dcsi(images: Any, image_size: int, feats: dict[str, np.ndarray]) -> dict:
    """Largest difference between the combined pass and extract_features(pooling=m)."""
    from dcsi.features import extract_features

    sub = images.subset(np.arange(min(32, len(images))))
    out = {}
    for mode in POOLINGS:
        ref = extract_features(sub, pooling=mode, image_size=image_size, cache=False).features
        out[mode] = float(np.max(np.abs(ref - feats[mode][: len(ref)])))
    return out


# ----------------------------------------------------------------------------- search


def top_k(features: np.ndarray, queries: np.ndarray, gallery: np.ndarray, k: int = 4):
    """Exact cosine top-k over ``gallery`` (indices) for each query, itself left out.

    Returns an (len(queries), k) array of image indices, best first; blocks of 1,024
    queries (never the full n x n matrix).
    """
    f = unit_rows(features, np.float32)
    g = f[gallery]
    out = np.empty((len(queries), k), dtype=np.int64)
    pos = {int(j): p for p, j in enumerate(gallery)}
    for s in range(0, len(queries), 1024):
        q = queries[s : s + 1024]
        sims = f[q] @ g.T
        for r, qi in enumerate(q):
            p = pos.get(int(qi))
            if p is not None:
                sims[r, p] = -np.inf
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[s : s + len(q)] = gallery[np.take_along_axis(part, order, axis=1)]
    return out


def cluster_hits(features, clusters, queries, gallery) -> dict[str, float]:
    found = top_k(features, queries, gallery)
    same = clusters[found] == clusters[queries][:, None]
    return {
        "top1": round(float(same[:, 0].mean()), 4),
        "top4": round(float(same.any(axis=1).mean()), 4),
        "n_queries": len(queries),
    }


def queries_with_partner(clusters: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Gallery images whose cluster has another image in the gallery."""
    ids, counts = np.unique(clusters[gallery], return_counts=True)
    many = set(ids[counts >= 2].tolist())
    return np.asarray([g for g in gallery if clusters[g] in many], dtype=np.int64)


# ----------------------------------------------------------------------------- icons


def icon_files(root: Path, limit: float = 1.0) -> tuple[list[Path], np.ndarray, list[str]]:
    """Regular PNG files of an icon theme, a cluster id per file (icon context/name;
    names with byte-identical files merged), and the cluster names."""
    files = sorted(p for p in root.glob("*/*/*.png") if p.is_file() and not p.is_symlink())
    names = sorted({f"{p.parent.name}/{p.stem}" for p in files})
    if limit < 1.0:
        rng = np.random.default_rng(SEED)
        names = sorted(rng.choice(names, max(2, int(len(names) * limit)), replace=False).tolist())
        keep = set(names)
        files = [p for p in files if f"{p.parent.name}/{p.stem}" in keep]
    index = {n: i for i, n in enumerate(names)}
    parent = list(range(len(names)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: dict[str, int] = {}
    for p in files:
        i = index[f"{p.parent.name}/{p.stem}"]
        h = hashlib.sha256(p.read_bytes()).hexdigest()
        if h in seen:
            parent[find(i)] = find(seen[h])
        else:
            seen[h] = i
    roots = [find(index[f"{p.parent.name}/{p.stem}"]) for p in files]
    _, clusters = np.unique(roots, return_inverse=True)
    return files, clusters.astype(np.int64), names


def open_icons(files: list[Path], folder: Path) -> Any:
    """An ImageSet over the files (links in a scratch folder, in the files' order)."""
    from dcsi.sources import open_source

    for i, p in enumerate(files):
        (folder / f"{i:06d}_{p.parent.parent.name}.png").symlink_to(p)
    images = open_source(str(folder), follow_symlinks=True)
    assert len(images) == len(files) and not images.skipped, images.skipped[:3]
    assert [int(Path(i).name[:6]) for i in images.ids] == list(range(len(files)))
    return images


def icon_theme(
    root: Path, scratch: Path, limit: float, image_size: int | None = None
) -> dict[str, Any]:
    from dcsi.backbones import default_image_size

    files, clusters, names = icon_files(root, limit)
    folder = scratch / root.parent.name.lower()
    folder.mkdir()
    images = open_icons(files, folder)
    size = image_size or default_image_size(images.typical_side())
    feats, timing = features_of(images, size)
    return {
        "files": files,
        "clusters": clusters,
        "feats": feats,
        "images": images,
        "info": {
            "root": str(root),
            "n_images": len(files),
            "n_names": len(names),
            "n_clusters": int(clusters.max()) + 1,
            "sizes_px": sorted({int(p.parent.parent.name.split("x")[0]) for p in files}),
            "features": timing,
        },
    }


def icons_benchmark(oxygen: dict, tango: dict | None) -> dict[str, Any]:
    from dcsi._progress import set_progress

    clusters = oxygen["clusters"]
    rng = np.random.default_rng(SEED)
    n_clusters = int(clusters.max()) + 1
    half_a = rng.permutation(n_clusters)[: n_clusters // 2]
    in_a = np.isin(clusters, half_a)
    idx_a, idx_b = np.flatnonzero(in_a), np.flatnonzero(~in_a)
    all_idx = np.arange(len(clusters))
    q_a, q_b, q_all = (queries_with_partner(clusters, g) for g in (idx_a, idx_b, all_idx))
    rows: dict[str, Any] = {}
    for mode, f in oxygen["feats"].items():
        rows[mode] = {
            "selection_A": cluster_hits(f, clusters, q_a, idx_a),
            "held_out_B": cluster_hits(f, clusters, q_b, idx_b),
            "all": cluster_hits(f, clusters, q_all, all_idx),
        }
    chosen = max(
        POOLINGS, key=lambda m: (rows[m]["selection_A"]["top1"], rows[m]["selection_A"]["top4"])
    )
    heads = {}
    set_progress(False)
    import dcsi

    for mode in dict.fromkeys(("gap", chosen)):
        f = oxygen["feats"][mode]
        with Timer() as t:
            head = dcsi.train_similarity_head(f[idx_a], clusters[idx_a], seed=SEED)
        heads[mode] = head
        rows[f"head on {mode}"] = {
            "held_out_B": cluster_hits(head.apply(f), clusters, q_b, idx_b),
            "train_seconds": round(t.seconds, 1),
            "config": {k: v for k, v in head.config.items() if k != "training"},
            "final_loss": head.config["training"]["loss_per_epoch"][-1],
        }
    out: dict[str, Any] = {"info": oxygen["info"], "chosen_on_A": chosen, "rows": rows}
    out["info"]["split"] = {
        "clusters_A": len(half_a),
        "clusters_B": int(n_clusters - len(half_a)),
        "queries_A": len(q_a),
        "queries_B": len(q_b),
        "queries_all": len(q_all),
    }
    if tango is not None:
        tc = tango["clusters"]
        t_all = np.arange(len(tc))
        tq = queries_with_partner(tc, t_all)
        trows = {m: cluster_hits(f, tc, tq, t_all) for m, f in tango["feats"].items()}
        same_size = (
            tango["info"]["features"]["image_size"] == oxygen["info"]["features"]["image_size"]
        )
        if same_size:
            for mode, head in heads.items():
                trows[f"oxygen-A head on {mode}"] = cluster_hits(
                    head.apply(tango["feats"][mode]), tc, tq, t_all
                )
        out["tango"] = {"info": tango["info"], "rows": trows}
    return out


# ----------------------------------------------------------------------------- copies


def copies_benchmark(limit: float, size: int = 64) -> dict[str, Any]:
    import dcsi
    from dcsi._progress import set_progress
    from dcsi.samples import load_sample
    from dcsi.sources import open_source

    n_images, n_originals = int(10000 * limit), int(2000 * limit)
    sample = load_sample("fashion-mnist", "train")
    images = sample.images[:n_images]
    rng = np.random.default_rng(SEED)
    originals = rng.choice(n_images, n_originals, replace=False)
    select, held = originals[: n_originals // 2], originals[n_originals // 2 :]
    with Timer() as t_plant:
        planted = plant_copies(images, originals, mode="RGB", seed=SEED)
    feats_o, timing_o = features_of(open_source(images), size)
    copies_set = open_source(planted.copies)
    feats_c, timing_c = features_of(copies_set, size)
    feats = {m: np.concatenate([feats_o[m], feats_c[m]]) for m in POOLINGS}
    check = check_against_dcsi(copies_set, size, feats_c)
    n = n_images + n_originals
    # cluster of an image: its original's index for planted pairs, else its own
    clusters = np.arange(n, dtype=np.int64)
    clusters[n_images:] = planted.originals
    copy_of = {int(o): n_images + k for k, o in enumerate(planted.originals)}
    q_sel = np.asarray([copy_of[int(o)] for o in select])
    q_held = np.asarray([copy_of[int(o)] for o in held])
    gallery = np.arange(n)
    fam = np.asarray(planted.families)
    held_fam = fam[np.arange(n_originals) >= n_originals // 2]
    rows: dict[str, Any] = {}
    for mode, f in feats.items():
        rows[mode] = _copy_rows(f, clusters, q_sel, q_held, gallery, held_fam)
    chosen = max(
        POOLINGS, key=lambda m: (rows[m]["selection"]["top1"], rows[m]["selection"]["top4"])
    )
    # heads: clusters original + copy for the selection originals; the images that are
    # no original are negatives (-1); held-out originals and copies are left out
    train_idx = np.concatenate([np.setdiff1d(np.arange(n_images), originals), select, q_sel])
    train_cl = np.full(len(train_idx), -1, dtype=np.int64)
    n_neg = n_images - n_originals
    train_cl[n_neg : n_neg + len(select)] = np.arange(len(select))
    train_cl[n_neg + len(select) :] = np.arange(len(select))
    set_progress(False)
    for mode in dict.fromkeys(("gap", chosen)):
        f = feats[mode]
        with Timer() as t:
            head = dcsi.train_similarity_head(f[train_idx], train_cl, seed=SEED)
        row = _copy_rows(head.apply(f), clusters, q_sel, q_held, gallery, held_fam)
        row["train_seconds"] = round(t.seconds, 1)
        row["final_loss"] = head.config["training"]["loss_per_epoch"][-1]
        rows[f"head on {mode}"] = row
    return {
        "info": {
            "n_images": n,
            "n_originals": n_originals,
            "selection_queries": len(q_sel),
            "held_out_queries": len(q_held),
            "kinds": sorted(set(planted.kinds)),
            "n_kinds": len(set(planted.kinds)),
            "families": {
                f: [k for k in ks if k in set(planted.kinds)] for f, ks in FAMILIES.items()
            },
            "plant_seconds": round(t_plant.seconds, 1),
            "features": {"originals": timing_o, "copies": timing_c},
            "check_vs_extract_features_max_abs_diff": check,
        },
        "chosen_on_selection": chosen,
        "rows": rows,
    }


def _copy_rows(f, clusters, q_sel, q_held, gallery, held_fam) -> dict[str, Any]:
    found = top_k(f, q_held, gallery)
    hit = clusters[found] == clusters[q_held][:, None]
    per_family = {}
    for fam in sorted(set(held_fam.tolist())):
        m = held_fam == fam
        per_family[fam] = {
            "top1": round(float(hit[m, 0].mean()), 4),
            "top4": round(float(hit[m].any(axis=1).mean()), 4),
            "n": int(m.sum()),
        }
    return {
        "selection": cluster_hits(f, clusters, q_sel, gallery),
        "held_out": {
            "top1": round(float(hit[:, 0].mean()), 4),
            "top4": round(float(hit.any(axis=1).mean()), 4),
            "n_queries": len(q_held),
        },
        "per_family": per_family,
    }


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1/5 of each dataset")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="PX",
        help="backbone input size for every dataset (default: dcsi's default size, "
        "64 px for all three)",
    )
    args = parser.parse_args()
    limit = 0.2 if args.quick else 1.0
    import torch

    torch.manual_seed(SEED)
    results: dict[str, Any] = {"backbone": BACKBONE, "quick": args.quick}
    name = "retrieval" + ("_quick" if args.quick else "")
    if args.image_size is not None:
        name += f"_{args.image_size}px"
    with Timer() as total, tempfile.TemporaryDirectory() as tmp:
        oxygen = icon_theme(OXYGEN, Path(tmp), limit, args.image_size)
        tango = icon_theme(TANGO, Path(tmp), limit, args.image_size) if TANGO.is_dir() else None
        results["icons"] = icons_benchmark(oxygen, tango)
        results["copies"] = copies_benchmark(limit, args.image_size or 64)
    results["seconds"] = round(total.seconds, 1)
    results["kinds_available"] = len(KINDS)
    _print(results)
    path = write_results(name, results)
    print(f"\nwrote {path}")


def _print(results: dict[str, Any]) -> None:
    _print_icons(results["icons"])
    _print_copies(results["copies"])


def _print_icons(icons: dict[str, Any]) -> None:
    print("\n### oxygen icons (same icon at another size)\n")
    rows = []
    for name, r in icons["rows"].items():
        a, b, al = r.get("selection_A"), r["held_out_B"], r.get("all")
        rows.append(
            [name]
            + ([a["top1"], a["top4"]] if a else ["", ""])
            + [b["top1"], b["top4"]]
            + ([al["top1"], al["top4"]] if al else ["", ""])
        )
    print_table(
        rows, ["features", "A top-1", "A top-4", "B top-1", "B top-4", "all top-1", "all top-4"]
    )
    print(f"chosen on half A: {icons['chosen_on_A']}")
    if "tango" in icons:
        print("\n### tango icons (leave-dataset-out)\n")
        print_table(
            [[m, r["top1"], r["top4"]] for m, r in icons["tango"]["rows"].items()],
            ["features", "top-1", "top-4"],
        )


def _print_copies(copies: dict[str, Any]) -> None:
    print("\n### planted copies, Fashion-MNIST (original at rank 1)\n")
    print_table(
        [
            [m, r["selection"]["top1"], r["held_out"]["top1"], r["held_out"]["top4"]]
            for m, r in copies["rows"].items()
        ],
        ["features", "selection top-1", "held-out top-1", "held-out top-4"],
    )
    print(f"chosen on the selection split: {copies['chosen_on_selection']}")
    fams = sorted(next(iter(copies["rows"].values()))["per_family"])
    print("\n### planted copies per family, held-out top-1\n")
    print_table(
        [[m] + [r["per_family"][f]["top1"] for f in fams] for m, r in copies["rows"].items()],
        ["features", *fams],
    )


if __name__ == "__main__":
    main()
