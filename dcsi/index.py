"""The Dataset Class Similarity Index (DCSI) and the peers it competes with.

Parikh & Aggarwal (2020) name a "Dataset Class Similarity Index" but never define it.
dcsi defines it from the card's class matrices -- the cnn_cosine matrix ``S`` (mean
pairwise cosine similarity of L2-normalised CNN features, diagonal = within-class mean
over pairs of distinct images) and, when the card has it, the wavelet matrix (the same
of the Haar coefficients of the grey images at the working size, that is of their
pixels) -- and each view's *directional spreads* (:mod:`dcsi.similarity.spreads`), as
the chance that a class overlaps some other class (definition version 4):

1. With the diagonal free of self-pairs, each view's matrix holds *unbiased* estimates
   of the population geometry of its unit vectors: ``q_c = S[c, c]`` estimates
   ``|m_c|^2`` (``m_c`` the expected unit vector of class c), ``S[a, b]`` estimates
   ``m_a . m_b``, and ``D_ab = max(q_a + q_b - 2 S[a, b], 0)`` the squared distance
   between the class centres: 0 in expectation when both classes are drawn from one
   distribution, whatever their number of images.
2. ``V[a, b]``, the variance of class a's unit vectors along the unit direction from
   class b's centre to class a's, and Fisher's criterion along that line,
   ``F_ab = D_ab / (V_ab + V_ba)``.
3. The view's pair overlap ``erfc(sqrt(F_ab) / 2)``: the overlapping coefficient of two
   normal distributions of equal variance whose Fisher ratio is ``F_ab`` (twice the
   Bayes error of telling them apart).  No free parameter: 1 when the classes cannot be
   told apart, -> 0 as their centres move apart relative to their spread on that line.
4. The pair overlap ``o_ab`` is the *smallest* over the views: two classes are only as
   confusable as the view that separates them best (a classifier may use either).
5. Class confusability ``c_a = 1 - prod_{b != a} (1 - o_ab)``: the chance that class a
   overlaps at least one other class, were the pairs independent.
6. ``DCSI = mean_a c_a``.

The result is in [0, 1], higher when classes are more alike (harder), near 1 for classes
drawn from one distribution (shuffled labels: every ``o_ab`` near 1) and near 0 when
every pair is well separated in some view, invariant to the order of the classes,
defined for K >= 2.  For K = 2 it is the overlap of the one pair; with more classes it
grows with the number of confusable neighbours each class has, as a classifier's error
does.  A class with one image has no within-class pair: its ``q_c`` is taken as 1 and
its spreads as 0.  Two classes with no spread and distinct centres do not overlap (``F =
inf``); with the same centre they overlap fully.  Without the wavelet view (``dcsi
analyze --analyzers cnn``, or :func:`compute_index` given ``S`` alone) the CNN view's
overlaps are used as they are; the card's ``index.components.views`` says which fed
it.  Given the class matrices alone (no spreads), :func:`compute_index` gives
definition 3 (:data:`DEFINITION_3`: the total spread ``v_c = 1 - q_c`` in place of the
directional one and ``exp(-F / 0.05)``), and says so in ``index_components``.  The
views' combination and the aggregation were chosen with one image pool hidden at a
time, among the candidates that keep both ends (shuffled labels >= 0.9, planted pairs
that a 1-NN tells apart <= 0.1; ``benchmarks/dcsi_validity.py``; README, "Does the DCSI
predict difficulty?").  The previous definitions (1: cap overlaps in units of pi; 2:
the hardest pair of the CNN view; 3: total spreads) are kept in
:data:`PREVIOUS_DEFINITIONS` and on every card.

Peers, computed on the same features by :func:`index_report`:

- the Cumulative Spectral Gradient (Branchaud-Charron, Achkar & Jodoin, CVPR 2019):
  k-NN estimates of ``P(class j | x)`` for M samples per class, class-overlap matrix,
  Bray-Curtis similarity ``W``, Laplacian spectrum, CSG = sum of the cumulative maximum
  of the normalised eigen-gaps ``(lambda_{i+1} - lambda_i) / (K - i)``;
- the mean cosine silhouette over class labels, exact through the class sums (equal to
  ``sklearn.metrics.silhouette_score(features, labels, metric="cosine")``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np

from dcsi._json import to_jsonable
from dcsi._validation import check_array, check_choice, check_int, check_labels
from dcsi.exceptions import InvalidParameterError
from dcsi.neighbors import unit_rows

__all__ = [
    "DEFINITION",
    "DEFINITION_3",
    "DEFINITION_VERSION",
    "PREVIOUS_DEFINITIONS",
    "TEMPERATURE",
    "VIEWS",
    "IndexResult",
    "centroid_terms",
    "compute_index",
    "cosine_silhouette",
    "cosine_silhouette_samples",
    "cumulative_spectral_gradient",
    "index_components",
    "index_report",
    "pair_terms",
    "unbiased_terms",
]

logger = logging.getLogger(__name__)

#: The temperature ``tau`` of the pair overlap ``exp(-F_ab / tau)``, chosen with one
#: image pool hidden at a time (benchmarks/dcsi_validity.py).
TEMPERATURE = 0.05

#: Version of the definition below; cards record it next to the value.
DEFINITION_VERSION = 4

#: The card's class matrices that can feed the index: the CNN view (always) and the
#: pixel view (the wavelet matrix, when the card has one).
VIEWS = ("cnn_cosine", "wavelet")

DEFINITION = (
    "DCSI = mean over classes a of the class confusability c_a = 1 - prod over b != a "
    "of (1 - o_ab), the chance that class a overlaps at least one other class. The pair "
    "overlap o_ab is the smallest over the card's views (cnn_cosine: L2-normalised CNN "
    "features; wavelet, when present: Haar coefficients of the grey images, i.e. "
    "pixels) of erfc(sqrt(F_ab) / 2), the overlapping coefficient of two normal "
    "distributions of equal variance whose Fisher ratio is F_ab. F_ab = D_ab / (V_ab + "
    "V_ba) is Fisher's criterion along the line joining the two class centres: D_ab = "
    "max(S_aa + S_bb - 2 S_ab, 0), from the view's class matrix S (diagonal over pairs "
    "of distinct images), is an unbiased estimate of the squared distance between the "
    "class mean vectors, and V_ab is the variance of class a's unit vectors along the "
    "unit direction from class b's centre to class a's (the view's class_spreads). No "
    "free parameter. In [0, 1]; near 1 when the classes cannot be told apart (drawn "
    "from one distribution), near 0 when every pair is well separated in some view; "
    "higher = classes more alike = harder."
)

#: Definition 3, still what :func:`compute_index` gives from the class matrices alone
#: (without the directional spreads).
DEFINITION_3 = (
    "DCSI = mean over classes a of the class confusability c_a = 1 - prod over b != a "
    "of (1 - o_ab), the chance that class a overlaps at least one other class. The pair "
    "overlap o_ab is the smallest over the card's views (cnn_cosine: L2-normalised CNN "
    "features; wavelet, when present: Haar coefficients of the grey images, i.e. "
    f"pixels) of exp(-F_ab / tau), tau = {TEMPERATURE}, with the view's Fisher ratio "
    "F_ab = D_ab / (v_a + v_b) from its class matrix S (diagonal over pairs of distinct "
    "images): D_ab = max(S_aa + S_bb - 2 S_ab, 0) is an unbiased estimate of the squared "
    "distance between the class mean vectors and v_c = 1 - S_cc of the within-class "
    "spread. In [0, 1]; near 1 when the classes cannot be told apart (drawn from one "
    "distribution), near 0 when every pair is well separated in some view; higher = "
    "classes more alike = harder."
)

#: Earlier definitions in version order (1, 2, 3), recorded on every card
#: (``index.previous_definitions``).
PREVIOUS_DEFINITIONS = (
    {
        "version": 1,
        "schema_versions": "1.0.0-1.3.0",
        "definition": (
            "DCSI = mean over classes a of max over classes b != a of the cap overlap "
            "o_ab = clip((theta_a + theta_b - phi_ab) / pi, 0, 1), where, on the unit "
            "sphere of the L2-normalised CNN features, theta_c = arccos |mu_c| is the "
            "angular radius of class c (|mu_c|^2 = (S_cc (n_c - 1) + 1) / n_c from the "
            "cnn_cosine matrix S and the counts n) and phi_ab = arccos(S_ab / (|mu_a| "
            "|mu_b|)) is the angle between the mean directions of classes a and b."
        ),
        "why_replaced": (
            "its ends could not be read: classes drawn from one distribution (shuffled "
            "labels) scored 0.34-0.55, depending on their spread, instead of near 1"
        ),
    },
    {
        "version": 2,
        "schema_versions": "1.4.0",
        "definition": (
            "DCSI = max over pairs of classes a != b of exp(-F_ab / 0.05), the overlap of "
            "the two most alike classes, with the Fisher ratio F_ab = max(S_aa + S_bb - "
            "2 S_ab, 0) / (2 - S_aa - S_bb) from the cnn_cosine matrix S alone."
        ),
        "why_replaced": (
            "chosen with one image pool hidden at a time, it tracked task difficulty less "
            "well than CSG and the pixel silhouette (Spearman 0.819 against a small "
            "CNN's error on 146 tasks of 5 pools, CSG 0.892): the hardest pair ignores "
            "how many classes have a confusable neighbour, and the CNN view alone "
            "misses pairs that pixels separate"
        ),
    },
    {
        "version": 3,
        "schema_versions": "1.5.0",
        "definition": DEFINITION_3,
        "why_replaced": (
            "the class matrices know each class's total spread but not how much of it "
            "lies along the line to another class, which is what a classifier meets: "
            "within an image pool it ranked tasks worse than CSG (mean Spearman 0.674 "
            "against a small CNN's error, pools held out; CSG 0.772), and its "
            "temperature was a fitted constant"
        ),
    },
)


@dataclass(frozen=True)
class IndexResult:
    """The DCSI, its components and its peers.

    Attributes
    ----------
    value : float
        The DCSI in [0, 1].
    spread : ndarray of shape (K,)
        Within-class spread ``v_c = 1 - S[c, c]`` of the unit features.
    fisher : ndarray of shape (K, K)
        Fisher ratios of the CNN view, ``D_ab / (V_ab + V_ba)`` (definition 4) or ``D_ab /
        (v_a + v_b)`` (definition 3) (``inf`` for distinct classes without spread); 0 on
        the diagonal.
    overlap : ndarray of shape (K, K)
        ``o[a, b]``: the smallest over the views of the pair overlap; 0 on the diagonal.
    confusability : ndarray of shape (K,)
        ``c_a = 1 - prod_b (1 - o[a, b])``.
    nearest : ndarray of shape (K,), int
        The class b with the largest ``o[a, b]``.
    classes : list of str or None
    csg : float or None
        Cumulative Spectral Gradient (None when features were not given).
    silhouette : float or None
        Mean cosine silhouette over class labels (None without features).
    peer_params : dict
    fisher_wavelet : ndarray of shape (K, K) or None
        The wavelet view's Fisher ratios (None when only the CNN view fed the index).
    definition_version : int
        4 (with the directional spreads, what ``dcsi analyze`` computes) or 3 (the class
        matrices alone).
    """

    value: float
    spread: np.ndarray
    fisher: np.ndarray
    overlap: np.ndarray
    confusability: np.ndarray
    nearest: np.ndarray
    fisher_wavelet: np.ndarray | None = None
    definition_version: int = DEFINITION_VERSION
    classes: list[str] | None = None
    csg: float | None = None
    silhouette: float | None = None
    peer_params: dict[str, Any] = field(default_factory=dict)

    @property
    def hardest_pair(self) -> tuple[int, int]:
        """Class ids ``(a, b)``, ``a < b``, of the pair with the largest overlap."""
        o = np.triu(self.overlap, k=1)
        a, b = np.unravel_index(int(np.argmax(o)), o.shape)
        return (int(min(a, b)), int(max(a, b)))

    def to_dict(self) -> dict[str, Any]:
        """The card's ``index`` block (JSON-ready plain Python, no NaN)."""
        a, b = self.hardest_pair
        names = self.classes
        k = self.overlap.shape[0]

        def name(i: int) -> str | int:
            return names[i] if names else int(i)

        def ratios(f: np.ndarray) -> list[list[float | None]]:
            return [[_f(v) for v in row] for row in np.asarray(f).tolist()]

        views = list(VIEWS if self.fisher_wavelet is not None else VIEWS[:1])
        extra = (
            {} if self.fisher_wavelet is None else {"fisher_wavelet": ratios(self.fisher_wavelet)}
        )
        version = self.definition_version
        shape = (
            {"overlap_shape": "erfc(sqrt(F) / 2)", "spreads": "directional"}
            if version == DEFINITION_VERSION
            else {"overlap_shape": "exp(-F / tau)", "temperature": TEMPERATURE}
        )
        return {
            "value": _f(self.value),
            "definition": DEFINITION if version == DEFINITION_VERSION else DEFINITION_3,
            "definition_version": version,
            "previous_definitions": [dict(d) for d in PREVIOUS_DEFINITIONS[: version - 1]],
            "components": {
                "n_classes": int(k),
                "views": views,
                **shape,
                "confusability": to_jsonable(np.asarray(self.confusability, dtype=np.float64)),
                "nearest_class": [name(int(j)) for j in self.nearest],
                "spread": to_jsonable(np.asarray(self.spread, dtype=np.float64)),
                "hardest_pair": [name(a), name(b)],
                "hardest_pair_overlap": _f(self.overlap[a, b]),
                "hardest_pair_fisher": _f(self.fisher[a, b]),
                "overlap": to_jsonable(np.asarray(self.overlap, dtype=np.float64)),
                "fisher": ratios(self.fisher),
                **extra,
            },
            "peers": {
                "csg": _f(self.csg),
                "silhouette": _f(self.silhouette),
                "params": to_jsonable(self.peer_params),
            },
        }


def _f(v: Any) -> float | None:
    """A number as a JSON float (None for None, NaN and infinities)."""
    return None if v is None else to_jsonable(float(v))


def square_class_matrix(S: Any, caller: str, name: str = "S") -> np.ndarray:
    """``S`` as a float64 K x K array; NaN allowed (the diagonal of tiny classes).
    ``name`` is the parameter the messages name."""
    try:
        m = np.asarray(S, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be a K x K array of numbers: {exc}"
        ) from None
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be a square K x K class matrix. "
            f"Got shape {m.shape} instead."
        )
    return m


def _kept_classes(m: np.ndarray, keep: np.ndarray, caller: str, name: str, hint: str) -> np.ndarray:
    """``m`` restricted to the classes with images; their off-diagonal entries must be
    numbers (``hint`` says which matrix to pass)."""
    m = m[np.ix_(keep, keep)]
    if not np.all(np.isfinite(m[~np.eye(m.shape[0], dtype=bool)])):
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} has NaN off-diagonal entries for classes "
            f"with images; pass {hint}."
        )
    return m


def _check_S_counts(S: Any, class_counts: Any, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """``S`` restricted to the classes with images, and their counts (float64)."""
    m = square_class_matrix(S, caller)
    n = np.asarray(class_counts)
    if n.ndim != 1 or n.shape[0] != m.shape[0]:
        raise InvalidParameterError(
            f"The 'class_counts' parameter of {caller} must be a 1-D array with one "
            f"count per class ({m.shape[0]}). Got shape {n.shape} instead."
        )
    if n.size and (n.dtype.kind not in "iuf" or np.any(n < 0) or np.any(n != np.round(n))):
        raise InvalidParameterError(
            f"The 'class_counts' parameter of {caller} must hold non-negative integer "
            f"counts. Got {n.tolist()!r} instead."
        )
    keep = n > 0
    if int(keep.sum()) < 2:
        raise InvalidParameterError(
            f"{caller} needs at least 2 classes with images (K >= 2); got "
            f"{int(keep.sum())}: a similarity index compares classes."
        )
    m = _kept_classes(m, keep, caller, "S", "the cnn_cosine matrix of dcsi.class_similarity")
    return m, n[keep].astype(np.float64)


def _check_wavelet(wavelet: Any, class_counts: Any, caller: str) -> np.ndarray:
    """The wavelet view's class matrix, restricted to the classes with images."""
    w = square_class_matrix(wavelet, caller, "wavelet")
    k = np.asarray(class_counts).shape[0]
    if w.shape != (k, k):
        raise InvalidParameterError(
            f"The 'wavelet' parameter of {caller} must be the K x K wavelet class matrix "
            f"of the same {k} classes as S. Got shape {w.shape} instead."
        )
    hint = "the card's wavelet matrix (dcsi.class_wavelet_similarity)"
    return _kept_classes(w, np.asarray(class_counts) > 0, caller, "wavelet", hint)


def centroid_terms(S: Any, class_counts: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact geometry of the class centroids of unit features, from ``S`` and the counts.

    With ``mu_c = s_c / n_c`` the centroid of the unit-normalised features of class c,
    ``mu_a . mu_b = S[a, b]`` (a != b) and ``|mu_c|^2 = (S[c, c] (n_c - 1) + 1) / n_c``
    (self-pairs added back; a class with one image has ``|mu_c| = 1``), so the squared
    centroid distances ``|mu_a - mu_b|^2 = |mu_a|^2 + |mu_b|^2 - 2 S[a, b]`` need no
    features.  Used by ``cluster_classes(linkage="ward")``; the index uses the unbiased
    terms of :func:`unbiased_terms` instead.

    Parameters
    ----------
    S : ndarray of shape (K, K)
        cnn_cosine class matrix (diagonal = within-class mean without self-pairs;
        ignored for classes with fewer than two images).
    class_counts : array-like of shape (K,)
        Images per class (>= 1).

    Returns
    -------
    sq_norm : ndarray of shape (K,)
        ``|mu_c|^2``, clipped to [0, 1].
    spread : ndarray of shape (K,)
        ``1 - |mu_c|^2``.
    d2 : ndarray of shape (K, K)
        Squared centroid distances, >= 0, zero diagonal.
    """
    S = np.asarray(S, dtype=np.float64)
    n = np.asarray(class_counts, dtype=np.float64)
    diag = np.diag(S).copy()
    # a class with one image: its centroid is the unit vector itself
    diag = np.where(n >= 2, diag, 0.0)
    sq = (diag * (n - 1.0) + 1.0) / n
    sq = np.clip(sq, 0.0, 1.0)
    spread = 1.0 - sq
    d2 = sq[:, None] + sq[None, :] - 2.0 * S
    d2 = np.maximum(d2, 0.0)
    np.fill_diagonal(d2, 0.0)
    return sq, spread, d2


def unbiased_terms(S: Any, class_counts: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unbiased class geometry of unit vectors from a class matrix whose diagonal is over
    pairs of distinct images.

    Parameters
    ----------
    S : ndarray of shape (K, K)
    class_counts : ndarray of shape (K,)
        Images per class (>= 1); a class with one image gets ``S[c, c] = 1``.

    Returns
    -------
    sq_norm : ndarray of shape (K,)
        ``q_c = S[c, c]`` (clipped to [0, 1]), an unbiased estimate of ``|m_c|^2``.
    spread : ndarray of shape (K,)
        ``v_c = 1 - q_c``.
    d2 : ndarray of shape (K, K)
        ``D_ab = max(q_a + q_b - 2 S_ab, 0)``, zero diagonal.
    """
    S = np.asarray(S, dtype=np.float64)
    n = np.asarray(class_counts, dtype=np.float64)
    q = np.clip(np.where(n >= 2, np.diag(S), 1.0), 0.0, 1.0)
    d2 = np.maximum(q[:, None] + q[None, :] - 2.0 * S, 0.0)
    np.fill_diagonal(d2, 0.0)
    return q, 1.0 - q, d2


def pair_terms(
    S: Any, class_counts: Any, spreads: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unbiased spreads, Fisher ratios and pair overlaps of one view.

    Parameters
    ----------
    S : ndarray of shape (K, K)
        The view's class matrix, diagonal over pairs of distinct images.
    class_counts : ndarray of shape (K,)
        Images per class (>= 1); a class with one image gets ``S[c, c] = 1``.
    spreads : ndarray of shape (K, K), default=None
        The view's directional spreads ``V`` (:func:`dcsi.similarity.spreads.class_spreads`):
        definition 4.  None: definition 3, from ``S`` alone.

    Returns
    -------
    spread : ndarray of shape (K,)
        ``v_c = 1 - S[c, c]`` (clipped to [0, 1]), the total spread.
    fisher : ndarray of shape (K, K)
        ``F_ab = D_ab / (V_ab + V_ba)`` (definition 4) or ``D_ab / (v_a + v_b)``
        (definition 3), ``D_ab = max(S_aa + S_bb - 2 S_ab, 0)``; ``inf`` when the
        spreads are 0 and the centres differ, 0 when they coincide; 0 on the diagonal.
    overlap : ndarray of shape (K, K)
        ``erfc(sqrt(F_ab) / 2)`` (definition 4) or ``exp(-F_ab / TEMPERATURE)``
        (definition 3); 0 on the diagonal.
    """
    from scipy.special import erfc

    _, spread, d2 = unbiased_terms(S, class_counts)
    if spreads is None:
        vv = spread[:, None] + spread[None, :]
    else:
        vv = np.asarray(spreads, dtype=np.float64)
        vv = vv + vv.T
    with np.errstate(divide="ignore", invalid="ignore"):
        fisher = np.where(vv > 0, d2 / vv, np.where(d2 > 0, np.inf, 0.0))
    np.fill_diagonal(fisher, 0.0)
    overlap = np.exp(-fisher / TEMPERATURE) if spreads is None else erfc(np.sqrt(fisher) / 2.0)
    np.fill_diagonal(overlap, 0.0)
    return spread, fisher, overlap


def _check_spreads(V: Any, class_counts: Any, caller: str, name: str) -> np.ndarray:
    """A view's directional spreads, restricted to the classes with images."""
    v = square_class_matrix(V, caller, name)
    k = np.asarray(class_counts).shape[0]
    if v.shape != (k, k):
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be the K x K directional spreads of "
            f"the same {k} classes as S (dcsi.class_spreads). Got shape {v.shape} instead."
        )
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must hold finite non-negative variances "
            "(dcsi.class_spreads)."
        )
    keep = np.asarray(class_counts) > 0
    return v[np.ix_(keep, keep)]


def index_components(
    S: np.ndarray,
    class_counts: np.ndarray,
    wavelet: np.ndarray | None = None,
    spreads: np.ndarray | None = None,
    wavelet_spreads: np.ndarray | None = None,
) -> dict[str, Any]:
    """The DCSI and its components.

    Parameters
    ----------
    S : ndarray of shape (K, K)
        cnn_cosine class matrix from :func:`dcsi.class_similarity` (diagonal = within-class
        mean without self-pairs).
    class_counts : ndarray of shape (K,)
        Images per class.  Classes with no image are left out.
    wavelet : ndarray of shape (K, K), default=None
        The wavelet class matrix of the same classes
        (:func:`dcsi.similarity.wavelet.class_wavelet_similarity`), the pixel view.
    spreads, wavelet_spreads : ndarray of shape (K, K), default=None
        The views' directional spreads (:func:`dcsi.class_spreads`; the wavelet one is
        ``class_wavelet_similarity(...).spreads``).  Given, the index is definition 4;
        without them definition 3 (the class matrices alone).  With both ``wavelet``
        and ``spreads``, ``wavelet_spreads`` is needed too.

    Returns
    -------
    dict
        ``value`` (float), ``definition_version`` (3 or 4), ``spread`` (K',),
        ``fisher`` (K', K'), ``fisher_wavelet`` (K', K') or None, ``overlap`` (K', K'),
        ``confusability`` (K',), ``nearest`` (K',) int, ``kept`` (K,) bool mask of the
        classes with images (K' of them).
    """
    caller = "compute_index"
    m, n = _check_S_counts(S, class_counts, caller)
    if wavelet_spreads is not None and (wavelet is None or spreads is None):
        raise InvalidParameterError(
            f"{caller} got 'wavelet_spreads' without {'wavelet' if wavelet is None else 'spreads'}"
            ": pass the wavelet matrix and both views' spreads, or no spreads at all."
        )
    if spreads is not None and wavelet is not None and wavelet_spreads is None:
        raise InvalidParameterError(
            f"{caller} got 'spreads' and 'wavelet' but no 'wavelet_spreads': pass the "
            "wavelet view's spreads too (class_wavelet_similarity(...).spreads), or "
            "neither view's (definition 3)."
        )
    v = None if spreads is None else _check_spreads(spreads, class_counts, caller, "spreads")
    spread, fisher, overlap = pair_terms(m, n, v)
    fisher_w = None
    if wavelet is not None:
        vw = (
            None
            if wavelet_spreads is None
            else _check_spreads(wavelet_spreads, class_counts, caller, "wavelet_spreads")
        )
        _, fisher_w, overlap_w = pair_terms(_check_wavelet(wavelet, class_counts, caller), n, vw)
        overlap = np.minimum(overlap, overlap_w)
    # the diagonal is 0, a factor of 1 in each class's product
    conf = 1.0 - np.prod(1.0 - overlap, axis=1)
    nearest = np.argmax(overlap - 2.0 * np.eye(len(n)), axis=1)
    value = float(np.clip(np.mean(conf), 0.0, 1.0))
    kept = np.asarray(class_counts) > 0
    return {
        "value": value,
        "definition_version": DEFINITION_VERSION if spreads is not None else 3,
        "spread": spread,
        "fisher": fisher,
        "fisher_wavelet": fisher_w,
        "overlap": overlap,
        "confusability": conf,
        "nearest": nearest,
        "kept": kept,
    }


def compute_index(
    S: np.ndarray,
    class_counts: np.ndarray,
    *,
    wavelet: np.ndarray | None = None,
    spreads: np.ndarray | None = None,
    wavelet_spreads: np.ndarray | None = None,
) -> float:
    """The Dataset Class Similarity Index (DCSI) of a class matrix.

    ``DCSI = mean_a [1 - prod_{b != a} (1 - o_ab)]``, the mean chance that a class
    overlaps some other class.  With the directional spreads (definition 4, what ``dcsi
    analyze`` puts on the card) the pair overlap is ``o_ab = erfc(sqrt(F_ab) / 2)``
    with Fisher's criterion along the centres' line ``F_ab = D_ab / (V_ab + V_ba)``;
    from the class matrices alone (definition 3) ``o_ab = exp(-F_ab / 0.05)`` with
    ``F_ab = D_ab / (2 - S_aa - S_bb)`` (see the module docstring).  Given the wavelet
    matrix too, ``o_ab`` is the smaller of the two views' overlaps.

    Parameters
    ----------
    S : ndarray of shape (K, K)
        Mean pairwise cosine similarity between classes, diagonal = within-class mean
        without self-pairs (``dcsi.class_similarity(features, labels)``).
    class_counts : array-like of shape (K,)
        Images per class (classes with no image are left out).
    wavelet : ndarray of shape (K, K), default=None
        The wavelet class matrix of the same classes (the card's
        ``similarity.wavelet.matrix``), the pixel view.
    spreads : ndarray of shape (K, K), default=None
        ``dcsi.class_spreads(features, labels)`` of the features behind ``S`` (the
        card's ``similarity.cnn_cosine.spreads``).
    wavelet_spreads : ndarray of shape (K, K), default=None
        The wavelet view's (``class_wavelet_similarity(...).spreads``, the card's
        ``similarity.wavelet.spreads``); needed with ``wavelet`` and ``spreads``.

    Returns
    -------
    float
        In [0, 1]; near 1 for classes drawn from one distribution, near 0 for
        well-separated ones; higher = classes more alike = harder.  Invariant to class
        order.

    Raises
    ------
    InvalidParameterError
        Fewer than two classes with images, a non-square ``S``, a ``wavelet`` or spread
        matrix of other classes, spreads of one view only, or bad counts.

    Examples
    --------
    >>> import numpy as np
    >>> S = np.array([[0.9, 0.895], [0.895, 0.9]])   # D = 0.01
    >>> round(compute_index(S, [50, 50]), 4)         # definition 3: exp(-(0.01 / 0.2) / 0.05)
    0.3679
    >>> V = np.array([[0.0, 0.0025], [0.0025, 0.0]])  # along the centres' line: F = 2
    >>> round(compute_index(S, [50, 50], spreads=V), 4)   # erfc(sqrt(2) / 2)
    0.3173
    """
    return float(index_components(S, class_counts, wavelet, spreads, wavelet_spreads)["value"])


# --------------------------------------------------------------------------- peers


def cosine_silhouette_samples(
    features: np.ndarray, labels: np.ndarray, *, block_size: int = 4096
) -> np.ndarray:
    """Cosine silhouette of every image over its class label, exact via class sums.

    With unit features ``u_i`` and class sums ``s_c``: ``a(i) = 1 - (u_i . s_a - 1) /
    (n_a - 1)`` (own class, self excluded), ``b(i) = min_{c != a} 1 - u_i . s_c / n_c``,
    ``s(i) = (b - a) / max(a, b)``; 0 for a class of one image (scikit-learn's rule).
    O(N K d) time, ``block_size`` x K memory.

    Parameters
    ----------
    features : ndarray of shape (n_images, dim)
    labels : ndarray of shape (n_images,), int
    block_size : int, default=4096

    Returns
    -------
    ndarray of shape (n_images,), float64
        Equal to ``sklearn.metrics.silhouette_samples(features, labels, metric="cosine")``.
    """
    caller = "cosine_silhouette_samples"
    x = check_array(features, "features", caller, ndim=2)
    y = check_labels(labels, x.shape[0], caller)
    bs = check_int(block_size, "block_size", caller, min_value=1)
    present, y = np.unique(y, return_inverse=True)
    if present.size < 2:
        raise InvalidParameterError(f"{caller} needs at least 2 classes; got {present.size}.")
    u = unit_rows(x, np.float64)
    k = present.size
    sums = np.zeros((k, u.shape[1]))
    np.add.at(sums, y, u)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    out = np.empty(x.shape[0])
    nz = np.linalg.norm(x, axis=1) > 0  # a zero vector has cosine 0 with itself too
    for i0 in range(0, x.shape[0], bs):
        sl = slice(i0, i0 + bs)
        dots = u[sl] @ sums.T  # (b, K)
        yy = y[sl]
        rows = np.arange(dots.shape[0])
        own_n = counts[yy]
        self_dot = nz[sl].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = 1.0 - (dots[rows, yy] - self_dot) / (own_n - 1.0)
        other = 1.0 - dots / counts[None, :]
        other[rows, yy] = np.inf
        b = other.min(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (b - a) / np.maximum(a, b)
        s = np.where(own_n > 1, np.nan_to_num(s, nan=0.0), 0.0)
        out[sl] = s
    return out


def cosine_silhouette(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean cosine silhouette over class labels (see :func:`cosine_silhouette_samples`)."""
    return float(np.mean(cosine_silhouette_samples(features, labels)))


@overload
def cumulative_spectral_gradient(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    n_samples: int = ...,
    n_neighbors: int = ...,
    laplacian: str = ...,
    seed: int = ...,
    return_details: Literal[False] = ...,
) -> float: ...


@overload
def cumulative_spectral_gradient(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    n_samples: int = ...,
    n_neighbors: int = ...,
    laplacian: str = ...,
    seed: int = ...,
    return_details: Literal[True],
) -> tuple[float, dict[str, np.ndarray]]: ...


@overload
def cumulative_spectral_gradient(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    n_samples: int = ...,
    n_neighbors: int = ...,
    laplacian: str = ...,
    seed: int = ...,
    return_details: bool,
) -> float | tuple[float, dict[str, np.ndarray]]: ...


def cumulative_spectral_gradient(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    n_samples: int = 250,
    n_neighbors: int = 10,
    laplacian: str = "unnormalized",
    seed: int = 0,
    return_details: bool = False,
) -> float | tuple[float, dict[str, np.ndarray]]:
    """Cumulative Spectral Gradient (Branchaud-Charron, Achkar & Jodoin, CVPR 2019).

    1. Draw up to ``n_samples`` images per class (seeded).
    2. For every drawn image, the fraction of its ``n_neighbors`` nearest drawn images
       (cosine distance, itself excluded) in each class estimates ``P(class j | x)``;
       averaging over the drawn images of class i gives the class-overlap matrix
       ``Q[i, j]``.
    3. ``W[i, j] = 1 - BrayCurtis(Q[i], Q[j])``, zero diagonal.
    4. Laplacian of ``W`` (symmetric normalised by default, or ``D - W``), eigenvalues
       ``lambda_0 <= ... <= lambda_{K-1}``.
    5. ``CSG = sum_i max_{j <= i} (lambda_{j+1} - lambda_j) / (K - j - 1)`` over
       ``i = 0..K-2`` (0-based: the gap after ``lambda_j`` divided by the number of
       eigenvalues left after it).

    Parameters
    ----------
    features : ndarray of shape (n_images, dim)
    labels : ndarray of shape (n_images,), int
    n_samples : int, default=250
        Images drawn per class (all when the class has fewer).
    n_neighbors : int, default=10
    laplacian : {"unnormalized", "normalized"}, default="unnormalized"
    seed : int, default=0
    return_details : bool, default=False
        Also return ``{"Q", "W", "eigenvalues"}``.

    Returns
    -------
    float, or (float, dict)
        CSG >= 0; higher = classes overlap more = harder.
    """
    from scipy.sparse.csgraph import laplacian as csgraph_laplacian
    from scipy.spatial.distance import braycurtis
    from sklearn.neighbors import NearestNeighbors

    caller = "cumulative_spectral_gradient"
    x = check_array(features, "features", caller, ndim=2)
    y = check_labels(labels, x.shape[0], caller)
    m = check_int(n_samples, "n_samples", caller, min_value=1)
    kn = check_int(n_neighbors, "n_neighbors", caller, min_value=1)
    check_choice(laplacian, "laplacian", caller, ["normalized", "unnormalized"])
    present, y = np.unique(y, return_inverse=True)
    k = present.size
    if k < 2:
        raise InvalidParameterError(f"{caller} needs at least 2 classes; got {k}.")
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(k):
        members = np.flatnonzero(y == c)
        picks.append(rng.permutation(members)[:m] if members.size > m else members)
    idx = np.concatenate(picks)
    xs, ys = unit_rows(x[idx], np.float64), y[idx]
    kk = min(kn, xs.shape[0] - 1)
    if kk < 1:
        raise InvalidParameterError(f"{caller} needs at least 2 images.")
    nn = NearestNeighbors(n_neighbors=kk + 1).fit(xs)
    _, nbr = nn.kneighbors(xs)
    # drop the point itself (the first neighbour unless there are exact duplicates)
    own = np.arange(xs.shape[0])
    nbr_wo = np.empty((xs.shape[0], kk), dtype=np.int64)
    for r in range(xs.shape[0]):
        row = nbr[r][nbr[r] != own[r]][:kk]
        nbr_wo[r] = row
    prob = np.zeros((xs.shape[0], k))
    np.add.at(prob, (np.repeat(own, kk), ys[nbr_wo].ravel()), 1.0 / kk)
    Q = np.zeros((k, k))
    np.add.at(Q, ys, prob)
    Q /= np.bincount(ys, minlength=k)[:, None]
    W = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            W[i, j] = W[j, i] = 1.0 - braycurtis(Q[i], Q[j])
    L = csgraph_laplacian(W, normed=(laplacian == "normalized"))
    lam = np.sort(np.linalg.eigvalsh(L))
    gaps = np.diff(lam) / (k - np.arange(1, k))
    csg = float(np.sum(np.maximum.accumulate(gaps)))
    if return_details:
        return csg, {"Q": Q, "W": W, "eigenvalues": lam}
    return csg


def index_report(
    S: np.ndarray,
    class_counts: np.ndarray,
    *,
    wavelet: np.ndarray | None = None,
    spreads: np.ndarray | None = None,
    wavelet_spreads: np.ndarray | None = None,
    features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    classes: list[str] | None = None,
    csg_samples: int = 250,
    csg_neighbors: int = 10,
    seed: int = 0,
) -> IndexResult:
    """The DCSI with its components and, given the features, its peers.

    Parameters
    ----------
    S : ndarray of shape (K, K)
        cnn_cosine class matrix.
    class_counts : array-like of shape (K,)
    wavelet : ndarray of shape (K, K), default=None
        The wavelet class matrix (the pixel view; see :func:`compute_index`).
    spreads, wavelet_spreads : ndarray of shape (K, K), default=None
        The views' directional spreads (definition 4; see :func:`compute_index`).
    features : ndarray of shape (n_images, dim), default=None
        The features behind ``S``; needed for the peers (CSG, silhouette).
    labels : ndarray of shape (n_images,), int, default=None
    classes : list of str, default=None
        Class names in label order (for the hardest pair in ``to_dict()``).
    csg_samples, csg_neighbors : int, default=250, 10
        ``n_samples`` / ``n_neighbors`` of :func:`cumulative_spectral_gradient`.
    seed : int, default=0

    Returns
    -------
    IndexResult
        ``to_dict()`` is the card's ``index`` block.
    """
    comp = index_components(S, class_counts, wavelet, spreads, wavelet_spreads)
    kept = comp["kept"]
    names = None
    if classes is not None:
        if len(classes) != kept.shape[0]:
            raise InvalidParameterError(
                f"The 'classes' parameter of index_report must name the {kept.shape[0]} "
                f"classes of S. Got {len(classes)} names instead."
            )
        names = [c for c, k in zip(classes, kept) if k]
    csg = sil = None
    params: dict[str, Any] = {}
    if (features is None) != (labels is None):
        raise InvalidParameterError(
            "index_report needs both 'features' and 'labels' (or neither) to compute the peers."
        )
    if features is not None:
        assert labels is not None  # both or neither, checked above
        csg = cumulative_spectral_gradient(
            features, labels, n_samples=csg_samples, n_neighbors=csg_neighbors, seed=seed
        )
        sil = cosine_silhouette(features, labels)
        params = {
            "csg": {
                "n_samples": csg_samples,
                "n_neighbors": csg_neighbors,
                "laplacian": "unnormalized",
                "distance": "cosine",
                "seed": seed,
            },
            "silhouette": {"metric": "cosine", "labels": "classes"},
        }
    return IndexResult(
        value=float(comp["value"]),
        spread=comp["spread"],
        fisher=comp["fisher"],
        overlap=comp["overlap"],
        confusability=comp["confusability"],
        nearest=comp["nearest"],
        fisher_wavelet=comp["fisher_wavelet"],
        definition_version=int(comp["definition_version"]),
        classes=names,
        csg=csg,
        silhouette=sil,
        peer_params=params,
    )
