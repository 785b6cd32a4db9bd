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


@pytest.fixture
def pixel_backbone(monkeypatch):
    """Registered names resolve to the tiny pixel extractor (no weights, no download)."""
    pytest.importorskip("torch")
    from test_pipeline import PixelExtractor

    from dcsi import backbones, features

    class Pixels(PixelExtractor):
        image_size = 32  # what a registered backbone may be asked for (>= 32)

    monkeypatch.setattr(features, "get_backbone", lambda *a, **k: Pixels())
    monkeypatch.setattr(backbones, "list_backbones", lambda: ["efficientnet_lite0", "pixels8"])
