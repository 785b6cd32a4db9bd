"""How alike are the images dcsi groups on openclipart-png?  A precision spot check.

openclipart-png has no ground truth of copies.  This script runs the default
``dcsi.find_redundancy`` on the whole folder (32-px working size) and, for every group
that is not a group of blank images, measures the cosine of its *least* similar pair on
grey images at 96 px (three times the working size; mean removed): a group whose worst
pair is near 1 is the same drawing, one far below is a loose link.  Redundant groups (one
category) and conflict groups (several: the same drawing filed in two folders) are
reported apart, as quantiles and the share below 0.9.

Usage (Debian package ``openclipart-png``; installs it when ``apt-get`` can)::

    python benchmarks/openclipart_groups.py

Prints a table and writes ``benchmarks/results/openclipart_groups.json``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Timer, print_table, write_results

SOURCE = Path("/usr/share/openclipart/png")
CHECK_SIZE = 96
QUANTILES = (0.01, 0.05, 0.10, 0.25, 0.50)


def worst_pair_cosine(x: np.ndarray) -> float:
    """Smallest cosine between two rows of ``x`` (m, d) after removing each row's mean."""
    x = x - x.mean(axis=1, keepdims=True)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    c = x @ x.T
    return float(c[np.triu_indices(len(x), 1)].min())


def main() -> None:
    if not SOURCE.is_dir() and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "openclipart-png"], check=False)
    import dcsi
    from dcsi._progress import set_progress

    set_progress(False)
    images = dcsi.open_source(str(SOURCE))
    with Timer() as t:
        result = dcsi.find_redundancy(images)
    block = result.to_dict()
    pixels = images.to_array(size=(CHECK_SIZE, CHECK_SIZE), mode="L").astype(np.float64)
    pixels = pixels.reshape(len(images), -1)
    row = {image_id: k for k, image_id in enumerate(images.ids)}
    worst: dict[str, list[float]] = {"redundant": [], "conflict": []}
    for group in block["groups"]:
        if group.get("blank"):
            continue
        members = [row[m] for m in group["members"]]
        worst[group["kind"]].append(worst_pair_cosine(pixels[members]))
    results: dict[str, Any] = {
        "source": str(SOURCE),
        "n_images": len(images),
        "find_redundancy_seconds": round(t.seconds, 1),
        "check_size": CHECK_SIZE,
        "kinds": {},
    }
    table = []
    for kind, values in worst.items():
        v = np.asarray(values)
        q = np.quantile(v, QUANTILES).round(3).tolist() if v.size else []
        share = round(float((v < 0.9).mean()), 3) if v.size else None
        results["kinds"][kind] = {
            "n_groups": int(v.size),
            "quantiles": dict(zip(map(str, QUANTILES), q)),
            "share_below_0.9": share,
        }
        table.append([kind, int(v.size), *q, share])
    print_table(table, ["groups", "n", *(f"q{x:g}" for x in QUANTILES), "share < 0.9"])
    print(f"\nwrote {write_results('openclipart_groups', results)}")


if __name__ == "__main__":
    main()
