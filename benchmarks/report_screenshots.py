"""Screenshots of report sections, rendered by a real headless browser (Chromium).

    python benchmarks/report_screenshots.py out/digits [--sections image-clusters,class-views]

Cuts each named section (an ``<h2 id=...>`` up to the next ``<h2``) out of
``DIR/report.html`` into a page of its own with the report's style, and has Chromium
(``apt-get install chromium``) screenshot it to ``docs/img/report-<section>.png``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]  # fmt: skip


def section(page: str, name: str) -> str:
    """The HTML of one ``<h2 id='name'>`` section of the report."""
    start = re.search(rf"<h2 id=['\"]{re.escape(name)}['\"]>", page)
    if start is None:
        raise SystemExit(f"report.html has no section {name!r}")
    end = page.find("<h2", start.end())
    return page[start.start() : end if end >= 0 else len(page)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("card_dir", type=Path)
    ap.add_argument("--sections", default="image-clusters,class-views")
    ap.add_argument("--out", type=Path, default=HERE.parent / "docs" / "img")
    ap.add_argument("--size", default="1100,1400", help="window width,height")
    args = ap.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    page = (args.card_dir / "report.html").read_text(encoding="utf-8")
    style = re.search(r"<style>.*?</style>", page, re.S)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sections.split(","):
            html = Path(tmp) / f"{name}.html"
            html.write_text(
                "<!DOCTYPE html><html><head><meta charset='utf-8'>"
                + (style.group(0) if style else "")
                + "</head><body>"
                + section(page, name)
                + "</body></html>",
                encoding="utf-8",
            )
            png = args.out / f"report-{name}.png"
            subprocess.run(
                [browser, *FLAGS, f"--user-data-dir={tmp}/profile", f"--screenshot={png}",
                 f"--window-size={args.size}", html.as_uri()],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
