"""The Ray engine on a Parquet source against the same images in memory.

    python benchmarks/ray_parquet.py              # 10,000 Fashion-MNIST test images
    python benchmarks/ray_parquet.py --n 2000     # fewer

The same images twice: as an in-memory uint8 array (what ``sample:fashion-mnist``
gives; the array travels to the Ray actors through the object store) and as one
Parquet file of PNGs in row groups of 256 rows (each actor reads its rows from the
file).  For each source, the feature stage (:func:`dcsi.extract_features` with the grey
working-size arrays, the cache off) runs with the local engine and then with a local
Ray of the machine's CPUs (started once, its start-up timed apart).  Reported: wall
time, peak memory of the process tree (``benchmarks/ray_engine.py``'s sampler), the
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
from ray_engine import PeakMemory


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


def _features(images: Any, engine: str, threads: int) -> tuple[Any, dict[str, Any]]:
    from dcsi.features import extract_features
    from dcsi.ray_engine import feature_runner

    runner = feature_runner(
        engine,
        backbone="efficientnet_lite0",
        weights=None,
        pooling="gap",
        threads=threads,
        device="auto",
    )
    load0 = os.getloadavg()[0]
    with PeakMemory() as mem, Timer() as t:
        fs = extract_features(
            images,
            cache=False,
            num_threads=threads,
            arrays=(images.working_size(), "L"),
            runner=runner,
        )
    return fs, {
        "seconds": round(t.seconds, 2),
        "peak_tree_rss_mib": round(mem.peak, 1),
        "load_before": round(load0, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


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
                    fs, timed[name, engine] = _features(images, engine, threads)
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
    rows = [
        [
            e["source"],
            e["pickled_source_mib"],
            e["local_seconds"],
            e["ray_seconds"],
            e["ray_seconds"] / e["local_seconds"],
            e["local_peak_tree_rss_mib"],
            e["ray_peak_tree_rss_mib"],
            f"{e['local_load_before']}-{e['local_load_after']} / "
            f"{e['ray_load_before']}-{e['ray_load_after']}",
            e["same_bytes"],
        ]
        for e in results["runs"]
    ]
    print_table(
        rows,
        [
            "source",
            "pickled MiB",
            "local s",
            "Ray s",
            "Ray / local",
            "local peak MiB",
            "Ray peak MiB",
            "load (before, after)",
            "same bytes",
        ],
    )
    print(f"wrote {write_results('ray_parquet', results)}")
    return 0


def _nothing() -> Any:
    import contextlib

    return contextlib.nullcontext()


if __name__ == "__main__":
    sys.exit(main())
