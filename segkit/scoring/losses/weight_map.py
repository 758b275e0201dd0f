"""The U-Net paper's weighted cross entropy (Ronneberger et al. 2015, section 3, eq. 2).

``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``: ``w_c`` balances the class
frequencies, and the second term makes the thin gaps between touching cells expensive to get
wrong. ``d1``/``d2`` are the distances to the nearest and second-nearest object (cell).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

# exp(-(d1 + d2)^2 / (2 sigma^2)) < exp(-12.25) ~ 5e-6 once d1 + d2 > 3.5 * sqrt(2) * sigma
# (~24.7 px for sigma = 5): the distances to an object are only computed within this margin.
MARGIN_SIGMAS = 3.5 * math.sqrt(2.0)


def class_weight_map(mask: np.ndarray, num_classes: int = 2, ignore_index: int = 255) -> np.ndarray:
    """``w_c``: ``N_valid / (classes_present * count[class(x)])``, mean 1 over valid pixels.

    Valid pixels have a label in ``[0, num_classes)`` other than ``ignore_index``; the others
    get weight 0.

    Example:
        >>> class_weight_map(np.array([[0, 1, 1, 1, 1, 255]])).tolist()
        [[2.5, 0.625, 0.625, 0.625, 0.625, 0.0]]
    """
    mask = np.asarray(mask)
    valid = (mask >= 0) & (mask < num_classes) & (mask != ignore_index)
    labels = np.where(valid, mask, 0).astype(np.int64)
    counts = np.bincount(labels[valid], minlength=num_classes).astype(np.float64)
    present = counts > 0
    per_class = np.zeros(num_classes, dtype=np.float64)
    per_class[present] = valid.sum() / (present.sum() * counts[present])
    return np.where(valid, per_class[labels], 0.0).astype(np.float32)


def unet_weight_map(
    mask: np.ndarray,
    object_class: int,
    w0: float = 10.0,
    sigma: float = 5.0,
    num_classes: int = 2,
    ignore_index: int = 255,
    instances: np.ndarray | None = None,
) -> np.ndarray:
    """U-Net loss weights ``w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` of a ``(H, W)`` label mask.

    Objects are the instance ids of ``instances`` (``(H, W)``, 0 = none) within
    ``mask == object_class``, so objects that touch stay apart; without ``instances``, the
    4-connected components of ``mask == object_class`` (in EM the cells, so that
    cells touching only diagonally across an 8-connected membrane stay separate). The border term
    is added to valid pixels outside objects (the gaps, the paper's Fig. 3d); it is 0 inside
    objects, on ignored pixels (weight 0) and when there are fewer than two objects.

    Each object's distance transform is computed only in its bounding box grown by
    ``3.5 * sqrt(2) * sigma`` px: where the exact ``d2`` exceeds that margin the term is below
    ``w0 * 5e-6`` and may be dropped, everywhere else the result is exact.

    Example:
        >>> mask = np.ones((8, 9), dtype=np.int64)
        >>> mask[2:6, 1:4] = 0; mask[2:6, 5:8] = 0  # two cells, one membrane column between
        >>> w, w_c = unet_weight_map(mask, object_class=0), class_weight_map(mask)
        >>> round(float(w[3, 4] - w_c[3, 4]), 3)  # the gap pixel: d1 = d2 = 1, 10 * exp(-4/50)
        9.231
        >>> bool(w[3, 2] == w_c[3, 2])  # inside a cell: w_c only
        True
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    weights = class_weight_map(mask, num_classes, ignore_index)
    if instances is None:
        objects, count = ndimage.label(mask == object_class)
    else:
        ids = np.where(mask == object_class, np.asarray(instances), 0)
        present, inverse = np.unique(ids, return_inverse=True)  # ids -> 1..count, 0 stays 0
        has_background = present[0] == 0
        objects = inverse.reshape(mask.shape) + (0 if has_background else 1)
        count = len(present) - int(has_background)
    if count < 2:
        return weights
    height, width = mask.shape
    margin = math.ceil(MARGIN_SIGMAS * sigma)
    d1 = np.full(mask.shape, np.inf, dtype=np.float64)
    d2 = np.full(mask.shape, np.inf, dtype=np.float64)
    for index, box in enumerate(ndimage.find_objects(objects), start=1):
        rows = slice(max(box[0].start - margin, 0), min(box[0].stop + margin, height))
        cols = slice(max(box[1].start - margin, 0), min(box[1].stop + margin, width))
        # Exact inside the window: every pixel of the object lies in it.
        dist = ndimage.distance_transform_edt(objects[rows, cols] != index)
        near, second = d1[rows, cols], d2[rows, cols]
        second[...] = np.minimum(second, np.maximum(near, dist))
        near[...] = np.minimum(near, dist)
    gaps = (weights > 0) & (objects == 0)
    border = w0 * np.exp(-((d1[gaps] + d2[gaps]) ** 2) / (2.0 * sigma**2))
    weights[gaps] += border.astype(np.float32)
    return weights


class WeightMapCrossEntropy(nn.Module):
    """Per-pixel cross entropy times the U-Net weight map of each target mask.

    The maps are computed per image on the CPU (numpy/scipy) from ``masks`` unless ``weights``
    ``(N, H, W)`` are passed to ``forward`` (e.g. precomputed by the data loader).
    ``reduction="mean"`` divides the weighted sum by the number of non-ignored pixels (not by
    the sum of weights), ``"sum"`` returns the weighted sum.

    Example:
        >>> loss_fn = WeightMapCrossEntropy(object_class=0)
        >>> masks = torch.tensor([[[0, 1, 1], [1, 1, 255]]])
        >>> loss = loss_fn(torch.zeros(1, 2, 2, 3), masks)  # uniform logits: CE = log 2
        >>> round(loss.item(), 4) == round(math.log(2), 4)  # w_c has mean 1, no second object
        True
    """

    def __init__(
        self,
        object_class: int = 0,
        w0: float = 10.0,
        sigma: float = 5.0,
        ignore_index: int = 255,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.object_class = object_class
        self.w0 = w0
        self.sigma = sigma
        self.ignore_index = ignore_index
        self.reduction = reduction

    def weight_maps(self, masks: torch.Tensor, num_classes: int, instances: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, H, W)`` float32 weight maps of ``masks`` (on the CPU), objects from ``instances`` if given."""
        ids = [None] * len(masks) if instances is None else list(instances.detach().cpu().numpy())
        maps = [
            unet_weight_map(m, self.object_class, self.w0, self.sigma, num_classes, self.ignore_index, i)
            for m, i in zip(masks.detach().cpu().numpy(), ids)
        ]
        return torch.from_numpy(np.stack(maps))

    def forward(
        self, logits: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor | None = None,
        instances: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if weights is None:
            weights = self.weight_maps(masks, logits.shape[1], instances)
        weights = weights.to(device=logits.device, dtype=logits.dtype)
        per_pixel = F.cross_entropy(logits, masks, ignore_index=self.ignore_index, reduction="none")
        total = (per_pixel * weights).sum()
        if self.reduction == "sum":
            return total
        return total / (masks != self.ignore_index).sum().clamp(min=1)
