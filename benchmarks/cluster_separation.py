"""Does the separation test of ``cluster_classes`` hold its level, and find planted groups?

Three measurements, each seeded:

- **level**: ``--draws`` structureless K x K class matrices (every off-diagonal entry
  0.5 plus Gaussian noise of sd 0.01, symmetric; K = 10); the share the test calls
  separable should be about ``alpha`` = 0.05 or below;
- **power**: three planted groups of four classes (within-group similarity 0.8,
  between-group 0.8 - gap, noise sd 0.01) for several gaps; the share where k = 3 is
  recommended;
- **cards**: the verdict on the ``cnn_cosine`` matrix of each card in ``cards/``.

    python benchmarks/cluster_separation.py                # 100 draws per setting
    python benchmarks/cluster_separation.py --draws 20     # quick

Prints a table and writes ``benchmarks/results/cluster_separation.json``.  Nothing is
timed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import print_table, write_results  # noqa: E402

from dcsi.clusters import cluster_classes  # noqa: E402

GAPS = (0.0, 0.005, 0.01, 0.02, 0.05)


def planted(rng: np.random.Generator, gap: float, sizes=(4, 4, 4), noise=0.01) -> np.ndarray:
    """Class matrix (K, K) with planted groups ``gap`` apart (gap 0: no structure)."""
    k = sum(sizes)
    g = np.repeat(np.arange(len(sizes)), sizes)
    s = np.where(g[:, None] == g[None, :], 0.8, 0.8 - gap) + rng.normal(size=(k, k)) * noise
    s = (s + s.T) / 2
    np.fill_diagonal(s, 0.9)
    return s


def flat(rng: np.random.Generator, k: int = 10, noise=0.01) -> np.ndarray:
    """Structureless class matrix (K, K)."""
    s = 0.5 + rng.normal(size=(k, k)) * noise
    s = (s + s.T) / 2
    np.fill_diagonal(s, 0.9)
    return s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=100, help="draws per setting (eigengap)")
    parser.add_argument(
        "--silhouette-draws", type=int, default=10, help="draws per setting (silhouette: slower)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    draws = {"eigengap": args.draws, "silhouette": args.silhouette_draws}
    rows, results = [], {"draws": draws, "seed": args.seed, "level": {}, "power": {}}
    for rule, n in draws.items():
        rng = np.random.default_rng(args.seed)
        calls = sum(bool(cluster_classes(flat(rng), rule=rule).separable) for _ in range(n))
        results["level"][rule] = calls / n
        rows.append([rule, f"structureless, K = 10 ({n} draws)", "separable", calls / n])
        for gap in GAPS:
            rng = np.random.default_rng(args.seed)
            hits = sum(
                cluster_classes(planted(rng, gap), rule=rule).recommended_k == 3 for _ in range(n)
            )
            results["power"].setdefault(rule, {})[str(gap)] = hits / n
            rows.append([rule, f"3 planted groups, gap {gap} ({n} draws)", "k = 3", hits / n])
    cards = {}
    for path in sorted((HERE.parent / "cards").glob("*/dcsi.json")):
        d = json.loads(path.read_text())
        cc = cluster_classes(
            np.asarray(d["similarity"]["cnn_cosine"]["matrix"], dtype=np.float64),
            classes=d["dataset"]["classes"],
            class_counts=np.asarray(d["features"]["class_counts"]),
            linkage=d["class_clusters"].get("linkage") or "average",
        )
        cards[path.parent.name] = {"recommended_k": cc.recommended_k, "verdict": cc.verdict}
        rows.append(["eigengap", f"card {path.parent.name}", "recommended k", cc.recommended_k])
    results["cards"] = cards
    print_table(rows, ["rule", "matrices", "share / value of", "result"])
    for name, c in cards.items():
        print(f"{name}: {c['verdict']}")
    print(f"wrote {write_results('cluster_separation', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
