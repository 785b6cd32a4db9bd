"""The executor seam of the blockwise searches: any BlockMap gives the local pairs."""

from __future__ import annotations

import numpy as np

from dcsi.block_map import local_map
from dcsi.neighbors import radius_pairs, unit_rows


def _planted(rng, n=300, d=40, copies=40):
    """Unit rows with ``copies`` near-copies planted among random rows."""
    x = rng.standard_normal((n, d))
    src = rng.choice(n - copies, copies, replace=False)
    x[n - copies :] = x[src] + 0.01 * rng.standard_normal((copies, d))
    return unit_rows(x).astype(np.float32)


def test_local_map_calls_in_item_order():
    calls = []

    def fn(a, b, item):
        calls.append(item)
        return a * item + b

    assert list(local_map(fn, (10, 1), [3, 1, 2])) == [31, 11, 21]
    assert calls == [3, 1, 2]


def _brute_pairs(x, threshold):
    """The obviously correct reference: every pair's distance."""
    d = 1.0 - x.astype(np.float64) @ x.astype(np.float64).T
    i, j = np.nonzero(np.triu(d <= threshold, 1))
    return np.stack([i, j], 1)


def test_any_block_map_gives_the_local_pairs(rng):
    """Blocks run backwards (as a cluster might finish them) but yielded in item order:
    the same pairs and distances as the local loop, and as the brute-force reference."""
    x = _planted(rng)
    seen = []

    def backwards(fn, shared, items):
        results = {item: fn(*shared, item) for item in reversed(list(items))}
        seen.extend(items)
        yield from (results[item] for item in items)

    kw = {"threshold": 0.01, "block_size": 32, "n_components": 8}
    ref_pairs, ref_dist = radius_pairs(x, **kw)
    pairs, dist = radius_pairs(x, map_blocks=backwards, **kw)
    assert len(seen) == -(-len(x) // 32)  # one item per query block
    np.testing.assert_array_equal(pairs, ref_pairs)
    assert dist.tobytes() == ref_dist.tobytes()
    np.testing.assert_array_equal(pairs, _brute_pairs(x, 0.01))
    assert len(pairs) >= 40


def test_block_map_between_two_sets(rng):
    x = _planted(rng)
    a, b = x[:200], x[200:]

    def listed(fn, shared, items):
        return iter([fn(*shared, item) for item in items])

    kw = {"threshold": 0.01, "block_size": 16, "n_components": 8}
    ref_pairs, _ = radius_pairs(a, b, **kw)
    pairs, _ = radius_pairs(a, b, map_blocks=listed, **kw)
    np.testing.assert_array_equal(pairs, ref_pairs)
    assert len(pairs) > 0
