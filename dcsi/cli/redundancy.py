"""``dcsi redundancy SOURCE --out DIR``: near-duplicate groups, keep-list and gallery."""

from __future__ import annotations

import argparse
from pathlib import Path

from dcsi._validation import check_int
from dcsi.cli._common import (
    add_align_options,
    add_progress_option,
    add_relative_options,
    add_search_option,
    add_size_option,
    add_source_options,
    align_from_args,
    check_out_dir,
    not_read,
    relative_from_args,
    source_kwargs,
)
from dcsi.neighbors import SearchOptions
from dcsi.redundancy import DEFAULT_THRESHOLDS, METHODS, RedundancyParams
from dcsi.similarity.wavelet import WaveletOptions

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "redundancy",
        help="near-duplicate groups: redundant copies and label conflicts",
        description="Find near-duplicate images (Yousefzadeh's Algorithm 1: wavelet "
        "coefficients, rank-revealing QR, then threshold + connected components or "
        "k-means). Writes DIR/redundancy.json, DIR/redundancy.csv (one row per group "
        "member), DIR/keep_list.csv (the reduced dataset) and DIR/gallery.html.",
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="image folder, saved HF dataset, Parquet file(s), hf:<repo>[:<config>], sample:digits",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_source_options(p)
    d = RedundancyParams()
    p.add_argument(
        "--method",
        choices=METHODS,
        default=d.method,
        help=f"image features compared (default: {d.method})",
    )
    p.add_argument(
        "--n-clusters",
        type=int,
        default=None,
        metavar="N",
        help="group by clustering into N clusters (k-means, as in the "
        "paper) instead of linking near-identical pairs (the default)",
    )
    p.add_argument(
        "--tau",
        type=float,
        default=d.wavelet.tau,
        help=f"condition-number bound of the wavelet column selection (default {d.wavelet.tau:g})",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="absolute link threshold (default: "
        + "; ".join(f"{m} {t:g}" for m, t in DEFAULT_THRESHOLDS.items())
        + "; wavelet and cnn: largest 1 - cos, ssim: smallest SSIM)",
    )
    p.add_argument(
        "--verify",
        choices=("ssim",),
        default=None,
        help="check every linked pair with SSIM as well",
    )
    p.add_argument(
        "--verify-threshold",
        type=float,
        default=d.verify_threshold,
        help=f"SSIM a verified pair must reach (default {d.verify_threshold:g})",
    )
    add_align_options(p)
    add_relative_options(p)
    add_search_option(p)
    add_size_option(p)
    p.add_argument(
        "--scope",
        choices=("all", "class"),
        default=d.scope,
        help="search the whole set (finds conflicts) or each class alone",
    )
    p.add_argument(
        "--clustering",
        choices=("kmeans", "spectral"),
        default=d.clustering,
        help="with --n-clusters: k-means (default) or spectral clustering",
    )
    p.add_argument(
        "--group-linkage",
        choices=("complete", "single"),
        default=d.group_linkage,
        help="links: split chains so every two members of a group are linked "
        "(complete, default) or keep connected components (single)",
    )
    p.add_argument(
        "--backbone", default="efficientnet_lite0", help="feature extractor of --method cnn"
    )
    p.add_argument(
        "--max-groups", type=int, default=50, help="groups shown in the gallery (default 50)"
    )
    p.add_argument("--seed", type=int, default=0)
    add_progress_option(p)
    p.set_defaults(func=run)


def _params(args: argparse.Namespace) -> RedundancyParams:
    """All options checked before any data is read."""
    return RedundancyParams(
        method=args.method,
        threshold=args.threshold,
        n_clusters=args.n_clusters,
        clustering=args.clustering,
        scope=args.scope,
        group_linkage=args.group_linkage,
        verify=args.verify,
        verify_threshold=args.verify_threshold,
        align=align_from_args(args) or None,
        relative=relative_from_args(args) or None,
        wavelet=WaveletOptions(tau=args.tau),
        search=SearchOptions(method=args.search),
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    from dcsi._io import atomic_write_json, atomic_write_text
    from dcsi.gallery import write_gallery
    from dcsi.redundancy import find_redundancy
    from dcsi.sources import open_source

    check_out_dir(args.out)
    p = _params(args)
    check_int(args.max_groups, "max_groups", "dcsi redundancy", min_value=0)
    if args.size is not None:
        check_int(args.size, "size", "dcsi redundancy", min_value=4)
    images = open_source(args.source, **source_kwargs(args))
    res = find_redundancy(
        images,
        method=p.method,
        threshold=args.threshold,
        n_clusters=p.n_clusters,
        clustering=p.clustering,
        scope=p.scope,
        group_linkage=p.group_linkage,
        verify=p.verify,
        verify_threshold=p.verify_threshold,
        align=p.align or False,
        relative=p.relative or False,
        wavelet=p.wavelet,
        search=p.search,
        size=args.size,
        backbone=args.backbone,
        seed=p.seed,
    )
    out = Path(args.out)
    index = {i: k for k, i in enumerate(images.ids)}
    paths = [
        atomic_write_json(out / "redundancy.json", {**res.to_dict(), **not_read(images)}),
        atomic_write_text(out / "redundancy.csv", res.groups_csv()),
        atomic_write_text(out / "keep_list.csv", res.keep_csv()),
        write_gallery(
            out / "gallery.html",
            res,
            lambda m: images.load(index[m]),
            title=f"Near-duplicate groups of {images.name}",
            max_groups=args.max_groups,
        ),
    ]
    s = res.summary
    print(
        f"{images.name}: {s['n_images']} images, method {res.method}, "
        f"threshold {res.params['threshold']}, working size "
        + "x".join(str(v) for v in res.params.get("working_size", ()))
    )
    print(
        f"  {s['n_groups']} groups ({s['n_redundant_groups']} redundant, "
        f"{s['n_conflict_groups']} label conflicts), {s['n_images_in_groups']} images "
        "in groups"
    )
    print(
        f"  keep-list: {s['n_kept']} kept, {s['n_removed']} removed "
        f"({100 * s['redundancy_rate']:.2f}% redundant)"
    )
    if res.blank is not None and res.blank["n_blank"]:
        print(
            f"  blank or near-uniform: {res.blank['n_blank']} images (per-channel std <= "
            f"{res.blank['tolerance']:g} grey levels), {s['n_blank_groups']} colour groups; "
            "listed in redundancy.json: blank"
        )
    if "rrqr" in s:
        r = s["rrqr"]
        cond = (
            "infinite (W is rank-deficient: some coefficients are combinations of others)"
            if r["cond_full"] is None
            else f"{r['cond_full']:.4g}"
        )
        print(
            f"  wavelet columns: {r['m']} of {r['n_columns']} kept (tau {r['tau']:g}); "
            f"cond(W) {cond}; numerical rank {r['numerical_rank']} at {r['rank_tol']:g}"
        )
    if images.skipped or images.dropped_classes:
        print(
            f"  not read: {len(images.skipped)} items, {len(images.dropped_classes)} "
            "empty classes (listed in redundancy.json: skipped, dropped_classes)"
        )
    for path in paths:
        print(f"wrote {path}")
    return 0
