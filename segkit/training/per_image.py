"""``PerImageScores``: a callback that scores every evaluated image in the validation or test
pass itself (no second forward pass) and keeps the k worst images for a gallery.

It reads what :class:`segkit.models.base.SegmentationModule`'s validation and test steps
return, ``{"preds": (N, H, W), "masks": (N, H, W)}``; a module whose steps return nothing is
run once more on the batch. Under DDP every rank scores its share and the shares are gathered
at the epoch's end, so every rank holds the whole split's results.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from segkit.scoring.per_image import (
    PerImageTable,
    confusion_per_image,
    image_scores,
    merge_tables,
    sample_name,
)

STAGES = ("validate", "test")


@dataclass
class ScoredImage:
    """One image kept for the gallery: its scores, input ``(C, H, W)``, truth and prediction ``(H, W)`` (CPU)."""

    miou: float
    index: int
    image: torch.Tensor
    truth: torch.Tensor
    prediction: torch.Tensor
    file: str = ""


def sample_order(loader: Any) -> list[int] | None:
    """The dataset indices ``loader`` yields, in order (this rank's share under DDP), or
    ``None`` when it has no sampler to ask.

    Example:
        >>> sample_order(DataLoader(list(range(5)), batch_size=2))
        [0, 1, 2, 3, 4]
    """
    batches = getattr(loader, "batch_sampler", None)
    try:
        if batches is not None:
            return [int(i) for batch in batches for i in batch]
        sampler = getattr(loader, "sampler", None)
        return None if sampler is None else [int(i) for i in sampler]
    except TypeError:
        return None


class PerImageScores(L.Callback):
    """Per-image confusion matrices of the validation or test pass, and the ``worst_k`` images
    with the lowest mIoU (kept on the CPU in a bounded heap; no other image is kept).

    After the pass, :attr:`total` is the split's confusion matrix (the sum over images),
    :attr:`table` the :class:`~segkit.scoring.per_image.PerImageTable` (``None`` unless
    ``keep_per_image``) and :attr:`worst` the worst images, lowest mIoU first. Images without
    a scored pixel (mIoU NaN) are never among the worst. ``num_classes=None`` takes the
    module's class count and ignore index at setup. ``stages``: the passes scored
    (``"validate"``, ``"test"``); a sanity check never is.

    Example:
        >>> scores = PerImageScores(num_classes=3, worst_k=4)  # Trainer(callbacks=[scores]).validate(...)
        >>> scores.update(None, {"preds": torch.zeros(1, 2, 2, dtype=torch.long)},
        ...               (torch.zeros(1, 1, 2, 2), torch.tensor([[[0, 1], [255, 0]]])))
        >>> scores.finish()
        >>> scores.total.tolist(), scores.table.files, [kept.miou for kept in scores.worst]
        ([[2, 0, 0], [1, 0, 0], [0, 0, 0]], ['#0'], [0.3333333333333333])
    """

    def __init__(self, num_classes: int | None = None, ignore_index: int | None = 255, worst_k: int = 8,
                 keep_per_image: bool = True, stages: Sequence[str] = STAGES) -> None:
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"stages: {sorted(unknown)} are not among {STAGES}")
        # None: the module's num_classes and ignore_index, read at setup.
        self.num_classes, self.ignore_index = num_classes or 0, ignore_index
        self._from_module = num_classes is None
        self.worst_k, self.keep_per_image, self.stages = max(0, int(worst_k)), keep_per_image, tuple(stages)
        self.total = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.table: PerImageTable | None = None
        self.worst: list[ScoredImage] = []
        self._reset(None)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._from_module:
            self.num_classes = int(pl_module.num_classes)
            self.ignore_index = getattr(pl_module, "ignore_index", self.ignore_index)
            self.total = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def _reset(self, loader: Any) -> None:
        self._dataset = getattr(loader, "dataset", None)
        self._order = sample_order(loader) if loader is not None else None
        self._seen = 0
        self._indices: list[int] = []
        self._chunks: list[np.ndarray] = []
        self._sum = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self._heap: list[tuple[float, int, ScoredImage]] = []

    # --- Lightning hooks ---------------------------------------------------------------------

    def active(self, trainer: L.Trainer, stage: str) -> bool:
        """Whether to score this pass (subclasses may add conditions)."""
        return stage in self.stages and not trainer.sanity_checking

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active(trainer, "validate"):
            self._reset(first_loader(trainer.val_dataloaders))

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active(trainer, "test"):
            self._reset(first_loader(trainer.test_dataloaders))

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.active(trainer, "validate") and dataloader_idx == 0:
            self.update(pl_module, outputs, batch)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.active(trainer, "test") and dataloader_idx == 0:
            self.update(pl_module, outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active(trainer, "validate"):
            self.finish()

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active(trainer, "test"):
            self.finish()

    # --- scoring -----------------------------------------------------------------------------

    def update(self, pl_module: L.LightningModule, outputs: Any, batch: Sequence[torch.Tensor]) -> None:
        """Score one batch from the step's ``outputs`` (or a forward pass of ``pl_module``)."""
        images, masks = batch[0], batch[1]
        if isinstance(outputs, Mapping) and "preds" in outputs:
            preds, masks = outputs["preds"], outputs.get("masks", masks)
        else:
            with torch.no_grad():
                preds = pl_module(images).max(dim=1).indices
        confusion = confusion_per_image(preds, masks, self.num_classes, self.ignore_index).cpu().numpy()
        count = len(confusion)
        order = self._order or []
        indices = [order[i] if i < len(order) else i for i in range(self._seen, self._seen + count)]
        self._seen += count
        self._sum += confusion.sum(axis=0)
        if self.keep_per_image:
            self._indices += indices
            self._chunks.append(confusion)
        miou, _ = image_scores(confusion)
        for j, (score, index) in enumerate(zip(miou.tolist(), indices)):
            self._offer(score, index, images[j], masks[j], preds[j])

    def _offer(self, miou: float, index: int, image: torch.Tensor, truth: torch.Tensor,
               prediction: torch.Tensor) -> None:
        """Keep the image if it is among the ``worst_k`` so far (ties: the lower index)."""
        if self.worst_k == 0 or math.isnan(miou):
            return
        key = (-miou, -index)  # the heap's top is the best of the kept: the one to drop
        if len(self._heap) == self.worst_k and key <= self._heap[0][:2]:
            return
        kept = ScoredImage(miou, index, *(t.detach().cpu().clone() for t in (image, truth, prediction)))
        if len(self._heap) < self.worst_k:
            heapq.heappush(self._heap, (*key, kept))
        else:
            heapq.heapreplace(self._heap, (*key, kept))

    def finish(self) -> None:
        """Gather the ranks' shares (DDP) and set :attr:`total`, :attr:`table` and :attr:`worst`."""
        k = self.num_classes
        confusion = np.concatenate(self._chunks) if self._chunks else np.zeros((0, k, k), np.int64)
        part = {"indices": self._indices, "files": [""] * len(self._indices), "confusion": confusion,
                "sum": self._sum, "worst": [kept for *_, kept in self._heap]}
        parts = [part]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()  # type: ignore[list-item]
            dist.all_gather_object(parts, part)
        self.total = np.sum([p["sum"] for p in parts], axis=0).astype(np.int64)
        worst = sorted((kept for p in parts for kept in p["worst"]), key=lambda s: (s.miou, s.index))
        self.worst = worst[: self.worst_k]
        for kept in self.worst:
            kept.file = sample_name(self._dataset, kept.index)
        self.table = None
        if self.keep_per_image:
            self.table = merge_tables(parts, self.num_classes)
            self.table.files = [sample_name(self._dataset, int(i)) for i in self.table.indices]
        self._reset(None)


def first_loader(loaders: Any) -> DataLoader | None:
    """The first loader of Lightning's ``*_dataloaders`` (a loader, a list of them, or none)."""
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    if isinstance(loaders, Mapping):
        return next(iter(loaders.values()), None)
    return loaders
