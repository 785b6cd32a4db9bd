"""Parameter validation in one place, with scikit-learn's message shape.

Messages read like ``The 'tau' parameter of select_columns must be a float > 1.
Got 0.5 instead.`` so that a user sees both the rule and the offending value.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from dcsi.exceptions import InvalidParameterError

__all__ = [
    "check_choice",
    "check_int",
    "check_float",
    "check_array",
    "check_labels",
    "require",
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
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
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
    if min_value is not None and (
        value < min_value or (not min_inclusive and value == min_value)
    ):
        raise _fail(name, caller, rule, value)
    if max_value is not None and (
        value > max_value or (not max_inclusive and value == max_value)
    ):
        raise _fail(name, caller, rule, value)
    return value


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
