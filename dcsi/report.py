"""The HTML report of a card: one self-contained page (inline PNGs, opens offline).

Sections: the index with its reading (a strip of the value among the reference points,
the driving class pairs and classes) and its components, the class-similarity heatmap
ordered by the dendrogram, the dendrogram, the eigenvalue spectrum of the Laplacian of
the class graph whose eigen-gaps choose the number of class clusters (and any spectrum
an analyzer stored, e.g. of the SSIM graph), the most similar class pairs, the class
clusters (or the verdict that no k separates them), and the near-duplicate groups (a gallery of thumbnails when ``load_image`` is given).
Plots use matplotlib's Agg backend.

The report reads the card and nothing else: the tree, leaf order and spectrum are the
ones the analysis stored (:mod:`dcsi.card.views`); only for a card older than schema
1.1 are they recomputed, and the page says so.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dcsi._io import atomic_write_text
from dcsi._json import to_jsonable
from dcsi.card.views import class_spectrum, class_tree, stored_spectra

__all__ = ["map_png", "report_html", "write_report"]

logger = logging.getLogger(__name__)

_MAX_LABELS = 60  # above this many classes, axis tick labels are left out
_MAX_GROUPS = 50  # near-duplicate groups shown in the report
_THUMB = 64  # thumbnail size in px


# -- figures ----------------------------------------------------------------------
def _figure(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A Figure and Axes without pyplot (no global backend state is touched)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig_id: str, b64: str, alt: str) -> str:
    return (
        f'<figure id="{fig_id}"><img alt="{html.escape(alt)}" '
        f'src="data:image/png;base64,{b64}"><figcaption>{html.escape(alt)}</figcaption></figure>'
    )


def _heatmap(s: np.ndarray, names: list[str], order: np.ndarray, kind: str) -> str:
    k = len(names)
    size = min(3 + 0.35 * k, 14)
    fig, ax = _figure((size + 1.5, size))
    so = s[np.ix_(order, order)]
    im = ax.imshow(np.ma.masked_invalid(so), cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=f"{kind} similarity")
    if k <= _MAX_LABELS:
        labels = [names[i] for i in order]
        ax.set_xticks(range(k), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_title(f"Class similarity ({kind}), ordered by the dendrogram")
    return _png(fig)


def _dendrogram(z: np.ndarray, names: list[str], linkage: str, distance: str) -> str:
    from scipy.cluster.hierarchy import dendrogram

    k = len(names)
    fig, ax = _figure((min(4 + 0.3 * k, 16), 4))
    dendrogram(
        z,
        labels=names if k <= _MAX_LABELS else None,
        ax=ax,
        leaf_rotation=90,
        no_labels=k > _MAX_LABELS,
        color_threshold=None,
    )
    ax.set_ylabel(distance)
    ax.set_title(f"Dendrogram of the classes ({linkage} linkage)")
    return _png(fig)


def _spectrum(spectra: dict[str, np.ndarray]) -> str:
    fig, ax = _figure((6, 3.5))
    for label, ev in spectra.items():
        ev = np.sort(np.asarray(ev, dtype=np.float64))
        ax.plot(np.arange(1, len(ev) + 1), ev, marker="o", ms=3, label=label)
    ax.set_xlabel("eigenvalue rank")
    ax.set_ylabel("eigenvalue")
    ax.set_title("Laplacian eigenvalue spectrum (gaps suggest the cluster count)")
    ax.legend(fontsize=8)
    return _png(fig)


def _reading_strip(value: float, refs: list[Mapping[str, Any]]) -> str:
    """The index value (red) among the reference points (grey) on the scale [0, 1]."""
    fig, ax = _figure((8, 2.6))
    ax.axhline(0, color="0.6", lw=1, zorder=0)
    for i, r in enumerate(sorted(refs, key=lambda r: r["value"])):
        # neighbours' labels on four rows (below, above, further below, further above)
        lift = (-12, 12, -28, 28)[i % 4]
        ax.plot([r["value"]], [0], "o", color="0.45", ms=7)
        ax.annotate(
            f"{r['name']} ({r['value']:.2f})",
            (r["value"], 0),
            xytext=(0, lift),
            textcoords="offset points",
            ha="center",
            va="bottom" if lift > 0 else "top",
            fontsize=7,
            color="0.25",
            arrowprops={"arrowstyle": "-", "color": "0.7", "lw": 0.5},
        )
    ax.plot([value], [0], "D", color="tab:red", ms=10, zorder=3)
    ax.annotate(
        f"this dataset ({value:.2f})",
        (value, 0),
        xytext=(0, 48),
        textcoords="offset points",
        ha="center",
        fontsize=8,
        color="tab:red",
        arrowprops={"arrowstyle": "-", "color": "tab:red"},
    )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-1, 1)
    ax.set_yticks([])
    for spine in ("left", "right", "top"):
        ax.spines[spine].set_visible(False)
    ax.set_xlabel("DCSI")
    return _png(fig)


def _reading_html(value: float | None, reading: Mapping[str, Any]) -> str:
    """The reading of the index: its line, the strip plot and the driving classes."""
    esc = html.escape
    parts = [f"<p id='index-reading'><b>Reading:</b> {esc(reading['interpretation'])}</p>"]
    refs = list(reading.get("reference_points") or [])
    if refs and value is not None:
        parts.append(
            _img(
                "fig-index-reading",
                _reading_strip(value, refs),
                "The index of this dataset among the reference points (the same index on "
                "well-known datasets and two synthetic anchors)",
            )
        )
    drivers = reading.get("drivers") or {}
    tables = (
        (
            "index-drivers",
            "The class pairs that drive the value:",
            ("class", "class", "overlap"),
            [(*p["classes"], _fmt(p["overlap"])) for p in drivers.get("pairs") or []],
        ),
        (
            "index-classes",
            "The most confusable classes:",
            ("class", "confusability", "nearest class"),
            [
                (c["class"], _fmt(c["confusability"]), c.get("nearest_class") or "")
                for c in drivers.get("classes") or []
            ],
        ),
    )
    for table_id, caption, header, cells in tables:
        if cells:
            head = "".join(f"<th>{esc(h)}</th>" for h in header)
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>" for row in cells
            )
            parts.append(f"<p>{caption}</p><table id='{table_id}'><tr>{head}</tr>{body}</table>")
    return "".join(parts)


# -- galleries ----------------------------------------------------------------------
def _thumb(image: Any) -> str:
    from PIL import Image

    if not isinstance(image, Image.Image):
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        image = Image.fromarray(arr)
    image = image.copy()
    image.thumbnail((_THUMB, _THUMB))
    if image.size[0] < _THUMB // 2:  # upscale tiny images (8x8 digits) for visibility
        f = max(1, _THUMB // max(image.size))
        image = image.resize((image.size[0] * f, image.size[1] * f), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _thumbs_html(ids: Any, load_image: Callable[[str], Any] | None) -> str:
    """Thumbnails of the images ``ids`` (their ids as code without ``load_image``)."""
    esc = html.escape
    if load_image is None:
        return ", ".join(f"<code>{esc(str(i))}</code>" for i in ids)
    return "".join(
        f'<img class="thumb" title="{esc(str(i))}" alt="{esc(str(i))}" '
        f'src="data:image/png;base64,{_thumb(load_image(str(i)))}">'
        for i in ids
    )


def _groups_html(groups: list[dict], load_image: Callable[[str], Any] | None) -> str:
    if not groups:
        return "<p>No near-duplicate groups were found.</p>"
    # conflicts first (labels to check), then the largest groups
    shown = sorted(groups, key=lambda g: (g["kind"] != "conflict", -len(g["members"])))[
        :_MAX_GROUPS
    ]
    more = (
        ""
        if len(groups) <= _MAX_GROUPS
        else f"<p>{_MAX_GROUPS} of {len(groups)} groups shown; all are in dcsi.json.</p>"
    )
    if load_image is not None:
        gallery_html: Callable[..., str] | None
        try:
            from dcsi.gallery import gallery_html
        except ImportError:
            gallery_html = None
        if gallery_html is not None:  # the shared gallery (dcsi.gallery) picks and orders
            return f'<div id="gallery">{gallery_html(groups, load_image, max_groups=_MAX_GROUPS)}</div>{more}'
        rows = []
        keep = ' style="outline:3px solid #2a7"'
        for i, g in enumerate(shown):
            thumbs = "".join(
                f'<img class="thumb" title="{html.escape(m)}" alt="{html.escape(m)}" '
                f'src="data:image/png;base64,{_thumb(load_image(m))}"'
                f"{keep if m == g['representative'] else ''}>"
                for m in g["members"][:12]
            )
            rows.append(
                f'<div class="group {g["kind"]}"><b>group {i}</b> ({html.escape(g["kind"])}; '
                f"labels: {html.escape(', '.join(str(x) for x in g['labels']))})<br>{thumbs}</div>"
            )
        return f'<div id="gallery">{"".join(rows)}</div>{more}'
    table_rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(g['kind'])}</td><td>{len(g['members'])}</td>"
        f"<td>{html.escape(', '.join(str(x) for x in g['labels']))}</td>"
        f"<td>{html.escape(str(g['representative']))}</td>"
        f"<td>{html.escape(', '.join(g['members'][:8]))}{' ...' if len(g['members']) > 8 else ''}</td></tr>"
        for i, g in enumerate(shown)
    )
    return (
        '<table id="groups"><tr><th>#</th><th>kind</th><th>size</th><th>labels</th>'
        f"<th>keep</th><th>members</th></tr>{table_rows}</table>{more}"
    )


# -- page ---------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}
figure{margin:1em 0}img{max-width:100%}img.thumb{width:64px;height:64px;image-rendering:pixelated;margin:2px}
.group{margin:.5em 0}.conflict b{color:#b22}code{background:#f4f4f4;padding:0 3px}
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e3 else f"{value:.4g}"
    if isinstance(value, (Mapping, list, tuple)):
        return html.escape(json.dumps(to_jsonable(value), ensure_ascii=False)[:300])
    return html.escape(str(value))


def _component_html(value: Any, names: list[str]) -> str:
    """One index component, readable: scalars, per-class lists, matrices by shape."""
    k = len(names)
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(r, (list, tuple)) for r in value)
    ):
        return f"{len(value)} x {len(value[0])} matrix (in dcsi.json)"
    if (
        isinstance(value, (list, tuple))
        and k
        and len(value) == k
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        order = sorted(range(k), key=lambda i: -value[i])[:10]
        shown = ", ".join(f"{html.escape(names[i])}: {_fmt(value[i])}" for i in order)
        more = " ..." if k > 10 else ""
        return f"per class, largest first: {shown}{more}"
    return _fmt(value)


def map_png(block: Mapping, *, color_by: str = "cluster", names: list[str] | None = None) -> bytes:
    """PNG of the image map stored in an ``image_clusters`` block.

    Parameters
    ----------
    block : mapping
        The card's ``image_clusters`` block (its ``map``: ``xy``, ``cluster``, ``label``).
    color_by : {"cluster", "label"}, default="cluster"
    names : list of str, default=None
        Legend names of the colours (class names for ``"label"``).

    Returns
    -------
    bytes
        A PNG drawn by :func:`dcsi.plot_image_map` from the stored points alone.
    """
    from dcsi.maps import plot_image_map

    m = block["map"]
    xy = np.asarray(m["xy"], dtype=np.float64).reshape(-1, 2)
    colors = np.asarray(m[color_by], dtype=np.int64)
    if names is None:
        names = [f"cluster {c}" for c in range(int(colors.max()) + 1 if len(colors) else 0)]
    title = (
        f"Image map: {len(xy)} images, coloured by {'class' if color_by == 'label' else 'cluster'}"
    )
    return plot_image_map(xy, colors, names=names, title=title)


def _image_clusters_html(
    block: Mapping,
    classes: list[str],
    load_image: Callable[[str], Any] | None,
    cluster_map_png: bytes | None = None,
) -> str:
    """The image-clusters section: the stored map (by cluster, and by class when labelled),
    the choice of k, the comparison with the classes and each cluster's images.
    ``cluster_map_png``: the map coloured by cluster when the caller has drawn it already
    (``map.png``), else it is drawn here."""
    esc = html.escape
    choice = block.get("choice") or {}
    parts = [
        "<h2 id='image-clusters'>Image clusters and map</h2>",
        f"<p>{int(block['n_clusters'])} clusters of the images' CNN features "
        f"({esc(str(block['method']))}; Thomas &amp; Abraham), "
        f"k chosen by {esc(str(choice.get('rule', '?')))}: "
        f"{esc(str(choice.get('definition', '')))}</p>",
    ]
    m = block.get("map")
    if m and m.get("xy"):
        parts.append(f"<p>{esc(str(m.get('method', '')))}</p>")
        png = map_png(block) if cluster_map_png is None else cluster_map_png
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(_img("fig-image-map", b64, "Image map coloured by cluster"))
        if m.get("label") is not None and classes:
            b64 = base64.b64encode(map_png(block, color_by="label", names=classes)).decode("ascii")
            parts.append(_img("fig-image-map-classes", b64, "Image map coloured by class"))
    comp = block.get("comparison")
    if comp:
        parts.append(
            f"<p>Against the classes: ARI {_fmt(comp.get('ari'))}, NMI {_fmt(comp.get('nmi'))}, "
            f"purity {_fmt(comp.get('purity'))}. Classes split over clusters: "
            f"<code>{esc(_fmt(comp.get('split_classes')))}</code>; clusters merging classes: "
            f"<code>{esc(_fmt(comp.get('merged_clusters')))}</code>.</p>"
        )

    rows = [
        "<table><tr><th>cluster</th><th>images</th><th>representative</th>"
        "<th>most typical</th><th>least typical</th></tr>"
    ]
    for c in block["clusters"][:50]:
        rows.append(
            f"<tr><td>{int(c['id'])}</td><td>{int(c['size'])}</td>"
            f"<td>{_thumbs_html([c['representative']], load_image)}</td><td>{_thumbs_html(c.get('typical', ()), load_image)}</td>"
            f"<td>{_thumbs_html(c.get('atypical', ()), load_image)}</td></tr>"
        )
    rows.append("</table>")
    parts.append("".join(rows))
    return "\n".join(parts)


def _neighbor_index_html(block: Mapping, load_image: Callable[[str], Any] | None) -> str:
    """The neighbour-index section: what made it, its files, and a gallery of the card's
    sample queries with their top results and cosine similarities (drawn from the card
    alone: thumbnails with ``load_image``, ids without)."""
    esc = html.escape
    head = block.get("head")
    parts = [
        "<h2 id='neighbor-index'>Similarity index</h2>",
        f"<p>Each of the {block['n']} images with its {block['k']} nearest images (cosine "
        f"similarity of {esc(str(block['backbone']))} features, pooling "
        f"{esc(str(block['pooling']))}"
        + (f", similarity head <code>{esc(head['sha256'][:12])}</code>" if head else "")
        + f"; {esc(str(block['method']))} search). Files: "
        + ", ".join(f"<a href='{esc(f['path'])}'>{esc(f['path'])}</a>" for f in block["files"])
        + ". Query it from the card folder with <code>dcsi search "
        + esc(str(block["path"]))
        + " IMAGE</code> (one or more image files).</p>",
    ]
    rows = []
    for q in block.get("samples", ()):
        hits = "".join(
            f"<td>{_thumbs_html([i], load_image)}<br>{_fmt(sc)}</td>"
            for i, sc in zip(q["neighbors"], q["scores"], strict=False)
        )
        rows.append(f"<tr><td>{_thumbs_html([q['id']], load_image)}</td>{hits}</tr>")
    if rows:
        n_hits = max(len(q["neighbors"]) for q in block["samples"])
        heads = "".join(f"<th>#{r}</th>" for r in range(1, n_hits + 1))
        parts.append(
            f"<p>Sample queries (seeded) and their top {n_hits} (cosine similarity under "
            "each):</p>"
            f"<table id='neighbor-samples'><tr><th>query</th>{heads}</tr>{''.join(rows)}</table>"
        )
    return "\n".join(parts)


def _class_views_html(block: Mapping, load_image: Callable[[str], Any] | None) -> str:
    """The per-class SSIM views section, drawn from the card's stored ``class_views``.

    For each stored class: its kNN SSIM graph at the stored layout (figure
    ``fig-class-view-<class_id>``; the most similar group in red, the most dissimilar
    pair ringed in blue, the most isolated image a star), then the group, the pair and
    the isolated image as thumbnails (with ``load_image``) or ids.  Nothing is computed
    here: positions, edges and landmarks are those :func:`dcsi.class_views.class_views`
    stored.
    """
    from matplotlib.collections import LineCollection

    esc = html.escape
    params = block.get("params") or {}
    views = block.get("classes") or ()
    parts = [
        "<h2 id='class-views'>Per-class SSIM views</h2>",
        f"<p>For each class (at most {esc(str(params.get('max_classes', '?')))}, the largest) "
        f"a sample of at most {esc(str(params.get('max_per_class', '?')))} images: the graph "
        f"linking each image to its {esc(str(params.get('k', '?')))} most similar by SSIM, "
        "the most similar group (red), the most dissimilar pair (blue rings) and the most "
        "isolated image (lowest mean SSIM to the others, star), as in Yousefzadeh "
        "&sect;5.4.</p>",
    ]
    if not views:
        parts.append("<p>No class has two or more images.</p>")

    for v in views:
        pos = np.asarray(v["layout"], dtype=np.float64).reshape(-1, 2)
        edges = np.asarray(v["edges"], dtype=np.int64).reshape(-1, 2)
        group = list(v["group"]["members"])
        pair = list(v["dissimilar_pair"]["members"])
        iso = int(v["isolated"]["member"])
        fig, ax = _figure((3.2, 3.2))
        if len(edges):
            ax.add_collection(
                LineCollection(list(pos[edges]), colors="#999", linewidths=0.6, alpha=0.6, zorder=1)
            )
        ax.scatter(pos[:, 0], pos[:, 1], s=12, c="#555", zorder=2)
        ax.scatter(
            pos[group, 0], pos[group, 1], s=36, c="#d62728", zorder=3, label="most similar group"
        )
        ax.scatter(
            pos[pair, 0],
            pos[pair, 1],
            s=90,
            facecolors="none",
            edgecolors="#1f77b4",
            linewidths=1.5,
            zorder=4,
            label="most dissimilar pair",
        )
        ax.scatter(
            pos[iso, 0],
            pos[iso, 1],
            s=120,
            marker="*",
            c="#ff7f0e",
            zorder=5,
            label="most isolated",
        )
        ax.set_xlim(-1.1, 1.1)
        ax.set_ylim(-1.1, 1.1)
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.legend(
            fontsize=6, loc="lower center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False
        )
        name = str(v["class"])
        ax.set_title(f"{name}: {len(pos)} of {v['n_images']} images", fontsize=9)
        g, p, i = v["group"], v["dissimilar_pair"], v["isolated"]
        parts.append(
            f"<div class='class-view' id='class-view-{int(v['class_id'])}'><h3>{esc(name)}</h3>"
            + _img(
                f"fig-class-view-{int(v['class_id'])}",
                _png(fig),
                f"SSIM kNN graph of class {name}",
            )
            + f"<p>Most similar group ({len(g['ids'])} images, every pair SSIM &ge; "
            f"{_fmt(g['min_ssim'])}; threshold {_fmt(g['threshold'])}):<br>{_thumbs_html(g['ids'], load_image)}</p>"
            f"<p>Most dissimilar pair (SSIM {_fmt(p['ssim'])}):<br>{_thumbs_html(p['ids'], load_image)}</p>"
            f"<p>Most isolated image (mean SSIM {_fmt(i['mean_ssim'])}):<br>{_thumbs_html([i['id']], load_image)}</p>"
            "</div>"
        )
    omitted = block.get("omitted") or ()
    if omitted:
        shown = "; ".join(f"{esc(str(o['class']))} ({esc(str(o['reason']))})" for o in omitted[:20])
        more = f"; and {len(omitted) - 20} more (in dcsi.json)" if len(omitted) > 20 else ""
        parts.append(f"<p>No view for: {shown}{more}.</p>")
    return "\n".join(parts)


def report_html(
    card: Any,
    *,
    load_image: Callable[[str], Any] | None = None,
    card_sha256: str | None = None,
    cluster_map_png: bytes | None = None,
) -> str:
    """The report page of a card as one HTML string (figures inlined as base64 PNG).

    Parameters
    ----------
    card : Card
    load_image : callable, default=None
        ``load_image(image_id) -> PIL.Image or ndarray (h, w[, c]) uint8``; with it the
        near-duplicate groups are shown as thumbnails, else as a table.
    card_sha256 : str, default=None
        SHA-256 of the ``dcsi.json`` the page is made from, recorded in a
        ``<meta name='dcsi-card-sha256'>`` tag (``dcsi card validate`` compares it).
    cluster_map_png : bytes, default=None
        :func:`map_png` of the card's ``image_clusters`` block, when the caller has
        drawn it already (:func:`dcsi.card.write_card_files` draws it once for
        ``map.png`` and the page); None: drawn here.

    Returns
    -------
    str
        A complete HTML document; the figures have the ids ``fig-heatmap``,
        ``fig-dendrogram`` and ``fig-spectrum``.
    """
    data = card.data
    ds = data["dataset"]
    names = card.classes
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        + (f"<meta name='dcsi-card-sha256' content='{esc(card_sha256)}'>" if card_sha256 else ""),
        f"<title>dcsi report: {esc(ds['name'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>dcsi report: {esc(ds['name'])}</h1>",
        f"<p>{ds['n_images']} images, {len(names)} classes; source <code>{esc(ds['source'])}</code>"
        f"{', split <code>' + esc(ds['split']) + '</code>' if ds['split'] else ''}; "
        f"dcsi {esc(data['dcsi_version'])}, card schema {esc(data['schema_version'])}, "
        f"created {esc(data['provenance']['created'])}.</p>",
    ]
    feats = data.get("features")
    if feats:
        parts.append(
            f"<p>Features: <code>{esc(feats['backbone'])}</code>, {feats['dim']} dimensions, "
            f"input size {esc(str(feats.get('image_size') or 'native'))}"
            + (
                ""
                if feats.get("pooling", "gap") == "gap"
                else f", multi-layer pooling <code>{esc(str(feats['pooling']))}</code>"
            )
            + ".</p>"
        )

    parts.append("<h2 id='index'>Index</h2>")
    idx = data.get("index")
    if idx:
        value = "undefined" if idx["value"] is None else f"{idx['value']:.4f}"
        parts.append(f"<p><b>DCSI = {value}</b></p>")
        if idx.get("reading"):
            parts.append(_reading_html(idx["value"], idx["reading"]))
        parts.append(f"<p>{esc(idx['definition'])}</p>")
        if idx["components"]:
            notes = idx.get("component_definitions") or {}
            meaning = (
                (lambda k: f"<td>{esc(str(notes.get(k, '')))}</td>") if notes else (lambda k: "")
            )
            rows = "".join(
                f"<tr><td>{esc(k)}</td><td>{_component_html(v, names)}</td>{meaning(k)}</tr>"
                for k, v in sorted(idx["components"].items())
            )
            parts.append(
                "<p>Components (the quantities the index is built from):</p>"
                f"<table id='components'><tr><th>component</th><th>value</th>"
                f"{'<th>meaning</th>' if notes else ''}</tr>{rows}</table>"
            )
        if idx.get("peers"):
            rows = "".join(
                f"<tr><td>{esc(k)}</td><td>{_fmt(v)}</td></tr>"
                for k, v in sorted(idx["peers"].items())
            )
            parts.append(
                f"<p>Peer measures on the same data:</p><table><tr><th>measure</th><th>value</th></tr>{rows}</table>"
            )
    else:
        parts.append(
            "<p>The index was not computed (no class labels, or the analysis was skipped).</p>"
        )

    kinds = card.similarity_kinds
    if kinds and len(names) >= 2:
        kind = card.primary_kind
        s = card.similarity(kind)
        tree = class_tree(card)
        spectrum = class_spectrum(card)
        entry = data["similarity"][kind]
        parts.append("<h2 id='similarity'>Class similarity</h2>")
        parts.append(
            f"<p>Mean pairwise {esc(kind)} similarity between the images of two classes; "
            f"diagonal: {esc(entry['diagonal'])}. Other kinds in the card: "
            f"{esc(', '.join(k for k in kinds if k != kind) or 'none')}.</p>"
        )
        if tree is not None:
            if not tree.stored:
                parts.append(
                    "<p class='note'>This card (schema older than 1.1) stores no class "
                    "tree or spectrum; the figures below were recomputed from its "
                    f"{esc(kind)} matrix.</p>"
                )
            parts.append(
                _img(
                    "fig-heatmap",
                    _heatmap(s, names, tree.leaf_order, kind),
                    f"{kind} class similarity, rows and columns in dendrogram order",
                )
            )
            parts.append(
                _img(
                    "fig-dendrogram",
                    _dendrogram(tree.linkage_matrix, names, tree.linkage, tree.distance),
                    f"Dendrogram of the classes ({tree.linkage} linkage on {tree.distance})",
                )
            )
        else:
            parts.append(
                _img(
                    "fig-heatmap",
                    _heatmap(s, names, np.arange(len(names)), kind),
                    f"{kind} class similarity, rows and columns in class order",
                )
            )
            parts.append(
                "<p class='note'>No dendrogram: the card stores no class tree and "
                "none can be computed from its matrix (undefined entries).</p>"
            )
        spectra = {spectrum.label: spectrum.eigenvalues} if spectrum is not None else {}
        spectra.update(stored_spectra(card))
        if spectra:
            parts.append(_img("fig-spectrum", _spectrum(spectra), "Laplacian eigenvalue spectrum"))
        else:
            parts.append("<p class='note'>No Laplacian spectrum is stored in this card.</p>")
        rows = "".join(
            f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{v:.4f}</td></tr>"
            for a, b, v in card.top_pairs(kind, n=10)
        )
        parts.append(
            "<h3>Most similar class pairs</h3><table id='pairs'><tr><th>class</th><th>class</th>"
            f"<th>{esc(kind)}</th></tr>{rows}</table>"
        )
    else:
        parts.append("<h2 id='similarity'>Class similarity</h2><p>Not computed.</p>")

    cc = data.get("class_clusters")
    parts.append("<h2 id='clusters'>Class clusters</h2>")
    if cc and cc["partitions"]:
        rule = f" ({esc(cc['rule'])})" if cc.get("rule") else ""
        if cc.get("recommended_k") is None and cc.get("verdict"):
            chosen = f"no recommended k{rule}"
        else:
            chosen = f"recommended k = {esc(str(cc['recommended_k']))}{rule}"
        parts.append(
            f"<p>Method {esc(cc['method'])}, linkage {esc(str(cc['linkage']))}; {chosen}.</p>"
        )
        if cc.get("verdict"):
            parts.append(f"<p id='k-verdict'><b>{esc(cc['verdict'])}</b></p>")
        scores = cc.get("scores")
        if isinstance(scores, dict) and scores:
            cells = "".join(
                f"<td>{esc(str(k))}: {_fmt(v)}</td>"
                for k, v in sorted(
                    scores.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0
                )
            )
            parts.append(
                f"<p>Score of each k (the rule picks the best):</p><table id='k-scores'><tr>{cells}</tr></table>"
            )
        for k in card.cluster_ks:
            mark = " (recommended)" if k == cc.get("recommended_k") else ""
            items = "".join(f"<li>{esc(', '.join(c))}</li>" for c in card.class_clusters(k))
            parts.append(f"<p>k = {k}{mark}:</p><ol start='0'>{items}</ol>")
    else:
        parts.append("<p>Not computed.</p>")

    if data.get("image_clusters"):
        parts.append(
            _image_clusters_html(data["image_clusters"], list(names), load_image, cluster_map_png)
        )
    if data.get("class_views"):
        parts.append(_class_views_html(data["class_views"], load_image))
    if data.get("neighbor_index"):
        parts.append(_neighbor_index_html(data["neighbor_index"], load_image))
    parts.append("<h2 id='redundancy'>Near-duplicates</h2>")
    red = data.get("redundancy")
    if red:
        c = card.redundancy_counts
        parts.append(
            f"<p>Method {esc(red['method'])}: {c['groups']} groups ({c['redundant']} redundant, "
            f"{c['conflict']} with conflicting labels), {c['images_in_groups']} images in groups, "
            f"{c['removable']} removable"
            + (f", {c['blank']} blank or near-uniform images" if "blank" in c else "")
            + f". Parameters: <code>{_fmt(red['params'])}</code>.</p>"
        )
        parts.append(_groups_html(red["groups"], load_image))
    else:
        parts.append("<p>Not run.</p>")
    parts.append(
        "<p>Full data: <a href='dcsi.json'>dcsi.json</a> &middot; "
        "<a href='croissant.json'>croissant.json</a></p></body></html>"
    )
    return "\n".join(parts)


def write_report(
    card: Any,
    path: str | os.PathLike[str],
    *,
    load_image: Callable[[str], Any] | None = None,
    card_sha256: str | None = None,
    cluster_map_png: bytes | None = None,
) -> Path:
    """Write ``report.html`` atomically (see :func:`report_html`).

    Parameters
    ----------
    card : Card
    path : path-like
        ``report.html`` or a folder receiving it.
    load_image : callable, default=None
        ``load_image(image_id) -> PIL.Image or ndarray``, for near-duplicate galleries.
    card_sha256, cluster_map_png : default=None
        See :func:`report_html`.

    Returns
    -------
    Path
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() not in (".html", ".htm"):
        path = path / "report.html"
    return atomic_write_text(
        path,
        report_html(
            card, load_image=load_image, card_sha256=card_sha256, cluster_map_png=cluster_map_png
        ),
    )
