"""The Ray engine on a Parquet source against the same images in memory.

    python benchmarks/ray_parquet.py              # 10,000 Fashion-MNIST test images
    python benchmarks/ray_parquet.py --n 2000     # fewer

The same images twice: as an in-memory uint8 array (what ``sample:fashion-mnist``
gives; the array travels to the Ray actors through the object store) and as one
Parquet file of PNGs in row groups of 256 rows (each actor reads its rows from the
file).  For each source, the feature stage (:func:`dcsi.extract_features` with the grey
working-size arrays, the cache off) runs with the local engine and then with a local
Ray of the machine's CPUs (started once, its start-up timed apart).  Reported: wall
time, peak memory of the process tree (``benchmarks/ray_engine.py``'s ``measure``), the
size of the pickled source an actor receives, and whether Ray's features and arrays are
the local engine's bytes.  Writes ``benchmarks/results/ray_parquet.json``.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Timer, print_table, write_results
from ray_engine import measure, run_features


def _write_parquet(images: Any, labels: Any, classes: list[str], path: Path) -> None:
    """PNG-encode ``images`` into one Parquet file as ``datasets`` would write it."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    cells = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        cells.append({"bytes": buf.getvalue(), "path": None})
    table = pa.table({"image": cells, "label": pa.array(labels, pa.int64())})
    meta = {
        "info": {
            "features": {
                "image": {"_type": "Image"},
                "label": {"names": classes, "_type": "ClassLabel"},
            }
        }
    }
    table = table.replace_schema_metadata({"huggingface": json.dumps(meta)})
    pq.write_table(table, path, row_group_size=256)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="images (default 10,000)")
    args = parser.parse_args()
    os.environ.setdefault("DCSI_DISABLE_PROGRESS", "1")

    import dcsi
    from dcsi.features import choose_num_threads
    from dcsi.ray_engine import ray_session

    threads = choose_num_threads()
    sample = dcsi.open_source("sample:fashion-mnist", split="test")
    n = min(args.n, len(sample))
    arrays = sample.to_array(indices=range(n))
    labels = sample.labels[:n]
    results: dict[str, Any] = {"torch_threads": threads, "n_images": n, "runs": []}
    with tempfile.TemporaryDirectory(prefix="dcsi-ray-parquet-") as tmp:
        path = Path(tmp) / "fashion-mnist-test.parquet"
        with Timer() as t:
            _write_parquet(arrays, labels.tolist(), list(sample.classes), path)
        results["parquet_write_seconds"] = round(t.seconds, 2)
        results["parquet_mib"] = round(path.stat().st_size / 2**20, 2)
        sources = {
            "in-memory array": dcsi.open_source(arrays, labels=labels),
            "Parquet file": dcsi.open_source(path),
        }
        timed: dict[tuple[str, str], dict[str, Any]] = {}
        out: dict[tuple[str, str], bytes] = {}
        for engine in ("local", "ray"):
            with ray_session() if engine == "ray" else _nothing():
                for name, images in sources.items():
                    fs, timed[name, engine] = measure(
                        lambda i=images, e=engine: run_features(i, e, threads)
                    )
                    out[name, engine] = fs.features.tobytes() + fs.arrays.tobytes()
        for name, images in sources.items():
            results["runs"].append(
                {
                    "source": name,
                    "pickled_source_mib": round(len(pickle.dumps(images)) / 2**20, 2),
                    **{f"{e}_{k}": v for e in ("local", "ray") for k, v in timed[name, e].items()},
                    "same_bytes": out[name, "local"] == out[name, "ray"],
                }
            )
    print(
        f"{n} Fashion-MNIST test images, {threads} torch thread(s); Parquet file "
        f"{results['parquet_mib']} MiB (written in {results['parquet_write_seconds']} s)"
    )
    columns = {  # header: how to read it from a run
        "source": lambda e: e["source"],
        "pickled MiB": lambda e: e["pickled_source_mib"],
        **{f"{w} s": lambda e, w=w: e[f"{w.lower()}_seconds"] for w in ("local", "Ray")},
        "Ray / local": lambda e: e["ray_seconds"] / e["local_seconds"],
        **{
            f"{w} peak MiB": lambda e, w=w: e[f"{w.lower()}_peak_tree_rss_mib"]
            for w in ("local", "Ray")
        },
        "load (local / Ray)": lambda e: " / ".join(
            f"{e[w + '_load_before']}-{e[w + '_load_after']}" for w in ("local", "ray")
        ),
        "same bytes": lambda e: e["same_bytes"],
    }
    print_table([[f(e) for f in columns.values()] for e in results["runs"]], list(columns))
    print(f"wrote {write_results('ray_parquet', results)}")
    return 0


def _nothing() -> Any:
    import contextlib

    return contextlib.nullcontext()


if __name__ == "__main__":
    sys.exit(main())
