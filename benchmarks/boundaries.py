"""Decision boundaries between pairs of training images (Yousefzadeh §5.3), measured.

A small CNN (``clustered_training.small_cnn``) is trained on a seeded subset of the
Fashion-MNIST training split (``--train-per-class`` images per class, ``--epochs``).
Then, for ``--pairs`` pairs of each kind, :func:`dcsi.boundaries.boundary_stats` counts
the decision boundaries the model crosses on the straight path ``(1 - a) x1 + a x2``:

- ``planted_noise``: a training image and a copy with Gaussian noise (sigma
  ``--noise`` grey levels, clipped to 0..255);
- ``planted_shift``: a training image and a copy shifted by 1 pixel (zeros enter);
- ``real_duplicate``: near-duplicate pairs :func:`dcsi.find_redundancy` finds in the
  whole training split (default wavelet search; representative and each member);
- ``similar``: the most similar same-class pairs of a seeded sample (pixel cosine,
  :func:`dcsi.boundaries.pixel_cosine_pairs`);
- ``dissimilar``: the least similar same-class pairs of the same sample.

The paper's claim, in numbers: near-identical images have no boundary between them;
dissimilar images of one class often have two (the path leaves the class and returns).

Check: for ``--dense-pairs`` pairs of each kind the grid-and-bisection count
(``--steps`` intervals, ``--tol``) is compared with a dense evaluation of
``--dense-points`` points; the agreement rate is the share of pairs with the same number
of crossings (a crossing narrower than the grid step can be missed; the dense grid can
miss ones narrower than its own spacing).

    python benchmarks/boundaries.py            # the figures in results/boundaries.json
    python benchmarks/boundaries.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, print_table, write_results
from clustered_training import predict, train

KINDS = ("planted_noise", "planted_shift", "real_duplicate", "similar", "dissimilar")


def scaled(net):
    """The CNN as dcsi's model contract wants it: (b, 28, 28) floats 0..255 -> logits."""
    import torch

    class Scaled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x[:, None] / 255.0)

    return Scaled(net).eval()


def planted(images: np.ndarray, idx: np.ndarray, rng, noise: float):
    """Noisy and 1-px shifted copies of ``images[idx]``."""
    base = images[idx].astype(np.float64)
    noisy = np.clip(np.rint(base + rng.normal(0, noise, base.shape)), 0, 255).astype(np.uint8)
    shifted = np.zeros_like(images[idx])
    directions = rng.integers(0, 4, len(idx))
    for k, d in enumerate(directions):
        axis, step = divmod(int(d), 2)
        shifted[k] = np.roll(images[idx[k]], 1 if step else -1, axis=axis)
        edge = (0 if step else -1, slice(None)) if axis == 0 else (slice(None), 0 if step else -1)
        shifted[k][edge] = 0
    return noisy, shifted


def real_duplicates(images, labels, n, seed, limit=None):
    from dcsi.redundancy import find_redundancy

    with Timer() as t:
        res = find_redundancy(images[:limit], labels[:limit], seed=seed)
    pairs = np.array(
        [(g.indices[0], i) for g in res for i in g.indices[1:]], dtype=np.int64
    ).reshape(-1, 2)
    n_found = len(pairs)
    if len(pairs) > n:
        pairs = pairs[np.sort(np.random.default_rng(seed).choice(len(pairs), n, replace=False))]
    searched = len(images) if limit is None else min(limit, len(images))
    info = {"n_searched": searched, "n_groups": len(res), "n_pairs_found": n_found}
    return pairs, {**info, "seconds": t.seconds}


def right_at_ends(stats, truth):
    """Pairs whose two ends the model classifies as their (shared) label, and the share
    of those with 2+ crossings: the path leaves the right class and comes back."""
    ok = np.array(
        [
            truth[a] == truth[b] == r.classes_at_ends[0] == r.classes_at_ends[1]
            for (a, b), r in zip(stats.pairs.tolist(), stats.results)
        ],
        dtype=bool,
    )
    n = stats.n_crossings
    return {
        "n_right_at_ends": int(ok.sum()),
        "share_2plus_right_at_ends": float(np.mean(n[ok] >= 2)) if ok.any() else None,
    }


def dense_check(model, images, pairs, stats, n_check, n_points, rng):
    """Agreement of the grid-and-bisection counts with a dense evaluation."""
    from dcsi.boundaries import dense_classes

    pick = np.sort(rng.choice(len(pairs), min(n_check, len(pairs)), replace=False))
    same, missed, extra = 0, 0, 0
    for k in pick:
        a, b = pairs[k]
        d = dense_classes(model, images[a], images[b], n_points=n_points)
        n_dense = int(np.count_nonzero(d[1:] != d[:-1]))
        n_found = stats.results[k].n_crossings
        same += n_found == n_dense
        missed += max(n_dense - n_found, 0)
        extra += max(n_found - n_dense, 0)
    return {
        "n_checked": len(pick),
        "agreement": same / len(pick) if len(pick) else None,
        "crossings_missed": missed,
        "crossings_extra": extra,
    }


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-per-class", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--pairs", type=int, default=100, help="pairs per kind")
    p.add_argument("--pool-per-class", type=int, default=200)
    p.add_argument("--noise", type=float, default=8.0, help="planted noise sigma (grey levels)")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--dense-pairs", type=int, default=20, help="pairs per kind checked")
    p.add_argument("--dense-points", type=int, default=2001)
    p.add_argument("--test-per-class", type=int, default=200, help="accuracy check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--search-limit",
        type=int,
        default=None,
        help="search the first N training images for real near-duplicates (default all)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.train_per_class, args.epochs, args.pairs = 100, 1, 20
        args.dense_pairs, args.test_per_class, args.search_limit = 5, 50, 5000
    return args


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    import torch

    from dcsi.boundaries import boundary_stats, pixel_cosine_pairs
    from dcsi.samples import load_sample

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    tr, te = load_sample("fashion-mnist", "train"), load_sample("fashion-mnist", "test")

    def per_class(labels, n):
        return np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:n] for c in range(10)])

    sel = per_class(tr.labels, args.train_per_class)
    with Timer() as t_train:
        net = train(tr.images[sel], tr.labels[sel], 10, epochs=args.epochs, seed=args.seed)
    tsel = per_class(te.labels, args.test_per_class)
    accuracy = float(np.mean(predict(net, te.images[tsel]) == te.labels[tsel]))
    model = scaled(net)

    # the pairs: rows of tr.images, then the planted copies appended
    dup, dup_info = real_duplicates(tr.images, tr.labels, args.pairs, args.seed, args.search_limit)
    sim, dis, _, _ = pixel_cosine_pairs(
        tr.images,
        tr.labels,
        n_pairs=args.pairs,
        pool_per_class=args.pool_per_class,
        exclude=[tuple(p) for p in dup.tolist()],
        seed=args.seed,
    )
    base = rng.choice(len(tr.images), args.pairs, replace=False)
    noisy, shifted = planted(tr.images, base, rng, args.noise)
    images = np.concatenate([tr.images, noisy, shifted])
    n = len(tr.images)
    pairs = {
        "planted_noise": np.stack([base, n + np.arange(len(base))], axis=1),
        "planted_shift": np.stack([base, n + len(base) + np.arange(len(base))], axis=1),
        "real_duplicate": dup,
        "similar": sim,
        "dissimilar": dis,
    }

    truth = np.concatenate([tr.labels, tr.labels[base], tr.labels[base]])
    rows, kinds = [], {}
    for kind in KINDS:
        with Timer() as t:
            st = boundary_stats(model, images, pairs[kind], steps=args.steps, tol=args.tol)
        s = st.summary
        check = dense_check(
            model, images, pairs[kind], st, args.dense_pairs, args.dense_points, rng
        )
        evals = int(sum(r.n_evaluations for r in st.results))
        right = right_at_ends(st, truth)
        kinds[kind] = {
            **s,
            **right,
            "dense_check": check,
            "seconds": t.seconds,
            "n_evaluations": evals,
        }
        rows.append(
            [
                kind,
                s["n_pairs"],
                s["share_0"],
                s["share_1"],
                s["share_2plus"],
                s["mean_crossings"],
                s["same_class_at_ends"],
                right["n_right_at_ends"],
                right["share_2plus_right_at_ends"],
                None
                if check["agreement"] is None
                else f"{check['agreement']:.2f} ({check['n_checked']})",
                t.seconds,
            ]
        )
    print(
        f"small CNN: {len(sel)} training images, {args.epochs} epochs, "
        f"{t_train.seconds:.1f} s; test accuracy {accuracy:.3f} on {len(tsel)} images"
    )
    print(
        f"real near-duplicates: {dup_info['n_groups']} groups, {dup_info['n_pairs_found']} "
        f"pairs in {dup_info['n_searched']} training images ({dup_info['seconds']:.1f} s)"
    )
    print(
        f"grid {args.steps} intervals + bisection to {args.tol:g}; dense check "
        f"{args.dense_points} points"
    )
    print_table(
        rows,
        [
            "pairs",
            "n",
            "0 crossings",
            "1",
            "2+",
            "mean",
            "same class at ends",
            "both ends right",
            "2+ of those",
            "agrees with dense (n)",
            "seconds",
        ],
    )
    path = write_results(
        "boundaries",
        {
            "params": vars(args),
            "model": {
                "architecture": "clustered_training.small_cnn",
                "n_train": len(sel),
                "epochs": args.epochs,
                "train_seconds": t_train.seconds,
                "test_accuracy": accuracy,
                "n_test": len(tsel),
            },
            "real_duplicates": dup_info,
            "kinds": kinds,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
