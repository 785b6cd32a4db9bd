"""``dcsi leakage --train SOURCE --test SOURCE --out DIR``: test items seen in training."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

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

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "leakage",
        help="test items with a near-identical training item",
        description="Share of test items with a near-identical training item, and the "
        "test items farthest from every training item. Writes DIR/leakage.json and "
        "DIR/leakage.csv.",
    )
    p.add_argument("--train", required=True, metavar="SOURCE", help="training set")
    p.add_argument("--test", required=True, metavar="SOURCE", help="test set")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_source_options(p, prefix="train-")
    add_source_options(p, prefix="test-")
    from dcsi.leakage import LEAKAGE_CONSTRAINTS
    from dcsi.redundancy import DEFAULT_THRESHOLDS
    from dcsi.similarity.wavelet import WaveletOptions

    p.add_argument("--method", choices=LEAKAGE_CONSTRAINTS["method"][0].values, default="wavelet")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="largest distance of a leaked pair (default: wavelet 1-cos <= "
        f"{DEFAULT_THRESHOLDS['wavelet']:g}, cnn {DEFAULT_THRESHOLDS['cnn']:g})",
    )
    p.add_argument(
        "--tau",
        type=float,
        default=WaveletOptions().tau,
        help="condition-number bound of the wavelet column selection",
    )
    add_align_options(p)
    add_relative_options(p)
    add_search_option(p)
    add_size_option(p)
    p.add_argument(
        "--n-farthest",
        type=int,
        default=20,
        help="test items farthest from all training items to list (default 20)",
    )
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--seed", type=int, default=0)
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dcsi._io import atomic_write_json, atomic_write_text
    from dcsi._validation import check_int, validate_params
    from dcsi.leakage import LEAKAGE_CONSTRAINTS, find_leakage
    from dcsi.similarity.wavelet import WaveletOptions
    from dcsi.sources import open_source

    check_out_dir(args.out)
    validate_params(
        {"threshold": args.threshold, "n_farthest": args.n_farthest, "seed": args.seed},
        LEAKAGE_CONSTRAINTS,
        "dcsi leakage",
    )
    if args.size is not None:
        check_int(args.size, "size", "dcsi leakage", min_value=4)
    align, wavelet = align_from_args(args), WaveletOptions(tau=args.tau)  # checked first
    relative = relative_from_args(args)
    train = open_source(args.train, **source_kwargs(args, prefix="train-"))
    test = open_source(args.test, **source_kwargs(args, prefix="test-"))
    res = find_leakage(
        train,
        test,
        method=args.method,
        threshold=args.threshold,
        wavelet=wavelet,
        size=args.size,
        n_farthest=args.n_farthest,
        backbone=args.backbone,
        seed=args.seed,
        align=align,
        relative=relative,
        search=args.search,
    )
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["test_id", "train_id", "distance", "test_label", "train_label", "stage"])
    for p in res.pairs:
        w.writerow(
            [
                p.test_id,
                p.train_id,
                f"{p.distance:.6g}",
                p.test_label or "",
                p.train_label or "",
                p.stage,
            ]
        )
    out = Path(args.out)
    paths = [
        atomic_write_json(
            out / "leakage.json",
            {**res.to_dict(), "train": not_read(train), "test": not_read(test)},
        ),
        atomic_write_text(out / "leakage.csv", buf.getvalue()),
    ]
    print(
        f"{test.name} ({res.n_test} test items) vs {train.name} ({res.n_train} training "
        f"items), method {res.method}, threshold {res.params['threshold']}"
    )
    print(
        f"  {res.n_leaked} test items ({100 * res.share:.2f}%) have a near-identical "
        f"training item; {res.n_label_mismatch} of them with a different label"
    )
    if res.blank is not None and res.blank["n_test"]:
        print(
            f"  blank test images: {res.blank['n_test']}, {res.blank['n_leaked']} of them with a "
            "blank training image of the same colour (counted as leaked, stage 'blank')"
        )
    if res.farthest:
        tid, d = res.farthest[0]
        print(f"  farthest test item from all training items: {tid} (distance {d:.3g})")
    for name, ims in (("train", train), ("test", test)):
        if ims.skipped or ims.dropped_classes:
            print(
                f"  {name}: not read: {len(ims.skipped)} items, "
                f"{len(ims.dropped_classes)} empty classes (listed in leakage.json: "
                f"{name}.skipped, {name}.dropped_classes)"
            )
    for path in paths:
        print(f"wrote {path}")
    return 0
