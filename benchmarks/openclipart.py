"""``dcsi redundancy`` and ``dcsi analyze`` on real clip art at real sizes (openclipart-png).

Debian's ``openclipart-png`` (``apt-get install openclipart-png``) puts 8,121 RGBA PNGs of
every size (2 px to 11,000 px) in 22 category folders under
``/usr/share/openclipart/png``.  Each command runs as its own process under
``/usr/bin/time -v`` (wall time and peak resident memory of the whole command: reading,
decoding, the stages, writing):

- ``redundancy``: ``dcsi redundancy SRC --out TMP`` with defaults (no feature cache
  involved: the wavelet search works on pixels);
- ``analyze-cold``: ``dcsi analyze SRC --out TMP --cache EMPTY_TMP_DIR`` with defaults and
  a fresh, empty feature cache (every CNN feature is computed);
- ``analyze-warm`` (``--stages`` opt-in): the same with the default cache
  (``$DCSI_CACHE`` or ``~/.cache/dcsi``), where features computed before are reused.

It also counts the blank images the redundancy search reports against the images whose
alpha channel is 0 everywhere (fully transparent placeholders: white after compositing).

    python benchmarks/openclipart.py                          # redundancy, analyze-cold
    python benchmarks/openclipart.py --stages redundancy      # the quick one
    python benchmarks/openclipart.py --stages analyze-warm

Targets (issue 15): redundancy <= 3 min and <= 2 GiB; analyze with a cold cache
<= 10 min and <= 4 GiB, on 2 cores.  The machine is shared: times are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import print_table, write_results  # noqa: E402

STAGES = ("redundancy", "analyze-cold", "analyze-warm")


def _timed(cmd: list[str], timeout: int) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v``: wall seconds, peak RSS, exit status."""
    env = dict(os.environ, DCSI_DISABLE_PROGRESS="1")
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            ["/usr/bin/time", "-v", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout} s", "wall_s": None, "peak_rss_mib": None}
    wall = time.perf_counter() - start
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    out = {
        "status": "ok" if proc.returncode == 0 else f"exit {proc.returncode}",
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(int(rss.group(1)) / 1024, 1) if rss else None,
    }
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-2000:]
    return out


def transparent_ids(source: Path) -> list[str]:
    """Ids (paths relative to ``source``) of the PNGs whose alpha is 0 everywhere."""
    import numpy as np
    from PIL import Image

    out = []
    for path in sorted(source.rglob("*.png")):
        try:
            with Image.open(path) as im:
                if im.width * im.height > Image.MAX_IMAGE_PIXELS:
                    continue
                if "A" not in im.getbands() and "transparency" not in im.info:
                    continue
                alpha = np.asarray(im.convert("RGBA").getchannel("A"))
        except (OSError, Image.DecompressionBombError):
            continue
        if alpha.max() == 0:
            out.append(path.relative_to(source).as_posix())
    return out


def run_redundancy(source: Path, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        row = _timed(
            [sys.executable, "-m", "dcsi", "redundancy", str(source), "--out", str(out)], timeout
        )
        if row["status"] != "ok":
            return row
        red = json.loads((out / "redundancy.json").read_text())
    s = red["summary"]
    row.update(
        n_images=s["n_images"],
        working_size=red["params"]["working_size"],
        n_groups=s["n_groups"],
        n_redundant_groups=s["n_redundant_groups"],
        n_conflict_groups=s["n_conflict_groups"],
        n_removed=s["n_removed"],
        rrqr=s.get("rrqr"),
        blank=red["blank"],
        n_blank_groups=s["n_blank_groups"],
        blank_group_sizes=[g["size"] for g in red["groups"] if g.get("blank")],
    )
    return row


def run_analyze(source: Path, timeout: int, *, cold: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "dcsi",
            "analyze",
            str(source),
            "--out",
            str(Path(tmp) / "out"),
        ]
        if cold:
            cmd += ["--cache", str(Path(tmp) / "cache")]  # empty: every feature computed
        row = _timed(cmd, timeout)
        if row["status"] != "ok":
            return row
        card = json.loads((Path(tmp) / "out" / "dcsi.json").read_text())
    params = card["provenance"]["parameters"]
    row.update(
        cache="cold (empty temporary folder)" if cold else "warm (default cache)",
        working_size=params.get("working_size"),
        backbone_image_size=card["features"].get("image_size"),
        ssim_images_used=sum(card["similarity"]["ssim"]["params"]["n_used"]),
        ssim_max_per_class=card["similarity"]["ssim"]["params"]["max_per_class"],
        n_redundancy_groups=len(card["redundancy"]["groups"]),
        n_blank=card["redundancy"]["blank"]["n_blank"],
    )
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default="/usr/share/openclipart/png")
    ap.add_argument("--stages", default="redundancy,analyze-cold", help=", ".join(STAGES))
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per command")
    ap.add_argument("--out", default="openclipart", help="results name (results/<name>.json)")
    args = ap.parse_args()
    source = Path(args.source)
    if not source.is_dir():
        print(
            f"openclipart.py: {source} is missing; apt-get install openclipart-png", file=sys.stderr
        )
        return 1
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        print(f"openclipart.py: unknown stage(s) {bad}; choose from {STAGES}", file=sys.stderr)
        return 2
    results: dict = {"source": str(source), "stages": {}}
    for stage in stages:
        print(f"running {stage} ...", file=sys.stderr, flush=True)
        if stage == "redundancy":
            row = run_redundancy(source, args.timeout)
            if row["status"] == "ok":
                truth = transparent_ids(source)
                found = set(row["blank"]["ids"])
                row["fully_transparent"] = {
                    "n": len(truth),
                    "n_reported_blank": len(found & set(truth)),
                    "n_blank_not_transparent": len(found - set(truth)),
                    "examples_blank_not_transparent": sorted(found - set(truth))[:10],
                }
        else:
            row = run_analyze(source, args.timeout, cold=stage == "analyze-cold")
        results["stages"][stage] = row
    target = {"redundancy": (180, 2048), "analyze-cold": (600, 4096), "analyze-warm": (600, 4096)}
    print_table(
        [
            [s, r["status"], r["wall_s"], r["peak_rss_mib"], *target[s]]
            for s, r in results["stages"].items()
        ],
        ["command", "status", "wall s", "peak RSS MiB", "target s", "target MiB"],
    )
    print(f"wrote {write_results(args.out, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
