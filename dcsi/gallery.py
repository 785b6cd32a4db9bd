"""A thumbnail gallery of near-duplicate groups: one row of thumbnails per group.

:func:`gallery_html` returns an HTML fragment with inline base64 PNG thumbnails (the
report reuses it); :func:`write_gallery` wraps it in a self-contained page and writes
it atomically.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from dcsi._io import atomic_write_text
from dcsi._validation import check_int

__all__ = ["gallery_html", "write_gallery"]

_CSS = """
.dcsi-gallery { font-family: system-ui, sans-serif; }
.dcsi-group { margin: 0 0 1em 0; padding: .5em; border: 1px solid #ddd; border-radius: 6px; }
.dcsi-group.conflict { border-color: #d9534f; }
.dcsi-group h3 { margin: 0 0 .4em 0; font-size: 1em; }
.dcsi-thumbs { display: flex; flex-wrap: wrap; gap: .5em; }
.dcsi-thumbs figure { margin: 0; text-align: center; font-size: .75em; }
.dcsi-thumbs figure.rep img { outline: 3px solid #5cb85c; }
.dcsi-thumbs img { image-rendering: pixelated; display: block; }
"""


def _group_fields(g: Any) -> tuple[list[str], list[str], str, str, list[float]]:
    if isinstance(g, Mapping):
        members = [str(m) for m in g["members"]]
        return (
            members,
            [str(x) for x in g.get("labels", [])],
            str(g.get("kind", "")),
            str(g.get("representative", members[0] if members else "")),
            list(g.get("distances", [])),
        )
    return (list(g.members), list(g.labels), g.kind, g.representative, list(g.distances))


def _thumb_png(img: Any, size: int) -> str:
    from PIL import Image

    if isinstance(img, np.ndarray):
        arr = img
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        img = Image.fromarray(np.asarray(arr, dtype=np.uint8))
    img = img.copy()
    w, h = img.size
    scale = size / max(w, h)
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def gallery_html(
    groups: Iterable[Any],
    load_image: Callable[[str], Any],
    *,
    max_groups: int = 50,
    max_members: int = 12,
    thumb_size: int = 96,
) -> str:
    """HTML fragment: one block of thumbnails per group (conflicts first).

    Parameters
    ----------
    groups : RedundancyResult, iterable of Group, or the card's group dicts
    load_image : callable
        ``load_image(member_id) -> PIL.Image or ndarray (h, w[, c]) uint8``.
    max_groups : int, default=50
        Groups shown (conflicts first, then the largest redundant groups).
    max_members : int, default=12
        Thumbnails shown per group.
    thumb_size : int, default=96
        Longest side of a thumbnail in pixels.

    Returns
    -------
    str
        A ``<div class="dcsi-gallery">`` fragment with a ``<style>`` block; images are
        inline ``data:image/png;base64`` URIs, so the fragment needs no other file.
    """
    check_int(max_groups, "max_groups", "gallery_html", min_value=0)
    check_int(max_members, "max_members", "gallery_html", min_value=1)
    check_int(thumb_size, "thumb_size", "gallery_html", min_value=8)
    items = [_group_fields(g) for g in groups]
    order = sorted(
        range(len(items)), key=lambda i: (items[i][2] != "conflict", -len(items[i][0]), i)
    )
    shown = order[:max_groups]
    parts = [
        f"<style>{_CSS}</style>",
        '<div class="dcsi-gallery">',
        f"<p>{len(shown)} of {len(items)} groups shown "
        "(conflicts first; the kept copy is outlined in green). Under each image, "
        "<i>to centre</i> is its distance to the group's mean row (the representative is "
        "the closest): not the pair distance that the link threshold applies to.</p>",
    ]
    for rank, i in enumerate(shown):
        members, labels, kind, rep, dists = items[i]
        label_set = sorted(set(labels))
        title = f"Group {rank + 1}: {len(members)} images, {html.escape(kind)}" + (
            f" ({html.escape(', '.join(label_set))})" if label_set else ""
        )
        parts.append(
            f'<div class="dcsi-group {html.escape(kind)}"><h3>{title}</h3><div class="dcsi-thumbs">'
        )
        for j, m in enumerate(members[:max_members]):
            data = _thumb_png(load_image(m), thumb_size)
            cap = html.escape(m)
            if j < len(labels):
                cap += f"<br>{html.escape(labels[j])}"
            if j < len(dists):
                cap += f"<br>to centre {dists[j]:.3g}"
            cls = ' class="rep"' if m == rep else ""
            parts.append(
                f'<figure{cls}><img alt="{html.escape(m)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{cap}'
                "</figcaption></figure>"
            )
        if len(members) > max_members:
            parts.append(f"<p>+{len(members) - max_members} more</p>")
        parts.append("</div></div>")
    parts.append("</div>")
    return "\n".join(parts)


def write_gallery(
    path: Any,
    groups: Iterable[Any],
    load_image: Callable[[str], Any],
    *,
    title: str = "dcsi near-duplicate groups",
    max_groups: int = 50,
    max_members: int = 12,
    thumb_size: int = 96,
) -> Any:
    """Write a self-contained HTML page of :func:`gallery_html` atomically.

    Parameters
    ----------
    path : str or path
    groups, load_image, max_groups, max_members, thumb_size
        See :func:`gallery_html`.
    title : str, default="dcsi near-duplicate groups"

    Returns
    -------
    pathlib.Path
    """
    body = gallery_html(
        groups, load_image, max_groups=max_groups, max_members=max_members, thumb_size=thumb_size
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
    return atomic_write_text(path, page)
