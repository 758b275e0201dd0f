"""Segmentation metrics from one dataset-level confusion matrix.

Every score is derived from a single confusion matrix accumulated over a whole split (and
summed across DDP ranks by torchmetrics), with the FCN authors' definitions
(shelhamer/fcn.berkeleyvision.org ``score.py``). Per-batch IoUs are never averaged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.nn import Module
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix

# The scalar scores logged per stage (and written by segkit-eval).
SCALAR_SCORES = ("mIoU", "mDice", "pixel_acc", "mean_acc", "fwIoU")


def scores_from_confusion(hist: torch.Tensor) -> dict[str, torch.Tensor]:
    """All segmentation scores of a confusion matrix (rows = ground truth, cols = prediction),
    or of each matrix of a stack ``(..., K, K)`` (e.g. one per image).

    Returns ``pixel_acc``, ``mean_acc``, ``mIoU``, ``fwIoU``, ``mDice`` (scalars, one per matrix)
    and ``IoU``, ``acc``, ``Dice`` (per class; NaN for a class that is absent from both ground
    truth and prediction, and such a class is left out of the means). Dice (F1), what medical
    imaging reports, is ``2 TP / (2 TP + FP + FN)`` of the same matrix. Computed in float64.

    Example:
        >>> hist = torch.tensor([[3, 1], [0, 4]])
        >>> round(scores_from_confusion(hist)["mIoU"].item(), 4)
        0.775
        >>> scores_from_confusion(torch.stack([hist, torch.zeros(2, 2)]))["pixel_acc"].tolist()
        [0.875, nan]
    """
    hist = hist.to(torch.float64)
    diag = hist.diagonal(dim1=-2, dim2=-1)
    gt_count = hist.sum(dim=-1)
    pred_count = hist.sum(dim=-2)
    total = hist.sum(dim=(-2, -1))
    # 0/0 -> NaN marks "not present", which nanmean then skips, as in the reference code.
    acc = diag / gt_count
    iou = diag / (gt_count + pred_count - diag)
    dice = 2 * diag / (gt_count + pred_count)
    freq = gt_count / total.unsqueeze(-1)
    present = freq > 0
    return {
        "pixel_acc": diag.sum(dim=-1) / total,
        "mean_acc": acc.nanmean(dim=-1),
        "mIoU": iou.nanmean(dim=-1),
        "fwIoU": torch.where(present, freq * iou, 0.0).sum(dim=-1),
        "mDice": dice.nanmean(dim=-1),
        "IoU": iou,
        "acc": acc,
        "Dice": dice,
    }


class SegmentationMetrics(MulticlassConfusionMatrix):
    """torchmetrics confusion matrix (its state, DDP sum and reset) whose ``compute`` returns every score.

    ``update`` is segkit's own: one scatter-add over all pixels, invalid ones in a dropped bin,
    with no host-device sync on a GPU (it runs in every training step). With ``defer_elements``
    it holds the batches (detached) until they reach that many prediction elements and counts
    them in one pass: the same counts, in fewer, larger operations. Everything that reads the
    state through the metric (``compute``, DDP ``sync``, ``state_dict``, ``forward``,
    ``metric_state``, ``merge_state``, a device move) counts what is held first; code that reads
    ``confmat`` itself calls :meth:`count_held` first.

    ``update`` takes logits ``(N, C, H, W)`` or class indices ``(N, H, W)`` and targets
    ``(N, H, W)``; target pixels equal to ``ignore_index`` or outside ``[0, C)`` are ignored.

    Example:
        >>> metric = SegmentationMetrics(num_classes=2)
        >>> metric.update(torch.tensor([[[0, 1], [1, 1]]]), torch.tensor([[[0, 1], [255, 0]]]))
        >>> metric.compute()["pixel_acc"].item()
        0.6666666666666666
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        class_names: Sequence[str] | None = None,
        defer_elements: int = 0,
    ) -> None:
        # validate_args=False: the checks scan every pixel each step; we filter labels here.
        super().__init__(num_classes=num_classes, ignore_index=None, validate_args=False)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names but num_classes={num_classes}"
            )
        self.segmentation_ignore_index = ignore_index
        self.class_names = list(class_names or [f"class_{i}" for i in range(num_classes)])
        self.defer_elements = defer_elements
        self._held: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._held_elements = 0

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        if not self.defer_elements:
            self._count(preds, target)
            return
        if self._held and not _same_layout(self._held[0], preds, target):
            self.count_held()  # a different size, dtype or device: concatenated batches must agree
        self._held.append((preds.detach(), target))  # detached: no autograd graph kept alive
        self._held_elements += preds.numel()
        if self._held_elements >= self.defer_elements:
            self.count_held()

    def count_held(self) -> None:
        """Count the batches that ``update`` holds (with ``defer_elements``) into ``confmat``."""
        held = self._take_held()
        if len(held) == 1:
            self._count(*held[0])
        elif held:
            self._count(torch.cat([preds for preds, _ in held]), torch.cat([target for _, target in held]))

    def _take_held(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The held batches, no longer held."""
        held, self._held, self._held_elements = self._held, [], 0
        return held

    def _count(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        num_classes, ignore = self.num_classes, self.segmentation_ignore_index
        if preds.is_floating_point() and preds.ndim == target.ndim + 1:
            if num_classes == 2:  # one comparison; a tie goes to class 0, as argmax's first maximum
                preds = preds[:, 1] > preds[:, 0]
            else:  # max(...).indices, not argmax: same first-max tie rule, ~8x faster on CPU over dim 1
                preds = preds.max(dim=1).indices
        cells = num_classes * num_classes
        # int64 whatever the masks' dtype (a no-op for int64): a two-class prediction (bool) plus a
        # uint8 mask would stay uint8 and overflow; scatter_add_ takes int64 indices only.
        bins = torch.add(preds, target.long(), alpha=num_classes)  # target * C + preds, preds in [0, C)
        if ignore is None or not 0 <= ignore < num_classes:
            # One pass: a target in [0, C) lands in [0, C*C), a negative one below it, one >= C
            # (the ignore index included) above it; clamped and shifted, they land in bins 0 and
            # C*C + 1. Half the elementwise passes of building a valid-pixel mask (a train step runs this).
            flat, first = bins.clamp_(-1, cells).add_(1).flatten(), 1
        else:  # an ignored class inside [0, C): mask it explicitly, into bin C*C
            valid = (target >= 0) & (target < num_classes) & (target != ignore)
            flat, first = torch.where(valid, bins, cells).flatten(), 0
        # A scatter-add into fixed bins, not torch.bincount: bincount reads the largest value back
        # to size its output, a host-device sync in every training step on a GPU (on this CPU both
        # take the same time).
        counts = torch.zeros(cells + 2, dtype=torch.long, device=flat.device)
        counts.scatter_add_(0, flat, torch.ones_like(flat))
        # In place: `self.confmat += ...` would go through Metric's and Module's __setattr__.
        self.confmat.add_(counts[first:first + cells].reshape(num_classes, num_classes))

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return scores_from_confusion(self.confmat)  # sync() below has counted the held batches

    # Each way torchmetrics reads or replaces the state counts the held batches first (or drops
    # them, where the state is replaced), so nothing sees a matrix that misses a held update.
    def sync(self, *args: Any, **kwargs: Any) -> None:
        self.count_held()  # compute() syncs across DDP ranks before it calls the method above
        super().sync(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.count_held()  # forward sets the accumulated state aside and resets around one batch
        return super().forward(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        self.count_held()
        return super().state_dict(*args, **kwargs)

    @property
    def metric_state(self) -> dict[str, list[torch.Tensor] | torch.Tensor]:
        self.count_held()
        return super().metric_state

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        self.count_held()  # (an incoming metric's state is read through metric_state, above)
        super().merge_state(incoming_state)

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Module:
        self.count_held()  # before .to(device): the held batches are on the old device
        return super()._apply(fn, *args, **kwargs)

    def reset(self) -> None:
        self._take_held()
        super().reset()

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._take_held()  # the loaded state replaces what was held
        super()._load_from_state_dict(*args, **kwargs)

    def as_log_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        """Scalars to log: ``{prefix}/`` + each of :data:`SCALAR_SCORES`, ``IoU/<name>`` and ``Dice/<name>``."""
        scores = self.compute()
        logged = {f"{prefix}/{k}": scores[k] for k in SCALAR_SCORES}
        for per_class in ("IoU", "Dice"):
            for name, value in zip(self.class_names, scores[per_class]):
                logged[f"{prefix}/{per_class}/{name}"] = value
        return logged


def _same_layout(held: tuple[torch.Tensor, torch.Tensor], preds: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether ``preds`` and ``target`` can be concatenated (along the batch) with a held pair."""
    held_preds, held_target = held
    return (held_preds.shape[1:] == preds.shape[1:] and held_target.shape[1:] == target.shape[1:]
            and held_preds.dtype == preds.dtype and held_target.dtype == target.dtype
            and held_preds.device == preds.device)
