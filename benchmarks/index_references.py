"""The index's reference points: ``dcsi/data/index_references.json`` (shipped with dcsi).

The reading of an index value (:func:`dcsi.index_reading`, the card's ``index.reading``)
places it among the same index on well-known datasets.  This script writes them:

- one point per card in ``cards/*/dcsi.json`` (digits, Fashion-MNIST, openclipart-png;
  ``make cards`` regenerates them): the card's ``index.value``, its class and image
  counts and its command; and, for a card whose index had both views, the same
  definition on its cnn_cosine matrix alone, so that a card made with ``--analyzers
  cnn`` has points of its own definition too;
- two synthetic anchors (on both views, and on the CNN view alone) computed here from
  the Fashion-MNIST card's own features (dcsi's
  feature cache: the card's backbone, input size and pooling; nothing is extracted
  when the card was made on this machine) and, when the card's index had the wavelet
  view, its grey images at the card's working size, with the index function the
  analysis uses:
  * "Fashion-MNIST, labels shuffled": the card's 60,000 images with their labels
    permuted (seed 0), so that the ten classes are ten draws from one distribution and
    cannot be told apart: where "indistinguishable" lies on the scale;
  * "Fashion-MNIST, Trouser vs Bag": two of its classes nobody confuses (chosen by
    their meaning, not by their index), where "well separated" lies.

Each point records the definition it was computed with (``definition_version``: the
card's ``index.definition_version``, else a hash of its definition text), so that a
reading never compares values of two definitions.  With ``--refresh-cards`` (what
``make index-references`` runs) the ``index.reading`` of every card in ``cards/`` is
then recomputed with the new points and the card's files rewritten (only where the
reading changed), so that ``make cards`` leaves cards and reference points in step.

    python benchmarks/index_references.py                   # writes the JSON, prints a table
    python benchmarks/index_references.py --refresh-cards   # and updates the cards' readings

Nothing is timed; the figures are index values (deterministic for a given cache).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from dcsi._io import atomic_write_text  # noqa: E402
from dcsi.card import load_card, write_card_files  # noqa: E402
from dcsi.index import index_report  # noqa: E402
from dcsi.index_reading import REFERENCES_RESOURCE, definition_version, index_reading  # noqa: E402
from dcsi.similarity.class_cosine import class_similarity  # noqa: E402
from dcsi.similarity.spreads import class_spreads  # noqa: E402
from dcsi.similarity.wavelet import class_wavelet_similarity  # noqa: E402

OUT = ROOT / "dcsi" / REFERENCES_RESOURCE
CARDS = ROOT / "cards"
#: display names of the cards' datasets
NAMES = {
    "digits": "digits (sklearn)",
    "fashion-mnist": "Fashion-MNIST",
    "openclipart": "openclipart-png",
}
SEPARATED = ("Trouser", "Bag")


def card_points(folder: Path) -> list[dict[str, Any]]:
    """The reference points of one card: its index value and, when the wavelet view fed
    it, the same definition on the CNN view alone (for cards made with ``--analyzers
    cnn``), computed from the card's cnn_cosine matrix; none without an index value."""
    card = load_card(folder / "dcsi.json")
    idx = card.data.get("index") or {}
    if idx.get("value") is None:
        return []
    point = {
        "name": NAMES.get(folder.name, folder.name),
        "n_classes": len(card.classes),
        "n_images": int(card.n_images),
        "value": round(float(idx["value"]), 4),
        "source": f"cards/{folder.name}/dcsi.json: {card.data['provenance'].get('command')}",
        "definition_version": definition_version(idx),
        "synthetic": False,
        "fingerprint": card.data["dataset"]["fingerprint"],
    }
    if "wavelet" not in idx["components"].get("views", []):
        return [point]
    counts = card.data["dataset"]["class_counts"]
    spreads = card.data["similarity"]["cnn_cosine"].get("spreads")
    cnn = index_report(card.similarity("cnn_cosine"), counts, spreads=spreads).to_dict()
    return [
        point,
        point
        | {
            "value": round(float(cnn["value"]), 4),
            "definition_version": definition_version(cnn),
            "source": point["source"] + " (its cnn_cosine matrix alone)",
        },
    ]


def _index_blocks(
    x: np.ndarray, grey: np.ndarray | None, y: np.ndarray, names: list[str]
) -> list[dict[str, Any]]:
    """The index blocks (value and components; the peers are not needed here) for
    features ``x`` (n, d) and labels ``y`` (n,): with the wavelet view of the grey
    images ``grey`` (n, h, w) at the card's working size first, when given, then with
    the CNN view alone.  The class matrices are computed once."""
    k = len(names)
    s = class_similarity(x, y, n_classes=k)
    v = class_spreads(x, y, n_classes=k)
    counts = np.bincount(y, minlength=k)
    blocks = []
    if grey is not None:
        w = class_wavelet_similarity(grey, y, n_classes=k)
        both = index_report(
            s, counts, wavelet=w.matrix, spreads=v, wavelet_spreads=w.spreads, classes=names
        )
        blocks.append(both.to_dict())
    blocks.append(index_report(s, counts, spreads=v, classes=names).to_dict())
    return blocks


def anchors(folder: Path) -> list[dict[str, Any]]:
    """The two synthetic points from the card's features (see the module docstring),
    for each set of views: both (when the card's index had them) and the CNN view
    alone."""
    import dcsi

    card = load_card(folder / "dcsi.json")
    ds, feats = card.data["dataset"], card.data["features"]
    images = dcsi.open_source(ds["source"], split=ds["split"])
    fs = dcsi.extract_features(
        images,
        backbone=feats["backbone"],
        image_size=feats["image_size"],
        pooling=feats.get("pooling", "gap"),
    )
    if fs.n_cached < len(fs):
        print(f"note: {len(fs) - fs.n_cached} features were not cached", file=sys.stderr)
    x, y, names = np.asarray(fs.features), np.asarray(images.labels), list(images.classes)
    grey = None
    if "wavelet" in card.data["index"]["components"].get("views", []):
        size = card.data["provenance"]["parameters"]["working_size"]
        grey = images.to_array(size=tuple(size), mode="L")
    real = _index_blocks(x, grey, y, names)[0]
    stored = card.data["index"]["value"]
    if abs(real["value"] - stored) > 1e-6:  # the features must be the card's
        raise SystemExit(f"{folder}: recomputed index {real['value']} != card's {stored}")
    shuffled = _index_blocks(x, grey, np.random.default_rng(0).permutation(y), names)
    pick = [names.index(c) for c in SEPARATED]
    rows = np.flatnonzero(np.isin(y, pick))
    pair = _index_blocks(
        x[rows],
        None if grey is None else grey[rows],
        np.searchsorted(pick, y[rows]),
        list(SEPARATED),
    )
    base = NAMES.get(folder.name, folder.name)
    command = "benchmarks/index_references.py"
    points = []
    for shuffled_block, pair_block in zip(shuffled, pair):
        points += [
            {
                "name": f"{base}, labels shuffled",
                "n_classes": len(names),
                "n_images": len(y),
                "value": round(float(shuffled_block["value"]), 4),
                "source": f"{command}: the features of cards/{folder.name}, labels permuted "
                "(seed 0)",
                "definition_version": definition_version(shuffled_block),
                "synthetic": True,
                "note": "classes drawn from one distribution: indistinguishable",
            },
            {
                "name": f"{base}, {' vs '.join(SEPARATED)}",
                "n_classes": 2,
                "n_images": int(rows.size),
                "value": round(float(pair_block["value"]), 4),
                "source": f"{command}: the features of cards/{folder.name}, two of its classes",
                "definition_version": definition_version(pair_block),
                "synthetic": True,
                "note": "two classes nobody confuses: well separated",
            },
        ]
    return points


def image_loader(images: Any) -> Any:
    """``load(image_id) -> PIL.Image`` over an opened source (the report's galleries)."""
    position = {item_id: i for i, item_id in enumerate(images.ids)}
    return lambda item_id: images.load(position[item_id])


def refresh_cards(references: list[dict[str, Any]]) -> list[str]:
    """Recompute each card's ``index.reading``; rewrite the cards whose reading changed."""
    import dcsi

    changed = []
    for path in sorted(CARDS.glob("*/dcsi.json")):
        card = load_card(path)
        data = card.to_dict()
        idx = data.get("index")
        if not idx:
            continue
        counts = (data.get("features") or {}).get("class_counts") or data["dataset"]["class_counts"]
        kept = [c for c, n in zip(card.classes, counts) if n > 0]
        reading = index_reading(
            idx, kept, references=references, fingerprint=data["dataset"]["fingerprint"]
        ).to_dict()
        if idx.get("reading") == reading:
            continue
        idx["reading"] = reading
        ds = data["dataset"]
        load = image_loader(dcsi.open_source(ds["source"], split=ds["split"]))
        write_card_files(dcsi.Card(data), path.parent, load_image=load)
        changed.append(str(path.parent.relative_to(ROOT)))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--refresh-cards", action="store_true", help="update the readings of cards/*"
    )
    args = parser.parse_args(argv)
    points = []
    for folder in sorted(p.parent for p in CARDS.glob("*/dcsi.json")):
        points += card_points(folder)
    if (CARDS / "fashion-mnist" / "dcsi.json").is_file():
        points += anchors(CARDS / "fashion-mnist")
    points.sort(key=lambda p: (p["value"], p["name"]))
    payload = {
        "description": "The DCSI on well-known datasets and two synthetic anchors, for "
        "reading an index value (dcsi.index_reading). Regenerate with `make "
        "index-references` after the index definition changes.",
        "generated_by": "python benchmarks/index_references.py",
        "references": points,
    }
    atomic_write_text(OUT, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    print("| reference point | classes | images | DCSI | definition |")
    print("|---|---|---|---|---|")
    for p in points:
        print(
            f"| {p['name']} | {p['n_classes']} | {p['n_images']:,} | {p['value']:.4f} | "
            f"{p['definition_version']} |"
        )
    print(f"wrote {OUT.relative_to(ROOT)}")
    if args.refresh_cards:
        for folder in refresh_cards(points):
            print(f"refreshed the reading of {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
