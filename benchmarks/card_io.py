"""Card I/O cost against the number of classes K: validate, save, load, views.

A card holds K x K similarity matrices and the K x dim class sums, so at ImageNet
scale (K = 1000, dim = 1280) it carries about 4 million numbers.  This script times,
on synthetic cards with three similarity kinds (one with a standard error matrix):

- ``Card(data)`` (schema check; the large numeric arrays are type-checked directly)
  against plain ``jsonschema`` validation of the same dict (the naive way), as a ratio
  (for K <= 300 only: beyond, the naive pass takes many minutes);
- ``card.save`` (one row per line JSON writer) against ``json.dumps(indent=2)``;
- ``load_card``, the README block, ``croissant.json`` and ``report.html``;
- the size of ``dcsi.json``.

Usage::

    python benchmarks/card_io.py                 # K = 10, 100, 1000
    python benchmarks/card_io.py --k 10 100      # chosen sizes
    python benchmarks/card_io.py --quick         # smoke run (K = 10, 30)

Prints a markdown table and writes ``benchmarks/results/card_io.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MACHINE_NOTE, Timer, print_table, write_results


def synthetic_card(k: int, *, dim: int = 1280, seed: int = 0) -> dict:
    """A valid card dict with K classes, three similarity kinds and class sums."""
    import dcsi

    rng = np.random.default_rng(seed)
    s = rng.uniform(0.3, 0.9, size=(k, k))
    s = (s + s.T) / 2
    part = {str(c): (np.arange(k) % c).tolist() for c in (2, 3, 4) if c <= k}
    return {
        "schema_version": "1.0.0",
        "dcsi_version": dcsi.__version__,
        "dataset": {
            "name": f"synthetic-{k}",
            "source": "array",
            "split": "train",
            "fingerprint": "0" * 64,
            "n_images": 50 * k,
            "classes": [f"class_{i}" for i in range(k)],
            "class_counts": [50] * k,
        },
        "features": {
            "backbone": "efficientnet_lite0",
            "weights_sha256": None,
            "image_size": 64,
            "dim": dim,
            "class_sums": rng.uniform(0, 5, size=(k, dim)),
            "class_counts": [50] * k,
        },
        "similarity": {
            "cnn_cosine": {"matrix": s, "diagonal": "within-class mean", "params": {}},
            "ssim": {
                "matrix": s * 0.5,
                "diagonal": "within-class mean",
                "params": {},
                "stderr": np.full((k, k), 0.01),
            },
            "wavelet": {"matrix": s * 0.8, "diagonal": "within-class mean", "params": {}},
        },
        "index": {"value": 0.5, "definition": "synthetic", "components": {}},
        "class_clusters": {
            "method": "hierarchical",
            "linkage": "average",
            "recommended_k": 2,
            "partitions": part,
        },
        "redundancy": {
            "method": "wavelet",
            "params": {},
            "summary": {},
            "groups": [
                {
                    "members": ["a", "b"],
                    "labels": ["class_0"],
                    "kind": "redundant",
                    "representative": "a",
                }
            ],
        },
        "provenance": {
            "versions": {},
            "parameters": {},
            "command": None,
            "created": "2026-01-01T00:00:00+00:00",
        },
    }


def run(k: int, out: Path, *, naive: bool) -> dict:
    from importlib.resources import files

    import jsonschema

    from dcsi.card import Card, load_card
    from dcsi.card.croissant import write_croissant
    from dcsi.card.hf import write_readme
    from dcsi.report import write_report

    schema = json.loads(files("dcsi.card").joinpath("schema.json").read_text())
    data = synthetic_card(k)
    row: dict = {"k": k}
    with Timer() as t:
        card = Card(data)
    row["card_init_s"] = t.seconds
    plain = card.to_dict()
    if naive:
        with Timer() as t:
            jsonschema.Draft202012Validator(schema).validate(plain)
        row["naive_jsonschema_s"] = t.seconds
    with Timer() as t:
        path = card.save(out)
    row["save_s"] = t.seconds
    row["card_mib"] = path.stat().st_size / 2**20
    if naive:
        with Timer() as t:
            json.dumps(plain, indent=2, sort_keys=True)
        row["naive_dumps_indent_s"] = t.seconds
    with Timer() as t:
        load_card(out)
    row["load_s"] = t.seconds
    with Timer() as t:
        write_readme(card, out)
    row["readme_s"] = t.seconds
    with Timer() as t:
        write_croissant(card, out)
    row["croissant_s"] = t.seconds
    with Timer() as t:
        write_report(card, out)
    row["report_s"] = t.seconds
    row["report_kib"] = (out / "report.html").stat().st_size / 2**10
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[10, 100, 1000], help="class counts")
    parser.add_argument("--quick", action="store_true", help="smoke run: K = 10, 30")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baselines")
    args = parser.parse_args()
    ks = [10, 30] if args.quick else args.k
    os.environ.setdefault("DCSI_DISABLE_PROGRESS", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in ks:
            # the naive jsonschema pass grows to many minutes beyond K ~ 300
            rows.append(run(k, Path(tmp) / f"k{k}", naive=not args.no_naive and k <= 300))
    for r in rows:
        if r.get("naive_jsonschema_s"):
            r["validate_speedup"] = r["naive_jsonschema_s"] / r["card_init_s"]
        if r.get("naive_dumps_indent_s"):
            r["save_speedup"] = r["naive_dumps_indent_s"] / r["save_s"]
    headers = [
        "K",
        "Card() s",
        "jsonschema s",
        "ratio",
        "save s",
        "dumps(indent) s",
        "ratio",
        "dcsi.json MiB",
        "load s",
        "README s",
        "croissant s",
        "report s",
        "report KiB",
    ]
    print_table(
        [
            [
                r["k"],
                r["card_init_s"],
                r.get("naive_jsonschema_s"),
                r.get("validate_speedup"),
                r["save_s"],
                r.get("naive_dumps_indent_s"),
                r.get("save_speedup"),
                r["card_mib"],
                r["load_s"],
                r["readme_s"],
                r["croissant_s"],
                r["report_s"],
                r["report_kib"],
            ]
            for r in rows
        ],
        headers,
    )
    write_results(
        "card_io", {"note": MACHINE_NOTE, "dim": 1280, "similarity_kinds": 3, "rows": rows}
    )


if __name__ == "__main__":
    main()
