"""The Hugging Face dataset card view: a small ``dcsi:`` key in ``README.md`` front matter.

Built with :class:`huggingface_hub.DatasetCard` / :class:`huggingface_hub.DatasetCardData`
(no hand-written YAML).  Into an existing README only the ``dcsi:`` key is added or
replaced: the other front-matter keys (license, tags, configs, ...) and the Markdown
body are kept.  Without a README, a new card is made from ``template.md`` with a section
explaining the numbers.  The block is a summary (index, backbone, most similar class
pairs, recommended clusters, redundancy counts) pointing at ``dcsi.json``; the K x K
matrices stay in ``dcsi.json``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcsi._io import atomic_write_text
from dcsi.card.card import CARD_FILENAME, Card
from dcsi.card.front_matter import HF_KEY, read_readme, readme_block, splice_readme

if TYPE_CHECKING:
    from huggingface_hub import DatasetCard

__all__ = [
    "HF_KEY",
    "build_dataset_card",
    "hf_block",
    "md_text",
    "read_readme",
    "readme_block",
    "readme_path",
    "render_readme",
    "splice_readme",
    "write_readme",
]

logger = logging.getLogger(__name__)

#: The front-matter key dcsi owns in a Hugging Face dataset card.
_DIGITS = 4


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), _DIGITS)


def hf_block(card: Card, *, n_pairs: int = 5) -> dict[str, Any]:
    """The ``dcsi:`` front-matter block summarising a card.

    Parameters
    ----------
    card : Card
    n_pairs : int, default=5
        How many of the most similar class pairs to list.

    Returns
    -------
    dict
        JSON/YAML-ready: ``card`` (pointer to ``dcsi.json``), ``card_sha256`` (sha256 of
        the ``dcsi.json`` bytes this block was made from), ``schema_version``,
        ``dcsi_version``, ``n_images``, ``n_classes``, and when computed ``index``,
        ``backbone``, ``image_size``, ``similarity`` (kind), ``most_similar_pairs``,
        ``class_clusters``, ``redundancy`` counts, ``image_clusters`` (k, method,
        sizes, and ARI/NMI/purity against the classes) and ``neighbor_index`` (k, n,
        method, backbone, pooling, head sha256, the Parquet file).  Floats rounded to 4
        decimals.
    """
    data = card.data
    block: dict[str, Any] = {
        "card": CARD_FILENAME,
        "card_sha256": hashlib.sha256(card.to_json().encode("utf-8")).hexdigest(),
        "schema_version": data["schema_version"],
        "dcsi_version": data["dcsi_version"],
        "n_images": card.n_images,
        "n_classes": len(card.classes),
    }
    if data.get("index"):
        block["index"] = _round(data["index"]["value"])
        reading = data["index"].get("reading")
        if reading:
            block["index_reading"] = reading["interpretation"]
    feats = data.get("features")
    if feats:
        block["backbone"] = feats["backbone"]
        if feats.get("image_size") is not None:
            size = feats["image_size"]  # card.data holds tuples; YAML wants a list
            block["image_size"] = list(size) if isinstance(size, tuple) else size
    if card.similarity_kinds:
        kind = card.primary_kind
        block["similarity"] = kind
        block["most_similar_pairs"] = [
            {"classes": [a, b], "similarity": _round(v)}
            for a, b, v in card.top_pairs(kind, n=n_pairs)
        ]
    cc = data.get("class_clusters")
    if cc and cc.get("recommended_k") is not None:
        block["class_clusters"] = {
            "k": int(cc["recommended_k"]),
            "method": cc["method"],
            "clusters": card.class_clusters(),
        }
    counts = card.redundancy_counts
    if counts is not None:
        block["redundancy"] = {"method": data["redundancy"]["method"], **counts}
    ic = data.get("image_clusters")
    if ic:
        block["image_clusters"] = {
            "k": int(ic["n_clusters"]),
            "method": ic["method"],
            "sizes": [int(c["size"]) for c in ic["clusters"]],
        }
        comp = ic.get("comparison")
        if comp:
            block["image_clusters"].update(
                {key: _round(comp[key]) for key in ("ari", "nmi", "purity") if key in comp}
            )
    ni = data.get("neighbor_index")
    if ni:
        block["neighbor_index"] = {
            "k": int(ni["k"]),
            "n": int(ni["n"]),
            "method": ni["method"],
            "backbone": ni["backbone"],
            "pooling": ni["pooling"],
            "head_sha256": ni["head"]["sha256"] if ni["head"] else None,
            "neighbors": next(
                (f["path"] for f in ni["files"] if f["path"].endswith(".parquet")), None
            ),
        }
    return block


_SIZE_CATEGORIES = (
    (10**3, "n<1K"),
    (10**4, "1K<n<10K"),
    (10**5, "10K<n<100K"),
    (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"),
    (10**9, "100M<n<1B"),
)


def _size_category(n: int) -> str:
    """The Hub's ``size_categories`` label for ``n`` images."""
    for limit, label in _SIZE_CATEGORIES:
        if n < limit:
            return label
    return "1B<n<10B"


_MD_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "|": "&#124;",
    "`": "&#96;",
    "[": "&#91;",
    "]": "&#93;",
    "\\": "&#92;",
}
_MD_SPECIAL = re.compile(r"[&<>|`\[\]\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def md_text(value: Any) -> str:
    """``value`` as literal text in Markdown, in a paragraph or a table cell.

    Names come from the data: ``<svg onload=...>`` must show as text, a ``|`` must not
    split a table row, a newline must not end it.  HTML-escapes ``& < >``, writes
    ``| ` [ ] \\`` as character references and turns line breaks and other control
    characters into one space.

    Parameters
    ----------
    value : object
        Converted with ``str``.

    Returns
    -------
    str

    Examples
    --------
    >>> md_text("a|b <svg onload=alert(1)>")
    'a&#124;b &lt;svg onload=alert(1)&gt;'
    """
    text = _CONTROL.sub(" ", str(value))
    return _MD_SPECIAL.sub(lambda m: _MD_ESCAPES[m.group()], text)


def _md_code(value: Any) -> str:
    """``value`` inside a Markdown code span: no backtick to close it, no line break."""
    return _CONTROL.sub(" ", str(value)).replace("`", "'")


def _reading_markdown(reading: Mapping[str, Any]) -> str:
    """The index reading: its line and the reference points as a table."""
    text = f"Reading: {md_text(reading['interpretation'])}"
    refs = reading.get("reference_points") or []
    if refs:
        rows = ["| reference point | classes | images | DCSI |", "|---|---|---|---|"]
        rows += [
            f"| {md_text(r['name'])} | {r['n_classes']} | {r['n_images']:,} | {r['value']:.4f} |"
            for r in refs
        ]
        text += "\n\n" + "\n".join(rows)
    return text


def _template_body(card: Card) -> str:
    data = card.data
    ds = data["dataset"]
    feats = data.get("features") or {}
    kinds = card.similarity_kinds
    kind = card.primary_kind if kinds else "cnn_cosine"

    if data.get("index"):
        idx = data["index"]
        value = "undefined" if idx["value"] is None else f"{idx['value']:.4f}"
        index_section = f"**Index (DCSI): {value}.** {md_text(idx['definition'])}"
        if idx.get("reading"):
            index_section += "\n\n" + _reading_markdown(idx["reading"])
    else:
        index_section = "The index was not computed (no class labels, or the analysis was skipped)."

    if kinds:
        rows = ["| class | class | similarity |", "|---|---|---|"]
        rows += [
            f"| {md_text(a)} | {md_text(b)} | {v:.4f} |" for a, b, v in card.top_pairs(kind, n=5)
        ]
        pairs_section = f"Most similar class pairs ({md_text(kind)}):\n\n" + "\n".join(rows)
    else:
        pairs_section = "No class-similarity matrix was computed."

    cc = data.get("class_clusters")
    if cc and cc.get("recommended_k") is None and cc.get("verdict"):
        clusters_section = (
            f"{md_text(cc['verdict'])} The partitions for k = "
            f"{', '.join(str(k) for k in card.cluster_ks)} are in the card."
        )
    elif cc and cc.get("recommended_k") is not None:
        lines = [
            f"- cluster {i}: {', '.join(map(md_text, c))}"
            for i, c in enumerate(card.class_clusters())
        ]
        clusters_section = (
            f"Recommended class clusters (k = {cc['recommended_k']}, {md_text(cc['method'])}"
            f"{', ' + md_text(cc['linkage']) + ' linkage' if cc.get('linkage') else ''}):\n\n"
            + "\n".join(lines)
        )
    else:
        clusters_section = "No class clustering was computed."

    counts = card.redundancy_counts
    if counts is not None:
        redundancy_section = (
            f"Near-duplicate groups ({md_text(data['redundancy']['method'])}): {counts['groups']} "
            f"({counts['redundant']} redundant, {counts['conflict']} conflicting labels), "
            f"{counts['images_in_groups']} images in groups, {counts['removable']} removable."
        )
        if "blank" in counts:
            redundancy_section += (
                f" {counts['blank']} blank or near-uniform images (one colour, whatever the "
                "alpha), left out of the copy search and grouped by colour."
            )
    else:
        redundancy_section = "The redundancy analysis was not run."

    size = feats.get("image_size")
    if isinstance(size, (list, tuple)):
        size = "x".join(str(s) for s in size)
    template = string.Template(Path(__file__).with_name("template.md").read_text(encoding="utf-8"))
    return template.substitute(
        title=md_text(ds["name"]),
        description=f"Similarity metadata for the {md_text(ds['name'])} image dataset.",
        dcsi_version=md_text(data["dcsi_version"]),
        n_images=ds["n_images"],
        n_classes=len(ds["classes"]),
        source=_md_code(ds["source"]),
        split=_md_code(ds["split"]) if ds["split"] is not None else "-",
        schema_version=md_text(data["schema_version"]),
        index_section=index_section,
        pairs_section=pairs_section,
        clusters_section=clusters_section,
        redundancy_section=redundancy_section,
        kind=md_text(kind),  # the schema allows [a-z0-9_] only: also safe in the code block
        diagonal=md_text(data["similarity"][kind]["diagonal"]) if kinds else "-",
        backbone=_md_code(feats.get("backbone", "?")),
        image_size=md_text(size) if size is not None else "native",
    )


def render_readme(
    card: Card, existing: str | None = None, *, where: str = "The existing README.md"
) -> str:
    """The text of ``README.md`` for a card.

    Parameters
    ----------
    card : Card
    existing : str, default=None
        Text of an existing ``README.md``: only its ``dcsi:`` key changes (see
        :func:`splice_readme`).  ``None`` -> a new card from the template, with a
        section explaining the numbers.
    where : str, default="The existing README.md"
        How error messages name the existing file.

    Returns
    -------
    str

    Raises
    ------
    DataError
        If the existing front matter cannot be read as a YAML mapping.
    """
    if existing is not None:
        return splice_readme(existing, hf_block(card), where=where)
    return str(_new_dataset_card(card))


def _new_dataset_card(card: Card) -> DatasetCard:
    from huggingface_hub import DatasetCard, DatasetCardData

    ds = card.data["dataset"]
    # extra metadata keys go through DatasetCardData's **kwargs
    extra: dict[str, Any] = {HF_KEY: hf_block(card)}
    card_data = DatasetCardData(
        pretty_name=ds["name"],
        size_categories=[_size_category(int(ds["n_images"]))],
        task_categories=["image-classification"] if ds["classes"] else None,
        **extra,
    )
    body = _template_body(card)
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def build_dataset_card(card: Card, *, existing: str | None = None) -> DatasetCard:
    """A :class:`huggingface_hub.DatasetCard` carrying the card's ``dcsi:`` block.

    Parameters
    ----------
    card : Card
    existing : str, default=None
        Text of an existing ``README.md``.  Its front matter and body are kept; only
        the ``dcsi:`` key is added or replaced (see :func:`splice_readme`).  ``None``
        -> a new card from the template, with a section explaining the numbers.

    Returns
    -------
    huggingface_hub.DatasetCard
        Note that ``str()`` of a ``DatasetCard`` re-dumps its YAML; write
        :func:`render_readme`'s text to keep an existing front matter byte for byte.
    """
    from huggingface_hub import DatasetCard

    if existing is not None:
        return DatasetCard(render_readme(card, existing))
    return _new_dataset_card(card)


def readme_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself when it names a ``.md`` file, else ``path / "README.md"``."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".md":
        path = path / "README.md"
    return path


def write_readme(card: Card, path: str | os.PathLike[str]) -> Path:
    """Write or update ``README.md`` with the card's ``dcsi:`` block, atomically.

    Parameters
    ----------
    card : Card
    path : path-like
        ``README.md`` or a folder holding (or receiving) it.  In an existing file only
        the ``dcsi:`` key changes: every other byte of its front matter and body is
        kept (see :func:`splice_readme`).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    DataError
        If an existing README is not UTF-8 or its front matter is not a YAML mapping;
        the file is then left as it was.
    """
    path = readme_path(path)
    text = render_readme(card, read_readme(path), where=str(path))
    return atomic_write_text(path, text)
