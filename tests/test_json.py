"""Tests of dcsi._json.to_jsonable, the one JSON-cleaning helper."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dcsi._json import to_jsonable
from dcsi.exceptions import CardSchemaError, InvalidParameterError


def test_numpy_arrays_and_scalars_become_plain_python():
    out = to_jsonable(
        {
            "f": np.array([[1.5, 2.0], [3.0, 4.0]], dtype=np.float32),
            "i": np.arange(3, dtype=np.int64),
            "b": np.array([True, False]),
            "s": np.float64(0.25),
            "n": np.int32(7),
            "t": np.bool_(True),
        }
    )
    assert out == {
        "f": [[1.5, 2.0], [3.0, 4.0]],
        "i": [0, 1, 2],
        "b": [True, False],
        "s": 0.25,
        "n": 7,
        "t": True,
    }
    assert type(out["n"]) is int and type(out["s"]) is float and type(out["t"]) is bool
    assert all(type(v) is int for v in out["i"])
    assert all(type(v) is bool for v in out["b"])
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_non_finite_floats_become_none(bad):
    assert to_jsonable(bad) is None
    assert to_jsonable([1.0, bad]) == [1.0, None]
    assert to_jsonable(np.array([[bad, 2.0]])) == [[None, 2.0]]
    assert to_jsonable({"x": (bad,)}) == {"x": [None]}


def test_tuples_paths_and_keys():
    out = to_jsonable({1: (1, "a"), np.int64(2): Path("/tmp/x"), "k": None})
    assert out == {"1": [1, "a"], "2": "/tmp/x", "k": None}


def test_input_is_not_modified_and_result_is_new():
    row = [1.0, 2.0]
    src = {"row": row, "ids": ["a", "b"]}
    out = to_jsonable(src)
    assert out == src and out["row"] is not row and out["ids"] is not src["ids"]


def test_bool_stays_bool_not_int():
    assert to_jsonable([True, 1, 1.0]) == [True, 1, 1.0]
    assert [type(v) for v in to_jsonable([True, 1, 1.0])] == [bool, int, float]


def test_unknown_value_raises_with_its_place():
    with pytest.raises(InvalidParameterError, match=r"value of type object at 'value\.a\[1\]'"):
        to_jsonable({"a": [1, object()]})


def test_non_string_key_raises():
    with pytest.raises(InvalidParameterError, match=r"non-string key \(1, 2\) at 'value'"):
        to_jsonable({(1, 2): 3})
    with pytest.raises(InvalidParameterError, match="non-string key True"):
        to_jsonable({True: 3})


def test_error_class_and_subject_are_configurable():
    with pytest.raises(CardSchemaError, match=r"^The card has a value of type set at 'card\.x'"):
        to_jsonable({"x": {1}}, where="card", what="The card", error=CardSchemaError)
