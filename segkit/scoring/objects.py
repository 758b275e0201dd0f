"""Object-level segmentation: instance labels from a foreground probability map, and object
scores (precision, recall, F1, the Data Science Bowl / StarDist average precision) from
predicted and true instance labels.

A prediction matches a true object when their IoU exceeds a threshold; at thresholds of 0.5 and
above an object can overlap at most one other object that much, so the matching is one-to-one
and needs no assignment step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = ["THRESHOLDS", "ObjectMatch", "instances_from_foreground", "match_objects"]

_PERCENTS = tuple(range(50, 100, 5))
#: The IoU thresholds ObjectMatch counts matches at: 0.5, 0.55, ..., 0.95.
THRESHOLDS: tuple[float, ...] = tuple(p / 100 for p in _PERCENTS)
_SEEDS = ("watershed", "components")


def instances_from_foreground(probability: np.ndarray, threshold: float = 0.5, seeds: str = "watershed",
                              min_size: int = 8, expand: int = 1) -> np.ndarray:
    """Instance labels (H, W) from a foreground probability map (H, W) in [0, 1]; 0 = background.

    Foreground is ``probability > threshold``. ``seeds="components"``: each 4-connected
    component is an object. ``seeds="watershed"``: a seeded watershed inside the foreground
    splits touching objects even where the line between them was only weakly predicted. Its
    seeds are the maxima (at least 1 px high) of the smoothed distance transform of the core,
    ``probability > (1 + threshold) / 2``, so a neck or a weak line splits; a foreground
    component, or a core component of ``min_size`` pixels or more, left without a seed is one.

    Objects under ``min_size`` pixels are dropped; then objects grow by up to ``expand`` pixels
    into the background where they meet another grown object, taking back the borders between
    touching objects that "separated foreground" labels make background (not outward: those
    labels keep outer edges). Labels are 1..N, uint16 for N < 65535, else uint32.

    Example:
        >>> p = np.zeros((4, 11)); p[1:3, 1:10] = 0.9
        >>> p[1:3, 5] = 0.6  # a weakly predicted line between two touching objects
        >>> int(instances_from_foreground(p, seeds="components", min_size=1, expand=0).max())
        1
        >>> int(instances_from_foreground(p, seeds="watershed", min_size=1, expand=0).max())
        2
    """
    probability = np.asarray(probability)
    if probability.ndim != 2 or probability.size == 0:
        raise ValueError(f"probability must be a non-empty (H, W) map, got shape {probability.shape}")
    if not np.issubdtype(probability.dtype, np.floating):
        raise ValueError(f"probability must be floating point, got dtype {probability.dtype}")
    if not np.all((probability >= 0) & (probability <= 1)):  # also catches NaN
        raise ValueError("probability must lie in [0, 1] (no NaN); apply a sigmoid or softmax to logits")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    if seeds not in _SEEDS:
        raise ValueError(f"seeds must be one of {_SEEDS}, got {seeds!r}")
    for name, value in (("min_size", min_size), ("expand", expand)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")

    foreground = probability > threshold
    if seeds == "components":
        labels = ndimage.label(foreground)[0]
    else:
        labels = _watershed(probability, foreground, threshold, min_size)
    sizes = np.bincount(labels.ravel())
    kept = sizes >= min_size
    kept[0] = False
    lookup = np.zeros(sizes.size, np.int64)
    lookup[kept] = np.arange(1, np.count_nonzero(kept) + 1)
    labels = lookup[labels]
    if expand:
        labels = _fill_gaps(labels, expand)
    return labels.astype(np.uint16 if labels.max() < 65535 else np.uint32)


def _fill_gaps(labels: np.ndarray, expand: int) -> np.ndarray:
    """``labels`` grown by up to ``expand`` px into the background only where grown objects meet.

    Separated-foreground labels take background only from the borders between touching objects,
    so growing outward into open background as well would make every object too large.
    """
    from skimage.segmentation import expand_labels

    grown = expand_labels(labels, expand)
    window = 2 * expand + 1
    high = ndimage.maximum_filter(grown, window)
    low = ndimage.minimum_filter(np.where(grown > 0, grown, grown.max() + 1), window)
    return np.where((labels > 0) | ((grown > 0) & (high != low)), grown, 0)


def _watershed(probability: np.ndarray, foreground: np.ndarray, threshold: float, min_size: int) -> np.ndarray:
    """The seeded watershed of :func:`instances_from_foreground`, labels as int."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    core = probability > (1 + threshold) / 2
    distance = ndimage.distance_transform_edt(core)
    # Unsmoothed, the pixel-grid distance has spurious ridge maxima that over-split objects.
    peaks = h_maxima(ndimage.gaussian_filter(distance, 1.0), 1.0).astype(bool) & core
    markers, count = ndimage.label(peaks)
    # Core specks under min_size stay unseeded: seeding them over-splits noisy maps.
    for regions, smallest in ((core, max(min_size, 1)), (foreground, 1)):
        parts = ndimage.label(regions)[0]
        seeded = np.bincount(parts.ravel()) < smallest
        seeded[parts[markers > 0]] = True
        unseeded = regions & ~seeded[parts]
        markers[unseeded] = count + parts[unseeded]
        count = int(markers.max())
    return watershed(-distance, markers, mask=foreground)


@dataclass(frozen=True)
class ObjectMatch:
    """Object counts of one image or, summed with ``+``, of many (``sum(matches, ObjectMatch())``).

    ``predicted`` and ``true`` count objects; ``matched[i]`` counts (predicted, true) pairs with
    IoU > ``THRESHOLDS[i]``, the true positives at that threshold.

    Example:
        >>> a = ObjectMatch(predicted=2, true=1, matched=(1,) * 10)
        >>> (a + ObjectMatch(predicted=0, true=1)).scores()["recall"]
        0.5
    """

    predicted: int = 0
    true: int = 0
    matched: tuple[int, ...] = field(default=(0,) * len(THRESHOLDS))

    def __post_init__(self) -> None:
        object.__setattr__(self, "matched", tuple(int(m) for m in self.matched))
        if self.predicted < 0 or self.true < 0:
            raise ValueError(f"object counts must be >= 0, got predicted={self.predicted}, true={self.true}")
        if len(self.matched) != len(THRESHOLDS):
            raise ValueError(f"matched needs one count per threshold {THRESHOLDS}, got {len(self.matched)}")
        if any(b > a for a, b in zip(self.matched, self.matched[1:])) or self.matched[-1] < 0:
            raise ValueError(f"matched counts must be >= 0 and not grow with the threshold, got {self.matched}")
        if self.matched[0] > min(self.predicted, self.true):
            raise ValueError(f"{self.matched[0]} matches but only {self.predicted} predicted and {self.true} "
                             "true objects")

    def __add__(self, other: object) -> ObjectMatch:
        if not isinstance(other, ObjectMatch):
            return NotImplemented
        return ObjectMatch(self.predicted + other.predicted, self.true + other.true,
                           tuple(a + b for a, b in zip(self.matched, other.matched)))

    def __radd__(self, other: object) -> ObjectMatch:
        # Lets the built-in sum() start from 0.
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    def average_precision(self, index: int) -> float:
        """``TP / (TP + FP + FN)`` at ``THRESHOLDS[index]``; 1.0 when there are no objects at all."""
        tp = self.matched[index]
        union = self.predicted + self.true - tp
        return tp / union if union else 1.0

    def scores(self) -> dict[str, float | int]:
        """``precision``, ``recall``, ``f1`` (matching at IoU > 0.5), ``ap50`` (``TP / (TP + FP
        + FN)`` at 0.5), ``mean_ap`` (that over all ``THRESHOLDS``) and the counts ``predicted``,
        ``true``, ``matched`` (at 0.5).

        A score is 1.0 only when nothing is wrong: with neither predicted nor true objects every
        score is 1.0; precision without predictions, and recall without true objects, are 1.0
        when the other side is empty too and 0.0 otherwise.

        Example:
            >>> scores = ObjectMatch(predicted=4, true=2, matched=(2, 2, 2, 2, 2, 0, 0, 0, 0, 0)).scores()
            >>> scores["precision"], scores["recall"], scores["ap50"], scores["mean_ap"]
            (0.5, 1.0, 0.5, 0.25)
        """
        tp, n_pred, n_true = self.matched[0], self.predicted, self.true
        return {
            "precision": tp / n_pred if n_pred else float(n_true == 0),
            "recall": tp / n_true if n_true else float(n_pred == 0),
            "f1": 2 * tp / (n_pred + n_true) if n_pred + n_true else 1.0,
            "ap50": self.average_precision(0),
            "mean_ap": sum(self.average_precision(i) for i in range(len(THRESHOLDS))) / len(THRESHOLDS),
            "predicted": n_pred,
            "true": n_true,
            "matched": tp,
        }


def _dense_ids(labels: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """``labels`` renumbered 0..N (0 stays background) as int64, and N."""
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"{name} must hold integer instance labels, got dtype {labels.dtype}")
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise ValueError(f"{name} has negative labels; use 0 for background and > 0 for instances")
    ids, dense = np.unique(labels.ravel(), return_inverse=True)
    if ids.size and ids[0] != 0:
        dense = dense + 1
    return dense.astype(np.int64), int(np.count_nonzero(ids))


def match_objects(predicted: np.ndarray, true: np.ndarray) -> ObjectMatch:
    """Match the instances of ``predicted`` to those of ``true`` (label arrays of one shape, 0 =
    background, any other value one object) by IoU; returns the counts of :class:`ObjectMatch`.

    Example:
        >>> true = np.array([[1, 1, 1, 1, 0, 5, 5]])
        >>> pred = np.array([[9, 9, 9, 0, 0, 3, 3]])  # IoU 0.75 and 1.0
        >>> match = match_objects(pred, true)
        >>> match.matched
        (2, 2, 2, 2, 2, 1, 1, 1, 1, 1)
        >>> round(match.scores()["mean_ap"], 4)  # 5 thresholds at 2/2, 5 at 1/3
        0.6667
    """
    predicted, true = np.asarray(predicted), np.asarray(true)
    if predicted.shape != true.shape:
        raise ValueError(f"predicted {predicted.shape} and true {true.shape} label arrays differ in shape")
    pred_ids, n_pred = _dense_ids(predicted, "predicted")
    true_ids, n_true = _dense_ids(true, "true")
    area_pred = np.bincount(pred_ids, minlength=n_pred + 1)
    area_true = np.bincount(true_ids, minlength=n_true + 1)
    # Only overlapping pairs are counted (not a dense n_pred x n_true matrix, which can be huge).
    both = (pred_ids > 0) & (true_ids > 0)
    pairs, inter = np.unique(pred_ids[both] * (n_true + 1) + true_ids[both], return_counts=True)
    union = area_pred[pairs // (n_true + 1)] + area_true[pairs % (n_true + 1)] - inter
    # IoU > p / 100 in integers, so a constructed IoU of exactly 0.6 is not "> 0.6" by rounding.
    matched = tuple(int(np.count_nonzero(100 * inter > p * union)) for p in _PERCENTS)
    return ObjectMatch(n_pred, n_true, matched)
