"""What the directional class spreads of the DCSI cost, against the bare matrix product.

:func:`dcsi.class_spreads` needs one ``(n, d) x (d, K)`` product per block once the
class centres are known (and a first pass for the centres).  This script times it on
random unit features the size of the index's inputs -- 60,000 x 1,280 (Fashion-MNIST
with EfficientNet-Lite0) for K = 10 and K = 100 classes, and 60,000 x 1,024 (the
wavelet rows of 32 x 32 grey images) for K = 10 -- next to the bare float64 product
``X @ mu.T`` of the same shapes, in the same 4,096-row blocks (the floor: the spreads cannot cost less than reading
the rows once and multiplying them by the centres), and to
``dcsi.class_similarity`` (the class matrix the card already computes).  ``dcsi
analyze`` passes the class centres it already has (``centres=``), which skips the
first pass.  The median of
``--repeats`` runs, one thread count as the machine gives it.

    python benchmarks/class_spreads.py              # prints a table, writes JSON

Writes ``benchmarks/results/class_spreads.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results

SHAPES = ((60_000, 1280, 10), (60_000, 1280, 100), (60_000, 1024, 10))


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    from dcsi import class_similarity, class_spreads
    from dcsi.similarity.class_cosine import class_stats
    from dcsi.similarity.spreads import BLOCK_ROWS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--name", default="class_spreads")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rows, table = [], []
    for n, d, k in SHAPES:
        x = np.abs(rng.normal(size=(n, d))).astype(np.float32)
        y = rng.integers(0, k, n)
        centres = class_stats(x, y, k).centres

        def spreads(x=x, y=y, k=k) -> None:
            class_spreads(x, y, n_classes=k)

        def given(x=x, y=y, k=k, centres=centres) -> None:
            class_spreads(x, y, n_classes=k, centres=centres)

        def product(x=x, centres=centres) -> None:
            for s in range(0, len(x), BLOCK_ROWS):  # in blocks, as the spreads are
                np.asarray(x[s : s + BLOCK_ROWS], np.float64) @ centres.T

        def matrix(x=x, y=y) -> None:
            class_similarity(x, y)

        t = {f.__name__: median_seconds(f, args.repeats) for f in (spreads, given, product, matrix)}
        row = {
            "n": n,
            "dim": d,
            "classes": k,
            "class_spreads_s": round(t["spreads"], 3),
            "class_spreads_centres_given_s": round(t["given"], 3),
            "bare_product_s": round(t["product"], 3),
            "class_similarity_s": round(t["matrix"], 3),
            "centres_given_over_product": round(t["given"] / t["product"], 2),
        }
        rows.append(row)
        table.append(list(row.values()))
    print_table(
        table,
        [
            "n",
            "dim",
            "K",
            "class_spreads (s)",
            "centres given, as analyze (s)",
            "X @ mu.T, float64 (s)",
            "class_similarity (s)",
            "given / product",
        ],
    )
    write_results(args.name, {"settings": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
