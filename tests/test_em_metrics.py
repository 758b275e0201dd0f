"""segkit.scoring.em_metrics: foreground-restricted Rand scores and EM pixel error against hand values.

The pixel error is what the module logs: ``1 - pixel_acc`` of the split's confusion matrix.

In the label images of ``rand_scores`` 0 is membrane/background; in the masks of ``EMMetrics``
class 1 is membrane, class 0 cell interior and 255 ignored.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segkit.scoring.em_metrics import EMMetrics, rand_scores
from segkit.scoring.metrics import SegmentationMetrics

MEMBRANE, CELL, IGNORE = 1, 0, 255


class EMScores:
    """The ISBI scores as the module logs them: V_rand from EMMetrics, the pixel error from the
    confusion matrix."""

    def __init__(self) -> None:
        self.em, self.confusion = EMMetrics(), SegmentationMetrics(num_classes=2)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.em.update(preds, target)
        self.confusion.update(preds, target)

    def compute(self) -> dict[str, torch.Tensor]:
        return {**self.em.compute(), "pixel_error": 1 - self.confusion.compute()["pixel_acc"]}


def test_identical_segmentations_score_one() -> None:
    labels = np.array([[1, 1, 0, 2], [3, 3, 0, 2]])
    assert rand_scores(labels, labels) == {"v_rand": 1.0, "rand_split": 1.0, "rand_merge": 1.0}


def test_merging_two_true_segments_lowers_only_the_merge_score() -> None:
    scores = rand_scores(np.array([[7, 7, 7, 7]]), np.array([[1, 1, 2, 2]]))
    # joint 2^2 + 2^2 = 8, truth 2^2 + 2^2 = 8, prediction 4^2 = 16.
    assert scores["rand_split"] == 1.0
    assert scores["rand_merge"] == pytest.approx(0.5)
    assert scores["v_rand"] == pytest.approx(2 / 3)


def test_splitting_a_true_segment_lowers_only_the_split_score() -> None:
    scores = rand_scores(np.array([[1, 1, 2, 2]]), np.array([[5, 5, 5, 5]]))
    assert scores["rand_merge"] == 1.0
    assert scores["rand_split"] == pytest.approx(0.5)


def test_hand_computed_value() -> None:
    # The last pixel is true background: left out. On the other five:
    # joint (1,3)=3, (2,3)=1, (2,4)=1 -> 11; truth 3^2 + 2^2 = 13; prediction 4^2 + 1^2 = 17.
    true = np.array([[1, 1, 1, 2, 2, 0]])
    pred = np.array([[3, 3, 3, 3, 4, 4]])
    scores = rand_scores(pred, true)
    assert scores["rand_split"] == pytest.approx(11 / 13)
    assert scores["rand_merge"] == pytest.approx(11 / 17)
    assert scores["v_rand"] == pytest.approx(2 / (13 / 11 + 17 / 11))


def test_unassigned_prediction_pixels_are_singletons() -> None:
    # Official script: predicted 0 inside true foreground = one segment per pixel.
    # joint 2^2 + 1 + 1 = 6, prediction 2^2 + 1 + 1 = 6, truth 4^2 = 16.
    scores = rand_scores(np.array([[0, 0, 5, 5]]), np.array([[1, 1, 1, 1]]))
    assert scores["rand_merge"] == 1.0
    assert scores["rand_split"] == pytest.approx(6 / 16)


def test_label_values_do_not_matter() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 6, (30, 40))
    pred = rng.integers(0, 5, (30, 40))
    scores = rand_scores(pred, true)
    true_perm = np.array([0, 9, 3, 1_000_000, 2, 17])[true]  # 0 stays background
    pred_perm = np.array([0, 4, 10**12, 8, 1])[pred]
    for key, value in rand_scores(pred_perm, true_perm).items():
        assert value == pytest.approx(scores[key], rel=1e-12)
    assert 0 < scores["v_rand"] < 1


def test_prediction_outside_true_foreground_is_ignored() -> None:
    true = np.array([[1, 1, 0, 2, 2]])
    a = rand_scores(np.array([[1, 1, 1, 2, 2]]), true)
    b = rand_scores(np.array([[1, 1, 2, 2, 2]]), true)
    assert a == b == {"v_rand": 1.0, "rand_split": 1.0, "rand_merge": 1.0}


def test_no_true_foreground_is_nan_and_shapes_must_match() -> None:
    assert all(math.isnan(v) for v in rand_scores(np.ones((2, 2)), np.zeros((2, 2))).values())
    with pytest.raises(ValueError, match="size"):
        rand_scores(np.ones((2, 2)), np.ones((2, 3)))


def grid_mask() -> torch.Tensor:
    """32 x 32: membranes on rows and columns 10 and 21, nine 10 x 10 cells."""
    mask = torch.full((32, 32), CELL, dtype=torch.long)
    mask[[10, 21], :] = MEMBRANE
    mask[:, [10, 21]] = MEMBRANE
    return mask


def perfect_logits(masks: torch.Tensor) -> torch.Tensor:
    return F.one_hot(masks, 2).permute(0, 3, 1, 2).float() * 5.0


def erase_membrane(masks: torch.Tensor) -> torch.Tensor:
    """The prediction: the 10 px membrane between the top-left and top-middle cells erased."""
    pred = masks.clone()
    pred[..., 0:10, 10] = CELL
    return pred


def test_perfect_prediction_has_no_error() -> None:
    metric = EMScores()
    masks = grid_mask()[None]
    metric.update(perfect_logits(masks), masks)
    scores = metric.compute()
    assert scores["pixel_error"].item() == 0.0
    assert scores["v_rand"].item() == 1.0 and scores["rand_error"].item() == 0.0


def test_erasing_one_membrane_merges_two_cells() -> None:
    metric = EMScores()
    masks = grid_mask()[None]
    metric.update(perfect_logits(erase_membrane(masks)), masks)
    scores = metric.compute()
    assert scores["pixel_error"].item() == 10 / 1024  # exactly the erased fraction
    # Nine 100 px cells, two merged: split 1, merge 9e4 / (200^2 + 7 * 100^2) = 9/11 -> 0.9.
    assert scores["v_rand"].item() == pytest.approx(0.9)
    assert scores["rand_error"].item() == pytest.approx(0.1)


def test_scores_accumulate_pixels_and_average_v_rand_over_images() -> None:
    masks = torch.stack([grid_mask(), grid_mask()])
    preds = torch.stack([grid_mask(), erase_membrane(grid_mask())])  # class indices work too
    metric = EMScores()
    metric.update(preds, masks)
    scores = metric.compute()
    assert scores["pixel_error"].item() == 10 / 2048
    assert scores["v_rand"].item() == pytest.approx((1.0 + 0.9) / 2)


def test_ignored_pixels_count_nowhere() -> None:
    masks = grid_mask()[None].clone()
    masks[..., 0:10, 10] = IGNORE  # the very pixels the prediction gets "wrong"
    metric = EMScores()
    metric.update(erase_membrane(grid_mask()[None]), masks)
    scores = metric.compute()
    assert scores["pixel_error"].item() == 0.0
    assert scores["v_rand"].item() == pytest.approx(0.9)  # still a merge of two true cells


def test_images_without_true_foreground_are_left_out_of_v_rand() -> None:
    metric = EMMetrics()
    all_membrane = torch.full((1, 32, 32), MEMBRANE)
    metric.update(all_membrane, all_membrane)
    metric.update(grid_mask()[None], grid_mask()[None])
    assert metric.compute()["v_rand"].item() == 1.0


def test_states_are_sums_so_merged_ranks_equal_one_pass() -> None:
    masks = torch.stack([grid_mask(), grid_mask()])
    preds = torch.stack([grid_mask(), erase_membrane(grid_mask())])
    rank0, rank1, single = EMMetrics(), EMMetrics(), EMMetrics()
    rank0.update(preds[:1], masks[:1])
    rank1.update(preds[1:], masks[1:])
    single.update(preds, masks)
    rank0.merge_state(rank1)
    for key, value in single.compute().items():
        assert rank0.compute()[key].item() == pytest.approx(value.item())


def test_reset_forgets_updates() -> None:
    metric = EMMetrics()
    metric.update(erase_membrane(grid_mask()[None]), grid_mask()[None])
    metric.reset()
    metric.update(grid_mask()[None], grid_mask()[None])
    assert metric.compute()["v_rand"].item() == 1.0  # the merge before the reset is forgotten
