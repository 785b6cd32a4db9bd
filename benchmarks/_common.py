"""Shared helpers for the benchmark scripts in ``benchmarks/``.

A benchmark is a script ``benchmarks/<name>.py`` that prints a markdown table on stdout
and writes its figures as JSON to ``benchmarks/results/<name>.json``.  This module gives
them one small, stable API:

- :class:`Timer` -- wall-clock timing as a context manager (``with Timer() as t: ...``;
  ``t.seconds``),
- :func:`peak_rss_mib` -- peak resident memory of this process (and of its finished
  children, e.g. DataLoader workers) in MiB,
- :func:`traced_peak_mib` -- peak Python-heap allocation of one call via tracemalloc,
- :func:`machine_info` -- what the figures were measured on,
- :func:`write_results` -- the JSON file (machine info added),
- :func:`print_table` -- a markdown table on stdout,
- :func:`cached_features` -- features of a source (or a seeded subset of it), from
  dcsi's feature cache when they are there.

Run the scripts from the repository root, e.g. ``python benchmarks/features.py``; they
import this module as ``from _common import ...`` (the script's folder is on ``sys.path``)
or as ``benchmarks._common``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "RESULTS_DIR",
    "Timer",
    "cached_features",
    "machine_info",
    "peak_rss_mib",
    "print_table",
    "traced_peak_mib",
    "write_results",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"

MACHINE_NOTE = (
    "2 CPU cores shared with other engineers' jobs during the run: the figures are "
    "noisy; compare ratios measured in the same run rather than absolute rates."
)


class Timer:
    """Wall-clock timer (``time.perf_counter``) usable as a context manager.

    Examples
    --------
    >>> with Timer() as t:
    ...     _ = sum(range(1000))
    >>> t.seconds >= 0
    True
    """

    def __init__(self) -> None:
        self.start: float | None = None
        self.seconds: float = 0.0

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.start is not None
        self.seconds = time.perf_counter() - self.start

    def rate(self, n: int) -> float | None:
        """Items per second for ``n`` items (None when nothing was timed)."""
        return n / self.seconds if self.seconds > 0 else None


def peak_rss_mib(*, children: bool = False) -> float:
    """Peak resident set size in MiB (``resource.getrusage``; Linux reports KiB).

    Parameters
    ----------
    children : bool, default=False
        Report the peak of the largest finished child process instead (e.g. DataLoader
        workers that have exited).
    """
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    kib = resource.getrusage(who).ru_maxrss
    if sys.platform == "darwin":  # bytes on macOS
        kib /= 1024
    return kib / 1024.0


def traced_peak_mib(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn()`` under tracemalloc; return its result and the peak Python-heap MiB.

    Only allocations made through Python's allocator (numpy included) are seen; torch's
    own allocator is not -- use :func:`peak_rss_mib` for the whole process.
    """
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak / 2**20


def machine_info() -> dict[str, Any]:
    """What the figures were measured on (JSON-ready)."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "note": MACHINE_NOTE,
    }
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover
        pass
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = bool(torch.cuda.is_available())
    return info


def write_results(name: str, results: dict[str, Any], *, directory: Path | None = None) -> Path:
    """Write ``results`` (+ ``machine`` and a UTC timestamp) to ``results/<name>.json``.

    Returns the path written.  NaN is refused (use None).
    """
    directory = RESULTS_DIR if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine_info(),
        **results,
    }
    path = directory / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Print ``rows`` as a markdown table on stdout and return the text."""
    lines = [
        "| " + " | ".join(str(h) for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho of two series (None when either is constant or has < 3 values)."""
    import numpy as np
    from scipy.stats import spearmanr

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def cached_features(
    source: str, *, n: int | None = None, seed: int = 0, split: str | None = None
) -> Any:
    """``dcsi.extract_features`` of ``source`` or of a seeded subset of ``n`` images.

    The features normally come from dcsi's cache (their extraction is not what a
    benchmark times); a note on stderr says how many had to be computed.

    Returns
    -------
    dcsi.FeatureSet
        With ``image_set`` the (subset of the) opened source.
    """
    import numpy as np

    import dcsi

    image_set = dcsi.open_source(source, split=split)
    if n is not None and n < len(image_set):
        rows = np.sort(np.random.default_rng(seed).choice(len(image_set), n, replace=False))
        image_set = image_set.subset(rows)
    fs = dcsi.extract_features(image_set)
    if fs.n_cached < len(fs):
        print(f"note: {len(fs) - fs.n_cached} features were not cached", file=sys.stderr)
    return fs


def imagededup_hashes() -> tuple[Any, Any]:
    """imagededup's ``PHash`` and ``WHash`` classes, importable offline.

    Importing ``imagededup.methods`` builds its CNN method's MobileNetV3 with ImageNet
    weights, which torchvision downloads the first time.  The hashes do not use that
    network, so where the download fails (no network) the network is built without
    weights for the import; the hashes are the same either way.
    """
    import torchvision.models as tvm

    original = tvm.mobilenet_v3_small

    def offline(*args: Any, weights: Any = None, **kwargs: Any) -> Any:
        try:
            return original(*args, weights=weights, **kwargs)
        except OSError:  # urllib's URLError: weights not cached, no network
            return original(*args, weights=None, **kwargs)

    tvm.mobilenet_v3_small = offline
    try:
        from imagededup.methods import PHash, WHash
    finally:
        tvm.mobilenet_v3_small = original
    return PHash, WHash
