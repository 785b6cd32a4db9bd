"""The neighbour index's pixel check: colour rows, the rule, copies first, files, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage
from test_relative_links import despeckle_reference

from dcsi.aligned import aligned_distance
from dcsi.copy_verification import (
    LINK_PARTNERS,
    LINK_RATIO,
    PixelCheck,
    aligned_copies,
    colour_rows,
    copies_first,
    shortlist_distance,
    verify_neighbors,
)
from dcsi.relative_links import RelativeOptions, coarse_rows
from dcsi.sources import open_source


def slow_colour_rows(
    images: np.ndarray, sigma: float = 1.0, despeckled: bool = False
) -> np.ndarray:
    """Per image and channel: despeckled by loops, Gaussian, 2 x 2 block means by
    loops, centred, unit; channels side by side, unit length (float64)."""
    out = []
    for img in images.astype(np.float64):
        parts = []
        for c in range(3):
            g = img[..., c]
            if despeckled:
                g = despeckle_reference(g)
            g = ndimage.gaussian_filter(g, sigma, mode="nearest")
            h, w = g.shape[0] // 2, g.shape[1] // 2
            b = np.array([[g[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean() for j in range(w)]
                          for i in range(h)]).ravel()  # fmt: skip
            b -= b.mean()
            parts.append(b / np.linalg.norm(b) if np.linalg.norm(b) > 1e-6 else 0 * b)
        row = np.concatenate(parts)
        out.append(row / np.linalg.norm(row))
    return np.array(out)


def test_colour_rows_equal_a_slow_loop(rng):
    images = rng.integers(0, 256, (6, 10, 12, 3)).astype(np.uint8)
    np.testing.assert_allclose(colour_rows(images), slow_colour_rows(images), atol=1e-5)
    np.testing.assert_allclose(
        colour_rows(images, despeckled=True), slow_colour_rows(images, despeckled=True), atol=1e-5
    )
    grey = images[..., 0]
    np.testing.assert_allclose(
        colour_rows(grey), slow_colour_rows(np.repeat(grey[..., None], 3, axis=3)), atol=1e-5
    )


def test_colour_rows_tell_a_recoloured_icon_apart(rng):
    red = np.zeros((1, 16, 16, 3), np.uint8)
    red[0, 4:12, 4:12, 0] = 255
    blue = red[..., ::-1].copy()
    a, b = colour_rows(red), colour_rows(blue)
    assert 1 - float(a[0] @ b[0]) > 0.5  # same grey picture, different colour


def planted(rng, n=60, copies=8):
    """Random 12 x 12 colour images, the first ``copies`` copied with mild noise at the
    end (copy of row i is row n + i)."""
    base = rng.integers(0, 256, (n, 12, 12, 3)).astype(np.float64)
    base = ndimage.gaussian_filter(base, (0, 1.5, 1.5, 0))  # smooth like pictures
    noisy = base[:copies] + rng.normal(0, 1.0, base[:copies].shape)
    return np.clip(np.concatenate([base, noisy]), 0, 255).astype(np.uint8)


def brute_verified(rows: np.ndarray, options: RelativeOptions) -> set[tuple[int, int]]:
    """Every pair that passes the rule, from all pairwise distances (slow)."""
    D = np.maximum(1 - rows.astype(np.float64) @ rows.T.astype(np.float64), 0)
    np.fill_diagonal(D, np.inf)
    ref = np.sort(D, axis=1)[:, options.k - 1]
    out = set()
    for a in range(len(D)):
        for b in range(len(D)):
            d = D[a, b]
            if a != b and d <= options.max_distance and d <= options.ratio * min(ref[a], ref[b]):
                out.add((a, b))
    return out


def test_build_finds_exactly_the_pairs_of_a_brute_force_rule(rng):
    images = planted(rng)
    options = RelativeOptions()
    rows = colour_rows(images, options.sigma, options.despeckle)
    check, cand, dist, ok = PixelCheck.build(images, options)
    np.testing.assert_array_equal(check.rows, rows)
    found = {(a, int(cand[a, j])) for a in range(len(rows)) for j in np.flatnonzero(ok[a])}
    expected = brute_verified(rows, options)
    assert found == expected
    assert {(i, 60 + i) for i in range(8)} <= found  # the planted copies, both ways
    # new images (not indexed) are checked against the indexed ones by the same rule
    q_cand, _, q_ok = check.query(images[60:])
    for i in range(8):
        assert q_cand[i, 0] == 60 + i  # itself, at distance 0
        assert q_ok[i, 0] and i in q_cand[i][q_ok[i]]


def test_shortlist_distance_equals_aligned_distance(rng):
    from dcsi.copy_verification import shortlist_distance

    images = planted(rng, n=30, copies=0)
    images[4] = 9  # constant
    queries = np.array([0, 4, 11, 29])
    shortlist = np.array([rng.choice(30, 6, replace=False) for _ in queries])
    got = shortlist_distance(images, queries, shortlist, block=3)
    pairs = np.stack([np.repeat(queries, 6), shortlist.ravel()], 1)
    np.testing.assert_allclose(got.ravel(), aligned_distance(images, pairs), atol=1e-5)


def test_aligned_copies_equal_a_loop(rng):
    images = planted(rng, n=40, copies=0)
    queries = np.array([0, 5, 9])
    shortlist = np.array([rng.choice(np.arange(10, 40), 10, replace=False) for _ in queries])
    images[shortlist[1, 3]] = np.roll(images[5], 1, axis=1)  # a shifted copy of image 5
    best, low, ok = aligned_copies(
        images, queries, shortlist, ratio=0.7, max_distance=0.2, registered=False
    )
    for r, q in enumerate(queries):
        d = [aligned_distance(images, np.array([[q, j]]))[0] for j in shortlist[r]]
        j = int(np.argmin(d))
        assert best[r] == j and low[r] == pytest.approx(d[j], abs=1e-5)
        assert ok[r] == (d[j] <= 0.7 * sorted(d)[4] and d[j] <= 0.2)
    assert best[1] == 3 and ok[1] and not ok[0] and not ok[2]


def test_registered_stage_two_is_the_smaller_distance_and_finds_a_turned_copy(rng):
    from dcsi.registration import registered_distance, registered_windows

    # 24-px images (registered from 16 px); image 30 is image 4 turned by 6 degrees
    images = np.kron(planted(rng, n=30, copies=0), np.ones((1, 2, 2, 1), np.uint8))
    turned = ndimage.rotate(images[4], 6.0, axes=(0, 1), reshape=False, order=1, mode="nearest")
    images = np.concatenate([images, turned[None]])
    queries = np.array([30, 2])
    shortlist = np.array([rng.permutation(np.r_[4, 10:19]), np.arange(20, 30)])
    best, low, ok = aligned_copies(images, queries, shortlist, ratio=0.7, max_distance=0.2)
    W = registered_windows(images)
    for r, q in enumerate(queries):  # the loop: each pair's two distances, the smaller kept
        d = [
            min(
                aligned_distance(images, np.array([[q, j]]))[0],
                registered_distance(W, W, np.array([q]), np.array([j]))[0],
            )
            for j in shortlist[r]
        ]
        j = int(np.argmin(d))
        assert best[r] == j and low[r] == pytest.approx(d[j], abs=1e-5)
        assert ok[r] == (d[j] <= 0.7 * sorted(d)[4] and d[j] <= 0.2)
    assert shortlist[0, best[0]] == 4 and ok[0]
    plain = aligned_copies(images, queries[:1], shortlist[:1], registered=False)
    assert low[0] < 0.5 * plain[1][0]  # registration brings the turned copy far closer


def test_many_identical_images_are_all_copies_of_each_other(rng):
    # six identical images (icon aliases): each one's reference distance is 0, and
    # float rounding of 1 - cos must not keep them apart
    images = planted(rng, n=40, copies=0)
    rows = colour_rows(images).astype(np.float64)
    noisy = int(np.argmax(np.abs(1.0 - np.einsum("ij,ij->i", rows, rows))))
    assert 1.0 - rows[noisy] @ rows[noisy] != 0.0  # an image whose 1 - cos with itself is not 0
    images[10:16] = images[noisy]
    group = set(range(10, 16)) | {noisy}  # 6 or 7 identical images
    _, cand, dist, ok = PixelCheck.build(images)
    for i in range(40):
        if i in group:  # its 5 candidates: identical images, all passing at distance 0
            assert set(cand[i]) <= group - {i} and ok[i].all() and (dist[i] == 0).all()
        else:
            assert not ok[i].any()


def test_copies_first_moves_verified_copies_ahead_and_keeps_cosines(rng):
    V = rng.standard_normal((6, 4))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    neighbors = np.array([[1, 2, 3]])
    scores = (V[[1, 2, 3]] @ V[0])[None].astype(np.float32)
    cand = np.array([[5, 3, 4]])
    ok = np.array([[True, True, False]])
    dist = np.array([[0.02, 0.01, 0.0]])
    got, got_scores, is_copy = copies_first(neighbors, scores, cand, ok, dist, V[:1], V)
    np.testing.assert_array_equal(got, [[3, 5, 1]])  # closest copy first, then CNN order
    np.testing.assert_array_equal(is_copy, [[True, True, False]])
    np.testing.assert_allclose(got_scores[0], V[[3, 5, 1]] @ V[0], rtol=1e-6)


def test_index_puts_planted_copies_first_and_round_trips(rng, tmp_path):
    from dcsi.neighbor_index import index_features, load_neighbor_index
    from dcsi.sources import open_source

    images = planted(rng)
    # features that rank the copies last: each copy gets a vector far from its original
    feats = rng.standard_normal((len(images), 8)).astype(np.float32)
    ids = [f"img{i}" for i in range(len(images))]
    idx = index_features(feats, ids, k=4, images=open_source(images))
    assert idx.metadata["verify"]["ratio"] == RelativeOptions().ratio
    for i in range(8):
        assert idx.neighbors[i, 0] == 60 + i and idx.is_copy[i, 0]
        assert idx.neighbors[60 + i, 0] == i
        np.testing.assert_allclose(idx.scores[i, 0], feats[i] @ feats[60 + i] / (
            np.linalg.norm(feats[i]) * np.linalg.norm(feats[60 + i])), rtol=1e-5)  # fmt: skip
    plain = index_features(feats, ids, k=4, images=open_source(images), verify=False)
    assert plain.metadata["verify"] is None and not plain.is_copy.any()
    assert not (plain.neighbors[:8, 0] == np.arange(60, 68)).all()
    idx.save(tmp_path / "a")
    back = load_neighbor_index(tmp_path / "a")
    np.testing.assert_array_equal(back.neighbors, idx.neighbors)
    np.testing.assert_array_equal(back.is_copy, idx.is_copy)
    np.testing.assert_array_equal(back.pixels.rows, idx.pixels.rows)
    np.testing.assert_array_equal(back.pixels.reference, idx.pixels.reference)
    # an index saved without the check, over the same folder, leaves no pixel files
    plain.save(tmp_path / "a")
    assert not (tmp_path / "a" / "thumbnails.npy").exists()
    assert load_neighbor_index(tmp_path / "a").pixels is None


def test_stage_two_puts_a_shifted_copy_first(rng):
    from dcsi.neighbor_index import index_features
    from dcsi.sources import open_source

    # 60 look-alikes (one pattern, small variations: a dense neighbourhood) and a copy of
    # image 7 shifted by 2 px: farther than the look-alikes on stage 1's coarse grid,
    # at about 0 once aligned
    smooth = np.kron(planted(rng, n=61, copies=0), np.ones((1, 3, 3, 1), np.uint8))[:, :32, :32]
    base = (0.85 * smooth[60] + 0.15 * smooth[:60]).astype(np.uint8)
    shifted = np.roll(base[7], 2, axis=1)
    shifted[:, :2] = base[7][:, :1]
    images = open_source(np.concatenate([base, shifted[None]]))
    # features whose nearest image to the copy (row 60) is image 3, then image 7
    feats = rng.standard_normal((61, 16)).astype(np.float32)
    v = feats[60]
    feats[3] = v + 0.05 * rng.standard_normal(16)
    feats[7] = v + 0.2 * rng.standard_normal(16)
    ids = [str(i) for i in range(61)]
    plain = index_features(feats, ids, k=3, verify=False)
    assert list(plain.neighbors[60, :2]) == [3, 7]
    idx = index_features(feats, ids, k=3, images=images)
    _, cand, _, ok = PixelCheck.build(idx.pixels.thumbnails)
    assert 7 not in cand[60][ok[60]]  # stage 1 does not link them
    assert list(idx.neighbors[60, :2]) == [7, 3] and not idx.is_copy[60].any()  # a ranking
    u = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    assert idx.scores[60, 0] == pytest.approx(u[60] @ u[7], rel=1e-5)


def test_version_1_folders_still_load(rng, tmp_path):
    from dcsi.neighbor_index import INDEX_FILE, index_features, load_neighbor_index

    feats = rng.standard_normal((30, 8)).astype(np.float32)
    index_features(feats, [str(i) for i in range(30)], k=3).save(tmp_path)
    meta = json.loads((tmp_path / INDEX_FILE).read_text())
    meta["format_version"] = 1
    del meta["verify"]
    (tmp_path / INDEX_FILE).write_text(json.dumps(meta))
    back = load_neighbor_index(tmp_path)
    assert back.pixels is None and back.k == 3


def test_stage_two_registration_is_recorded_and_read_back(rng, tmp_path):
    from dcsi.neighbor_index import INDEX_FILE, index_features, load_neighbor_index
    from dcsi.sources import open_source

    images = open_source(np.kron(planted(rng, n=40, copies=0), np.ones((1, 2, 2, 1), np.uint8)))
    feats = rng.standard_normal((40, 8)).astype(np.float32)
    index_features(feats, [str(i) for i in range(40)], k=3, images=images).save(tmp_path)
    meta = json.loads((tmp_path / INDEX_FILE).read_text())
    assert meta["verify"]["link_ratio"] == LINK_RATIO
    index_features(feats, [str(i) for i in range(40)], k=3, images=images, link_ratio=0.7).save(
        tmp_path
    )
    meta = json.loads((tmp_path / INDEX_FILE).read_text())
    assert meta["verify"]["registered"] is True
    assert meta["verify"]["despeckle"] is RelativeOptions().despeckle is True
    back = load_neighbor_index(tmp_path).pixels
    assert back.options.registered is True and back.options.despeckle is True
    assert meta["verify"]["colour"] is True and back.colour is True
    assert meta["verify"]["links"] == LINK_PARTNERS  # stage 2 weighed the copy search's
    # links, and their references are kept for new queries (file hashed and checked)
    assert meta["files"]["link_reference.npy"]["bytes"] > 0
    assert load_neighbor_index(tmp_path).pixels.link_reference.shape == (40, 2)
    assert meta["verify"]["link_ratio"] == 0.7 == back.link_ratio
    # an index written before stage 2 registered pairs and compared colours, and stage 1
    # despeckled
    del meta["verify"]["registered"], meta["verify"]["despeckle"], meta["verify"]["colour"]
    del meta["verify"]["links"], meta["files"]["link_reference.npy"]
    del meta["verify"]["link_ratio"]
    (tmp_path / INDEX_FILE).write_text(json.dumps(meta))
    back = load_neighbor_index(tmp_path).pixels
    assert back.options.registered is False and back.options.despeckle is False
    assert back.colour is False and back.link_reference is None
    assert back.link_ratio == 0.25  # the copy search's own ratio, as partners were made


def test_search_weighs_new_images_partners_unless_told_not_to(rng, tmp_path, monkeypatch):
    import dcsi.neighbor_index as ni
    from dcsi.copy_verification import query_partners

    images = np.kron(planted(rng, n=40, copies=0), np.ones((1, 2, 2, 1), np.uint8))
    feats = rng.standard_normal((40, 8)).astype(np.float32)
    idx = ni.index_features(feats, [str(i) for i in range(40)], k=3, images=open_source(images))
    seen = []

    def spy(check, thumbs):
        seen.append(len(thumbs))
        return query_partners(check, thumbs)

    monkeypatch.setattr(ni, "query_partners", spy)
    monkeypatch.setattr(ni, "embed", lambda query, *a, **k: feats[[3, 8]] / 3.0)
    ids, _ = idx.search(images[[3, 8]], k=2)
    assert seen == [2] and list(ids[:, 0]) == ["3", "8"]  # the queries are indexed images
    idx.search(images[[3, 8]], k=2, links=False)
    assert seen == [2]


def test_the_registered_distance_version_is_recorded_and_an_old_one_warned(rng, tmp_path, caplog):
    from dcsi.neighbor_index import INDEX_FILE, index_features, load_neighbor_index
    from dcsi.registration import DISTANCE_VERSION
    from dcsi.sources import open_source

    images = open_source(np.kron(planted(rng, n=40, copies=0), np.ones((1, 2, 2, 1), np.uint8)))
    feats = rng.standard_normal((40, 8)).astype(np.float32)
    index_features(feats, [str(i) for i in range(40)], k=3, images=images).save(tmp_path)
    meta = json.loads((tmp_path / INDEX_FILE).read_text())
    assert meta["verify"]["registration"] == DISTANCE_VERSION == 3
    with caplog.at_level("WARNING", logger="dcsi.neighbor_index"):
        load_neighbor_index(tmp_path)
    assert not caplog.records
    # written before the versions: the registered distance of version 1
    del meta["verify"]["registration"]
    (tmp_path / INDEX_FILE).write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="dcsi.neighbor_index"):
        back = load_neighbor_index(tmp_path)
    assert back.pixels.options.registered is True
    assert "version 1 of the registered distance" in caplog.text
    assert "rebuild the index" in caplog.text


def test_aligned_copies_register_with_the_given_sigma_and_read_only_their_images(rng, monkeypatch):
    from dcsi.registration import registered_distance, registered_windows

    # image 30 is image 4 turned: its closest is by the registered distance
    images = np.kron(planted(rng, n=30, copies=0), np.ones((1, 2, 2, 1), np.uint8))
    turned = ndimage.rotate(images[4], 6.0, axes=(0, 1), reshape=False, order=1, mode="nearest")
    images = np.concatenate([images, turned[None]])
    queries = np.array([30, 7])
    shortlist = np.array([np.r_[4, 11:20], np.arange(15, 25)])
    lows = []
    for sigma in (0.5, 2.0):
        _, low, _ = aligned_copies(images, queries, shortlist, sigma=sigma)
        W = registered_windows(images, sigma)
        reg = registered_distance(W, W, np.repeat(queries, 10), shortlist.ravel()).reshape(2, 10)
        aligned = shortlist_distance(images, queries, shortlist)
        np.testing.assert_allclose(low, np.minimum(reg, aligned).min(axis=1), atol=1e-6)
        lows.append(low[0])
    assert lows[0] != pytest.approx(lows[1], rel=0.1)  # the smoothing matters to it
    # only the images that a query or a shortlist names are registered
    import dcsi.copy_verification as cv

    seen = []
    monkeypatch.setattr(
        cv,
        "registered_windows",
        lambda x, sigma: seen.append(len(x)) or registered_windows(x, sigma),
    )
    again = aligned_copies(images, queries, shortlist, sigma=2.0)
    assert seen == [len(np.unique(np.r_[queries, shortlist.ravel()]))] == [17]
    np.testing.assert_allclose(again[1], low, atol=1e-6)


def test_tampered_pixel_file_is_refused(rng, tmp_path):
    from dcsi.exceptions import DataError
    from dcsi.neighbor_index import index_features, load_neighbor_index
    from dcsi.sources import open_source

    images = planted(rng)
    feats = rng.standard_normal((len(images), 8)).astype(np.float32)
    index_features(
        feats, [str(i) for i in range(len(images))], k=3, images=open_source(images)
    ).save(tmp_path)
    data = bytearray((tmp_path / "thumbnails.npy").read_bytes())
    data[-1] ^= 1
    (tmp_path / "thumbnails.npy").write_bytes(bytes(data))
    with pytest.raises(DataError, match="thumbnails.npy does not match the sha256"):
        load_neighbor_index(tmp_path)


def test_search_and_cli_mark_verified_copies(rng, tmp_path, capsys, pixel_backbone):
    from PIL import Image

    from dcsi.cli import main
    from dcsi.neighbor_index import load_neighbor_index

    images = planted(rng, n=30, copies=4)
    root = tmp_path / "data"
    root.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / f"{i:03d}.png")
    out = tmp_path / "idx"
    assert main(["index", str(root), "--out", str(out), "-k", "3", "--no-cache"]) == 0
    assert "images have a verified copy first" in capsys.readouterr().out
    assert (out / "thumbnails.npy").is_file()
    query = np.clip(images[2].astype(int) + 1, 0, 255).astype(np.uint8)
    Image.fromarray(query).save(tmp_path / "q.png")
    ids, scores, is_copy = load_neighbor_index(out).search(
        [str(tmp_path / "q.png")], k=3, cache=False, return_copies=True
    )
    assert set(ids[0, :2]) == {"002.png", "032.png"} and is_copy[0, :2].all()
    assert (
        main(["search", str(out), str(tmp_path / "q.png"), "-k", "3", "--json", "--no-cache"]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert [n["copy"] for n in doc[0]["neighbors"][:2]] == [True, True]
    quick = ["search", str(out), str(tmp_path / "q.png"), "-k", "3", "--json", "--no-cache"]
    assert main([*quick, "--no-links"]) == 0  # without the links: the same copies here
    assert json.loads(capsys.readouterr().out) == doc
    assert (
        main(["index", str(root), "--out", str(tmp_path / "plain"), "--no-verify", "--no-cache"])
        == 0
    )
    assert "(pixel check off)" in capsys.readouterr().out
    assert not (tmp_path / "plain" / "thumbnails.npy").exists()
    loose = tmp_path / "loose"
    assert main(["index", str(root), "--out", str(loose), "--link-ratio", "0.7", "--no-cache"]) == 0
    assert json.loads((loose / "index.json").read_text())["verify"]["link_ratio"] == 0.7
    capsys.readouterr()
    assert main(["index", str(root), "--out", str(tmp_path / "bad"), "--link-ratio", "1.5"]) == 1
    err = capsys.readouterr().err
    assert "--link-ratio must be between 0 and 1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()  # refused before any work


def test_pair_distances_in_colour_equal_a_channel_loop(rng):
    from dcsi.copy_verification import pair_distances
    from dcsi.registration import registered_distance, registered_windows

    # 24-px colour images (registered); image 0 grey, image 1 has a flat blue channel,
    # image 2 is image 3 recoloured (each channel scaled and shifted), image 4 is
    # image 3 with its channels swapped (the same grey picture in other colours)
    images = np.kron(planted(rng, n=20, copies=0), np.ones((1, 2, 2, 1), np.uint8))
    images[0] = images[0].mean(axis=2, keepdims=True).astype(np.uint8)
    images[1, ..., 2] = 77
    images[2] = np.clip(images[3] * np.array([0.7, 0.9, 0.5]) + [30, 10, 60], 0, 255)
    images[4] = images[3][..., ::-1]
    images[6, ..., 1:] = 50  # only red varies; in image 7 only green: no shared channel
    images[7, ..., ::2] = 50
    images[8] = images[3].mean(axis=2, keepdims=True)  # a greyscale copy of image 3
    queries = np.array([0, 1, 3, 5, 6])
    shortlist = np.array([[1, 2, 6, 7, 8, 9], [0, 5, 10, 11, 12, 13], [2, 4, 8, 15, 16, 17]])
    shortlist = np.vstack([shortlist, [0, 1, 2, 3, 4, 19], [7, 8, 9, 10, 11, 12]])
    got = pair_distances(images, queries, shortlist, colour=True)
    grey_got = pair_distances(images, queries, shortlist, colour=False)

    def one(X, a, b):  # the smaller of the aligned and registered distances, one pair
        W = registered_windows(X)
        return min(
            aligned_distance(X, np.array([[a, b]]))[0],
            registered_distance(W, W, np.array([a]), np.array([b]))[0],
        )

    for r, q in enumerate(queries):
        for c, j in enumerate(shortlist[r]):
            grey = one(images.mean(axis=3, dtype=np.float32), q, j)
            assert grey_got[r, c] == pytest.approx(grey, abs=1e-5)
            pair = images[[q, j]]
            if (pair == pair[..., :1]).all(axis=(1, 2, 3)).any():  # a grey one: in grey
                want = grey
            else:
                varies = [ch for ch in range(3) if np.ptp(pair[..., ch], axis=(1, 2)).min() > 1]
                want = max((one(images[..., ch], q, j) for ch in varies), default=grey)
            assert got[r, c] == pytest.approx(want, abs=1e-5), (q, j)
    assert got[4, 0] == grey_got[4, 0]  # no shared channel: the grey distance
    assert got[2, 0] < 0.01 and got[2, 2] < 0.01  # the recoloured and greyscale copies
    assert got[2, 1] > 10 * grey_got[2, 1]  # the swapped colours are told apart


def _fake_stage_two(monkeypatch, winner, stands_out, width):
    def aligned(self, shortlist, *, rows=None, query_thumbs=None, reference_columns=None):
        assert reference_columns == 4 and shortlist.shape[1] == width  # + stage 1's copies
        m = len(shortlist)
        return np.full((m, 1), winner), np.zeros((m, 1)), np.full((m, 1), stands_out)

    monkeypatch.setattr(PixelCheck, "aligned", aligned)


@pytest.mark.parametrize(
    ("winner", "stands_out", "verified", "order", "flags"),
    [
        (9, True, True, [9, 5, 6], [False, True, True]),  # a shortlisted image stands out
        (6, False, True, [6, 5, 1], [True, True, False]),  # a stage-1 copy is closest
        (9, False, True, [5, 6, 1], [True, True, False]),  # neither: stage 1's copies first
        (9, True, False, [9, 1, 2], [False, False, False]),  # no stage-1 copy: the CNN's 4
        (9, False, False, [1, 2, 3], [False, False, False]),
    ],
)
def test_stage_two_winner_goes_first_and_stage_one_copies_follow(
    rng, monkeypatch, winner, stands_out, verified, order, flags
):
    V = rng.standard_normal((12, 4))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    check = PixelCheck(np.zeros((12, 4, 4, 3), np.uint8), np.ones(12), RelativeOptions(k=3))
    _fake_stage_two(monkeypatch, winner, stands_out, 6 if verified else 4)
    neighbors = np.array([[1, 2, 3]])
    scores = (V[[1, 2, 3]] @ V[0])[None].astype(np.float32)
    stage1 = (np.array([[5, 6]]), np.array([[0.01, 0.02]]), np.full((1, 2), verified))
    got, got_scores, is_copy = verify_neighbors(
        check, neighbors, scores, np.array([[1, 2, 3, 9]]), stage1, V[:1], V, rows=np.array([0])
    )
    np.testing.assert_array_equal(got[0], order)
    np.testing.assert_array_equal(is_copy[0], flags)
    np.testing.assert_allclose(got_scores[0], V[order] @ V[0], rtol=1e-6)


def test_link_partners_are_the_copy_search_links_closest_first(rng):
    from dcsi.copy_verification import link_partners
    from dcsi.relative_links import relative_links

    images = planted(rng, n=60, copies=12)
    images[60:63] = images[0]  # image 0 has more partners than the width
    big = np.kron(images, np.ones((1, 2, 2, 1), np.uint8))  # 24 px: registered
    n_linked = {}
    assert LINK_RATIO == 0.25  # the default: the copy search's own ratio
    for ratio in (LINK_RATIO, 0.7):  # and a looser one
        links = relative_links(images, RelativeOptions(ratio=ratio))
        kwargs = {} if ratio == LINK_RATIO else {"ratio": ratio}
        partners, linked, close, reference = link_partners(images, width=2, **kwargs)
        np.testing.assert_array_equal(reference[:, 0], links.reference)
        assert links.registered_reference is None and np.isnan(reference[:, 1]).all()  # 12 px
        reference = link_partners(big, **kwargs)[3]
        registered = relative_links(big, RelativeOptions(ratio=ratio)).registered_reference
        np.testing.assert_array_equal(reference[:, 1], registered)
        rows = links.rows.astype(np.float64)
        for i in range(len(images)):  # the loop: every pair naming i, closest first
            others = [int(b) for a, b in links.pairs if a == i] + [
                int(a) for a, b in links.pairs if b == i
            ]
            others.sort(key=lambda j: (1.0 - rows[i] @ rows[j], j))
            assert partners[i][linked[i]].tolist() == others[:2], i
        assert linked[0].all() and linked[:, 0].sum() >= 12
        # close: the partners the copy search links at its own ratio, run again
        own = {tuple(p) for p in relative_links(images).pairs.tolist()}
        for i, j in zip(*np.nonzero(linked), strict=True):
            assert close[i, j] == ((min(i, partners[i, j]), max(i, partners[i, j])) in own)
        assert not close[~linked].any()
        n_linked[ratio] = len(links.pairs)
        n_close = close.sum()
    assert n_linked[0.7] > n_linked[LINK_RATIO]  # the looser ratio links more
    assert 0 < n_close < linked.sum()  # at 0.7: some partners are not close


@pytest.mark.parametrize(
    ("close", "stands_out", "order"),
    [
        (None, False, [7, 5, 1]),  # every partner counts as close: the closest goes first
        (True, False, [7, 5, 1]),
        (False, False, [5, 1, 2]),  # linked only at a looser ratio: it must stand out
        (False, True, [7, 5, 1]),
    ],
)
def test_a_copy_search_partner_competes_but_is_not_flagged(
    rng, monkeypatch, close, stands_out, order
):
    V = rng.standard_normal((12, 4))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    check = PixelCheck(np.zeros((12, 4, 4, 3), np.uint8), np.ones(12), RelativeOptions(k=3))
    # partner 7 is closest; the shortlist, stage 1's two candidates and three partner
    # columns are compared
    _fake_stage_two(monkeypatch, 7, stands_out, 9)
    stage1 = (np.array([[5, 6]]), np.array([[0.01, 0.02]]), np.array([[True, False]]))
    partners: tuple = (np.array([[7, 0, 0]]), np.array([[True, False, False]]))
    if close is not None:
        partners = (*partners, np.array([[close, False, False]]))
    got, _, is_copy = verify_neighbors(
        check,
        np.array([[1, 2, 3]]),
        (V[[1, 2, 3]] @ V[0])[None].astype(np.float32),
        np.array([[1, 2, 3, 9]]),
        stage1,
        V[:1],
        V,
        rows=np.array([0]),
        partners=partners,
    )
    np.testing.assert_array_equal(got[0], order)
    np.testing.assert_array_equal(is_copy[0], [x == 5 for x in order])  # a partner: never


def test_query_partners_are_the_leakage_links_closest_first(rng):
    from dcsi.copy_verification import link_partners, query_partners
    from dcsi.relative_links import relative_cross_pairs

    images = planted(rng, n=60, copies=12)  # 12 x 12: compared without registration
    big = np.kron(images, np.ones((1, 2, 2, 1), np.uint8))  # 24 x 24: registered too
    for imgs, ratio in ((images, LINK_RATIO), (big, LINK_RATIO), (big, 0.7)):
        gallery, queries = imgs[:60], imgs[60:].copy()
        queries[0] = gallery[5]  # a query with two partners: an exact copy and a near one
        queries[1] = gallery[7]
        reference = link_partners(gallery, ratio=ratio)[3]
        check = PixelCheck(
            gallery, np.ones(60), RelativeOptions(), link_reference=reference, link_ratio=ratio
        )
        partners, linked, close = query_partners(check, queries, width=2)
        own = {tuple(p) for p in relative_cross_pairs(queries, gallery)[0].tolist()}
        for i, j in zip(*np.nonzero(linked), strict=True):  # close: linked at 0.25 too
            assert close[i, j] == ((i, partners[i, j]) in own)
        pairs, _ = relative_cross_pairs(queries, gallery, RelativeOptions(ratio=ratio))
        rows = coarse_rows(np.concatenate([queries, gallery])).astype(np.float64)
        for i in range(len(queries)):  # the loop: every pair naming query i, closest first
            others = sorted(
                (int(b) for a, b in pairs if a == i),
                key=lambda j: (1.0 - rows[i] @ rows[len(queries) + j], j),
            )
            assert partners[i][linked[i]].tolist() == others[:2], i
        assert linked[:, 0].sum() >= 10  # the noisy copies find their originals
        assert partners[2, 0] == 2 and partners[11, 0] == 11
    # what the cross search reads of the indexed images is computed once
    import dcsi.relative_links as rl

    calls = []
    real = rl.coarse_rows
    monkey = pytest.MonkeyPatch()
    monkey.setattr(rl, "coarse_rows", lambda x, *a, **k: calls.append(len(x)) or real(x, *a, **k))
    try:
        query_partners(check, queries[:3])
        query_partners(check, queries[3:5])
    finally:
        monkey.undo()
    assert calls == [3, 2]  # the queries' rows only: the indexed images' were kept
    # without the references (an index written before them): no partners
    bare = PixelCheck(images[:60], np.ones(60), RelativeOptions())
    assert not query_partners(bare, images[60:])[1].any()
