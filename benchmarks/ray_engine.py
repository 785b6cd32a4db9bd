"""The Ray engine against the local engine on the same machine: the overhead.

    python benchmarks/ray_engine.py            # digits (analyze + features), Fashion-MNIST test
    python benchmarks/ray_engine.py --quick    # digits only

For each dataset, in one process and one after the other (local, then Ray):

- ``features``: :func:`dcsi.extract_features` with the grey working-size arrays, the
  cache off -- the stage the Ray engine moves into model actors; a local Ray with the
  machine's CPUs is started once before the Ray runs (its start-up is timed apart);
- ``analyze`` (digits only): the whole :func:`dcsi.analyze` with every analyzer, and
  whether the two cards are equal byte for byte outside the timestamps.

Peak memory is the largest sum of the resident memory of this process and all its
descendants (the raylet, GCS and Ray workers a local Ray starts), sampled every 0.2 s
from ``/proc``.  The load average before and after each run is recorded: the machine is
shared.  Writes ``benchmarks/results/ray_engine.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Timer, print_table, write_results

PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss_mib(root: int) -> float:
    """Resident memory of ``root`` and its descendants, in MiB (from ``/proc``)."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm", encoding="ascii") as f:
                rss[int(entry)] = int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        parent[int(entry)] = int(fields[1])
    total = 0
    for pid, size in rss.items():
        p = pid
        while p > 1 and p != root:
            p = parent.get(p, 0)
        if p == root:
            total += size
    return total / 2**20


class PeakMemory:
    """Largest :func:`_tree_rss_mib` of this process while the block runs."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_mib(os.getpid()))
            self._stop.wait(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _tree_rss_mib(os.getpid()))


def measure(fn: Any) -> tuple[Any, dict[str, Any]]:
    """``fn()`` and its wall time, peak memory of the process tree and load average."""
    load0 = os.getloadavg()[0]
    with PeakMemory() as mem, Timer() as t:
        out = fn()
    return out, {
        "seconds": round(t.seconds, 2),
        "peak_tree_rss_mib": round(mem.peak, 1),
        "load_before": round(load0, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def run_features(images: Any, engine: str, threads: int) -> Any:
    """The feature stage of ``engine`` (grey working-size arrays too, cache off)."""
    from dcsi.features import extract_features
    from dcsi.ray_engine import feature_runner

    runner = feature_runner(
        engine,
        backbone="efficientnet_lite0",
        weights=None,
        pooling="gap",
        threads=threads,
        device="auto",
    )
    return extract_features(
        images,
        cache=False,
        num_threads=threads,
        arrays=(images.working_size(), "L"),
        runner=runner,
    )


def _card_text(card: Any) -> str:
    d = card.to_dict()
    for key in ("created", "finished"):
        d["provenance"].pop(key, None)
    return json.dumps(d, sort_keys=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only")
    args = parser.parse_args()

    import dcsi
    from dcsi.features import choose_num_threads
    from dcsi.ray_engine import ray_session

    threads = choose_num_threads()
    sources = [("sample:digits", None)]
    if not args.quick:
        sources.append(("sample:fashion-mnist", "test"))
    jobs = [(source, split, "features") for source, split in sources]
    jobs.insert(1, ("sample:digits", None, "analyze"))
    results: dict[str, Any] = {"torch_threads": threads, "runs": []}
    timed: dict[tuple[str, str, str], dict[str, Any]] = {}
    outputs: dict[tuple[str, str, str], Any] = {}
    for engine in ("local", "ray"):  # local first: no Ray processes in its memory
        with contextlib.ExitStack() as stack:
            if engine == "ray":
                with Timer() as start:
                    stack.enter_context(ray_session())
                results["ray_start_seconds"] = round(start.seconds, 2)
            for source, split, stage in jobs:
                images = dcsi.open_source(source, split=split)
                if stage == "features":
                    fs, timed[source, stage, engine] = measure(
                        lambda i=images, e=engine: run_features(i, e, threads)
                    )
                    outputs[source, stage, engine] = fs.features.tobytes() + fs.arrays.tobytes()
                else:
                    card, timed[source, stage, engine] = measure(
                        lambda s=source, e=engine: dcsi.analyze(s, engine=e, cache=False)
                    )
                    outputs[source, stage, engine] = _card_text(card)
                if engine == "ray":
                    entry = {
                        "source": source + (f" ({split})" if split else ""),
                        "n_images": len(images),
                        "stage": stage,
                        **{
                            f"{e}_{k}": v
                            for e in ("local", "ray")
                            for k, v in timed[source, stage, e].items()
                        },
                        "same_bytes": outputs[source, stage, "local"]
                        == outputs[source, stage, "ray"],
                    }
                    results["runs"].append(entry)
    rows = [_row(e) for e in results["runs"]]
    print(f"local Ray start-up: {results['ray_start_seconds']:.1f} s, {threads} torch thread(s)")
    print_table(
        rows,
        [
            "source",
            "images",
            "stage",
            "local s",
            "Ray s",
            "Ray / local",
            "local peak MiB",
            "Ray peak MiB",
            "load (before, after)",
            "same bytes",
        ],
    )
    path = write_results("ray_engine", results)
    print(f"wrote {path}")
    return 0


def _row(e: dict[str, Any]) -> list[Any]:
    return [
        e["source"],
        e["n_images"],
        e["stage"],
        e["local_seconds"],
        e["ray_seconds"],
        e["ray_seconds"] / e["local_seconds"],
        e["local_peak_tree_rss_mib"],
        e["ray_peak_tree_rss_mib"],
        f"{e['local_load_before']}-{e['local_load_after']} / "
        f"{e['ray_load_before']}-{e['ray_load_after']}",
        e["same_bytes"],
    ]


if __name__ == "__main__":
    sys.exit(main())
