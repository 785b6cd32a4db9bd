"""The dataset card: a validated, versioned JSON document and its Python view.

The card is a plain JSON dict (CONTRACT §6) checked against ``schema.json`` (JSON
Schema draft 2020-12) plus a few checks a schema cannot express (matrix sizes against
the number of classes).  :class:`Card` wraps it read-only; ``dcsi.json`` is the source
of truth, the Hugging Face README block and ``croissant.json`` are views of it.

Which blocks are required
-------------------------
``schema_version``, ``dcsi_version``, ``dataset`` and ``provenance`` are always present.
``features``, ``similarity``, ``index``, ``class_clusters`` and ``redundancy`` may be
absent or ``null`` when that analysis was not run (unlabelled data has no class
similarity, clusters or index; a run without the redundancy analyzer has no groups).
Every block accepts extra keys, so analyzers can add fields without a schema change.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dcsi._io import atomic_write_text
from dcsi._json import to_jsonable
from dcsi.exceptions import CardSchemaError, DataError, InvalidParameterError

__all__ = [
    "CARD_FILENAME",
    "MAX_DEPTH",
    "SCHEMA_VERSION",
    "Card",
    "RedundancyGroup",
    "card_schema",
    "card_to_json",
    "load_card",
    "parse_card_json",
    "recorded_card_sha256",
    "stale_views",
    "validate_card",
]

logger = logging.getLogger(__name__)

#: Version of the card format written by this dcsi (semver; readers refuse a newer major).
SCHEMA_VERSION = "1.6.0"
#: File name of the card inside a card folder.
CARD_FILENAME = "dcsi.json"

_NUMBER_SET = frozenset((int, float))
_NUMBER_OR_NULL_SET = frozenset((int, float, type(None)))
_SCALAR_SET = frozenset((int, float, type(None), str, bool))
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_OPTIONAL_BLOCKS = ("features", "similarity", "index", "class_clusters", "redundancy")


@functools.lru_cache(maxsize=1)
def card_schema() -> dict:
    """The card's JSON Schema (``dcsi/card/schema.json``), read once; do not modify it."""
    path = Path(__file__).with_name("schema.json")
    return json.loads(path.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = card_schema()
    cls = jsonschema.Draft202012Validator
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _plain(obj: Any, where: str = "card") -> Any:
    """JSON-ready plain Python: numpy -> lists/floats/ints, tuples -> lists, NaN -> None."""
    return to_jsonable(obj, where=where, what="The card", error=CardSchemaError)


#: Deepest nesting of objects and lists a card file may have.
MAX_DEPTH = 64
#: Longest integer (in digits) a card file may hold; card integers are counts and sizes.
_MAX_INT_DIGITS = 19
_SHOWN = 60  # characters of an offending value shown in a message


def _short(value: Any) -> str:
    """``repr(value)`` cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _schema_message(err: Any) -> str:
    """One short line for a jsonschema error: the JSON path of the key and the problem.

    ``anyOf`` / ``oneOf`` errors are replaced by the most specific error of their
    branches (the one deepest in the card), a failing key *name* (``propertyNames``)
    is added to the path, and offending values are cut to a few dozen characters.
    """
    while err.context:
        err = max(err.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
    path = list(err.absolute_path)
    if "propertyNames" in err.relative_schema_path or "propertyNames" in err.schema_path:
        where = _path_str([*path, _short(err.instance).strip("'")])
        pattern = err.schema.get("pattern") if isinstance(err.schema, Mapping) else None
        rule = f"must match {pattern!r}" if pattern else "is not allowed"
        return (
            f"The card fails the dcsi schema at '{where}': the key name "
            f"{_short(err.instance)} {rule}."
        )
    message = err.message
    text = repr(err.instance)
    if len(text) > _SHOWN and text in message:
        message = message.replace(text, _short(err.instance))
    if len(message) > 200:
        message = message[:197] + "..."
    return f"The card fails the dcsi schema at '{_path_str(path)}': {message}"


class _Bad:
    """A value json.loads met that a card may not hold (reported with its key later)."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what


class _Pairs(dict):
    """An object read from JSON, remembering the first key it had twice."""

    __slots__ = ("duplicate",)
    duplicate: str | None


def _object(pairs: list[tuple[str, Any]]) -> dict:
    out = _Pairs(pairs)
    out.duplicate = None
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                out.duplicate = key
                break
            seen.add(key)
    return out


def _int(text: str) -> Any:
    digits = text.lstrip("-")
    if len(digits) > _MAX_INT_DIGITS:
        return _Bad(f"an integer of {len(digits)} digits (a card's integers fit in 64 bits)")
    value = int(text)
    if not -(2**63) <= value < 2**63:
        return _Bad(f"the integer {text} (a card's integers fit in 64 bits)")
    return value


def _float(text: str) -> Any:
    value = float(text)
    if math.isinf(value):
        return _Bad(f"the number {text[:20]}, too large for a float (use a finite number)")
    return value


def _constant(text: str) -> Any:
    return _Bad(f"{text}, which is not JSON (use null for an undefined number)")


def _depth_location(text: str) -> str:
    """``line L, column C`` where ``text`` first nests deeper than :data:`MAX_DEPTH`."""
    blanked = re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: " " * len(m.group()), text)
    raw = np.frombuffer(blanked.encode("utf-32-le"), dtype=np.uint32)
    step = np.isin(raw, (ord("["), ord("{"))).astype(np.int64) - np.isin(raw, (ord("]"), ord("}")))
    deep = np.flatnonzero(np.cumsum(step) > MAX_DEPTH)
    if not len(deep):
        return "an unknown place"
    pos = int(deep[0])
    line = text.count("\n", 0, pos) + 1
    return f"line {line}, column {pos - (text.rfind(chr(10), 0, pos) + 1) + 1}"


def _check_parsed(data: Any) -> None:
    """Raise CardSchemaError at the first duplicate key, bad number or too-deep value."""
    stack: list[tuple[Any, list]] = [(data, [])]
    while stack:
        obj, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise CardSchemaError(
                f"The card is nested more than {MAX_DEPTH} levels deep at "
                f"'{_path_str(path[:8])}...'; a card is a few levels of objects and lists."
            )
        if isinstance(obj, _Bad):
            raise CardSchemaError(f"The card has {obj.what} at '{_path_str(path)}'.")
        if isinstance(obj, _Pairs):
            if obj.duplicate is not None:
                raise CardSchemaError(
                    f"The card has the key {_short(obj.duplicate)} twice at "
                    f"'{_path_str(path)}'; JSON object keys must be unique."
                )
            stack.extend((v, [*path, k]) for k, v in reversed(obj.items()))
        elif isinstance(obj, list):
            if set(map(type, obj)) <= _SCALAR_SET:  # a row of numbers or names: C speed
                continue
            stack.extend((v, [*path, i]) for i, v in reversed(list(enumerate(obj))))


def parse_card_json(text: str) -> Any:
    """Parse card JSON strictly: no NaN/Infinity, no overflowing numbers, unique keys.

    Parameters
    ----------
    text : str
        The JSON text.

    Returns
    -------
    object
        Plain Python (dicts, lists, str, int, float, bool, None).

    Raises
    ------
    CardSchemaError
        One line naming the JSON path of the first problem: a duplicate key, ``NaN`` /
        ``Infinity``, a number that overflows a float, an integer beyond 64 bits, or
        nesting deeper than :data:`MAX_DEPTH`; or the JSON syntax error.
    """
    try:
        data = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
        )
    except RecursionError:
        raise CardSchemaError(
            f"The card is nested more than {MAX_DEPTH} levels deep (at "
            f"{_depth_location(text)}); a card is a few levels of objects and lists."
        ) from None
    except json.JSONDecodeError as exc:
        raise CardSchemaError(f"The card is not valid UTF-8 JSON: {exc}.") from None
    _check_parsed(data)
    return data


def _path_str(path: Any) -> str:
    parts = []
    for p in path:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(f".{p}" if parts else str(p))
    return "".join(parts) or "<top level>"


def _check_version(data: Mapping) -> None:
    version = data.get("schema_version")
    if not isinstance(version, str):
        raise CardSchemaError(
            "The card has no valid 'schema_version' (a semver string such as "
            f"{SCHEMA_VERSION!r}); got {version!r}. Is this a dcsi.json file?"
        )
    m = _SEMVER.match(version)
    if m is None:
        raise CardSchemaError(
            f"The card's 'schema_version' must be a semver string such as "
            f"{SCHEMA_VERSION!r}. Got {version!r} instead."
        )
    major = int(m.group(1))
    supported = int(_SEMVER.match(SCHEMA_VERSION).group(1))  # type: ignore[union-attr]
    if major > supported:
        raise CardSchemaError(
            f"The card has schema_version {version}, a newer major version than this "
            f"dcsi reads ({SCHEMA_VERSION}); upgrade dcsi (pip install -U dcsi)."
        )


def _check_square(matrix: Any, k: int, where: str) -> None:
    if matrix is None:
        return
    rows = len(matrix)
    bad = [i for i, row in enumerate(matrix) if len(row) != rows]
    if bad:
        raise CardSchemaError(
            f"The card's '{where}' is not square: it has {rows} rows but row {bad[0]} "
            f"has {len(matrix[bad[0]])} entries."
        )
    if rows != k:
        raise CardSchemaError(
            f"The card's '{where}' is {rows} x {rows} but dataset.classes lists {k} "
            "classes; matrices use the class order of dataset.classes."
        )


def _check_consistency(data: Mapping) -> None:
    """Checks the schema cannot express: sizes that depend on len(classes)."""
    ds = data["dataset"]
    k = len(ds["classes"])
    if len(ds["class_counts"]) != k:
        raise CardSchemaError(
            f"The card's 'dataset.class_counts' has {len(ds['class_counts'])} entries "
            f"but dataset.classes lists {k} classes."
        )
    for kind, entry in (data.get("similarity") or {}).items():
        _check_square(entry["matrix"], k, f"similarity.{kind}.matrix")
        _check_square(entry.get("stderr"), k, f"similarity.{kind}.stderr")
        _check_square(entry.get("spreads"), k, f"similarity.{kind}.spreads")
    feats = data.get("features")
    if feats:
        sums = feats.get("class_sums")
        if sums is not None:
            if len(sums) != k:
                raise CardSchemaError(
                    f"The card's 'features.class_sums' has {len(sums)} rows but "
                    f"dataset.classes lists {k} classes."
                )
            dims = {len(row) for row in sums}
            if dims and dims != {feats["dim"]}:
                raise CardSchemaError(
                    f"The card's 'features.class_sums' rows have lengths {sorted(dims)} "
                    f"but features.dim is {feats['dim']}."
                )
        counts = feats.get("class_counts")
        if counts is not None and len(counts) != k:
            raise CardSchemaError(
                f"The card's 'features.class_counts' has {len(counts)} entries but "
                f"dataset.classes lists {k} classes."
            )
    cc = data.get("class_clusters")
    if cc:
        for key, part in cc["partitions"].items():
            if len(part) != k:
                raise CardSchemaError(
                    f"The card's 'class_clusters.partitions.{key}' has {len(part)} "
                    f"entries but dataset.classes lists {k} classes (one cluster id "
                    "per class)."
                )
        rk = cc.get("recommended_k")
        if rk is not None and str(rk) not in cc["partitions"]:
            raise CardSchemaError(
                f"The card's 'class_clusters.recommended_k' is {rk} but partitions has "
                f"no entry {str(rk)!r} (has {sorted(cc['partitions'], key=int)})."
            )


_NUMBER_TYPES = (int, float)


def _check_numeric_matrix(value: Any, where: str, *, allow_null: bool) -> None:
    """Fast type check of a list of lists of numbers (jsonschema is slow per item)."""
    kinds = "'number', 'null'" if allow_null else "'number'"
    if not isinstance(value, list):
        raise CardSchemaError(
            f"The card fails the dcsi schema at '{where}': {value!r:.60} is not of type 'array'"
        )
    allowed = _NUMBER_OR_NULL_SET if allow_null else _NUMBER_SET
    for i, row in enumerate(value):
        if not isinstance(row, list):
            raise CardSchemaError(
                f"The card fails the dcsi schema at '{where}[{i}]': {row!r:.60} is not of type 'array'"
            )
        if set(map(type, row)) <= allowed:  # C-speed check of the common case
            continue
        for j, v in enumerate(row):
            ok = type(v) in _NUMBER_TYPES or (allow_null and v is None)
            if not ok and (isinstance(v, bool) or not isinstance(v, _NUMBER_TYPES) or v is None):
                raise CardSchemaError(
                    f"The card fails the dcsi schema at '{where}[{i}][{j}]': {v!r:.60} "
                    f"is not of type {kinds}"
                )


def _without_numeric_arrays(data: Mapping) -> Mapping:
    """Check the large numeric arrays directly and hand jsonschema a copy without them.

    The matrices (K x K) and ``features.class_sums`` (K x dim) hold most of a card's
    numbers; validating them item by item through jsonschema takes seconds at K=100.
    Only the arrays are replaced (by empty lists, which the schema accepts); every
    other key is validated by the schema as usual.
    """
    out = dict(data)
    sims = data.get("similarity")
    if isinstance(sims, Mapping):
        new_sims = {}
        for kind, entry in sims.items():
            if isinstance(entry, Mapping):
                entry = dict(entry)
                if "matrix" in entry:
                    _check_numeric_matrix(
                        entry["matrix"], f"similarity.{kind}.matrix", allow_null=True
                    )
                    entry["matrix"] = []
                if entry.get("stderr") is not None:
                    _check_numeric_matrix(
                        entry["stderr"], f"similarity.{kind}.stderr", allow_null=True
                    )
                    entry["stderr"] = []
                if entry.get("spreads") is not None:
                    _check_numeric_matrix(
                        entry["spreads"], f"similarity.{kind}.spreads", allow_null=False
                    )
                    entry["spreads"] = []
            new_sims[kind] = entry
        out["similarity"] = new_sims
    views = data.get("class_views")
    if isinstance(views, Mapping) and isinstance(views.get("classes"), list):
        out["class_views"] = _without_view_arrays(views)
    feats = data.get("features")
    if isinstance(feats, Mapping) and "class_sums" in feats:
        feats = dict(feats)
        _check_numeric_matrix(feats["class_sums"], "features.class_sums", allow_null=False)
        feats["class_sums"] = []
        out["features"] = feats
    return out


def _check_pairs(value: Any, where: str, *, counts: bool) -> None:
    """Fast check of a list of 2-lists: numbers, or with ``counts`` ints >= 0."""
    _check_numeric_matrix(value, where, allow_null=False)
    for i, row in enumerate(value):
        if len(row) != 2:
            raise CardSchemaError(
                f"The card fails the dcsi schema at '{where}[{i}]': {row!r:.60} should have 2 items"
            )
        if counts and not (type(row[0]) is int and type(row[1]) is int and min(row) >= 0):
            raise CardSchemaError(
                f"The card fails the dcsi schema at '{where}[{i}]': {row!r:.60} should "
                "hold two ints >= 0"
            )


def _without_view_arrays(views: Mapping) -> dict:
    """``class_views`` with each class's ``layout`` and ``edges`` checked directly and
    emptied (a few hundred 2-lists per class; jsonschema would take seconds on 50)."""
    out = dict(views)
    classes = []
    for i, entry in enumerate(views["classes"]):
        if isinstance(entry, Mapping):
            entry = dict(entry)
            for key, counts in (("layout", False), ("edges", True)):
                if isinstance(entry.get(key), list):
                    _check_pairs(entry[key], f"class_views.classes[{i}].{key}", counts=counts)
                    entry[key] = []
        classes.append(entry)
    out["classes"] = classes
    return out


def validate_card(data: Mapping) -> None:
    """Raise :class:`~dcsi.CardSchemaError` unless ``data`` is a valid card dict.

    Parameters
    ----------
    data : dict
        A card as plain JSON-ready Python (see CONTRACT §6 and ``schema.json``).

    Raises
    ------
    CardSchemaError
        With a message naming the first problem: a missing key, a wrong type, a
        non-square matrix or one whose size differs from the number of classes, a
        newer major ``schema_version``.
    """
    if not isinstance(data, Mapping):
        raise CardSchemaError(
            f"A card must be a JSON object (dict). Got {type(data).__name__} instead."
        )
    _check_version(data)
    import jsonschema

    try:
        errors = list(_validator().iter_errors(_without_numeric_arrays(data)))
    except RecursionError:
        raise CardSchemaError(
            f"The card is nested more than {MAX_DEPTH} levels deep; a card is a few levels "
            "of objects and lists (see schema.json)."
        ) from None
    if errors:
        raise CardSchemaError(_schema_message(jsonschema.exceptions.best_match(errors)))
    _check_consistency(data)


def card_to_json(data: Mapping) -> str:
    """Deterministic JSON text of a card: sorted keys, shortest float repr, UTF-8.

    The same card dict always gives the same bytes, so two runs on the same input and
    seed, on one machine with the same torch thread count (see
    :func:`dcsi.features.choose_num_threads`; it does not follow the load), differ only
    in the two timestamps ``provenance.created`` and ``provenance.finished``, which are
    outside that promise.  Lists of lists of numbers (matrices,
    class sums) are written one row per line: readable, and fast to write (the
    indenting JSON encoder is pure Python, the compact one is C).
    """
    arrays: list[str] = []
    collision = False

    def stash(obj: Any) -> Any:
        nonlocal collision
        if isinstance(obj, str):
            collision = collision or "@@dcsi-array-" in obj
            return obj
        if isinstance(obj, Mapping):
            collision = collision or any("@@dcsi-array-" in k for k in obj)
            return {k: stash(v) for k, v in obj.items()}
        if isinstance(obj, list):
            if obj and set(map(type, obj)) <= _NUMBER_OR_NULL_SET:  # a flat row: one line
                arrays.append(json.dumps(obj, allow_nan=False))
                return f"@@dcsi-array-{len(arrays) - 1}@@"
            if obj and all(
                isinstance(r, list) and set(map(type, r)) <= _NUMBER_OR_NULL_SET for r in obj
            ):
                arrays.append(
                    "[\n" + ",\n".join(json.dumps(r, allow_nan=False) for r in obj) + "\n]"
                )
                return f"@@dcsi-array-{len(arrays) - 1}@@"
            return [stash(v) for v in obj]
        return obj

    stashed = stash(data)
    if collision:  # a string looks like a placeholder: no shortcut
        return (
            json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
        )
    text = json.dumps(stashed, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)

    def unstash(m: re.Match) -> str:
        indent = m.group(1)
        block = arrays[int(m.group(3))]
        if "\n" not in block:
            return f"{indent}{m.group(2) or ''}{block}"
        rows = block.split("\n")
        inner = [indent + "  " + r for r in rows[1:-1]]
        return f"{indent}{m.group(2) or ''}[\n" + "\n".join(inner) + f"\n{indent}]"

    text = re.sub(r'(?m)^( *)("[^"\n]*": )?"@@dcsi-array-(\d+)@@"', unstash, text)
    return text + "\n"


@dataclass(frozen=True)
class RedundancyGroup:
    """One near-duplicate group stored in a card.

    Attributes
    ----------
    members : tuple of str
        Image ids of the group.
    labels : tuple of str
        Class names of the members (distinct, as stored in the card).
    kind : {"redundant", "conflict"}
        ``"redundant"``: one label; ``"conflict"``: several labels.
    representative : str or None
        The image to keep.
    extra : dict
        Any further keys the analyzer stored (e.g. similarity scores).
    """

    members: tuple[str, ...]
    labels: tuple[str | None, ...]
    kind: str
    representative: str | None
    extra: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        """The group as stored in the card (JSON-ready)."""
        out = copy.deepcopy(self.extra)
        out.update(
            members=list(self.members),
            labels=list(self.labels),
            kind=self.kind,
            representative=self.representative,
        )
        return out


class Card:
    """A validated dataset card (read-only view of ``dcsi.json``).

    Parameters
    ----------
    data : dict
        The card as a JSON-ready dict (CONTRACT §6).  numpy arrays and scalars are
        converted to lists and Python numbers; NaN and infinities become ``null``.
        A missing ``schema_version`` is set to :data:`SCHEMA_VERSION` and a missing
        ``dcsi_version`` to ``dcsi.__version__`` (reading a file is strict:
        :func:`load_card` requires both).

    Raises
    ------
    CardSchemaError
        If the card fails the schema (see :func:`validate_card`).

    Examples
    --------
    >>> card = dcsi.load_card("out/digits")                     # doctest: +SKIP
    >>> card.similarity("cnn_cosine").shape                     # doctest: +SKIP
    (10, 10)
    >>> card.class_clusters()                                    # doctest: +SKIP
    [['0', '6'], ['1', '2', '3', ...]]
    """

    __slots__ = ("_data", "_frozen")
    _data: dict[str, Any]
    _frozen: Mapping[str, Any]

    def __init__(self, data: Mapping) -> None:
        if isinstance(data, Card):
            data = data.to_dict()
        if not isinstance(data, Mapping):
            raise CardSchemaError(
                f"A card must be a JSON object (dict). Got {type(data).__name__} instead."
            )
        try:
            plain = _plain(data)
        except RecursionError:
            raise CardSchemaError(
                f"The card is nested more than {MAX_DEPTH} levels deep; a card is a few "
                "levels of objects and lists (see schema.json)."
            ) from None
        plain.setdefault("schema_version", SCHEMA_VERSION)
        if "dcsi_version" not in plain:
            from dcsi import __version__

            plain["dcsi_version"] = __version__
        validate_card(plain)
        object.__setattr__(self, "_data", plain)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Card is read-only; build a new Card from card.to_dict()")

    def __reduce__(self) -> tuple:
        # copy / pickle (e.g. to worker processes) go through the validating constructor
        return (Card, (self._data,))

    # -- construction and persistence ---------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping) -> Card:
        """Build a card from its dict (same as ``Card(data)``)."""
        return cls(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Card:
        """Read a card from ``dcsi.json`` or a folder holding it (see :func:`load_card`)."""
        return load_card(path)

    def to_dict(self) -> dict:
        """A deep copy of the card as JSON-ready plain Python."""
        return copy.deepcopy(self._data)

    @property
    def data(self) -> Mapping[str, Any]:
        """The card's data, read-only: mappings are ``MappingProxyType``, lists tuples.

        Built once per card (the containers are copied, the numbers and strings
        shared), so views read big cards without deep copies; use :meth:`to_dict`
        for a mutable, JSON-ready copy.
        """
        frozen = getattr(self, "_frozen", None)
        if frozen is None:
            from dcsi.card.views import freeze

            frozen = freeze(self._data)
            object.__setattr__(self, "_frozen", frozen)
        return frozen

    def to_json(self) -> str:
        """The deterministic JSON text written to ``dcsi.json``."""
        return card_to_json(self._data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``dcsi.json`` atomically (temp file + rename).

        Parameters
        ----------
        path : path-like
            A ``.json`` file path, or a folder (created if needed) that receives
            ``dcsi.json``.

        Returns
        -------
        Path
            The file written.
        """
        path = Path(path)
        if path.suffix.lower() != ".json" or path.is_dir():
            path = path / CARD_FILENAME
        validate_card(self._data)
        return atomic_write_text(path, self.to_json())

    # -- equality and display -----------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Card):
            return NotImplemented
        return self._data == other._data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        ds = self._data["dataset"]
        idx = self._data.get("index") or {}
        value = idx.get("value")
        shown = "None" if value is None else f"{value:.4g}"
        return (
            f"Card(name={ds['name']!r}, n_images={ds['n_images']}, "
            f"n_classes={len(ds['classes'])}, index={shown})"
        )

    def summary(self, *, n_pairs: int = 5) -> str:
        """Human summary: dataset, features, index, top pairs, clusters, redundancy,
        image clusters, neighbour index.

        Parameters
        ----------
        n_pairs : int, default=5
            How many of the most similar class pairs to list.

        Returns
        -------
        str
            Several lines, as printed by ``dcsi card show`` and ``dcsi analyze``.
        """
        d = self._data
        ds = d["dataset"]
        split = f", split {ds['split']}" if ds["split"] else ""
        lines = [
            f"dataset: {ds['name']} ({ds['n_images']} images, {len(ds['classes'])} classes; "
            f"source {ds['source']}{split})",
            f"card: schema {d['schema_version']}, dcsi {d['dcsi_version']}, created {d['provenance']['created']}",
        ]
        if ds.get("skipped"):
            lines.append(
                f"skipped images: {len(ds['skipped'])} (listed in dcsi.json: dataset.skipped)"
            )
        if ds.get("dropped_classes"):
            lines.append("dropped classes (no usable image): " + ", ".join(ds["dropped_classes"]))
        feats = d.get("features")
        if feats:
            size = feats.get("image_size")
            pooling = feats.get("pooling", "gap")
            lines.append(
                f"features: {feats['backbone']}, {feats['dim']} dims, input "
                f"{size if size is not None else 'native'} px"
                + ("" if pooling == "gap" else f", pooling {pooling}")
            )
        idx = d.get("index")
        if idx:
            value = "undefined" if idx["value"] is None else f"{idx['value']:.4f}"
            definition = idx["definition"]
            if len(definition) > 110:
                definition = definition[:107].rstrip() + "..."
            lines.append(f"index (DCSI): {value}")
            if idx.get("reading"):
                lines.append(f"  reading: {idx['reading']['interpretation']}")
            lines.append(f"  definition: {definition} (full text in dcsi.json)")
        else:
            lines.append("index (DCSI): not computed")
        kinds = self.similarity_kinds
        if kinds:
            kind = self.primary_kind
            lines.append(f"most similar class pairs ({kind}; kinds in card: {', '.join(kinds)}):")
            pairs = self.top_pairs(kind, n=n_pairs)
            width = max((len(a) + len(b) for a, b, _ in pairs), default=0) + 5
            lines += [f"  {(a + ' ~ ' + b):<{width}} {v:.4f}" for a, b, v in pairs]
        else:
            lines.append("class similarity: not computed")
        cc = d.get("class_clusters")
        if cc and cc.get("recommended_k") is not None:
            lines.append(
                f"class clusters (recommended k = {cc['recommended_k']}, {cc['method']}; "
                f"stored k: {', '.join(str(k) for k in self.cluster_ks)}):"
            )
            lines += [f"  {i}: {', '.join(c)}" for i, c in enumerate(self.class_clusters())]
        elif cc:
            lines.append(
                f"class clusters: stored for k = {', '.join(str(k) for k in self.cluster_ks)}"
            )
        if cc and cc.get("verdict"):
            lines.append(f"  {cc['verdict']}")
        else:
            lines.append("class clusters: not computed")
        counts = self.redundancy_counts
        if counts is not None:
            lines.append(
                f"redundancy ({d['redundancy']['method']}): {counts['groups']} groups "
                f"({counts['redundant']} redundant, {counts['conflict']} conflict), "
                f"{counts['images_in_groups']} images in groups, {counts['removable']} removable"
                + (f", {counts['blank']} blank images" if "blank" in counts else "")
            )
        else:
            lines.append("redundancy: not run")
        ic = d.get("image_clusters")
        if ic:
            sizes = ", ".join(str(int(c["size"])) for c in ic["clusters"][:12])
            more = ", ..." if len(ic["clusters"]) > 12 else ""
            line = f"image clusters ({ic['method']}): k = {ic['n_clusters']}, sizes {sizes}{more}"
            comp = ic.get("comparison")
            if comp:
                line += f"; against the classes ARI {comp['ari']:.3f}, NMI {comp['nmi']:.3f}"
            lines.append(line)
        ni = d.get("neighbor_index")
        if ni:
            head = f", head {ni['head']['sha256'][:12]}" if ni["head"] else ""
            lines.append(
                f"neighbour index: k = {ni['k']} for {ni['n']} images ({ni['method']}, "
                f"{ni['backbone']} {ni['pooling']}{head}) in {ni['path']}/"
            )
        return "\n".join(lines)

    # -- accessors ---------------------------------------------------------------
    @property
    def schema_version(self) -> str:
        """The card's ``schema_version`` (semver string)."""
        return self._data["schema_version"]

    @property
    def name(self) -> str:
        """The dataset name."""
        return self._data["dataset"]["name"]

    @property
    def classes(self) -> list[str]:
        """Class names in label order (the order of every matrix in the card)."""
        return list(self._data["dataset"]["classes"])

    @property
    def class_counts(self) -> list[int]:
        """Number of images per class, in the order of :attr:`classes`."""
        return list(self._data["dataset"]["class_counts"])

    @property
    def n_images(self) -> int:
        """Number of images analysed."""
        return int(self._data["dataset"]["n_images"])

    def _block(self, key: str, what: str) -> dict:
        block = self._data.get(key)
        if not block:
            raise DataError(
                f"This card has no {key!r} block: {what} was not computed for "
                f"{self.name!r} (e.g. unlabelled data, or the analyzer was not run). "
                "Re-run `dcsi analyze` with labels and the analyzer enabled."
            )
        return block

    @property
    def similarity_kinds(self) -> list[str]:
        """Names of the class-similarity matrices in the card (e.g. ``["cnn_cosine"]``)."""
        return sorted(self._data.get("similarity") or {})

    def similarity(self, kind: str = "cnn_cosine") -> np.ndarray:
        """The class-to-class similarity matrix of one kind.

        Parameters
        ----------
        kind : str, default="cnn_cosine"
            One of :attr:`similarity_kinds`.

        Returns
        -------
        ndarray of shape (n_classes, n_classes), float64
            Rows and columns in the order of :attr:`classes`; NaN where the card
            stores ``null`` (an undefined diagonal entry).
        """
        sims = self._block("similarity", "class similarity")
        if kind not in sims:
            raise InvalidParameterError(
                f"The 'kind' parameter of Card.similarity must be one of "
                f"{', '.join(repr(k) for k in sorted(sims))}. Got {kind!r} instead."
            )
        matrix = sims[kind]["matrix"]
        return np.array(
            [[np.nan if v is None else v for v in row] for row in matrix], dtype=np.float64
        ).reshape(len(matrix), len(matrix))

    def similarity_info(self, kind: str = "cnn_cosine") -> dict:
        """The full similarity entry (``matrix``, ``diagonal``, ``params``, ...)."""
        self.similarity(kind)  # validates kind
        return copy.deepcopy(self._data["similarity"][kind])

    def top_pairs(self, kind: str | None = None, *, n: int = 5) -> list[tuple[str, str, float]]:
        """The ``n`` most similar distinct class pairs.

        Parameters
        ----------
        kind : str, default=None
            Similarity kind; ``None`` -> ``"cnn_cosine"`` if present, else the first.
        n : int, default=5

        Returns
        -------
        list of (class_a, class_b, similarity)
            Sorted by decreasing similarity; ties by class order.  Pairs with an
            undefined value are skipped.
        """
        kind = self.primary_kind if kind is None else kind
        s = self.similarity(kind)
        names = self.classes
        iu, ju = np.triu_indices(len(names), k=1)
        vals = s[iu, ju]
        keep = np.isfinite(vals)
        iu, ju, vals = iu[keep], ju[keep], vals[keep]
        order = np.lexsort((ju, iu, -vals))[: max(int(n), 0)]
        return [(names[iu[o]], names[ju[o]], float(vals[o])) for o in order]

    @property
    def primary_kind(self) -> str:
        """``"cnn_cosine"`` when the card has it, else the first similarity kind."""
        kinds = self.similarity_kinds
        if not kinds:
            self._block("similarity", "class similarity")
        return "cnn_cosine" if "cnn_cosine" in kinds else kinds[0]

    @property
    def index(self) -> float:
        """The scalar DCSI (``index.value``); NaN when the card stores ``null``."""
        value = self._block("index", "the index")["value"]
        return math.nan if value is None else float(value)

    @property
    def index_info(self) -> dict:
        """The full ``index`` block: ``value``, ``definition``, ``components``, ..."""
        return copy.deepcopy(self._block("index", "the index"))

    @property
    def index_reading(self) -> dict | None:
        """What the index means (``index.reading``): ``interpretation`` (one line),
        ``reference_points``, ``position`` and ``drivers``; None when the card has none
        (made before dcsi wrote it).  See :func:`dcsi.index_reading`."""
        reading = self._block("index", "the index").get("reading")
        return None if reading is None else copy.deepcopy(reading)

    @property
    def recommended_k(self) -> int | None:
        """The recommended number of class clusters; None when no k separates the
        classes (``class_clusters.verdict`` says why)."""
        return self._block("class_clusters", "class clustering").get("recommended_k")

    @property
    def cluster_ks(self) -> list[int]:
        """The cluster counts for which the card stores a partition."""
        cc = self._block("class_clusters", "class clustering")
        return sorted(int(k) for k in cc["partitions"])

    def cluster_assignment(self, k: int | None = None) -> np.ndarray:
        """Cluster id of each class for ``k`` clusters.

        Parameters
        ----------
        k : int, default=None
            Number of clusters; ``None`` -> the card's recommended k.  When the card
            recommends none (no k separates the classes: ``recommended_k`` is null),
            every class is in one cluster (id 0) -- no grouping, i.e. flat training --
            and a warning says so and names the stored k.

        Returns
        -------
        ndarray of shape (n_classes,), int64
            Cluster ids renumbered ``0..k-1`` in order of first appearance.
        """
        cc = self._block("class_clusters", "class clustering")
        if k is None:
            k = cc.get("recommended_k")
            if k is None:
                verdict = f" {cc['verdict']}" if cc.get("verdict") else ""
                logger.warning(
                    "This card recommends no k:%s All classes are returned as one "
                    "cluster; pass k= for a stored partition (k = %s).",
                    verdict,
                    ", ".join(map(str, self.cluster_ks)),
                )
                return np.zeros(len(self.classes), dtype=np.int64)
        if (
            isinstance(k, bool)
            or not isinstance(k, (int, np.integer))
            or str(int(k)) not in cc["partitions"]
        ):
            raise InvalidParameterError(
                f"The 'k' parameter of Card.class_clusters must be one of "
                f"{self.cluster_ks} (the partitions stored in the card). Got {k!r} instead."
            )
        raw = cc["partitions"][str(int(k))]
        remap: dict[int, int] = {}
        return np.array([remap.setdefault(c, len(remap)) for c in raw], dtype=np.int64)

    def class_clusters(self, k: int | None = None) -> list[list[str]]:
        """Class names grouped by cluster.

        Parameters
        ----------
        k : int, default=None
            Number of clusters; ``None`` -> the card's recommended k (one cluster of
            all classes, with a warning, when the card recommends none).

        Returns
        -------
        list of list of str
            One list per cluster (ordered by the first class of each cluster), the
            classes inside in label order.
        """
        assignment = self.cluster_assignment(k)
        names = self.classes
        groups: list[list[str]] = [
            [] for _ in range(int(assignment.max()) + 1 if len(assignment) else 0)
        ]
        for name, c in zip(names, assignment):
            groups[int(c)].append(name)
        return groups

    @property
    def redundancy(self) -> list[RedundancyGroup]:
        """Near-duplicate groups (empty list when the analysis was not run)."""
        block = self._data.get("redundancy") or {}
        out = []
        for g in block.get("groups", []):
            extra = {
                k: v
                for k, v in g.items()
                if k not in ("members", "labels", "kind", "representative")
            }
            out.append(
                RedundancyGroup(
                    members=tuple(g["members"]),
                    labels=tuple(g["labels"]),
                    kind=g["kind"],
                    representative=g["representative"],
                    extra=copy.deepcopy(extra),
                )
            )
        return out

    @property
    def redundancy_counts(self) -> dict[str, int] | None:
        """Counts of groups by kind and images in groups, and ``blank`` (blank images,
        cards of schema 1.3.0 on); None without the analysis."""
        block = self._data.get("redundancy")
        if not block:
            return None
        groups = block["groups"]
        out = {
            "groups": len(groups),
            "redundant": sum(g["kind"] == "redundant" for g in groups),
            "conflict": sum(g["kind"] == "conflict" for g in groups),
            "images_in_groups": sum(len(g["members"]) for g in groups),
            "removable": sum(len(g["members"]) - 1 for g in groups if g["kind"] == "redundant"),
        }
        if block.get("blank") is not None:  # schema 1.3.0
            out["blank"] = int(block["blank"]["n_blank"])
        return out

    @property
    def backbone(self) -> str | None:
        """Name of the feature extractor, or None without a features block."""
        feats = self._data.get("features") or {}
        return feats.get("backbone")

    def router(self, extractor: Any = None, *, k: int | None = None) -> Any:
        """A :class:`dcsi.clusters.Router` sending query images to a class cluster.

        Parameters
        ----------
        extractor : Extractor or str, default=None
            Feature extractor for raw images; ``None`` -> the card's backbone, built
            with ``dcsi.get_backbone(name, image_size=..., pooling=...)`` (the card's) when the
            router first sees images (needs the ``torch`` extra).  Routing
            precomputed features with ``router.route_features`` needs none.  A card
            made with custom ``--weights`` needs the same extractor passed here.
        k : int, default=None
            Number of clusters; ``None`` -> the card's recommended k (one cluster when it
            recommends none).

        Returns
        -------
        dcsi.clusters.Router
        """
        feats = self._block("features", "feature extraction")
        sums = feats.get("class_sums")
        if sums is None:
            raise DataError(
                "This card has no 'features.class_sums', which the router needs; "
                "re-run `dcsi analyze` (it stores them by default)."
            )
        counts = feats.get("class_counts") or self.class_counts
        assignment = self.cluster_assignment(k)
        from dcsi.clusters import Router

        if extractor is None:
            # a backbone name: the Router builds it with dcsi.get_backbone(name,
            # image_size=...) on the first route(images) call, so making a router
            # (and routing precomputed features) needs no torch.
            extractor = feats["backbone"]
        return Router(
            np.asarray(sums, dtype=np.float64),
            np.asarray(counts, dtype=np.int64),
            assignment,
            extractor,
            image_size=feats.get("image_size"),
            pooling=feats.get("pooling", "gap"),
        )


_REPORT_SHA = re.compile(
    r"""<meta\s+name=["']dcsi-card-sha256["']\s+content=["']([0-9a-f]{64})["']"""
)


def recorded_card_sha256(folder: str | os.PathLike[str]) -> dict[str, str]:
    """The sha256 of ``dcsi.json`` that each view in a card folder says it was made from.

    Parameters
    ----------
    folder : path-like
        A card folder.

    Returns
    -------
    dict of str to str
        View file name -> recorded sha256 (hex), for the views present that record one:
        ``croissant.json`` (its ``dcsi.json`` file object), ``README.md`` (the
        ``dcsi.card_sha256`` front-matter key) and ``report.html`` (a
        ``<meta name="dcsi-card-sha256">`` tag).  Views written by an older dcsi that
        record nothing are left out.
    """
    folder = Path(folder)
    out: dict[str, str] = {}
    croissant = folder / "croissant.json"
    if croissant.is_file():
        try:
            doc = json.loads(croissant.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            doc = None
        for item in (doc or {}).get("distribution", []) if isinstance(doc, dict) else []:
            if (
                isinstance(item, dict)
                and item.get("contentUrl") == CARD_FILENAME
                and isinstance(item.get("sha256"), str)
            ):
                out["croissant.json"] = item["sha256"]
                break
    readme = folder / "README.md"
    if readme.is_file():
        from dcsi.card.front_matter import readme_block

        try:
            block = readme_block(readme.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError):
            block = None
        if block and isinstance(block.get("card_sha256"), str):
            out["README.md"] = block["card_sha256"]
    report = folder / "report.html"
    if report.is_file():
        try:
            with open(report, encoding="utf-8", errors="replace") as fh:
                head = fh.read(4096)
        except OSError:
            head = ""
        found = _REPORT_SHA.search(head)
        if found:
            out["report.html"] = found.group(1)
    return out


def stale_views(path: str | os.PathLike[str]) -> list[str]:
    """The views in a card folder made from another ``dcsi.json`` than the one there.

    A run killed between two output files leaves, e.g., a new ``dcsi.json`` next to the
    old ``croissant.json``; each view records the sha256 of the ``dcsi.json`` it was made
    from (see :func:`recorded_card_sha256`), and this compares it with the file's.

    Parameters
    ----------
    path : path-like
        A card folder, or the ``dcsi.json`` inside one.

    Returns
    -------
    list of str
        File names of the stale views (empty when all match, or nothing is recorded).
    """
    file = _card_path(path)
    recorded = recorded_card_sha256(file.parent)
    if not recorded or not file.is_file():
        return []
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    return [name for name, value in recorded.items() if value != sha]


def _card_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILENAME
    return path


def load_card(path: str | os.PathLike[str], *, check_views: bool = True) -> Card:
    """Read and validate a card.

    Parameters
    ----------
    path : path-like
        ``dcsi.json`` or a folder containing it.
    check_views : bool, default=True
        Log a warning for each view next to the card (``croissant.json``,
        ``README.md``, ``report.html``) made from another ``dcsi.json`` (see
        :func:`stale_views`).

    Returns
    -------
    Card

    Raises
    ------
    FileNotFoundError
        If there is no card at ``path`` (a :class:`~dcsi.DataError`).
    CardSchemaError
        If the file is not JSON, fails the schema, or has a newer major version.
    """
    file = _card_path(path)
    if not file.is_file():
        raise _CardNotFound(
            f"No dcsi card at {os.fspath(path)!r}: expected a dcsi.json file or a "
            "folder containing one (written by `dcsi analyze --out DIR`)."
        )
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CardSchemaError(
            f"{file} is not UTF-8 text (byte {exc.start} is not valid UTF-8); a card is "
            "UTF-8 JSON written by dcsi."
        ) from None
    try:
        data = parse_card_json(text)
        if isinstance(data, Mapping):  # strict: a file carries both versions itself
            _check_version(data)
            if "dcsi_version" not in data:
                raise CardSchemaError(
                    "The card fails the dcsi schema at '<top level>': 'dcsi_version' is a "
                    "required property"
                )
        card = Card(data)
    except CardSchemaError as exc:
        raise CardSchemaError(f"{file}: {exc}") from None
    for name in stale_views(file) if check_views else ():
        logger.warning(
            "%s was made from another dcsi.json than %s (a run stopped between two files?); "
            "re-run the command that wrote the folder.",
            file.parent / name,
            file,
        )
    return card


class _CardNotFound(DataError, FileNotFoundError):
    """No card file where one was expected."""
