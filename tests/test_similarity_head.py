"""The similarity head: loss by hand, training, safetensors round trip, errors, CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from dcsi.exceptions import DataError, InvalidParameterError  # noqa: E402
from dcsi.similarity_head import (  # noqa: E402
    SimilarityHead,
    clusters_from_groups,
    load_similarity_head,
    train_similarity_head,
    triplet_loss,
)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_triplet_loss_by_hand():
    # (anchor, positive, negative) -> d(a, p), d(a, n) worked out by hand:
    a = _t([[1, 0], [1, 0], [3, 4], [3, 4]])
    p = _t([[1, 1], [0, 2], [4, 3], [3, 4]])  # cos 1/sqrt2, 0, 24/25, 1
    n = _t([[0, 1], [3, 0], [0, 1], [-3, -4]])  # cos 0, 1, 4/5, -1
    d_pos = np.array([1 - 2**-0.5, 1.0, 0.04, 0.0])
    d_neg = np.array([1.0, 0.0, 0.2, 2.0])
    pair = [0.0, 0.5 + 0.5, 0.0 + 0.3, 0.0]  # max(0, d+ - .5) + max(0, .5 - d-)
    np.testing.assert_allclose(triplet_loss(a, p, n, loss="pair").numpy(), pair, atol=1e-12)
    np.testing.assert_allclose(
        triplet_loss(a, p, n, loss="pair", threshold=0.5).numpy(),
        np.maximum(0, d_pos - 0.5) + np.maximum(0, 0.5 - d_neg),
        atol=1e-12,
    )
    ranking = [0.0, 0.2 + 1.0 - 0.0, 0.2 + 0.04 - 0.2, 0.0]  # max(0, .2 + d+ - d-)
    np.testing.assert_allclose(
        triplet_loss(a, p, n, loss="triplet", margin=0.2).numpy(), ranking, atol=1e-12
    )
    np.testing.assert_allclose(triplet_loss(a, p, n).numpy(), ranking, atol=1e-12)  # default


def _clustered(rng, n_clusters=40, per=4, signal=8, noise=56, scale=3.0):
    """Clusters that differ in a few dimensions, drowned in per-image noise elsewhere."""
    centres = rng.normal(size=(n_clusters, signal))
    c = np.repeat(np.arange(n_clusters), per)
    x = np.concatenate(
        [
            centres[c] + 0.1 * rng.normal(size=(len(c), signal)),
            scale * rng.normal(size=(len(c), noise)),
        ],
        axis=1,
    )
    return x.astype(np.float32), c


def _top1(v, c):
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    s = v @ v.T
    np.fill_diagonal(s, -np.inf)
    return float(np.mean(c[np.argmax(s, axis=1)] == c))


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    x, c = _clustered(rng, n_clusters=100, scale=1.0)
    head = train_similarity_head(x, c, dim=8, epochs=10, seed=3)
    return x, c, head


def test_head_learns_held_out_clusters(trained, rng):
    _, _, head = trained
    x, c = _clustered(np.random.default_rng(rng.integers(1, 10**6)), scale=1.0)  # new ones
    assert _top1(head.apply(x), c) > _top1(x, c) + 0.5
    y = head.apply(x)
    assert y.dtype == np.float32 and y.shape == (len(x), 8)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(head(x), y)


def test_same_seed_same_bytes(trained):
    x, c, head = trained
    again = train_similarity_head(x, c, dim=8, epochs=10, seed=3)
    assert again.to_bytes() == head.to_bytes() and again.sha256 == head.sha256
    other = train_similarity_head(x, c, dim=8, epochs=10, seed=4)
    assert other.sha256 != head.sha256


def test_config(trained):
    x, c, head = trained
    cfg = head.config
    assert cfg["format"] == "dcsi-similarity-head" and cfg["version"] == 1
    assert cfg["input_dim"] == 64 and cfg["dim"] == 8 and cfg["features"] is None
    assert cfg["backbone"] is None and cfg["pooling"] is None
    assert cfg["loss"] == "triplet" and cfg["margin"] == 0.2 and cfg["seed"] == 3
    t = cfg["training"]
    assert t["n_clusters"] == 100 and t["n_anchors"] == 400 and len(t["loss_per_epoch"]) == 10
    assert t["loss_per_epoch"][-1] < t["loss_per_epoch"][0]
    json.dumps(cfg)


def test_round_trip(trained, tmp_path):
    x, _, head = trained
    path = head.save(tmp_path / "h.safetensors")
    loaded = load_similarity_head(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == head.sha256 == loaded.sha256
    assert loaded.config == head.config
    np.testing.assert_array_equal(loaded.apply(x), head.apply(x))
    assert "input_dim=64, dim=8" in repr(loaded)


def test_feature_set_is_recorded(rng):
    from dcsi.features import FeatureSet

    x, c = _clustered(rng, n_clusters=5)
    fs = FeatureSet(
        features=x,
        labels=None,
        ids=[],
        classes=[],
        backbone="b",
        weights_sha256=None,
        image_size=32,
        dim=64,
        pooling="sam",
    )
    head = train_similarity_head(fs, c, dim=4, epochs=1)
    assert head.config["features"]["pooling"] == "sam" and head.config["pooling"] == "sam"
    assert head.config["backbone"] == "b" and head.config["features"]["image_size"] == 32
    assert "pooling='sam'" in repr(head)


def test_unclustered_images_are_negatives_only(rng):
    x, c = _clustered(rng, n_clusters=3)
    c = c.copy()
    c[:4] = -1  # the first cluster becomes 'no cluster'
    head = train_similarity_head(x, c, dim=4, epochs=1)
    t = head.config["training"]
    assert t["n_clusters"] == 2 and t["n_anchors"] == 8 and t["n_unclustered"] == 4


def test_training_errors(rng):
    x, c = _clustered(rng, n_clusters=3)
    with pytest.raises(InvalidParameterError, match="'clusters' parameter"):
        train_similarity_head(x, c[:-1])
    with pytest.raises(InvalidParameterError, match="'clusters' parameter"):
        train_similarity_head(x, c.astype(float))
    with pytest.raises(DataError, match="no cluster holds two images"):
        train_similarity_head(x, np.arange(len(x)))
    with pytest.raises(DataError, match="no negative"):
        train_similarity_head(x, np.zeros(len(x), dtype=int))
    with pytest.raises(InvalidParameterError, match="'dim' parameter"):
        train_similarity_head(x, c, dim=65)
    with pytest.raises(InvalidParameterError, match="'loss' parameter"):
        train_similarity_head(x, c, loss="contrastive")
    with pytest.raises(InvalidParameterError, match="'learning_rate' parameter"):
        train_similarity_head(x, c, learning_rate=0.0)


def test_apply_checks_the_dimension(trained):
    _, _, head = trained
    with pytest.raises(InvalidParameterError, match="must have 64 columns"):
        head.apply(np.zeros((2, 10), np.float32))


def test_bad_files(trained, tmp_path):
    from safetensors.numpy import save_file

    _, _, head = trained
    with pytest.raises(DataError, match="no such file"):
        load_similarity_head(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(DataError, match="not a safetensors file"):
        load_similarity_head(junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"weight": np.zeros((2, 2), np.float32)}, str(plain))
    with pytest.raises(DataError, match="not a dcsi similarity head"):
        load_similarity_head(plain)
    cfg = dict(head.config, dim=4)
    wrong = SimilarityHead(head.weight, head.bias, cfg).save(tmp_path / "wrong.safetensors")
    with pytest.raises(DataError, match="damaged"):
        load_similarity_head(wrong)
    cfg = dict(head.config, version=99)
    newer = SimilarityHead(head.weight, head.bias, cfg).save(tmp_path / "v99.safetensors")
    with pytest.raises(DataError, match="format version 99"):
        load_similarity_head(newer)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(head.to_bytes()[:-10])
    with pytest.raises(DataError, match="not a safetensors file"):
        load_similarity_head(cut)


def test_clusters_from_groups():
    class G:
        def __init__(self, indices):
            self.indices = indices

    got = clusters_from_groups([G((4, 1)), G((0, 5, 2))], 7)
    assert got.tolist() == [1, 0, 1, -1, 0, 1, -1]


@pytest.fixture
def cluster_folder(tmp_path, rng):
    from PIL import Image

    root = tmp_path / "clusters"
    for k in range(4):
        base = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        (root / f"c{k}").mkdir(parents=True)
        for j in range(3):
            img = np.clip(base.astype(int) + rng.integers(-20, 20, base.shape), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(root / f"c{k}" / f"{j}.png")
    return root


def test_cli_train_head(cluster_folder, tmp_path, capsys):
    from dcsi.cli import main

    out = tmp_path / "head.safetensors"
    args = ["train-head", str(cluster_folder), "--out", str(out), "--no-cache"]
    opts = ["--image-size", "32", "--dim", "8", "--epochs", "2", "--pooling", "ga"]
    assert main([*args, *opts, "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "trained on 4 clusters (12 images)" in stdout and "wrote" in stdout
    head = load_similarity_head(out)
    assert head.config["features"]["pooling"] == "ga" and head.input_dim == 496
    assert head.config["features"]["backbone"] == "efficientnet_lite0"


def test_cli_train_head_errors(cluster_folder, tmp_path, capsys):
    from dcsi.cli import main

    assert main(["train-head", str(cluster_folder), "--out", str(tmp_path / "h.pt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must end in .safetensors" in err[0]
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(cluster_folder.glob("c0/*.png")):
        (flat / p.name).write_bytes(p.read_bytes())
    status = main(["train-head", str(flat), "--out", str(tmp_path / "h.safetensors")])
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--clusters redundancy" in err[0]
    status = main(["train-head", str(flat), "--out", str(tmp_path / "h.safetensors"), "--dim", "0"])
    assert status == 1 and "--dim must be at least 1" in capsys.readouterr().err


def test_cli_train_head_on_near_duplicate_groups(tmp_path, rng, capsys):
    from PIL import Image

    from dcsi.cli import main

    flat = tmp_path / "flat"
    flat.mkdir()
    for k in range(5):
        img = Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8))
        for j in range(2 if k < 3 else 1):  # three pairs of copies, two single images
            img.save(flat / f"{k}_{j}.png")
    out = tmp_path / "h.safetensors"
    args = ["train-head", str(flat), "--out", str(out), "--clusters", "redundancy"]
    opts = ["--image-size", "32", "--dim", "4", "--epochs", "1", "--no-cache", "--no-progress"]
    assert main([*args, *opts]) == 0
    assert "trained on 3 clusters (6 images)" in capsys.readouterr().out
    assert load_similarity_head(out).config["training"]["n_unclustered"] == 2
