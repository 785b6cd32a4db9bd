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

import logging
import os
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcsi._io import atomic_write_text
from dcsi.card.card import CARD_FILENAME, Card
from dcsi.exceptions import DataError

if TYPE_CHECKING:
    from huggingface_hub import DatasetCard

__all__ = ["HF_KEY", "hf_block", "build_dataset_card", "write_readme"]

logger = logging.getLogger(__name__)

#: The front-matter key dcsi owns in a Hugging Face dataset card.
HF_KEY = "dcsi"
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
        JSON/YAML-ready: ``card`` (pointer to ``dcsi.json``), ``schema_version``,
        ``dcsi_version``, ``n_images``, ``n_classes``, and when computed ``index``,
        ``backbone``, ``image_size``, ``similarity`` (kind), ``most_similar_pairs``,
        ``class_clusters`` and ``redundancy`` counts.  Floats rounded to 4 decimals.
    """
    data = card.data
    block: dict[str, Any] = {
        "card": CARD_FILENAME,
        "schema_version": data["schema_version"],
        "dcsi_version": data["dcsi_version"],
        "n_images": card.n_images,
        "n_classes": len(card.classes),
    }
    if data.get("index"):
        block["index"] = _round(data["index"]["value"])
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
    return block


_SIZE_CATEGORIES = (
    (10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"),
)


def _size_category(n: int) -> str:
    """The Hub's ``size_categories`` label for ``n`` images."""
    for limit, label in _SIZE_CATEGORIES:
        if n < limit:
            return label
    return "1B<n<10B"


def _template_body(card: Card) -> str:
    data = card.data
    ds = data["dataset"]
    feats = data.get("features") or {}
    kinds = card.similarity_kinds
    kind = card.primary_kind if kinds else "cnn_cosine"

    if data.get("index"):
        idx = data["index"]
        value = "undefined" if idx["value"] is None else f"{idx['value']:.4f}"
        index_section = f"**Index (DCSI): {value}.** {idx['definition']}"
    else:
        index_section = "The index was not computed (no class labels, or the analysis was skipped)."

    if kinds:
        rows = ["| class | class | similarity |", "|---|---|---|"]
        rows += [f"| {a} | {b} | {v:.4f} |" for a, b, v in card.top_pairs(kind, n=5)]
        pairs_section = f"Most similar class pairs ({kind}):\n\n" + "\n".join(rows)
    else:
        pairs_section = "No class-similarity matrix was computed."

    cc = data.get("class_clusters")
    if cc and cc.get("recommended_k") is not None:
        lines = [f"- cluster {i}: {', '.join(c)}" for i, c in enumerate(card.class_clusters())]
        clusters_section = (
            f"Recommended class clusters (k = {cc['recommended_k']}, {cc['method']}"
            f"{', ' + cc['linkage'] + ' linkage' if cc.get('linkage') else ''}):\n\n"
            + "\n".join(lines)
        )
    else:
        clusters_section = "No class clustering was computed."

    counts = card.redundancy_counts
    if counts is not None:
        redundancy_section = (
            f"Near-duplicate groups ({data['redundancy']['method']}): {counts['groups']} "
            f"({counts['redundant']} redundant, {counts['conflict']} conflicting labels), "
            f"{counts['images_in_groups']} images in groups, {counts['removable']} removable."
        )
    else:
        redundancy_section = "The redundancy analysis was not run."

    size = feats.get("image_size")
    if isinstance(size, (list, tuple)):
        size = "x".join(str(s) for s in size)
    template = string.Template(Path(__file__).with_name("template.md").read_text(encoding="utf-8"))
    return template.substitute(
        title=ds["name"],
        description=f"Similarity metadata for the `{ds['name']}` image dataset.",
        dcsi_version=data["dcsi_version"],
        n_images=ds["n_images"],
        n_classes=len(ds["classes"]),
        source=ds["source"],
        split=ds["split"] if ds["split"] is not None else "-",
        schema_version=data["schema_version"],
        index_section=index_section,
        pairs_section=pairs_section,
        clusters_section=clusters_section,
        redundancy_section=redundancy_section,
        kind=kind,
        diagonal=data["similarity"][kind]["diagonal"] if kinds else "-",
        backbone=feats.get("backbone", "?"),
        image_size=size if size is not None else "native",
    )


def build_dataset_card(card: Card, *, existing: str | None = None) -> DatasetCard:
    """A :class:`huggingface_hub.DatasetCard` carrying the card's ``dcsi:`` block.

    Parameters
    ----------
    card : Card
    existing : str, default=None
        Text of an existing ``README.md``.  Its front matter and body are kept; only
        the ``dcsi:`` key is added or replaced.  ``None`` -> a new card from the
        template, with a section explaining the numbers.

    Returns
    -------
    huggingface_hub.DatasetCard
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    block = hf_block(card)
    if existing is not None:
        try:
            hf_card = DatasetCard(existing)
        except (ValueError, TypeError) as exc:  # yaml errors are ValueError subclasses
            raise DataError(
                f"The existing README.md has front matter that is not a YAML mapping "
                f"({exc}); fix or remove its '---' block and retry."
            ) from None
        hf_card.data[HF_KEY] = block
        return hf_card

    ds = card.data["dataset"]
    card_data = DatasetCardData(
        pretty_name=ds["name"],
        size_categories=[_size_category(int(ds["n_images"]))],
        task_categories=["image-classification"] if ds["classes"] else None,
        **{HF_KEY: block},
    )
    body = _template_body(card)
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def write_readme(card: Card, path: str | os.PathLike[str]) -> Path:
    """Write or update ``README.md`` with the card's ``dcsi:`` block, atomically.

    Parameters
    ----------
    card : Card
    path : path-like
        ``README.md`` or a folder holding (or receiving) it.  An existing file keeps
        its front matter (other than ``dcsi:``), its body and its line endings.

    Returns
    -------
    Path
        The file written.
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".md":
        path = path / "README.md"
    existing = path.read_bytes().decode("utf-8") if path.is_file() else None  # keep CRLF
    hf_card = build_dataset_card(card, existing=existing)
    return atomic_write_text(path, str(hf_card))
