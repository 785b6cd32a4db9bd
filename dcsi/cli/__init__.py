"""The ``dcsi`` command line.

Each subcommand lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``func``.  Exit status: 0 on success, 1 on a user error (one
line on stderr; the traceback with ``DCSI_DEBUG=1``), 2 on bad usage (argparse).
Heavy libraries are imported inside the command functions, never at module level.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from dcsi import __version__
from dcsi._progress import set_progress
from dcsi.exceptions import DcsiError

__all__ = ["main", "build_parser"]

_SUBCOMMANDS = ("analyze", "redundancy", "leakage", "card")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="dcsi",
        description="Measure how similar the classes and images of an image dataset "
        "are, and publish it as a dataset card.",
    )
    parser.add_argument("--version", action="version", version=f"dcsi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _SUBCOMMANDS:
        module = importlib.import_module(f"dcsi.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("DCSI_DEBUG", "") not in ("", "0")
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="dcsi: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if getattr(args, "no_progress", False):
        set_progress(False)
    try:
        return int(args.func(args) or 0)
    except DcsiError as exc:
        if debug:
            traceback.print_exc()
        print(f"dcsi: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dcsi: interrupted", file=sys.stderr)
        return 130
