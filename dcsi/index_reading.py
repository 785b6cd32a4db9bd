"""What a DCSI value means: reference points, the classes that drive it, one line.

An index value alone says little: is 0.43 a lot?  :func:`index_reading` places the
value among *reference points*, the same index computed on well-known datasets (and
on two synthetic anchors built from one of them: its labels shuffled, so that the
classes cannot be told apart, and a pair of its classes nobody confuses).  They ship
with the package as ``dcsi/data/index_references.json``, written by
``benchmarks/index_references.py`` (``make index-references``) from the cards in
``cards/``; nothing here holds a number of its own.  Each reference point records the
index definition it was computed with, and only the points computed with the card's
definition are compared with its value (after a change of definition the reading says
that the reference points must be regenerated).

The *drivers* are read from the index components: the class pairs with the largest
``overlap`` and the classes with the largest ``confusability`` (their chance of
overlapping some other class), named.  The *interpretation* is one line tied to the reference
points, e.g. ``"0.43: between Fashion-MNIST (0.30) and Fashion-MNIST, labels shuffled
(0.50); most overlap between 'food' and 'space' (0.61)."``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from dcsi._json import to_jsonable
from dcsi._validation import check_int
from dcsi.exceptions import DataError, InvalidParameterError

__all__ = [
    "REFERENCES_RESOURCE",
    "IndexReading",
    "definition_version",
    "index_reading",
    "load_references",
]

#: Where the reference points lie inside the package.
REFERENCES_RESOURCE = "data/index_references.json"
#: Two values closer than this are read as "at the level of" one another.
SAME_LEVEL = 0.005


@dataclass(frozen=True)
class IndexReading:
    """The reading of one index value (the card's ``index.reading`` block).

    Attributes
    ----------
    interpretation : str
        One line: the value's place among the reference points and the class pair
        that overlaps most.
    definition_version : str
        The index definition the value was computed with (:func:`definition_version`).
    reference_points : list of dict
        The reference points computed with the same definition, ascending by value:
        ``name``, ``n_classes``, ``n_images``, ``value``, ``source``,
        ``definition_version``, ``synthetic`` (and ``note``).
    position : dict
        ``below`` / ``above``: names of the nearest reference points under and over the
        value (None past an end); ``at``: the reference point within 0.005, if any.
    drivers : dict
        ``pairs``: up to ``n_pairs`` of ``{"classes": [a, b], "overlap": o}``, largest
        overlap first (pairs that overlap at all); ``classes``: up to ``n_classes`` of
        ``{"class", "confusability", "nearest_class"}``, most confusable first.
    references_skipped : int
        Reference points left out: computed with another definition, or on this very
        dataset (same fingerprint).
    """

    interpretation: str
    definition_version: str
    reference_points: list[dict[str, Any]]
    position: dict[str, str | None]
    drivers: dict[str, list[dict[str, Any]]]
    references_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain Python (the card's ``index.reading``)."""
        return to_jsonable(
            {
                "interpretation": self.interpretation,
                "definition_version": self.definition_version,
                "reference_points": self.reference_points,
                "position": self.position,
                "drivers": self.drivers,
                "references_skipped": self.references_skipped,
            }
        )


def definition_version(index: dict[str, Any]) -> str:
    """The identity of the index definition behind an ``index`` block.

    The block's own ``definition_version`` when it has one (followed by the views that
    fed it, e.g. ``"3 (cnn_cosine)"``, when not every view of the definition did: the
    same definition without its wavelet view gives other values), else ``"sha256:"``
    and the first 12 hex digits of the SHA-256 of its ``definition`` text: two values
    are comparable exactly when these agree.
    """
    from dcsi.index import VIEWS

    version = index.get("definition_version")
    if version is not None:
        views = (index.get("components") or {}).get("views")
        if views is not None and list(views) != list(VIEWS):
            return f"{version} ({'+'.join(views)})"
        return str(version)
    text = str(index.get("definition", ""))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _references_schema() -> dict[str, Any]:
    from dcsi.card.card import card_schema

    return {
        "type": "object",
        "required": ["references"],
        "properties": {
            "references": {"type": "array", "items": card_schema()["$defs"]["index_reference"]}
        },
    }


def load_references(path: Any = None) -> list[dict[str, Any]]:
    """The reference points: the shipped file, or ``path``, checked against the schema.

    Parameters
    ----------
    path : path-like, default=None
        A file in the format of ``dcsi/data/index_references.json``; None -> that file,
        found through ``importlib.resources`` (so also from an installed wheel).

    Returns
    -------
    list of dict
        One dict per reference point (see :class:`IndexReading`).

    Raises
    ------
    DataError
        The file is missing, is not JSON or fails the schema.
    """
    from importlib.resources import files

    import jsonschema

    where = str(path) if path is not None else f"dcsi/{REFERENCES_RESOURCE}"
    try:
        if path is None:
            text = files("dcsi").joinpath(REFERENCES_RESOURCE).read_text("utf-8")
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"Cannot read the index reference points {where}: {exc}. Regenerate them with "
            "`make index-references`."
        ) from None
    try:
        jsonschema.validate(data, _references_schema())
    except jsonschema.ValidationError as exc:
        raise DataError(
            f"The index reference points {where} fail the schema: {exc.message}. "
            "Regenerate them with `make index-references`."
        ) from None
    return list(data["references"])


def _drivers(
    components: dict[str, Any], classes: list[str], n_pairs: int, n_classes: int
) -> dict[str, list[dict[str, Any]]]:
    """The pairs with the largest overlap and the most confusable classes, named."""
    k = len(classes)
    pairs: list[dict[str, Any]] = []
    overlap = components.get("overlap")
    if overlap is not None:
        o = np.asarray(overlap, dtype=np.float64)
        if o.shape != (k, k):
            raise InvalidParameterError(
                f"The index components' 'overlap' has shape {o.shape} but {k} class "
                "names were given; pass the names of the classes the index kept."
            )
        iu, ju = np.triu_indices(k, 1)
        vals = np.nan_to_num(np.maximum(o[iu, ju], o[ju, iu]), nan=0.0)
        order = sorted(range(len(vals)), key=lambda t: (-vals[t], iu[t], ju[t]))
        pairs = [
            {"classes": [classes[iu[t]], classes[ju[t]]], "overlap": float(vals[t])}
            for t in order[:n_pairs]
            if vals[t] > 0
        ]
    conf = components.get("confusability")
    nearest = components.get("nearest_class") or [None] * k
    top: list[dict[str, Any]] = []
    if conf is not None:
        c = np.nan_to_num(np.asarray(conf, dtype=np.float64), nan=0.0)
        order = sorted(range(k), key=lambda i: (-c[i], i))
        top = [
            {
                "class": classes[i],
                "confusability": float(c[i]),
                "nearest_class": None if nearest[i] is None else str(nearest[i]),
            }
            for i in order[:n_classes]
            if c[i] > 0
        ]
    return {"pairs": pairs, "classes": top}


def _place(value: float, refs: list[dict[str, Any]]) -> tuple[dict[str, str | None], str]:
    """Position among the (sorted) reference points, and its words."""

    def said(r: dict[str, Any]) -> str:
        return f"{r['name']} ({r['value']:.2f})"

    at = [r for r in refs if abs(r["value"] - value) < SAME_LEVEL]
    below = [r for r in refs if r["value"] <= value]
    above = [r for r in refs if r["value"] > value]
    pos: dict[str, str | None] = {
        "below": below[-1]["name"] if below else None,
        "above": above[0]["name"] if above else None,
        "at": at[0]["name"] if at else None,
    }
    if at:
        words = f"at the level of {said(at[0])}"
    elif below and above:
        words = f"between {said(below[-1])} and {said(above[0])}"
    elif above:
        words = f"below every reference point (the lowest: {said(above[0])})"
    else:
        words = f"above every reference point (the highest: {said(below[-1])})"
    return pos, words


def index_reading(
    index: dict[str, Any],
    classes: list[str],
    *,
    references: list[dict[str, Any]] | None = None,
    fingerprint: str | None = None,
    n_pairs: int = 5,
    n_classes: int = 5,
) -> IndexReading:
    """Read an index value: reference points, drivers and a one-line interpretation.

    Parameters
    ----------
    index : dict
        An ``index`` block: ``IndexResult.to_dict()`` or ``card.index_info`` (``value``,
        ``definition``, ``components`` with ``overlap`` (K', K') and ``confusability``
        (K',); a component that is missing gives no drivers of that kind).
    classes : list of str
        Names of the K' classes the components describe (the classes with images, in
        label order).
    references : list of dict, default=None
        Reference points; None -> :func:`load_references` (the shipped file).
    fingerprint : str, default=None
        The dataset's fingerprint (``ImageSet.fingerprint()``, the card's
        ``dataset.fingerprint``): a reference point made from this very dataset is left
        out, so that a dataset is never read against itself.
    n_pairs, n_classes : int, default=5
        How many pairs and classes to name as drivers.

    Returns
    -------
    IndexReading

    Examples
    --------
    >>> block = {"value": 0.4, "definition": "d", "components": {
    ...     "overlap": [[0, 0.5], [0.5, 0]], "confusability": [0.5, 0.5]}}
    >>> refs = [{"name": "A", "n_classes": 2, "n_images": 10, "value": 0.2,
    ...          "source": "s", "definition_version": definition_version(block)}]
    >>> index_reading(block, ["cat", "dog"], references=refs).interpretation
    "0.40: above every reference point (the highest: A (0.20)); most overlap between 'cat' and 'dog' (0.50)."
    """
    caller = "index_reading"
    n_pairs = check_int(n_pairs, "n_pairs", caller, min_value=1)
    n_classes = check_int(n_classes, "n_classes", caller, min_value=1)
    version = definition_version(index)
    refs_all = load_references() if references is None else list(references)
    refs = sorted(
        (
            dict(r)
            for r in refs_all
            if str(r.get("definition_version")) == version
            and (fingerprint is None or r.get("fingerprint") != fingerprint)
        ),
        key=lambda r: (float(r["value"]), str(r["name"])),
    )
    drivers = _drivers(index.get("components") or {}, list(classes), n_pairs, n_classes)
    value = index.get("value")
    pos: dict[str, str | None] = {"below": None, "above": None, "at": None}
    if value is None:
        line = "The index is undefined for this dataset"
    elif refs:
        pos, words = _place(float(value), refs)
        line = f"{float(value):.2f}: {words}"
    elif " (" in version:  # a definition fed by fewer views than it has
        line = (
            f"{float(value):.2f}: no reference point was computed with the views that fed "
            f"this value ({version}; the reference points use every view: analyze with "
            "the wavelet analyzer too)"
        )
    else:
        line = (
            f"{float(value):.2f}: no reference point was computed with this index "
            "definition (regenerate them with `make index-references`)"
        )
    if drivers["pairs"]:
        top = drivers["pairs"][0]
        a, b = top["classes"]
        line += f"; most overlap between {a!r} and {b!r} ({top['overlap']:.2f})."
    else:
        line += "; no two classes overlap."
    return IndexReading(
        interpretation=line,
        definition_version=version,
        reference_points=refs,
        position=pos,
        drivers=drivers,
        references_skipped=len(refs_all) - len(refs),
    )
