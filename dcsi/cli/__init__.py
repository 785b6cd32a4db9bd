"""The ``dcsi`` command line.

Each subcommand lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``func``.  Exit status: 0 on success, 1 on a user error (one
line on stderr; the traceback with ``DCSI_DEBUG=1``), 2 on bad usage (argparse).
Heavy libraries are imported inside the command functions, never at module level.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn, TextIO

from dcsi import __version__
from dcsi._progress import set_progress
from dcsi.exceptions import DcsiError

__all__ = ["build_parser", "main", "printable"]

_SUBCOMMANDS = (
    "analyze",
    "redundancy",
    "leakage",
    "card",
    "boundaries",
    "train_head",
    "index",
    "search",
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        self.exit(2, printable(f"{self.prog}: error: {message} (see '{self.prog} --help')") + "\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered.

    Subcommand parsers made with ``add_parser`` are of the same class, so every usage
    error is one line on stderr and exit status 2.
    """
    import importlib

    parser = _Parser(
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


#: Control characters escaped in terminal output: C0 (but newline and tab), DEL, C1, and
#: the Unicode bidirectional overrides that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters escaped as ``\\xNN``.

    Class names, paths and dataset names come from the data; an ANSI escape sequence in
    one must be shown, not run.  Newlines and tabs are kept.

    Parameters
    ----------
    text : str

    Returns
    -------
    str
        ``text`` with each C0/C1 control character (other than ``\\n`` and ``\\t``), DEL
        and bidi override replaced by its escape (``"\\x1b"``, ``"\\u202e"``).

    Examples
    --------
    >>> printable("cat\\x1b[31m")
    'cat\\\\x1b[31m'
    """
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class _PrintableFormatter(logging.Formatter):
    """Log lines with control characters escaped (names in messages come from data)."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


class _PrintableStream(io.TextIOBase):
    """The command's stdout with control characters escaped (see :func:`printable`).

    Every result line a command prints -- class names, dataset names, paths -- is
    terminal-safe, whichever subcommand printed it.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(printable(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"


def _configure_logging(debug: bool) -> None:
    """Warnings on stderr; with ``DCSI_DEBUG=1`` dcsi's own debug lines, not PIL's."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("dcsi: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("dcsi").setLevel(logging.DEBUG if debug else logging.NOTSET)
    logging.getLogger("PIL").setLevel(logging.WARNING)


def _stdout_gone() -> int:
    """The reader of stdout went away (``dcsi card show | head -1``): exit quietly.

    The rest of the output goes to /dev/null so that Python's final flush does not
    raise again; the status is 141 (128 + SIGPIPE), what a shell reports for a writer
    killed by the broken pipe.
    """
    try:
        fd = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor behind stdout (embedded use)
        pass
    return 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("DCSI_DEBUG", "") not in ("", "0")
    _configure_logging(debug)
    if getattr(args, "no_progress", False):
        set_progress(False)
    stdout = sys.stdout
    sys.stdout = _PrintableStream(stdout)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return status
    except BrokenPipeError:
        return _stdout_gone()
    except (DcsiError, OSError) as exc:
        # OSError: a file dcsi was told to read or write (permissions, disk full, ...)
        if debug:
            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"dcsi: error: {printable(message)}", file=sys.stderr)
        return 1
    except MemoryError:
        if debug:
            traceback.print_exc()
        print(
            "dcsi: error: out of memory; lower --batch-size, analyse a subset with "
            "--max-per-class, or run on a machine with more memory",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("dcsi: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout = stdout
