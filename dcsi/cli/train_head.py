"""``dcsi train-head SOURCE --out HEAD.safetensors``: a similarity head from cluster data."""

from __future__ import annotations

import argparse
from pathlib import Path

from dcsi.cli._common import (
    add_backbone_options,
    add_cache_options,
    add_progress_option,
    add_source_options,
    cache_from_args,
    check_out_dir,
    source_kwargs,
)

__all__ = ["register", "run"]

CLUSTER_SOURCES = ("folder", "redundancy")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-head",
        help="train a similarity head on cluster data (a safetensors file)",
        description="Train a small linear layer on frozen backbone features so that "
        "images of one cluster lie close together (Kim et al.'s cluster training). "
        "Clusters: the source's folders / labels (dir/<cluster>/<image>), or dcsi's own "
        "near-duplicate groups. Writes HEAD.safetensors (weights + config, no pickle).",
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="image folder, saved HF dataset, Parquet file(s), hf:<repo>[:<config>], sample:digits",
    )
    p.add_argument("--out", required=True, metavar="HEAD", help="output file, .safetensors")
    add_source_options(p)
    p.add_argument(
        "--clusters",
        choices=CLUSTER_SOURCES,
        default="folder",
        help="folder: each folder (label) of SOURCE is a cluster (default); redundancy: "
        "the near-duplicate groups dcsi finds in SOURCE (wavelet method)",
    )
    add_backbone_options(p)
    p.add_argument("--dim", type=int, default=128, help="output dimension (default 128)")
    p.add_argument("--epochs", type=int, default=30, help="passes over the anchors (default 30)")
    p.add_argument(
        "--loss",
        choices=("triplet", "pair"),
        default="triplet",
        help="triplet: ranking hinge max(0, 0.2 + d(a,p) - d(a,n)) (default); pair: "
        "Kim et al.'s hinge on each cosine distance at 0.5",
    )
    p.add_argument("--seed", type=int, default=0)
    add_cache_options(p)
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from dcsi.backbones import check_pooling
    from dcsi.exceptions import DataError
    from dcsi.features import extract_features
    from dcsi.similarity_head import clusters_from_groups, train_similarity_head
    from dcsi.sources import open_source

    out = Path(args.out).expanduser()
    if out.suffix != ".safetensors":
        raise DataError(f"--out {args.out}: a head file must end in .safetensors.")
    check_out_dir(str(out.parent))
    if out.is_dir():
        raise DataError(f"--out {args.out} is a folder; give a file name ending in .safetensors.")
    for name in ("dim", "epochs"):
        if getattr(args, name) < 1:
            raise DataError(f"--{name} must be at least 1. Got {getattr(args, name)}.")
    check_pooling(args.pooling, args.backbone, "train-head")
    from dcsi.backbones.onnx_runtime import check_runtime

    check_runtime(args.runtime, "train-head", device=args.device)
    images = open_source(args.source, seed=args.seed, **source_kwargs(args))
    if args.clusters == "folder":
        if images.labels is None:
            raise DataError(
                f"{args.source} has no folders or labels to use as clusters; lay it out as "
                "dir/<cluster>/<image>, or use --clusters redundancy."
            )
        clusters = np.asarray(images.labels, dtype=np.int64)
    else:
        from dcsi.redundancy import find_redundancy

        groups = find_redundancy(images, seed=args.seed)
        clusters = clusters_from_groups(groups, len(images))
    fs = extract_features(
        images,
        backbone=args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=args.device,
        cache=cache_from_args(args),
        pooling=args.pooling,
        runtime=args.runtime,
    )
    head = train_similarity_head(
        fs, clusters, dim=args.dim, epochs=args.epochs, loss=args.loss, seed=args.seed
    )
    head.save(out)
    t = head.config["training"]
    print(
        f"similarity head: {fs.backbone} {fs.pooling} features ({head.input_dim}-d) -> "
        f"{head.dim}-d, trained on {t['n_clusters']} clusters ({t['n_anchors']} images), "
        f"final loss {t['loss_per_epoch'][-1]:.4f}"
    )
    print(f"wrote {out} (sha256 {head.sha256})")
    return 0
