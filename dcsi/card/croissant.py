"""The Croissant view of a card: ``croissant.json`` (JSON-LD, Croissant 1.1).

The file describes the card, not the images: a ``cr:FileObject`` for ``dcsi.json``
(with its sha256), and record sets with inline data for the classes (name, image count,
cluster id for the recommended k), the class clusters for every stored k, and each
class-similarity matrix in long form (one record per ordered class pair).  Scalars that
Croissant has no term for live in the ``dcsi`` external vocabulary
(:data:`DCSI_VOCAB`): ``dcsi:index``, ``dcsi:indexDefinition``, ``dcsi:indexReading``
(the one-line interpretation), ``dcsi:backbone``, ``dcsi:recommendedK``,
``dcsi:classClustersVerdict``, ``dcsi:schemaVersion``, ``dcsi:redundantGroups``,
``dcsi:conflictGroups``, ``dcsi:neighborIndexK``; each file of a neighbour index
(``neighbor_index.files``) is a ``cr:FileObject`` with its sha256.

Matrices with more than :data:`MAX_INLINE_CLASSES` classes are not inlined (K^2
records); the record set then points into ``dcsi.json`` only through the file object.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dcsi._io import atomic_write_json
from dcsi.card.card import CARD_FILENAME, Card

__all__ = [
    "CROISSANT_VERSION",
    "DCSI_VOCAB",
    "MAX_INLINE_CLASSES",
    "croissant_dict",
    "write_croissant",
]

#: ``conformsTo`` value of the files written.
CROISSANT_VERSION = "http://mlcommons.org/croissant/1.1"
#: IRI of the dcsi external vocabulary (prefix ``dcsi:``).
DCSI_VOCAB = "https://w3id.org/dcsi/vocab/1.0/"
#: Largest class count whose similarity matrices are inlined as records.
MAX_INLINE_CLASSES = 200


def _context() -> dict[str, Any]:
    """The Croissant 1.1 JSON-LD context plus the ``dcsi`` prefix."""
    cr = {
        k: f"cr:{k}"
        for k in (
            "arrayShape",
            "citeAs",
            "column",
            "containedIn",
            "equivalentProperty",
            "extract",
            "field",
            "fileObject",
            "fileProperty",
            "fileSet",
            "format",
            "includes",
            "isArray",
            "isLiveDataset",
            "jsonPath",
            "key",
            "md5",
            "parentField",
            "path",
            "recordSet",
            "references",
            "regex",
            "repeated",
            "replace",
            "samplingRate",
            "separator",
            "source",
            "subField",
            "transform",
        )
    }
    return {
        "@language": "en",
        "@vocab": "https://schema.org/",
        "sc": "https://schema.org/",
        "cr": "http://mlcommons.org/croissant/",
        "rai": "http://mlcommons.org/croissant/RAI/",
        "dct": "http://purl.org/dc/terms/",
        "conformsTo": "dct:conformsTo",
        "data": {"@id": "cr:data", "@type": "@json"},
        "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
        "examples": {"@id": "cr:examples", "@type": "@json"},
        "name": {"@container": "@language"},
        "description": {"@container": "@language"},
        **cr,
        "dcsi": DCSI_VOCAB,
    }


def _field(rs_id: str, name: str, data_type: str, description: str) -> dict[str, Any]:
    return {
        "@type": "cr:Field",
        "@id": f"{rs_id}/{name}",
        "name": name,
        "description": description,
        "dataType": data_type,
    }


def _record_set(
    rs_id: str, description: str, fields: list[dict], rows: list[dict], key: str | None = None
) -> dict[str, Any]:
    rs: dict[str, Any] = {
        "@type": "cr:RecordSet",
        "@id": rs_id,
        "name": rs_id,
        "description": description,
        "field": fields,
        "data": [{f"{rs_id}/{k}": v for k, v in row.items()} for row in rows],
    }
    if key is not None:
        rs["key"] = {"@id": f"{rs_id}/{key}"}
    return rs


#: Encoding of each file of the neighbour index, by extension.
_INDEX_FORMATS = {
    ".parquet": "application/x-parquet",
    ".json": "application/json",
    ".npy": "application/octet-stream",
    ".safetensors": "application/octet-stream",
}
_INDEX_DESCRIPTIONS = {
    "neighbors.parquet": "The neighbour index: one row per image with its nearest images "
    "(id, neighbor_ids, scores = cosine similarities, is_copy = verified copies, listed "
    "first).",
    "vectors.npy": "The unit vectors (n x d float32, .npy) that answer new queries.",
    "thumbnails.npy": "The images stretched to 32 x 32 RGB (n x 32 x 32 uint8, .npy) for "
    "the pixel check of new queries.",
    "pixel_reference.npy": "Each image's reference distance for the pixel check (n float64, .npy).",
    "index.json": "What made the vectors (backbone, pooling, head) and the sha256 of each "
    "index file.",
    "head.safetensors": "The similarity head applied to the backbone features.",
}


def _index_file(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A ``cr:FileObject`` for one file of the card's neighbour index."""
    name = entry["path"].rsplit("/", 1)[-1]
    return {
        "@type": "cr:FileObject",
        "@id": f"neighbor-index-{_safe_name(name)}",
        "name": f"neighbor-index-{_safe_name(name)}",
        "description": _INDEX_DESCRIPTIONS.get(name, "A file of the neighbour index."),
        "contentUrl": entry["path"],
        "encodingFormat": _INDEX_FORMATS.get(Path(name).suffix, "application/octet-stream"),
        "sha256": entry["sha256"],
        "contentSize": f"{entry['bytes']} B",
    }


def croissant_dict(card: Card, *, card_sha256: str | None = None) -> dict[str, Any]:
    """The Croissant JSON-LD document for a card.

    Parameters
    ----------
    card : Card
    card_sha256 : str, default=None
        sha256 of the ``dcsi.json`` bytes; ``None`` -> computed from ``card.to_json()``
        (the exact bytes :meth:`Card.save` writes).

    Returns
    -------
    dict
        JSON-ready JSON-LD.
    """
    data = card.data
    ds = data["dataset"]
    names = card.classes
    if card_sha256 is None:
        card_sha256 = hashlib.sha256(card.to_json().encode("utf-8")).hexdigest()

    doc: dict[str, Any] = {
        "@context": _context(),
        "@type": "sc:Dataset",
        "name": _safe_name(ds["name"]),
        "description": (
            f"Class-similarity metadata of the image dataset {ds['name']!r} "
            f"({ds['n_images']} images, {len(names)} classes, source {ds['source']!r}"
            f"{', split ' + repr(ds['split']) if ds['split'] else ''}), computed by dcsi "
            f"{data['dcsi_version']}. The full card is dcsi.json."
        ),
        "conformsTo": CROISSANT_VERSION,
        "url": CARD_FILENAME,
        "version": data["schema_version"],
        "dateCreated": data["provenance"]["created"],
        "datePublished": data["provenance"]["created"],
        "dcsi:schemaVersion": data["schema_version"],
        "distribution": [
            {
                "@type": "cr:FileObject",
                "@id": "dcsi-card",
                "name": "dcsi-card",
                "description": "The dcsi card (JSON, schema in the dcsi package).",
                "contentUrl": CARD_FILENAME,
                "encodingFormat": "application/json",
                "sha256": card_sha256,
            }
        ],
    }
    for key, term in (("license", "license"), ("citation", "citeAs"), ("url", "sameAs")):
        if isinstance(ds.get(key), str):  # optional extra keys of the dataset block
            doc[term] = ds[key]
    if ds.get("fingerprint"):
        doc["dcsi:fingerprint"] = ds["fingerprint"]
    feats = data.get("features")
    if feats:
        doc["dcsi:backbone"] = feats["backbone"]
    if data.get("index"):
        idx = data["index"]
        if idx["value"] is not None:
            doc["dcsi:index"] = idx["value"]
        doc["dcsi:indexDefinition"] = idx["definition"]
        if idx.get("reading"):
            doc["dcsi:indexReading"] = idx["reading"]["interpretation"]
    ni = data.get("neighbor_index")
    if ni:
        doc["dcsi:neighborIndexK"] = ni["k"]
        doc["distribution"] += [_index_file(f) for f in ni["files"]]
    counts = card.redundancy_counts
    if counts is not None:
        doc["dcsi:redundantGroups"] = counts["redundant"]
        doc["dcsi:conflictGroups"] = counts["conflict"]

    record_sets: list[dict[str, Any]] = []
    cc = data.get("class_clusters")
    if names:
        fields = [
            _field("classes", "label", "sc:Integer", "Class id (position in dataset.classes)."),
            _field("classes", "name", "sc:Text", "Class name."),
            _field("classes", "n_images", "sc:Integer", "Number of images of the class."),
        ]
        rows = [
            {"label": i, "name": n, "n_images": c}
            for i, (n, c) in enumerate(zip(names, ds["class_counts"]))
        ]
        if cc and cc.get("verdict"):
            doc["dcsi:classClustersVerdict"] = cc["verdict"]
        if cc and cc.get("recommended_k") is not None:
            doc["dcsi:recommendedK"] = int(cc["recommended_k"])
            assignment = card.cluster_assignment()
            fields.append(
                _field(
                    "classes",
                    "cluster",
                    "sc:Integer",
                    "Cluster id of the class for the recommended k.",
                )
            )
            for row, c in zip(rows, assignment):
                row["cluster"] = int(c)
        record_sets.append(
            _record_set("classes", "The classes of the dataset.", fields, rows, key="label")
        )
    if cc and cc["partitions"]:
        fields = [
            _field("class_clusters", "k", "sc:Integer", "Number of clusters of the partition."),
            _field("class_clusters", "class", "sc:Text", "Class name."),
            _field("class_clusters", "cluster", "sc:Integer", "Cluster id of the class (0..k-1)."),
        ]
        rows = [
            {"k": k, "class": n, "cluster": int(c)}
            for k in card.cluster_ks
            for n, c in zip(names, card.cluster_assignment(k))
        ]
        record_sets.append(
            _record_set(
                "class_clusters",
                f"Hierarchical clustering of the classes ({cc['method']}, linkage {cc['linkage']}).",
                fields,
                rows,
            )
        )
    ic = data.get("image_clusters")
    if ic:
        doc["dcsi:imageClusters"] = int(ic["n_clusters"])
        fields = [
            _field("image_clusters", "cluster", "sc:Integer", "Cluster id (0 = largest)."),
            _field("image_clusters", "size", "sc:Integer", "Number of images in the cluster."),
            _field(
                "image_clusters",
                "representative",
                "sc:Text",
                "Id of the cluster's medoid image (dataset ids as in dcsi.json).",
            ),
        ]
        rows = [
            {"cluster": int(c["id"]), "size": int(c["size"]), "representative": c["representative"]}
            for c in ic["clusters"]
        ]
        record_sets.append(
            _record_set(
                "image_clusters",
                f"Clusters of the images' CNN features ({ic['method']}); per-image cluster ids "
                "are in dcsi.json (image_clusters.labels).",
                fields,
                rows,
                key="cluster",
            )
        )
    if len(names) <= MAX_INLINE_CLASSES:
        for kind in card.similarity_kinds:
            entry = data["similarity"][kind]
            rs_id = f"class_similarity_{kind}"
            fields = [
                _field(rs_id, "class_a", "sc:Text", "Row class."),
                _field(rs_id, "class_b", "sc:Text", "Column class."),
                _field(
                    rs_id,
                    "similarity",
                    "sc:Float",
                    f"{kind} class similarity (diagonal: {entry['diagonal']}); "
                    "absent value = undefined.",
                ),
            ]
            rows = [
                {"class_a": a, "class_b": b, "similarity": v}
                for a, row in zip(names, entry["matrix"])
                for b, v in zip(names, row)
            ]
            record_sets.append(
                _record_set(
                    rs_id,
                    f"The {kind} class-similarity matrix in long form.",
                    fields,
                    rows,
                )
            )
    if record_sets:
        doc["recordSet"] = record_sets
    return doc


def _safe_name(name: str) -> str:
    """Croissant names: letters, digits, '-', '_', '.'."""
    out = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return out or "dataset"


def write_croissant(
    card: Card, path: str | os.PathLike[str], *, card_sha256: str | None = None
) -> Path:
    """Write ``croissant.json`` atomically.

    Parameters
    ----------
    card : Card
    path : path-like
        ``croissant.json`` or a folder receiving it.
    card_sha256 : str, default=None
        sha256 of the ``dcsi.json`` bytes (computed when omitted).

    Returns
    -------
    Path
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".json":
        path = path / "croissant.json"
    return atomic_write_json(path, croissant_dict(card, card_sha256=card_sha256))
