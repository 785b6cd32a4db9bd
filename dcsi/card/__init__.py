"""Dataset cards: ``dcsi.json`` (source of truth) and its views.

``Card`` / ``load_card`` (card.py), the Hugging Face README block (hf.py), Croissant
JSON-LD (croissant.py) and the HTML report (:mod:`dcsi.report`).  One call writes all
four files of a card folder::

    write_card_files(card, "out/digits")
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dcsi._io import atomic_write_bytes, atomic_write_text
from dcsi.card.card import (
    CARD_FILENAME,
    SCHEMA_VERSION,
    Card,
    RedundancyGroup,
    card_to_json,
    load_card,
    validate_card,
)

__all__ = [
    "CARD_FILENAME",
    "CARD_FILES",
    "SCHEMA_VERSION",
    "Card",
    "RedundancyGroup",
    "card_to_json",
    "load_card",
    "validate_card",
    "write_card_files",
]

logger = logging.getLogger(__name__)

#: The files a card folder holds.
CARD_FILES = (CARD_FILENAME, "README.md", "croissant.json", "report.html")


def write_card_files(
    card: Card,
    out_dir: str | os.PathLike[str],
    *,
    readme: bool = True,
    croissant: bool = True,
    report: bool = True,
    load_image: Callable[[str], Any] | None = None,
) -> dict[str, Path]:
    """Write ``dcsi.json``, ``README.md``, ``croissant.json`` and ``report.html``.

    Each file is written atomically.  An existing ``README.md`` keeps its front matter
    and body; only its ``dcsi:`` key is added or replaced.  The README is checked before
    any file is written (one it cannot edit stops the call with a ``DataError`` and
    nothing is written), and every view records the sha256 of the ``dcsi.json`` it was
    made from (``dcsi card validate`` names a view made from another card).

    Parameters
    ----------
    card : Card
    out_dir : path-like
        Folder receiving the files (created if needed).
    readme, croissant, report : bool, default=True
        Whether to write each view.
    load_image : callable, default=None
        ``load_image(image_id) -> PIL.Image or ndarray``; with it, the report shows
        galleries of the near-duplicate groups.

    Returns
    -------
    dict of str to Path
        File name -> path written.
    """
    if not isinstance(card, Card):
        card = Card(card)
    out = Path(out_dir)
    readme_text = None
    if readme:  # checked before anything is written: a README we cannot edit stops here
        from dcsi.card.hf import read_readme, render_readme

        readme_text = render_readme(
            card, read_readme(out / "README.md"), where=str(out / "README.md")
        )
    out.mkdir(parents=True, exist_ok=True)
    written = {CARD_FILENAME: card.save(out / CARD_FILENAME)}
    sha = hashlib.sha256(written[CARD_FILENAME].read_bytes()).hexdigest()
    if readme_text is not None:
        written["README.md"] = atomic_write_text(out / "README.md", readme_text)
    if croissant:
        from dcsi.card.croissant import write_croissant

        written["croissant.json"] = write_croissant(card, out / "croissant.json", card_sha256=sha)
    cluster_map = None  # drawn once: map.png and the report's map coloured by cluster
    if report and (card.data.get("image_clusters") or {}).get("map"):
        from dcsi.report import map_png

        cluster_map = map_png(card.data["image_clusters"])
        written["map.png"] = atomic_write_bytes(out / "map.png", cluster_map)
    if report:
        from dcsi.report import write_report

        written["report.html"] = write_report(
            card,
            out / "report.html",
            load_image=load_image,
            card_sha256=sha,
            cluster_map_png=cluster_map,
        )
    logger.info("wrote %s to %s", ", ".join(written), out)
    return written
