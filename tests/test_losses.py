"""segkit.scoring.losses: the U-Net weight map (paper eq. 2) and the weighted cross entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from segkit.scoring.losses import (
    WeightMapCrossEntropy,
    class_weight_map,
    unet_weight_map,
)

CELL, MEMBRANE, IGNORE = 0, 1, 255
W0, SIGMA = 10.0, 5.0


def disc(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    ys, xs = np.indices(shape)
    return (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 <= radius**2


# 96 x 128 membrane with two radius-20 cells on row 46: the left one covers columns 20..60,
# the right one 63..103, so columns 61 and 62 are a 2 px membrane gap between them. The bottom
# 4 rows are ignored. Corners are > 25 px from both cells ("far away").
SHAPE = (96, 128)
LEFT, RIGHT = disc(SHAPE, (46, 40), 20), disc(SHAPE, (46, 83), 20)
MASK = np.full(SHAPE, MEMBRANE, dtype=np.int64)
MASK[LEFT | RIGHT] = CELL
MASK[-4:] = IGNORE
VALID = MASK != IGNORE
N_VALID = VALID.sum()
W_CELL = N_VALID / (2 * (MASK == CELL).sum())  # w_c by hand: N_valid / (classes * count)
W_MEMBRANE = N_VALID / (2 * (MASK == MEMBRANE).sum())


def border_term(d1: float, d2: float) -> float:
    return W0 * math.exp(-((d1 + d2) ** 2) / (2 * SIGMA**2))


def test_the_two_cells_have_a_two_pixel_gap() -> None:
    assert not LEFT[46, 61] and not RIGHT[46, 62]
    assert LEFT[46, 60] and RIGHT[46, 63]


def test_gap_pixels_get_the_border_term_on_top_of_w_c() -> None:
    weights = unet_weight_map(MASK, object_class=CELL, w0=W0, sigma=SIGMA)
    # Each gap pixel is 1 px from one cell and 2 px from the other: 10 * exp(-9/50) = 8.35.
    for col in (61, 62):
        assert weights[46, col] == pytest.approx(W_MEMBRANE + border_term(1.0, 2.0), abs=1e-4)
        assert weights[46, col] == pytest.approx(W_MEMBRANE + W0, abs=2.0)


def test_far_from_both_cells_the_weight_is_w_c() -> None:
    weights = unet_weight_map(MASK, object_class=CELL, w0=W0, sigma=SIGMA)
    far = VALID & (ndimage.distance_transform_edt(~LEFT) > 25) & (ndimage.distance_transform_edt(~RIGHT) > 25)
    assert far.sum() > 1000
    np.testing.assert_allclose(weights[far], W_MEMBRANE, atol=1e-3)
    assert weights[0, 0] == pytest.approx(W_MEMBRANE, abs=1e-6)


def test_inside_cells_the_weight_is_exactly_w_c_of_the_cell_class() -> None:
    weights = unet_weight_map(MASK, object_class=CELL, w0=W0, sigma=SIGMA)
    np.testing.assert_array_equal(weights[MASK == CELL], np.float32(W_CELL))


def test_ignored_pixels_weigh_zero_and_w_c_has_mean_one() -> None:
    weights = unet_weight_map(MASK, object_class=CELL)
    w_c = class_weight_map(MASK)
    assert (weights[~VALID] == 0).all() and (w_c[~VALID] == 0).all()
    assert w_c[VALID].mean() == pytest.approx(1.0, abs=1e-6)
    assert weights.dtype == np.float32 and weights.shape == SHAPE


def test_border_term_is_non_negative_and_at_most_w0() -> None:
    extra = unet_weight_map(MASK, object_class=CELL) - class_weight_map(MASK)
    assert extra.min() >= 0 and extra.max() <= W0


def test_fewer_than_two_objects_gives_w_c_only() -> None:
    one_cell = np.where(LEFT, CELL, MEMBRANE)
    np.testing.assert_array_equal(unet_weight_map(one_cell, CELL), class_weight_map(one_cell))
    no_cell = np.full(SHAPE, MEMBRANE)
    np.testing.assert_array_equal(unet_weight_map(no_cell, CELL), np.ones(SHAPE, np.float32))


def test_cells_touching_only_diagonally_are_two_objects() -> None:
    # 4-connectivity: the membrane pixels next to the shared corner lie between two cells.
    mask = np.ones((12, 12), dtype=np.int64)
    mask[2:6, 2:6] = CELL
    mask[6:10, 6:10] = CELL
    extra = unet_weight_map(mask, CELL) - class_weight_map(mask)
    assert extra[5, 6] == pytest.approx(border_term(1.0, 1.0), abs=1e-5)


def brute_force(mask: np.ndarray, object_class: int) -> np.ndarray:
    """Eq. 2 with a full-image distance transform per object: no truncation."""
    weights = class_weight_map(mask)
    objects, count = ndimage.label(mask == object_class)
    dist = np.sort([ndimage.distance_transform_edt(objects != k) for k in range(1, count + 1)], axis=0)
    gaps = (weights > 0) & (objects == 0)
    weights[gaps] += (W0 * np.exp(-((dist[0] + dist[1]) ** 2) / (2 * SIGMA**2)))[gaps]
    return weights


def voronoi_cells(shape: tuple[int, int], count: int, rng: np.random.Generator) -> np.ndarray:
    """Cells (0) of ``count`` random seeds separated by 1 px membranes (1)."""
    seeds = np.zeros(shape, dtype=np.int64)
    seeds[rng.integers(0, shape[0], count), rng.integers(0, shape[1], count)] = np.arange(1, count + 1)
    _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    regions = seeds[iy, ix]
    membrane = np.zeros(shape, dtype=bool)
    membrane[:-1] |= regions[:-1] != regions[1:]
    membrane[:, :-1] |= regions[:, :-1] != regions[:, 1:]
    return np.where(membrane, MEMBRANE, CELL)


def test_bounding_box_truncation_matches_the_full_computation_for_touching_cells() -> None:
    mask = voronoi_cells((80, 90), 12, np.random.default_rng(0))
    mask[:3, :5] = IGNORE
    assert ndimage.label(mask == CELL)[1] >= 10
    np.testing.assert_allclose(unet_weight_map(mask, CELL), brute_force(mask, CELL), atol=W0 * 1e-5)


def test_bounding_box_truncation_matches_the_full_computation_for_scattered_cells() -> None:
    # Small cells 5 to 40 px apart: tight bounding boxes, so a too-small margin would show.
    mask = np.full((100, 100), MEMBRANE, dtype=np.int64)
    for row, col in [(10, 10), (10, 30), (40, 12), (45, 50), (80, 20), (85, 75), (20, 85), (60, 90)]:
        mask[row - 2 : row + 3, col - 2 : col + 3] = CELL
    np.testing.assert_allclose(unet_weight_map(mask, CELL), brute_force(mask, CELL), atol=W0 * 1e-5)


# Loss: a 2 x 3 mask with one object (no border term) and one ignored pixel.
# Valid 5 pixels: 2 of class 0 -> w_c = 5 / (2 * 2) = 1.25, 3 of class 1 -> 5 / (2 * 3).
TINY_MASK = torch.tensor([[[0, 0, 1], [1, 255, 1]]])
TINY_WEIGHTS = torch.tensor([[[1.25, 1.25, 5 / 6], [5 / 6, 0.0, 5 / 6]]])


def tiny_logits() -> torch.Tensor:
    return torch.randn(1, 2, 2, 3, generator=torch.Generator().manual_seed(0))


def hand_cross_entropy(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """-log softmax at the target class, per pixel; 0 at ignored pixels."""
    log_probs = logits.log_softmax(dim=1)
    target = masks.clamp(max=logits.shape[1] - 1)
    nll = -log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
    return torch.where(masks == IGNORE, 0.0, nll)


def test_weighted_mean_equals_the_hand_computed_value() -> None:
    logits = tiny_logits()
    expected = (TINY_WEIGHTS * hand_cross_entropy(logits, TINY_MASK)).sum() / 5
    loss = WeightMapCrossEntropy(object_class=0)(logits, TINY_MASK)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_sum_reduction_is_the_weighted_sum() -> None:
    logits = tiny_logits()
    expected = (TINY_WEIGHTS * hand_cross_entropy(logits, TINY_MASK)).sum()
    loss = WeightMapCrossEntropy(object_class=0, reduction="sum")(logits, TINY_MASK)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_mean_is_over_all_valid_pixels_of_the_batch_with_the_border_term() -> None:
    masks = torch.from_numpy(np.stack([MASK[:48, :64], MASK[24:72, 40:104]]))
    logits = torch.randn(2, 2, 48, 64, generator=torch.Generator().manual_seed(1))
    maps = np.stack([unet_weight_map(m, CELL) for m in masks.numpy()])
    expected = (torch.from_numpy(maps) * hand_cross_entropy(logits, masks)).sum() / (masks != IGNORE).sum()
    loss = WeightMapCrossEntropy(object_class=CELL)(logits, masks)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_given_unit_weights_reduce_to_plain_cross_entropy() -> None:
    logits = tiny_logits()
    loss = WeightMapCrossEntropy()(logits, TINY_MASK, weights=torch.ones(1, 2, 3))
    plain = F.cross_entropy(logits, TINY_MASK, ignore_index=IGNORE)
    assert loss.item() == pytest.approx(plain.item(), rel=1e-6)


def test_gradients_flow_except_at_ignored_pixels() -> None:
    logits = tiny_logits().requires_grad_(True)
    WeightMapCrossEntropy(object_class=0)(logits, TINY_MASK).backward()
    grad = logits.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert (grad[0, :, 1, 1] == 0).all()
    valid = (TINY_MASK[0] != IGNORE)
    assert (grad[0].abs().sum(dim=0)[valid] > 0).all()


def test_unknown_reduction_is_rejected() -> None:
    with pytest.raises(ValueError, match="reduction"):
        WeightMapCrossEntropy(reduction="none")
