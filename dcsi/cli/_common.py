"""Options shared by the subcommands (source selection, progress)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = [
    "add_align_options",
    "add_backbone_options",
    "add_cache_options",
    "add_pooling_option",
    "add_progress_option",
    "add_relative_options",
    "add_search_option",
    "add_size_option",
    "add_source_options",
    "align_from_args",
    "cache_from_args",
    "check_out_dir",
    "not_read",
    "relative_from_args",
    "source_kwargs",
]


def add_source_options(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    """``--split``, ``--image-column``, ``--label-column`` (auto-detected when omitted),
    ``--follow-symlinks`` (read links and image paths leading out of the dataset folder)."""
    parser.add_argument(
        f"--{prefix}split", default=None, help="dataset split (default: the only one, or 'train')"
    )
    parser.add_argument(
        f"--{prefix}image-column",
        default=None,
        help="image column of a Hugging Face dataset (auto-detected)",
    )
    parser.add_argument(
        f"--{prefix}label-column",
        default=None,
        help="label column (auto-detected; none means unlabelled)",
    )
    parser.add_argument(
        f"--{prefix}follow-symlinks",
        action="store_true",
        help="also read symbolic links, and image paths of a Hugging Face "
        "dataset, that lead outside the dataset folder (default: skip and "
        "list them)",
    )


def add_backbone_options(parser: argparse.ArgumentParser, *, pooling: str | None = "gap") -> None:
    """``--backbone``, ``--weights``, ``--pooling`` (default ``pooling``), ``--image-size``,
    ``--batch-size``, ``--device``, ``--runtime``: which feature extractor runs, and how."""
    parser.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        help="feature extractor (default: efficientnet_lite0)",
    )
    parser.add_argument(
        "--weights", default=None, metavar="PATH", help="backbone weights file (a state dict)"
    )
    add_pooling_option(parser, default=pooling)
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="backbone input size in pixels (default: chosen from the images)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnx"),
        default="torch",
        help="what runs the backbone: torch (default) or onnx = ONNX Runtime on the CPU, "
        "same features within float32 rounding, faster (pip install 'dcsi[onnx]')",
    )


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    """``--cache DIR`` and ``--no-cache`` (read them with :func:`cache_from_args`)."""
    parser.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="feature cache folder (default: $DCSI_CACHE or ~/.cache/dcsi)",
    )
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")


def cache_from_args(args: argparse.Namespace) -> Any:
    """The ``cache`` argument of extract_features / analyze: False, a folder or None."""
    return False if args.no_cache else args.cache


def add_pooling_option(parser: argparse.ArgumentParser, *, default: str | None = "gap") -> None:
    """``--pooling {gap,ga,sap,sam}``: how the backbone's features are pooled
    (:data:`dcsi.backbones.POOLINGS`; ``gap`` is the last layer; ``default=None`` leaves
    the choice to the command's function)."""
    from dcsi.backbones import POOLINGS

    parser.add_argument(
        "--pooling",
        choices=POOLINGS,
        default=default,
        help="feature pooling: gap = last layer, global average; ga = global "
        "average of 4 intermediate layers; sap = average over 2x2 windows of them; sam = "
        "windows, max on the middle layers (default: "
        + (default or "sam where the backbone has intermediate layers to pool, else gap")
        + ")",
    )


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bars (also ``DCSI_DISABLE_PROGRESS=1``)."""
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_align_options(parser: argparse.ArgumentParser) -> None:
    """``--no-align``, ``--align-threshold``, ``--max-shift``, ``--max-crop``: the
    wavelet method's shift- and crop-tolerant second stage (defaults from
    :class:`dcsi.aligned.AlignOptions`)."""
    from dcsi.aligned import AlignOptions

    d = AlignOptions()
    parser.add_argument(
        "--no-align",
        dest="align",
        action="store_false",
        help="wavelet: skip the second, shift/crop-tolerant stage",
    )
    parser.add_argument(
        "--align-threshold",
        type=float,
        default=d.threshold,
        help="wavelet, second stage: largest aligned distance (1 - "
        "correlation after the best shift or crop of either image); "
        f"default {d.threshold:g}",
    )
    parser.add_argument(
        "--max-shift",
        type=int,
        default=d.max_shift,
        help="wavelet, second stage: largest shift in pixels (default: 7%% of the "
        "shorter side at the working size, at least 1: 2 px for 28-px images)",
    )
    parser.add_argument(
        "--max-crop",
        type=int,
        default=d.max_crop,
        help="wavelet, second stage: largest crop in pixels per axis, resized back "
        "(default: 15%% of the shorter side, at least 2: 4 px for 28-px images)",
    )


def add_relative_options(parser: argparse.ArgumentParser) -> None:
    """``--no-relative``, ``--relative-ratio``, ``--flips``, ``--no-registered``,
    ``--centred``, ``--equalised``, ``--halves``: the
    wavelet method's density-relative stage (defaults from
    :class:`dcsi.relative_links.RelativeOptions`)."""
    from dcsi.relative_links import RelativeOptions

    d = RelativeOptions()
    parser.add_argument(
        "--no-relative",
        dest="relative",
        action="store_false",
        help="wavelet: skip the density-relative stage (links of pairs far closer to "
        "each other than to the rest of their neighbourhood)",
    )
    parser.add_argument(
        "--relative-ratio",
        type=float,
        default=d.ratio,
        help="wavelet, relative stage: link a pair when its coarse distance is at most "
        f"this times each image's distance to its {d.k}th nearest neighbour "
        f"(default {d.ratio:g}; higher finds more, less surely)",
    )
    parser.add_argument(
        "--flips",
        action="store_true",
        help="wavelet, relative stage: also count mirror images (left-right, top-bottom) as copies",
    )
    parser.add_argument(
        "--no-registered",
        dest="registered",
        action="store_false",
        help="wavelet, relative stage: skip the registered distance (each image against "
        f"its {d.candidates} nearest after the best small rotation, scaling, change of "
        "aspect or smoothing)",
    )
    parser.add_argument(
        "--centred",
        action="store_true",
        help="wavelet, relative stage: also apply the rule to the centred view (each image "
        "read about the centre of its content, at its spread): finds moved, cropped and "
        "re-framed copies and icons drawn at several sizes; on tightly framed data "
        "(Fashion-MNIST) it costs precision, hence off by default",
    )
    parser.add_argument(
        "--equalised",
        action="store_true",
        help="wavelet, relative stage: also apply the rule to the histogram-equalised "
        "images: finds copies whose grey levels went through a monotone map "
        "(equalisation, a strong gamma, solarised highlights) (off by default)",
    )
    parser.add_argument(
        "--halves",
        action="store_true",
        help="wavelet, relative stage: also apply the rule to the top, bottom, left and "
        "right half of each image (ratio "
        f"{d.half_ratio:g}): finds copies with a caption or a logo over part of them, "
        "and links two variants of one drawing too (off by default)",
    )


def relative_from_args(args: argparse.Namespace) -> Any:
    """The ``relative`` argument of find_redundancy: False or RelativeOptions."""
    from dcsi.relative_links import RelativeOptions

    if not args.relative:
        return False
    return RelativeOptions(
        ratio=args.relative_ratio,
        flips=args.flips,
        registered=args.registered,
        centred=args.centred,
        equalised=args.equalised,
        halves=args.halves,
    )


def add_search_option(parser: argparse.ArgumentParser) -> None:
    """``--search {auto,exact,ann}``: the candidate search of the near-duplicate links
    (:class:`dcsi.neighbors.SearchOptions`)."""
    from dcsi.neighbors import ANN_THRESHOLD, SEARCH_METHODS

    parser.add_argument(
        "--search",
        choices=SEARCH_METHODS,
        default="auto",
        help="candidate search of the near-duplicate links: exact, or faiss IVF-flat "
        "(ann; every candidate checked exactly, may miss a few pairs; needs "
        f"dcsi[index]); auto (default): ann above {ANN_THRESHOLD:,} images",
    )


def add_size_option(parser: argparse.ArgumentParser) -> None:
    """``--size N``: the size (pixels, square) the pixel-space stages compare images at."""
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        metavar="N",
        help="compare images at N x N pixels in the pixel-space stages (wavelet, SSIM, "
        "aligned copies); default: the dataset's native size, or its median size when "
        "sizes differ, scaled down to at most 32 px on the longer side",
    )


def align_from_args(args: argparse.Namespace) -> Any:
    """The ``align`` argument of find_redundancy / find_leakage: False or AlignOptions."""
    from dcsi.aligned import AlignOptions

    if not args.align:
        return False
    return AlignOptions(
        threshold=args.align_threshold, max_shift=args.max_shift, max_crop=args.max_crop
    )


def check_out_dir(path: str, option: str = "--out") -> Path:
    """Check before any work that ``path`` can be the output folder; return it.

    The folder may not exist yet (it is made when the results are written), but no part
    of it may be a file, and the nearest existing folder must accept a new file (a
    probe file is made and removed at once).

    Raises
    ------
    DataError
        One line naming the problem and what to do.
    """
    import tempfile

    from dcsi.exceptions import DataError

    out = Path(path).expanduser()
    probe = out
    while not probe.exists():
        if probe.is_symlink():
            raise DataError(
                f"{option} {path}: {probe} is a broken link; give another output folder."
            )
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == out else f"is under the file {probe}"
        raise DataError(f"{option} {path} {where}; give a folder (it is created if missing).")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".dcsi-probe-"):
            pass
    except OSError as exc:
        raise DataError(
            f"{option} {path}: cannot write in {probe} ({exc.strerror or exc}); "
            "give a folder you can write to."
        ) from None
    return out


def not_read(images: Any) -> dict:
    """What an opened source left out: ``skipped`` items (id and reason) and
    ``dropped_classes`` (classes without a usable image), for the result files."""
    return {
        "skipped": [s.to_dict() for s in images.skipped],
        "dropped_classes": list(images.dropped_classes),
    }


def source_kwargs(args: argparse.Namespace, *, prefix: str = "") -> dict:
    """Keyword arguments for :func:`dcsi.sources.open_source` from parsed options."""
    p = prefix.replace("-", "_")
    return {
        "split": getattr(args, f"{p}split"),
        "image_column": getattr(args, f"{p}image_column"),
        "label_column": getattr(args, f"{p}label_column"),
        "follow_symlinks": getattr(args, f"{p}follow_symlinks", False),
    }
