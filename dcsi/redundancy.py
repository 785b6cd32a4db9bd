"""Near-duplicate groups, redundant copies and label conflicts (Yousefzadeh's Algorithm 1).

Pipeline of the default ``method="wavelet"``:

1. **Wavelet rows** (:func:`dcsi.similarity.wavelet.wavelet_rows`): the coefficients
   ``W`` (``db1``, level 1), the rank-revealing QR selection of the ``m`` most
   independent ones with ``cond(W[:, P[:m]]) < tau``, each row's approximation band
   centred (a uniform change of brightness) and the row scaled to unit length (a
   change of contrast); the distance of two images is ``1 - cos`` of these rows.
2. **Grouping** (:class:`RedundancyParams`):

   * ``n_clusters=None`` (default, *links*: the near-duplicate search): every pair of
     images whose distance is ``<= threshold`` is linked
     (:func:`dcsi.neighbors.radius_pairs`: exact, blockwise, never ``n x n``).
   * Second, shift- and crop-tolerant stage (``align``, default on for wavelet links):
     the wavelet distance misses copies moved by a pixel or cropped by a pixel or two
     and resized back.  :func:`dcsi.aligned.aligned_pairs` links every pair whose
     *aligned distance* -- ``1 -`` Pearson correlation of coarse inner windows after
     the best of the identity, shifts by up to ``max_shift`` px and crops of up to
     ``max_crop`` px resized back -- is ``<= AlignOptions.threshold`` (default
     0.0005); shifts and crops follow the image size
     (:func:`dcsi.aligned.default_geometry`: 2 and 4 px at 28 px).
   * Third, density-relative stage (``relative``, default on for wavelet links):
     :func:`dcsi.relative_links.relative_links` links every pair whose coarse distance
     is at most 0.25 times the smaller of the two images' distances to their 5th
     nearest neighbour (blurred, filtered, noisy, re-compressed copies), and every
     image and one of its 10 nearest whose *registered* distance (after the best
     small rotation, scaling or further smoothing, or with both images
     despeckled, :mod:`dcsi.registration`) passes the same rule (turned, zoomed,
     squeezed, bordered, thumbnailed, specked copies).  Links of all
     stages are united, then grouped: connected components split by complete linkage
     (:func:`complete_groups`) so that every two members of a group are linked.
   * ``n_clusters=int``: k-means (or ``clustering="spectral"``) with that many
     clusters, as in the paper; every cluster with two or more images is a group.

3. **Groups**: ``kind="redundant"`` when all members share one label (keep one:
   the member closest to the group centre, the ``representative``), ``"conflict"``
   when the members carry several labels (influential or mislabelled: all are kept
   and should be reviewed).

``method="ssim"`` links pairs with SSIM ``>= threshold`` (:mod:`dcsi.similarity.ssim`),
``method="cnn"`` uses CNN features (:func:`dcsi.extract_features`), mean-centred over
the dataset and unit-normalised, with a cosine-distance threshold.

Thresholds are absolute and have a meaning that does not depend on the dataset:
see :data:`DEFAULT_THRESHOLDS`.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from dcsi._json import to_jsonable
from dcsi._progress import progress
from dcsi._validation import Interval, Options, check_instance, check_labels, validate_params
from dcsi.aligned import AlignOptions, aligned_distance, aligned_pairs, skip_reason
from dcsi.blank import BLANK_TOLERANCE, BlankImages, find_blank
from dcsi.block_map import BlockMap, local_map
from dcsi.exceptions import InvalidParameterError
from dcsi.neighbors import SearchOptions, prepare_rows, radius_pairs
from dcsi.relative_links import RelativeLinks, RelativeOptions, relative_links
from dcsi.similarity.wavelet import WaveletOptions, wavelet_rows

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Group",
    "RedundancyParams",
    "RedundancyResult",
    "as_grey_arrays",
    "complete_groups",
    "connected_groups",
    "evaluate_duplicates",
    "find_redundancy",
    "find_redundancy_features",
]

logger = logging.getLogger(__name__)

#: Default absolute thresholds per method.
#: ``wavelet``: distance ``1 - cos`` of the RRQR-selected wavelet coefficients
#: (approximation band centred per image) ``<= 0.01``; ``cnn``: cosine distance of dataset-centred
#: CNN features ``<= 0.05``; ``ssim``: SSIM ``>= 0.95`` (skimage settings);
#: ``verify_threshold`` for the SSIM check of wavelet/cnn candidates: SSIM ``>= 0.8``.
DEFAULT_THRESHOLDS = {"wavelet": 0.01, "cnn": 0.05, "ssim": 0.95}
DEFAULT_VERIFY_THRESHOLD = 0.8
SCOPE_NEEDS_LABELS = (
    "The 'scope' parameter of find_redundancy can be 'class' only for labelled data. Got "
    "scope='class' without labels; pass labels= or use scope='all'."
)
#: The near-duplicate methods.
METHODS = ("wavelet", "ssim", "cnn")


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Group:
    """One group of near-identical images.

    Attributes
    ----------
    members : tuple of str
        Item ids, representative first, then by distance to the centre.
    indices : tuple of int
        Row indices of the members in the analysed set (same order).
    labels : tuple of str
        Class name of each member (same order; empty when unlabelled).
    kind : {"redundant", "conflict"}
        ``"conflict"`` when the members carry more than one label.
    representative : str
        The member closest to the group centre (the copy to keep).
    distances : tuple of float
        Euclidean distance of each member's unit feature row to the mean row of the
        group (same order); for ``method="ssim"`` the mean ``1 - SSIM`` to the other
        members; for a blank group the distance of the member's mean colour to the
        group's, divided by 255.
    blank : bool, default=False
        A group of blank images of one colour (:mod:`dcsi.blank`), not a copy found by
        the search.
    """

    members: tuple[str, ...]
    indices: tuple[int, ...]
    labels: tuple[str, ...]
    kind: str
    representative: str
    distances: tuple[float, ...]
    blank: bool = False

    def __len__(self) -> int:
        return len(self.members)

    def to_dict(self) -> dict:
        """JSON-ready dict: members, labels, kind, representative, distances, size, and
        ``blank: true`` for a group of blank images."""
        out = {
            "members": list(self.members),
            "labels": list(self.labels),
            "kind": self.kind,
            "representative": self.representative,
            "distances": [round(float(d), 6) for d in self.distances],
            "size": len(self.members),
        }
        if self.blank:
            out["blank"] = True
        return out


@dataclass(frozen=True)
class RedundancyResult(Sequence):
    """Near-duplicate groups of a dataset; a read-only sequence of :class:`Group`.

    Attributes
    ----------
    groups : tuple of Group
        Largest groups first.
    method : str
    params : dict
        Every parameter that shaped the result (thresholds, wavelet, tau, ...).
    summary : dict
        Counts, the keep-list size, per-class redundancy rates and, for the wavelet
        method, the rank-revealing QR statistics.
    ids : tuple of str
        Ids of all analysed items (row order).
    keep : ndarray of shape (n,), bool
        The keep-list: False for the non-representative members of redundant groups.
    blank : dict or None
        Blank and near-uniform images (:meth:`dcsi.blank.BlankImages.summary`:
        ``tolerance``, ``same_colour``, ``rule``, ``n_blank``, ``ids``); None when the
        check was off (``blank_tolerance=None``) or had no images.
    """

    groups: tuple[Group, ...]
    method: str
    params: dict
    summary: dict
    ids: tuple[str, ...] = field(repr=False)
    keep: np.ndarray = field(repr=False)
    blank: dict | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i):
        return self.groups[i]

    def __iter__(self) -> Iterator[Group]:
        return iter(self.groups)

    def keep_ids(self) -> list[str]:
        """Ids of the reduced dataset (one copy per redundant group, conflicts kept)."""
        return [i for i, k in zip(self.ids, self.keep) if k]

    def to_dict(self, *, max_groups: int | None = None) -> dict:
        """The card's ``redundancy`` block: ``method``, ``params``, ``summary``, ``groups``
        and, when blank images were looked for, ``blank``."""
        groups = self.groups if max_groups is None else self.groups[:max_groups]
        out = {
            "method": self.method,
            "params": to_jsonable(self.params),
            "summary": to_jsonable(self.summary),
            "groups": [g.to_dict() for g in groups],
        }
        if self.blank is not None:
            out["blank"] = to_jsonable(self.blank)
        return out

    def groups_csv(self) -> str:
        """CSV text with one row per group member."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["group", "kind", "id", "label", "representative", "distance", "keep"])
        keep = dict(zip(self.ids, self.keep))
        for g_id, g in enumerate(self.groups):
            labels = g.labels or ("",) * len(g.members)
            for m, lab, d in zip(g.members, labels, g.distances):
                w.writerow(
                    [
                        g_id,
                        g.kind,
                        m,
                        lab,
                        int(m == g.representative),
                        f"{d:.6g}",
                        int(bool(keep[m])),
                    ]
                )
        return buf.getvalue()

    def keep_csv(self) -> str:
        """CSV text of the keep-list: every analysed id and whether to keep it."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "keep"])
        for i, k in zip(self.ids, self.keep):
            w.writerow([i, int(bool(k))])
        return buf.getvalue()


# --------------------------------------------------------------------------- components
def connected_groups(n: int, pairs: np.ndarray) -> list[np.ndarray]:
    """Connected components with two or more members of the graph on ``n`` nodes.

    Parameters
    ----------
    n : int
    pairs : ndarray of shape (m, 2), int

    Returns
    -------
    list of ndarray of int
        Member indices of each component (sorted), largest first.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if n == 0 or len(pairs) == 0:
        return []
    g = coo_matrix(
        (np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n)
    ).tocsr()
    _, comp = connected_components(g, directed=False)
    return _labels_to_groups(comp)


def _labels_to_groups(comp: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(comp, kind="stable")
    sizes = np.bincount(comp)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    out = [order[bounds[c] : bounds[c + 1]] for c in np.flatnonzero(sizes >= 2)]
    out = [np.sort(g) for g in out]
    out.sort(key=lambda g: (-len(g), int(g[0])))
    return out


#: Components larger than this keep single linkage (the refinement is quadratic in size).
MAX_REFINED_GROUP = 2000


def complete_groups(
    components: list[np.ndarray],
    link_score: Any,
    *,
    max_size: int = MAX_REFINED_GROUP,
) -> tuple[list[np.ndarray], int]:
    """Split connected components so that every pair inside a group is linked.

    Connected components chain: ``a ~ b`` and ``b ~ c`` put ``a`` and ``c`` together
    even when they look nothing alike.  Each component is re-clustered by complete
    linkage (:func:`scipy.cluster.hierarchy.linkage`) on the link score of all its
    pairs and cut at 1, so that every pair of a group scores ``<= 1`` (is linked).

    Parameters
    ----------
    components : list of ndarray of int
        Member indices of each component.
    link_score : callable
        ``link_score(members, pairs)`` -> ndarray of shape (m,): the score of the
        pairs ``(members[pairs[:, 0]], members[pairs[:, 1]])``, ``<= 1`` for a link.
    max_size : int, default=2000
        Larger components are kept whole (counted in the second return value).

    Returns
    -------
    groups : list of ndarray of int
        Sorted members, largest group first.
    n_unrefined : int
        Components kept whole because of their size.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    out, n_unrefined = [], 0
    for g in progress(components, desc="complete linkage of the groups", unit="group"):
        if len(g) <= 2 or len(g) > max_size:
            n_unrefined += len(g) > max_size
            out.append(g)
            continue
        iu = np.stack(np.triu_indices(len(g), 1), 1)
        score = np.minimum(np.asarray(link_score(g, iu), dtype=np.float64), 1e6)
        labels = fcluster(linkage(score, method="complete"), t=1.0, criterion="distance")
        out.extend(g[labels == c] for c in np.unique(labels) if np.sum(labels == c) >= 2)
    out = [np.sort(g) for g in out]
    out.sort(key=lambda g: (-len(g), int(g[0])))
    return out, n_unrefined


def _cluster(F: np.ndarray, n_clusters: int, clustering: str, seed: int) -> np.ndarray:
    n = F.shape[0]
    if n_clusters > n:
        raise InvalidParameterError(
            f"The 'n_clusters' parameter of find_redundancy must be <= the number of "
            f"images ({n}). Got {n_clusters} instead; use n_clusters='auto' for a "
            "near-duplicate search."
        )
    if clustering == "kmeans":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed)
        return km.fit_predict(F.astype(np.float64))
    from sklearn.cluster import SpectralClustering

    sc = SpectralClustering(
        n_clusters=n_clusters,
        affinity="nearest_neighbors",
        n_neighbors=min(10, n - 1),
        random_state=seed,
        assign_labels="cluster_qr",
    )
    return sc.fit_predict(F.astype(np.float64))


# --------------------------------------------------------------------------- groups
def _make_groups(
    members: list[np.ndarray],
    F: np.ndarray | None,
    ids: Sequence[str],
    labels: np.ndarray | None,
    classes: Sequence[str],
    pair_dist: dict | None = None,
) -> list[Group]:
    out = []
    for idx in members:
        if F is not None:
            rows = F[idx].astype(np.float64)
            centre = rows.mean(axis=0)
            d = np.linalg.norm(rows - centre, axis=1)
        else:  # no vectors (SSIM): centre = the medoid by mean pair distance
            assert pair_dist is not None  # given with F=None (_ssim_redundancy)
            d = np.array(
                [
                    np.mean([pair_dist.get((min(a, b), max(a, b)), 1.0) for b in idx if b != a])
                    for a in idx
                ]
            )
        order = np.lexsort((idx, np.round(d, 12)))
        idx, d = idx[order], d[order]
        labs: tuple[str, ...] = ()
        kind = "redundant"
        if labels is not None:
            labs = tuple(
                str(classes[int(labels[i])])
                if int(labels[i]) < len(classes)
                else str(int(labels[i]))
                for i in idx
            )
            kind = "conflict" if len(set(labels[idx].tolist())) > 1 else "redundant"
        out.append(
            Group(
                members=tuple(str(ids[i]) for i in idx),
                indices=tuple(int(i) for i in idx),
                labels=labs,
                kind=kind,
                representative=str(ids[idx[0]]),
                distances=tuple(float(x) for x in d),
            )
        )
    out.sort(key=lambda g: (-len(g.members), g.indices[0]))
    return out


def _without_blank(
    parts: list[np.ndarray], blank: BlankImages | None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The parts of the search without their blank images, and the blank images of
    each part grouped by colour (:meth:`dcsi.blank.BlankImages.colour_groups`)."""
    if blank is None or not blank.mask.any():
        return parts, []
    groups = [g for part in parts for g in blank.colour_groups(part)]
    return [part[~blank.mask[part]] for part in parts], groups


def _blank_groups(
    members: list[np.ndarray],
    blank: BlankImages | None,
    ids: Sequence[str],
    labels: np.ndarray | None,
    classes: Sequence[str],
) -> list[Group]:
    """Groups of blank images of one colour; distances: the member's mean colour to
    the group's (Euclidean, over 255)."""
    if blank is None or not members:
        return []
    found = _make_groups(members, blank.colours / 255.0, ids, labels, classes)
    return [replace(g, blank=True) for g in found]


def _sorted_groups(*lists: list[Group]) -> list[Group]:
    out = [g for groups in lists for g in groups]
    out.sort(key=lambda g: (-len(g.members), g.indices[0]))
    return out


def _summarise(
    groups: list[Group],
    n: int,
    labels: np.ndarray | None,
    classes: Sequence[str],
    blank: BlankImages | None = None,
) -> tuple[np.ndarray, dict]:
    keep = np.ones(n, dtype=bool)
    for g in groups:
        if g.kind == "redundant":
            keep[list(g.indices[1:])] = False
    in_groups = sum(len(g) for g in groups)
    summary: dict[str, Any] = {
        "n_images": int(n),
        "n_groups": len(groups),
        "n_redundant_groups": sum(g.kind == "redundant" for g in groups),
        "n_conflict_groups": sum(g.kind == "conflict" for g in groups),
        "n_images_in_groups": int(in_groups),
        "n_images_in_conflicts": int(sum(len(g) for g in groups if g.kind == "conflict")),
        "n_removed": int(n - keep.sum()),
        "n_kept": int(keep.sum()),
        "redundancy_rate": float((n - keep.sum()) / n) if n else 0.0,
        "n_blank": None if blank is None else int(blank.mask.sum()),
        "n_blank_groups": sum(g.blank for g in groups),
        "keep_rule": "redundant group: keep the representative (closest to the group "
        "centre); conflict group: keep all members for review",
    }
    if labels is not None:
        k = len(classes)
        counts = np.bincount(labels, minlength=k)
        removed = np.bincount(labels[~keep], minlength=k)
        conflicted = np.zeros(k, dtype=np.int64)
        for g in groups:
            if g.kind == "conflict":
                np.add.at(conflicted, labels[list(g.indices)], 1)
        summary["per_class"] = {
            str(classes[c]) if c < len(classes) else str(c): {
                "n_images": int(counts[c]),
                "n_removed": int(removed[c]),
                "redundancy_rate": float(removed[c] / counts[c]) if counts[c] else None,
                "n_in_conflicts": int(conflicted[c]),
            }
            for c in range(len(counts))
        }
    return keep, summary


# --------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class RedundancyParams:
    """Every choice of a near-duplicate search, validated once; ``to_dict()`` is the
    card's ``redundancy.params``.

    Attributes
    ----------
    method : {"wavelet", "ssim", "cnn"}, default="wavelet"
    threshold : float, default=None
        Absolute link threshold; ``None``: the method's entry of
        :data:`DEFAULT_THRESHOLDS` (resolved on creation).
    n_clusters : int or None, default=None
        ``None``: the near-duplicate search (*links*: every pair within the threshold
        is linked, then grouped); an int ``>= 2``: ``clustering`` with that many
        clusters, as in the paper (not for ``method="ssim"``).
    clustering : {"kmeans", "spectral"}, default="kmeans"
    scope : {"all", "class"}, default="all"
    group_linkage : {"complete", "single"}, default="complete"
    verify : {None, "ssim"}, default=None
    verify_threshold : float, default=0.8
    align : AlignOptions or None, default=AlignOptions()
        The shift/crop-tolerant second stage (wavelet links only; ``None``: off).
    relative : RelativeOptions or None, default=RelativeOptions()
        The density-relative stage (:mod:`dcsi.relative_links`; wavelet links only;
        ``None``: off).
    wavelet : WaveletOptions, default=WaveletOptions()
    search : SearchOptions, default=SearchOptions()
    seed : int, default=0
    blank_tolerance : float or None, default=2.0
        Blank images (per-channel standard deviation ``<=`` this, in grey levels, at the
        working size; :mod:`dcsi.blank`) are taken out of the search and grouped by
        colour; ``None``: no blank check (they go through the search like any image).
    """

    method: str = "wavelet"
    threshold: float | None = None
    n_clusters: int | None = None
    clustering: str = "kmeans"
    scope: str = "all"
    group_linkage: str = "complete"
    verify: str | None = None
    verify_threshold: float = DEFAULT_VERIFY_THRESHOLD
    align: AlignOptions | None = field(default_factory=AlignOptions)
    relative: RelativeOptions | None = field(default_factory=RelativeOptions)
    wavelet: WaveletOptions = field(default_factory=WaveletOptions)
    search: SearchOptions = field(default_factory=SearchOptions)
    seed: int = 0
    blank_tolerance: float | None = BLANK_TOLERANCE

    #: Declared constraints of the scalar fields (checked on creation; the invalid-value
    #: tests are generated from them).
    CONSTRAINTS: ClassVar[dict[str, list[Any]]] = {
        "method": [Options(METHODS)],
        "threshold": [Interval(float, -1.0, 2.0, closed="both"), None],
        "n_clusters": [Interval(int, 2, None, closed="left"), None],
        "clustering": [Options(("kmeans", "spectral"))],
        "scope": [Options(("all", "class"))],
        "group_linkage": [Options(("complete", "single"))],
        "verify": [Options(("ssim",)), None],
        "verify_threshold": [Interval(float, -1.0, 1.0, closed="both")],
        "seed": [Interval(int, 0, None, closed="left")],
        "blank_tolerance": [Interval(float, 0.0, 255.0, closed="both"), None],
    }

    def __post_init__(self) -> None:
        caller = "find_redundancy"
        checked = validate_params(
            {k: getattr(self, k) for k in self.CONSTRAINTS}, self.CONSTRAINTS, caller
        )
        if checked["threshold"] is None:
            checked["threshold"] = DEFAULT_THRESHOLDS[checked["method"]]
        elif checked["method"] != "ssim" and checked["threshold"] < 0:
            raise InvalidParameterError(
                f"The 'threshold' parameter of {caller} must be a float in the range "
                f"[0.0, 2.0] for method={checked['method']!r} (a distance). Got "
                f"{checked['threshold']!r} instead."
            )
        elif checked["method"] == "ssim" and checked["threshold"] > 1:
            raise InvalidParameterError(
                f"The 'threshold' parameter of {caller} must be a float in the range "
                f"[-1.0, 1.0] for method='ssim' (an SSIM). Got {checked['threshold']!r} "
                "instead."
            )
        if checked["method"] == "ssim" and checked["n_clusters"] is not None:
            raise InvalidParameterError(
                f"The 'n_clusters' parameter of {caller} must be None for method='ssim' "
                f"(SSIM links pairs only). Got {checked['n_clusters']!r} instead."
            )
        for name, kind in (
            ("align", AlignOptions),
            ("relative", RelativeOptions),
            ("wavelet", WaveletOptions),
            ("search", SearchOptions),
        ):
            check_instance(
                getattr(self, name), kind, name, caller, allow_none=name in ("align", "relative")
            )
        if checked["method"] != "wavelet" or checked["n_clusters"] is not None:
            checked["align"] = None  # the aligned and relative stages add wavelet links only
            checked["relative"] = None
        for k, v in checked.items():
            object.__setattr__(self, k, v)

    @property
    def grouping(self) -> str:
        """``"links"`` (threshold + groups of linked pairs) or the clustering."""
        return "links" if self.n_clusters is None else self.clustering

    def to_dict(self) -> dict:
        """The card's ``redundancy.params`` (the options that apply to the method)."""
        out: dict[str, Any] = {
            "method": self.method,
            "threshold": self.threshold,
            "grouping": self.grouping,
            "n_clusters": self.n_clusters,
            "scope": self.scope,
            "seed": self.seed,
            "blank_tolerance": self.blank_tolerance,
        }
        if self.method == "wavelet":
            out.update(self.wavelet.to_dict())
        if self.method == "ssim":
            return out
        if self.n_clusters is not None:
            out["clustering"] = self.clustering
            return out
        out.update(
            {
                "n_components": self.search.n_components,
                "group_linkage": self.group_linkage,
                "verify": self.verify,
                "align": self.align is not None,
            }
        )
        if self.verify:
            out["verify_threshold"] = self.verify_threshold
        if self.align is not None:
            out.update(self.align.to_dict())
        if self.method == "wavelet":
            out["relative"] = None if self.relative is None else self.relative.to_dict()
        return out


# --------------------------------------------------------------------------- entry points
#: Floats of gathered feature rows the link score of :func:`complete_groups` holds at once.
_SCORE_CHUNK_FLOATS = 2**23


def _link_score(
    F: np.ndarray,
    params: RedundancyParams,
    images: np.ndarray | None,
    relative: RelativeLinks | None = None,
) -> Any:
    """``link_score(members, pairs)`` for :func:`complete_groups`: the smallest of the
    feature distance over ``threshold`` (``inf`` when SSIM verification rejects the
    pair), with ``align`` the aligned distance over its threshold and with the
    relative stage its score (:func:`dcsi.relative_links.relative_score`)."""

    threshold = params.threshold
    assert threshold is not None  # resolved on creation of the params

    def score(members: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        # in chunks: a component of 2,000 images has 2 million pairs, whose gathered
        # rows would need gigabytes at once
        step = max(1, _SCORE_CHUNK_FLOATS // max(1, F.shape[1]))
        return np.concatenate(
            [one_chunk(members, pairs[s : s + step]) for s in range(0, len(pairs), step)]
            or [np.empty(0)]
        )

    def one_chunk(members: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        a, b = members[pairs[:, 0]], members[pairs[:, 1]]
        d = 1.0 - np.einsum("ij,ij->i", F[a], F[b], dtype=np.float64)
        s = np.maximum(d, 0.0) / max(threshold, 1e-12)
        if params.verify == "ssim":
            from dcsi.similarity.ssim import ssim_pairs

            ok = np.asarray(ssim_pairs(images, np.stack([a, b], 1))) >= params.verify_threshold
            s = np.where(ok, s, np.inf)
        if params.align is not None:
            assert images is not None  # align needs images (checked by the caller)
            da = aligned_distance(
                images[members],  # only the component's images are made grey
                pairs,
                max_shift=params.align.max_shift,
                max_crop=params.align.max_crop,
            )
            s = np.minimum(s, da / max(params.align.threshold, 1e-12))
        if relative is not None:
            s = np.minimum(s, relative.score(a, b))
        return s

    return score


def _linked_pairs(
    F: np.ndarray, params: RedundancyParams, images: np.ndarray | None, map_blocks: BlockMap
) -> tuple[np.ndarray, int, RelativeLinks | None]:
    """Linked pairs of one part: the radius search (its query blocks through
    ``map_blocks``), SSIM verification, aligned links, relative links; also the
    number of aligned links and the relative stage (None when it did not run)."""
    assert params.threshold is not None  # resolved on creation of the params
    pairs, _ = radius_pairs(
        F,
        threshold=params.threshold,
        n_components=params.search.n_components,
        block_size=params.search.block_size,
        seed=params.seed,
        search=params.search.resolve(len(F)),
        nprobe=params.search.nprobe,
        map_blocks=map_blocks,
    )
    if params.verify == "ssim" and len(pairs):
        from dcsi.similarity.ssim import ssim_pairs

        pairs = pairs[np.asarray(ssim_pairs(images, pairs)) >= params.verify_threshold]
    n_aligned = 0
    if params.align is not None:
        assert images is not None  # align needs images (checked by the caller)
        ap, _ = aligned_pairs(images, options=params.align, seed=params.seed, map_blocks=map_blocks)
        n_aligned = len(ap)
        if len(ap):
            pairs = np.unique(np.concatenate([pairs.reshape(-1, 2), ap]), axis=0)
    relative = None
    if params.relative is not None:
        assert images is not None  # the relative stage needs images (checked by the caller)
        relative = relative_links(
            images, params.relative, search=params.search.resolve(len(F)), seed=params.seed
        )
        if relative is not None and len(relative.pairs):
            pairs = np.unique(np.concatenate([pairs.reshape(-1, 2), relative.pairs]), axis=0)
    return pairs, n_aligned, relative


def _checked_inputs(
    n: int,
    labels: Any,
    ids: Sequence[str] | None,
    classes: Sequence[str] | None,
    params: RedundancyParams,
    images: np.ndarray | None,
) -> tuple[np.ndarray | None, list[str], Sequence[str]]:
    """find_redundancy_features' labels, ids and classes, checked against ``n`` rows
    and the params (one line naming what to change)."""
    caller = "find_redundancy"
    y = None if labels is None else check_labels(labels, n, caller)
    ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    if len(ids) != n:
        raise InvalidParameterError(
            f"The 'ids' parameter of {caller} must have one id per image ({n}). "
            f"Got {len(ids)} instead."
        )
    if classes is None:
        classes = [str(c) for c in range((int(y.max()) + 1) if y is not None and n else 0)]
    if params.scope == "class" and y is None:
        raise InvalidParameterError(SCOPE_NEEDS_LABELS)
    if images is None and (
        params.align is not None or params.relative is not None or params.verify
    ):
        raise InvalidParameterError(
            "The 'align', 'relative' and 'verify' parameters of find_redundancy_features "
            "need the images. Got them without images=; pass images= or turn them off."
        )
    if params.n_clusters is not None and params.n_clusters > n:
        raise InvalidParameterError(
            f"The 'n_clusters' parameter of find_redundancy must be <= the number of "
            f"images ({n}). Got {params.n_clusters} instead; leave n_clusters=None for a "
            "near-duplicate search."
        )
    return y, ids, classes


def find_redundancy_features(
    features: np.ndarray,
    labels: Any = None,
    *,
    params: RedundancyParams,
    ids: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    center: str = "row",
    images: np.ndarray | None = None,
    extra_summary: dict | None = None,
    overwrite_features: bool = False,
    map_blocks: BlockMap = local_map,
) -> RedundancyResult:
    """Group near-identical rows of a feature matrix (the core of :func:`find_redundancy`).

    Parameters
    ----------
    features : ndarray of shape (n, d)
    labels : array-like of shape (n,), int, default=None
    params : RedundancyParams
        ``method`` is recorded; ``threshold`` applies to ``1 - cos`` after ``center``.
    ids : sequence of str, default=None
        Item ids (default: ``"0"``, ``"1"``, ...).
    classes : sequence of str, default=None
        Class names in label order.
    center : {"row", "column", "none"}, default="row"
        See :func:`dcsi.neighbors.prepare_rows`.
    images : ndarray of shape (n, h, w[, c]), uint8, default=None
        Needed by ``params.verify`` and ``params.align``.
    extra_summary : dict, default=None
        Merged into the summary.
    overwrite_features : bool, default=False
        Prepare the rows in place when ``features`` is a C-contiguous float32 array
        (no second copy: 3 GiB for 10^6 wavelet rows); its values are then lost.
    map_blocks : BlockMap, default=local_map
        Where the exact candidate search's query blocks run (:mod:`dcsi.block_map`;
        :func:`dcsi.ray_engine.ray_map` for Ray tasks); the pairs are the same.

    Returns
    -------
    RedundancyResult
    """
    F0 = np.asarray(features)
    n = F0.shape[0]
    y, ids, classes = _checked_inputs(n, labels, ids, classes, params, images)
    if params.align is not None and images is not None:
        params = replace(params, align=params.align.resolved(np.shape(images)[1:3]))
    params.search.check_available(n, "find_redundancy")
    in_place = overwrite_features and F0.dtype == np.float32 and F0.flags.c_contiguous
    F = prepare_rows(F0, center=center, out=F0 if in_place and F0.flags.writeable else None)
    if params.scope == "all":
        parts = [np.arange(n)]
    else:
        assert y is not None  # scope="class" needs labels (checked above)
        parts = [np.flatnonzero(y == c) for c in np.unique(y)]
    blank = _find_blank(images, params)
    parts, blank_members = _without_blank(parts, blank)
    members: list[np.ndarray] = []
    n_pairs = n_aligned = n_relative = n_unrefined = 0
    for part in parts:
        if params.n_clusters is not None:
            if len(part) >= params.n_clusters:  # a smaller class has no shared cluster
                comp = _cluster(F[part], params.n_clusters, params.clustering, params.seed)
                members.extend(part[g] for g in _labels_to_groups(comp))
            continue
        if len(part) < 2:  # nothing to link (e.g. all but one image are blank)
            continue
        whole = len(part) == n  # the whole set (no blank image): no copy of F or images
        Fp = F if whole else F[part]
        part_images = images if whole or images is None else images[part]
        pairs, aligned, relative = _linked_pairs(Fp, params, part_images, map_blocks)
        n_pairs += len(pairs)
        n_aligned += aligned
        if relative is not None:
            n_relative += len(relative.pairs)
        comps = connected_groups(len(part), pairs)
        if params.group_linkage == "complete":
            comps, unrefined = complete_groups(
                comps, _link_score(Fp, params, part_images, relative)
            )
            n_unrefined += unrefined
        members.extend(part[g] for g in comps)
    groups = _sorted_groups(
        _make_groups(members, F, ids, y, classes),
        _blank_groups(blank_members, blank, ids, y, classes),
    )
    keep, summary = _summarise(groups, n, y, classes, blank)
    summary["n_linked_pairs"] = int(n_pairs)
    if params.align is not None:
        summary["n_aligned_pairs"] = int(n_aligned)
    if params.relative is not None:
        summary["n_relative_pairs"] = int(n_relative)
    if params.n_clusters is None and params.group_linkage == "complete":
        summary["n_unrefined_groups"] = int(n_unrefined)
    summary.update(extra_summary or {})
    out = params.to_dict()
    if params.n_clusters is None and any(
        params.search.resolve(len(p)) == "ann" for p in parts if len(p) >= 2
    ):  # recorded only when used: a card without it was searched exactly
        out.update({"search": "ann", "nprobe": params.search.nprobe})
    return RedundancyResult(
        groups=tuple(groups),
        method=params.method,
        params=out,
        summary=summary,
        ids=tuple(ids),
        keep=keep,
        blank=None if blank is None else blank.summary(ids),
    )


def _find_blank(images: np.ndarray | None, params: RedundancyParams) -> BlankImages | None:
    """The blank images of a search (None without images or with the check off)."""
    if images is None or params.blank_tolerance is None or len(images) == 0:
        return None
    return find_blank(images, tolerance=params.blank_tolerance)


def find_redundancy(
    source_or_images: Any,
    labels: Any = None,
    method: str = "wavelet",
    *,
    threshold: float | None = None,
    n_clusters: int | None = None,
    clustering: str = "kmeans",
    scope: str = "all",
    group_linkage: str = "complete",
    verify: str | None = None,
    verify_threshold: float = DEFAULT_VERIFY_THRESHOLD,
    align: bool | AlignOptions = True,
    relative: bool | RelativeOptions = True,
    wavelet: WaveletOptions | None = None,
    search: str | SearchOptions | None = None,
    size: int | tuple[int, int] | None = None,
    features: np.ndarray | None = None,
    backbone: Any = "efficientnet_lite0",
    ids: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    seed: int = 0,
    blank_tolerance: float | None = BLANK_TOLERANCE,
    map_blocks: BlockMap = local_map,
    coefficients: np.ndarray | None = None,
) -> RedundancyResult:
    """Find near-duplicate groups: redundant copies and label conflicts.

    Parameters
    ----------
    source_or_images : ImageSet, ndarray of shape (n, h, w[, c]) uint8, or a source
        An opened :class:`~dcsi.sources.ImageSet` (what the pipeline and the CLI pass),
        in-memory images, or anything :func:`dcsi.open_source` takes (opened here).
    labels : array-like of shape (n,), default=None
        Labels of in-memory images (unlabelled data gives only ``redundant`` groups).
    method : {"wavelet", "ssim", "cnn"}, default="wavelet"
    threshold : float, default=None
        Absolute link threshold; ``None`` uses :data:`DEFAULT_THRESHOLDS`
        (wavelet: ``1 - cos <= 0.01``; cnn: cosine distance ``<= 0.05``; ssim:
        SSIM ``>= 0.95``).
    n_clusters : int, default=None
        ``None``: the near-duplicate search (every pair within the threshold is linked;
        groups of linked pairs); an int: ``clustering`` with that many clusters, as in
        the paper (not for ``method="ssim"``).
    clustering : {"kmeans", "spectral"}, default="kmeans"
        Used when ``n_clusters`` is an int.
    scope : {"all", "class"}, default="all"
        Search the whole set (the only way to find conflicts) or each class alone.
    group_linkage : {"complete", "single"}, default="complete"
        Links: ``"complete"`` splits chains so that every two members of a group are
        linked (:func:`complete_groups`; components of more than 2,000 images are kept
        whole and counted in ``n_unrefined_groups``); ``"single"``: the connected
        components of the links.
    verify : {None, "ssim"}, default=None
        Second, finer check of every linked pair (wavelet/cnn links).
    verify_threshold : float, default=0.8
        SSIM a verified pair must reach.
    align : bool or AlignOptions, default=True
        ``method="wavelet"`` links: also link shifted and cropped copies (second stage,
        :func:`dcsi.aligned.aligned_pairs`); ``True``: the defaults of
        :class:`~dcsi.aligned.AlignOptions` (aligned distance ``<= 0.0005``, shifts of
        up to 7 % and crops of up to 15 % of the shorter side: 2 and 4 px for 28-px
        images).  Skipped with a warning for images too small.
    relative : bool or RelativeOptions, default=True
        ``method="wavelet"`` links: also link every pair much closer to each other than
        to the rest of their neighbourhood (third stage, :mod:`dcsi.relative_links`:
        coarse distance ``<= 0.25`` times the smaller distance of the two images to
        their 5th nearest neighbour, and ``<= 0.2``); it finds blurred, filtered,
        noisy and re-compressed copies that no absolute threshold separates from
        look-alikes.  ``True``: the defaults of
        :class:`~dcsi.relative_links.RelativeOptions`; skipped below 20 images.
    wavelet : WaveletOptions, default=None
        Wavelet, level, mode, RRQR ``tau`` and ``rank_tol`` (``None``: the defaults).
    search : {"auto", "exact", "ann"} or SearchOptions, default=None
        The candidate search of the links (``None``: ``"auto"``, exact up to
        :data:`dcsi.neighbors.ANN_THRESHOLD` = 100,000 images, faiss IVF-flat above;
        every candidate is checked exactly, so ``"ann"`` may miss pairs but never adds
        one); a :class:`~dcsi.neighbors.SearchOptions` also sets the sizes, the
        switch point and ``nprobe``.  ``params`` records ``search: "ann"`` and
        ``nprobe`` when the faiss search ran.
    size : int or (h, w), default=None
        Working size the images are compared at (``None``: the native or median size,
        its longer side capped at :data:`dcsi.sources.MAX_WORKING_SIDE` = 32, aspect
        kept; every image is stretched to it); sources are read as grey levels, RGBA
        composited over white.
    features : ndarray of shape (n, d), default=None
        ``method="cnn"``: CNN features already extracted for these images (the
        pipeline passes its own); ``None``: extracted with ``backbone``.
    backbone : str or Extractor, default="efficientnet_lite0"
        Backbone of ``method="cnn"`` when ``features`` is None.
    ids, classes : sequence of str, default=None
        For in-memory arrays (default: row numbers; label ids).
    seed : int, default=0
    blank_tolerance : float or None, default=2.0
        Blank and near-uniform images (per-channel standard deviation ``<=`` this, in
        grey levels, at the working size; :mod:`dcsi.blank`) are taken out of the copy
        search; those of one colour form one group (``Group.blank``); all are listed in
        ``RedundancyResult.blank``.  ``None``: no blank check.
    map_blocks : BlockMap, default=local_map
        Where the query blocks of the exact candidate search run: a loop here, or
        Ray tasks (:func:`dcsi.ray_engine.ray_map`, what ``engine="ray"`` of
        :func:`dcsi.analyze` passes), with those of the aligned stage; the pairs, hence
        the groups, are the same.  The faiss search (``search="ann"``) runs here.
    coefficients : ndarray of shape (n, d), float32, default=None
        ``method="wavelet"``: the wavelet coefficient rows of the (working-size)
        images, already computed with ``wavelet``'s options (the Ray engine's actors
        compute them per image); see :func:`dcsi.similarity.wavelet.wavelet_rows`.

    Returns
    -------
    RedundancyResult
        A sequence of :class:`Group`, largest first; ``to_dict()`` is the card's
        ``redundancy`` block.
    """
    params = RedundancyParams(
        method=method,
        threshold=threshold,
        n_clusters=n_clusters,
        clustering=clustering,
        scope=scope,
        group_linkage=group_linkage,
        verify=verify,
        verify_threshold=verify_threshold,
        align=AlignOptions.from_arg(align, "find_redundancy"),
        relative=RelativeOptions.from_arg(relative, "find_redundancy"),
        wavelet=WaveletOptions() if wavelet is None else wavelet,
        search=SearchOptions.from_arg(search, "find_redundancy"),
        seed=seed,
        blank_tolerance=blank_tolerance,
    )
    arr, y, ids, classes, image_set = as_grey_arrays(
        source_or_images, labels, ids=ids, classes=classes, size=size
    )
    params, align_skipped = _small_images_skip_align(params, arr.shape[1:3])
    if params.method == "ssim":
        return _ssim_redundancy(arr, y, ids, classes, params)
    params.search.check_available(len(arr), "find_redundancy")
    F, center, extra, distance = _method_rows(
        arr, params, features, image_set, backbone, coefficients
    )
    res = find_redundancy_features(
        F,
        y,
        params=params,
        ids=ids,
        classes=classes,
        center=center,
        images=arr,
        extra_summary=extra,
        overwrite_features=params.method == "wavelet",  # rows made here: no second copy
        map_blocks=map_blocks,
    )
    res.params["distance"] = distance
    res.params["working_size"] = list(arr.shape[1:3])
    if params.method == "cnn":
        res.params["backbone"] = (
            backbone if isinstance(backbone, str) else getattr(backbone, "name", "custom")
        )
    if align_skipped:
        res.params["align_skipped"] = align_skipped
    return res


def _small_images_skip_align(
    params: RedundancyParams, shape: tuple[int, ...]
) -> tuple[RedundancyParams, str | None]:
    """The params with the aligned stage off, and the reason (warned), when images of
    ``shape`` are too small for it; else as they are (its geometry is resolved by
    :func:`find_redundancy_features`)."""
    if params.align is None:
        return params, None
    skipped = skip_reason(shape, params.align.max_shift, params.align.max_crop)
    if skipped:
        logger.warning("find_redundancy: %s", skipped)
        return replace(params, align=None), skipped
    return params, None


def _method_rows(
    arr: np.ndarray,
    params: RedundancyParams,
    features: Any,
    image_set: Any,
    backbone: Any,
    coefficients: np.ndarray | None,
) -> tuple[np.ndarray, str, dict[str, Any], str]:
    """The rows a wavelet or cnn search compares: ``(rows, center, summary extras,
    distance in words)``; CNN features are extracted here when not given, wavelet
    coefficients computed when not given."""
    if params.method == "wavelet":
        wr = wavelet_rows(arr, options=params.wavelet, coefficients=coefficients)
        return (
            wr.rows,
            "none",
            {"rrqr": wr.summary()},
            (
                "1 - cosine of the selected wavelet coefficients, approximation band centred per image"
            ),
        )
    if features is None:
        from dcsi.features import extract_features

        features = extract_features(image_set, backbone=backbone).features
    F = np.asarray(features)
    if F.shape[0] != arr.shape[0]:
        raise InvalidParameterError(
            "The 'features' parameter of find_redundancy must have one row per image "
            f"({arr.shape[0]}). Got shape {F.shape} instead."
        )
    return F, "column", {}, "cosine distance of dataset-centred CNN features"


def as_grey_arrays(
    source: Any,
    labels: Any = None,
    *,
    ids: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    size: int | tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, list[str], list[str], Any]:
    """The images of any input as grey uint8 arrays, with labels, ids and classes.

    In-memory arrays at the working size are used as they are (colour kept; an RGBA
    array is composited over white first, a larger one is resized to the working size);
    an :class:`~dcsi.sources.ImageSet` is decoded once at its working size
    (:meth:`~dcsi.sources.ImageSet.working_size`, ``to_array(size, mode="L")``); any
    other source is opened first (the public near-duplicate functions take sources).

    Parameters
    ----------
    source : ImageSet, ndarray of shape (n, h, w[, c]) uint8, or a source
    labels : array-like of shape (n,), default=None
        Labels of in-memory arrays.
    ids : sequence of str, default=None
        Override the ids (default: the image set's).
    classes : sequence of str, default=None
        Class names of in-memory labels, in label order (classes without an image are
        dropped, as :func:`dcsi.open_source` does).
    size : int or (h, w), default=None
        Working size the images are brought to (``None``: the native or median size,
        its longer side capped at :data:`dcsi.sources.MAX_WORKING_SIDE`).

    Returns
    -------
    images : ndarray of shape (n, h, w) or (n, h, w, c), uint8
    labels : ndarray of shape (n,), int64, or None
    ids : list of str
    classes : list of str
    image_set : ImageSet
    """
    from dcsi.sources import ImageSet, open_source

    if isinstance(source, np.ndarray) and (source.dtype != np.uint8 or source.ndim not in (3, 4)):
        raise InvalidParameterError(
            "The 'source_or_images' parameter of find_redundancy must be a uint8 "
            f"array (n, h, w[, c]). Got dtype {source.dtype} and shape {source.shape} "
            "instead."
        )
    kw: dict[str, Any] = (
        {"classes": list(classes)}
        if isinstance(source, np.ndarray) and classes is not None and labels is not None
        else {}
    )
    image_set = source if isinstance(source, ImageSet) else open_source(source, labels=labels, **kw)
    hw = image_set.working_size(size)
    if isinstance(source, np.ndarray) and source.shape[1:3] == hw and source.ndim == 3:
        arr = source
    elif isinstance(source, np.ndarray) and source.shape[1:3] == hw and source.shape[-1] < 4:
        arr = source if source.shape[-1] == 3 else source[..., 0]
    else:  # decoded, or resized to the working size, RGBA composited over white
        colour = isinstance(source, np.ndarray) and source.ndim == 4 and source.shape[-1] >= 3
        arr = image_set.to_array(size=hw, mode="RGB" if colour else "L")
    y = None if image_set.labels is None else np.asarray(image_set.labels, dtype=np.int64)
    ids = list(image_set.ids) if ids is None else ids
    classes = list(image_set.classes)  # after any empty class was dropped
    return arr, y, [str(i) for i in ids], list(classes), image_set


def _ssim_redundancy(
    arr: np.ndarray,
    y: np.ndarray | None,
    ids: list[str],
    classes: list[str],
    params: RedundancyParams,
) -> RedundancyResult:
    """Groups of pairs with SSIM ``>= threshold`` (``method="ssim"``)."""
    from dcsi.similarity.ssim import ssim_threshold_pairs

    n = arr.shape[0]
    if params.scope == "all":
        parts = [np.arange(n)]
    else:
        if y is None:
            raise InvalidParameterError(SCOPE_NEEDS_LABELS)
        parts = [np.flatnonzero(y == c) for c in np.unique(y)]
    threshold = params.threshold
    assert threshold is not None  # resolved on creation of the params
    blank = _find_blank(arr, params)
    parts, blank_members = _without_blank(parts, blank)
    members: list[np.ndarray] = []
    pair_dist: dict = {}
    for part in parts:
        if len(part) < 2:
            continue
        pairs, vals = ssim_threshold_pairs(arr[part], threshold)
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        for (a, b), v in zip(part[pairs], np.asarray(vals)):
            pair_dist[(min(a, b), max(a, b))] = 1.0 - float(v)
        members.extend(part[g] for g in connected_groups(len(part), pairs))
    groups = _sorted_groups(
        _make_groups(members, None, ids, y, classes, pair_dist),
        _blank_groups(blank_members, blank, ids, y, classes),
    )
    keep, summary = _summarise(groups, n, y, classes, blank)
    summary["n_linked_pairs"] = len(pair_dist)
    out = params.to_dict()
    out["distance"] = "1 - SSIM (skimage settings, grey levels)"
    return RedundancyResult(
        groups=tuple(groups),
        method="ssim",
        params=out,
        summary=summary,
        ids=tuple(ids),
        keep=keep,
        blank=None if blank is None else blank.summary(ids),
    )


# --------------------------------------------------------------------------- evaluation
def _pairs_of(found: Any, name: str) -> set[tuple[str, str]]:
    """All unordered id pairs implied by groups or a duplicate map."""
    pairs: set[tuple[str, str]] = set()
    if isinstance(found, Mapping):
        for k, vs in found.items():
            if isinstance(vs, (str, bytes)):
                raise InvalidParameterError(
                    f"The {name!r} parameter of evaluate_duplicates must map each id to a "
                    f"list of duplicate ids. Got {vs!r} for {k!r} instead."
                )
            for v in vs:
                if isinstance(v, (tuple, list)):  # imagededup scores: (id, score)
                    v = v[0]
                a, b = str(k), str(v)
                if a != b:
                    pairs.add((min(a, b), max(a, b)))
        return pairs
    if isinstance(found, (RedundancyResult, list, tuple)):
        for g in found:
            members = (
                g.members
                if isinstance(g, Group)
                else (g["members"] if isinstance(g, Mapping) else g)
            )
            if isinstance(members, (str, bytes)):
                raise InvalidParameterError(
                    f"The {name!r} parameter of evaluate_duplicates must be groups of ids "
                    f"(lists), a RedundancyResult or a {{id: [ids]}} map. Got a group "
                    f"{members!r} instead."
                )
            m = sorted({str(x) for x in members})
            for i in range(len(m)):
                for j in range(i + 1, len(m)):
                    pairs.add((m[i], m[j]))
        return pairs
    raise InvalidParameterError(
        f"The {name!r} parameter of evaluate_duplicates must be a RedundancyResult, a list "
        f"of groups or a {{id: [duplicate ids]}} map. Got {type(found).__name__} instead."
    )


def evaluate_duplicates(found: Any, truth: Any) -> dict:
    """Pairwise precision, recall and F1 of found duplicates against a ground truth.

    Parameters
    ----------
    found : RedundancyResult, list of groups (lists of ids or Group), or mapping
        ``{id: [duplicate ids]}`` (imagededup's ``find_duplicates`` output; ``(id,
        score)`` tuples are accepted).
    truth : list of groups or mapping ``{id: [duplicate ids]}``
        Ground truth in the same shapes.  Every pair inside a group counts.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (``None`` when undefined: nothing found /
        nothing to find), ``n_found_pairs``, ``n_true_pairs``, ``n_correct_pairs``.

    Examples
    --------
    >>> evaluate_duplicates([["a", "b"]], {"a": ["b"], "b": ["a"], "c": []})["f1"]
    1.0
    """
    f = _pairs_of(found, "found")
    t = _pairs_of(truth, "truth")
    tp = len(f & t)
    precision = tp / len(f) if f else None
    recall = tp / len(t) if t else None
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0
        else (0.0 if precision is not None and recall is not None else None)
    )
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "n_found_pairs": len(f),
        "n_true_pairs": len(t),
        "n_correct_pairs": tp,
    }
