"""Key-by-key differences of two dcsi cards, provenance aside.

Used to check that a change leaves the cards' figures alone::

    python benchmarks/card_diff.py OLD/dcsi.json NEW/dcsi.json [--tol 1e-6]

Prints one line per key that was added, removed or changed (numbers within ``--tol``
count as equal), and exits 0 when nothing else than the listed keys differ.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

IGNORED = ("provenance",)


def differences(a: Any, b: Any, path: str, tol: float) -> list[str]:
    """Readable differences between two JSON values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            where = f"{path}.{key}" if path else key
            if key in IGNORED and not path:
                continue
            if key not in a:
                out.append(f"added    {where}")
            elif key not in b:
                out.append(f"removed  {where}")
            else:
                out.extend(differences(a[key], b[key], where, tol))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        found = [
            d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]", tol)
        ]
        return found[:1] + (
            [f"         ... {len(found) - 1} more under {path}"] if len(found) > 1 else []
        )
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        if math.isclose(a, b, rel_tol=tol, abs_tol=tol):
            return []
    elif a == b:
        return []
    return [f"changed  {path}: {json.dumps(a)[:60]} -> {json.dumps(b)[:60]}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--tol", type=float, default=0.0, help="numbers within this are equal")
    args = ap.parse_args(argv)
    old, new = (json.loads(p.read_text()) for p in (args.old, args.new))
    diff = differences(old, new, "", args.tol)
    print("\n".join(diff) if diff else "no differences outside provenance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
