"""Per-pixel losses beside the U-Net weight map: cross-entropy, soft Dice, focal, a weighted sum.

Every loss maps ``(logits (N, C, H, W), targets (N, H, W))`` to a scalar and leaves target
pixels equal to ``ignore_index`` (or outside ``[0, C)``) out entirely. Written here rather
than taken from a library because each must honour segkit's ``ignore_index`` in every term
(smp's Dice and focal losses are the tests' oracle where installed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def _valid(targets: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    return (targets >= 0) & (targets < num_classes) & (targets != ignore_index)


class CrossEntropyLoss(nn.Module):
    """Pixel-wise cross-entropy with optional class weights and label smoothing.

    ``reduction="mean"`` averages over valid pixels (weighted by ``class_weights`` when given,
    as torch does), ``"sum"`` sums them (the FCN reference's unnormalised loss).

    Example:
        >>> loss = CrossEntropyLoss(num_classes=2)
        >>> round(loss(torch.zeros(1, 2, 2, 2), torch.tensor([[[0, 1], [1, 255]]])).item(), 4)  # log 2
        0.6931
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        reduction: str = "mean",
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} values for {num_classes} classes")
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing
        weights = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        weight = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        return F.cross_entropy(logits, targets, weight=weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class DiceLoss(nn.Module):
    """``1 - mean_c Dice_c`` of the softmax probabilities, over the batch's valid pixels.

    ``Dice_c = (2 sum(p_c y_c) + smooth) / (sum(p_c) + sum(y_c) + smooth)`` with sums over every
    valid pixel of the batch (batch Dice, as nnU-Net). Classes absent from the batch's targets
    are left out of the mean (their Dice is undefined), unless ``smooth > 0`` makes it defined;
    ``include_background=False`` leaves class 0 out.

    Example:
        >>> logits = torch.tensor([[[[9.0, -9.0]], [[-9.0, 9.0]]]])  # predicts [0, 1] confidently
        >>> round(DiceLoss(num_classes=2)(logits, torch.tensor([[[0, 1]]])).item(), 4)
        0.0
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, smooth: float = 0.0, include_background: bool = True,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.smooth, self.include_background, self.eps = smooth, include_background, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        valid = _valid(targets, self.num_classes, self.ignore_index)
        probs = logits.float().softmax(dim=1) * valid.unsqueeze(1)
        onehot = F.one_hot(torch.where(valid, targets, 0), self.num_classes).permute(0, 3, 1, 2).to(probs.dtype)
        onehot = onehot * valid.unsqueeze(1)
        dims = (0, 2, 3)
        intersection = (probs * onehot).sum(dims)
        truth, predicted = onehot.sum(dims), probs.sum(dims)
        dice = (2 * intersection + self.smooth) / (truth + predicted + self.smooth).clamp(min=self.eps)
        counted = truth > 0 if self.smooth == 0 else torch.ones_like(truth, dtype=torch.bool)
        if not self.include_background:
            counted[0] = False
        # The mean over the counted classes, without reading them back to the host (no
        # host-device sync in a training step): with none counted, a zero that keeps the graph.
        mean = (dice * counted).sum() / counted.sum().clamp(min=1)
        return (1 - mean) * counted.any()


class FocalLoss(nn.Module):
    """Focal loss ``-alpha_y (1 - p_y)^gamma log p_y`` (Lin et al. 2017), over valid pixels.

    ``gamma=0`` with no ``alpha`` is cross-entropy. ``alpha``: one weight per class, or none.

    Example:
        >>> loss = FocalLoss(num_classes=2, gamma=0.0)
        >>> round(loss(torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 1]]])).item(), 4)  # log 2
        0.6931
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, gamma: float = 2.0,
        alpha: Sequence[float] | None = None, reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        if alpha is not None and len(alpha) != num_classes:
            raise ValueError(f"alpha has {len(alpha)} values for {num_classes} classes")
        self.num_classes, self.ignore_index, self.gamma, self.reduction = num_classes, ignore_index, gamma, reduction
        self.register_buffer("alpha", None if alpha is None else torch.tensor(list(alpha)), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        valid = _valid(targets, self.num_classes, self.ignore_index)
        safe = torch.where(valid, targets, 0)
        log_p = logits.float().log_softmax(dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        per_pixel = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.alpha is not None:
            per_pixel = per_pixel * self.alpha.to(per_pixel)[safe]
        total = (per_pixel * valid).sum()
        return total if self.reduction == "sum" else total / valid.sum().clamp(min=1)


class WeightedSum(nn.Module):
    """``sum_i weight_i * loss_i(logits, targets)``, e.g. cross-entropy + Dice.

    Example:
        >>> ce = CrossEntropyLoss(num_classes=2)
        >>> both = WeightedSum([ce, ce], [1.0, 0.5])
        >>> logits, targets = torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 1]]])
        >>> bool(torch.isclose(both(logits, targets), 1.5 * ce(logits, targets)))
        True
    """

    def __init__(self, losses: Sequence[nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        if len(losses) != len(weights) or not losses:
            raise ValueError(f"need one weight per loss, got {len(losses)} losses and {len(weights)} weights")
        self.losses, self.weights = nn.ModuleList(losses), [float(w) for w in weights]

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        return sum(w * loss(logits, targets, instances=instances) for loss, w in zip(self.losses, self.weights))  # type: ignore[return-value]
