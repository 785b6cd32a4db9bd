"""Does the DCSI predict how hard a classification task is?

A family of classification tasks made of class subsets of Fashion-MNIST and sklearn's
digits: all 45 Fashion-MNIST class pairs plus random 3-5-class subsets of both datasets
(and a few digit pairs).  For each task:

- the DCSI (``dcsi.compute_index`` on ``dcsi.class_similarity`` of EfficientNet-Lite0
  features from ``dcsi.extract_features``, default backbone), its peers CSG and the
  cosine silhouette on the same features, and the variants we tried on the way;
- the test error of a fixed reference classifier on raw pixels: scikit-learn's
  ``LogisticRegression`` (L2, C=1, lbfgs, pixels scaled to [0, 1]).

It prints Spearman's rho of each index with the error (over all tasks, and within each
dataset) and writes ``benchmarks/results/dcsi_validity.json``.  ``--holdout`` more random
3-8-class subsets per dataset (drawn with another seed) are reported separately: they
check a definition chosen on the main tasks.

The reference errors do not depend on the features, so they are cached in
``benchmarks/results/dcsi_validity_errors.json``, keyed by dataset, classes, training
size, seed and classifier settings (``--error-cache``): with the features cached too
(``--cache``), a re-run to try an index definition takes about a minute (CSG dominates).

Features are extracted once for a pool of images (``--per-class`` training images of
each Fashion-MNIST class, the training half of digits) and cached; each task's index is
computed from the pool's rows of its classes.

    python benchmarks/dcsi_validity.py                 # the README figures
    python benchmarks/dcsi_validity.py --quick         # smoke run, minutes
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, print_table, write_results

from dcsi.index import (
    _cap_terms,
    centroid_terms,
    compute_index,
    cosine_silhouette,
    cumulative_spectral_gradient,
)
from dcsi.samples import load_sample
from dcsi.similarity.class_cosine import class_similarity


def make_tasks(n_random: int, n_digit_pairs: int, seed: int) -> list[tuple[str, list[int]]]:
    rng = np.random.default_rng(seed)
    tasks = [("fashion-mnist", list(p)) for p in itertools.combinations(range(10), 2)]
    for _ in range(n_random):
        k = int(rng.integers(3, 6))
        tasks.append(("fashion-mnist", sorted(rng.choice(10, k, replace=False).tolist())))
    for _ in range(n_digit_pairs):
        tasks.append(("digits", sorted(rng.choice(10, 2, replace=False).tolist())))
    for _ in range(n_random):
        k = int(rng.integers(3, 6))
        tasks.append(("digits", sorted(rng.choice(10, k, replace=False).tolist())))
    return tasks


def make_holdout_tasks(
    n_per_dataset: int, seen: list[tuple[str, list[int]]], seed: int
) -> list[tuple[str, list[int]]]:
    """Held-out tasks: random 3-8-class subsets not among ``seen``, drawn with another
    seed (``seed + 12345``); used only to check a definition chosen on the main tasks."""
    rng = np.random.default_rng(seed + 12345)
    have = {(ds, tuple(c)) for ds, c in seen}
    out = []
    for ds in ("digits", "fashion-mnist"):
        got = 0
        while got < n_per_dataset:
            k = int(rng.integers(3, 9))
            cl = tuple(sorted(rng.choice(10, k, replace=False).tolist()))
            if (ds, cl) in have:
                continue
            have.add((ds, cl))
            out.append((ds, list(cl)))
            got += 1
    return out


def load_data(per_class: int, train_per_class: int, seed: int) -> dict:
    """Training pools (features + classifier) and test sets of both datasets."""
    rng = np.random.default_rng(seed)
    fm_tr = load_sample("fashion-mnist", "train")
    fm_te = load_sample("fashion-mnist", "test")
    dg = load_sample("digits")
    # Fashion-MNIST: the classifier trains on train_per_class images of each class; the
    # first per_class of them are the pool the index sees.
    sel = np.concatenate(
        [rng.permutation(np.flatnonzero(fm_tr.labels == c))[:train_per_class] for c in range(10)]
    )
    pool = np.concatenate([sel[fm_tr.labels[sel] == c][:per_class] for c in range(10)])
    perm = rng.permutation(len(dg.labels))
    half = len(perm) // 2
    return {
        "fashion-mnist": {
            "train_images": fm_tr.images[sel],
            "train_labels": fm_tr.labels[sel],
            "pool_images": fm_tr.images[pool],
            "pool_labels": fm_tr.labels[pool],
            "test_images": fm_te.images,
            "test_labels": fm_te.labels,
        },
        "digits": {
            "train_images": dg.images[perm[:half]],
            "train_labels": dg.labels[perm[:half]],
            "pool_images": dg.images[perm[:half]],
            "pool_labels": dg.labels[perm[:half]],
            "test_images": dg.images[perm[half:]],
            "test_labels": dg.labels[perm[half:]],
        },
    }


def pool_features(data: dict, *, image_size: int | None, batch_size: int, cache: str | None):
    import dcsi

    out = {}
    for name, d in data.items():
        with Timer() as t:
            fs = dcsi.extract_features(
                d["pool_images"],
                labels=d["pool_labels"],
                image_size=image_size,
                batch_size=batch_size,
                cache=cache if cache else None,
            )
        out[name] = {
            "features": np.asarray(fs.features, dtype=np.float64),
            "image_size": fs.image_size,
            "backbone": fs.backbone,
            "seconds": t.seconds,
            "n": len(d["pool_labels"]),
        }
    return out


def reference_error(d: dict, classes: list[int], *, max_iter: int) -> float:
    from sklearn.linear_model import LogisticRegression

    mtr = np.isin(d["train_labels"], classes)
    mte = np.isin(d["test_labels"], classes)
    xtr = d["train_images"][mtr].reshape(int(mtr.sum()), -1) / 255.0
    xte = d["test_images"][mte].reshape(int(mte.sum()), -1) / 255.0
    clf = LogisticRegression(C=1.0, max_iter=max_iter)
    clf.fit(xtr, d["train_labels"][mtr])
    return float(np.mean(clf.predict(xte) != d["test_labels"][mte]))


def projected_overlap(x: np.ndarray, y: np.ndarray) -> float:
    """Variant v6 (needs the features, not only S): for each pair, the unit features
    projected on the centroid difference ``w``; overlap = Phi(-|w|^2 / 2 / sd_a) +
    Phi(-|w|^2 / 2 / sd_b) (Gaussian nearest-centroid error), aggregated like the DCSI."""
    from scipy.stats import norm

    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    k = int(y.max()) + 1
    mu = np.stack([u[y == c].mean(axis=0) for c in range(k)])
    p = u @ mu.T
    o = np.zeros((k, k))
    for a in range(k):
        for b in range(a + 1, k):
            w2 = float(np.sum((mu[a] - mu[b]) ** 2))
            sa = np.std(p[y == a, a] - p[y == a, b])
            sb = np.std(p[y == b, a] - p[y == b, b])
            o[a, b] = o[b, a] = min(1.0, norm.cdf(-w2 / 2 / sa) + norm.cdf(-w2 / 2 / sb))
    return float(np.mean(1.0 - np.prod(1.0 - o, axis=1)))


def fisher_index(S: np.ndarray, n: np.ndarray, t: float) -> float:
    """The first DCSI (before the cap overlap): mean_a [1 - prod_{b != a} (1 - o_ab)],
    o_ab = exp(-F_ab / t), F_ab = |mu_a - mu_b|^2 / (v_a + v_b)."""
    _, v, d2 = centroid_terms(S, n.astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        f = d2 / (v[:, None] + v[None, :])
    o = np.exp(-f / t)
    np.fill_diagonal(o, 0.0)
    return float(np.mean(1.0 - np.prod(1.0 - o, axis=1)))


def variants(S: np.ndarray, n: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The definitions tried on the way to the DCSI (all but v6 and the centred ones
    from S and the counts)."""
    k = S.shape[0]
    iu = np.triu_indices(k, 1)
    _, v, d2 = centroid_terms(S, n.astype(np.float64))
    fisher = d2 / (v[:, None] + v[None, :])
    dg = np.diag(S)
    radius, angle, cap = _cap_terms(S, n.astype(np.float64))
    ratio = angle / (radius[:, None] + radius[None, :])
    r = np.sqrt(v)
    gap = np.sqrt(d2) - (r[:, None] + r[None, :])
    xc = x - x.mean(axis=0)  # task-mean-centred features, then the cosine matrix
    Sc = class_similarity(xc, y)
    return {
        "v1_mean_offdiag_S": float(np.mean(S[iu])),
        "v2_mean_offdiag_S_over_diag": float(np.mean(S[iu] / np.sqrt(np.outer(dg, dg))[iu])),
        "v3_worst_pair_S_over_diag": float(np.max(S[iu] / np.sqrt(np.outer(dg, dg))[iu])),
        "v4_worst_pair_exp_neg_F": float(np.exp(-fisher[iu].min())),
        "v5_mean_pair_exp_neg_F": float(np.mean(np.exp(-fisher[iu]))),
        "v6_projected_gaussian_overlap": projected_overlap(x, y),
        "v7_fisher_dcsi_t0.05": fisher_index(S, n, 0.05),
        "v7_fisher_dcsi_t0.1": fisher_index(S, n, 0.1),
        "v7_fisher_dcsi_t0.2": fisher_index(S, n, 0.2),
        "v7_fisher_dcsi_t1": fisher_index(S, n, 1.0),
        "v8_fisher_dcsi_t0.1_centred_S": fisher_index(Sc, n, 0.1),
        "v9_fisher_dcsi_t0.1_F_over_v2": _fisher_pow(S, n, 2.0),
        "v10_cap_ratio_worst_pair": float(-np.min(ratio[iu])),
        "v11_cap_overlap_worst_pair": float(np.max(cap[iu])),
        "v12_cap_overlap_1_minus_prod": float(np.mean(1.0 - np.prod(1.0 - cap, axis=1))),
        "v13_cap_overlap_mean_pair": float(np.mean(cap[iu])),
        "v14_euclid_gap_worst_pair": float(-np.min(gap[iu])),
        "v15_cap_dcsi_centred_S": compute_index(Sc, n),
    }


def _fisher_pow(S: np.ndarray, n: np.ndarray, p: float) -> float:
    """v9: the Fisher DCSI with F = |mu_a - mu_b|^2 / (v_a + v_b)^p (p = 2), t = 0.1."""
    _, v, d2 = centroid_terms(S, n.astype(np.float64))
    o = np.exp(-d2 / (v[:, None] + v[None, :]) ** p / 0.1)
    np.fill_diagonal(o, 0.0)
    return float(np.mean(1.0 - np.prod(1.0 - o, axis=1)))


def error_key(dataset: str, classes: list[int], args: argparse.Namespace) -> str:
    """Cache key of one task's reference error: everything the classifier depends on."""
    n_train = args.train_per_class if dataset == "fashion-mnist" else "half"
    return (
        f"{dataset}|classes={','.join(map(str, classes))}|train_per_class={n_train}"
        f"|seed={args.seed}|LogisticRegression(C=1.0,lbfgs,max_iter={args.max_iter})"
        "|raw pixels/255"
    )


def load_error_cache(path: Path | None) -> dict[str, float]:
    import json

    if path is None or not path.exists():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8"))["errors"])


def save_error_cache(path: Path, errors: dict[str, float]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "about": "test errors of the dcsi_validity reference classifier, keyed by "
        "task and classifier settings (they do not depend on the features)",
        "errors": dict(sorted(errors.items())),
    }
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def spearman(a, b) -> float | None:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--per-class",
        type=int,
        default=300,
        help="Fashion-MNIST pool images per class for the index (default 300)",
    )
    p.add_argument(
        "--train-per-class",
        type=int,
        default=500,
        help="Fashion-MNIST training images per class for the classifier",
    )
    p.add_argument(
        "--n-random", type=int, default=30, help="random 3-5-class subsets per dataset (default 30)"
    )
    p.add_argument("--n-digit-pairs", type=int, default=6)
    p.add_argument(
        "--holdout",
        type=int,
        default=20,
        help="held-out random 3-8-class subsets per dataset, drawn with another "
        "seed, reported separately (default 20)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="backbone input size (default: dcsi's default, 64 for these)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--cache", default=None, help="feature cache folder (default dcsi's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 60 pool images per class, 4 random subsets"
    )
    p.add_argument("--name", default="dcsi_validity")
    p.add_argument(
        "--error-cache",
        default=str(Path(__file__).resolve().parent / "results" / "dcsi_validity_errors.json"),
        help="JSON cache of the reference-classifier errors, keyed by task and "
        "classifier settings (default benchmarks/results/"
        "dcsi_validity_errors.json; '' disables it)",
    )
    p.add_argument(
        "--errors-from",
        default=None,
        help="reuse the reference-classifier errors of an earlier results JSON "
        "made with the same tasks and classifier settings (the classifier "
        "does not depend on the features)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.per_class, args.train_per_class, args.n_random, args.n_digit_pairs = 60, 200, 4, 2
        args.holdout = 2
        if args.name == "dcsi_validity":
            args.name = "dcsi_validity_quick"  # never overwrite the real figures

    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    tasks = make_tasks(args.n_random, args.n_digit_pairs, args.seed)
    n_main = len(tasks)
    tasks = tasks + make_holdout_tasks(args.holdout, tasks, args.seed)
    data = load_data(args.per_class, args.train_per_class, args.seed)
    with Timer() as t_feat:
        feats = pool_features(
            data, image_size=args.image_size, batch_size=args.batch_size, cache=args.cache
        )
    reuse = None
    if args.errors_from:
        import json

        prev = json.loads(Path(args.errors_from).read_text(encoding="utf-8"))
        same = ("train_per_class", "n_random", "n_digit_pairs", "max_iter", "seed")
        if any(prev["params"].get(k) != getattr(args, k) for k in same) or [
            (r["dataset"], r["classes"]) for r in prev["tasks"]
        ][:n_main] != [(ds, c) for ds, c in tasks[:n_main]]:
            raise SystemExit(
                f"{args.errors_from}: made with other tasks or classifier "
                "settings; cannot reuse its errors"
            )
        reuse = [r["error"] for r in prev["tasks"]]
    cache_path = Path(args.error_cache) if args.error_cache else None
    err_cache = load_error_cache(cache_path)
    n_cached = 0
    rows = []
    t_index = t_csg = t_clf = 0.0
    for i_task, (ds, classes) in enumerate(tasks):
        d, f = data[ds], feats[ds]
        m = np.isin(d["pool_labels"], classes)
        x = f["features"][m]
        y = np.searchsorted(classes, d["pool_labels"][m])
        with Timer() as t:
            S = class_similarity(x, y)
            n = np.bincount(y)
            dcsi_value = compute_index(S, n)
        t_index += t.seconds
        with Timer() as t:
            csg = cumulative_spectral_gradient(x, y, seed=args.seed)
            sil = cosine_silhouette(x, y)
        t_csg += t.seconds
        key = error_key(ds, classes, args)
        with Timer() as t:
            if reuse is not None and i_task < n_main:
                err = reuse[i_task]
            elif key in err_cache:
                err = err_cache[key]
                n_cached += 1
            else:
                err = reference_error(d, classes, max_iter=args.max_iter)
        err_cache[key] = err
        t_clf += t.seconds
        rows.append(
            {
                "split": "main" if i_task < n_main else "holdout",
                "dataset": ds,
                "classes": classes,
                "K": len(classes),
                "error": err,
                "dcsi": dcsi_value,
                "csg": csg,
                "silhouette": sil,
                **variants(S, n, x, y),
            }
        )
    if cache_path is not None:
        save_error_cache(cache_path, err_cache)
    err = [r["error"] for r in rows]
    keys = ["dcsi", "csg", "silhouette"] + [k for k in rows[0] if k.startswith("v")]
    rho = {}
    table = []
    for k in keys:
        rho[k] = {}
        line = [k]
        for split in ("main", "holdout"):
            sub = [r for r in rows if r["split"] == split]
            r_all = spearman([r[k] for r in sub], [r["error"] for r in sub])
            r_ds = {
                ds: spearman(
                    [r[k] for r in sub if r["dataset"] == ds],
                    [r["error"] for r in sub if r["dataset"] == ds],
                )
                for ds in ("fashion-mnist", "digits")
            }
            rho[k][split] = {"all": r_all, **r_ds}
            line += [r_all, r_ds["fashion-mnist"], r_ds["digits"]]
        table.append(line)
    main_rows = rows[:n_main]
    n_fm = sum(r["dataset"] == "fashion-mnist" for r in main_rows)
    print(
        f"\n{n_main} main tasks ({n_fm} Fashion-MNIST, {n_main - n_fm} digits) and "
        f"{len(rows) - n_main} held-out 3-8-class tasks; "
        f"backbone {feats['fashion-mnist']['backbone']} at "
        f"{feats['fashion-mnist']['image_size']} px; reference classifier "
        "LogisticRegression(C=1) on raw pixels.  Spearman rho with the test error "
        "(silhouette: higher = easier, so a negative rho is the good direction):\n"
    )
    print_table(
        table,
        [
            "index",
            "rho main: all",
            "main: Fashion-MNIST",
            "main: digits",
            "held-out: all",
            "held-out: Fashion-MNIST",
            "held-out: digits",
        ],
    )
    print()
    print_table(
        [
            ["feature extraction (pool, once)", t_feat.seconds],
            ["DCSI, all tasks", t_index],
            ["CSG + silhouette, all tasks", t_csg],
            ["reference classifier, all tasks", t_clf],
        ],
        ["step", "seconds"],
    )
    path = write_results(
        args.name,
        {
            "params": {k: v for k, v in vars(args).items()},
            "reference_classifier": "sklearn LogisticRegression(C=1.0, lbfgs, "
            f"max_iter={args.max_iter}) on raw pixels / 255",
            "features": {
                ds: {k: v for k, v in f.items() if k != "features"} for ds, f in feats.items()
            },
            "spearman_rho": rho,
            "seconds": {
                "features": t_feat.seconds,
                "dcsi": t_index,
                "csg_silhouette": t_csg,
                "classifier": t_clf,
            },
            "classifier_errors_from_cache": n_cached,
            "tasks": rows,
        },
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
