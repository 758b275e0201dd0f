"""Cross-entropy, soft Dice, focal and their sums, each against a hand-written per-pixel
reference (numpy loops over pixels and classes), and the ``model.loss`` config files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import CONF_DIR
from omegaconf import OmegaConf

from segkit.errors import SegkitError
from segkit.scoring.losses import CrossEntropyLoss, DiceLoss, FocalLoss, build_loss

C, IGNORE = 3, 255


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (2, 3, 5, 4) and targets with ignored pixels; class 2 absent."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, C, 5, 4, generator=generator) * 2
    targets = torch.randint(0, 2, (2, 5, 4), generator=generator)
    targets[0, 0, :] = IGNORE
    targets[1, 2, 1] = IGNORE
    return logits, targets


def loss_from_file(name: str) -> torch.nn.Module:
    """The loss ``conf/model/loss/<name>.yaml`` configures, for C classes and the IGNORE label."""
    return build_loss(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "loss" / f"{name}.yaml")), C, IGNORE)


def pixels(logits: torch.Tensor, targets: torch.Tensor) -> list[tuple[np.ndarray, int]]:
    """``(softmax probabilities, label)`` of every valid pixel."""
    probs = logits.softmax(dim=1).numpy()
    out = []
    for n, y, x in np.ndindex(*targets.shape):
        label = int(targets[n, y, x])
        if label != IGNORE:
            out.append((probs[n, :, y, x].astype(np.float64), label))
    return out


def test_cross_entropy_with_class_weights_and_label_smoothing_follows_the_formula() -> None:
    logits, targets = batch()
    weights, eps = [0.5, 2.0, 1.0], 0.1
    numerator = denominator = 0.0
    for p, y in pixels(logits, targets):
        smoothed = sum(weights[c] * -math.log(p[c]) for c in range(C)) / C
        numerator += (1 - eps) * weights[y] * -math.log(p[y]) + eps * smoothed
        denominator += weights[y]
    loss = CrossEntropyLoss(C, IGNORE, class_weights=weights, label_smoothing=eps)(logits, targets)
    assert loss.item() == pytest.approx(numerator / denominator, rel=1e-5)


def test_summed_cross_entropy_is_the_mean_times_the_valid_pixel_count() -> None:
    logits, targets = batch()
    count = len(pixels(logits, targets))
    mean = CrossEntropyLoss(C, IGNORE)(logits, targets)
    total = CrossEntropyLoss(C, IGNORE, reduction="sum")(logits, targets)
    assert total.item() == pytest.approx(count * mean.item(), rel=1e-5)


@pytest.mark.parametrize("include_background", [True, False])
def test_dice_is_one_minus_the_mean_over_present_classes_of_batch_dice(include_background: bool) -> None:
    logits, targets = batch()
    overlap, predicted, truth = np.zeros(C), np.zeros(C), np.zeros(C)
    for p, y in pixels(logits, targets):
        for c in range(C):
            overlap[c] += p[c] * (y == c)
            predicted[c] += p[c]
            truth[c] += y == c
    counted = [c for c in range(C) if truth[c] > 0 and (include_background or c > 0)]  # class 2 is absent
    expected = 1 - np.mean([2 * overlap[c] / (predicted[c] + truth[c]) for c in counted])
    loss = DiceLoss(C, IGNORE, include_background=include_background)(logits, targets)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_dice_with_smoothing_counts_every_class() -> None:
    logits, targets = batch()
    overlap, predicted, truth = np.zeros(C), np.zeros(C), np.zeros(C)
    for p, y in pixels(logits, targets):
        overlap += p * (np.arange(C) == y)
        predicted += p
        truth += np.arange(C) == y
    expected = 1 - np.mean((2 * overlap + 1) / (predicted + truth + 1))
    assert DiceLoss(C, IGNORE, smooth=1.0)(logits, targets).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_loss_follows_the_formula(gamma: float) -> None:
    logits, targets = batch()
    alpha = [0.25, 0.75, 1.0]
    terms = [-alpha[y] * (1 - p[y]) ** gamma * math.log(p[y]) for p, y in pixels(logits, targets)]
    loss = FocalLoss(C, IGNORE, gamma=gamma, alpha=alpha)(logits, targets)
    assert loss.item() == pytest.approx(np.mean(terms), rel=1e-5)


def test_focal_loss_without_focusing_or_alpha_is_cross_entropy() -> None:
    logits, targets = batch(1)
    focal = FocalLoss(C, IGNORE, gamma=0.0)(logits, targets)
    assert focal.item() == pytest.approx(CrossEntropyLoss(C, IGNORE)(logits, targets).item(), rel=1e-5)


@pytest.mark.parametrize("name", ["cross_entropy", "dice", "focal", "dice_ce", "weight_map"])
def test_ignored_pixels_change_nothing_whatever_their_logits(name: str) -> None:
    loss = loss_from_file(name)
    logits, targets = batch()
    changed = logits.clone()
    changed[0, :, 0, :] = torch.randn(C, 4) * 10  # row 0 of image 0 is ignored
    assert loss(changed, targets).item() == pytest.approx(loss(logits, targets).item(), rel=1e-6)


def test_every_loss_file_builds_and_gives_a_finite_loss_with_gradients() -> None:
    files = sorted((CONF_DIR / "model" / "loss").glob("*.yaml"))
    assert {f.stem for f in files} >= {"cross_entropy", "dice", "focal", "dice_ce", "weight_map"}
    for path in files:
        loss = build_loss(OmegaConf.to_container(OmegaConf.load(path)), C, IGNORE)  # type: ignore[arg-type]
        logits, targets = batch()
        logits.requires_grad_(True)
        value = loss(logits, targets)
        value.backward()
        assert math.isfinite(value.item()) and logits.grad is not None and logits.grad.abs().sum() > 0, path.stem


# The U-Net weight map is computed on the host from the masks' distance transforms (scipy).
HOST_READS = {"weight_map"}


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "model" / "loss").glob("*.yaml")))
def test_a_loss_reads_nothing_back_from_the_device(name: str) -> None:
    """On PyTorch's meta device every op that needs the data on the host raises (``.item()``,
    ``if tensor``): each is a host-device sync on a GPU, in every training step."""
    if name in HOST_READS:
        pytest.skip(f"{name} computes its weights on the host")
    loss = loss_from_file(name)
    logits = torch.randn(2, C, 5, 4, device="meta", requires_grad=True)
    value = loss.to("meta")(logits, torch.zeros(2, 5, 4, dtype=torch.long, device="meta"))
    value.backward()
    assert value.shape == () and logits.grad is not None


@pytest.mark.parametrize("include_background", [True, False])
def test_dice_with_nothing_to_score_is_a_zero_that_keeps_the_graph(include_background: bool) -> None:
    logits, targets = batch()
    logits.requires_grad_(True)
    targets = torch.full_like(targets, IGNORE) if include_background else torch.zeros_like(targets)
    value = DiceLoss(C, IGNORE, include_background=include_background)(logits, targets)
    value.backward()
    assert value.item() == 0.0 and logits.grad is not None and not logits.grad.any()


def test_the_dice_ce_sum_is_cross_entropy_plus_dice() -> None:
    logits, targets = batch()
    both = build_loss({"name": "sum", "terms": [{"name": "cross_entropy"}, {"name": "dice", "weight": 0.5}]}, C, IGNORE)
    expected = CrossEntropyLoss(C, IGNORE)(logits, targets) + 0.5 * DiceLoss(C, IGNORE)(logits, targets)
    assert both(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_your_own_loss_class_by_dotted_path_gets_the_class_count() -> None:
    loss = build_loss({"name": "segkit.scoring.losses.FocalLoss", "gamma": 1.0}, C, 7)
    assert isinstance(loss, FocalLoss) and loss.num_classes == C and loss.ignore_index == 7 and loss.gamma == 1.0


def test_bad_loss_specs_are_one_line_errors() -> None:
    with pytest.raises(SegkitError, match="model.loss.name=nope: choose one of"):
        build_loss({"name": "nope"}, C, IGNORE)
    with pytest.raises(SegkitError, match=r"model.loss \(name=dice\): .*unexpected keyword argument 'reduction'.*model/loss=NAME"):
        build_loss({"name": "dice", "reduction": "mean"}, C, IGNORE)
    with pytest.raises(SegkitError, match="class_weights has 2 values for 3 classes"):
        build_loss({"name": "cross_entropy", "class_weights": [1.0, 2.0]}, C, IGNORE)
