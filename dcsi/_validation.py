"""Parameter validation in one place, with scikit-learn's message shape.

Messages read like ``The 'tau' parameter of select_columns must be a float > 1.
Got 0.5 instead.`` so that a user sees both the rule and the offending value.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dcsi.exceptions import InvalidParameterError

__all__ = [
    "Interval",
    "Options",
    "check_array",
    "check_choice",
    "check_float",
    "check_instance",
    "check_int",
    "check_labels",
    "check_memory",
    "require",
    "validate_fields",
    "validate_params",
]


def _fail(name: str, caller: str, rule: str, value: Any) -> InvalidParameterError:
    return InvalidParameterError(
        f"The {name!r} parameter of {caller} must be {rule}. Got {value!r} instead."
    )


def check_choice(value: Any, name: str, caller: str, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise InvalidParameterError."""
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise _fail(name, caller, f"one of {listed}", value)
    return value


def check_int(
    value: Any,
    name: str,
    caller: str,
    *,
    min_value: int | None = None,
    max_value: int | None = None,
) -> int:
    """Return ``value`` as an int within ``[min_value, max_value]``."""
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not integral:
        raise _fail(name, caller, _range_rule("an int", min_value, max_value), value)
    if (min_value is not None and value < min_value) or (
        max_value is not None and value > max_value
    ):
        raise _fail(name, caller, _range_rule("an int", min_value, max_value), value)
    return int(value)


def check_float(
    value: Any,
    name: str,
    caller: str,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite float within the given bounds."""
    rule = _range_rule("a float", min_value, max_value, min_inclusive, max_inclusive)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(name, caller, rule, value)
    value = float(value)
    if not np.isfinite(value):
        raise _fail(name, caller, rule, value)
    if min_value is not None and (value < min_value or (not min_inclusive and value == min_value)):
        raise _fail(name, caller, rule, value)
    if max_value is not None and (value > max_value or (not max_inclusive and value == max_value)):
        raise _fail(name, caller, rule, value)
    return value


def check_instance(
    value: Any, kind: type, name: str, caller: str, *, allow_none: bool = False
) -> Any:
    """Return ``value`` if it is a ``kind`` (or None when ``allow_none``), else raise
    InvalidParameterError: ``The 'search' parameter of find_leakage must be a
    SearchOptions or None. Got ... instead.``"""
    if isinstance(value, kind) or (allow_none and value is None):
        return value
    raise _fail(name, caller, f"a {kind.__name__}" + (" or None" if allow_none else ""), value)


def _range_rule(
    kind: str,
    lo: float | None,
    hi: float | None,
    lo_inc: bool = True,
    hi_inc: bool = True,
) -> str:
    if lo is not None and hi is not None:
        left = "[" if lo_inc else "("
        right = "]" if hi_inc else ")"
        return f"{kind} in the range {left}{lo}, {hi}{right}"
    if lo is not None:
        return f"{kind} {'>=' if lo_inc else '>'} {lo}"
    if hi is not None:
        return f"{kind} {'<=' if hi_inc else '<'} {hi}"
    return kind


def check_array(
    value: Any,
    name: str,
    caller: str,
    *,
    ndim: int | Sequence[int] | None = None,
    dtype: Any = None,
    allow_empty: bool = False,
) -> np.ndarray:
    """Convert ``value`` to an ndarray and check its dimensionality and finiteness.

    Parameters
    ----------
    value : array-like
    name, caller : str
        Used in the error message.
    ndim : int or sequence of int, default=None
        Accepted numbers of dimensions.
    dtype : numpy dtype, default=None
        Convert to this dtype (``np.asarray(value, dtype=dtype)``).
    allow_empty : bool, default=False
        Whether an array with zero rows is accepted.
    """
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be array-like of numbers: {exc}"
        ) from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            shapes = " or ".join(f"{d}-D" for d in allowed)
            raise InvalidParameterError(
                f"The {name!r} parameter of {caller} must be a {shapes} array. "
                f"Got an array of shape {arr.shape} instead."
            )
    if not allow_empty and arr.size == 0:
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must not be empty. "
            f"Got an array of shape {arr.shape} instead."
        )
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} contains NaN or infinite values; "
            "remove or impute them first."
        )
    return arr


def check_labels(labels: Any, n: int, caller: str) -> np.ndarray:
    """Return ``labels`` as an int64 array of length ``n`` with values >= 0."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidParameterError(
            f"The 'labels' parameter of {caller} must be a 1-D array of length {n} "
            f"(one label per row). Got shape {arr.shape} instead."
        )
    if arr.dtype.kind not in "iu":
        raise InvalidParameterError(
            f"The 'labels' parameter of {caller} must hold integer class ids "
            f"0..K-1. Got dtype {arr.dtype} instead; map class names to ids first."
        )
    if n and arr.min() < 0:
        raise InvalidParameterError(
            f"The 'labels' parameter of {caller} must hold class ids >= 0. "
            f"Got {int(arr.min())} instead."
        )
    return arr.astype(np.int64, copy=False)


def require(module: str, feature: str, extra: str) -> Any:
    """Import ``module`` or raise MissingDependencyError saying how to install it.

    Parameters
    ----------
    module : str
        Module to import, e.g. ``"torch"``.
    feature : str
        What needs it, e.g. ``"CNN feature extraction"``.
    extra : str
        The pip extra or package that provides it, e.g. ``"dcsi[torch]"``.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        from dcsi.exceptions import MissingDependencyError

        raise MissingDependencyError(
            f"{feature} needs the '{module}' package, which is not installed "
            f"({exc}). Install it with: pip install '{extra}'"
        ) from None


# ----------------------------------------------------------------------------- declared
@dataclass(frozen=True)
class Interval:
    """A declared numeric constraint: ``Interval(int, 2, None, closed="left")`` is an
    int ``>= 2``.

    Parameters
    ----------
    kind : {int, float}
        ``int`` accepts integers only; ``float`` accepts any real number (finite).
    left, right : float or None
        Bounds (None: unbounded).
    closed : {"both", "left", "right", "neither"}, default="both"
        Which bounds are included.
    """

    kind: type
    left: float | None
    right: float | None
    closed: str = "both"

    def describe(self) -> str:
        """The rule in words, e.g. ``"an int >= 2"``."""
        return _range_rule(
            "an int" if self.kind is int else "a float",
            self.left,
            self.right,
            self.closed in ("both", "left"),
            self.closed in ("both", "right"),
        )

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` satisfies the constraint."""
        integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if self.kind is int and not integral:
            return False
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not real:
            return False
        if not np.isfinite(float(value)):
            return False
        lo_ok = (
            self.left is None
            or value > self.left
            or (value == self.left and self.closed in ("both", "left"))
        )
        hi_ok = (
            self.right is None
            or value < self.right
            or (value == self.right and self.closed in ("both", "right"))
        )
        return bool(lo_ok and hi_ok)

    def convert(self, value: Any) -> Any:
        """``value`` as a plain ``int`` or ``float``."""
        return int(value) if self.kind is int else float(value)

    def invalid_examples(self) -> list[Any]:
        """Values that break the constraint (for generated tests)."""
        out: list[Any] = ["text", float("nan")]
        if self.left is not None:
            out.append(self.left - 1 if self.closed in ("both", "left") else self.left)
        if self.right is not None:
            out.append(self.right + 1 if self.closed in ("both", "right") else self.right)
        if self.kind is int:
            out.append(2.5)
        return out


@dataclass(frozen=True)
class Options:
    """A declared choice: the value must be one of ``values``."""

    values: tuple

    def describe(self) -> str:
        """The rule in words, e.g. ``"one of 'a', 'b'"``."""
        return "one of " + ", ".join(repr(v) for v in self.values)

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is one of the options (booleans only match booleans)."""
        return any(value is v or (type(value) is type(v) and value == v) for v in self.values)

    def convert(self, value: Any) -> Any:
        """``value`` unchanged."""
        return value

    def invalid_examples(self) -> list[Any]:
        """Values that break the constraint (for generated tests)."""
        return ["__not_an_option__"]


def validate_params(
    values: Mapping[str, Any], constraints: Mapping[str, Sequence[Any]], caller: str
) -> dict[str, Any]:
    """Check every value against its declared constraints (scikit-learn's shape).

    A value is valid when one of its constraints accepts it; the message lists them
    all: ``The 'n_clusters' parameter of find_redundancy must be an int >= 2 or None.
    Got 1 instead.``

    Parameters
    ----------
    values : mapping of str to object
    constraints : mapping of str to sequence of Interval or Options
        ``None`` in a sequence allows ``None``.
    caller : str
        Named in the message.

    Returns
    -------
    dict
        The values, numbers converted to plain ``int`` / ``float``.
    """
    out: dict[str, Any] = {}
    for name, value in values.items():
        rules = constraints[name]
        if value is None and None in rules:
            out[name] = None
            continue
        for rule in rules:
            if rule is not None and rule.accepts(value):
                out[name] = rule.convert(value)
                break
        else:
            words = [r.describe() for r in rules if r is not None]
            if None in rules:
                words.append("None")
            raise _fail(name, caller, " or ".join(words), value)
    return out


def validate_fields(obj: Any, caller: str) -> None:
    """Check the fields of a frozen dataclass named in its ``CONSTRAINTS``
    (:func:`validate_params`) and store the checked values on it.

    Parameters
    ----------
    obj : frozen dataclass with a ``CONSTRAINTS`` mapping
    caller : str
        Named in the message.
    """
    checked = validate_params(
        {k: getattr(obj, k) for k in obj.CONSTRAINTS}, obj.CONSTRAINTS, caller
    )
    for k, v in checked.items():
        object.__setattr__(obj, k, v)


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(need: float, what: str, fix: str) -> None:
    """Refuse, before allocating, work that cannot fit in the memory available now.

    Parameters
    ----------
    need : float
        Estimated peak bytes of the work.
    what : str
        The work, e.g. ``"The wavelet stage of 8121 images of 130 x 130 pixels"``.
    fix : str
        Which option lowers it.

    Raises
    ------
    DataError
        One line with the estimate, the memory available and ``fix``.
    """
    avail = available_memory()
    if avail is not None and need > avail:
        from dcsi.exceptions import DataError

        raise DataError(
            f"{what} needs about {need / 2**30:.1f} GiB of memory but {avail / 2**30:.1f} GiB "
            f"is available; {fix}"
        )
