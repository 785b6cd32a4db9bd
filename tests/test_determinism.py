"""Same input and seed -> same card bytes, whatever the machine's load (outside timestamps)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dcsi.cli import main  # noqa: E402

#: The only keys two identical runs may differ in: wall-clock timestamps.
TIMESTAMPS = ("created", "finished")


@pytest.fixture
def folder(tmp_path, rng):
    from PIL import Image

    root = tmp_path / "data"
    for c, base in (("cats", 60), ("dogs", 180)):
        (root / c).mkdir(parents=True)
        for i in range(4):
            img = np.clip(base + rng.normal(0, 25, (16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.png")
    return root


def test_two_cold_runs_same_bytes_whatever_the_load(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DCSI_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    texts = []
    before = torch.get_num_threads()
    try:
        for run, (ambient, load) in enumerate(((1, 9.0), (2, 0.0))):
            torch.set_num_threads(ambient)
            monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
            out = tmp_path / "out"  # the same folder: provenance records the command
            rc = main(
                [
                    "analyze",
                    str(folder),
                    "--out",
                    str(out),
                    "--no-cache",
                    "--no-progress",
                    "--analyzers",
                    "cnn",
                ]
            )
            assert rc == 0, capsys.readouterr().err
            texts.append((out / "dcsi.json").read_text(encoding="utf-8"))
            (out / "dcsi.json").rename(tmp_path / f"run{run}.json")
    finally:
        torch.set_num_threads(before)
    cards = [json.loads(t) for t in texts]
    for card in cards:
        for key in TIMESTAMPS:
            card["provenance"].pop(key, None)
    assert json.dumps(cards[0], sort_keys=True) == json.dumps(cards[1], sort_keys=True)
