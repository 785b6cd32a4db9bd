"""The CUDA paths against the CPU: CNN features, all-pairs SSIM and a whole card.

Run on a machine with an NVIDIA GPU (the CPU figures come from the same machine, so the
speed-ups compare like with like)::

    python benchmarks/gpu.py                 # writes benchmarks/results/gpu.json
    python benchmarks/gpu.py --out /tmp/gpu.json

Without a GPU it says so and exits with status 2.  Checks, each on seeded random data:

- ``extract_features`` with ``device="cuda"`` against ``device="cpu"`` (the same weights,
  same decode): largest absolute and relative difference of the features, images/s at
  64 and 224 px on each device (the GPU timed on a second, warm pass);
- ``ssim_matrix(backend="torch", device="cuda")`` against the numpy path on the CPU,
  grey 28 x 28 and RGB 32 x 32: largest difference and time (best of 3);
- ``analyze("sample:digits")`` on each device: the largest difference of the class
  similarity matrix and of the DCSI, and whether the redundancy groups are equal.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, print_table, write_results


def _best_of(fn: Any, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def features_check(n: int, size: int, seed: int) -> dict[str, Any]:
    """Features on CPU and GPU of ``n`` random RGB images fed at ``size`` px."""
    from dcsi.features import extract_features

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)

    def run(device: str, batch: int) -> np.ndarray:
        fs = extract_features(images, image_size=size, device=device, cache=False, batch_size=batch)
        return fs.features

    t_cpu, f_cpu = _best_of(lambda: run("cpu", 64), 1)
    run("cuda", 256)  # warm-up: cuDNN autotuning, weights upload
    t_gpu, f_gpu = _best_of(lambda: run("cuda", 256), 2)
    diff = np.abs(f_cpu.astype(np.float64) - f_gpu)
    scale = np.abs(f_cpu).max()
    return {
        "n_images": n,
        "image_size": size,
        "cpu_images_per_s": n / t_cpu,
        "gpu_images_per_s": n / t_gpu,
        "speedup": t_cpu / t_gpu,
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(diff.max() / scale),
    }


def ssim_check(n: int, shape: tuple[int, ...], seed: int) -> dict[str, Any]:
    """All-pairs SSIM of ``n`` random images on the CPU (numpy) and the GPU (torch)."""
    import torch

    from dcsi.similarity.ssim import ssim_matrix

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    t_cpu, s_cpu = _best_of(lambda: ssim_matrix(images, backend="numpy", device="cpu"), 1)

    def gpu() -> np.ndarray:
        out = ssim_matrix(images, backend="torch", device="cuda")
        torch.cuda.synchronize()
        return out

    gpu()
    t_gpu, s_gpu = _best_of(gpu, 3)
    return {
        "n_images": n,
        "shape": list(shape),
        "cpu_s": t_cpu,
        "gpu_s": t_gpu,
        "speedup": t_cpu / t_gpu,
        "gpu_pairs_per_s": n * (n - 1) / 2 / t_gpu,
        "max_abs_diff": float(np.abs(s_cpu - s_gpu).max()),
    }


def card_check() -> dict[str, Any]:
    """``analyze("sample:digits")`` on the CPU and on the GPU."""
    import dcsi

    cards = {d: dcsi.analyze("sample:digits", device=d, cache=False) for d in ("cpu", "cuda")}
    sim = {d: c.similarity("cnn_cosine") for d, c in cards.items()}
    groups = {d: [sorted(g.members) for g in c.redundancy] for d, c in cards.items()}
    return {
        "class_similarity_max_abs_diff": float(np.abs(sim["cpu"] - sim["cuda"]).max()),
        "dcsi_cpu": cards["cpu"].index,
        "dcsi_cuda": cards["cuda"].index,
        "redundancy_groups_equal": groups["cpu"] == groups["cuda"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for gpu.json")
    ap.add_argument("--n-features", type=int, default=2048)
    ap.add_argument("--n-ssim", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: torch sees no CUDA device; run it on a machine with a GPU.")
        return 2
    results: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    results["features"] = [features_check(args.n_features, size, args.seed) for size in (64, 224)]
    keys = list(results["features"][0])
    print_table([[r[k] for k in keys] for r in results["features"]], keys)
    results["ssim"] = [
        ssim_check(args.n_ssim, (28, 28), args.seed),
        ssim_check(args.n_ssim, (32, 32, 3), args.seed),
    ]
    keys = list(results["ssim"][0])
    print_table([[r[k] for k in keys] for r in results["ssim"]], keys)
    results["card"] = card_check()
    print(results["card"])
    print("wrote", write_results("gpu", results, directory=args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
