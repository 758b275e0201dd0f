"""Lightning callbacks that show what a segmentation model does, in TensorBoard."""

from __future__ import annotations

import math
from typing import Any

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


def upscale_tile(tile: torch.Tensor, min_size: int) -> torch.Tensor:
    """``tile`` (C, h, w) enlarged by the smallest whole factor that makes its longer side at
    least ``min_size`` px, by nearest neighbour (each pixel becomes a constant block); a tile
    that is already that large is returned unchanged.

    Example:
        >>> upscale_tile(torch.zeros(3, 64, 32, dtype=torch.uint8), 256).shape
        torch.Size([3, 256, 128])
        >>> upscale_tile(torch.zeros(3, 300, 300, dtype=torch.uint8), 256).shape
        torch.Size([3, 300, 300])
    """
    factor = max(1, math.ceil(min_size / max(tile.shape[-2:])))
    if factor == 1:
        return tile
    return tile.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def shrink_tile(tile: torch.Tensor, max_size: int) -> torch.Tensor:
    """``tile`` (C, h, w) reduced by nearest neighbour, keeping its aspect, so that its longer
    side is at most ``max_size`` px (each side at least 1 px); a smaller tile is returned unchanged.

    Example:
        >>> shrink_tile(torch.zeros(3, 1, 100_000, dtype=torch.uint8), 512).shape
        torch.Size([3, 1, 512])
        >>> shrink_tile(torch.zeros(3, 300, 1200, dtype=torch.uint8), 512).shape
        torch.Size([3, 128, 512])
    """
    height, width = tile.shape[-2:]
    scale = max_size / max(height, width)
    if scale >= 1:
        return tile
    rows = (torch.arange(max(1, round(height * scale))) / scale).long().clamp_max(height - 1)
    cols = (torch.arange(max(1, round(width * scale))) / scale).long().clamp_max(width - 1)
    return tile[..., rows, :][..., cols]


def pad_tile(tile: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``tile`` (3, h, w) uint8 centred on a white ``height`` x ``width`` canvas (no scaling).

    Example:
        >>> pad_tile(torch.zeros(3, 2, 2, dtype=torch.uint8), 4, 3)[0].tolist()
        [[255, 255, 255], [0, 0, 255], [0, 0, 255], [255, 255, 255]]
    """
    h, w = tile.shape[-2:]
    canvas = torch.full((3, height, width), 255, dtype=torch.uint8)
    top, left = (height - h) // 2, (width - w) // 2
    canvas[:, top:top + h, left:left + w] = tile
    return canvas


def overlay_mask(image: torch.Tensor, mask: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """The class colours of ``mask`` (H, W) blended over ``image`` (3, H, W) uint8.

    Example:
        >>> overlay_mask(torch.full((3, 1, 1), 200, dtype=torch.uint8), torch.tensor([[1]])).flatten().tolist()
        [164, 100, 100]
    """
    blended = (1 - alpha) * image.float() + alpha * colorize(mask).float()
    return blended.round().clamp(0, 255).to(torch.uint8)


class SegmentationImageLogger(L.Callback):
    """Every validation epoch, log a grid of the first ``num_images`` validation images to
    TensorBoard, one row each: ``input | ground truth | prediction``, and with ``overlay`` a
    fourth tile, the prediction's colours blended over the input (alpha 0.5).

    Shows the first images of the validation loader, the same ones every epoch, so the grids show
    one scene sharpening over training, with the predictions that validation made of them (whole
    images, test-time augmentation included when set): no extra forward pass. Tiles smaller than
    ``min_tile_size`` px (longer side) are enlarged by a whole factor with nearest neighbour, so
    pixels stay sharp blocks (a 64-px image becomes 256 px), tiles larger than ``max_tile_size`` reduced to it (aspect kept: a
    1 x 100,000 strip would otherwise widen every cell of the grid to 100,000 px), others shown
    as they are; tiles of different sizes are centred on white cells of the largest one. Rank 0
    only; a no-op without a TensorBoardLogger.

    Example:
        >>> callback = SegmentationImageLogger(num_images=4, overlay=True)  # then Trainer(callbacks=[callback])
    """

    def __init__(self, num_images: int = 6, tag: str = "val/predictions", min_tile_size: int = 256,
                 overlay: bool = False, max_tile_size: int = 512) -> None:
        self.num_images = num_images
        self.tag = tag
        self.min_tile_size = min_tile_size
        self.max_tile_size = max(max_tile_size, min_tile_size)
        self.overlay = overlay
        self._shown: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._shown: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        # The validation's own predictions of its first images (the same ones every time, in
        # the loader's fixed order): no second forward pass.
        shown = self._shown
        if (shown is None or len(shown) >= self.num_images or dataloader_idx != 0 or trainer.sanity_checking
                or not isinstance(outputs, dict) or "preds" not in outputs):
            return
        images, masks, preds = batch[0], outputs["masks"], outputs["preds"]
        for i in range(min(len(images), self.num_images - len(shown))):
            shown.append((images[i].detach().cpu(), masks[i].cpu(), preds[i].cpu()))

    def row(self, image: torch.Tensor, mask: torch.Tensor, prediction: torch.Tensor) -> list[torch.Tensor]:
        """The tiles of one image (3, H, W) uint8, enlarged to ``min_tile_size`` or reduced to
        ``max_tile_size`` (longer side), not padded."""
        shown = _display(image)
        tiles = [shown, colorize(mask), colorize(prediction)]
        if self.overlay:
            tiles.append(overlay_mask(shown, prediction))
        return [shrink_tile(upscale_tile(tile, self.min_tile_size), self.max_tile_size) for tile in tiles]

    def grid(self, rows: list[list[torch.Tensor]]) -> torch.Tensor:
        """``rows`` of tiles as one image (3, H, W) uint8, each tile centred in a cell of the largest tile's size."""
        tiles = [tile for row in rows for tile in row]
        height, width = max(t.shape[-2] for t in tiles), max(t.shape[-1] for t in tiles)
        padded = torch.stack([pad_tile(tile, height, width) for tile in tiles])
        return make_grid(padded, nrow=len(rows[0]), padding=2, pad_value=255)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if trainer.sanity_checking or not trainer.is_global_zero or not loggers:
            return
        rows = [self.row(image, mask, prediction) for image, mask, prediction in self._shown or []]
        if not rows:
            return
        grid = self.grid(rows)
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
