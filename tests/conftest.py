"""Shared fixtures: tiny seeded synthetic data, progress bars off."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("DCSI_DISABLE_PROGRESS", "1")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator; tests must pass for any seed."""
    return np.random.default_rng(int(os.environ.get("DCSI_TEST_SEED", "0")))
