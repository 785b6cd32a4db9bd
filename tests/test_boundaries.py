"""Decision boundaries on the path between two images (dcsi.boundaries, dcsi boundaries)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dcsi
from dcsi.boundaries import (
    CONSTRAINTS,
    boundary_crossings,
    boundary_stats,
    dense_classes,
    pixel_cosine_pairs,
)
from dcsi.cli import main
from dcsi.exceptions import DataError, InvalidParameterError

# tangent lines of the convex m -> m**2 at these points: class k is the arg-max for
# m between the midpoints of its neighbours' points, so the boundaries are the midpoints.
TANGENTS = np.array([0.1, 0.45, 0.6, 0.95])
EXACT = (TANGENTS[1:] + TANGENTS[:-1]) / 2  # 0.275, 0.525, 0.775


def tangent_model(x):
    """Linear logits of the mean grey level m: l_k = 2 t_k m - t_k**2."""
    m = np.asarray(x, dtype=np.float64).reshape(len(x), -1).mean(axis=1)
    return 2 * m[:, None] * TANGENTS[None, :] - TANGENTS[None, :] ** 2


def dense_changes(classes):
    """(alpha, before, after) of every change of a dense evaluation on [0, 1]."""
    alphas = np.linspace(0, 1, len(classes))
    k = np.flatnonzero(classes[1:] != classes[:-1])
    return (alphas[k] + alphas[k + 1]) / 2, classes[k], classes[k + 1]


def assert_matches_dense(res, classes, tol, steps):
    """Every crossing found is a change of the dense evaluation (same classes, within
    tol / 2 + half the dense spacing); a dense change not found is one of a pair closer
    than the grid step 1 / steps (the documented blind spot); the ends agree."""
    alphas, before, after = dense_changes(classes)
    assert res.classes_at_ends == (classes[0], classes[-1])
    slack = tol / 2 + 0.5 / (len(classes) - 1) + 1e-12
    unmatched = list(range(len(alphas)))
    for c in res.crossings:
        hits = [
            k
            for k in unmatched
            if abs(c.alpha - alphas[k]) <= slack
            and (c.class_before, c.class_after) == (before[k], after[k])
        ]
        assert hits, f"crossing {c} is not in the dense evaluation {list(alphas)}"
        unmatched.remove(hits[0])
    for k in unmatched:
        gaps = np.abs(np.delete(alphas, k) - alphas[k])
        assert gaps.size and gaps.min() < 1 / steps, f"missed an isolated change at {alphas[k]}"
    return len(unmatched)


# ------------------------------------------------------------------------ linear model
@pytest.mark.parametrize("steps", [1, 3, 64])
@pytest.mark.parametrize("tol", [1e-3, 1e-6])
def test_linear_model_boundaries_are_the_closed_form_ones(steps, tol):
    zeros, ones = np.zeros((6, 6)), np.ones((6, 6))
    res = boundary_crossings(tangent_model, zeros, ones, steps=steps, tol=tol)
    if steps == 1:
        # one interval from class 0 to class 3: the midpoints 0.5 (class 1) and 0.75
        # (class 2) split it, so the bisection finds the middle classes as well
        assert res.classes_at_ends == (0, 3)
    assert res.n_crossings == 3
    assert [(c.class_before, c.class_after) for c in res.crossings] == [(0, 1), (1, 2), (2, 3)]
    got = np.array([c.alpha for c in res.crossings])
    assert np.all(np.abs(got - EXACT) <= tol / 2 + 1e-7)  # + float32 rounding of images
    assert res.path_classes == (0, 1, 2, 3)


def test_linear_model_against_dense_evaluation():
    zeros, ones = np.zeros((6, 6)), np.ones((6, 6))
    res = boundary_crossings(tangent_model, zeros, ones, tol=1e-5)
    dense = dense_classes(tangent_model, zeros, ones, n_points=10001)
    assert assert_matches_dense(res, dense, 1e-5, 64) == 0  # nothing missed
    assert res.n_crossings == 3


def test_reversed_path_mirrors_the_crossings():
    zeros, ones = np.zeros((4, 4)), np.ones((4, 4))
    fwd = boundary_crossings(tangent_model, zeros, ones)
    back = boundary_crossings(tangent_model, ones, zeros)
    assert [round(1 - c.alpha, 3) for c in reversed(back.crossings)] == [
        round(c.alpha, 3) for c in fwd.crossings
    ]
    assert [(c.class_after, c.class_before) for c in reversed(back.crossings)] == [
        (c.class_before, c.class_after) for c in fwd.crossings
    ]


def test_identical_images_have_no_crossing(rng):
    img = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    res = boundary_crossings(tangent_model, img, img.copy(), steps=16)
    assert res.n_crossings == 0 and res.crossings == ()
    assert res.classes_at_ends[0] == res.classes_at_ends[1]
    assert res.n_evaluations == 17  # the grid only


def test_images_reach_the_model_as_float32_in_their_scale():
    seen = []

    def model(x):
        seen.append(x)
        return np.stack([np.zeros(len(x)), np.ones(len(x))], axis=1)

    a = np.zeros((3, 5), np.uint8)
    b = np.full((3, 5), 255, np.uint8)
    boundary_crossings(model, a, b, steps=4, batch_size=2)
    assert all(x.dtype == np.float32 and x.shape[1:] == (3, 5) for x in seen)
    assert [len(x) for x in seen] == [2, 2, 1]
    batch = np.concatenate(seen)
    assert batch.min() == 0 and batch.max() == 255
    assert np.allclose(batch[:, 0, 0], [0, 63.75, 127.5, 191.25, 255])


def test_result_to_dict_is_json():
    res = boundary_crossings(tangent_model, np.zeros((4, 4)), np.ones((4, 4)))
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["n_crossings"] == 3 and d["classes_at_ends"] == [0, 3]
    assert set(d["crossings"][0]) == {"alpha", "class_before", "class_after"}
    assert d["steps"] == 64 and d["tol"] == 1e-4 and d["n_evaluations"] > 65
    assert dcsi.boundary_crossings is boundary_crossings


# ------------------------------------------------------------------------ torch models
torch = pytest.importorskip("torch")


def random_mlp(seed, n_in=64, n_classes=6):
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(n_in, 32),
        torch.nn.Tanh(),
        torch.nn.Linear(32, n_classes),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net.eval()


@pytest.mark.parametrize("seed", range(4))
def test_random_mlp_against_dense_evaluation(rng, seed):
    net = random_mlp(seed)
    for _ in range(3):
        a, b = rng.normal(size=(2, 8, 8)) * 2
        dense = dense_classes(net, a, b, n_points=10001)
        for steps in (16, 64):
            res = boundary_crossings(net, a, b, steps=steps, tol=1e-5)
            assert_matches_dense(res, dense, 1e-5, steps)


def test_mlp_finds_crossings_somewhere(rng):
    net = random_mlp(0)
    counts = [
        boundary_crossings(net, *(rng.normal(size=(2, 8, 8)) * 3)).n_crossings for _ in range(10)
    ]
    assert sum(counts) > 0


def test_numpy_function_and_torch_module_agree(rng):
    net = random_mlp(1)

    def as_numpy(x):
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()

    a, b = rng.normal(size=(2, 8, 8)) * 3
    by_module = boundary_crossings(net, a, b)
    by_function = boundary_crossings(as_numpy, a, b)
    by_tensors = boundary_crossings(net, torch.from_numpy(a), torch.from_numpy(b))
    assert by_module == by_function == by_tensors


def test_training_mode_is_warned_about(rng, caplog):
    net = random_mlp(2).train()
    a, b = rng.normal(size=(2, 8, 8))
    with caplog.at_level("WARNING", logger="dcsi.boundaries"):
        boundary_crossings(net, a, b, steps=2)
    assert "model.eval()" in caplog.text


def test_boundary_stats_matches_single_pairs(rng):
    net = random_mlp(3)
    images = rng.normal(size=(6, 8, 8)) * 3
    pairs = np.array([[0, 1], [2, 3], [4, 5], [1, 1]])
    st = boundary_stats(net, images, pairs, batch_size=50)
    for (i, j), res in zip(pairs, st.results):
        one = boundary_crossings(net, images[i], images[j])
        assert res.crossings == one.crossings and res.classes_at_ends == one.classes_at_ends
    s = st.summary
    n = st.n_crossings
    assert s["n_pairs"] == 4 and n[3] == 0
    assert s["share_0"] + s["share_1"] + s["share_2plus"] == pytest.approx(1)
    assert s["share_2plus"] == pytest.approx(np.mean(n >= 2))
    d = json.loads(json.dumps(st.to_dict(), allow_nan=False))
    assert len(d["pairs"]) == 4 and d["pairs"][3]["a"] == 1
    empty = boundary_stats(net, images, np.zeros((0, 2), int))
    assert empty.summary["n_pairs"] == 0 and empty.summary["share_0"] is None


# ------------------------------------------------------------------------ errors
def _invalid(name):
    return [(name, v) for rule in CONSTRAINTS[name] for v in rule.invalid_examples()]


@pytest.mark.parametrize(
    ("name", "value"), [*_invalid("steps"), *_invalid("tol"), *_invalid("batch_size")]
)
def test_invalid_parameters_are_refused(name, value):
    kwargs = {name: value}
    with pytest.raises(
        InvalidParameterError, match=f"The '{name}' parameter of boundary_crossings must be"
    ):
        boundary_crossings(tangent_model, np.zeros((4, 4)), np.ones((4, 4)), **kwargs)
    with pytest.raises(
        InvalidParameterError, match=f"The '{name}' parameter of boundary_stats must be"
    ):
        boundary_stats(tangent_model, np.zeros((2, 4, 4)), [[0, 1]], **kwargs)


def test_bad_inputs_are_refused():
    z = np.zeros((4, 4))
    with pytest.raises(InvalidParameterError, match="must have one shape"):
        boundary_crossings(tangent_model, z, np.zeros((4, 5)))
    with pytest.raises(InvalidParameterError, match="'image_a' parameter .* 2-D or 3-D"):
        boundary_crossings(tangent_model, np.zeros(4), np.zeros(4))
    with pytest.raises(InvalidParameterError, match="NaN or infinite"):
        boundary_crossings(tangent_model, z, np.full((4, 4), np.nan))
    with pytest.raises(InvalidParameterError, match="'model' parameter .* must be callable"):
        boundary_crossings("model.pt", z, z)
    with pytest.raises(DataError, match=r"logits of shape \(batch, n_classes\)"):
        boundary_crossings(lambda x: x.sum(axis=(1, 2)), z, z)
    with pytest.raises(DataError, match="NaN, infinite"):
        boundary_crossings(lambda x: np.full((len(x), 2), np.inf), z, z)
    with pytest.raises(InvalidParameterError, match=r"'pairs' parameter .* shape \(m, 2\)"):
        boundary_stats(tangent_model, np.zeros((3, 4, 4)), [0, 1])
    with pytest.raises(InvalidParameterError, match="row indices 0..2"):
        boundary_stats(tangent_model, np.zeros((3, 4, 4)), [[0, 3]])


# ------------------------------------------------------------------------ pairs
def test_pixel_cosine_pairs(rng):
    images = rng.integers(0, 256, (40, 6, 6)).astype(np.uint8)
    labels = np.repeat([0, 1], 20)
    images[1] = images[0]
    sim, dis, s_cos, d_cos = pixel_cosine_pairs(images, labels, n_pairs=5, seed=1)
    assert len(sim) == len(dis) == 5
    assert np.all(labels[sim[:, 0]] == labels[sim[:, 1]])
    assert np.all(labels[dis[:, 0]] == labels[dis[:, 1]])
    assert [0, 1] in sim.tolist() and s_cos.max() == pytest.approx(1)
    assert s_cos.min() > d_cos.max()
    sim2, *_ = pixel_cosine_pairs(images, labels, n_pairs=5, seed=1, exclude=[(1, 0)])
    assert [0, 1] not in sim2.tolist()


# ------------------------------------------------------------------------ command line
class TinyNet(torch.nn.Module):
    """Grey 8x8 images, 0..255 -> 2 logits."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(x.shape[0], -1) / 255.0)


@pytest.fixture
def folder(tmp_path, rng):
    from PIL import Image

    imgs = rng.integers(0, 256, (12, 8, 8)).astype(np.uint8)
    imgs[1] = imgs[0]  # a near-duplicate pair
    root = tmp_path / "data"
    for i, img in enumerate(imgs):
        cls = "a" if i < 6 else "b"
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / cls / f"img{i:02d}.png")
    return root


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(TinyNet().eval()), str(path))
    return path


def test_cli_boundaries(folder, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["boundaries", str(folder), "--model", str(model_file), "--out", str(out)]
    assert main([*argv, "--pairs", "4", "--steps", "8", "--no-progress"]) == 0
    text = capsys.readouterr().out
    for word in ("near_duplicate", "similar", "dissimilar", "2+", "boundaries.json"):
        assert word in text
    res = json.loads((out / "boundaries.json").read_text())
    assert res["summary"]["near_duplicate"]["n_pairs"] == 1
    assert res["summary"]["near_duplicate"]["share_0"] == 1.0
    assert res["summary"]["similar"]["n_pairs"] == 4
    assert res["params"]["steps"] == 8 and len(res["model"]["sha256"]) == 64
    kinds = [p["kind"] for p in res["pairs"]]
    assert kinds.count("dissimilar") == 4
    assert all(p["label_a"] == p["label_b"] for p in res["pairs"] if p["kind"] != "near_duplicate")
    csv_lines = (out / "boundaries.csv").read_text().splitlines()
    assert csv_lines[0].startswith("kind,id_a,id_b,label_a,label_b,cosine,n_crossings")
    assert len(csv_lines) == 1 + len(res["pairs"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "0"], "The 'steps' parameter of dcsi boundaries must be an int >= 1"),
        (["--tol", "2"], "The 'tol' parameter of dcsi boundaries must be a float"),
        (["--pairs", "0"], "The 'pairs' parameter of dcsi boundaries must be an int >= 1"),
    ],
)
def test_cli_bad_options_fail_before_work(folder, model_file, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    argv = ["boundaries", str(folder), "--model", str(model_file), "--out", str(out)]
    assert main([*argv, *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_model_must_be_torchscript(folder, tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "none.pt"
    assert main(["boundaries", str(folder), "--model", str(missing), "--out", str(out)]) == 1
    assert "does not exist; give a TorchScript file" in capsys.readouterr().err
    pickled = tmp_path / "pickled.pt"
    torch.save(TinyNet().state_dict(), str(pickled))
    assert main(["boundaries", str(folder), "--model", str(pickled), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "is not a TorchScript file" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
