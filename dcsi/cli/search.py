"""``dcsi search DIR IMAGE... -k 4``: the indexed images most like each query image."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    from dcsi.cli._common import add_cache_options, add_progress_option

    p = subparsers.add_parser(
        "search",
        help="the indexed images most similar to each query image",
        description="Embed each IMAGE as the index's images were (backbone, input size, "
        "pooling, head from DIR/index.json) and print its k most similar indexed images "
        "with their cosine similarities, best first; the index's pixel check puts the "
        "query's copies first (marked 'yes' under 'copy'), or else the look-alike whose "
        "pixels line up best.",
    )
    p.add_argument(
        "index", metavar="DIR", help="an index folder (dcsi index), or a card folder holding one"
    )
    p.add_argument("images", metavar="IMAGE", nargs="+", help="query image files")
    p.add_argument("-k", type=int, default=4, help="results per query (default 4)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per query")
    p.add_argument(
        "--no-links",
        dest="links",
        action="store_false",
        help="skip the copy search's links of the queries to the indexed images (faster on "
        "large indexes: they cost about 18 s at 60,000 indexed images; see the README)",
    )
    # the index says which backbone, input size, pooling and head
    p.add_argument(
        "--weights", default=None, metavar="PATH", help="the backbone weights the index used"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add_cache_options(p)
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dcsi.cli._common import cache_from_args
    from dcsi.exceptions import DataError
    from dcsi.neighbor_index import load_neighbor_index
    from dcsi.sources import open_files

    if args.k < 1:
        raise DataError(f"-k must be at least 1. Got {args.k} instead.")
    idx = load_neighbor_index(args.index)
    if args.k > len(idx):
        raise DataError(f"-k {args.k} is more than the {len(idx)} indexed images.")
    queries = open_files(args.images)
    ids, scores, is_copy = idx.search(
        queries,
        k=args.k,
        weights=args.weights,
        batch_size=args.batch_size,
        device=args.device,
        cache=cache_from_args(args),
        return_copies=True,
        links=args.links,
    )
    if args.json:
        doc = [
            {
                "query": q,
                "neighbors": [
                    {"id": i, "score": round(float(s), 6), "copy": bool(c)}
                    for i, s, c in zip(row, sc, cp, strict=True)
                ],
            }
            for q, row, sc, cp in zip(queries.ids, ids, scores, is_copy, strict=True)
        ]
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    for q, row, sc, cp in zip(queries.ids, ids, scores, is_copy, strict=True):
        print(f"query: {q}")
        print(f"  {'rank':>4}  {'score':>7}  {'copy':>4}  id")
        for r, (i, s, c) in enumerate(zip(row, sc, cp, strict=True), 1):
            print(f"  {r:>4}  {s:7.4f}  {'yes' if c else '':>4}  {i}")
    return 0
