"""Options shared by the subcommands (source selection, progress)."""

from __future__ import annotations

import argparse

__all__ = ["add_source_options", "add_progress_option", "source_kwargs"]


def add_source_options(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    """``--split``, ``--image-column``, ``--label-column`` (auto-detected when omitted)."""
    parser.add_argument(f"--{prefix}split", default=None,
                        help="dataset split (default: the only one, or 'train')")
    parser.add_argument(f"--{prefix}image-column", default=None,
                        help="image column of a Hugging Face dataset (auto-detected)")
    parser.add_argument(f"--{prefix}label-column", default=None,
                        help="label column (auto-detected; none means unlabelled)")


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bars (also ``DCSI_DISABLE_PROGRESS=1``)."""
    parser.add_argument("--no-progress", action="store_true",
                        help="hide progress bars")


def source_kwargs(args: argparse.Namespace, *, prefix: str = "") -> dict:
    """Keyword arguments for :func:`dcsi.sources.open_source` from parsed options."""
    p = prefix.replace("-", "_")
    return {
        "split": getattr(args, f"{p}split"),
        "image_column": getattr(args, f"{p}image_column"),
        "label_column": getattr(args, f"{p}label_column"),
    }
