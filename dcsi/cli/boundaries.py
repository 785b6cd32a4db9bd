"""``dcsi boundaries SOURCE --model PATH --out DIR``: decision boundaries between pairs.

Three kinds of pairs are drawn from the source and the straight path between the two
images of each is searched for decision boundaries of the model
(:func:`dcsi.boundaries.boundary_stats`):

- ``near_duplicate``: an image and a near-copy of it (:func:`dcsi.find_redundancy`,
  the default wavelet search; a representative and each other member of a group);
- ``similar``: the most similar same-class pairs of a seeded sample (pixel cosine);
- ``dissimilar``: the least similar same-class pairs of the same sample.

The model is a TorchScript file only (``torch.jit.save``): loading it runs no pickled
Python code, which a ``torch.save`` file would.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dcsi._validation import check_choice, check_int
from dcsi.cli._common import (
    add_progress_option,
    add_source_options,
    check_out_dir,
    not_read,
    source_kwargs,
)

__all__ = ["KINDS", "register", "run"]

#: The pair kinds, in the order of the table.
KINDS = ("near_duplicate", "similar", "dissimilar")
_CALLER = "dcsi boundaries"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "boundaries",
        help="decision boundaries of a model between near-duplicate, similar and dissimilar pairs",
        description="Does a trained model cross a decision boundary (its arg-max class "
        "changes) on the straight path (1 - a) x1 + a x2 between two images? Samples "
        "near-duplicate pairs (dcsi redundancy's wavelet search) and the most and least "
        "similar same-class pairs (pixel cosine, seeded sample), counts the crossings "
        "of each pair (a grid of --steps intervals, then bisection to --tol), writes "
        "DIR/boundaries.json and DIR/boundaries.csv and prints the shares of pairs with "
        "0, 1 and 2+ crossings per kind. Crossings narrower than 1/--steps can be missed.",
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="image folder, saved HF dataset, Parquet file(s), hf:<repo>[:<config>], sample:digits",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="PATH",
        help="a TorchScript file (torch.jit.save of torch.jit.script/trace; pickled "
        "torch.save files are refused). It gets a float32 tensor of shape (b, h, w) "
        "(--mode L) or (b, h, w, 3) (--mode RGB) with grey levels 0..255, and returns "
        "logits (b, n_classes): put resizing, scaling and channel order inside it",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_source_options(p)
    p.add_argument(
        "--pairs", type=int, default=100, metavar="N", help="pairs per kind (default 100)"
    )
    p.add_argument("--steps", type=int, default=64, metavar="S", help="grid intervals (default 64)")
    p.add_argument("--tol", type=float, default=1e-4, help="bisection bracket width (default 1e-4)")
    p.add_argument(
        "--pool-per-class",
        type=int,
        default=200,
        metavar="N",
        help="images per class sampled for the same-class pairs (default 200)",
    )
    p.add_argument("--mode", choices=("L", "RGB"), default="L", help="grey or colour input")
    p.add_argument("--batch-size", type=int, default=256, help="points per model call")
    p.add_argument("--seed", type=int, default=0)
    add_progress_option(p)
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> dict[str, Any]:
    """Every option checked, and the model file found, before any data is read."""
    from dcsi.boundaries import check_boundary_params
    from dcsi.exceptions import DataError

    params = check_boundary_params(
        steps=args.steps, tol=args.tol, batch_size=args.batch_size, caller=_CALLER
    )
    check_int(args.pairs, "pairs", _CALLER, min_value=1)
    check_int(args.pool_per_class, "pool_per_class", _CALLER, min_value=2)
    check_choice(args.mode, "mode", _CALLER, ("L", "RGB"))
    model = Path(args.model).expanduser()
    if not model.is_file():
        what = "is a folder" if model.is_dir() else "does not exist"
        raise DataError(f"--model {args.model} {what}; give a TorchScript file (torch.jit.save).")
    check_out_dir(args.out)
    return params


def load_torchscript(path: str | Path) -> Any:
    """A TorchScript model on the CPU in eval mode; :class:`DataError` if ``path`` is not
    one (a pickled ``torch.save`` file included: it is never unpickled)."""
    from dcsi._validation import require
    from dcsi.exceptions import DataError

    torch = require("torch", "dcsi boundaries", "dcsi[torch]")
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 marks TorchScript deprecated; it is still the one format
            # whose loading runs no pickled code
            warnings.filterwarnings("ignore", message=".*torch.jit.load", category=FutureWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        text = str(exc).strip()
        first = text.splitlines()[0].split(". ")[0] if text else type(exc).__name__
        raise DataError(
            f"--model {path} is not a TorchScript file ({first}); save the model with "
            "torch.jit.save(torch.jit.script(model), PATH) -- pickled torch.save files "
            "are not loaded."
        ) from None
    model.eval()
    return model


def _near_duplicate_pairs(image_set: Any, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` (representative, member) pairs of the near-duplicate groups, seeded."""
    from dcsi.redundancy import find_redundancy

    res = find_redundancy(image_set, seed=seed)
    pairs = [(g.indices[0], i) for g in res for i in g.indices[1:]]
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    if len(arr) > n:
        arr = arr[np.sort(np.random.default_rng(seed).choice(len(arr), n, replace=False))]
    return arr


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    fields = ["kind", "id_a", "id_b", "label_a", "label_b", "cosine", "n_crossings"]
    fields += ["class_a", "class_b", "alphas"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(
            {
                **{k: r[k] for k in fields[:7]},
                "class_a": r["classes_at_ends"][0],
                "class_b": r["classes_at_ends"][1],
                "alphas": ";".join(f"{c['alpha']:.6f}" for c in r["crossings"]),
            }
        )
    return buf.getvalue()


def _table(summary: dict[str, dict]) -> list[str]:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    lines = [f"  {'pairs':<15} {'n':>5} {'0':>7} {'1':>7} {'2+':>7} {'mean':>6}"]
    for kind in KINDS:
        s = summary[kind]
        mean = "-" if s["mean_crossings"] is None else f"{s['mean_crossings']:.2f}"
        lines.append(
            f"  {kind:<15} {s['n_pairs']:>5} {pct(s['share_0']):>7} {pct(s['share_1']):>7} "
            f"{pct(s['share_2plus']):>7} {mean:>6}"
        )
    return lines


def _pairs(images: Any, arr: np.ndarray, args: argparse.Namespace) -> dict[str, tuple]:
    """The pairs of each kind (indices, cosines or None)."""
    import logging

    from dcsi.boundaries import pixel_cosine_pairs

    near = _near_duplicate_pairs(images, args.pairs, args.seed)
    kinds: dict[str, tuple] = {"near_duplicate": (near, None)}
    if images.labels is None:
        logging.getLogger(__name__).warning(
            "%s: the source is unlabelled; only near-duplicate pairs are searched", _CALLER
        )
        empty = np.zeros((0, 2), dtype=np.int64)
        return {**kinds, "similar": (empty, None), "dissimilar": (empty, None)}
    sim, dis, s_cos, d_cos = pixel_cosine_pairs(
        arr,
        images.labels,
        n_pairs=args.pairs,
        pool_per_class=args.pool_per_class,
        exclude=[tuple(p) for p in near.tolist()],
        seed=args.seed,
    )
    return {**kinds, "similar": (sim, s_cos), "dissimilar": (dis, d_cos)}


def run(args: argparse.Namespace) -> int:
    from dcsi._io import atomic_write_json, atomic_write_text
    from dcsi.boundaries import boundary_stats
    from dcsi.sources import open_source

    params = _check(args)
    model = load_torchscript(Path(args.model).expanduser())
    images = open_source(args.source, **source_kwargs(args))
    arr = images.to_array(mode=args.mode)
    rows: list[dict] = []
    summary: dict[str, dict] = {}
    for kind, (pairs, cos) in _pairs(images, arr, args).items():
        stats = boundary_stats(model, arr, pairs, **params)
        summary[kind] = stats.summary
        for k, ((a, b), res) in enumerate(zip(pairs.tolist(), stats.results)):
            rows.append(
                {
                    "kind": kind,
                    "id_a": images.ids[a],
                    "id_b": images.ids[b],
                    "label_a": None if images.labels is None else images.classes[images.labels[a]],
                    "label_b": None if images.labels is None else images.classes[images.labels[b]],
                    "cosine": None if cos is None else round(float(cos[k]), 6),
                    **res.to_dict(),
                }
            )
    model_bytes = Path(args.model).expanduser().read_bytes()
    result = {
        "source": images.name,
        "split": images.split,
        "n_images": len(images),
        "model": {"path": str(args.model), "sha256": hashlib.sha256(model_bytes).hexdigest()},
        "params": {
            **params,
            "pairs": args.pairs,
            "pool_per_class": args.pool_per_class,
            "mode": args.mode,
            "seed": args.seed,
            "similarity": "cosine of raw pixel vectors",
            "near_duplicates": "find_redundancy(method='wavelet') groups",
        },
        "summary": summary,
        "pairs": rows,
        **not_read(images),
    }
    out = Path(args.out)
    paths = [
        atomic_write_json(out / "boundaries.json", result),
        atomic_write_text(out / "boundaries.csv", _csv(rows)),
    ]
    print(
        f"{images.name}: {len(images)} images; decision boundaries on the path between "
        f"pairs ({params['steps']} steps, tol {params['tol']:g})"
    )
    print("\n".join(_table(summary)))
    for path in paths:
        print(f"wrote {path}")
    return 0
