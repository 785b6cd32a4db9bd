"""The executor seam of the blockwise searches: ``map_blocks(fn, shared, items)``.

A blockwise search (the query blocks of :func:`dcsi.neighbors.radius_pairs` and of
:func:`dcsi.aligned.aligned_pairs`) describes its
work as one function, the arrays every block reads (``shared``) and one small item per
block; a :class:`BlockMap` runs ``fn(*shared, item)`` for every item and yields the
results in item order.  The search then merges them exactly as its own loop would, so
the result does not depend on where the blocks ran:

- :func:`local_map` (the default): a plain loop in this process;
- :func:`dcsi.ray_engine.ray_map`: one Ray task per block, ``shared`` put once in
  the object store (``engine="ray"``).

The search code imports no executor; the pipeline passes one down.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

__all__ = ["BlockMap", "available_cpus", "local_map", "single_thread_blas"]


def available_cpus() -> int:
    """The CPUs this process may run on (``os.sched_getaffinity``, else
    ``os.cpu_count``): a property of the machine, never of its load."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not available on this platform
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    """One BLAS thread: for small products, and for blocks that run on one thread per
    CPU themselves (on a busy machine OpenBLAS threads spin and slow small products
    down by several times)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


class BlockMap(Protocol):
    """Runs ``fn(*shared, item)`` for each item; yields the results in item order.

    Parameters of ``__call__``
    --------------------------
    fn : callable
        A module-level function (a Ray task ships it by reference).
    shared : tuple
        Arguments every call reads (arrays: sent once, not once per item).
    items : sequence
        One small argument per block (e.g. the block's first row).
    """

    def __call__(
        self, fn: Callable[..., Any], shared: tuple[Any, ...], items: Sequence[Any]
    ) -> Iterator[Any]: ...


def local_map(
    fn: Callable[..., Any], shared: tuple[Any, ...], items: Sequence[Any]
) -> Iterator[Any]:
    """The local :class:`BlockMap`: ``fn(*shared, item)`` in a loop, in this process."""
    for item in items:
        yield fn(*shared, item)
