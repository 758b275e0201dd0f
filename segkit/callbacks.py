"""Lightning callbacks that show what a segmentation model does, in TensorBoard."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid

from segkit.palette import colorize


def _display(image: torch.Tensor) -> torch.Tensor:
    """A normalised image (C, H, W) -> RGB uint8 for display, min-max scaled per image."""
    image = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
    low, high = image.min(), image.max()
    return ((image - low) / (high - low).clamp_min(1e-8) * 255).round().to(torch.uint8)


class SegmentationImageLogger(L.Callback):
    """Every validation epoch, log a grid ``input | ground truth | prediction`` to TensorBoard.

    Uses the same first ``num_images`` validation images every epoch, so the grids show one
    scene sharpening over training. Rank 0 only; a no-op without a TensorBoardLogger.

    Example:
        >>> callback = SegmentationImageLogger(num_images=4)  # then Trainer(callbacks=[callback])
    """

    def __init__(self, num_images: int = 6, tag: str = "val/predictions") -> None:
        self.num_images = num_images
        self.tag = tag
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def _fixed_batch(self, trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor]:
        if self._batch is None:
            loader = trainer.val_dataloaders
            dataset = (loader[0] if isinstance(loader, list) else loader).dataset
            pairs = [dataset[i] for i in range(min(self.num_images, len(dataset)))]
            self._batch = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        return self._batch

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if trainer.sanity_checking or not trainer.is_global_zero or not loggers:
            return
        images, masks = self._fixed_batch(trainer)
        with torch.no_grad():
            predictions = pl_module(images.to(pl_module.device)).argmax(dim=1).cpu()
        tiles = []
        for image, mask, prediction in zip(images, masks, predictions):
            tiles += [_display(image), colorize(mask), colorize(prediction)]
        grid = make_grid(torch.stack(tiles), nrow=3, padding=2, pad_value=255)
        for logger in loggers:
            logger.experiment.add_image(self.tag, grid, global_step=trainer.global_step)
