"""One machine, 10^6 images: the redundancy audit from 10^4 to 10^6 28-px images.

Data: the 70,000 Fashion-MNIST images (train + test, Debian's ``dataset-fashion-mnist``)
mixed into ``n`` distinct images: image ``i`` is ``w a + (1 - w) b`` of two random
Fashion-MNIST images ``a`` and ``b`` (``w`` uniform in [0.55, 0.8]) plus Gaussian noise
of sigma 4 grey levels, rounded to uint8; its label is ``a``'s.  Two mixtures share a
picture only by chance; the pairs the audit links that were not planted are counted
(``n_unplanted_pairs``), not judged.  Then ``n / 100`` copies are planted by replacing
random images with a copy of another one, six kinds equally (exact, noise sigma 5,
brightness +30, JPEG 75, 1-px shift, 2-px crop resized back; ``benchmarks/redundancy.py``):
the truth is the planted ``(source, copy)`` pairs.

Each audit -- ``dcsi.find_redundancy(images, labels)`` with its defaults, what ``dcsi
redundancy`` runs (``search="auto"``: exact up to 100,000 images, faiss IVF-flat above)
-- runs in its own subprocess; its peak memory is that process's max RSS (the data
built in the process included: ``n x 784`` bytes).  Per stage: the wall time and the
peak RSS at the stage's end.  Stages: ``blank check``, ``wavelet rows`` (coefficients,
RRQR column selection, unit rows), ``candidate search`` (first stage, ``1 - cos <=
0.01``, candidates checked exactly), ``aligned stage`` (shifts and crops), ``grouping``
(connected components, complete linkage) and the rest (groups, keep-list, summary).

Recall of the ANN search: at each ``--recall-n`` size (10^4, 3 x 10^4, 10^5) the first
stage is run exact and ann (forced) on the same images; recall = pairs found by ann that
exact found / pairs found by exact (precision is the same by construction: every ann
candidate is checked exactly; the JSON says whether ann found a pair exact did not).
The two candidate-search times place the switch point of ``search="auto"``.

Class similarity at 10^6: CNN features cannot be extracted for 10^6 images on this
CPU in a benchmark's time, so ``class_similarity`` (cosine) is timed on synthetic
Gaussian features of the EfficientNet-Lite0 size (1,280 float32) with 10 classes.

    python benchmarks/scale.py                      # 1e4 .. 1e6, recall at 1e5, class cosine
    # what results/scale.json holds: the largest size, then the rest merged into it
    python benchmarks/scale.py --sizes 1000000 --recall-n "" --class-n 0 --merge scale
    python benchmarks/scale.py --sizes 10000,30000,100000,300000 --recall-n "" \
        --class-n 0 --merge scale
    python benchmarks/scale.py --quick              # 1e4, 3e4; recall at 1e4

The load average is recorded before and after each audit (the committed figures: an
idle 2-core machine); the slope is the figure to read.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import RESULTS_DIR, print_table, write_results  # noqa: E402
from redundancy import KINDS, perturb  # noqa: E402

NAME = "scale"
#: Stage of the audit -> the function of dcsi.redundancy's namespace it spends its time in.
STAGES = {
    "blank check": "find_blank",
    "wavelet rows": "wavelet_rows",
    "candidate search": "radius_pairs",
    "aligned stage": "aligned_pairs",
    "relative stage": "relative_links",
    "grouping (components)": "connected_groups",
    "grouping (complete linkage)": "complete_groups",
}


# --------------------------------------------------------------------------- data
def fashion_images() -> tuple[np.ndarray, np.ndarray]:
    """The 70,000 Fashion-MNIST images (train then test) and labels."""
    from dcsi.samples import load_sample

    a, b = load_sample("fashion-mnist", "train"), load_sample("fashion-mnist", "test")
    return np.concatenate([a.images, b.images]), np.concatenate([a.labels, b.labels])


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(images (n, 28, 28) uint8, labels, planted pairs (m, 2), kinds (m,))``."""
    base, base_y = fashion_images()
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(base), n), rng.integers(0, len(base), n)
    w = rng.uniform(0.55, 0.8, n).astype(np.float32)[:, None, None]
    images = np.empty((n, 28, 28), dtype=np.uint8)
    for s in range(0, n, 65536):
        e = min(n, s + 65536)
        x = w[s:e] * base[a[s:e]] + (1 - w[s:e]) * base[b[s:e]]
        x += rng.normal(0, 4, x.shape).astype(np.float32)
        images[s:e] = np.clip(np.rint(x), 0, 255)
    labels = base_y[a].astype(np.int64)
    per_kind = max(5, n // (100 * len(KINDS)))
    m = per_kind * len(KINDS)
    perm = rng.permutation(n)
    src, dst = perm[:m], perm[m : 2 * m]
    kinds = np.repeat(np.array(KINDS), per_kind)
    for s_, d_, kind in zip(src, dst, kinds):
        images[d_] = perturb(images[s_], str(kind), rng)
        labels[d_] = labels[s_]
    return images, labels, np.sort(np.stack([src, dst], 1), axis=1), kinds


# --------------------------------------------------------------------------- worker
def _instrument(stages: list[dict[str, Any]], pairs_out: list[np.ndarray]) -> None:
    """Wrap the stage functions of dcsi.redundancy to time them (and keep the first
    stage's pairs)."""
    import dcsi.redundancy as red

    for stage, fname in STAGES.items():
        fn = getattr(red, fname)

        def timed(*a: Any, _fn: Any = fn, _stage: str = stage, **kw: Any) -> Any:
            t, c = time.perf_counter(), time.process_time()
            out = _fn(*a, **kw)
            stages.append(
                {
                    "stage": _stage,
                    "time_s": time.perf_counter() - t,
                    "cpu_s": time.process_time() - c,
                    "peak_rss_mib_at_end": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                    / 1024,
                }
            )
            print(json.dumps(stages[-1]), file=sys.stderr, flush=True)  # progress
            if _stage == "candidate search":
                pairs_out.append(out[0])
            return out

        setattr(red, fname, timed)


def worker(
    n: int, seed: int, search: str, out_path: str, first_stage_only: bool, equalised: bool
) -> None:
    import dcsi
    from dcsi.neighbors import SearchOptions

    os.environ.setdefault("DCSI_DISABLE_PROGRESS", "1")
    t0 = time.perf_counter()
    images, labels, planted, kinds = make_data(n, seed)
    t_data = time.perf_counter() - t0
    print(f"data of {n} images made in {t_data:.1f} s", file=sys.stderr, flush=True)
    stages: list[dict[str, Any]] = []
    first: list[np.ndarray] = []
    _instrument(stages, first)
    opts = SearchOptions(method=search)
    load0 = os.getloadavg()
    t, c = time.perf_counter(), time.process_time()
    kw: dict[str, Any] = {"align": False, "blank_tolerance": None} if first_stage_only else {}
    if equalised:
        from dcsi.relative_links import RelativeOptions

        kw["relative"] = RelativeOptions(equalised=True)
    res = dcsi.find_redundancy(images, labels, search=opts, **kw)
    total, cpu = time.perf_counter() - t, time.process_time() - c
    found = {
        (min(i, j), max(i, j))
        for g in res.groups
        for k, i in enumerate(g.indices)
        for j in g.indices[k + 1 :]
    }
    truth = {tuple(p) for p in planted.tolist()}
    hit = np.array([tuple(p) in found for p in planted.tolist()])
    stages.append(
        {
            "stage": "rest (groups, keep-list, summary)",
            "time_s": total - sum(s["time_s"] for s in stages),
            "cpu_s": cpu - sum(s["cpu_s"] for s in stages),
        }
    )
    np.save(out_path + ".pairs.npy", first[0] if first else np.empty((0, 2), np.int64))
    result = {
        "n": n,
        "search": search,
        "search_used": res.params.get("search", "exact"),
        "time_s": total,
        "cpu_s": cpu,
        "data_time_s": t_data,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "stages": stages,
        "load_avg_before": list(load0),
        "load_avg_after": list(os.getloadavg()),
        "n_first_stage_pairs": len(first[0]) if first else 0,
        "n_linked_pairs": res.summary["n_linked_pairs"],
        "n_aligned_pairs": res.summary.get("n_aligned_pairs"),
        "n_groups": res.summary["n_groups"],
        "n_planted": len(truth),
        "planted_recall": float(hit.mean()),
        "planted_recall_per_kind": {k: float(hit[kinds == k].mean()) for k in KINDS},
        "n_unplanted_pairs": len(found - truth),
        "rrqr_m": res.summary.get("rrqr", {}).get("m"),
    }
    Path(out_path).write_text(json.dumps(result))


def run_worker(
    n: int, seed: int, search: str, first_stage_only: bool = False, equalised: bool = False
) -> dict:
    """One audit in a subprocess; its JSON result and first-stage pairs (``equalised``:
    the relative stage's equalised view on)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        cmd = [sys.executable, __file__, "--worker", str(n), str(seed), search, out]
        if first_stage_only:
            cmd.append("--first-stage-only")
        if equalised:
            cmd.append("--equalised")
        subprocess.run(cmd, check=True, timeout=4 * 3600)
        res = json.loads(Path(out).read_text())
        res["_pairs"] = np.load(out + ".pairs.npy")
    return res


# --------------------------------------------------------------------------- parts
def recall_run(n: int, seed: int) -> dict:
    """First stage exact vs ann on the same ``n`` images."""
    exact = run_worker(n, seed, "exact", first_stage_only=True)
    ann = run_worker(n, seed, "ann", first_stage_only=True)
    e = {tuple(p) for p in exact.pop("_pairs").tolist()}
    a = {tuple(p) for p in ann.pop("_pairs").tolist()}
    return {
        "n": n,
        "n_exact_pairs": len(e),
        "n_ann_pairs": len(a),
        "n_ann_pairs_not_exact": len(a - e),
        "recall": len(a & e) / len(e) if e else None,
        "exact_search_time_s": _stage_time(exact, "candidate search"),
        "ann_search_time_s": _stage_time(ann, "candidate search"),
        "exact_search_cpu_s": _stage_time(exact, "candidate search", "cpu_s"),
        "ann_search_cpu_s": _stage_time(ann, "candidate search", "cpu_s"),
        "exact_peak_rss_mib": exact["peak_rss_mib"],
        "ann_peak_rss_mib": ann["peak_rss_mib"],
        "load_avg": [exact["load_avg_before"], ann["load_avg_after"]],
    }


def _stage_time(res: dict, stage: str, key: str = "time_s") -> float | None:
    times = [s[key] for s in res["stages"] if s["stage"] == stage and key in s]
    return sum(times) if times else None


def class_cosine_run(n: int, dim: int, seed: int) -> dict:
    """class_similarity (cosine) on synthetic features, in a subprocess."""
    code = (
        "import time, resource, numpy as np\n"
        "from dcsi.similarity.class_cosine import class_similarity\n"
        f"rng = np.random.default_rng({seed}); n, d = {n}, {dim}\n"
        "X = np.empty((n, d), np.float32)\n"
        "for s in range(0, n, 65536): X[s:s+65536] = rng.standard_normal((min(65536, n-s), d), dtype=np.float32)\n"
        "y = rng.integers(0, 10, n)\n"
        "t = time.perf_counter(); S = class_similarity(X, y); t = time.perf_counter() - t\n"
        "print(t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=3600
    ).stdout.split()
    return {
        "n": n,
        "dim": dim,
        "features": "synthetic Gaussian float32 (CNN extraction of 10^6 images is too slow "
        "for this CPU); 10 classes",
        "time_s": float(out[0]),
        "peak_rss_mib": float(out[1]),
    }


def partial_stages(log: Path) -> dict:
    """The stages an unfinished audit reported: ``{"n", "stages", "complete": False}``."""
    n, stages = None, []
    for line in log.read_text().splitlines():
        if line.startswith("audit of "):
            n, stages = int(line.split()[2].replace(",", "")), []
        elif line.startswith('{"stage"'):
            stages.append(json.loads(line))
    return {"n": n, "stages": stages, "complete": False}


def slope(ns: list[int], ts: list[float]) -> float | None:
    """Fitted slope of log(time) against log(n)."""
    if len(ns) < 2:
        return None
    return float(np.polyfit(np.log10(ns), np.log10(ts), 1)[0])


# --------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,30000,100000,300000,1000000")
    ap.add_argument(
        "--recall-n",
        default="10000,30000,100000",
        help="sizes of the exact-vs-ann runs (recall, and the times that place the switch)",
    )
    ap.add_argument("--class-n", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="1e4 and 3e4; recall at 1e4")
    ap.add_argument("--name", default=NAME, help="results/<name>.json (default scale)")
    ap.add_argument(
        "--equalised",
        action="store_true",
        help="the audits with the relative stage's equalised view on (off by default)",
    )
    ap.add_argument(
        "--merge",
        action="append",
        default=[],
        metavar="NAME",
        help="keep the sizes, recall and class cosine of results/NAME.json that this run "
        "does not measure (repeatable)",
    )
    ap.add_argument(
        "--partial-log",
        default=None,
        metavar="LOG",
        help="record the stages an unfinished audit printed to its stderr log (the stage "
        "lines after its last 'audit of N images' line) under 'partial'",
    )
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.recall_n, args.class_n = "10000,30000", "10000", 0
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    old: dict[str, Any] = {}
    ladder: dict[int, dict] = {}
    for name in args.merge:
        prev = json.loads((RESULTS_DIR / f"{name}.json").read_text())
        ladder.update({r["n"]: r for r in prev.get("ladder", [])})
        if prev.get("class_cosine"):
            old["class_cosine"] = prev["class_cosine"]
        runs = prev.get("recall") or []
        for r in [runs] if isinstance(runs, dict) else runs:
            old.setdefault("recall", {})[r["n"]] = r
    for n in sizes:
        print(f"audit of {n:,} images ...", file=sys.stderr, flush=True)
        res = run_worker(n, args.seed, "auto", equalised=args.equalised)
        res.pop("_pairs")
        ladder[n] = res
    rows = [ladder[n] for n in sorted(ladder)]
    recall_ns = [int(float(x)) for x in str(args.recall_n).split(",") if x and float(x) > 0]
    recall_by_n = old.get("recall", {})
    recall_by_n.update({n: recall_run(n, args.seed) for n in recall_ns})
    recall = [recall_by_n[n] for n in sorted(recall_by_n)]
    cosine = (
        class_cosine_run(args.class_n, 1280, args.seed) if args.class_n else old.get("class_cosine")
    )
    ns, ts = [r["n"] for r in rows], [r["time_s"] for r in rows]
    cs = [r.get("cpu_s", r["time_s"]) for r in rows]
    stage_names = [s["stage"] for s in rows[-1]["stages"]] if rows else []
    stage_slopes = {
        st: slope(ns, [max(_stage_time(r, st) or 1e-3, 1e-3) for r in rows]) for st in stage_names
    }
    results = {
        "data": "Fashion-MNIST mixtures (70k train+test) with 1% planted copies, 28 px",
        "ladder": rows,
        "slope_total": slope(ns, ts),
        "slope_total_cpu": slope(ns, cs),
        "slope_per_stage": stage_slopes,
        "recall": recall,
        "class_cosine": cosine,
        "targets": {"time_s_1e6": 1200, "peak_rss_mib_1e6": 8192, "ann_recall": 0.99},
        "relative_views": ["equalised"] if args.equalised else [],
    }
    if args.partial_log:
        results["partial"] = partial_stages(Path(args.partial_log))
    write_results(args.name, results)
    print(
        print_table(
            [
                [
                    f"{r['n']:,}",
                    f"{np.log10(r['n']):.2f}",
                    f"{r['time_s']:.1f}",
                    f"{np.log10(r['time_s']):.2f}",
                    f"{r.get('cpu_s', float('nan')):.1f}",
                    f"{r['peak_rss_mib']:.0f}",
                    r["search_used"],
                    f"{r.get('planted_recall', float('nan')):.3f}",
                    r.get("n_unplanted_pairs", ""),
                    "/".join(f"{x:.1f}" for x in r.get("load_avg_before", [])),
                ]
                for r in rows
            ],
            [
                "n",
                "log10 n",
                "time (s)",
                "log10 time",
                "CPU time (s)",
                "peak RSS (MiB)",
                "search",
                "planted recall",
                "other pairs",
                "load before",
            ],
        )
    )
    print(
        f"\nslope of log time vs log n: wall {results['slope_total']}, "
        f"CPU {results['slope_total_cpu']}"
    )
    if rows:
        big = rows[-1]
        print(
            print_table(
                [
                    [
                        s["stage"],
                        f"{s['time_s']:.1f}",
                        f"{s.get('cpu_s', float('nan')):.1f}",
                        s.get("peak_rss_mib_at_end", "-"),
                    ]
                    for s in big["stages"]
                ],
                [f"stage at n={big['n']:,}", "time (s)", "CPU (s)", "peak RSS at end (MiB)"],
            )
        )
    print(f"recall: {recall}\nclass cosine: {cosine}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(
            int(sys.argv[2]),
            int(sys.argv[3]),
            sys.argv[4],
            sys.argv[5],
            "--first-stage-only" in sys.argv,
            "--equalised" in sys.argv,
        )
        sys.exit(0)
    sys.exit(main())
