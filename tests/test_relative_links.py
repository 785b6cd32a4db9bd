"""The density-relative copy-search stage against a slow, loop-based reference."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from scipy import ndimage
from test_registration import (
    content_frame,
    despeckle_reference,
    despeckled_reference,
    recentred_reference,
    registered_reference,
    smoothed_grey,
)

from dcsi.exceptions import InvalidParameterError
from dcsi.redundancy import find_redundancy
from dcsi.registration import MIN_MOVE, ROTATIONS, moves
from dcsi.relative_links import (
    SEARCH_GRID,
    TURN,
    ZOOM,
    RelativeOptions,
    coarse_rows,
    grid_of,
    relative_links,
    relative_score,
)


def _block_grid(img: np.ndarray, sigma: float, despeckled: bool = False) -> np.ndarray:
    """One image: grey float64, despeckled by loops, scipy Gaussian, 2 x 2 block means
    by loops."""
    g = img.astype(np.float64)
    if g.ndim == 3:
        g = g.mean(axis=2)
    if despeckled:
        g = despeckle_reference(g)
    if sigma > 0:
        g = ndimage.gaussian_filter(g, sigma, mode="nearest")
    h, w = g.shape[0] // 2, g.shape[1] // 2
    return np.array(
        [[g[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean() for j in range(w)] for i in range(h)]
    )


def _unit(b: np.ndarray) -> np.ndarray:
    z = b.ravel() - b.mean()
    return z / np.linalg.norm(z) if np.linalg.norm(z) > 1e-6 else z


def _coarse_reference(img: np.ndarray, sigma: float, despeckled: bool = False) -> np.ndarray:
    """One image's coarse row: its block grid centred, unit length."""
    return _unit(_block_grid(img, sigma, despeckled))


def _halves_reference(img: np.ndarray, options: RelativeOptions) -> list[tuple[np.ndarray, float]]:
    """One image's top, bottom, left and right half of the block grid (the middle row
    or column in both when odd), each centred and unit, with the share of the grid's
    centred sum of squares that it holds."""
    b = _block_grid(img, options.sigma, options.despeckle)
    h, w = b.shape
    mh, mw = (h + 1) // 2, (w + 1) // 2
    total = float(np.sum((b - b.mean()) ** 2))
    out = []
    for part in (b[:mh], b[h - mh :], b[:, :mw], b[:, w - mw :]):
        z = part.ravel() - part.mean()
        out.append((_unit(part), float(z @ z) / total if total > 0 else 0.0))
    return out


def _half_links_reference(
    halves_a: list, halves_b: list, options: RelativeOptions, skip_self: bool
) -> set[tuple[int, int]]:
    """(a, b) pairs that some half links: all distances, each image's k-th nearest."""
    out = set()
    for j in range(4):
        A = np.stack([h[j][0] for h in halves_a])
        B = np.stack([h[j][0] for h in halves_b])
        D = np.maximum(1.0 - A @ B.T, 0.0)
        DB = np.maximum(1.0 - B @ B.T, 0.0)
        ref_b = np.array([np.sort(np.delete(DB[i], i))[options.k - 1] for i in range(len(B))])
        if skip_self:
            ref_a = ref_b
        else:
            ref_a = np.sort(D, axis=1)[:, options.k - 1]
        for a in range(len(A)):
            for b in range(len(B)):
                if skip_self and a == b:
                    continue
                share = max(halves_a[a][j][1], halves_b[b][j][1])
                if (
                    D[a, b] <= options.max_distance
                    and D[a, b] <= options.half_ratio * min(ref_a[a], ref_b[b])
                    and share >= options.half_share
                ):
                    out.add((min(a, b), max(a, b)) if skip_self else (a, b))
    return out


def centred_reference(img: np.ndarray, sigma: float) -> np.ndarray:
    """One image's centred row by loops: grey, scipy Gaussian, the border's median as
    background, the weighted centre and spreads, a hand-written bilinear read of the
    lattice (background outside the image), centred and unit."""
    from dcsi.centred_view import GRID, SPAN

    g = smoothed_grey(img, sigma)
    h, w = g.shape
    bg, cy, cx, sy, sx = content_frame(g)

    def read(y: float, x: float) -> float:
        if y < 0 or y > h - 1 or x < 0 or x > w - 1:
            return 0.0
        y0, x0 = min(int(np.floor(y)), h - 1), min(int(np.floor(x)), w - 1)
        y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
        fy, fx = y - y0, x - x0
        v = (1 - fy) * ((1 - fx) * g[y0, x0] + fx * g[y0, x1])
        return float(v + fy * ((1 - fx) * g[y1, x0] + fx * g[y1, x1]) - bg)

    t = np.linspace(-SPAN, SPAN, GRID)
    return _unit(np.array([[read(cy + a * sy, cx + b * sx) for b in t] for a in t]))


def equalised_reference(img: np.ndarray, options: RelativeOptions) -> np.ndarray:
    """One image's equalised row: PIL's histogram equalisation of its grey levels (the
    channel mean, rounded), then the coarse row by loops."""
    from PIL import Image, ImageOps

    g = img if img.ndim == 2 else np.rint(img.astype(np.float32).mean(axis=2)).astype(np.uint8)
    eq = np.asarray(ImageOps.equalize(Image.fromarray(g)))
    return _coarse_reference(eq, options.sigma, options.despeckle)


def _view_rows_reference(images: np.ndarray, options: RelativeOptions) -> list[np.ndarray]:
    """The rows of each one-row view the options turn on, by loops."""
    views = []
    if options.centred:
        views.append(np.stack([centred_reference(x, options.sigma) for x in images]))
    if options.equalised:
        views.append(np.stack([equalised_reference(x, options) for x in images]))
    return views


def _view_links_reference(C: np.ndarray, options: RelativeOptions) -> set:
    """Pairs the rule links on one view's rows ``C``: all distances, each image's k-th
    nearest other."""
    D = np.maximum(1.0 - C @ C.T, 0.0)
    n = len(C)
    ref = np.array([np.sort(np.delete(D[i], i))[options.k - 1] for i in range(n)])
    return {
        (a, b)
        for a in range(n)
        for b in range(a + 1, n)
        if D[a, b] <= options.max_distance and D[a, b] <= options.ratio * min(ref[a], ref[b])
    }


class _Views(NamedTuple):
    """One image's reference rows: every transform (``registered_reference``), then its
    despeckled view and its recentred window (the last two rows); and the centre of its
    content."""

    rows: np.ndarray
    centre: np.ndarray


def _views(img: np.ndarray, sigma: float) -> _Views:
    rows = [registered_reference(img, sigma), despeckled_reference(img, sigma)]
    rows.append(recentred_reference(img, sigma))
    centre = np.array(content_frame(smoothed_grey(img, sigma))[1:3])
    return _Views(np.vstack(rows), centre)


def _registered_pair(G: _Views, H: _Views) -> float:
    """The registered distance of two images' :func:`_views`, by loops: the recentred
    windows count when the centres lie ``MIN_MOVE`` px apart or more along an axis."""
    g, h = G.rows, H.rows
    views = [g[-2] @ h[-2]]
    if np.abs(G.centre - H.centre).max() >= MIN_MOVE:
        views.append(g[-1] @ h[-1])
    best = max(*views, *(max(g[t] @ h[0], h[t] @ g[0]) for t in range(len(g) - 2)))
    return max(0.0, 1.0 - float(best))


def _recentred_search_rows(images: np.ndarray, sigma: float) -> np.ndarray:
    """The rows of the recentred search by loops: each recentred window's ``g x g``
    points averaged over 2 x 2 (a tail left out), centred and unit."""
    out = []
    for x in images:
        c = recentred_reference(x, sigma)
        g = int(np.sqrt(len(c)))
        L = c.reshape(g, g)
        h = g // 2
        z = np.array(
            [[L[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean() for j in range(h)] for i in range(h)]
        )
        out.append(_unit(z))
    return np.stack(out)


def _search_sources(images: np.ndarray, options: RelativeOptions) -> list:
    """Query and base rows of the zoomed, turned and recentred searches, by loops."""
    S = [registered_reference(x, options.sigma, SEARCH_GRID) for x in images]
    base = np.stack([g[0] for g in S])
    out = [(np.stack([g[t] for g in S]), base) for t in (ZOOM, TURN)]
    C = _recentred_search_rows(images, options.sigma)
    return [*out, (C, C)]


def _candidates_reference(D: np.ndarray, K: int, skip: np.ndarray | None = None) -> np.ndarray:
    """Each row's ``K`` smallest entries (``skip[i]``: a column left out of row ``i``)."""
    D = D.copy()
    if skip is not None:
        D[np.arange(len(D)), skip] = np.inf
    return np.argsort(D, axis=1, kind="stable")[:, :K]


def _links_reference(images: np.ndarray, options: RelativeOptions) -> set[tuple[int, int]]:
    """Every pair by the definition: all n x n distances, each image's k-th nearest;
    then the registered distance of every image and its candidates, by loops."""
    R = np.stack([_coarse_reference(x, options.sigma, options.despeckle) for x in images])
    D = np.maximum(1.0 - R @ R.T, 0.0)
    n = len(images)
    ref = np.array([np.sort(np.delete(D[i], i))[options.k - 1] for i in range(n)])
    out = set()
    for a in range(n):
        for b in range(a + 1, n):
            if D[a, b] <= options.max_distance and D[a, b] <= options.ratio * min(ref[a], ref[b]):
                out.add((a, b))
    if options.halves:
        H = [_halves_reference(x, options) for x in images]
        out |= _half_links_reference(H, H, options, skip_self=True)
    for C in _view_rows_reference(images, options):
        out |= _view_links_reference(C, options)
    if not options.registers(images.shape[1:]):
        return out
    G = [_views(x, options.sigma) for x in images]
    inner = np.stack([g.rows[0] for g in G])  # the candidates: nearest by the untransformed window
    cand = _candidates_reference(1.0 - inner @ inner.T, options.n_candidates(n), np.arange(n))
    reg = {(a, int(b)): _registered_pair(G[a], G[int(b)]) for a in range(n) for b in cand[a]}
    rref = np.array([sorted(reg[a, int(b)] for b in cand[a])[options.k - 1] for a in range(n)])
    # the k - 1 nearest of each image's zoomed and turned windows, on the search grid,
    # and of its recentred window
    for Z, base in _search_sources(images, options) if options.zoomed else ():
        zoomed = _candidates_reference(1.0 - Z @ base.T, options.k - 1, np.arange(n))
        for a in range(n):
            for b in zoomed[a]:
                reg.setdefault((a, int(b)), _registered_pair(G[a], G[int(b)]))
    for (a, b), d in reg.items():
        if d <= options.max_distance and d <= options.ratio * min(rref[a], rref[b]):
            out.add((min(a, b), max(a, b)))
    return out


@pytest.mark.parametrize("shape", [(28, 28), (17, 23), (16, 16, 3)])
@pytest.mark.parametrize("despeckled", [False, True])
def test_coarse_rows_match_reference(rng, shape, despeckled):
    images = rng.integers(0, 256, size=(6, *shape), dtype=np.uint8)
    got = coarse_rows(images, sigma=1.0, despeckled=despeckled)
    want = np.stack([_coarse_reference(x, 1.0, despeckled) for x in images])
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_despeckle_removes_isolated_specks_and_keeps_lines(rng):
    from dcsi.relative_links import despeckle

    g = rng.integers(0, 256, size=(3, 9, 11)).astype(np.float32)
    np.testing.assert_array_equal(despeckle(g), np.stack([despeckle_reference(x) for x in g]))
    img = np.zeros((1, 12, 12), np.float32)
    img[0, 3, 2:10] = 200  # a 1-px line
    img[0, 4:10, 9] = 200  # and a 1-px column joined to it
    img[0, 8, 3] = 255  # an isolated speck
    out = despeckle(img)[0]
    assert out[8, 3] == 0
    np.testing.assert_array_equal(out[3, 2:10], 200)
    np.testing.assert_array_equal(out[4:10, 9], 200)


@pytest.mark.parametrize("shape", [(28, 28), (18, 23), (16, 16, 3)])
def test_half_rows_match_the_halves_of_the_grid(rng, shape):
    from dcsi.half_views import HALVES, half_rows

    images = rng.integers(0, 256, size=(5, *shape), dtype=np.uint8)
    images[0, : shape[0] // 2] = 7  # a flat top half: holds nothing, a zero row
    opts = RelativeOptions()
    rows = coarse_rows(images, opts.sigma, opts.despeckle)
    want = [_halves_reference(x, opts) for x in images]
    for j, half in enumerate(HALVES):
        got, share = half_rows(rows, grid_of(shape), half)
        np.testing.assert_allclose(got, np.stack([w[j][0] for w in want]), atol=1e-5)
        np.testing.assert_allclose(share, [w[j][1] for w in want], atol=1e-6)
    # the flat top half holds little of the image: its grid rows are flat but for the
    # smoothing across the middle (and, on an odd grid, the middle row it shares)
    assert half_rows(rows, grid_of(shape), "top")[1][0] < 0.15


def test_relative_links_are_exactly_the_pairs_of_the_definition(rng):
    base = rng.integers(0, 256, size=(60, 20, 20), dtype=np.uint8)
    images = base.copy()
    # copies of the first ten images, noisy and blurred, in place of ten others
    for i in range(10):
        noisy = base[i].astype(np.float64) + rng.normal(0, 12, base[i].shape)
        images[30 + i] = np.clip(ndimage.gaussian_filter(noisy, 0.6), 0, 255).astype(np.uint8)
    # copies of five more with a white band (a caption) over the bottom third
    for i in range(5):
        images[50 + i] = base[10 + i]
        images[50 + i, 13:] = 255
    # two different images whose top halves are one faint pattern on a flat ground
    faint = 100 + rng.integers(0, 4, size=(13, 20))
    images[55, :13] = images[56, :13] = faint
    for opts in (
        RelativeOptions(),
        RelativeOptions(halves=True),
        RelativeOptions(
            ratio=0.6, k=3, max_distance=0.5, candidates=6, halves=True, half_ratio=0.3
        ),
        RelativeOptions(registered=False, despeckle=False, halves=True),
        RelativeOptions(halves=True, half_share=0.0),
        RelativeOptions(centred=True),
        RelativeOptions(ratio=0.6, k=3, max_distance=0.5, registered=False, centred=True),
        RelativeOptions(equalised=True),
        RelativeOptions(ratio=0.6, k=3, registered=False, centred=True, equalised=True),
    ):
        got = relative_links(images, opts)
        assert got is not None
        want = _links_reference(images, opts)
        assert {tuple(p) for p in got.pairs.tolist()} == want
        # the score is <= 1 exactly for those pairs, for any pair asked
        a, b = np.triu_indices(len(images), 1)
        linked = got.score(a, b) <= 1.0
        assert {(int(x), int(y)) for x, y in zip(a[linked], b[linked])} == want
    # and the planted pairs are among them with the defaults; the captioned copies
    # only with the halves
    planted = {(i, 30 + i) for i in range(10)}
    captioned = {(10 + i, 50 + i) for i in range(5)}
    assert planted <= _links_reference(images, RelativeOptions())
    assert planted | captioned <= _links_reference(images, RelativeOptions(halves=True))
    assert not captioned & _links_reference(images, RelativeOptions())
    # the faint halves link only when a half holding nothing of either image may link
    assert (55, 56) not in _links_reference(images, RelativeOptions(halves=True))
    assert (55, 56) in _links_reference(images, RelativeOptions(halves=True, half_share=0.0))


def test_relative_score_by_hand():
    opts = RelativeOptions(ratio=0.5, max_distance=0.3)
    s = relative_score(
        np.array([0.0, 0.05, 0.1, 0.35]),
        np.array([0.2, 0.2, 0.4, 0.9]),
        np.array([0.4, 0.1, 0.4, 0.9]),
        opts,
    )
    np.testing.assert_allclose(s[:3], [0.0, 0.05 / 0.05, 0.1 / 0.2])
    assert s[3] == np.inf
    # another ratio (the halves' own): the same rule, the same max_distance
    h = relative_score(
        np.array([0.0, 0.05, 0.1, 0.35]),
        np.array([0.2, 0.2, 0.4, 0.9]),
        np.array([0.4, 0.1, 0.4, 0.9]),
        opts,
        ratio=0.1,
    )
    np.testing.assert_allclose(h[:3], [0.0, 0.05 / 0.01, 0.1 / 0.04])
    assert h[3] == np.inf


def test_small_sets_skip_the_stage(rng):
    images = rng.integers(0, 256, size=(10, 16, 16), dtype=np.uint8)
    assert relative_links(images) is None
    res = find_redundancy(images)
    assert "n_relative_pairs" in res.summary and res.summary["n_relative_pairs"] == 0


def test_find_redundancy_records_and_uses_the_stage(rng):
    from dcsi.samples import load_sample

    s = load_sample("fashion-mnist", "test")
    images = s.images[:400].copy()
    # a median-filtered copy: too far for the absolute threshold, found by the ratio
    images[399] = ndimage.median_filter(images[0], size=3)
    on = find_redundancy(images)
    off = find_redundancy(images, relative=False)
    assert on.params["relative"] == RelativeOptions().to_dict()
    assert off.params["relative"] is None
    pair = {0, 399}
    assert any(pair <= set(g.indices) for g in on)
    assert not any(pair <= set(g.indices) for g in off)


@pytest.mark.parametrize(
    "kw",
    [
        {"ratio": 0.0},
        {"ratio": 1.0},
        {"k": 1},
        {"max_distance": 0.0},
        {"sigma": -1.0},
        {"candidates": 1},
        {"registered": "yes"},
        {"despeckle": 1},
        {"zoomed": "no"},
        {"halves": 1},
        {"centred": "yes"},
        {"equalised": 1},
        {"half_ratio": 1.0},
        {"half_share": 1.5},
    ],
)
def test_bad_options_are_refused(kw):
    with pytest.raises(InvalidParameterError, match="RelativeOptions"):
        RelativeOptions(**kw)


def test_bad_relative_argument_is_refused():
    with pytest.raises(InvalidParameterError, match="'relative' parameter of find_redundancy"):
        find_redundancy(np.zeros((30, 8, 8), np.uint8), relative="yes")


def test_relative_cross_pairs_match_the_definition(rng):
    from dcsi.relative_links import relative_cross_pairs

    train = rng.integers(0, 256, size=(40, 16, 16), dtype=np.uint8)
    test = rng.integers(0, 256, size=(12, 16, 16), dtype=np.uint8)
    for i in range(4):  # blurred, noisy copies of training images in the test set
        noisy = train[i].astype(np.float64) + rng.normal(0, 10, train[i].shape)
        test[i] = np.clip(ndimage.gaussian_filter(noisy, 0.5), 0, 255).astype(np.uint8)
    for i in range(4, 7):  # copies with a dark band over the left third
        test[i] = train[i]
        test[i, :, :5] = 0
    opts = RelativeOptions(halves=True, centred=True, equalised=True)
    pairs, scores = relative_cross_pairs(test, train, opts)
    Rtr = np.stack([_coarse_reference(x, opts.sigma, opts.despeckle) for x in train])
    Rte = np.stack([_coarse_reference(x, opts.sigma, opts.despeckle) for x in test])
    Dtt = np.maximum(1.0 - Rtr @ Rtr.T, 0.0)
    ref_tr = np.array([np.sort(np.delete(Dtt[i], i))[opts.k - 1] for i in range(len(train))])
    D = np.maximum(1.0 - Rte @ Rtr.T, 0.0)
    ref_te = np.sort(D, axis=1)[:, opts.k - 1]
    want = {
        (t, r)
        for t in range(len(test))
        for r in range(len(train))
        if D[t, r] <= opts.max_distance and D[t, r] <= opts.ratio * min(ref_te[t], ref_tr[r])
    }
    # the registered distance: each image and its K nearest training images
    K = opts.n_candidates(len(train))
    Gtr = [_views(x, opts.sigma) for x in train]
    Gte = [_views(x, opts.sigma) for x in test]
    Itr, Ite = np.stack([g.rows[0] for g in Gtr]), np.stack([g.rows[0] for g in Gte])
    c_tr = _candidates_reference(1.0 - Itr @ Itr.T, K, np.arange(len(train)))
    c_te = _candidates_reference(1.0 - Ite @ Itr.T, K)
    rref_tr = [
        sorted(_registered_pair(Gtr[i], Gtr[j]) for j in c_tr[i])[opts.k - 1]
        for i in range(len(train))
    ]
    # the zoomed and turned windows: of each test image against the training windows,
    # and back
    zoomed = set()
    for (Qtr, Btr), (Qte, Bte) in zip(
        _search_sources(train, opts), _search_sources(test, opts), strict=True
    ):
        z_te = _candidates_reference(1.0 - Qte @ Btr.T, opts.k - 1)
        z_tr = _candidates_reference(1.0 - Qtr @ Bte.T, opts.k - 1)
        zoomed |= {(t, int(r)) for t in range(len(test)) for r in z_te[t]}
        zoomed |= {(int(t), r) for r in range(len(train)) for t in z_tr[r]}
    rref_te = {}
    for t in range(len(test)):
        d = {int(r): _registered_pair(Gte[t], Gtr[r]) for r in c_te[t]}
        rref_te[t] = sorted(d.values())[opts.k - 1]
        want |= {
            (t, r)
            for r, v in d.items()
            if v <= opts.max_distance and v <= opts.ratio * min(rref_te[t], rref_tr[r])
        }
    for t, r in zoomed:
        v = _registered_pair(Gte[t], Gtr[r])
        if v <= opts.max_distance and v <= opts.ratio * min(rref_te[t], rref_tr[r]):
            want.add((t, r))
    Htr = [_halves_reference(x, opts) for x in train]
    Hte = [_halves_reference(x, opts) for x in test]
    by_halves = _half_links_reference(Hte, Htr, opts, skip_self=False)
    want |= by_halves
    # the centred and equalised views: each test image's k nearest training images
    for Ctr, Cte in zip(
        _view_rows_reference(train, opts), _view_rows_reference(test, opts), strict=True
    ):
        Dc = np.maximum(1.0 - Ctr @ Ctr.T, 0.0)
        cref_tr = np.array([np.sort(np.delete(Dc[i], i))[opts.k - 1] for i in range(len(train))])
        Dc = np.maximum(1.0 - Cte @ Ctr.T, 0.0)
        cref_te = np.sort(Dc, axis=1)[:, opts.k - 1]
        want |= {
            (t, r)
            for t in range(len(test))
            for r in np.argsort(Dc[t], kind="stable")[: opts.k].tolist()
            if Dc[t, r] <= opts.max_distance
            and Dc[t, r] <= opts.ratio * min(cref_te[t], cref_tr[r])
        }
    assert {tuple(p) for p in pairs.tolist()} == want
    assert {(i, i) for i in range(7)} <= want
    assert {(i, i) for i in range(4, 7)} <= by_halves
    assert np.all(scores <= 1.0)


def test_leakage_counts_relative_copies():
    from dcsi.leakage import find_leakage
    from dcsi.samples import load_sample

    s = load_sample("fashion-mnist", "test")
    train, test = s.images[:300].copy(), s.images[300:340].copy()
    test[0] = ndimage.median_filter(train[5], size=3)
    on = find_leakage(train, test)
    off = find_leakage(train, test, relative=False)
    got = {(p.test_id, p.train_id): p.stage for p in on.pairs}
    assert got.get(("0", "5")) == "relative"
    assert ("0", "5") not in {(p.test_id, p.train_id) for p in off.pairs}
    assert on.params["relative"] == RelativeOptions().to_dict()


def test_flips_link_mirror_images_only_when_asked(rng):
    from dcsi.samples import load_sample

    s = load_sample("fashion-mnist", "test")
    images = s.images[:300].copy()
    images[298] = images[0][:, ::-1]  # a left-right mirror
    images[299] = images[1][::-1]  # a top-bottom mirror
    plain = relative_links(images)
    flips = relative_links(images, RelativeOptions(flips=True))
    assert plain is not None and flips is not None
    got = {tuple(p) for p in flips.pairs.tolist()}
    assert {(0, 298), (1, 299)} <= got
    assert not {(0, 298), (1, 299)} & {tuple(p) for p in plain.pairs.tolist()}
    # the pairwise score agrees with the search, mirrors included
    a, b = np.triu_indices(len(images), 1)
    linked = flips.score(a, b) <= 1.0
    assert {(int(x), int(y)) for x, y in zip(a[linked], b[linked])} == got
    res = find_redundancy(images, relative=RelativeOptions(flips=True))
    assert any({0, 298} <= set(g.indices) for g in res)
    assert res.params["relative"]["flips"] is True
    with pytest.raises(InvalidParameterError, match="'flips' parameter of RelativeOptions"):
        RelativeOptions(flips="yes")


def test_relative_cross_pairs_find_mirrors_only_with_flips():
    from dcsi.relative_links import relative_cross_pairs
    from dcsi.samples import load_sample

    s = load_sample("fashion-mnist", "test")
    train, test = s.images[:300].copy(), s.images[300:340].copy()
    test[0] = train[3][:, ::-1]  # a left-right mirror of a training image
    test[1] = train[7][::-1]  # a top-bottom one
    flips = relative_cross_pairs(test, train, RelativeOptions(flips=True))
    plain = relative_cross_pairs(test, train)
    assert flips is not None and plain is not None
    assert {(0, 3), (1, 7)} <= {tuple(p) for p in flips[0].tolist()}
    assert not {(0, 3), (1, 7)} & {tuple(p) for p in plain[0].tolist()}


def test_rotated_copies_are_linked_by_the_registered_distance_only(rng):
    from dcsi.samples import load_sample

    s = load_sample("fashion-mnist", "test")
    images = s.images[:400].copy()
    for i, angle in enumerate((-8.0, -6.0, 7.0, 8.0)):
        images[396 + i] = ndimage.rotate(images[10 + i], angle, reshape=False, order=1)
    planted = {(10 + i, 396 + i) for i in range(4)}
    on = relative_links(images)
    off = relative_links(images, RelativeOptions(registered=False))
    assert on is not None and off is not None and on.registered is not None
    assert planted <= {tuple(p) for p in on.pairs.tolist()}
    assert not planted & {tuple(p) for p in off.pairs.tolist()}
    res = find_redundancy(images)
    assert all(any({a, b} <= set(g.indices) for g in res) for a, b in planted)
    assert res.params["relative"]["registered"] is True


def test_small_images_are_not_registered(rng):
    for side, registered in ((8, False), (15, False), (16, True)):
        images = rng.integers(0, 256, size=(40, side, side), dtype=np.uint8)
        got = relative_links(images)
        assert got is not None and (got.registered is not None) == registered


def test_zoomed_candidates_are_the_nearest_zoomed_turned_and_recentred_windows(rng):
    images = rng.integers(0, 256, size=(40, 20, 20), dtype=np.uint8)
    opts = RelativeOptions()
    got = relative_links(images, opts)
    sources = _search_sources(images, opts)
    assert sources[0][1].shape[1] == 25  # 20 px: a 16-px window in 5 x 5 blocks of 3 px
    assert sources[2][0].shape[1] == 64  # recentred: 16 x 16 points 1 px apart, 2 x 2 means
    want = [
        _candidates_reference(1.0 - Z @ base.T, opts.k - 1, np.arange(len(images)))
        for Z, base in sources
    ]
    K = opts.n_candidates(len(images))
    np.testing.assert_array_equal(got.candidates[:, K:], np.concatenate(want, axis=1))
    assert moves()[TURN] == (ROTATIONS[0], 1.0, 1.0)
    off = relative_links(images, RelativeOptions(zoomed=False))
    assert off.candidates.shape == (len(images), K)
    # with the faiss search (large sets) the zoomed candidates are skipped
    pytest.importorskip("faiss")
    ann = relative_links(images, opts, search="ann")
    assert ann.candidates.shape == (len(images), K)


@pytest.mark.parametrize("shape", [(24, 24), (19, 26), (20, 20, 3)])
def test_centred_rows_match_loops(rng, shape):
    from dcsi.centred_view import centred_rows

    images = rng.integers(0, 256, size=(5, *shape), dtype=np.uint8)
    images[1] = 77  # uniform: a zero row
    images[2] = 255
    images[2][4:9, 5:12] = 0  # a dark drawing on white
    for sigma in (0.0, 1.0):
        want = np.stack([centred_reference(x, sigma) for x in images])
        np.testing.assert_allclose(centred_rows(images, sigma), want, atol=2e-6)
    assert not centred_rows(images[1:2]).any()


def _blobs(rng: np.random.Generator, n: int, side: int = 32) -> np.ndarray:
    """Smooth random drawings in the middle of a black square."""
    out = np.zeros((n, side, side), dtype=np.uint8)
    for i in range(n):
        z = ndimage.gaussian_filter(rng.normal(size=(side // 2, side // 2)), 1.5)
        z = np.clip(128 + 900 * z, 0, 255)
        out[i, side // 4 : side // 4 + side // 2, side // 4 : side // 4 + side // 2] = z
    return out


def test_the_centred_view_links_moved_and_rescaled_copies_the_grid_misses(rng):
    from dcsi.centred_view import centred_rows, frames
    from dcsi.relative_links import relative_cross_pairs

    images = _blobs(rng, 80)
    # copies of images 0-5 moved by 4-5 px, of 6-8 drawn 1.5 times as large
    for i, (dy, dx) in enumerate([(5, 0), (-4, 4), (0, -5), (5, 5), (-5, -3), (4, -5)]):
        images[70 + i] = np.roll(images[i], (dy, dx), axis=(0, 1))
    for i in range(3):
        big = ndimage.zoom(images[6 + i].astype(np.float64), 1.5, order=1)
        o = (big.shape[0] - 32) // 2
        images[76 + i] = np.clip(big[o : o + 32, o : o + 32], 0, 255).astype(np.uint8)
    moved = {(i, 70 + i) for i in range(6)}
    scaled = {(6 + i, 76 + i) for i in range(3)}
    # a move is exact in the centred view (up to the smoothing's tails at the edges):
    # the frame moves with the content
    C = centred_rows(images, 1.0)
    assert np.all(1.0 - np.einsum("ij,ij->i", C[:6], C[70:76]) < 1e-4)
    _, centre, spread = frames(images[[0, 70]].astype(np.float64))
    np.testing.assert_allclose(centre[1] - centre[0], [5, 0], atol=1e-9)
    np.testing.assert_allclose(spread[1], spread[0], atol=1e-9)
    centred = RelativeOptions(centred=True)
    on = {tuple(p) for p in relative_links(images, centred).pairs.tolist()}
    default = {tuple(p) for p in relative_links(images).pairs.tolist()}
    grid = relative_links(images, RelativeOptions(registered=False))
    assert moved | scaled <= on
    assert not (moved | scaled) & {tuple(p) for p in grid.pairs.tolist()}
    # by default the registered distance's recentred windows link the moved copies (and
    # leakage finds them); a change of scale of the content is the centred view's alone
    assert moved <= default and not scaled & default
    pairs, _ = relative_cross_pairs(images[70:79], images[:70])
    assert {(i, i) for i in range(6)} <= {tuple(p) for p in pairs.tolist()}
    # the score of the grouping agrees, and leakage finds the moved copies too
    links = relative_links(images, centred)
    a, b = np.array(sorted(moved | scaled)).T
    assert np.all(links.score(a, b) <= 1.0)
    pairs, _ = relative_cross_pairs(images[70:79], images[:70], centred)
    assert {(i, i) for i in range(6)} <= {tuple(p) for p in pairs.tolist()}


def test_relative_cross_pairs_with_known_train_references_are_the_same(rng):
    from dcsi.relative_links import relative_cross_pairs

    images = _blobs(rng, 80)
    for i, (dy, dx) in enumerate([(5, 0), (-4, 4), (1, 1)]):
        images[70 + i] = np.roll(images[i], (dy, dx), axis=(0, 1))
    train, test = images[:70], images[70:]
    links = relative_links(train)
    known = (links.reference, links.registered_reference)
    pairs, scores = relative_cross_pairs(test, train)
    got, got_scores = relative_cross_pairs(test, train, train_reference=known)
    np.testing.assert_array_equal(got, pairs)
    np.testing.assert_array_equal(got_scores, scores)
    assert {(0, 0), (1, 1), (2, 2)} <= {tuple(p) for p in pairs.tolist()}
    # the training side computed once serves any number of test sets, the same links
    from dcsi.relative_links import cross_side

    side = cross_side(train, train_reference=known)
    for part in (test, test[:1], images[40:45]):
        once = relative_cross_pairs(part, side)
        plain = relative_cross_pairs(part, train)
        np.testing.assert_array_equal(once[0], plain[0])
        np.testing.assert_array_equal(once[1], plain[1])
    # the references are used, not recomputed: halved, they raise the scores
    halved = (links.reference / 2, links.registered_reference / 2)
    same, raised = relative_cross_pairs(test, train, train_reference=halved)
    np.testing.assert_array_equal(same, pairs)
    assert np.all(raised >= scores) and np.any(raised > scores)
