"""segkit.scoring.metrics against confusion matrices worked out by hand (FCN score.py definitions).

Rows of a confusion matrix are ground truth, columns are predictions.
"""

from __future__ import annotations

import math

import pytest
import torch

from segkit.scoring.metrics import SegmentationMetrics, scores_from_confusion

NAMES = ["bg", "cat", "dog", "bird"]

# Ten pixels, as (ground truth, prediction) pairs, with C = 4 classes:
#   gt 0 -> pred 0  x3      gt 0 -> pred 1  x1
#   gt 1 -> pred 1  x2      gt 1 -> pred 2  x1   ("dog" appears only in the prediction)
#   gt 255 -> pred 0         (ignore_index: excluded)
#   gt 7 -> pred 1           (label >= C: excluded)
#   gt -1 -> pred 3          (label < 0: excluded)
# "bird" (3) is in neither the valid ground truth nor the valid predictions.
TARGET = torch.tensor([[[0, 0, 0, 0, 1], [1, 1, 255, 7, -1]]])
PREDS = torch.tensor([[[0, 0, 0, 1, 1], [1, 2, 0, 1, 3]]])
EXPECTED_CONFUSION = torch.tensor(
    [
        [3, 1, 0, 0],
        [0, 2, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
)
# Worked out by hand from EXPECTED_CONFUSION (total 7 valid pixels):
EXPECTED_PIXEL_ACC = 5 / 7  # trace / sum
EXPECTED_ACC = [3 / 4, 2 / 3, math.nan, math.nan]  # diag / rowsum (0/0 -> NaN)
EXPECTED_MEAN_ACC = (3 / 4 + 2 / 3) / 2
EXPECTED_IOU = [3 / (4 + 3 - 3), 2 / (3 + 3 - 2), 0 / (0 + 1 - 0), math.nan]  # diag / (row + col - diag)
EXPECTED_MIOU = (3 / 4 + 2 / 4 + 0.0) / 3  # the prediction-only class counts, the absent one not
EXPECTED_FWIOU = (4 / 7) * (3 / 4) + (3 / 7) * (2 / 4)  # freq = rowsum / sum, over freq > 0
# Dice = 2 TP / (2 TP + FP + FN): bg 2*3 / (6 + 0 + 1), cat 2*2 / (4 + 1 + 1), dog 0 / (0 + 1 + 0).
EXPECTED_DICE = [6 / 7, 4 / 6, 0.0, math.nan]
EXPECTED_MDICE = (6 / 7 + 4 / 6 + 0.0) / 3


def metric_after(preds: torch.Tensor, target: torch.Tensor, **kwargs) -> SegmentationMetrics:
    metric = SegmentationMetrics(num_classes=4, class_names=NAMES, **kwargs)
    metric.update(preds, target)
    return metric


def assert_same_with_nans(actual: torch.Tensor, expected: list[float]) -> None:
    expected_tensor = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual, expected_tensor, equal_nan=True, rtol=0, atol=1e-12)


def test_confusion_matrix_excludes_ignore_index_and_out_of_range_labels() -> None:
    metric = metric_after(PREDS, TARGET)
    assert torch.equal(metric.confmat.cpu(), EXPECTED_CONFUSION)


def test_scores_follow_the_fcn_formulas() -> None:
    scores = metric_after(PREDS, TARGET).compute()
    assert scores["pixel_acc"].item() == pytest.approx(EXPECTED_PIXEL_ACC, abs=1e-12)
    assert scores["mean_acc"].item() == pytest.approx(EXPECTED_MEAN_ACC, abs=1e-12)
    assert scores["mIoU"].item() == pytest.approx(EXPECTED_MIOU, abs=1e-12)
    assert scores["fwIoU"].item() == pytest.approx(EXPECTED_FWIOU, abs=1e-12)
    assert_same_with_nans(scores["acc"], EXPECTED_ACC)
    assert_same_with_nans(scores["IoU"], EXPECTED_IOU)
    assert_same_with_nans(scores["Dice"], EXPECTED_DICE)
    assert scores["mDice"].item() == pytest.approx(EXPECTED_MDICE, abs=1e-12)


def test_dice_is_f1_of_the_same_matrix_so_two_iou_over_one_plus_iou() -> None:
    confusion = torch.randint(0, 50, (5, 5))
    scores = scores_from_confusion(confusion)
    torch.testing.assert_close(scores["Dice"], 2 * scores["IoU"] / (1 + scores["IoU"]))


def test_class_absent_everywhere_is_nan_and_left_out_of_the_means() -> None:
    scores = metric_after(PREDS, TARGET).compute()
    assert math.isnan(scores["IoU"][3].item())
    assert math.isnan(scores["acc"][3].item())
    # Counting it as 0 would give 1.25 / 4 instead of 1.25 / 3.
    assert scores["mIoU"].item() != pytest.approx(1.25 / 4)
    assert not math.isnan(scores["mIoU"].item())
    assert not math.isnan(scores["mean_acc"].item())
    assert not math.isnan(scores["fwIoU"].item())


def test_class_only_in_the_prediction_has_iou_zero_and_counts_in_the_mean() -> None:
    scores = metric_after(PREDS, TARGET).compute()
    assert scores["IoU"][2].item() == 0.0
    # Left out, the mean would be 1.25 / 2.
    assert scores["mIoU"].item() == pytest.approx(1.25 / 3)
    # Its accuracy is undefined (no ground-truth pixel) and does not enter mean_acc.
    assert math.isnan(scores["acc"][2].item())


def test_scores_from_confusion_matches_the_metric_and_is_float64() -> None:
    direct = scores_from_confusion(EXPECTED_CONFUSION)
    via_metric = metric_after(PREDS, TARGET).compute()
    for key in ("pixel_acc", "mean_acc", "mIoU", "fwIoU", "IoU", "acc"):
        assert direct[key].dtype == torch.float64
        torch.testing.assert_close(direct[key], via_metric[key], equal_nan=True)


def test_two_class_example_from_the_docstring() -> None:
    # [[3, 1], [0, 4]]: IoU 3/4 and 4/5, mean 0.775.
    scores = scores_from_confusion(torch.tensor([[3, 1], [0, 4]]))
    assert scores["mIoU"].item() == pytest.approx((3 / 4 + 4 / 5) / 2)


def test_logits_are_argmaxed_over_the_class_dimension() -> None:
    # Logits (N, C, H, W) whose argmax over C is PREDS, with a different maximum per pixel.
    logits = torch.randn(1, 4, 2, 5, generator=torch.Generator().manual_seed(0))
    logits.scatter_(1, PREDS.unsqueeze(1), 10.0)
    from_logits = metric_after(logits, TARGET)
    from_indices = metric_after(PREDS, TARGET)
    assert torch.equal(from_logits.confmat, from_indices.confmat)


def test_ignore_index_is_configurable() -> None:
    target = torch.tensor([[[0, 1, 9]]])
    preds = torch.tensor([[[0, 0, 1]]])
    metric = SegmentationMetrics(num_classes=10, ignore_index=9)
    metric.update(preds, target)
    assert metric.confmat.sum().item() == 2
    assert metric.compute()["pixel_acc"].item() == pytest.approx(1 / 2)


def test_accumulation_is_dataset_level_not_an_average_over_batches() -> None:
    # Batch A: 4 background pixels, all right -> batch mIoU 1.0 (class 1 absent).
    target_a, preds_a = torch.tensor([[[0, 0], [0, 0]]]), torch.tensor([[[0, 0], [0, 0]]])
    # Batch B: gt [0, 1, 1, 1], all predicted 1 -> IoU 0 and 3/4 -> batch mIoU 0.375.
    target_b, preds_b = torch.tensor([[[0, 1], [1, 1]]]), torch.tensor([[[1, 1], [1, 1]]])
    # Together: [[4, 1], [0, 3]] -> IoU 4/5 and 3/4 -> mIoU 0.775 (the batch average is 0.6875).
    two_updates = SegmentationMetrics(num_classes=2)
    two_updates.update(preds_a, target_a)
    two_updates.update(preds_b, target_b)
    one_update = SegmentationMetrics(num_classes=2)
    one_update.update(torch.cat([preds_a, preds_b]), torch.cat([target_a, target_b]))

    batch_means = []
    for preds, target in ((preds_a, target_a), (preds_b, target_b)):
        single = SegmentationMetrics(num_classes=2)
        single.update(preds, target)
        batch_means.append(single.compute()["mIoU"].item())

    accumulated = two_updates.compute()
    assert accumulated["mIoU"].item() == pytest.approx(0.775)
    assert sum(batch_means) / 2 == pytest.approx(0.6875)
    for key in ("pixel_acc", "mean_acc", "mIoU", "fwIoU", "IoU"):
        torch.testing.assert_close(accumulated[key], one_update.compute()[key], equal_nan=True)


def test_reset_forgets_previous_updates() -> None:
    metric = metric_after(PREDS, TARGET)
    metric.reset()
    metric.update(torch.tensor([[[1]]]), torch.tensor([[[1]]]))
    assert metric.confmat.sum().item() == 1
    assert metric.compute()["pixel_acc"].item() == 1.0


def test_as_log_dict_has_exactly_the_documented_keys() -> None:
    metric = metric_after(PREDS, TARGET)
    logged = metric.as_log_dict("val")
    assert set(logged) == {
        "val/mIoU",
        "val/mDice",
        "val/pixel_acc",
        "val/mean_acc",
        "val/fwIoU",
        *(f"val/IoU/{name}" for name in NAMES),
        *(f"val/Dice/{name}" for name in NAMES),
    }
    assert logged["val/mIoU"].item() == pytest.approx(EXPECTED_MIOU)
    assert logged["val/IoU/cat"].item() == pytest.approx(0.5)
    assert math.isnan(logged["val/IoU/bird"].item())


def test_default_class_names_are_numbered() -> None:
    metric = SegmentationMetrics(num_classes=3)
    metric.update(torch.tensor([[[0, 1, 2]]]), torch.tensor([[[0, 1, 2]]]))
    assert {key for key in metric.as_log_dict("test") if "/IoU/" in key} == {
        "test/IoU/class_0", "test/IoU/class_1", "test/IoU/class_2",
    }


def test_class_names_must_match_num_classes() -> None:
    with pytest.raises(ValueError, match="class_names"):
        SegmentationMetrics(num_classes=3, class_names=["a", "b"])


@pytest.mark.parametrize("num_classes", [2, 4])
@pytest.mark.parametrize("ignore_index", [255, None, 0, 1, -1, 4])
def test_counts_equal_boolean_indexing_for_every_ignore_rule(ignore_index: int | None, num_classes: int) -> None:
    # Random targets with negatives, labels >= C and the ignore index, and logits with ties,
    # against the plain definition: keep the valid pixels, count (truth, argmax) pairs. Ignore
    # indices inside [0, C) take the masked path, the others the one-pass path; 2 classes take
    # a comparison instead of the max over classes.
    generator = torch.Generator().manual_seed(1)
    target = torch.randint(-3, 8, (3, 23, 17), generator=generator)
    target[0, :4] = 255
    logits = torch.randn(3, num_classes, 23, 17, generator=generator)
    logits[:, 1, :5] = logits[:, 0, :5]  # ties: the first maximum wins
    valid = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        valid &= target != ignore_index
    expected = torch.bincount(target[valid] * num_classes + logits.argmax(1)[valid],
                              minlength=num_classes**2).reshape(num_classes, num_classes)
    metric = SegmentationMetrics(num_classes, ignore_index=ignore_index)
    metric.update(logits, target)
    assert torch.equal(metric.confmat, expected)
    assert target.min() == -3  # the update left its inputs alone


@pytest.mark.parametrize("num_classes", [2, 4])
@pytest.mark.parametrize("ignore_index", [255, 1])
def test_the_update_reads_nothing_back_from_the_device(ignore_index: int, num_classes: int) -> None:
    # On PyTorch's meta device an op that needs the data on the host raises (torch.bincount
    # sizes its output from the largest value): on a GPU that is a sync in every training step.
    metric = SegmentationMetrics(num_classes, ignore_index=ignore_index).to("meta")
    logits = torch.randn(2, num_classes, 7, 5, device="meta")
    metric.update(logits, torch.zeros(2, 7, 5, dtype=torch.long, device="meta"))
    assert metric.confmat.shape == (num_classes, num_classes)


def test_uint8_masks_count_as_their_int64_copies() -> None:
    # Two classes: the prediction is a comparison (bool); bool + uint8 stays uint8 in torch and
    # would wrap target * C + pred around 256.
    generator = torch.Generator().manual_seed(2)
    target = torch.randint(0, 2, (2, 9, 11), generator=generator).to(torch.uint8)
    target[:, :2] = 255
    logits = torch.randn(2, 2, 9, 11, generator=generator)
    as_uint8, as_int64 = SegmentationMetrics(2), SegmentationMetrics(2)
    as_uint8.update(logits, target)
    as_int64.update(logits, target.long())
    assert torch.equal(as_uint8.confmat, as_int64.confmat) and as_int64.confmat.sum() == 2 * 7 * 11


def _random_batch(generator: torch.Generator, num_classes: int, size: tuple[int, int], logits: bool,
                  mask_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # Odd sizes, an ignore band, and the last class absent from the ground truth (predicted only).
    target = torch.randint(0, num_classes - 1, (2, *size), generator=generator)
    target[:, 0] = 255
    if logits:
        preds = torch.randn(2, num_classes, *size, generator=generator, requires_grad=True)
    else:
        preds = torch.randint(0, num_classes, (2, *size), generator=generator)
    return preds, target.to(mask_dtype)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_deferred_counting_equals_counting_at_once_whichever_way_the_state_is_read(num_classes: int) -> None:
    # The training metric holds small batches and counts them together: every way torchmetrics
    # (and Lightning's checkpoints and DDP) reads or replaces the state must see exactly the
    # matrix that counting each batch at once gives. Each read below comes while batches are held.
    generator = torch.Generator().manual_seed(3)
    now = SegmentationMetrics(num_classes)
    held = SegmentationMetrics(num_classes, defer_elements=10_000)
    for metric in (now, held):
        metric.persistent(True)  # in state_dict, as the training metric is (exact resume)
    layouts = [((9, 7), True, torch.long), ((9, 7), True, torch.long), ((5, 11), True, torch.long),
               ((9, 7), False, torch.long), ((9, 7), True, torch.uint8)]

    def update_both(step: int) -> None:
        size, logits, mask_dtype = layouts[step % len(layouts)]
        preds, target = _random_batch(generator, num_classes, size, logits, mask_dtype)
        now.update(preds, target)
        held.update(preds, target)

    def hold_some() -> None:
        for step in range(2):
            update_both(step)
        assert held._held, "the test reads the state while batches are held"

    for step in range(len(layouts) * 2):  # sizes, dtypes and class indices change between batches
        update_both(step)
    hold_some()
    torch.testing.assert_close(held.compute()["IoU"], now.compute()["IoU"], equal_nan=True, rtol=0, atol=0)
    hold_some()
    assert torch.equal(held.state_dict()["confmat"], now.state_dict()["confmat"])  # checkpoints
    hold_some()
    assert torch.equal(held.metric_state["confmat"], now.metric_state["confmat"])
    hold_some()
    held.sync(distributed_available=lambda: False)  # what compute() calls first, on every rank
    assert torch.equal(held.confmat, now.confmat)
    hold_some()
    assert torch.equal(held.to("cpu").confmat, now.confmat)  # a device move
    hold_some()
    batch = _random_batch(generator, num_classes, (9, 7), True, torch.long)
    torch.testing.assert_close(held(*batch)["mIoU"], now(*batch)["mIoU"], equal_nan=True)  # forward
    assert torch.equal(held.confmat, now.confmat)
    hold_some()
    other_now, other_held = SegmentationMetrics(num_classes), SegmentationMetrics(num_classes, defer_elements=10_000)
    extra = _random_batch(generator, num_classes, (9, 7), True, torch.long)
    other_now.update(*extra)
    other_held.update(*extra)
    now.merge_state(other_now)
    held.merge_state(other_held)
    assert torch.equal(held.confmat, now.confmat)
    hold_some()
    held.load_state_dict(now.state_dict())  # a loaded state replaces what was held
    assert not held._held and torch.equal(held.confmat, now.confmat)
    hold_some()
    now.reset()
    held.reset()
    assert not held._held and held.confmat.sum() == 0 and now.confmat.sum() == 0


def test_deferred_counting_holds_no_autograd_graph_and_counts_at_its_element_budget() -> None:
    held = SegmentationMetrics(4, defer_elements=2 * 4 * 9 * 7 * 3)  # three batches of (2, 4, 9, 7)
    generator = torch.Generator().manual_seed(4)
    for _ in range(2):
        held.update(*_random_batch(generator, 4, (9, 7), True, torch.long))
    assert len(held._held) == 2 and held.confmat.sum() == 0
    assert not any(preds.requires_grad for preds, _ in held._held)
    held.update(*_random_batch(generator, 4, (9, 7), True, torch.long))
    assert not held._held and held.confmat.sum() == 3 * 2 * 8 * 7  # all three, without the ignore band
