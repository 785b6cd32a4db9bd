"""All-pairs SSIM: dcsi against a loop over skimage.metrics.structural_similarity.

Measures, in one run:

1. all-pairs SSIM on 500 Fashion-MNIST test images (28x28 grey) and on 500 32x32 RGB
   crops of scikit-image's sample photos: dcsi's time and pairs/s, the skimage loop
   timed on a random sample of pairs and scaled to all pairs, the ratio, the largest
   absolute difference on the sampled pairs, and peak memory;
2. 5,000 Fashion-MNIST images with threshold output (``ssim_threshold_pairs``, no
   N x N matrix) and matched pairs (``ssim_pairs``);
3. Yousefzadeh's analysis (Algorithm 2) on one Fashion-MNIST class of 500 training
   images: mean and standard deviation of SSIM, identical pairs, nc from the eigen-gap
   rule, the most isolated image.

Usage (from the repository root)::

    python benchmarks/ssim.py            # the full run
    python benchmarks/ssim.py --quick    # a smoke run (small sizes)

Prints markdown tables and writes ``benchmarks/results/ssim.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    RESULTS_DIR,
    Timer,
    peak_rss_mib,
    print_table,
    traced_peak_mib,
    write_results,
)

SK_KW = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=-1 if a.ndim == 3 else None, **SK_KW))


def rgb_crops(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` size x size RGB crops of skimage's sample photos at random scales."""
    from skimage import data
    from skimage.transform import rescale

    rng = np.random.default_rng(seed)
    photos = [
        data.astronaut(),
        data.chelsea(),
        data.coffee(),
        data.rocket(),
        data.immunohistochemistry(),
    ]
    scaled = []
    for p in photos:
        for f in (0.125, 0.25, 0.5):
            img = rescale(p, f, channel_axis=-1, anti_aliasing=True, preserve_range=True)
            scaled.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        img = scaled[rng.integers(len(scaled))]
        r = rng.integers(0, img.shape[0] - size + 1)
        c = rng.integers(0, img.shape[1] - size + 1)
        out[i] = img[r : r + size, c : c + size]
    return out


def thread_info() -> dict:
    """The thread settings the figures were measured with."""
    from threadpoolctl import threadpool_info

    return {
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "blas_pools": [
            {k: d.get(k) for k in ("internal_api", "version", "num_threads")}
            for d in threadpool_info()
            if d.get("user_api") == "blas"
        ],
        "dcsi": "BLAS limited to 1 thread inside the SSIM functions (single_thread_blas)",
        "skimage": "one process, scipy.ndimage filters (no BLAS)",
        "torch": "not imported (numpy backend)" if "torch" not in sys.modules else "imported",
    }


def history() -> list[dict]:
    """Earlier results of this benchmark, newest first (the ``previous`` key)."""
    path = RESULTS_DIR / "ssim.json"
    if not path.exists():
        return []
    old = json.loads(path.read_text(encoding="utf-8"))
    earlier = old.pop("previous", [])
    old.pop("paper_analysis", None)  # recomputed every run; not part of the speed history
    return [old, *earlier]


def grey_of(rgb: np.ndarray) -> np.ndarray:
    """uint8 luminance (ITU-R 709 weights, as skimage's rgb2gray) of uint8 RGB images."""
    y = rgb.astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def all_pairs_row(name: str, images: np.ndarray, n_sample: int, rounds: int, seed: int) -> dict:
    """dcsi's all-pairs matrix against the skimage loop, interleaved, best of ``rounds``.

    Each round times one full ``ssim_matrix`` run and the skimage loop over the same
    ``n_sample`` random pairs, in alternating order (dcsi first in even rounds), so that
    a change of machine load hits both.  The headline ratio divides the best skimage
    time per pair (scaled to all pairs) by the best dcsi time.
    """
    from dcsi.similarity.ssim import ssim_matrix

    n = images.shape[0]
    n_pairs = n * (n - 1) // 2
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=n_sample)
    j = (i + rng.integers(1, n, size=n_sample)) % n  # i != j
    ssim_matrix(images[:8])  # warm-up (imports, BLAS)
    skimage_ssim(images[0], images[1])
    wall: dict[str, list[float]] = {"dcsi": [], "skimage": []}
    cpu: dict[str, list[float]] = {"dcsi": [], "skimage": []}
    loads = []
    M = ref = np.empty(0)
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        for who in ("dcsi", "skimage") if r % 2 == 0 else ("skimage", "dcsi"):
            cpu0 = time.process_time()
            with Timer() as t:
                if who == "dcsi":
                    M = ssim_matrix(images)
                else:
                    ref = np.array([skimage_ssim(images[a], images[b]) for a, b in zip(i, j)])
            wall[who].append(t.seconds)
            cpu[who].append(time.process_time() - cpu0)
    scale = n_pairs / n_sample  # skimage seconds for all pairs per sampled second
    per_round = [s * scale / d for s, d in zip(wall["skimage"], wall["dcsi"])]
    _, traced = traced_peak_mib(lambda: ssim_matrix(images))
    return {
        "dataset": name,
        "n_images": n,
        "image_shape": list(images.shape[1:]),
        "n_pairs": n_pairs,
        "rounds": rounds,
        "dcsi_seconds_best": min(wall["dcsi"]),
        "dcsi_seconds_all": wall["dcsi"],
        "dcsi_cpu_seconds_best": min(cpu["dcsi"]),
        "dcsi_pairs_per_s": n_pairs / min(wall["dcsi"]),
        "skimage_sampled_pairs": int(n_sample),
        "skimage_sample_seconds_all": wall["skimage"],
        "skimage_pairs_per_s": n_sample / min(wall["skimage"]),
        "skimage_seconds_scaled": min(wall["skimage"]) * scale,
        "ratio_wall": min(wall["skimage"]) * scale / min(wall["dcsi"]),
        "ratio_cpu": min(cpu["skimage"]) * scale / min(cpu["dcsi"]),
        "ratio_wall_per_round": per_round,
        "ratio_wall_worst_round": min(per_round),
        "load_average_1min": loads,
        "max_abs_diff": float(np.abs(M[i, j] - ref).max()),
        "dcsi_traced_peak_mib": traced,
        "dense_matrix_mib": n * n * 8 / 2**20,
    }


def threshold_row(images: np.ndarray, threshold: float, n_pairs_check: int, seed: int) -> dict:
    from dcsi.similarity.ssim import ssim_pairs, ssim_threshold_pairs

    n = images.shape[0]
    n_pairs = n * (n - 1) // 2
    cpu0 = time.process_time()
    with Timer() as t:
        (pairs, vals), traced = traced_peak_mib(lambda: ssim_threshold_pairs(images, threshold))
    cpu = time.process_time() - cpu0
    rng = np.random.default_rng(seed)
    check = (
        pairs[rng.choice(len(pairs), size=min(len(pairs), 50), replace=False)]
        if len(pairs)
        else np.empty((0, 2), dtype=int)
    )
    ref = np.array([skimage_ssim(images[a], images[b]) for a, b in check])
    idx = {tuple(p): v for p, v in zip(pairs.tolist(), vals.tolist())}
    diff = max((abs(idx[tuple(p)] - r) for p, r in zip(check.tolist(), ref)), default=0.0)
    # matched pairs (the redundancy engineer's verification step)
    rp = rng.integers(0, n, size=(n_pairs_check, 2))
    with Timer() as tp:
        pv, ptraced = traced_peak_mib(lambda: ssim_pairs(images, rp))
    ref_p = np.array([skimage_ssim(images[a], images[b]) for a, b in rp[:50]])
    return {
        "n_images": n,
        "n_pairs": n_pairs,
        "threshold": threshold,
        "pairs_found": len(pairs),
        "seconds": t.seconds,
        "cpu_seconds": cpu,
        "pairs_per_s": n_pairs / t.seconds,
        "traced_peak_mib": traced,
        "dense_matrix_mib": n * n * 8 / 2**20,
        "max_abs_diff_checked": float(diff),
        "matched_pairs": int(n_pairs_check),
        "matched_seconds": tp.seconds,
        "matched_pairs_per_s": n_pairs_check / tp.seconds,
        "matched_traced_peak_mib": ptraced,
        "matched_max_abs_diff": float(np.abs(pv[:50] - ref_p).max()),
    }


def paper_analysis(
    images: np.ndarray, class_name: str, *, knn: int, thresholds: tuple[float, ...], seed: int
) -> dict:
    from dcsi.similarity.ssim import ssim_matrix
    from dcsi.spectral import spectral_analysis

    n = images.shape[0]
    with Timer() as t:
        M = ssim_matrix(images)
    iu = np.triu_indices(n, 1)
    off = M[iu]
    flat = images.reshape(n, -1)
    same_bytes = sum(
        int(np.count_nonzero((flat[i + 1 :] == flat[i]).all(axis=1))) for i in range(n - 1)
    )
    out = {
        "class": class_name,
        "n_images": n,
        "ssim_seconds": t.seconds,
        "mean": float(off.mean()),
        "std": float(off.std()),
        "min": float(off.min()),
        "identical_pairs_ssim_ge_0.999999": int(np.count_nonzero(off >= 1 - 1e-6)),
        "identical_pairs_same_bytes": same_bytes,
        "pairs_ssim_ge_0.9": int(np.count_nonzero(off >= 0.9)),
        "pairs_ssim_ge_0.8": int(np.count_nonzero(off >= 0.8)),
        "pairs_ssim_ge_0.7": int(np.count_nonzero(off >= 0.7)),
        "spectral": [],
    }
    configs = [(("threshold", {"threshold": t}, "first_gap")) for t in thresholds]
    configs += [
        ("threshold", {"threshold": thresholds[-1]}, "count_gaps"),
        ("knn", {"k": knn}, "first_gap"),
        ("knn", {"k": knn}, "count_gaps"),
    ]
    for graph, kw, rule in configs:
        with Timer() as ts:
            res = spectral_analysis(
                M, graph=graph, rule=rule, laplacian="symmetric", seed=seed, **kw
            )
        d = res.to_dict(max_eigenvalues=50)
        out["spectral"].append(
            {
                "graph": graph,
                **kw,
                "rule": rule,
                "gamma": d["params"]["gamma"],
                "n_clusters": d["n_clusters"],
                "n_components": d["n_components"],
                "largest_cluster": max(d["cluster_sizes"]),
                "seconds": ts.seconds,
                "leading_eigenvalues": d["eigenvalues"][:20],
            }
        )
    iso = res.isolated[0]
    out["most_isolated_image"] = int(iso)
    out["most_isolated_max_ssim"] = float(res.isolation[0])
    out["most_isolated_mean_ssim"] = float((M[iso].sum() - M[iso, iso]) / (n - 1))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=500, help="images for the all-pairs runs")
    p.add_argument("--n-large", type=int, default=5000, help="images for the threshold run")
    p.add_argument(
        "--sample",
        type=int,
        default=400,
        help="pairs timed with the skimage loop (scaled to all pairs)",
    )
    p.add_argument(
        "--n-check", type=int, default=400, help="images of the 400-image RGB and grey runs"
    )
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (best of)")
    p.add_argument("--threshold", type=float, default=0.9, help="SSIM threshold of the large run")
    p.add_argument(
        "--matched", type=int, default=100_000, help="random matched pairs for ssim_pairs"
    )
    p.add_argument(
        "--paper-class",
        type=int,
        default=0,
        help="Fashion-MNIST class of the paper's analysis (0 = T-shirt/top)",
    )
    p.add_argument("--paper-n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small smoke run")
    p.add_argument("--skip-large", action="store_true", help="skip the threshold run")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.n_large, args.sample, args.matched, args.paper_n = 60, 300, 30, 2000, 80
        args.n_check, args.rounds = 40, 2
    os.environ.setdefault("DCSI_DISABLE_PROGRESS", "1")

    from dcsi.samples import load_sample

    test = load_sample("fashion-mnist", "test")
    train = load_sample("fashion-mnist", "train")
    rng = np.random.default_rng(args.seed)
    fm = test.images[rng.choice(len(test.images), size=args.n, replace=False)]
    rgb = rgb_crops(args.n, 32, args.seed)

    results: dict = {"all_pairs": [], "params": vars(args)}
    results["threads"] = thread_info()
    datasets = [
        (f"Fashion-MNIST test (28x28 grey), {args.n} images", fm),
        (f"skimage photo crops (32x32 RGB), {args.n} images", rgb),
        (f"skimage photo crops (32x32 RGB), {args.n_check} images", rgb[: args.n_check]),
        (f"the same crops as grey (32x32), {args.n_check} images", grey_of(rgb[: args.n_check])),
    ]
    for name, imgs in datasets:
        results["all_pairs"].append(all_pairs_row(name, imgs, args.sample, args.rounds, args.seed))
    rows = [
        [
            r["dataset"],
            r["n_pairs"],
            r["dcsi_seconds_best"],
            r["dcsi_pairs_per_s"],
            r["skimage_pairs_per_s"],
            r["skimage_seconds_scaled"],
            r["ratio_wall"],
            r["ratio_wall_worst_round"],
            r["ratio_cpu"],
            f"{r['max_abs_diff']:.1e}",
            r["dcsi_traced_peak_mib"],
            f"{min(r['load_average_1min']):.2f}-{max(r['load_average_1min']):.2f}",
        ]
        for r in results["all_pairs"]
    ]
    print(f"\n### All-pairs SSIM, best of {args.rounds} interleaved rounds\n")
    print_table(
        rows,
        [
            "data",
            "pairs",
            "dcsi s (best)",
            "dcsi pairs/s",
            "skimage pairs/s (best)",
            "skimage s (scaled)",
            "speed-up (wall, best/best)",
            "speed-up (worst round)",
            "speed-up (CPU)",
            "max |diff|",
            "peak MiB (traced)",
            "load (1 min)",
        ],
    )

    # drawn even when skipped, so that --skip-large analyses the same class sample
    big_idx = rng.choice(len(test.images), size=min(args.n_large, len(test.images)), replace=False)
    if not args.skip_large:
        big = test.images[big_idx]
        tr = threshold_row(big, args.threshold, args.matched, args.seed)
        tr["skimage_seconds_scaled"] = (
            tr["n_pairs"] / results["all_pairs"][0]["skimage_pairs_per_s"]
        )
        results["threshold"] = tr
        print(f"\n### Threshold pass and matched pairs, {tr['n_images']} Fashion-MNIST images\n")
        print_table(
            [
                [
                    "ssim_threshold_pairs (t={:.2f})".format(tr["threshold"]),
                    tr["n_pairs"],
                    tr["seconds"],
                    tr["pairs_per_s"],
                    tr["skimage_seconds_scaled"],
                    tr["pairs_found"],
                    tr["traced_peak_mib"],
                    tr["dense_matrix_mib"],
                    f"{tr['max_abs_diff_checked']:.1e}",
                ],
                [
                    "ssim_pairs (random pairs)",
                    tr["matched_pairs"],
                    tr["matched_seconds"],
                    tr["matched_pairs_per_s"],
                    None,
                    None,
                    tr["matched_traced_peak_mib"],
                    None,
                    f"{tr['matched_max_abs_diff']:.1e}",
                ],
            ],
            [
                "step",
                "pairs",
                "seconds",
                "pairs/s",
                "skimage s (scaled)",
                "pairs found",
                "peak MiB (traced)",
                "dense N x N MiB",
                "max |diff| (checked)",
            ],
        )

    cls = np.flatnonzero(train.labels == args.paper_class)
    pick = np.sort(rng.choice(cls, size=min(args.paper_n, cls.size), replace=False))
    pa = paper_analysis(
        train.images[pick],
        train.classes[args.paper_class],
        knn=10,
        thresholds=(0.9, 0.8, 0.7),
        seed=args.seed,
    )
    pa["train_indices_of_most_isolated"] = int(pick[pa["most_isolated_image"]])
    results["paper_analysis"] = pa
    print(
        f"\n### Yousefzadeh's analysis on one class: Fashion-MNIST train "
        f"'{pa['class']}', {pa['n_images']} images\n"
    )
    print_table(
        [
            ["mean SSIM (pairs i<j)", pa["mean"]],
            ["std SSIM", pa["std"]],
            ["min SSIM", pa["min"]],
            ["identical pairs (SSIM >= 1 - 1e-6)", pa["identical_pairs_ssim_ge_0.999999"]],
            ["identical pairs (same bytes)", pa["identical_pairs_same_bytes"]],
            ["pairs with SSIM >= 0.9", pa["pairs_ssim_ge_0.9"]],
            ["pairs with SSIM >= 0.8", pa["pairs_ssim_ge_0.8"]],
            ["pairs with SSIM >= 0.7", pa["pairs_ssim_ge_0.7"]],
            [
                "most isolated image (index in the class sample / in train)",
                f"{pa['most_isolated_image']} / {pa['train_indices_of_most_isolated']}",
            ],
            ["its largest SSIM to another image", pa["most_isolated_max_ssim"]],
            ["its mean SSIM", pa["most_isolated_mean_ssim"]],
            ["all-pairs SSIM seconds", pa["ssim_seconds"]],
        ],
        ["quantity", "value"],
    )
    print()
    print_table(
        [
            [
                s["graph"],
                s.get("threshold", s.get("k")),
                s["rule"],
                s["gamma"],
                s["n_clusters"],
                s["n_components"],
                s["largest_cluster"],
                s["seconds"],
            ]
            for s in pa["spectral"]
        ],
        ["graph", "t or k", "rule", "gamma", "nc", "components", "largest cluster", "seconds"],
    )
    results["peak_rss_mib"] = peak_rss_mib()
    results["note"] = (
        "skimage loop timed on a random sample of pairs and scaled linearly to all pairs; "
        "'speed-up (CPU)' compares process CPU seconds, 'speed-up (wall)' wall seconds; "
        "numpy backend (no GPU on this machine). The machine's 2 cores were shared with "
        "other engineers' jobs, so absolute figures are noisy."
    )
    if not args.quick:
        results["previous"] = history()
    path = write_results("ssim_quick" if args.quick else "ssim", results)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
