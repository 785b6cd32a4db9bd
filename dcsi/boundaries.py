"""Decision boundaries on the straight path between two images (Yousefzadeh §5.3).

Along ``x(a) = (1 - a) x1 + a x2``, ``a`` in ``[0, 1]``, does a trained model cross a
decision boundary -- a point where its two top scores are equal, so that the arg-max
class changes?  Near-identical images should have none between them; two dissimilar
images of one class often have two (the path leaves the class and comes back).

Algorithm
---------
1. The model is evaluated on ``steps + 1`` evenly spaced points ``a = k / steps``
   (in batches of ``batch_size``, all pairs of a call together).
2. Every grid interval whose two ends have different arg-max classes holds at least one
   boundary.  It is bisected: the class at the midpoint decides which half keeps the
   change (a third class at the midpoint splits the interval into two, one change each),
   until the bracket is at most ``tol`` wide.  All brackets of a call are bisected
   together, one batched model call per round (``ceil(log2(1 / (steps * tol)))`` rounds).
   Each crossing is reported at the centre of its final bracket, so it lies within
   ``tol / 2`` of an arg-max change.

What it can miss: the grid sees the arg-max only at its points.  An excursion into
another class narrower than the grid step ``1 / steps`` (both ends of an interval in the
same class) is not seen at all, and an interval whose ends differ but which holds three
changes is reported with one.  A denser grid (larger ``steps``) is the reference; the
tests and ``benchmarks/boundaries.py`` compare with 2,001 to 10,001 points.

Arg-max ties are broken towards the lower class id (``numpy.argmax``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dcsi._json import to_jsonable
from dcsi._progress import progress
from dcsi._validation import Interval, check_array, check_int, validate_params
from dcsi.exceptions import DataError, InvalidParameterError

__all__ = [
    "CONSTRAINTS",
    "BoundaryCrossings",
    "BoundaryStats",
    "Crossing",
    "boundary_crossings",
    "boundary_stats",
    "check_boundary_params",
    "dense_classes",
    "pixel_cosine_pairs",
]

logger = logging.getLogger(__name__)

#: Declared constraints of the parameters (they drive the messages and the tests).
CONSTRAINTS: dict[str, list[Any]] = {
    "steps": [Interval(int, 1, None, closed="left")],
    "tol": [Interval(float, 0, 1, closed="neither")],
    "batch_size": [Interval(int, 1, None, closed="left")],
}


def check_boundary_params(
    *, steps: Any, tol: Any, batch_size: Any, caller: str = "boundary_crossings"
) -> dict[str, Any]:
    """Check ``steps``, ``tol`` and ``batch_size`` against :data:`CONSTRAINTS`.

    Returns
    -------
    dict
        The values as plain ``int`` / ``float``.

    Raises
    ------
    InvalidParameterError
        ``The 'steps' parameter of boundary_crossings must be an int >= 1. Got 0 instead.``
    """
    return validate_params(
        {"steps": steps, "tol": tol, "batch_size": batch_size}, CONSTRAINTS, caller
    )


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Crossing:
    """One arg-max change on the path.

    Attributes
    ----------
    alpha : float
        Where it happens, within ``tol / 2`` (centre of the final bisection bracket).
    class_before, class_after : int
        Arg-max class just before and just after ``alpha``.
    """

    alpha: float
    class_before: int
    class_after: int

    def to_dict(self) -> dict:
        """JSON-ready dict: alpha, class_before, class_after."""
        return {
            "alpha": float(self.alpha),
            "class_before": int(self.class_before),
            "class_after": int(self.class_after),
        }


@dataclass(frozen=True)
class BoundaryCrossings:
    """The decision boundaries a model crosses on the path between two images.

    Attributes
    ----------
    crossings : tuple of Crossing
        In increasing ``alpha``.
    classes_at_ends : (int, int)
        Arg-max class of the first image (``a = 0``) and of the second (``a = 1``).
    steps : int
        Grid intervals of the first pass.
    tol : float
        Width of the final bisection brackets.
    n_evaluations : int
        Points the model was evaluated on (grid and bisection).
    """

    crossings: tuple[Crossing, ...]
    classes_at_ends: tuple[int, int]
    steps: int
    tol: float
    n_evaluations: int

    @property
    def n_crossings(self) -> int:
        """Number of crossings found."""
        return len(self.crossings)

    @property
    def path_classes(self) -> tuple[int, ...]:
        """The arg-max classes met along the path, in order (``classes_at_ends[0]``
        then each crossing's ``class_after``)."""
        return (self.classes_at_ends[0], *(c.class_after for c in self.crossings))

    def to_dict(self) -> dict:
        """JSON-ready dict: n_crossings, crossings, classes_at_ends, steps, tol,
        n_evaluations."""
        return to_jsonable(
            {
                "n_crossings": self.n_crossings,
                "crossings": [c.to_dict() for c in self.crossings],
                "classes_at_ends": [int(c) for c in self.classes_at_ends],
                "steps": self.steps,
                "tol": self.tol,
                "n_evaluations": self.n_evaluations,
            }
        )


@dataclass(frozen=True)
class BoundaryStats:
    """Crossings of many pairs, summarised.

    Attributes
    ----------
    pairs : ndarray of shape (m, 2), int64
        Row indices of the pairs in the images given.
    results : tuple of BoundaryCrossings
        One per pair, same order.
    """

    pairs: np.ndarray
    results: tuple[BoundaryCrossings, ...]

    @property
    def n_crossings(self) -> np.ndarray:
        """ndarray of shape (m,): crossings per pair."""
        return np.array([r.n_crossings for r in self.results], dtype=np.int64)

    @property
    def summary(self) -> dict:
        """``n_pairs``, ``share_0``, ``share_1``, ``share_2plus`` (shares of the pairs
        with 0, 1, 2 or more crossings; None without pairs), ``mean_crossings`` and
        ``same_class_at_ends`` (share of pairs whose ends have one arg-max class)."""
        n = self.n_crossings
        m = len(n)
        if m == 0:
            return {
                "n_pairs": 0,
                "share_0": None,
                "share_1": None,
                "share_2plus": None,
                "mean_crossings": None,
                "same_class_at_ends": None,
            }
        same = np.mean([r.classes_at_ends[0] == r.classes_at_ends[1] for r in self.results])
        return {
            "n_pairs": m,
            "share_0": float(np.mean(n == 0)),
            "share_1": float(np.mean(n == 1)),
            "share_2plus": float(np.mean(n >= 2)),
            "mean_crossings": float(n.mean()),
            "same_class_at_ends": float(same),
        }

    def to_dict(self) -> dict:
        """JSON-ready dict: ``summary`` and ``pairs`` (indices and each pair's result)."""
        return to_jsonable(
            {
                "summary": self.summary,
                "pairs": [
                    {"a": int(a), "b": int(b), **r.to_dict()}
                    for (a, b), r in zip(self.pairs.tolist(), self.results)
                ],
            }
        )


# --------------------------------------------------------------------------- the model
def _to_numpy(x: Any) -> np.ndarray:
    """A torch tensor (any device) or array-like as an ndarray."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _scorer(model: Any, caller: str) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` as a function: float32 batch ``(b, ...)`` -> logits ``(b, K)`` ndarray."""
    if not callable(model):
        raise InvalidParameterError(
            f"The 'model' parameter of {caller} must be callable (a torch module or a "
            f"function mapping a batch of images to logits). Got {type(model).__name__} "
            "instead."
        )
    if _is_torch_module(model):
        import torch

        if model.training:
            logger.warning(
                "%s: the model is in training mode (dropout, batch statistics); call "
                "model.eval() first for repeatable scores",
                caller,
            )
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")

        def call(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = model(torch.from_numpy(batch).to(device))
            return _to_numpy(out)

    else:

        def call(batch: np.ndarray) -> np.ndarray:
            return _to_numpy(model(batch))

    def score(batch: np.ndarray) -> np.ndarray:
        out = call(batch)
        if out.ndim != 2 or out.shape[0] != len(batch) or out.shape[1] < 2:
            raise DataError(
                f"{caller}: the model must return logits of shape (batch, n_classes) with "
                f"n_classes >= 2; for a batch of {len(batch)} it returned shape {out.shape}."
            )
        if out.dtype.kind not in "fiub" or not np.all(np.isfinite(out)):
            raise DataError(
                f"{caller}: the model returned NaN, infinite or non-numeric logits; "
                "check its input scale (images are passed in the scale given)."
            )
        return out

    return score


def _as_image(x: Any, name: str, caller: str) -> np.ndarray:
    arr = check_array(_to_numpy(x), name, caller, ndim=(2, 3))
    if arr.dtype.kind not in "fiub":
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must hold numbers. Got dtype {arr.dtype} instead."
        )
    return arr


# --------------------------------------------------------------------------- the search
class _Path:
    """Arg-max classes at points ``(pair, alpha)`` of the straight paths, batched."""

    def __init__(
        self,
        score: Callable[[np.ndarray], np.ndarray],
        images: np.ndarray,
        pairs: np.ndarray,
        batch_size: int,
    ) -> None:
        self.score = score
        self.images = images
        self.pairs = pairs
        self.batch_size = batch_size
        self.n_evaluations = np.zeros(len(pairs), dtype=np.int64)

    def classes(self, which: np.ndarray, alphas: np.ndarray, *, desc: str | None = None):
        """Arg-max class at ``(1 - a) x1 + a x2`` for each pair index and alpha."""
        out = np.empty(len(which), dtype=np.int64)
        starts: Iterable[int] = range(0, len(which), self.batch_size)
        if desc is not None:
            starts = progress(starts, desc=desc, unit="batch")
        for s in starts:
            w = which[s : s + self.batch_size]
            a = alphas[s : s + self.batch_size].reshape((-1,) + (1,) * (self.images.ndim - 1))
            x1 = self.images[self.pairs[w, 0]].astype(np.float64)
            x2 = self.images[self.pairs[w, 1]].astype(np.float64)
            batch = ((1.0 - a) * x1 + a * x2).astype(np.float32)
            out[s : s + len(w)] = np.argmax(self.score(batch), axis=1)
        np.add.at(self.n_evaluations, which, 1)
        return out


def _bisect(path: _Path, brackets: list[tuple[int, float, float, int, int]], tol: float):
    """Refine brackets ``(pair, lo, hi, class_lo, class_hi)`` until ``hi - lo <= tol``,
    one batched model call per round; returns the final brackets."""
    done: list[tuple[int, float, float, int, int]] = []
    while brackets:
        open_ = [b for b in brackets if b[2] - b[1] > tol]
        done += [b for b in brackets if b[2] - b[1] <= tol]
        if not open_:
            break
        which = np.array([b[0] for b in open_], dtype=np.int64)
        mids = np.array([0.5 * (b[1] + b[2]) for b in open_])
        classes = path.classes(which, mids)
        brackets = []
        for (p, lo, hi, clo, chi), mid, c in zip(open_, mids.tolist(), classes.tolist()):
            if c == clo:
                brackets.append((p, mid, hi, clo, chi))
            elif c == chi:
                brackets.append((p, lo, mid, clo, chi))
            else:  # a third class: a change on each side
                brackets += [(p, lo, mid, clo, c), (p, mid, hi, c, chi)]
    return done


def _crossings(
    score: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    pairs: np.ndarray,
    *,
    steps: int,
    tol: float,
    batch_size: int,
    desc: str | None = None,
) -> list[BoundaryCrossings]:
    """The search of the module docstring for every pair of rows ``pairs`` of ``images``."""
    path = _Path(score, images, pairs, batch_size)
    m = len(pairs)
    grid = np.linspace(0.0, 1.0, steps + 1)
    which = np.repeat(np.arange(m, dtype=np.int64), steps + 1)
    cls = path.classes(which, np.tile(grid, m), desc=desc).reshape(m, steps + 1)
    brackets = [
        (int(p), float(grid[k]), float(grid[k + 1]), int(cls[p, k]), int(cls[p, k + 1]))
        for p, k in zip(*np.nonzero(cls[:, 1:] != cls[:, :-1]))
    ]
    found: list[list[Crossing]] = [[] for _ in range(m)]
    for p, lo, hi, clo, chi in _bisect(path, brackets, tol):
        found[p].append(Crossing(0.5 * (lo + hi), clo, chi))
    return [
        BoundaryCrossings(
            crossings=tuple(sorted(found[p], key=lambda c: c.alpha)),
            classes_at_ends=(int(cls[p, 0]), int(cls[p, -1])),
            steps=steps,
            tol=tol,
            n_evaluations=int(path.n_evaluations[p]),
        )
        for p in range(m)
    ]


def boundary_crossings(
    model: Any,
    image_a: Any,
    image_b: Any,
    *,
    steps: int = 64,
    tol: float = 1e-4,
    batch_size: int = 256,
) -> BoundaryCrossings:
    """The decision boundaries a model crosses on the straight path between two images.

    The path is ``x(a) = (1 - a) * image_a + a * image_b`` for ``a`` in ``[0, 1]``; a
    boundary is a point where the model's two top scores are equal (its arg-max class
    changes).  The model is evaluated on ``steps + 1`` evenly spaced points, then every
    interval whose ends differ in class is bisected to within ``tol`` (see the module
    docstring: excursions narrower than ``1 / steps`` can be missed).

    Parameters
    ----------
    model : callable
        Maps a batch of images to logits (or any scores whose arg-max is the class).
        It receives a float32 array of shape ``(b, *image_a.shape)`` -- the images in
        **the scale they were given** (uint8 images arrive as floats 0..255; do any
        normalisation or channel reordering inside the model) -- and returns an array
        or tensor of shape ``(b, n_classes)``.  A ``torch.nn.Module`` (TorchScript
        included) gets a float32 tensor on the device of its parameters and runs under
        ``torch.inference_mode()``; put it in ``eval()`` mode first.  Any other callable
        gets the numpy array.
    image_a, image_b : ndarray or tensor of shape (h, w) or (h, w, c)
        The two ends (any numeric dtype; one shape).  Tensors are copied to the CPU.
    steps : int, default=64
        Intervals of the first, evenly spaced pass.
    tol : float, default=1e-4
        Width of the final bisection brackets (each alpha is within ``tol / 2``).
    batch_size : int, default=256
        Points per model call.

    Returns
    -------
    BoundaryCrossings
        ``crossings`` (``Crossing(alpha, class_before, class_after)``, increasing
        alpha), ``classes_at_ends``, ``n_crossings``, ``to_dict()``.

    Examples
    --------
    >>> import numpy as np
    >>> def model(x):  # class 1 once the mean grey level passes 100
    ...     m = x.reshape(len(x), -1).mean(axis=1)
    ...     return np.stack([100 - m, m - 100], axis=1)
    >>> res = boundary_crossings(model, np.zeros((4, 4)), np.full((4, 4), 200.0))
    >>> res.n_crossings, res.classes_at_ends, round(res.crossings[0].alpha, 3)
    (1, (0, 1), 0.5)
    """
    caller = "boundary_crossings"
    p = check_boundary_params(steps=steps, tol=tol, batch_size=batch_size, caller=caller)
    a = _as_image(image_a, "image_a", caller)
    b = _as_image(image_b, "image_b", caller)
    if a.shape != b.shape:
        raise InvalidParameterError(
            f"The images of {caller} must have one shape. Got {a.shape} and {b.shape}; "
            "resize one of them first."
        )
    score = _scorer(model, caller)
    images = np.stack([a.astype(np.float64), b.astype(np.float64)])
    return _crossings(score, images, np.array([[0, 1]]), **p)[0]


def boundary_stats(
    model: Any,
    images: Any,
    pairs: Any,
    *,
    steps: int = 64,
    tol: float = 1e-4,
    batch_size: int = 256,
) -> BoundaryStats:
    """:func:`boundary_crossings` for many pairs of images, batched together.

    Parameters
    ----------
    model : callable
        As in :func:`boundary_crossings` (it receives batches of ``images[i]`` mixes).
    images : ndarray or tensor of shape (n, h, w) or (n, h, w, c)
    pairs : array-like of shape (m, 2), int
        Row indices of the pairs (``m`` may be 0).
    steps, tol, batch_size
        As in :func:`boundary_crossings`.

    Returns
    -------
    BoundaryStats
        ``results`` per pair, ``n_crossings``, ``summary`` (shares with 0, 1, 2+
        crossings), ``to_dict()``.
    """
    caller = "boundary_stats"
    p = check_boundary_params(steps=steps, tol=tol, batch_size=batch_size, caller=caller)
    arr = check_array(_to_numpy(images), "images", caller, ndim=(3, 4))
    idx = np.asarray(pairs)
    if idx.size == 0:
        idx = idx.reshape(0, 2)
    if idx.ndim != 2 or idx.shape[1] != 2 or idx.dtype.kind not in "iu":
        raise InvalidParameterError(
            f"The 'pairs' parameter of {caller} must be an int array of shape (m, 2). "
            f"Got shape {idx.shape}, dtype {idx.dtype} instead."
        )
    if len(idx) and (idx.min() < 0 or idx.max() >= len(arr)):
        raise InvalidParameterError(
            f"The 'pairs' parameter of {caller} must hold row indices 0..{len(arr) - 1}. "
            f"Got values {int(idx.min())}..{int(idx.max())} instead."
        )
    idx = idx.astype(np.int64)
    score = _scorer(model, caller)
    if not len(idx):
        return BoundaryStats(idx, ())
    results = _crossings(score, arr, idx, desc="boundaries", **p)
    return BoundaryStats(idx, tuple(results))


def dense_classes(model: Any, image_a: Any, image_b: Any, *, n_points: int = 10001) -> np.ndarray:
    """Arg-max class at ``n_points`` evenly spaced points of the path (the reference a
    dense grid gives; the tests and the benchmark compare :func:`boundary_crossings`
    with it).

    Returns
    -------
    ndarray of shape (n_points,), int64
    """
    caller = "dense_classes"
    n = check_int(n_points, "n_points", caller, min_value=2)
    a = _as_image(image_a, "image_a", caller)
    b = _as_image(image_b, "image_b", caller)
    images = np.stack([a.astype(np.float64), b.astype(np.float64)])
    path = _Path(_scorer(model, caller), images, np.array([[0, 1]]), 512)
    return path.classes(np.zeros(n, dtype=np.int64), np.linspace(0.0, 1.0, n))


# --------------------------------------------------------------------------- pairs
def pixel_cosine_pairs(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    n_pairs: int = 100,
    pool_per_class: int = 200,
    exclude: Sequence[tuple[int, int]] = (),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The most and the least similar same-class pairs of a seeded sample, by the
    cosine of the raw pixel vectors.

    ``pool_per_class`` images of each class are drawn (seeded); among the pairs of each
    class, the ``q`` with the highest and the ``q`` with the lowest cosine are taken,
    ``q`` splitting ``n_pairs`` evenly over the classes.  Pairs in ``exclude`` (e.g.
    near-duplicates) are not taken as similar pairs.

    Returns
    -------
    similar, dissimilar : ndarray of shape (<= n_pairs, 2), int64
        Row indices into ``images``.
    similar_cos, dissimilar_cos : ndarray of shape (<= n_pairs,)
        Their cosines.
    """
    caller = "pixel_cosine_pairs"
    n_pairs = check_int(n_pairs, "n_pairs", caller, min_value=0)
    pool_per_class = check_int(pool_per_class, "pool_per_class", caller, min_value=2)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    quota = np.full(len(classes), n_pairs // max(len(classes), 1))
    quota[: n_pairs - int(quota.sum())] += 1
    skip = {(min(a, b), max(a, b)) for a, b in exclude}
    sim: list[tuple[int, int, float]] = []
    dis: list[tuple[int, int, float]] = []
    for c, q in zip(classes.tolist(), quota.tolist()):
        members = np.flatnonzero(labels == c)
        pool = np.sort(rng.permutation(members)[:pool_per_class])
        if q == 0 or len(pool) < 2:
            continue
        X = images[pool].reshape(len(pool), -1).astype(np.float64)
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        C = X @ X.T
        i, j = np.triu_indices(len(pool), k=1)
        order = np.argsort(C[i, j], kind="stable")
        cand = [(int(pool[i[k]]), int(pool[j[k]]), float(C[i[k], j[k]])) for k in order]
        dis += cand[:q]
        sim += [t for t in reversed(cand) if (t[0], t[1]) not in skip][:q]

    def arrays(rows: list[tuple[int, int, float]]) -> tuple[np.ndarray, np.ndarray]:
        pairs = np.array([r[:2] for r in rows], dtype=np.int64).reshape(-1, 2)
        return pairs, np.array([r[2] for r in rows], dtype=np.float64)

    s, s_cos = arrays(sim)
    d, d_cos = arrays(dis)
    return s, d, s_cos, d_cos
