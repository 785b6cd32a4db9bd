"""Does the DCSI track how hard a task is, on image pools it was not chosen on?

Reads the task records written by ``benchmarks/validity_pools.py`` (class pairs and
random 3-8-class subsets of several labelled image pools; for each task the cnn_cosine
class matrix ``S`` of the index features, the same matrix on raw pixels, the peers'
values and the test error of three reference classifiers) and answers three questions:

1. **Leave-one-pool-out.**  Every choice the index involves -- which definition, its
   temperature, how pairs are aggregated, whether pixel-space similarity feeds it -- is
   made with one pool hidden (the candidate with the highest Spearman rho against the
   selection reference over the other pools' tasks together) and scored on the hidden
   pool.  Reported per pool and over all held-out tasks, for the DCSI and for every
   baseline (CSG, cosine silhouettes on features and on pixels, the 1-NN error on
   features, the mean off-diagonal similarity, the previous DCSI), against each
   reference, with bootstrap intervals (tasks resampled within pools).
2. **Do the references agree?**  Spearman rho between the three reference errors.
3. **Are the ends calibrated?**  The shipped definition on tasks whose labels are
   shuffled (classes drawn from one distribution: should be near 1) and on planted
   separations (two classes from different pools: should be near 0).

    python benchmarks/validity_pools.py            # the tasks (references cached)
    python benchmarks/dcsi_validity.py             # this analysis, seconds

Writes ``benchmarks/results/dcsi_validity.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, print_table, spearman, write_results

from dcsi.index import centroid_terms, compute_index, pair_terms

REFERENCES = ("cnn", "probe_lite2", "pixels_lr")
# baselines: name -> (task key, sign so that higher = harder)
BASELINES: dict[str, tuple[str, float]] = {
    "CSG": ("csg", 1.0),
    "silhouette, features (-)": ("silhouette_features", -1.0),
    "silhouette, pixels (-)": ("silhouette_pixels", -1.0),
    "1-NN error, features": ("nn1_error_features", 1.0),
    "mean off-diagonal S": ("mean_offdiag", 1.0),
}
PREVIOUS = "previous DCSI (cap overlap / pi)"


# --------------------------------------------------------------------------- candidates


def previous_dcsi(S: np.ndarray, counts: np.ndarray) -> float:
    """Definition 1 of the DCSI (schemas 1.0-1.3): mean over classes of the largest cap
    overlap ``clip((theta_a + theta_b - phi_ab) / pi, 0, 1)``, with ``theta_c = arccos
    |mu_c|`` and ``phi_ab`` the angle between the class mean directions (a class
    without a mean direction overlaps every class)."""
    sq, _, _ = centroid_terms(S, counts)
    r = np.sqrt(sq)
    radius = np.arccos(np.clip(r, 0.0, 1.0))
    rr = np.outer(r, r)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos_phi = np.where(rr > 0, S / rr, 0.0)
    angle = np.arccos(np.clip(cos_phi, -1.0, 1.0))
    o = np.clip((radius[:, None] + radius[None, :] - angle) / np.pi, 0.0, 1.0)
    o = np.where(rr > 0, o, 1.0)
    return aggregate(o, "nearest")


def centre_terms(S: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the ratio shapes: ``q`` (K,) = S_cc (unbiased |m_c|^2; 1 for a class of one
    image, as in ``dcsi.index.pair_terms``), the spread ``v`` (K,) = 1 - q and ``D``
    (K, K) = max(q_a + q_b - 2 S_ab, 0)."""
    q = np.clip(np.where(np.asarray(counts) >= 2, np.diag(S), 1.0), 0.0, 1.0)
    v = 1.0 - q
    D = np.maximum(q[:, None] + q[None, :] - 2.0 * S, 0.0)
    np.fill_diagonal(D, 0.0)
    return q, v, D


def overlap_fisher(S: np.ndarray, counts: np.ndarray, t: float) -> np.ndarray:
    """exp(-F_ab / t) with the Fisher ratios of ``dcsi.index.pair_terms``: 1 for one
    distribution, -> 0 apart (t = ``dcsi.index.TEMPERATURE`` is the shipped overlap)."""
    _, fisher, _ = pair_terms(S, counts)
    return np.exp(-fisher / t)


def overlap_cap_ratio(S: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """clip(1 - phi_ab / (theta_a + theta_b), 0, 1) on the unbiased cap geometry."""
    q, _, _ = centre_terms(S, counts)
    r = np.sqrt(q)
    theta = np.arccos(r)
    rr = np.outer(r, r)
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.arccos(np.clip(np.where(rr > 0, S / rr, 1.0), -1.0, 1.0))
        tt = theta[:, None] + theta[None, :]
        o = np.where(tt > 0, 1.0 - phi / tt, (phi == 0).astype(float))
    return np.clip(o, 0.0, 1.0)


def overlap_euclid_ratio(S: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """clip(1 - |m_a - m_b| / (sqrt(v_a) + sqrt(v_b)), 0, 1)."""
    _, v, D = centre_terms(S, counts)
    rs = np.sqrt(v)[:, None] + np.sqrt(v)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        o = np.where(rs > 0, 1.0 - np.sqrt(D) / rs, (D == 0).astype(float))
    return np.clip(o, 0.0, 1.0)


def aggregate(o: np.ndarray, how: str) -> float:
    """nearest: mean over classes of the overlap with the nearest class; worst: the
    largest pair overlap; mean: mean over pairs."""
    k = o.shape[0]
    off = ~np.eye(k, dtype=bool)
    if how == "nearest":
        return float(np.mean(np.max(np.where(off, o, -np.inf), axis=1)))
    if how == "worst":
        return float(np.max(o[off]))
    return float(np.mean(o[np.triu_indices(k, 1)]))


def candidates() -> dict[str, Callable[[dict], float]]:
    """Every definition scored, as functions of a task record (``S``, ``S_pixels``).

    All are 1 for classes drawn from one distribution.  Only the ``exp(-F/t)`` family
    is *eligible* for the choice (:func:`eligible`): the two ratio shapes stay well
    above 0 for classes that no classifier confuses (0.1-0.4 for a Fashion-MNIST class
    against a digit class), so their lower end cannot be read.
    """
    Overlap = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (S, counts) -> (K, K)
    shapes: dict[str, Overlap] = {
        "cap ratio": overlap_cap_ratio,
        "euclid ratio": overlap_euclid_ratio,
    }
    for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5):
        shapes[f"exp(-F/{t})"] = lambda S, n, t=t: overlap_fisher(S, n, t)
    # which class matrix feeds the overlap: the CNN one, the pixel one or their mean
    feeds: dict[str, Callable[[Overlap, dict], np.ndarray]] = {
        "cnn": lambda fn, r: fn(np.asarray(r["S"]), np.asarray(r["counts"])),
        "pixels": lambda fn, r: fn(np.asarray(r["S_pixels"]), np.asarray(r["counts"])),
    }
    feeds["cnn+pixels"] = lambda fn, r: 0.5 * (feeds["cnn"](fn, r) + feeds["pixels"](fn, r))
    return {
        f"{name}, {how}, {feed}": lambda r, fn=fn, how=how, fd=fd: aggregate(fd(fn, r), how)
        for name, fn in shapes.items()
        for how in ("nearest", "worst", "mean")
        for feed, fd in feeds.items()
    }


def eligible(name: str) -> bool:
    """Whether a candidate may be chosen: calibrated at both ends and computable by
    ``dcsi.compute_index`` from the card's cnn_cosine matrix alone (the pixel-fed
    variants are measured, not eligible: the card's pixel-space class matrices are the
    wavelet and SSIM ones, not this pixel cosine)."""
    return name.startswith("exp(-F/") and name.endswith(", cnn")


def temperature(name: str) -> float:
    return float(name.split("/")[1].split(")")[0])


def chance_error(t: dict) -> float:
    """A task's chance error ``1 - 1/K`` (errors are divided by it to compare K)."""
    k = len(t["counts"])
    return 1.0 - 1.0 / k


# --------------------------------------------------------------------------- statistics


def bootstrap(
    values: dict[str, np.ndarray], err: np.ndarray, pools: np.ndarray, n: int, seed: int
) -> dict[str, np.ndarray]:
    """Spearman rho of each series with ``err`` on ``n`` resamples of the tasks, drawn
    with replacement within each pool (the pools' sizes are kept)."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(pools == p) for p in np.unique(pools)]
    out: dict[str, list[float]] = {k: [] for k in values}
    for _ in range(n):
        idx = np.concatenate([rng.choice(g, len(g), replace=True) for g in groups])
        re = rankdata(err[idx])
        for k, v in values.items():
            rv = rankdata(v[idx])
            out[k].append(float(np.corrcoef(rv, re)[0, 1]))
    return {k: np.asarray(v) for k, v in out.items()}


def interval(x: np.ndarray) -> list[float]:
    return [float(np.nanpercentile(x, 2.5)), float(np.nanpercentile(x, 97.5))]


# --------------------------------------------------------------------------- analysis


def choose(
    values: dict[str, np.ndarray], err: np.ndarray, rel_err: np.ndarray, rows: np.ndarray
) -> str:
    """The eligible candidate with the best Spearman rho with ``err`` on ``rows``; ties
    (the temperature does not change the ranks of the worst-pair aggregation) go to
    the one whose values are closest to the error relative to chance (mean squared)."""

    def key(k: str) -> tuple[float, float]:
        rho = spearman(values[k][rows], err[rows])
        mse = float(np.mean((values[k][rows] - rel_err[rows]) ** 2))
        return (round(rho, 6) if rho is not None else -2.0, -mse)

    return max((k for k in values if eligible(k)), key=key)


def leave_one_pool_out(
    tasks: list[dict], values: dict[str, np.ndarray], select_by: str
) -> tuple[dict[str, str], np.ndarray]:
    """For each pool: the candidate :func:`choose` picks on the other pools' tasks; the
    held-out values are that candidate's values on the hidden pool."""
    pools = np.array([str(t["pool"]) for t in tasks])
    err = np.array([t["errors"][select_by] for t in tasks])
    rel = err / np.array([chance_error(t) for t in tasks])
    chosen: dict[str, str] = {}
    held = np.full(len(tasks), np.nan)
    for pool in sorted(set(pools.tolist())):
        seen = pools != pool
        chosen[pool] = choose(values, err, rel, seen)
        held[~seen] = values[chosen[pool]][~seen]
    return chosen, held


def ends(
    features_dir: Path | None, definition: Callable[[np.ndarray, np.ndarray], float], seed: int
):
    """The shipped definition on shuffled labels (-> 1) and planted separations (-> 0)."""
    from dcsi.similarity.class_cosine import class_similarity

    if features_dir is None:
        return None
    files = sorted(features_dir.glob("validity_*_features.npz"))
    if not files:
        return None
    rng = np.random.default_rng(seed)
    pools = {}
    for f in files:
        with np.load(f) as z:
            pools[f.stem.removeprefix("validity_").removesuffix("_features")] = (
                np.asarray(z["features"], np.float64),
                np.asarray(z["labels"]),
            )
    rows = []
    for name, (x, y) in pools.items():
        classes = np.unique(y)
        for _ in range(5):
            k = int(rng.integers(2, min(8, len(classes)) + 1))
            cl = rng.choice(classes, k, replace=False)
            m = np.isin(y, cl)
            ys = rng.permutation(np.searchsorted(np.sort(cl), y[m]))
            S = class_similarity(x[m], ys)
            counts = np.bincount(ys, minlength=k)
            rows.append(
                {"kind": "shuffled labels", "pool": name, "k": k, "value": definition(S, counts)}
            )
    names = sorted(pools)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            xa, ya = pools[a]
            xb, yb = pools[b]
            ca, cb = rng.choice(np.unique(ya)), rng.choice(np.unique(yb))
            x = np.concatenate([xa[ya == ca], xb[yb == cb]])
            y = np.repeat([0, 1], [int((ya == ca).sum()), int((yb == cb).sum())])
            S = class_similarity(x, y)
            rows.append(
                {
                    "kind": "planted: classes from two pools",
                    "pool": f"{a}/{b}",
                    "k": 2,
                    "value": definition(S, np.bincount(y)),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=Path, default=RESULTS_DIR / "dcsi_validity_tasks.json")
    p.add_argument("--select-by", choices=REFERENCES, default="cnn")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--features", type=Path, default=None, help="validity_pools.py --cache folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="dcsi_validity")
    args = p.parse_args(argv)
    if not args.tasks.exists():
        p.error(f"{args.tasks} not found: run python benchmarks/validity_pools.py first")
    doc = json.loads(args.tasks.read_text(encoding="utf-8"))
    tasks = [t for t in doc["tasks"] if all(t["errors"].get(r) is not None for r in REFERENCES)]
    pools = np.array([str(t["pool"]) for t in tasks])
    cands = candidates()
    values = {k: np.array([fn(t) for t in tasks]) for k, fn in cands.items()}
    base = {
        name: np.array([sign * t["baselines"][key] for t in tasks])
        for name, (key, sign) in BASELINES.items()
    }
    base[PREVIOUS] = np.array(
        [previous_dcsi(np.asarray(t["S"]), np.asarray(t["counts"])) for t in tasks]
    )
    chosen, held = leave_one_pool_out(tasks, values, args.select_by)
    err = {r: np.array([t["errors"][r] for t in tasks]) for r in REFERENCES}
    # the definition chosen with every pool seen (what ships)
    all_scores = {k: spearman(v, err[args.select_by]) for k, v in values.items()}
    rel = err[args.select_by] / np.array([chance_error(t) for t in tasks])
    final = choose(values, err[args.select_by], rel, np.ones(len(tasks), dtype=bool))
    shipped = np.array([compute_index(np.asarray(t["S"]), np.asarray(t["counts"])) for t in tasks])
    if not np.allclose(shipped, values[final], atol=1e-12):
        print(f"note: dcsi.compute_index is not the candidate chosen here ({final})")
    series = {"DCSI (held out: chosen without its pool)": held, "DCSI (shipped)": shipped, **base}
    table, rows = [], {}
    pool_names = sorted({str(p) for p in pools})
    for ref in REFERENCES:
        for name, v in series.items():
            per = {pl: spearman(v[pools == pl], err[ref][pools == pl]) for pl in pool_names}
            mean_pp = float(np.mean([x for x in per.values() if x is not None]))
            rows.setdefault(ref, {})[name] = {
                "overall": spearman(v, err[ref]),
                "mean_per_pool": mean_pp,
                "per_pool": per,
            }
            table.append([ref, name, rows[ref][name]["overall"], mean_pp, *per.values()])
    print_table(table, ["reference", "index", "all tasks", "mean of pools", *pool_names])
    boots = {
        ref: bootstrap(series, err[ref], pools, args.bootstrap, args.seed) for ref in REFERENCES
    }
    intervals = {
        ref: {
            **{k: interval(v) for k, v in b.items()},
            **{
                f"held-out DCSI - {k}": interval(
                    b["DCSI (held out: chosen without its pool)"] - b[k]
                )
                for k in base
            },
        }
        for ref, b in boots.items()
    }
    agree = {
        f"{a} vs {b}": {
            "overall": spearman(err[a], err[b]),
            "per_pool": {
                pl: spearman(err[a][pools == pl], err[b][pools == pl]) for pl in pool_names
            },
        }
        for i, a in enumerate(REFERENCES)
        for b in REFERENCES[i + 1 :]
    }
    print_table(
        [[k, v["overall"], *v["per_pool"].values()] for k, v in agree.items()],
        ["references", "overall", *pool_names],
    )
    print("chosen per hidden pool:", chosen)
    print("chosen with all pools seen:", final, all_scores[final])
    end_rows = ends(args.features, compute_index, args.seed)
    if end_rows:
        print_table(
            [[r["kind"], r["pool"], r["k"], r["value"]] for r in end_rows],
            ["check", "pool", "K", "DCSI"],
        )
    write_results(
        args.name,
        {
            "settings": vars(args) | {"tasks": str(args.tasks), "features": str(args.features)},
            "n_tasks": len(tasks),
            "tasks_per_pool": {pl: int((pools == pl).sum()) for pl in pool_names},
            "chosen_per_hidden_pool": chosen,
            "chosen_all_pools": final,
            "candidate_scores_all_pools": all_scores,
            "spearman": rows,
            "bootstrap_95": intervals,
            "reference_agreement": agree,
            "ends": end_rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
