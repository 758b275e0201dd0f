"""segkit.scoring.objects: instance labels from a foreground probability map, and object scores
(matching at IoU thresholds 0.5 ... 0.95) on hand-made label arrays whose answers are known.

In every label array 0 is background and any other value one object.
"""

from __future__ import annotations

import numpy as np
import pytest

from segkit.benchmarks.userdata_render import render_nuclei, separated_foreground
from segkit.benchmarks.userdata_scores import watershed_baseline
from segkit.scoring.objects import THRESHOLDS, ObjectMatch, instances_from_foreground, match_objects


def two_squares(gap_value: float, gap: int = 1) -> np.ndarray:
    """Two 8x8 squares of probability 0.9, side by side, ``gap`` columns of ``gap_value`` between."""
    p = np.zeros((10, 18 + gap))
    p[1:9, 1:9] = p[1:9, 9 + gap:17 + gap] = 0.9
    p[1:9, 9:9 + gap] = gap_value
    return p


def disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.hypot(yy - cy, xx - cx) <= r


# instances_from_foreground ---------------------------------------------------------------------

def test_a_weakly_predicted_line_between_touching_squares_splits_only_with_watershed_seeds() -> None:
    p = two_squares(gap_value=0.6)  # above the 0.5 threshold: the foreground is one rectangle
    merged = instances_from_foreground(p, seeds="components", expand=0)
    split = instances_from_foreground(p, seeds="watershed", expand=0)
    assert merged.max() == 1
    assert split.max() == 2
    left, right = np.unique(split[1:9, 1:9]), np.unique(split[1:9, 10:18])
    assert left.size == right.size == 1 and left[0] != right[0]


def test_touching_discs_joined_by_a_neck_split_with_watershed_seeds() -> None:
    both = disc((30, 44), 15, 13, 9) | disc((30, 44), 15, 29, 9)  # centres 16 apart: they overlap
    p = np.where(both, 0.95, 0.02)
    assert instances_from_foreground(p, seeds="components").max() == 1
    labels = instances_from_foreground(p, seeds="watershed")
    assert labels.max() == 2
    assert labels[15, 13] != labels[15, 29]


@pytest.mark.parametrize("shape", ["disc", "square", "ellipse"])
def test_a_single_convex_object_stays_one_object(shape: str) -> None:
    yy, xx = np.mgrid[:40, :40]
    mask = {"disc": disc((40, 40), 20, 20, 12), "square": (abs(yy - 20) <= 10) & (abs(xx - 20) <= 10),
            "ellipse": ((yy - 20) / 8) ** 2 + ((xx - 20) / 16) ** 2 <= 1}[shape]
    labels = instances_from_foreground(np.where(mask, 0.9, 0.1))
    assert labels.max() == 1
    assert np.array_equal(labels > 0, mask)  # alone, it does not grow outward


def test_a_uniformly_faint_object_without_a_core_is_still_found() -> None:
    p = np.where(disc((30, 30), 15, 15, 8), 0.6, 0.0)  # foreground, but nowhere above the 0.75 core
    assert instances_from_foreground(p).max() == 1


def test_a_core_speck_under_min_size_in_a_faint_rim_does_not_split_its_object() -> None:
    yy, xx = np.mgrid[:31, :31]
    radius = np.hypot(yy - 15, xx - 15)
    p = np.where(radius <= 11, 0.6, 0.0)
    p[radius <= 5] = 0.9  # the core, above (1 + 0.5) / 2
    p[15, 24:26] = 0.9  # 2 core pixels apart from it, as noise leaves them
    assert instances_from_foreground(p, min_size=8).max() == 1


def test_expand_gives_each_object_back_its_side_of_the_border_but_not_the_outside() -> None:
    # Separated-foreground labels make the border between touching objects 2 px of background.
    p = two_squares(gap_value=0.1, gap=2)
    for seeds in ("components", "watershed"):
        tight = instances_from_foreground(p, seeds=seeds, expand=0)
        grown = instances_from_foreground(p, seeds=seeds, expand=1)
        assert (tight[1:9, 9:11] == 0).all()
        assert (grown[1:9, 9] == grown[4, 4]).all() and (grown[1:9, 10] == grown[4, 14]).all()
        assert np.array_equal(grown[:, :9] > 0, tight[:, :9] > 0)  # the outer edges stay put
        assert np.array_equal(grown[:, 11:] > 0, tight[:, 11:] > 0)


def test_objects_under_min_size_are_dropped_and_the_rest_numbered_from_one() -> None:
    p = np.zeros((10, 30))
    p[2:6, 2:6] = p[2:4, 12:14] = p[2:6, 20:24] = 0.9  # 16, 4 and 16 pixels
    for seeds in ("components", "watershed"):
        labels = instances_from_foreground(p, seeds=seeds, min_size=5, expand=0)
        assert sorted(np.unique(labels)) == [0, 1, 2]
        assert (labels[2:4, 12:14] == 0).all()
        assert instances_from_foreground(p, seeds=seeds, min_size=4, expand=0).max() == 3


def test_nothing_above_the_threshold_gives_empty_uint16_labels() -> None:
    labels = instances_from_foreground(np.full((7, 9), 0.3))
    assert labels.dtype == np.uint16 and labels.shape == (7, 9) and not labels.any()


def test_label_dtype_widens_to_uint32_from_65535_objects() -> None:
    p = np.zeros((512, 512))
    p[::2, ::2] = 0.9  # 256 x 256 = 65536 isolated single pixels
    labels = instances_from_foreground(p, seeds="components", min_size=1, expand=0)
    assert labels.dtype == np.uint32 and labels.max() == 65536
    p[0, :4] = 0  # two pixels fewer: 65534 objects
    labels = instances_from_foreground(p, seeds="components", min_size=1, expand=0)
    assert labels.dtype == np.uint16 and labels.max() == 65534


def test_rendered_nuclei_with_weakly_predicted_borders_come_out_right_with_watershed_seeds() -> None:
    _, true = render_nuclei(np.random.default_rng(3), 128, 128)
    p = np.where(separated_foreground(true), 0.9, 0.05)
    border = (true > 0) & (p < 0.5)
    p[border] = 0.6  # every border between touching nuclei predicted weakly
    watershed = match_objects(instances_from_foreground(p), true).scores()
    components = match_objects(instances_from_foreground(p, seeds="components"), true).scores()
    assert border.any() and components["matched"] < watershed["matched"]
    assert watershed["f1"] >= 0.95


@pytest.mark.parametrize(("probability", "kwargs", "message"), [
    (np.zeros((2, 3, 3)), {}, "(H, W)"),
    (np.zeros((0, 3)), {}, "(H, W)"),
    (np.zeros((3, 3), np.uint8), {}, "floating"),
    (np.full((3, 3), 2.5), {}, "sigmoid"),
    (np.full((3, 3), np.nan), {}, "NaN"),
    (np.zeros((3, 3)), {"threshold": 1.0}, "threshold"),
    (np.zeros((3, 3)), {"seeds": "peaks"}, "seeds"),
    (np.zeros((3, 3)), {"min_size": -1}, "min_size"),
    (np.zeros((3, 3)), {"expand": 1.5}, "expand"),
])
def test_bad_arguments_raise_value_errors_naming_the_problem(probability: np.ndarray, kwargs: dict,
                                                             message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        instances_from_foreground(probability, **kwargs)


# match_objects and ObjectMatch -----------------------------------------------------------------

def test_identical_labelings_match_every_object_at_every_threshold() -> None:
    labels = np.array([[0, 3, 3, 0, 8], [0, 3, 3, 0, 8]])
    match = match_objects(labels, labels)
    assert match == ObjectMatch(predicted=2, true=2, matched=(2,) * len(THRESHOLDS))
    assert match.scores() == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "ap50": 1.0, "mean_ap": 1.0,
                              "predicted": 2, "true": 2, "matched": 2}


def test_a_prediction_shifted_to_iou_0_6_matches_at_0_5_and_0_55_only() -> None:
    true = np.zeros((10, 20), np.int64)
    pred = np.zeros((10, 20), np.int64)
    true[1:9, 2:10] = 1
    pred[1:9, 4:12] = 1  # an 8-wide square moved 2 columns: 6 / 10 of the union overlaps
    match = match_objects(pred, true)
    assert match.matched == (1, 1, 0, 0, 0, 0, 0, 0, 0, 0)
    scores = match.scores()
    assert scores["ap50"] == 1.0 and scores["f1"] == 1.0
    assert scores["mean_ap"] == pytest.approx(0.2)  # perfect at 2 of the 10 thresholds, nothing at 8


def test_iou_of_exactly_one_half_is_not_a_match() -> None:
    true = np.array([[1, 1, 2, 2]])
    pred = np.array([[5, 5, 5, 5]])  # covers each true object, twice its size: IoU 0.5 with each
    assert match_objects(pred, true) == ObjectMatch(predicted=1, true=2)


def test_large_non_consecutive_labels_of_mixed_dtypes_match() -> None:
    true = np.zeros((6, 12), np.uint32)
    true[1:5, 1:5], true[1:5, 7:11] = 70000, 4_000_000_000
    pred = np.zeros((6, 12), np.int64)
    pred[1:5, 1:5], pred[1:5, 7:10] = 2**40, 7  # the second covers 12 of 16 pixels: IoU 0.75
    match = match_objects(pred, true)
    assert (match.predicted, match.true) == (2, 2)
    assert match.matched == (2, 2, 2, 2, 2, 1, 1, 1, 1, 1)


def test_labels_covering_every_pixel_match_like_any_others() -> None:
    pred = np.array([[5, 5, 5, 7]])  # no background at all
    true = np.array([[1, 1, 1, 0]])
    assert match_objects(pred, true) == ObjectMatch(predicted=2, true=1, matched=(1,) * len(THRESHOLDS))


def test_only_overlaps_above_the_threshold_count_and_extra_objects_are_false_positives() -> None:
    true = np.array([[1, 1, 1, 1, 0, 2, 2, 2, 2, 0, 0]])
    pred = np.array([[4, 4, 4, 4, 0, 6, 0, 0, 0, 0, 9]])  # perfect, IoU 0.25, one in empty space
    scores = match_objects(pred, true).scores()
    assert (scores["predicted"], scores["true"], scores["matched"]) == (3, 2, 1)
    assert scores["precision"] == pytest.approx(1 / 3)
    assert scores["recall"] == 0.5
    assert scores["ap50"] == 0.25  # 1 right, 2 predicted wrongly, 1 true object missed


def test_pooling_two_images_adds_their_counts() -> None:
    first = match_objects(np.array([[1, 1, 0, 2, 2]]), np.array([[1, 1, 0, 2, 2]]))  # 2 of 2 found
    second = match_objects(np.zeros((1, 5), int), np.array([[0, 3, 3, 3, 0]]))  # 1 missed
    pooled = first + second
    assert pooled == ObjectMatch(predicted=2, true=3, matched=(2,) * len(THRESHOLDS))
    assert sum([first, second]) == pooled == sum([first, second], ObjectMatch())
    scores = pooled.scores()
    # Pooled, not averaged over images (which would give a recall of (1 + 0) / 2).
    assert (scores["precision"], scores["recall"]) == (1.0, pytest.approx(2 / 3))
    assert scores["ap50"] == pytest.approx(2 / 3) and scores["mean_ap"] == pytest.approx(2 / 3)


def test_no_objects_on_either_side_scores_one() -> None:
    scores = match_objects(np.zeros((4, 4), np.uint16), np.zeros((4, 4), np.uint16)).scores()
    assert scores == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "ap50": 1.0, "mean_ap": 1.0,
                      "predicted": 0, "true": 0, "matched": 0}


def test_predictions_without_true_objects_or_the_reverse_score_zero() -> None:
    some = np.array([[0, 1, 1, 0]])
    none = np.zeros_like(some)
    for pred, true in ((some, none), (none, some)):
        scores = match_objects(pred, true).scores()
        assert (scores["precision"], scores["recall"], scores["f1"], scores["ap50"], scores["mean_ap"]) == (0.0,) * 5
        assert scores["matched"] == 0


@pytest.mark.parametrize(("pred", "true", "message"), [
    (np.zeros((2, 2), int), np.zeros((2, 3), int), "shape"),
    (np.zeros((2, 2)), np.zeros((2, 2), int), "integer"),
    (np.array([[-1, 0]]), np.array([[1, 0]]), "negative"),
])
def test_bad_label_arrays_raise_value_errors(pred: np.ndarray, true: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        match_objects(pred, true)


def test_object_match_refuses_counts_that_cannot_come_from_a_matching() -> None:
    with pytest.raises(ValueError, match="one count per threshold"):
        ObjectMatch(predicted=1, true=1, matched=(1,))
    with pytest.raises(ValueError, match="only 1 predicted"):
        ObjectMatch(predicted=1, true=3, matched=(2,) * len(THRESHOLDS))
    with pytest.raises(ValueError, match="not grow"):
        ObjectMatch(predicted=2, true=2, matched=(1, 2) + (0,) * (len(THRESHOLDS) - 2))


# the classic watershed baseline of the nuclei benchmark ----------------------------------------

def test_watershed_baseline_splits_two_touching_bright_discs() -> None:
    left, right = disc((40, 60), 20, 20, 10), disc((40, 60), 20, 37, 10)  # centres 17 apart: overlapping
    true = np.where(left, 1, 0) + np.where(right & ~left, 2, 0)
    labels = watershed_baseline(np.where(left | right, 6000, 400).astype(np.uint16))
    assert labels.max() == 2
    assert match_objects(labels, true).matched[0] == 2
