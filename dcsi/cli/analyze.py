"""``dcsi analyze SOURCE --out DIR``: the whole analysis and the card files."""

from __future__ import annotations

import argparse
import shlex
import sys

from dcsi.cli._common import (
    add_backbone_options,
    add_cache_options,
    add_progress_option,
    add_size_option,
    add_source_options,
    cache_from_args,
    check_out_dir,
    source_kwargs,
)
from dcsi.ray_engine import ENGINES
from dcsi.redundancy import METHODS

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="class similarity, class clusters, redundancy and the index; writes the card",
        description="Analyze an image dataset and write DIR/dcsi.json, DIR/README.md, "
        "DIR/croissant.json and DIR/report.html.",
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="image folder, saved HF dataset, Parquet file(s), hf:<repo>[:<config>], sample:digits",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_source_options(p)
    add_size_option(p)
    add_backbone_options(p)
    p.add_argument(
        "--analyzers",
        default="cnn,ssim,wavelet",
        help="comma-separated subset of cnn,ssim,wavelet (default: all)",
    )
    p.add_argument(
        "--max-per-class",
        type=int,
        default=None,
        help="use at most N images per class (seeded random subset)",
    )
    p.add_argument(
        "--linkage",
        choices=("single", "complete", "average", "ward"),
        default="average",
        help="linkage of the class clustering",
    )
    p.add_argument(
        "--redundancy-method",
        choices=METHODS,
        default="wavelet",
        help="near-duplicate search stored in the card (default: wavelet)",
    )
    p.add_argument("--seed", type=int, default=0)
    add_cache_options(p)
    p.add_argument(
        "--index",
        action="store_true",
        help="also write the neighbour index (each image's nearest images) to "
        "DIR/neighbor_index/ from the same features, and record it in the card",
    )
    p.add_argument(
        "--index-k",
        type=int,
        default=10,
        metavar="K",
        help="neighbours per image in the index (default 10)",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="where the per-image work runs: this process (local, the default) or Ray "
        "model actors (ray; pip install 'dcsi[ray]'); the card is the same",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="with --engine ray: a running cluster (HOST:PORT, ray://HOST:PORT or auto); "
        "default: start a local Ray for this command",
    )
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dcsi.card import write_card_files
    from dcsi.pipeline import analyze_images, check_parameters
    from dcsi.ray_engine import engine_session
    from dcsi.sources import open_source

    out = check_out_dir(args.out)
    if args.index_k < 1:
        from dcsi.exceptions import DataError

        raise DataError(f"--index-k must be at least 1. Got {args.index_k} instead.")
    check_parameters(
        analyzers=args.analyzers,
        seed=args.seed,
        batch_size=args.batch_size,
        redundancy_method=args.redundancy_method,
        backbone=args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        size=args.size,
        pooling=args.pooling,
        runtime=args.runtime,
        device=args.device,
        engine=args.engine,
        ray_address=args.ray_address,
    )
    # reached before the scan; a cluster's nodes are checked for the source
    with engine_session(args.engine, args.ray_address, args.source):
        images = open_source(
            args.source, max_per_class=args.max_per_class, seed=args.seed, **source_kwargs(args)
        )
        card = analyze_images(
            images,
            backbone=args.backbone,
            weights=args.weights,
            analyzers=args.analyzers,
            image_size=args.image_size,
            batch_size=args.batch_size,
            device=args.device,
            max_per_class=args.max_per_class,
            seed=args.seed,
            cache=cache_from_args(args),
            linkage=args.linkage,
            redundancy_method=args.redundancy_method,
            size=args.size,
            pooling=args.pooling,
            runtime=args.runtime,
            neighbor_index=out / "neighbor_index" if args.index else None,
            neighbor_k=args.index_k,
            command=shlex.join(["dcsi", *sys.argv[1:]]),
            engine=args.engine,
            ray_address=args.ray_address,
        )
    position = {item_id: i for i, item_id in enumerate(images.ids)}
    paths = write_card_files(
        card, args.out, load_image=lambda item_id: images.load(position[item_id])
    )
    print(card.summary())
    print()
    for path in paths.values():
        print(f"wrote {path}")
    return 0
