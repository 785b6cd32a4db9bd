"""The front matter of a ``README.md``: read, find and splice the ``dcsi:`` key.

Plain text functions (no card objects), so that the card reader and the README writer
share them: :func:`splice_readme` changes the lines of the top-level ``dcsi:`` key and
no other byte; :func:`readme_block` reads that key back.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from dcsi.exceptions import DataError

__all__ = ["HF_KEY", "read_readme", "readme_block", "splice_readme"]

#: The front-matter key that holds the dcsi block.
HF_KEY = "dcsi"


def _yaml_problem(exc: Exception) -> str:
    """One line describing a YAML error: the problem and where (PyYAML's own text is multi-line)."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 2}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())[:200]


def _split_front_matter(text: str) -> tuple[str, list[str], str] | None:
    """``(head, front-matter lines, tail)`` of a README, or None without front matter.

    ``head`` is everything up to and including the opening ``---`` line (leading blank
    lines included, as the Hub allows them); ``tail`` starts at the closing ``---`` line.
    Every line keeps its own line ending, so joining the three gives back ``text``.
    """
    lines = re.split(r"(?<=\n)", text)
    i = 0
    while i < len(lines) and not lines[i].strip("\ufeff \t\r\n"):
        i += 1
    if (
        i == len(lines)
        or lines[i].lstrip("\ufeff").rstrip() != "---"
        or not lines[i].endswith("\n")
    ):
        return None
    for j in range(i + 1, len(lines)):
        if lines[j].rstrip() == "---":
            return "".join(lines[: i + 1]), lines[i + 1 : j], "".join(lines[j:])
    return None


_KEY_LINE = re.compile(rf"""^(?:{HF_KEY}|"{HF_KEY}"|'{HF_KEY}')[ \t]*:(?:[ \t]|\r?\n|$)""")


def _dcsi_spans(lines: list[str]) -> list[tuple[int, int]]:
    """``[start, stop)`` line ranges of each top-level ``dcsi:`` key with its value.

    The value is the key line plus the lines after it that are indented or start a
    block-sequence item (``- ``); blank and comment lines belong to it only when more
    of the value follows them.
    """
    spans = []
    i = 0
    while i < len(lines):
        if not _KEY_LINE.match(lines[i]):
            i += 1
            continue
        stop = i + 1
        j = i + 1
        while j < len(lines):
            line = lines[j]
            if (line[:1] in (" ", "\t") and line.strip() and not line.lstrip().startswith("#")) or (
                line.startswith("-") and not line.startswith("---")
            ):
                stop = j + 1
            elif line.strip() and not line.lstrip().startswith("#"):
                break  # the next top-level key
            j += 1
        spans.append((i, stop))
        i = stop
    return spans


def _load_front_matter(text: str, where: str) -> dict:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(
            f"{where} has front matter that is not valid YAML ({_yaml_problem(exc)}); fix "
            "or remove its '---' block and retry."
        ) from None
    except RecursionError:
        raise DataError(
            f"{where} has front matter nested too deeply to read; fix or remove its '---' "
            "block and retry."
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(
            f"{where} has front matter that is not a YAML mapping (it is a "
            f"{type(data).__name__}); fix or remove its '---' block and retry."
        )
    return data


def readme_block(text: str) -> dict[str, Any] | None:
    """The ``dcsi:`` block of a README's front matter, or None (no block, unreadable YAML).

    Parameters
    ----------
    text : str
        Text of a ``README.md``.

    Returns
    -------
    dict or None
    """
    import yaml

    parts = _split_front_matter(text)
    if parts is None:
        return None
    try:
        data = yaml.safe_load("".join(parts[1]))
    except (yaml.YAMLError, RecursionError):
        return None
    block = data.get(HF_KEY) if isinstance(data, dict) else None
    return block if isinstance(block, dict) else None


def splice_readme(
    existing: str, block: dict[str, Any], *, where: str = "The existing README.md"
) -> str:
    """``existing`` with its front-matter ``dcsi:`` key set to ``block``, nothing else changed.

    A text-level splice: the lines of the top-level ``dcsi:`` key (if any) are replaced
    by the YAML of ``{"dcsi": block}`` (``yaml.safe_dump``), or that YAML is appended to
    the front matter (a new front matter is added when there is none).  Every other byte
    of the front matter (values such as ``1.10``, ``012345``, ``yes`` or ``~``, comments,
    anchors, key order) and of the body is kept, and so are the line endings.

    Parameters
    ----------
    existing : str
        Text of the README.
    block : dict
        The new value of the ``dcsi:`` key (see :func:`hf_block`).
    where : str, default="The existing README.md"
        How error messages name the file.

    Returns
    -------
    str

    Raises
    ------
    DataError
        If the front matter is not a YAML mapping that ``yaml.safe_load`` reads (tabs,
        ``!!python/object`` tags, ...), or if the splice would change any other key.
    """
    import yaml

    newline = "\r\n" if "\r\n" in existing.split("\n", 1)[0] + "\n" else "\n"
    new_yaml = yaml.safe_dump(
        {HF_KEY: block}, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    new_lines = [line + newline for line in new_yaml.splitlines()]
    parts = _split_front_matter(existing)
    if parts is None:
        bom = "\ufeff" if existing.startswith("\ufeff") else ""
        return f"{bom}---{newline}{''.join(new_lines)}---{newline}{existing[len(bom) :]}"
    head, lines, tail = parts
    before = _load_front_matter("".join(lines), where)
    spans = _dcsi_spans(lines)
    if spans:
        out = list(lines)
        for start, stop in reversed(spans[1:]):
            del out[start:stop]
        start, stop = spans[0]
        out[start:stop] = new_lines
    else:
        out = list(lines)
        if out and not out[-1].endswith("\n"):
            out[-1] += newline
        out += new_lines
    expected = dict(before)
    expected[HF_KEY] = block
    try:
        after = _load_front_matter("".join(out), where)
    except DataError:  # e.g. another key used an anchor defined in the old dcsi: block
        after = None
    if repr(after) != repr(expected):
        raise DataError(
            f"{where} has a front matter whose '{HF_KEY}:' key dcsi cannot replace without "
            f"touching other keys; delete the '{HF_KEY}:' key by hand and retry."
        )
    return head + "".join(out) + tail


def read_readme(path: str | os.PathLike[str]) -> str | None:
    """Text of an existing ``README.md`` (None when there is none), line endings kept.

    Raises
    ------
    DataError
        If the file is not UTF-8 text, or is a symbolic link.
    """
    path = Path(path)
    if path.is_symlink():
        raise DataError(
            f"{path} is a symbolic link; dcsi does not read or update a README through a "
            "link (its target could be any file). Replace it with a regular file."
        )
    if not path.is_file():
        return None
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 text (byte {exc.start} is not valid UTF-8); fix or remove "
            "it and retry."
        ) from None
