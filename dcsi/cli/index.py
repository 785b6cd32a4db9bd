"""``dcsi index SOURCE --out DIR``: every image's nearest images, as a Parquet index.

When ``DIR`` already holds a card (``dcsi.json``), the index goes to
``DIR/neighbor_index/`` and the card, its README, Croissant file and report record it.
"""

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


def register(subparsers: argparse._SubParsersAction) -> None:
    from dcsi.copy_verification import LINK_RATIO
    from dcsi.neighbor_index import DEFAULT_K, FAISS_THRESHOLD, METHODS

    p = subparsers.add_parser(
        "index",
        help="build the neighbour index: each image's k nearest images (Parquet)",
        description="Embed every image and write, for each, its k nearest images (ids and "
        "cosine similarities) to DIR/neighbors.parquet, checked on the pixels (copies "
        "first), with the vectors (DIR/vectors.npy) and DIR/index.json. When DIR holds a "
        "dcsi card, the index goes to DIR/neighbor_index/ and the card records it.",
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="image folder, saved HF dataset, Parquet file(s), hf:<repo>[:<config>], sample:digits",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (or a card folder)")
    add_source_options(p)
    p.add_argument(
        "-k", type=int, default=DEFAULT_K, help=f"neighbours per image (default {DEFAULT_K})"
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help=f"exact search, or faiss IVF-flat; auto: faiss above {FAISS_THRESHOLD:,} images",
    )
    add_backbone_options(p, pooling=None)
    p.add_argument(
        "--head", default=None, metavar="FILE", help="a trained similarity head (safetensors)"
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="keep the CNN's order only (default: each image's copies, or else its "
        "pixel-closest look-alike, come first; see the README)",
    )
    p.add_argument(
        "--link-ratio",
        type=float,
        default=LINK_RATIO,
        metavar="R",
        help="ratio of the copy search's links that bring each image's partners to the "
        f"pixel check, in (0, 1) (default {LINK_RATIO}, the copy search's own; 0.7 finds "
        "more padded, squeezed and cropped copies of small images; see the README)",
    )
    add_cache_options(p)
    p.add_argument("--seed", type=int, default=0, help="faiss k-means and report samples")
    add_progress_option(p)
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> Path:
    """Every option checked before any image is read; returns the output folder."""
    from dcsi.exceptions import DataError
    from dcsi.neighbor_index import default_pooling
    from dcsi.pipeline import check_parameters

    out = check_out_dir(args.out)
    if args.pooling is None:
        args.pooling = default_pooling(args.backbone)
    check_parameters(
        seed=args.seed,
        batch_size=args.batch_size,
        backbone=args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        pooling=args.pooling,
        runtime=args.runtime,
        device=args.device,
    )
    if args.k < 1:
        raise DataError(f"-k must be at least 1. Got {args.k} instead.")
    if not 0.0 < args.link_ratio < 1.0:
        raise DataError(
            f"--link-ratio must be between 0 and 1 (exclusive). Got {args.link_ratio} instead."
        )
    if args.head is not None and not Path(args.head).expanduser().is_file():
        raise DataError(f"--head {args.head}: no such file; give a head saved by dcsi.")
    return out


def run(args: argparse.Namespace) -> int:
    from dcsi.card import CARD_FILENAME, load_card, write_card_files
    from dcsi.exceptions import DataError
    from dcsi.neighbor_index import INDEX_FOLDER, build_neighbor_index, card_block
    from dcsi.sources import open_source

    out = _check(args)
    card = load_card(out) if (out / CARD_FILENAME).is_file() else None
    images = open_source(args.source, **source_kwargs(args))
    if card is not None and card.data["dataset"]["fingerprint"] != images.fingerprint():
        raise DataError(
            f"The card in {out} describes another dataset than {args.source} (their "
            "fingerprints differ); index into another folder, or re-run dcsi analyze."
        )
    idx = build_neighbor_index(
        images,
        k=args.k,
        backbone=args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        pooling=args.pooling,
        head=args.head,
        method=args.method,
        batch_size=args.batch_size,
        device=args.device,
        runtime=args.runtime,
        cache=cache_from_args(args),
        seed=args.seed,
        verify=args.verify,
        link_ratio=args.link_ratio,
    )
    folder = idx.save(out / INDEX_FOLDER if card is not None else out)
    m = idx.metadata
    n_first = 0 if idx.is_copy is None else int(idx.is_copy[:, 0].sum())
    print(
        f"indexed {len(idx)} images: k = {idx.k}, {m['method']}, {m['backbone']} "
        f"({m['pooling']}{', head' if m['head'] else ''}), {m['dim']} dims; "
        f"{n_first} images have a verified copy first"
        + ("" if m["verify"] else " (pixel check off)")
    )
    print(f"wrote {folder}")
    if card is not None:
        data = card.to_dict()
        data["neighbor_index"] = card_block(idx, folder, out, seed=args.seed)
        card = type(card).from_dict(data)
        position = {item_id: i for i, item_id in enumerate(images.ids)}
        paths = write_card_files(
            card, out, load_image=lambda item_id: images.load(position[item_id])
        )
        for path in paths.values():
            print(f"wrote {path}")
    return 0
