"""dcsi: how similar are the classes and images of an image dataset?

The public API is imported lazily, so ``import dcsi`` (and ``dcsi card show``)
never pulls in torch.

>>> import dcsi
>>> card = dcsi.analyze("sample:digits")            # doctest: +SKIP
>>> card.index                                        # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from dcsi.exceptions import (
    CardSchemaError,
    DataError,
    DcsiError,
    EngineError,
    InvalidParameterError,
    MissingDependencyError,
    WeightsNotFoundError,
)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "analyze": "dcsi.pipeline",
    "analyze_images": "dcsi.pipeline",
    "Card": "dcsi.card",
    "load_card": "dcsi.card",
    "open_source": "dcsi.sources",
    "ImageSet": "dcsi.sources",
    "SkippedItem": "dcsi.sources",
    "extract_features": "dcsi.features",
    "FeatureSet": "dcsi.features",
    "get_backbone": "dcsi.backbones",
    "list_backbones": "dcsi.backbones",
    "register_backbone": "dcsi.backbones",
    "class_similarity": "dcsi.similarity.class_cosine",
    "ClassSimilarity": "dcsi.similarity.class_cosine",
    "class_spreads": "dcsi.similarity.spreads",
    "compute_index": "dcsi.index",
    "index_report": "dcsi.index",
    "IndexResult": "dcsi.index",
    "index_reading": "dcsi.index_reading",
    "IndexReading": "dcsi.index_reading",
    "cluster_classes": "dcsi.clusters",
    "ClassClusters": "dcsi.clusters",
    "Router": "dcsi.clusters",
    "routing_error": "dcsi.clusters",
    "ssim_matrix": "dcsi.similarity.ssim",
    "ssim_pairs": "dcsi.similarity.ssim",
    "ssim_cross": "dcsi.similarity.ssim",
    "ssim_threshold_pairs": "dcsi.similarity.ssim",
    "ssim_topk": "dcsi.similarity.ssim",
    "class_ssim": "dcsi.similarity.ssim",
    "spectral_analysis": "dcsi.spectral",
    "eigengap_count": "dcsi.spectral",
    "find_redundancy": "dcsi.redundancy",
    "evaluate_duplicates": "dcsi.redundancy",
    "find_leakage": "dcsi.leakage",
    "class_views": "dcsi.class_views",
    "boundary_crossings": "dcsi.boundaries",
    "cluster_images": "dcsi.image_clusters",
    "ImageClusters": "dcsi.image_clusters",
    "ImageClusterParams": "dcsi.image_clusters",
    "ClusterComparison": "dcsi.image_clusters",
    "image_map": "dcsi.maps",
    "build_neighbor_index": "dcsi.neighbor_index",
    "load_neighbor_index": "dcsi.neighbor_index",
    "NeighborIndex": "dcsi.neighbor_index",
    "plot_image_map": "dcsi.maps",
    "train_similarity_head": "dcsi.similarity_head",
    "load_similarity_head": "dcsi.similarity_head",
    "SimilarityHead": "dcsi.similarity_head",
}

__all__ = [
    "__version__",
    "DcsiError",
    "InvalidParameterError",
    "DataError",
    "CardSchemaError",
    "EngineError",
    "MissingDependencyError",
    "WeightsNotFoundError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dcsi' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
