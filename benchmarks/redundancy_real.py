"""Near-duplicate search on real images with ground truth: icon sizes and clip-art copies.

Two kinds of pool, each scored on pairs, with dcsi and its peers in the same run:

- ``--pool oxygen`` / ``--pool tango`` / ``--pool adwaita`` (Debian
  ``oxygen-icon-theme``, ``tango-icon-theme``, ``adwaita-icon-theme``; Adwaita was
  added later, as a theme no choice had seen): every icon of the theme drawn at several sizes
  (``<N>x<N>/<context>/<name>.png``, N in 16..256; ``8x8`` and ``scalable`` are left
  out, and so are symbolic links, which are aliases of another name).  **Truth**: two
  files with the same ``(context, name)`` at two sizes are the same icon; every other
  pair is false.  Small sizes are often redrawn by hand rather than resampled, so the
  table also says, per size pair, how many true pairs are *consistent* -- the two
  images, area-downsampled to 8 x 8 px, have a Pearson correlation >= 0.9: the same
  drawing up to its details -- and the recall on those alone.  Two files under
  different names with the same pixels (a theme ships some icons twice) are not
  scored.  ``--max-icons N``: a seeded subset of icon names (0: every icon).
- ``--pool openclipart`` (Debian ``openclipart-png``): a seeded subset of
  ``--originals`` images (default 3,000 of the 8,121; files PIL refuses as
  decompression bombs are left out), and ``--per-kind`` copies (default 25) of each of
  the 24 non-flip kinds of ``copy_kinds.py`` (colour kinds included; ``--copies
  unseen``: of its 12 unseen kinds, on which no default was chosen), each made at the
  original's own size from a distinct original that is neither blank nor over
  2,048 px.  **Truth**: the planted (original, copy) pairs.  A pair of two unmodified
  images is not scored (unknown truth), but the table counts them and the JSON keeps a
  sample; a pair of a copy with another image is false.  "P lenient" does not charge a
  false pair whose two originals (an unmodified image is its own) the method links as
  well: a copy that joined its original's own near-duplicates.

Every image is written once, composited over white as dcsi reads RGBA
(:func:`dcsi.sources.decode_image`), as an RGB PNG at its own size into one flat
temporary folder, and every method reads that folder: the same pixels for all.

Methods, each in its own subprocess (time and peak RSS are that process's, reading the
images included):

- ``dcsi``: ``dcsi.find_redundancy(folder)`` with defaults; every pair inside a
  group is a reported pair (blank groups are counted apart).  Its sweep: the same
  search (on the working-size arrays, not timed) with the density-relative ratio
  0.15, 0.35 and 0.5 instead of 0.25;
- ``dcsi+centred``: the same with the relative stage's centred view
  (``RelativeOptions(centred=True)``, ``--centred``; off by default);
- ``dcsi+equalised``: the same with its equalised view
  (``RelativeOptions(equalised=True)``, ``--equalised``; off by default);
- ``imagededup-phash``, ``imagededup-whash``: ``encode_images`` of the folder, then
  every pair within the Hamming distance threshold (default 10; the sweep goes up to
  16), searched vectorised;
- ``cleanvision``: ``Imagelab(filepaths=...)``, ``near_duplicates`` and
  ``exact_duplicates`` sets (no score, no sweep).

"R @ P>=0.97" is the largest recall of a method's sweep whose precision is >= 0.97.
The machine has 2 cores shared with other jobs: times are noisy.

    python benchmarks/redundancy_real.py --pool tango
    python benchmarks/redundancy_real.py --pool oxygen                   # 400 icons
    python benchmarks/redundancy_real.py --pool oxygen --max-icons 0     # every icon
    python benchmarks/redundancy_real.py --pool adwaita                  # 400 icons
    python benchmarks/redundancy_real.py --pool openclipart
    python benchmarks/redundancy_real.py --pool tango --quick            # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing import Pool as ProcessPool
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import print_table, write_results  # noqa: E402

ICON_ROOTS = {
    "oxygen": Path("/usr/share/icons/oxygen/base"),
    "tango": Path("/usr/share/icons/Tango"),
    "adwaita": Path("/usr/share/icons/Adwaita"),
}
OPENCLIPART = Path("/usr/share/openclipart/png")
PACKAGES = {
    "oxygen": "oxygen-icon-theme",
    "tango": "tango-icon-theme",
    "adwaita": "adwaita-icon-theme",
    "openclipart": "openclipart-png",
}
SIZES = (16, 22, 24, 32, 48, 64, 128, 256)
METHODS = (
    "dcsi",
    "dcsi+centred",
    "dcsi+equalised",
    "imagededup-phash",
    "imagededup-whash",
    "cleanvision",
)
#: Density-relative ratios of dcsi's sweep (the default is 0.25).
RATIOS = (0.15, 0.35, 0.5)
#: imagededup: default Hamming threshold, and the largest one of the sweep.
HAMMING_DEFAULT, HAMMING_MAX = 10, 16
TARGET = 0.97
#: A true icon pair is "consistent" when the two images, area-downsampled to
#: CONSISTENT_SIDE px, correlate at least this much (grey levels).
CONSISTENT, CONSISTENT_SIDE = 0.9, 8
#: Copies are made of originals no longer than this (copy kinds on 16,000-px images
#: would dominate the set-up time).
MAX_ORIGINAL_SIDE = 2048
#: An original whose per-channel standard deviation at 32 x 32 is at most this is blank.
BLANK_STD = 2.0


@dataclass
class PoolData:
    """The images of a pool and their ground truth.

    Attributes
    ----------
    names : list of str
        Where each image comes from (an icon file, an openclipart file, or
        ``"copy:<kind>:<original>"``), one per image, in folder order.
    truth : ndarray of shape (m, 2), int64
        True pairs ``(a, b)``, ``a < b``.
    tags : ndarray of shape (m,), str
        Per true pair: the size pair ("16-32") or the copy kind.
    side : ndarray of shape (n,), str
        Per image: its icon size, its copy kind, or "" (an unmodified image).
    unscored : ndarray of shape (u, 2), int64
        Pairs not scored (icons: the same pixels under two names).
    info : dict
    """

    names: list[str]
    truth: np.ndarray
    tags: np.ndarray
    side: np.ndarray
    unscored: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- set-up
def _rgb(path: Path) -> np.ndarray:
    """An image file as an RGB uint8 array, composited over white as dcsi reads it."""
    from dcsi.sources import decode_image

    return np.asarray(decode_image(path.read_bytes()).convert("RGB"))


def _write(args: tuple[Path, Path]) -> tuple[str, list[int], bool] | None:
    """Write one source file composited as RGB PNG: (pixel hash, (h, w), blank), or
    None when dcsi cannot read it."""
    from PIL import Image

    from dcsi.exceptions import DataError

    src, dst = args
    try:
        a = _rgb(src)
    except DataError:
        return None
    Image.fromarray(a).save(dst, compress_level=1)
    small = np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.BOX), float)
    blank = bool(small.reshape(-1, 3).std(0).max() <= BLANK_STD)
    return hashlib.sha1(a.tobytes()).hexdigest(), list(a.shape[:2]), blank


def _write_all(sources: list[Path], folder: Path) -> list:
    jobs = [(s, folder / f"{i:05d}.png") for i, s in enumerate(sources)]
    with ProcessPool(os.cpu_count()) as pool:
        return pool.map(_write, jobs, chunksize=16)


def icon_pool(pool: str, max_icons: int, seed: int, folder: Path) -> PoolData:
    """Icons of a theme at every size 16..256 that has them; see the module docstring."""
    root = ICON_ROOTS[pool]
    files: dict[str, dict[int, Path]] = {}
    for s in SIZES:
        for p in sorted((root / f"{s}x{s}").glob("*/*.png")):
            if not p.is_symlink():  # an alias of another name
                files.setdefault(f"{p.parent.name}/{p.stem}", {})[s] = p
    icons = sorted(k for k, v in files.items() if len(v) >= 2)
    n_icons = len(icons)
    if 0 < max_icons < len(icons):
        pick = np.random.default_rng(seed).choice(len(icons), max_icons, replace=False)
        icons = [icons[i] for i in sorted(pick)]
    items = [(k, s) for k in icons for s in sorted(files[k])]
    written = _write_all([files[k][s] for k, s in items], folder)
    assert all(w is not None for w in written), "an icon could not be read"
    keys = np.unique([k for k, _ in items], return_inverse=True)[1]
    sizes = np.array([s for _, s in items])
    truth = _pairs_within(keys)
    tags = np.array([f"{sizes[i]}-{sizes[j]}" for i, j in truth])
    twins = _pairs_within(np.unique([w[0] for w in written], return_inverse=True)[1])
    twins = twins[keys[twins[:, 0]] != keys[twins[:, 1]]]
    return PoolData(
        names=[f"{s}x{s}/{k}.png" for k, s in items],
        truth=truth,
        tags=tags,
        side=sizes.astype(str),
        unscored=twins,
        info={
            "root": str(root),
            "n_icons_in_theme": n_icons,
            "n_icons": len(icons),
            "sizes": sorted({int(s) for s in sizes}),
            "n_same_pixels_other_name_pairs": len(twins),
            "consistent": _consistency(folder, truth),
        },
    )


def _pairs_within(codes: np.ndarray) -> np.ndarray:
    """Every pair ``(a, b)``, ``a < b``, of items with the same code, as (m, 2) int64."""
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    groups = [g for g in np.split(order, bounds) if len(g) > 1]
    return _group_pairs(groups)


def _consistency(folder: Path, truth: np.ndarray) -> list[float]:
    """Per true icon pair: correlation of the two images area-downsampled to
    ``CONSISTENT_SIDE`` px (grey levels): the same drawing up to its details."""
    from PIL import Image

    grey: dict[int, np.ndarray] = {}

    def load(i: int) -> np.ndarray:
        if i not in grey:
            img = Image.open(folder / f"{i:05d}.png").convert("L")
            side = (CONSISTENT_SIDE, CONSISTENT_SIDE)
            grey[i] = np.asarray(img.resize(side, Image.Resampling.BOX), float).ravel()
        return grey[i]

    out = []
    for i, j in truth:
        x, y = load(int(i)), load(int(j))
        if x.std() == 0 or y.std() == 0:
            out.append(float(x.std() == y.std()))
        else:
            out.append(float(np.corrcoef(x, y)[0, 1]))
    return out


def clipart_pool(
    n_originals: int, per_kind: int, seed: int, folder: Path, copies: str = "broad"
) -> PoolData:
    """A seeded subset of openclipart plus planted copies of the broad family's kinds
    (or, ``copies="unseen"``, of its unseen kinds); see the module docstring."""
    from copy_kinds import KINDS, UNSEEN_KINDS, make_copy
    from PIL import Image

    rng = np.random.default_rng(seed)
    files = sorted(OPENCLIPART.rglob("*.png"))
    pick = np.sort(rng.choice(len(files), min(n_originals, len(files)), replace=False))
    written = _write_all([files[i] for i in pick], folder)
    unreadable = [str(files[i].relative_to(OPENCLIPART)) for i, w in zip(pick, written) if not w]
    kept = [(files[i], w) for i, w in zip(pick, written) if w]
    # the flat folder must have no gap: rename the readable ones in order
    for new, old in enumerate(i for i, w in enumerate(written) if w):
        if new != old:
            os.replace(folder / f"{old:05d}.png", folder / f"{new:05d}.png")
    names = [str(f.relative_to(OPENCLIPART)) for f, _ in kept]
    eligible = [i for i, (_, w) in enumerate(kept) if not w[2] and max(w[1]) <= MAX_ORIGINAL_SIDE]
    family = KINDS if copies == "broad" else UNSEEN_KINDS
    kinds = [k.name for k in family.values() if not k.flip]
    chosen = np.repeat(kinds, per_kind)[rng.permutation(per_kind * len(kinds))]
    originals = rng.choice(eligible, len(chosen), replace=False)
    n = len(kept)
    for t, (o, kind) in enumerate(zip(originals, chosen)):
        src = np.asarray(Image.open(folder / f"{o:05d}.png").convert("RGB"))
        copy = make_copy(src, str(kind), rng, mode="RGB")[0]
        Image.fromarray(copy).save(folder / f"{n + t:05d}.png", compress_level=1)
        names.append(f"copy:{kind}:{names[o]}")
    truth = np.stack([originals, n + np.arange(len(chosen))], 1).astype(np.int64)
    side = np.array([""] * n + [str(k) for k in chosen], dtype=object)
    return PoolData(
        names=names,
        truth=truth,
        tags=np.array([str(k) for k in chosen]),
        side=side,
        info={
            "root": str(OPENCLIPART),
            "n_files": len(files),
            "n_originals": n,
            "n_copies": len(chosen),
            "per_kind": per_kind,
            "copies": copies,
            "unreadable": unreadable,
            "n_blank_originals": sum(w[2] for _, w in kept),
            "max_original_side": MAX_ORIGINAL_SIDE,
        },
    )


# --------------------------------------------------------------------------- workers
def _stems(ids) -> np.ndarray:
    return np.array([int(Path(i).stem) for i in ids], dtype=np.int64)


def _group_pairs(groups: list[np.ndarray]) -> np.ndarray:
    """Every pair ``(a, b)``, ``a < b``, inside the groups, as an (m, 2) array."""
    out = [np.stack(np.triu_indices(len(g), 1), 1) for g in groups]
    pairs = [np.sort(np.asarray(g)[p], axis=1) for g, p in zip(groups, out)]
    return np.unique(np.concatenate(pairs or [np.zeros((0, 2), np.int64)]), axis=0)


def _dcsi(folder: str, view: str = "") -> tuple[dict, dict]:
    """dcsi's groups with its defaults, or with one view turned on (``view``:
    ``"centred"`` or ``"equalised"``), and at each ratio of :data:`RATIOS`."""
    from dcsi.redundancy import as_grey_arrays, find_redundancy
    from dcsi.relative_links import RelativeOptions

    views = {"centred": view == "centred", "equalised": view == "equalised"}
    res = find_redundancy(folder, relative=RelativeOptions(**views))
    elapsed = time.perf_counter()
    stem = {m: int(Path(m).stem) for g in res for m in g.members}
    copies = [np.array([stem[m] for m in g.members]) for g in res if not g.blank]
    blank = [np.array([stem[m] for m in g.members]) for g in res if g.blank]
    arrays = {"default": _group_pairs(copies), "blank": _group_pairs(blank)}
    arr, _, ids, _, _ = as_grey_arrays(folder)
    rows = _stems(ids)
    for r in RATIOS:
        rr = find_redundancy(arr, relative=RelativeOptions(ratio=r, **views))
        arrays[f"ratio {r}"] = _group_pairs([rows[list(g.indices)] for g in rr if not g.blank])
    meta = {
        "end_of_default_run": elapsed,
        "working_size": res.params.get("working_size"),
        "n_groups": res.summary["n_groups"],
        "n_blank_groups": len(blank),
        "n_aligned_pairs": res.summary.get("n_aligned_pairs"),
        "n_relative_pairs": res.summary.get("n_relative_pairs"),
    }
    return arrays, meta


def _imagededup(folder: str, kind: str) -> tuple[dict, dict]:
    from _common import imagededup_hashes

    PHash, WHash = imagededup_hashes()

    hasher = (PHash if kind == "phash" else WHash)(verbose=False)
    enc = hasher.encode_images(image_dir=folder, num_enc_workers=os.cpu_count())
    rows = _stems(enc)
    codes = np.array([int(h, 16) for h in enc.values()], dtype=np.uint64)
    pairs, dist = [], []
    for s in range(0, len(codes), 512):
        d = np.bitwise_count(codes[s : s + 512, None] ^ codes[None, :])
        ii, jj = np.nonzero(d <= HAMMING_MAX)
        keep = s + ii < jj
        pairs.append(np.sort(np.stack([rows[s + ii[keep]], rows[jj[keep]]], 1), axis=1))
        dist.append(d[ii[keep], jj[keep]])
    p, d = np.concatenate(pairs), np.concatenate(dist)
    return {f"hamming {t}": p[d <= t] for t in range(HAMMING_MAX + 1)}, {}


def _cleanvision(folder: str) -> tuple[dict, dict]:
    from cleanvision import Imagelab

    paths = sorted(str(p) for p in Path(folder).glob("*.png"))
    lab = Imagelab(filepaths=paths, verbose=False)
    lab.find_issues({"near_duplicates": {}, "exact_duplicates": {}}, verbose=False)
    sets = lab.info["near_duplicates"]["sets"] + lab.info["exact_duplicates"]["sets"]
    return {"default": _group_pairs([_stems(s) for s in sets])}, {}


def worker(method: str, folder: str, out: str) -> None:
    """Run one method on the folder; write its pairs (npz) and its figures (json)."""
    t0 = time.perf_counter()
    if method in ("dcsi", "dcsi+centred", "dcsi+equalised"):
        arrays, meta = _dcsi(folder, view=method.partition("+")[2])
        elapsed = meta.pop("end_of_default_run") - t0
    elif method.startswith("imagededup-"):
        arrays, meta = _imagededup(folder, method.split("-")[1])
        elapsed = time.perf_counter() - t0
    elif method == "cleanvision":
        arrays, meta = _cleanvision(folder)
        elapsed = time.perf_counter() - t0
    else:
        raise ValueError(method)
    np.savez(out, **{k.replace(" ", "_"): v for k, v in arrays.items()})
    meta.update(time_s=elapsed, peak_rss_mib=_peak_rss_mib(), variants=list(arrays))
    Path(out + ".json").write_text(json.dumps(meta))


def _peak_rss_mib() -> float:
    """Peak resident memory of this process since it started (VmHWM: on Linux,
    ``ru_maxrss`` of a child also carries its parent's peak from before the exec), or
    of its largest finished child (imagededup's encoding pool), whichever is larger."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return max(int(line.split()[1]) / 1024, children)
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, children)


# --------------------------------------------------------------------------- scoring
def _codes(pairs: np.ndarray, n: int) -> np.ndarray:
    pairs = np.sort(np.asarray(pairs, np.int64).reshape(-1, 2), axis=1)
    return pairs[:, 0] * n + pairs[:, 1]


def score(pairs: np.ndarray, data: PoolData, n: int) -> dict:
    """Precision and recall of reported pairs, overall and per tag.

    Scored pairs: icons, every pair but ``data.unscored``; planted copies, every pair
    with a copy in it (a pair of two unmodified images is counted apart).
    """
    c = np.setdiff1d(_codes(pairs, n), _codes(data.unscored, n))
    t = _codes(data.truth, n)
    a, b = c // n, c % n
    copies = data.side != ""
    scored = copies[a] | copies[b] if data.info.get("per_kind") else np.ones(len(c), bool)
    hit = np.isin(c, t)
    found = np.isin(t, c)
    # a pair's tag: the size pair, or the kind of the copy in it
    if data.info.get("per_kind"):
        tag = np.where(copies[b], data.side[b], data.side[a])
    else:
        s = data.side.astype(int)
        lo, hi = np.minimum(s[a], s[b]), np.maximum(s[a], s[b])
        tag = np.char.add(np.char.add(lo.astype(str), "-"), hi.astype(str))
    out = {
        "n_reported": len(c),
        "n_scored": int(scored.sum()),
        "precision": float(hit[scored].mean()) if scored.any() else None,
        "recall": float(found.mean()),
        "per_tag": {},
    }
    for g in dict.fromkeys(data.tags.tolist()):
        mine = tag[scored] == g
        out["per_tag"][g] = {
            "n_true": int((data.tags == g).sum()),
            "recall": float(found[data.tags == g].mean()),
            "precision": float(hit[scored][mine].mean()) if mine.any() else None,
        }
    if data.info.get("per_kind"):
        from copy_kinds import KINDS, UNSEEN_KINDS

        kinds = {**KINDS, **UNSEEN_KINDS}
        family = np.array([kinds[g].family if g else "" for g in tag], dtype=object)
        true_family = np.array([kinds[g].family for g in data.tags])
        out["per_family"] = {
            F: {
                "n_true": int((true_family == F).sum()),
                "recall": float(found[true_family == F].mean()),
                "precision": float(hit[scored][mine].mean())
                if (mine := family[scored] == F).any()
                else None,
            }
            for F in sorted(set(true_family.tolist()))
        }
        out.update(_clipart_extras(c, a, b, hit, copies, data, n))
    else:
        ok = np.asarray(data.info["consistent"]) >= CONSISTENT
        out["recall_consistent"] = float(found[ok].mean()) if ok.any() else None
        out["n_false_same_size"] = int(np.sum(~hit & (lo == hi)))
        out["false_sample"] = [
            [data.names[a[k]], data.names[b[k]]] for k in np.flatnonzero(~hit)[:10]
        ]
    return out


def _clipart_extras(c, a, b, hit, copies, data: PoolData, n: int) -> dict:
    """Planted copies: lenient precision, where the false pairs fall, and the pairs of
    two unmodified images."""
    original = np.arange(n)
    original[data.truth[:, 1]] = data.truth[:, 0]
    false = np.flatnonzero((copies[a] | copies[b]) & ~hit)
    # excused: a false pair whose two originals the method links as well (a copy joined
    # its original's own near-duplicates)
    oa, ob = original[a[false]], original[b[false]]
    excused = int(np.isin(np.minimum(oa, ob) * n + np.maximum(oa, ob), c).sum())
    scored = int((copies[a] | copies[b]).sum())
    folder = np.array([str(Path(x.split(":")[-1]).parent) for x in data.names])
    both = np.flatnonzero(~copies[a] & ~copies[b])
    return {
        "precision_lenient": (float(hit.sum() / (scored - excused)) if scored > excused else None),
        "n_false": len(false),
        "n_false_excused": excused,
        "false_by_folder": _top(folder[original[a[false]]], folder[original[b[false]]]),
        "n_unmodified_pairs": len(both),
        "unmodified_by_folder": _top(folder[a[both]], folder[b[both]]),
        "unmodified_sample": [
            [data.names[a[k]], data.names[b[k]]] for k in both[:: max(1, len(both) // 12)][:12]
        ],
    }


def _top(x: np.ndarray, y: np.ndarray, k: int = 6) -> dict[str, int]:
    """The ``k`` most frequent folder pairs ("a | b", sorted) and their counts."""
    pairs = [" | ".join(sorted(t)) for t in zip(x.tolist(), y.tolist())]
    values, counts = np.unique(np.array(pairs, dtype=str), return_counts=True)
    order = np.argsort(-counts, kind="stable")[:k]
    return {str(values[i]): int(counts[i]) for i in order}


def sweep(variants: dict[str, np.ndarray], data: PoolData, n: int) -> dict:
    """The variant with the largest recall at precision >= TARGET (None if none)."""
    best = None
    for name, pairs in variants.items():
        s = score(pairs, data, n)
        ok = s["precision"] is not None and s["precision"] >= TARGET
        if ok and (best is None or s["recall"] > best["recall"]):
            best = {"variant": name, "recall": s["recall"], "precision": s["precision"]}
    return best or {"variant": None, "recall": 0.0, "precision": None}


# --------------------------------------------------------------------------- driver
def run_method(method: str, folder: Path, tmp: Path, timeout: int) -> tuple[dict, dict]:
    """One method in its own process: (figures, variant -> pairs) or an error row."""
    out = str(tmp / f"{method}.npz")
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", method, str(folder), out],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}, {}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}, {}
    meta = json.loads(Path(out + ".json").read_text())
    d = np.load(out)
    return meta, {k: d[k.replace(" ", "_")] for k in meta["variants"]}


def evaluate(method: str, meta: dict, variants: dict, data: PoolData, n: int) -> dict:
    """Scores of one method: its default operating point and its sweep."""
    if "error" in meta:
        return {"method": method, **meta}
    default = variants.get("default", variants.get(f"hamming {HAMMING_DEFAULT}"))
    row = {"method": method, **{k: v for k, v in meta.items() if k != "variants"}}
    row["default"] = score(default, data, n)
    if "blank" in variants:
        row["blank_pairs"] = len(variants["blank"])
    swept = {k: v for k, v in variants.items() if k != "blank"}
    row["at_precision_0.97"] = sweep(swept, data, n) if len(swept) > 1 else None
    if method.startswith("dcsi"):
        row["variants"] = {
            k: {
                key: s[key]
                for key in ("precision", "recall", "n_reported")
                if key in (s := score(v, data, n))
            }
            for k, v in swept.items()
        }
    return row


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def tables(rows: list[dict], data: PoolData) -> list[str]:
    """Print the markdown tables; return them."""
    icons = not data.info.get("per_kind")
    head = ["method", "default P", "default R"]
    head += ["R consistent"] if icons else ["P lenient", "unmodified pairs linked"]
    head += ["R @ P>=0.97", "time (s)", "peak RSS (MiB)"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["method"], f"failed: {r['error']}"] + [""] * (len(head) - 2))
            continue
        d, best = r["default"], r["at_precision_0.97"]
        extra = (
            [_fmt(d["recall_consistent"])]
            if icons
            else [_fmt(d["precision_lenient"]), d["n_unmodified_pairs"]]
        )
        at = "-" if best is None else f"{best['recall']:.3f} ({best['variant'] or 'none'})"
        body += [
            [
                r["method"],
                _fmt(d["precision"]),
                _fmt(d["recall"]),
                *extra,
                at,
                r["time_s"],
                r["peak_rss_mib"],
            ]
        ]
    out = [print_table(body, head)]
    ok = [r for r in rows if "error" not in r]
    tags = list(dict.fromkeys(data.tags.tolist()))
    if icons:
        corr = np.asarray(data.info["consistent"])
        head = ["size pair", "true pairs", "consistent share"] + [f"R {r['method']}" for r in ok]
        head += ["P dcsi"] if any(r["method"] == "dcsi" for r in ok) else []
        body = []
        for g in sorted(tags, key=lambda g: tuple(int(x) for x in g.split("-"))):
            mine = data.tags == g
            line = [g, int(mine.sum()), float(np.mean(corr[mine] >= CONSISTENT))]
            line += [r["default"]["per_tag"][g]["recall"] for r in ok]
            line += [r["default"]["per_tag"][g]["precision"] for r in ok if r["method"] == "dcsi"]
            body.append(line)
    else:
        from copy_kinds import KINDS, UNSEEN_KINDS

        kinds = {**KINDS, **UNSEEN_KINDS}
        head = ["family", "kind", "copies"] + [f"R {r['method']}" for r in ok]
        head += ["P dcsi"] if any(r["method"] == "dcsi" for r in ok) else []
        body = [
            [kinds[g].family, g, int((data.tags == g).sum())]
            + [r["default"]["per_tag"][g]["recall"] for r in ok]
            + [r["default"]["per_tag"][g]["precision"] for r in ok if r["method"] == "dcsi"]
            for g in sorted(tags, key=lambda g: (kinds[g].family, g))
        ]
        for F in sorted({kinds[g].family for g in tags}):
            body.append(
                [F, "(all)", ok[0]["default"]["per_family"][F]["n_true"] if ok else 0]
                + [r["default"]["per_family"][F]["recall"] for r in ok]
                + [r["default"]["per_family"][F]["precision"] for r in ok if r["method"] == "dcsi"]
            )
    print()
    out.append(print_table(body, head))
    return out


def build(args, folder: Path) -> PoolData:
    """The pool's images (written to ``folder``) and truth."""
    if args.pool == "openclipart":
        root = OPENCLIPART
    else:
        root = ICON_ROOTS[args.pool]
    if not root.is_dir():
        sys.exit(f"error: {root} not found; install it: apt-get install -y {PACKAGES[args.pool]}")
    if args.pool == "openclipart":
        return clipart_pool(args.originals, args.per_kind, args.seed, folder, args.copies)
    return icon_pool(args.pool, args.max_icons, args.seed, folder)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--pool", choices=("oxygen", "tango", "adwaita", "openclipart"), help="required"
    )
    ap.add_argument("--max-icons", type=int, default=400, help="icons (seeded; 0: all)")
    ap.add_argument("--originals", type=int, default=3000, help="openclipart images")
    ap.add_argument("--per-kind", type=int, default=25, help="planted copies per kind")
    ap.add_argument(
        "--copies",
        default="broad",
        choices=("broad", "unseen"),
        help="openclipart: the broad family's 24 kinds (default) or its 12 unseen kinds",
    )
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--quick", action="store_true", help="40 icons, or 100 images + 1 copy per kind"
    )
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per method")
    ap.add_argument(
        "--out", default=None, help="results name (default redundancy_real_<pool>[_all])"
    )
    ap.add_argument(
        "--worker", nargs=3, metavar=("METHOD", "FOLDER", "OUT"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    if args.pool is None:
        ap.error("the following argument is required: --pool")
    if args.quick:
        args.max_icons, args.originals, args.per_kind = 40, 100, 1
    os.environ.setdefault("DCSI_DISABLE_PROGRESS", "1")
    with tempfile.TemporaryDirectory(prefix="dcsi_real_") as name:
        tmp = Path(name)
        folder = tmp / "images"
        folder.mkdir()
        t0 = time.perf_counter()
        data = build(args, folder)
        n = len(data.names)
        setup = time.perf_counter() - t0
        print(
            f"{args.pool}: {n} images, {len(data.truth)} true pairs, set-up {setup:.0f} s",
            file=sys.stderr,
        )
        rows = []
        for method in args.methods.split(","):
            meta, variants = run_method(method, folder, tmp, args.timeout)
            rows.append(evaluate(method, meta, variants, data, n))
            print(f"{method}: done", file=sys.stderr)
    text = tables(rows, data)
    info = dict(data.info)
    if "consistent" in info:
        corr = np.asarray(info.pop("consistent"))
        info["consistent_share"] = float(np.mean(corr >= CONSISTENT))
    every = args.pool != "openclipart" and args.max_icons == 0
    name = f"redundancy_real_{args.pool}" + ("_all" if every else "") + ("_quick" * args.quick)
    path = write_results(
        args.out or name,
        {
            "pool": args.pool,
            "n_images": n,
            "n_true_pairs": len(data.truth),
            "seed": args.seed,
            "max_icons": args.max_icons if args.pool != "openclipart" else None,
            "protocol": "pairs; see the docstring of benchmarks/redundancy_real.py",
            "consistent_threshold": CONSISTENT,
            "target_precision": TARGET,
            "pool_info": info,
            "results": rows,
            "tables": text,
        },
    )
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
