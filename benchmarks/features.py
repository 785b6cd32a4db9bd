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

``--runtimes`` measures the forward pass alone, torch eager against ONNX Runtime
(``runtime="onnx"``), both on ONE thread, on the same ready uint8 batches (normalisation
included in both), interleaved round by round (the order alternating; best of
``--rounds``): images/s at each size, the ratio, and the largest feature difference.
With ``--int8``, ONNX Runtime's dynamic and static (QDQ, calibrated on 64 training
images) int8 quantisations join the rounds.  It also counts the network's FLOPs per
image (``torch.utils.flop_counter``) and measures one core's float32 peak (a 1024^3
``torch.mm`` on one thread): their quotient is the most images/s a core could give,
and each runtime's share of it is reported.  ``--openvino-python PY`` runs the same
rounds in another Python (a venv with ``onnxruntime-openvino``, which replaces the
``onnxruntime`` package) with ONNX Runtime's CPU and OpenVINO execution providers on the
exported models.  Writes ``benchmarks/results/features_onnx.json``.

Usage (from the repository root)::

    python benchmarks/features.py                       # 64 px on 10,000, 224 px on 1,000
    python benchmarks/features.py --n 10000 --n224 1000 --chunk 640
    python benchmarks/features.py --quick               # smoke run, a few seconds
    python benchmarks/features.py --runtimes --int8     # torch vs ONNX Runtime, 1 thread

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


def _flops_per_image(model, size: int) -> float:
    """Floating-point operations of one forward pass at ``size`` px (a multiply-add
    counts 2; torch's FlopCounterMode: convolutions and matrix products)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def _peak_gflops(n: int = 1024, reps: int = 7) -> float:
    """One core's float32 matrix-multiply rate (GFLOP/s): best of ``reps`` n^3 products."""
    import time

    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _differences(ref, got) -> dict:
    """Largest differences of ``got`` from ``ref`` (n, d): raw, relative, unit rows."""
    import numpy as np

    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    norm = np.linalg.norm(ref, axis=1)
    unit = ref / norm[:, None] - got / np.linalg.norm(got, axis=1)[:, None]
    return {
        "max_abs": float(np.abs(ref - got).max()),
        "max_abs_over_max_feature": float(np.abs(ref - got).max() / np.abs(ref).max()),
        "max_rel_row": float((np.linalg.norm(ref - got, axis=1) / norm).max()),
        "max_abs_unit_rows": float(np.abs(unit).max()),
    }


def _rounds(members: dict, batches: list, rounds: int, probe=None) -> tuple[dict, dict]:
    """Run every member on every batch, round after round, the order rotating; returns
    the wall seconds of each round per member, the features of the first round and the
    process CPU seconds per wall second of each member (about 1 on one thread); with
    ``probe`` (a callable returning a rate), also its best rate, measured once a round
    among the members so that it sees the same load (``feats["probe_best"]``)."""
    import time

    import numpy as np

    names = list(members)
    times: dict = {k: [] for k in names}
    cpu: dict = dict.fromkeys(names, 0.0)
    feats: dict = {}
    best_probe = 0.0
    for r in range(rounds):
        if probe is not None:
            best_probe = max(best_probe, probe())
        order = names[r % len(names) :] + names[: r % len(names)]
        for who in order:
            c0 = time.process_time()
            with Timer() as t:
                out = [np.asarray(members[who](b)) for b in batches]
            cpu[who] += time.process_time() - c0
            times[who].append(t.seconds)
            feats.setdefault(who, np.concatenate(out))
    feats["cpu_per_wall"] = {k: cpu[k] / sum(times[k]) for k in names}
    feats["probe_best"] = best_probe
    return times, feats


def _int8_members(oxt, model_path: str, calib: list, tmp: str) -> dict:
    """ONNX Runtime's dynamic and static (QDQ) int8 quantisations of the exported model
    as callables on uint8 batches, one thread each."""
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"images": oxt.normalize(b.numpy())} for b in calib])

        def get_next(self):
            return next(self.items, None)

    pre = f"{tmp}/pre.onnx"
    quant_pre_process(model_path, pre)
    quantize_dynamic(pre, f"{tmp}/int8_dynamic.onnx", weight_type=QuantType.QInt8)
    quantize_static(
        pre,
        f"{tmp}/int8_static.onnx",
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    out = {}
    for kind in ("int8_dynamic", "int8_static"):
        sess = ort.InferenceSession(f"{tmp}/{kind}.onnx", opts, providers=["CPUExecutionProvider"])

        def run(b, sess=sess):
            return sess.run(None, {"images": oxt.normalize(np.asarray(b))})[0]

        out[f"onnx {kind}"] = run
    return out


def _ready_batches(ext, images, m: int, bs: int) -> list:
    """The first ``m`` images transformed by ``ext`` as uint8 (b, 3, s, s) batches."""
    import torch

    import dcsi

    ims = dcsi.open_source(images[:m])
    return [
        torch.stack([ext.transform(ims.load(i)) for i in range(b, min(b + bs, m))])
        for b in range(0, m, bs)
    ]


def _runtimes(args: argparse.Namespace) -> None:
    """torch eager vs ONNX Runtime on one thread, interleaved; prints JSON."""
    import shutil

    import numpy as np
    import torch

    from dcsi.backbones import get_backbone
    from dcsi.backbones.onnx_runtime import OnnxExtractor
    from dcsi.samples import load_sample

    torch.set_num_threads(1)
    test = load_sample("fashion-mnist", "test")
    train = load_sample("fashion-mnist", "train")
    out: dict = {"mode": "runtimes", "threads": 1, "rounds": args.rounds, "sizes": []}
    out["load_avg_start"] = list(os.getloadavg())
    out["peak_gflops_1_core"] = peak = _peak_gflops()
    for size in [int(s) for s in args.sizes.split(",")]:
        n = args.n224 if size >= 224 else args.n
        ext = get_backbone(args.backbone, image_size=size, device="cpu")
        oxt = OnnxExtractor(ext, cache_dir=Path(args.cache_dir))

        bs = args.batch_size
        batches = _ready_batches(ext, test.images, n, bs)
        ext(batches[0][:2])  # build the torch model
        with Timer() as export:
            oxt(batches[0][:2])  # export (or read the cached file) + session
        members: dict = {"torch eager (channels_last)": ext, "onnx runtime": oxt}
        if args.int8:
            calib = _ready_batches(ext, train.images, 64, bs)
            members.update(_int8_members(oxt, str(oxt.model_path), calib, args.cache_dir))
        if args.openvino_python:
            keep = Path(args.openvino_dir) / f"{size}"
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(str(oxt.model_path), keep / "model.onnx")
            np.save(
                keep / "inputs.npy", np.concatenate([oxt.normalize(b.numpy()) for b in batches])
            )
        flops = _flops_per_image(ext.model, size)
        times, feats = _rounds(members, batches, args.rounds, probe=_peak_gflops)
        peak = max(peak, feats["probe_best"])
        ref = feats["torch eager (channels_last)"]
        row: dict = {"size": size, "n": n, "batch_size": bs, "export_s": export.seconds}
        row["flops_per_image"] = flops
        row["cpu_per_wall"] = feats["cpu_per_wall"]
        row["runtimes"] = {
            who: {
                "seconds": t,
                "images_per_s_best": n / min(t),
                "images_per_s_median": n / float(np.median(t)),
                "difference_from_torch": _differences(ref, feats[who]),
            }
            for who, t in times.items()
        }
        out["sizes"].append(row)
    out["load_avg_end"] = list(os.getloadavg())
    # the bound: the best matrix-multiply rate seen in the run (the probe ran among the
    # members, under the same load) over the network's FLOPs per image
    out["peak_gflops_1_core"] = peak
    for row in out["sizes"]:
        row["bound_images_per_s"] = peak * 1e9 / row["flops_per_image"]
        for r in row["runtimes"].values():
            r["share_of_bound"] = r["images_per_s_best"] / row["bound_images_per_s"]
    print(json.dumps(out))


def _openvino(args: argparse.Namespace) -> None:
    """ONNX Runtime's CPU and OpenVINO execution providers on the exported models,
    interleaved, one thread (numpy + onnxruntime-openvino only); prints JSON."""
    import numpy as np
    import onnxruntime as ort

    out: dict = {"mode": "openvino", "onnxruntime": ort.__version__, "sizes": []}
    out["providers"] = ort.get_available_providers()
    for folder in sorted(Path(args.openvino_dir).iterdir(), key=lambda p: int(p.name)):
        x = np.load(folder / "inputs.npy")
        batches = [x[i : i + args.batch_size] for i in range(0, len(x), args.batch_size)]
        members = {}
        for ep, options in (
            ("CPUExecutionProvider", {}),
            ("OpenVINOExecutionProvider", {"device_type": "CPU", "num_of_threads": "1"}),
        ):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=[(ep, options)])
            sess.run(None, {"images": batches[0][:2]})  # compile / warm up
            members[ep] = lambda b, sess=sess: sess.run(None, {"images": b})[0]
        times, feats = _rounds(members, batches, args.rounds)
        out["sizes"].append(
            {
                "cpu_per_wall": feats["cpu_per_wall"],
                "size": int(folder.name),
                "n": len(x),
                "images_per_s_best": {k: len(x) / min(t) for k, t in times.items()},
                "difference_from_cpu_ep": _differences(
                    feats["CPUExecutionProvider"], feats["OpenVINOExecutionProvider"]
                ),
            }
        )
    print(json.dumps(out))


def _runtimes_main(args: argparse.Namespace, script: str) -> None:
    """``--runtimes``: the children, the table, ``results/features_onnx.json``."""
    env = dict(os.environ, DCSI_DISABLE_PROGRESS="1")
    with tempfile.TemporaryDirectory(prefix="dcsi-bench-onnx-") as tmp:
        cmd = [sys.executable, script, "--child", "--mode", "runtimes", "--cache-dir", tmp]
        cmd += ["--sizes", args.sizes, "--n", str(args.n), "--n224", str(args.n224)]
        cmd += ["--batch-size", str(args.batch_size), "--rounds", str(args.rounds)]
        cmd += ["--backbone", args.backbone] + (["--int8"] if args.int8 else [])
        if args.openvino_python:
            cmd += ["--openvino-python", args.openvino_python, "--openvino-dir", f"{tmp}/ov"]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            raise SystemExit(f"runtimes child failed:\n{res.stderr[-3000:]}")
        result = json.loads(res.stdout.strip().splitlines()[-1])
        if args.openvino_python:
            cmd = [args.openvino_python, script, "--child", "--mode", "openvino"]
            cmd += ["--openvino-dir", f"{tmp}/ov", "--rounds", str(args.rounds)]
            cmd += ["--batch-size", str(args.batch_size)]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if res.returncode != 0:
                raise SystemExit(f"openvino child failed:\n{res.stderr[-3000:]}")
            result["openvino"] = json.loads(res.stdout.strip().splitlines()[-1])
    rows = []
    for row in result["sizes"]:
        base = row["runtimes"]["torch eager (channels_last)"]
        for who, r in row["runtimes"].items():
            d = r["difference_from_torch"]
            rows.append(
                [
                    f"{row['size']} px",
                    who,
                    row["n"],
                    r["images_per_s_best"],
                    r["images_per_s_best"] / base["images_per_s_best"],
                    r["images_per_s_median"] / base["images_per_s_median"],
                    r["share_of_bound"],
                    d["max_abs"],
                    d["max_rel_row"],
                ]
            )
    headers = ["input", "runtime", "images", "images/s (best)", "vs torch (best)"]
    headers += ["vs torch (median)", "of bound"]
    headers += ["max abs diff", "max rel diff (row)"]
    print(
        f"\n{args.backbone}, one thread, interleaved best of {args.rounds} rounds; peak "
        f"{result['peak_gflops_1_core']:.1f} GFLOP/s on one core; load average "
        f"{result['load_avg_start'][0]:.2f} -> {result['load_avg_end'][0]:.2f}\n"
    )
    table = print_table(rows, headers)
    for row in result["sizes"]:
        print(
            f"{row['size']} px: {row['flops_per_image'] / 1e6:.0f} MFLOP/image -> at most "
            f"{row['bound_images_per_s']:.0f} images/s on one core"
        )
    if "openvino" in result:
        for r in result["openvino"]["sizes"]:
            print(f"OpenVINO EP {r['size']} px: {r['images_per_s_best']}")
    path = write_results(
        "features_onnx",
        {
            "backbone": args.backbone,
            "dataset": "fashion-mnist test (Debian dataset-fashion-mnist)",
            "table": [dict(zip(headers, row)) for row in rows],
            "markdown": table,
            **result,
        },
    )
    print(f"\nwrote {path}")


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
    p.add_argument(
        "--n", type=int, default=None, help="images at 64 px (default 10,000; --runtimes: 256)"
    )
    p.add_argument(
        "--n224",
        type=int,
        default=None,
        help="images at 224 px (default 1,000: ~25 min for 10,000 here; --runtimes: 32)",
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
    p.add_argument(
        "--runtimes",
        action="store_true",
        help="torch eager vs ONNX Runtime, one thread (results/features_onnx.json)",
    )
    p.add_argument("--rounds", type=int, default=5, help="--runtimes: interleaved rounds")
    p.add_argument("--int8", action="store_true", help="--runtimes: add int8 quantisations")
    p.add_argument(
        "--openvino-python",
        default=None,
        metavar="PY",
        help="--runtimes: a Python with onnxruntime-openvino, for the OpenVINO EP rows",
    )
    p.add_argument("--openvino-dir", default="", help=argparse.SUPPRESS)
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
        modes = {"paired": _paired, "runtimes": _runtimes, "openvino": _openvino}
        modes.get(args.mode, _child)(args)
        return
    if args.runtimes:
        args.n, args.n224 = args.n or 256, args.n224 or 32
        if args.quick:
            args.n, args.n224, args.rounds = 64, 16, 2
        _runtimes_main(args, str(Path(__file__).resolve()))
        return
    if args.threads is None:
        from dcsi.features import choose_num_threads

        args.threads = choose_num_threads()
    args.n, args.n224 = args.n or 10000, args.n224 or 1000
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
