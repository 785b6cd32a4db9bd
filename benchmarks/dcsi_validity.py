"""Does the DCSI track how hard a task is, on image pools it was not chosen on?

Reads the task records written by ``benchmarks/validity_pools.py`` (class pairs and
random 3-8-class subsets of several labelled image pools; for each task the class
matrices ``S`` of the index features, ``S_wavelet`` of the grey images (the card's two
views), ``S_pixels`` of 32x32 RGB pixels, the peers' values and the test error of three
reference classifiers) and answers four questions:

1. **Leave-one-pool-out.**  Every choice the index involves -- its shape (the total
   spread with a temperature, or the directional spread of definition 4), how pairs
   are aggregated, which views feed it and how they combine -- is made with one pool
   hidden (the candidate with the best :func:`selection_score` against the selection
   reference on the other pools' tasks -- the mean of Spearman's rho over those tasks
   together and of the per-pool rhos -- among those eligible and calibrated at both
   ends on the checks that do not involve the hidden pool) and scored on the hidden
   pool.  Reported per pool and over all held-out tasks, for the DCSI and for every
   baseline (CSG, cosine silhouettes on features and on pixels, the 1-NN error on
   features, the mean off-diagonal similarity, definitions 1, 2 and 3 of the DCSI),
   against each reference, with bootstrap intervals (tasks resampled within pools);
   and the same choice among *every* candidate measured, eligible or not, without the
   check of the ends, and by the rule of definition 3 (rho over the tasks together).
   The directional spreads are computed here from the pools' cached features and grey
   images (``--features``), with the task's classes and train half.
2. **Do the references agree?**  Spearman rho between the three reference errors.
3. **Are the ends calibrated?**  Every candidate on tasks whose labels are shuffled
   (classes drawn from one distribution: should be near 1) and on planted separations
   (one class from each of two pools: near 0 where a 1-NN tells them apart).
4. **Fresh tasks** (``--fresh``): the shipped definition and the baselines on tasks
   drawn with another seed, none of which the choice saw; all files together (each
   task once) and each file on its own, less the tasks of the files before it.

    python benchmarks/validity_pools.py            # the tasks (references cached)
    python benchmarks/validity_pools.py --task-seed 1 --out dcsi_validity_tasks_seed1
    python benchmarks/validity_pools.py --task-seed 2 --out dcsi_validity_tasks_seed2
    python benchmarks/validity_pools.py --task-seed 3 --out dcsi_validity_tasks_seed3
    python benchmarks/dcsi_validity.py --features ~/.cache/dcsi/validity --fresh \
        benchmarks/results/dcsi_validity_tasks_seed1.json \
        benchmarks/results/dcsi_validity_tasks_seed2.json \
        benchmarks/results/dcsi_validity_tasks_seed3.json   # this analysis, ~1 min

Writes ``benchmarks/results/dcsi_validity.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, print_table, spearman, write_results

from dcsi.index import centroid_terms, compute_index, pair_terms, unbiased_terms
from dcsi.similarity.spreads import class_spreads
from dcsi.similarity.wavelet import class_wavelet_similarity

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
DEFINITION_2 = "DCSI definition 2 (hardest pair, cnn)"
#: the candidate that is definition 2
DEFINITION_2_CANDIDATE = "exp(-F/0.05), worst, cnn"
DEFINITION_3 = "DCSI definition 3 (1.5.0: total spreads, exp(-F/0.05))"
#: the candidate that is definition 3
DEFINITION_3_CANDIDATE = "exp(-F/0.05), union, min(cnn, wavelet)"
#: the overlap shape of definition 4 (directional spreads)
DIRECTIONAL = "erfc(sqrt(F_dir)/2)"
HELD = "DCSI (held out: chosen without its pool)"
HELD_ANY = "DCSI (held out, any candidate: eligibility ignored)"
HELD_NO_ENDS = "DCSI (held out, eligible, ends not checked)"
HELD_POOLED = "DCSI (held out, chosen by rho over the seen tasks together, the 1.5.0 rule)"


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


def overlap_fisher(S: np.ndarray, counts: np.ndarray, t: float) -> np.ndarray:
    """exp(-F_ab / t) with the Fisher ratios of ``dcsi.index.pair_terms``: 1 for one
    distribution, -> 0 apart (t = ``dcsi.index.TEMPERATURE`` is the shipped overlap)."""
    _, fisher, _ = pair_terms(S, counts)
    return np.exp(-fisher / t)


def overlap_cap_ratio(S: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """clip(1 - phi_ab / (theta_a + theta_b), 0, 1) on the unbiased cap geometry."""
    q, _, _ = unbiased_terms(S, counts)
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
    _, v, D = unbiased_terms(S, counts)
    rs = np.sqrt(v)[:, None] + np.sqrt(v)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        o = np.where(rs > 0, 1.0 - np.sqrt(D) / rs, (D == 0).astype(float))
    return np.clip(o, 0.0, 1.0)


def aggregate(o: np.ndarray, how: str) -> float:
    """nearest: mean over classes of the overlap with the nearest class; worst: the
    largest pair overlap; mean: mean over pairs; union: mean over classes of
    ``1 - prod_{b != a} (1 - o_ab)`` (the chance that a class overlaps some other)."""
    k = o.shape[0]
    off = ~np.eye(k, dtype=bool)
    if how == "nearest":
        return float(np.mean(np.max(np.where(off, o, -np.inf), axis=1)))
    if how == "worst":
        return float(np.max(o[off]))
    if how == "union":
        return float(np.mean(1.0 - np.prod(np.where(off, 1.0 - o, 1.0), axis=1)))
    return float(np.mean(o[np.triu_indices(k, 1)]))


AGGREGATIONS = ("nearest", "worst", "mean", "union")
#: the class matrices that may feed an eligible candidate (see :func:`eligible`)
ELIGIBLE_FEEDS = ("cnn", "wavelet", "min(cnn, wavelet)")


def candidates() -> dict[str, Callable[[dict], float]]:
    """Every definition scored, as functions of a task record (``S``, ``S_pixels``,
    ``S_wavelet``).

    All are 1 for classes drawn from one distribution.  Only some are *eligible* for
    the choice (:func:`eligible`); the others are measured so that the README can say
    what the choice among all of them would have given.
    """
    # (S, counts, directional spreads or None) -> (K, K)
    Overlap = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
    shapes: dict[str, Overlap] = {
        "cap ratio": lambda S, n, V: overlap_cap_ratio(S, n),
        "euclid ratio": lambda S, n, V: overlap_euclid_ratio(S, n),
    }
    for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5):
        shapes[f"exp(-F/{t})"] = lambda S, n, V, t=t: overlap_fisher(S, n, t)
    # definition 4: Fisher's criterion along the centres' line, erfc(sqrt(F) / 2)
    shapes[DIRECTIONAL] = lambda S, n, V: pair_terms(S, n, V)[2]

    def view(key: str, spreads: str | None) -> Callable[[Overlap, dict], np.ndarray]:
        def fn(shape: Overlap, r: dict) -> np.ndarray:
            v = None if spreads is None else np.asarray(r[spreads])
            return shape(np.asarray(r[key]), np.asarray(r["counts"]), v)

        return fn

    # which class matrices feed the overlap, and how two views combine
    cnn, pixels = view("S", "spreads"), view("S_pixels", None)
    wavelet = view("S_wavelet", "spreads_wavelet")
    feeds: dict[str, Callable[[Overlap, dict], np.ndarray]] = {
        "cnn": cnn,
        "pixels": pixels,
        "wavelet": wavelet,
        "cnn+pixels": lambda fn, r: 0.5 * (cnn(fn, r) + pixels(fn, r)),
        "mean(cnn, wavelet)": lambda fn, r: 0.5 * (cnn(fn, r) + wavelet(fn, r)),
        "min(cnn, wavelet)": lambda fn, r: np.minimum(cnn(fn, r), wavelet(fn, r)),
    }
    return {
        f"{name}, {how}, {feed}": lambda r, fn=fn, how=how, fd=fd: aggregate(fd(fn, r), how)
        for name, fn in shapes.items()
        for how in AGGREGATIONS
        for feed, fd in feeds.items()
        # the pixel matrix has no directional spreads
        if not (name == DIRECTIONAL and "pixels" in feed)
    }


def eligible(name: str) -> bool:
    """Whether a candidate may be chosen: calibrated at both ends and computable by
    ``dcsi.compute_index`` from the card's matrices.

    The ratio shapes stay well above 0 for classes that no classifier confuses (0.1-0.4
    for a Fashion-MNIST class against a digit class), so their lower end cannot be
    read.  A *mean* of two views' overlaps reads a pair that one view separates as
    half-overlapping; the smaller of the two (a pair is as separable as its best view
    makes it) and each view alone keep both ends.  ``S_pixels`` (32x32 RGB cosine) is
    not a card matrix; the card's pixel view is the wavelet one (Haar level 1 of the
    grey images at the working size, an orthogonal transform: the same cosines as the
    grey pixels).
    """
    shape, _, feed = name.split(", ", 2)
    return (shape.startswith("exp(-F/") or shape == DIRECTIONAL) and feed in ELIGIBLE_FEEDS


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


def selection_score(v: np.ndarray, err: np.ndarray, pools: np.ndarray) -> float | None:
    """What the choice maximises: the mean of Spearman's rho over all the tasks given
    (is the index comparable across datasets?) and the mean of the per-pool rhos
    (does it rank the tasks of one dataset?)."""
    pooled = spearman(v, err)
    per = [spearman(v[pools == p], err[pools == p]) for p in np.unique(pools)]
    per_ok = [x for x in per if x is not None]
    if pooled is None or not per_ok:
        return None
    return 0.5 * (pooled + float(np.mean(per_ok)))


def choose(
    values: dict[str, np.ndarray],
    err: np.ndarray,
    rel_err: np.ndarray,
    rows: np.ndarray,
    pools: np.ndarray,
    allowed: Callable[[str], bool] = eligible,
    score: Callable[[np.ndarray, np.ndarray, np.ndarray], float | None] = selection_score,
) -> str:
    """The ``allowed`` candidate with the best ``score`` (:func:`selection_score`) on
    ``rows``;
    ties (the temperature does not change the ranks of the worst-pair aggregation) go
    to the one whose values are closest to the error relative to chance (mean
    squared)."""

    def key(k: str) -> tuple[float, float]:
        value = score(values[k][rows], err[rows], pools[rows])
        mse = float(np.mean((values[k][rows] - rel_err[rows]) ** 2))
        return (round(value, 6) if value is not None else -2.0, -mse)

    return max((k for k in values if allowed(k)), key=key)


def leave_one_pool_out(
    tasks: list[dict],
    values: dict[str, np.ndarray],
    select_by: str,
    allowed: Callable[[str, str | None], bool],
    score: Callable[[np.ndarray, np.ndarray, np.ndarray], float | None] = selection_score,
) -> tuple[dict[str, str], np.ndarray]:
    """For each pool: the candidate :func:`choose` picks among the ones
    ``allowed(name, hidden pool)`` on the other pools' tasks; the held-out values are
    its values on the hidden pool."""
    pools = np.array([str(t["pool"]) for t in tasks])
    err = np.array([t["errors"][select_by] for t in tasks])
    rel = err / np.array([chance_error(t) for t in tasks])
    chosen: dict[str, str] = {}
    held = np.full(len(tasks), np.nan)
    for pool in sorted(set(pools.tolist())):
        seen = pools != pool
        chosen[pool] = choose(values, err, rel, seen, pools, lambda k, p=pool: allowed(k, p), score)
        held[~seen] = values[chosen[pool]][~seen]
    return chosen, held


#: the ends a candidate must keep to be chosen (:func:`calibrated`)
SHUFFLED_AT_LEAST = 0.9
PLANTED_AT_MOST = 0.1
PLANTED_SEPARABLE = 0.05  # a planted pair counts as well separated below this 1-NN error


def calibrated(fn: Callable[[dict], float], rows: list[dict], hidden: str | None) -> bool:
    """Whether a candidate keeps both ends on the ``ends`` records that do not involve
    the ``hidden`` pool: >= SHUFFLED_AT_LEAST on every shuffled-label task and
    <= PLANTED_AT_MOST on every planted pair whose 1-NN error is below
    PLANTED_SEPARABLE."""
    for r in rows:
        if hidden is not None and hidden in r["pool"].split("/"):
            continue
        v = fn(r["record"])
        if r["kind"] == "shuffled labels" and v < SHUFFLED_AT_LEAST:
            return False
        separable = r["kind"].startswith("planted") and r["nn1_error_loo"] < PLANTED_SEPARABLE
        if separable and v > PLANTED_AT_MOST:
            return False
    return True


def load_views(
    features_dir: Path,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per pool: unit index features (n, d), grey images at the working size (n, h, w),
    labels (n,) and the train mask (n,), from the ``validity_pools.py`` cache."""
    pools = {}
    for f in sorted(features_dir.glob("validity_*_features.npz")):
        name = f.stem.removeprefix("validity_").removesuffix("_features")
        greys = sorted(features_dir.glob(f"validity_{name}_grey*_cap*.npz"))
        if not greys:
            continue
        with np.load(f) as z, np.load(greys[-1]) as g:
            if not np.array_equal(z["ids"], g["ids"]):
                continue
            pools[name] = (
                np.asarray(z["features"], np.float64),
                np.asarray(g["thumbs"]),
                np.asarray(z["labels"]),
                np.asarray(z["is_train"], bool),
            )
    return pools


def view_record(x: np.ndarray, grey: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """What the candidates are computed from, for features ``x``, grey images ``grey``
    and labels ``y`` (0..k-1): ``S``, ``S_wavelet``, both views' directional spreads
    and the counts."""
    from dcsi.similarity.class_cosine import class_similarity

    k = int(y.max()) + 1
    w = class_wavelet_similarity(grey, y, n_classes=k)
    return {
        "S": class_similarity(x, y, n_classes=k),
        "S_wavelet": w.matrix,
        "spreads": class_spreads(x, y, n_classes=k),
        "spreads_wavelet": w.spreads,
        "counts": np.bincount(y, minlength=k),
    }


def add_spreads(tasks: list[dict], views: dict[str, tuple]) -> None:
    """Both views' directional spreads of each task record, computed with this dcsi
    from the pools' cached features and grey images (the records hold the class
    matrices only): the task's classes, train half, as ``validity_pools.py`` computed
    ``S``; the recomputed class matrices must equal the record's (a check that the rows
    match)."""
    for t in tasks:
        if t["pool"] not in views:
            raise SystemExit(f"no cached features of pool {t['pool']!r}: pass --features")
        x, grey, labels, train = views[t["pool"]]
        classes = np.asarray(t["class_ids"])
        rows = np.isin(labels, classes) & train
        rec = view_record(x[rows], grey[rows], np.searchsorted(classes, labels[rows]))
        for key in ("S", "S_wavelet"):
            if not np.allclose(rec[key], np.asarray(t[key], float), atol=1e-6):
                raise SystemExit(f"{t['pool']} {t['classes']}: the cached rows give another {key}")
        t["spreads"], t["spreads_wavelet"] = rec["spreads"], rec["spreads_wavelet"]


def index_of(x: np.ndarray, grey: np.ndarray, y: np.ndarray) -> tuple[float, float, dict]:
    """The shipped DCSI of features ``x`` and grey images ``grey`` under labels ``y``
    (0..k-1), with both views and with the CNN view alone, and the record the
    candidates are computed from."""
    record = view_record(x, grey, y)
    return shipped_index(record), shipped_index(record, views=1), record


def loo_nn1_error(x: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out cosine 1-NN error of unit features ``x`` (n, d) under labels ``y``:
    how separable a planted pair actually is."""
    from dcsi.neighbors import exact_topk

    nearest, _ = exact_topk(x, k=1, desc="1-NN of a planted pair")
    return float(np.mean(y[nearest[:, 0]] != y))


def ends(features_dir: Path | None, seed: int) -> list[dict[str, Any]] | None:
    """The shipped definition on shuffled labels (-> 1) and planted separations (-> 0).

    Shuffled: 5 random class subsets per pool, labels permuted.  Planted: one class of
    each of two pools; their grey images are brought to 32 x 32 (bilinear) so that the
    wavelet view compares images of one size; the leave-one-out 1-NN error of the
    features says how separable each planted pair actually is.
    """
    from PIL import Image

    if features_dir is None:
        return None
    pools = load_views(features_dir)
    if not pools:
        return None
    rng = np.random.default_rng(seed)
    rows = []
    for name, (x, grey, y, _) in pools.items():
        classes = np.unique(y)
        for _ in range(5):
            k = int(rng.integers(2, min(8, len(classes)) + 1))
            cl = rng.choice(classes, k, replace=False)
            m = np.isin(y, cl)
            ys = rng.permutation(np.searchsorted(np.sort(cl), y[m]))
            both, cnn, rec = index_of(x[m], grey[m], ys)
            rows.append(
                {
                    "kind": "shuffled labels",
                    "pool": name,
                    "k": k,
                    "value": both,
                    "cnn_only": cnn,
                    "record": rec,
                }
            )

    def at32(g: np.ndarray) -> np.ndarray:
        return np.stack(
            [np.asarray(Image.fromarray(i).resize((32, 32), Image.BILINEAR)) for i in g]
        )

    names = sorted(pools)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            xa, ga, ya, _ = pools[a]
            xb, gb, yb, _ = pools[b]
            ca, cb = rng.choice(np.unique(ya)), rng.choice(np.unique(yb))
            x = np.concatenate([xa[ya == ca], xb[yb == cb]])
            g = np.concatenate([at32(ga[ya == ca]), at32(gb[yb == cb])])
            y = np.repeat([0, 1], [int((ya == ca).sum()), int((yb == cb).sum())])
            both, cnn, rec = index_of(x, g, y)
            rows.append(
                {
                    "kind": "planted: classes from two pools",
                    "pool": f"{a}/{b}",
                    "k": 2,
                    "value": both,
                    "cnn_only": cnn,
                    "nn1_error_loo": loo_nn1_error(x, y),
                    "record": rec,
                }
            )
    return rows


def shipped_index(t: dict, views: int = 2) -> float:
    """``dcsi.compute_index`` of a task record with the directional spreads: both views
    (what ``dcsi analyze`` puts on the card), or the CNN view alone (``views=1``, what
    ``dcsi analyze --analyzers cnn`` does)."""
    both = views == 2
    return compute_index(
        np.asarray(t["S"]),
        np.asarray(t["counts"]),
        wavelet=np.asarray(t["S_wavelet"]) if both else None,
        spreads=np.asarray(t["spreads"]),
        wavelet_spreads=np.asarray(t["spreads_wavelet"]) if both else None,
    )


def fresh_check(
    paths: list[Path],
    seen: list[dict],
    base_keys: dict[str, tuple[str, float]],
    views: dict[str, tuple],
) -> dict:
    """The shipped DCSI and the baselines on tasks drawn with other seeds
    (``validity_pools.py --task-seed 1``, ``2``, ...), each task once, those already in
    ``seen`` left out: Spearman rho with each reference, over all of them and per
    pool."""
    old = {(t["pool"], tuple(t["class_ids"])) for t in seen}
    tasks = []
    for path in paths:
        for t in json.loads(path.read_text(encoding="utf-8"))["tasks"]:
            key = (t["pool"], tuple(t["class_ids"]))
            if key not in old and all(t["errors"].get(r) is not None for r in REFERENCES):
                old.add(key)
                tasks.append(t)
    add_spreads(tasks, views)
    pools = np.array([str(t["pool"]) for t in tasks])
    cands = candidates()
    series = {
        "DCSI (shipped)": np.array([shipped_index(t) for t in tasks]),
        "DCSI (shipped, cnn view only)": np.array([shipped_index(t, views=1) for t in tasks]),
        DEFINITION_3: np.array([cands[DEFINITION_3_CANDIDATE](t) for t in tasks]),
        DEFINITION_2: np.array([cands[DEFINITION_2_CANDIDATE](t) for t in tasks]),
        **{
            name: np.array([sign * t["baselines"][key] for t in tasks])
            for name, (key, sign) in base_keys.items()
        },
    }
    out: dict[str, Any] = {
        "tasks": [str(p) for p in paths],
        "n_tasks": len(tasks),
        "tasks_per_pool": {pl: int((pools == pl).sum()) for pl in sorted(set(pools.tolist()))},
        "spearman": {},
    }
    table = []
    for ref in REFERENCES:
        err = np.array([t["errors"][ref] for t in tasks])
        for name, v in series.items():
            per = {
                pl: spearman(v[pools == pl], err[pools == pl])
                for pl in out["tasks_per_pool"]
                if (pools == pl).sum() >= 5
            }
            out["spearman"].setdefault(ref, {})[name] = {
                "overall": spearman(v, err),
                "per_pool": per,
            }
            table.append([ref, name, spearman(v, err), *per.values()])
    # the shipped DCSI minus each baseline, 95 % bootstrap interval (tasks resampled
    # within each pool, as for the held-out figures)
    out["dcsi_minus_baseline_95"] = {}
    for ref in REFERENCES:
        err = np.array([t["errors"][ref] for t in tasks])
        boot = bootstrap(series, err, pools, 1000, 0)
        out["dcsi_minus_baseline_95"][ref] = {
            name: interval(boot["DCSI (shipped)"] - boot[name])
            for name in series
            if name != "DCSI (shipped)"
        }
    print(f"fresh tasks ({len(tasks)}, none of them seen by the choice):")
    print_table(table, ["reference", "index", "all fresh tasks", *list(out["tasks_per_pool"])])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=Path, default=RESULTS_DIR / "dcsi_validity_tasks.json")
    p.add_argument("--select-by", choices=REFERENCES, default="cnn")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument(
        "--features",
        type=Path,
        default=Path.home() / ".cache" / "dcsi" / "validity",
        help="validity_pools.py --cache folder (features and grey images of the pools)",
    )
    p.add_argument(
        "--fresh",
        type=Path,
        nargs="+",
        default=None,
        help="task records drawn with other seeds (validity_pools.py --task-seed 1 --out "
        "dcsi_validity_tasks_seed1, ...): the shipped definition scored on the new ones",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="dcsi_validity")
    args = p.parse_args(argv)
    if not args.tasks.exists():
        p.error(f"{args.tasks} not found: run python benchmarks/validity_pools.py first")
    doc = json.loads(args.tasks.read_text(encoding="utf-8"))
    tasks = [t for t in doc["tasks"] if all(t["errors"].get(r) is not None for r in REFERENCES)]
    views = load_views(args.features)
    add_spreads(tasks, views)
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
    base[DEFINITION_2] = values[DEFINITION_2_CANDIDATE]
    base[DEFINITION_3] = values[DEFINITION_3_CANDIDATE]
    end_rows = ends(args.features, args.seed) or []
    if not end_rows:
        print("note: no --features cache: the candidates' ends are not checked")
    ok: dict[tuple[str, str | None], bool] = {}

    def allowed(name: str, hidden: str | None) -> bool:
        """Eligible, and calibrated on the ends that do not involve the hidden pool."""
        if not eligible(name):
            return False
        if (name, hidden) not in ok:
            ok[name, hidden] = calibrated(cands[name], end_rows, hidden)
        return ok[name, hidden]

    chosen, held = leave_one_pool_out(tasks, values, args.select_by, allowed)
    # the same choice among every candidate measured, eligible or not
    chosen_any, held_any = leave_one_pool_out(tasks, values, args.select_by, lambda k, p: True)
    # and among the eligible ones without the check of the ends
    chosen_no_ends, held_no_ends = leave_one_pool_out(
        tasks, values, args.select_by, lambda k, p: eligible(k)
    )
    # and by the rule of definition 3's choice: rho over the seen pools' tasks together
    chosen_pooled, held_pooled = leave_one_pool_out(
        tasks, values, args.select_by, allowed, lambda v, e, p: spearman(v, e)
    )
    err = {r: np.array([t["errors"][r] for t in tasks]) for r in REFERENCES}
    # the definition chosen with every pool seen (what ships)
    all_scores = {k: selection_score(v, err[args.select_by], pools) for k, v in values.items()}
    rel = err[args.select_by] / np.array([chance_error(t) for t in tasks])
    final = choose(
        values,
        err[args.select_by],
        rel,
        np.ones(len(tasks), dtype=bool),
        pools,
        lambda k: allowed(k, None),
    )
    n_eligible = sum(eligible(k) for k in values)
    n_calibrated = sum(allowed(k, None) for k in values)
    shipped = np.array([shipped_index(t) for t in tasks])
    if not np.allclose(shipped, values[final], atol=1e-12):
        print(f"note: dcsi.compute_index is not the candidate chosen here ({final})")
    cnn_only = np.array([shipped_index(t, views=1) for t in tasks])
    series = {
        HELD: held,
        HELD_ANY: held_any,
        HELD_NO_ENDS: held_no_ends,
        HELD_POOLED: held_pooled,
        "DCSI (shipped)": shipped,
        "DCSI (shipped, cnn view only)": cnn_only,
        **base,
    }
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
            **{f"held-out DCSI - {k}": interval(b[HELD] - b[k]) for k in base},
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
    fresh = None if args.fresh is None else fresh_check(args.fresh, tasks, BASELINES, views)
    # each file on its own, with the tasks of the files before it left out: the last
    # file's row is on tasks drawn after everything before it was decided
    fresh_each = []
    for i, path in enumerate(args.fresh or []):
        before = [t for q in args.fresh[:i] for t in json.loads(q.read_text("utf-8"))["tasks"]]
        fresh_each.append(fresh_check([path], tasks + before, BASELINES, views))
    if end_rows:
        print(
            f"candidates: {len(values)} measured, {n_eligible} eligible, {n_calibrated} of "
            "them calibrated at both ends"
        )
        print_table(
            [
                [r["kind"], r["pool"], r["k"], r["value"], r["cnn_only"], r.get("nn1_error_loo")]
                for r in end_rows
            ],
            ["check", "pool", "K", "DCSI", "DCSI, cnn view only", "1-NN error (LOO)"],
        )
    write_results(
        args.name,
        {
            "settings": vars(args)
            | {
                "tasks": str(args.tasks),
                "features": str(args.features),
                "fresh": [str(p) for p in args.fresh or []],
            },
            "n_tasks": len(tasks),
            "tasks_per_pool": {pl: int((pools == pl).sum()) for pl in pool_names},
            "chosen_per_hidden_pool": chosen,
            "chosen_per_hidden_pool_any_candidate": chosen_any,
            "chosen_per_hidden_pool_ends_not_checked": chosen_no_ends,
            "chosen_per_hidden_pool_pooled_rule": chosen_pooled,
            "chosen_all_pools": final,
            "candidate_scores_all_pools": all_scores,
            "spearman": rows,
            "bootstrap_95": intervals,
            "reference_agreement": agree,
            "n_candidates": {
                "measured": len(values),
                "eligible": n_eligible,
                "eligible_and_calibrated_all_pools": n_calibrated,
            },
            "calibration_rule": {
                "shuffled_at_least": SHUFFLED_AT_LEAST,
                "planted_at_most": PLANTED_AT_MOST,
                "planted_pairs_counted_below_nn1_error": PLANTED_SEPARABLE,
            },
            "ends": [{k: v for k, v in r.items() if k != "record"} for r in end_rows],
            "fresh_tasks": fresh,
            "fresh_tasks_each_file_new_only": fresh_each,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
