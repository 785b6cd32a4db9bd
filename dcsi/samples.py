"""Bundled and locally installed sample datasets, as uint8 arrays.

``sample:digits`` is scikit-learn's bundled 8x8 digits (always available offline).
``sample:fashion-mnist`` reads the IDX files of Debian's ``dataset-fashion-mnist``
package (``apt-get install dataset-fashion-mnist``) or a folder named by the
``DCSI_FASHION_MNIST`` environment variable.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcsi.exceptions import DataError, InvalidParameterError

__all__ = ["FASHION_MNIST_CLASSES", "SAMPLES", "Sample", "load_sample"]

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)


@dataclass(frozen=True)
class Sample:
    """An in-memory sample dataset.

    Attributes
    ----------
    name : str
    images : ndarray of shape (n, h, w), dtype uint8
    labels : ndarray of shape (n,), dtype int64
    classes : list of str
        Class names in label order.
    split : str
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    split: str


def _digits(split: str | None) -> Sample:
    from sklearn.datasets import load_digits

    if split not in (None, "train"):
        raise InvalidParameterError(
            f"sample:digits has a single split 'train'. Got split={split!r} instead."
        )
    d = load_digits()
    # sklearn stores grey levels 0..16; scale to the full uint8 range.
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    return Sample(
        "digits", images, d.target.astype(np.int64), [str(c) for c in d.target_names], "train"
    )


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_dir() -> Path:
    candidates = [os.environ.get("DCSI_FASHION_MNIST", ""), *_FASHION_DIRS]
    for c in candidates:
        if c and (Path(c) / "train-images-idx3-ubyte.gz").is_file():
            return Path(c)
    raise DataError(
        "Fashion-MNIST is not installed: run 'apt-get install dataset-fashion-mnist' "
        "or set DCSI_FASHION_MNIST to a folder holding its four IDX .gz files."
    )


def _fashion_mnist(split: str | None) -> Sample:
    split = split or "train"
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise InvalidParameterError(
            f"sample:fashion-mnist has splits 'train' and 'test'. Got split={split!r} instead."
        )
    root = _fashion_dir()
    images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz").copy()
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return Sample("fashion-mnist", images, labels, list(FASHION_MNIST_CLASSES), split)


SAMPLES = {"digits": _digits, "fashion-mnist": _fashion_mnist}


def load_sample(name: str, split: str | None = None) -> Sample:
    """Load a sample dataset by name (``"digits"`` or ``"fashion-mnist"``)."""
    if name not in SAMPLES:
        raise InvalidParameterError(
            f"Unknown sample dataset {name!r}; valid names are "
            + ", ".join(f"'sample:{k}'" for k in SAMPLES)
            + "."
        )
    return SAMPLES[name](split)
