"""Feature-extraction throughput: dcsi's pipeline against the bare model forward pass.

On Fashion-MNIST's test split (Debian's ``dataset-fashion-mnist``, 10,000 28x28 images),
for each input size (default 64 and 224 px), with the same backbone, batch size and torch
thread count:

- ``bare forward``: the model's forward pass alone on ready tensors (decoded, resized,
  normalised, NHWC), i.e. the ceiling;
- ``pipeline``: ``dcsi.extract_features(images, cache=False)`` end to end (source,
  decoding, resize, normalisation, DataLoader, forward, float32 output);
- ``pipeline, 1 loader worker``: the same with ``num_workers=1``.

These three run interleaved in one process, chunk by chunk (``--chunk`` images, the
order rotating), so that they see the same load on a shared machine; their summed
times give the rates.  Then, each in a fresh process (its peak RSS is its own):

- ``pipeline, cold cache (default)``: the default call, writing the on-disk cache;
- ``pipeline, warm cache``: the same call again, answered from the cache.

All exclude the one-time model build (about 1 s; dcsi keeps the last built models).

Usage (from the repository root)::

    python benchmarks/features.py                       # 64 px on 10,000, 224 px on 1,000
    python benchmarks/features.py --n 10000 --n224 1000 --chunk 640
    python benchmarks/features.py --quick               # smoke run, a few seconds

Prints a markdown table and writes ``benchmarks/results/features.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, peak_rss_mib, print_table, write_results


def _child(args: argparse.Namespace) -> None:
    """Run one configuration and print its figures as JSON on stdout."""
    import numpy as np
    import torch

    import dcsi
    from dcsi.backbones import get_backbone
    from dcsi.samples import load_sample

    sample = load_sample("fashion-mnist", "test")
    n = args.n
    images = sample.images[:n]
    labels = sample.labels[:n]
    torch.set_num_threads(args.threads)
    out: dict = {
        "mode": args.mode,
        "size": args.size,
        "n": n,
        "batch_size": args.batch_size,
        "threads": args.threads,
    }
    if args.mode == "bare":
        ext = get_backbone(args.backbone, image_size=args.size, device="cpu")
        ims = dcsi.open_source(images)
        pool_n = min(n, 16 * args.batch_size)
        # ready tensors: decoded, resized, normalised, NHWC -- only the forward remains
        pool = [
            ext.normalize(
                torch.stack(
                    [ext.transform(ims.load(i)) for i in range(s, min(s + args.batch_size, pool_n))]
                )
            )
            for s in range(0, pool_n, args.batch_size)
        ]
        ext(pool[0][:2])  # warm-up (builds the model)
        done, k = 0, 0
        with Timer() as t:
            while done < n:
                batch = pool[k % len(pool)][: n - done]
                ext(batch)
                done += batch.shape[0]
                k += 1
        out["seconds"] = t.seconds
    else:
        cache = False if args.mode == "pipeline_w1" else Path(args.cache_dir)
        workers = 1 if args.mode == "pipeline_w1" else None
        # warm-up: build the model once (dcsi reuses it) and run one small batch
        get_backbone(args.backbone, image_size=args.size, device="cpu")(
            torch.zeros(2, 3, args.size, args.size)
        )
        with Timer() as t:
            fs = dcsi.extract_features(
                images,
                labels=labels,
                backbone=args.backbone,
                image_size=args.size,
                batch_size=args.batch_size,
                device="cpu",
                cache=cache,
                num_threads=args.threads,
                num_workers=workers,
            )
        assert fs.features.shape[0] == n and np.isfinite(fs.features).all()
        out["seconds"] = t.seconds
        out["n_cached"] = fs.n_cached
    out["images_per_s"] = n / out["seconds"]
    out["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(out))


def _paired(args: argparse.Namespace) -> None:
    """Bare forward and pipeline interleaved chunk by chunk in one process, so that both
    see the same machine load; prints the summed figures as JSON."""
    import torch

    import dcsi
    from dcsi.backbones import get_backbone
    from dcsi.samples import load_sample

    sample = load_sample("fashion-mnist", "test")
    n, bs = args.n, args.batch_size
    images, labels = sample.images[:n], sample.labels[:n]
    torch.set_num_threads(args.threads)
    ext = get_backbone(args.backbone, image_size=args.size, device="cpu")
    ext(torch.zeros(2, 3, args.size, args.size, dtype=torch.uint8))  # build + warm up
    members = ["bare", "pipeline"] + (["pipeline_w1"] if args.workers_variant else [])
    seconds = dict.fromkeys(members, 0.0)
    chunk = args.chunk
    for c, start in enumerate(range(0, n, chunk)):
        part = slice(start, min(start + chunk, n))
        m = part.stop - part.start
        # ready tensors for this chunk (not timed): decoded, resized, normalised, NHWC
        ims = dcsi.open_source(images[part])
        ready = [
            ext.normalize(
                torch.stack([ext.transform(ims.load(i)) for i in range(b, min(b + bs, m))])
            )
            for b in range(0, m, bs)
        ]
        order = members[c % len(members) :] + members[: c % len(members)]
        for who in order:
            with Timer() as t:
                if who == "bare":
                    for batch in ready:
                        ext(batch)
                else:
                    fs = dcsi.extract_features(
                        images[part],
                        labels=labels[part],
                        backbone=args.backbone,
                        image_size=args.size,
                        batch_size=bs,
                        device="cpu",
                        cache=False,
                        num_threads=args.threads,
                        num_workers=1 if who == "pipeline_w1" else None,
                    )
                    assert fs.features.shape[0] == m
            seconds[who] += t.seconds
    out = {
        "mode": "paired",
        "size": args.size,
        "n": n,
        "batch_size": bs,
        "threads": args.threads,
        "chunk": chunk,
        "seconds": seconds,
        "images_per_s": {k: n / v for k, v in seconds.items()},
        "peak_rss_mib": peak_rss_mib(),
    }
    print(json.dumps(out))


def _run_child(
    script: str, mode: str, size: int, n: int, args: argparse.Namespace, cache_dir: str
) -> dict:
    cmd = [
        sys.executable,
        script,
        "--child",
        "--mode",
        mode,
        "--size",
        str(size),
        "--n",
        str(n),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
        "--backbone",
        args.backbone,
        "--cache-dir",
        cache_dir,
        "--chunk",
        str(args.chunk),
    ]
    if not args.workers_variant:
        cmd.append("--no-workers-variant")
    env = dict(os.environ, DCSI_DISABLE_PROGRESS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"child {mode} {size}px failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000, help="images at 64 px (default 10,000)")
    p.add_argument(
        "--n224",
        type=int,
        default=1000,
        help="images at 224 px (default 1,000: ~25 min for 10,000 here)",
    )
    p.add_argument("--sizes", default="64,224")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both (default: dcsi's choice at start)",
    )
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--quick", action="store_true", help="smoke run on 128 / 32 images")
    p.add_argument(
        "--no-workers-variant",
        dest="workers_variant",
        action="store_false",
        help="skip the num_workers=1 run",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="bare", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", default="", help=argparse.SUPPRESS)
    p.add_argument(
        "--chunk",
        type=int,
        default=640,
        help="images per interleaved chunk of the paired run (default 640)",
    )
    args = p.parse_args()
    if args.child:
        _paired(args) if args.mode == "paired" else _child(args)
        return
    if args.threads is None:
        from dcsi.features import choose_num_threads

        args.threads = choose_num_threads()
    if args.quick:
        args.n, args.n224 = 128, 32
    sizes = [int(s) for s in args.sizes.split(",")]
    script = str(Path(__file__).resolve())
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="dcsi-bench-") as tmp:
        for size in sizes:
            n = args.n224 if size >= 224 else args.n
            cache_dir = f"{tmp}/c{size}"
            paired = _run_child(script, "paired", size, n, args, cache_dir)
            results.append(paired)
            cold = _run_child(script, "pipeline", size, n, args, cache_dir)
            warm = _run_child(script, "cached", size, n, args, cache_dir)
            results += [cold, warm]
            rate = paired["images_per_s"]
            names = {
                "bare": "bare forward",
                "pipeline": "pipeline (no cache)",
                "pipeline_w1": "pipeline, 1 loader worker (no cache)",
            }
            for who, label in names.items():
                if who in rate:
                    rows.append(
                        [
                            f"{size} px",
                            label + " *",
                            n,
                            args.batch_size,
                            args.threads,
                            rate[who],
                            rate[who] / rate["bare"],
                            paired["peak_rss_mib"],
                        ]
                    )
            for r, label in (
                (cold, "pipeline, cold cache (default)"),
                (warm, "pipeline, warm cache"),
            ):
                rows.append(
                    [
                        f"{size} px",
                        label,
                        n,
                        args.batch_size,
                        args.threads,
                        r["images_per_s"],
                        None,
                        r["peak_rss_mib"],
                    ]
                )
    headers = ["input", "run", "images", "batch", "threads", "images/s", "vs bare", "peak RSS MiB"]
    print(
        f"\n{args.backbone} feature extraction, Fashion-MNIST test split; * = "
        f"interleaved in one process in chunks of {args.chunk} images (same load); "
        "2 shared cores\n"
    )
    table = print_table(rows, headers)
    path = write_results(
        "features",
        {
            "backbone": args.backbone,
            "dataset": "fashion-mnist test (Debian dataset-fashion-mnist)",
            "batch_size": args.batch_size,
            "threads": args.threads,
            "chunk": args.chunk,
            "quick": args.quick,
            "table": [dict(zip(headers, row)) for row in rows],
            "runs": results,
            "markdown": table,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
