"""How many times ``dcsi analyze`` decodes each image of a folder (cold and warm cache).

Every full decode of an encoded image goes through PIL's ``ImageFile.load``; this script
counts those calls (in the process and in its data-loader workers, through an
append-only file) while :func:`dcsi.analyze` runs on an image folder, once with an empty
feature cache and once with the cache it filled.  The scan that checks every file when
the folder is opened counts as one decode (JPEGs are decoded at reduced scale there).

The folder is made from Fashion-MNIST (Debian's ``dataset-fashion-mnist``) or, without
it, from sklearn's digits: ``--n`` PNGs in class folders.

Run it against any checkout (``PYTHONPATH=<checkout>``) to compare versions::

    python benchmarks/decodes.py                     # prints a table, writes JSON
    PYTHONPATH=/tmp/old python benchmarks/decodes.py --out results/decodes_old.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_folder(root: Path, n: int) -> int:
    """``n`` PNGs in class folders; returns the number written."""
    from PIL import Image

    try:
        from dcsi.samples import load_sample

        sample = load_sample("fashion-mnist", "test")
        images, labels, classes = sample.images, sample.labels, sample.classes
    except Exception:
        from sklearn.datasets import load_digits

        d = load_digits()
        images = (d.images * 16).clip(0, 255).astype(np.uint8)
        labels, classes = d.target, [str(c) for c in range(10)]
    pick = np.random.default_rng(0).permutation(len(images))[:n]
    for i in pick:
        folder = root / str(classes[labels[i]]).replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i}.png")
    return len(pick)


def counted_analyze(folder: Path, cache: Path, log: Path) -> tuple[int, float]:
    """Run ``dcsi.analyze`` with every PIL decode appended to ``log``; (decodes, s)."""
    from PIL import ImageFile

    import dcsi

    original = ImageFile.ImageFile.load
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)

    def load(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if getattr(self, "tile", None):  # a load that still has data to decode
            os.write(fd, b".")
        return original(self, *args, **kwargs)

    ImageFile.ImageFile.load = load
    try:
        t0 = time.perf_counter()
        dcsi.analyze(str(folder), cache=str(cache))
        seconds = time.perf_counter() - t0
    finally:
        ImageFile.ImageFile.load = original
        os.close(fd)
    return log.stat().st_size, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="images in the folder (300)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "decodes.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("DCSI_DISABLE_PROGRESS", "1")
    import dcsi

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        n = make_folder(tmp_path / "data", args.n)
        rows = []
        for run in ("cold cache", "warm cache"):
            decodes, seconds = counted_analyze(
                tmp_path / "data", tmp_path / "cache", tmp_path / "log"
            )
            rows.append(
                {
                    "run": run,
                    "images": n,
                    "decodes": decodes,
                    "decodes_per_image": decodes / n,
                    "seconds": round(seconds, 2),
                }
            )
    print(f"dcsi {dcsi.__version__} from {Path(dcsi.__file__).parent}")
    print(f"{'run':<12} {'images':>7} {'decodes':>8} {'per image':>10} {'seconds':>8}")
    for r in rows:
        print(
            f"{r['run']:<12} {r['images']:>7} {r['decodes']:>8} "
            f"{r['decodes_per_image']:>10.2f} {r['seconds']:>8}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"dcsi_version": dcsi.__version__, "python": sys.version.split()[0], "rows": rows},
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
