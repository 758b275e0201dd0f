"""Lightning callbacks that show what a segmentation model does, in TensorBoard."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid

from segkit.palette import colorize


def _display(image: torch.Tensor) -> torch.Tensor:
    """A normalised image (C, H, W) -> RGB uint8 for display, min-max scaled per image."""
    image = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
    low, high = image.min(), image.max()
    return ((image - low) / (high - low).clamp_min(1e-8) * 255).round().to(torch.uint8)


def fit_tile(tile: torch.Tensor, size: int, smooth: bool) -> torch.Tensor:
    """``tile`` (3, h, w) uint8 scaled to fit ``size`` x ``size`` (aspect kept), centred on white.

    Images of any size share one grid this way, and small ones are enlarged (nearest for
    masks, so class boundaries stay sharp).

    Example:
        >>> fit_tile(torch.zeros(3, 20, 40, dtype=torch.uint8), 64, smooth=True).shape
        torch.Size([3, 64, 64])
    """
    height, width = tile.shape[-2:]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    mode = {"mode": "bilinear", "antialias": True, "align_corners": False} if smooth else {"mode": "nearest-exact"}
    resized = F.interpolate(tile[None].float(), size=(new_h, new_w), **mode)[0].round().clamp(0, 255).to(torch.uint8)
    canvas = torch.full((3, size, size), 255, dtype=torch.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[:, top:top + new_h, left:left + new_w] = resized
    return canvas


class SegmentationImageLogger(L.Callback):
    """Every validation epoch, log a grid ``input | ground truth | prediction`` to TensorBoard.

    Uses the same first ``num_images`` validation images every epoch, so the grids show one
    scene sharpening over training. Images of different sizes are each predicted whole and
    fitted to ``tile_size`` px for display. Rank 0 only; a no-op without a TensorBoardLogger.

    Example:
        >>> callback = SegmentationImageLogger(num_images=4)  # then Trainer(callbacks=[callback])
    """

    def __init__(self, num_images: int = 6, tag: str = "val/predictions", tile_size: int = 192) -> None:
        self.num_images = num_images
        self.tag = tag
        self.tile_size = tile_size
        self._samples: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _fixed_samples(self, trainer: L.Trainer) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._samples is None:
            loader = trainer.val_dataloaders
            dataset = (loader[0] if isinstance(loader, list) else loader).dataset
            self._samples = [tuple(dataset[i][:2]) for i in range(min(self.num_images, len(dataset)))]  # type: ignore[misc]
        return self._samples

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if trainer.sanity_checking or not trainer.is_global_zero or not loggers:
            return
        tiles = []
        with torch.no_grad():
            for image, mask in self._fixed_samples(trainer):
                prediction = pl_module(image[None].to(pl_module.device)).argmax(dim=1)[0].cpu()
                tiles += [fit_tile(_display(image), self.tile_size, smooth=True),
                          fit_tile(colorize(mask), self.tile_size, smooth=False),
                          fit_tile(colorize(prediction), self.tile_size, smooth=False)]
        grid = make_grid(torch.stack(tiles), nrow=3, padding=2, pad_value=255)
        for logger in loggers:
            logger.experiment.add_image(self.tag, grid, global_step=trainer.global_step)


class ValidateAtBudgetEnd(L.Callback):
    """Validate when ``trainer.max_steps`` ends a run mid-epoch.

    Lightning validates at epoch ends; a data set whose epoch is longer than the step budget
    (6,400 images at batch 8 against the default 800 steps) would otherwise end without any
    validation, hence without a best checkpoint. Asking the trainer to stop at the last step
    makes Lightning run the validation loop first.

    Example:
        >>> callback = ValidateAtBudgetEnd()  # then Trainer(max_steps=800, callbacks=[callback])
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object,
                           batch: object, batch_idx: int) -> None:
        last_step = trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step
        if last_step and batch_idx + 1 < trainer.num_training_batches:
            trainer.should_stop = True
