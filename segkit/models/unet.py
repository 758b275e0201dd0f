"""U-Net as a LightningModule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from segkit.models.base import (
    NOT_HPARAMS,
    OptimizerFactory,
    SchedulerFactory,
    SegmentationModule,
)
from segkit.nets.unet import UNet, Upsampling


class UNetModule(SegmentationModule):
    """Practical (same-padded) U-Net trained with :class:`SegmentationModule`'s recipe.

    Net arguments are those of :class:`segkit.nets.UNet`; the rest are the base's.

    Example:
        >>> import torch
        >>> module = UNetModule(num_classes=3, depth=2, base_width=8)
        >>> module(torch.randn(1, 3, 97, 131)).shape
        torch.Size([1, 3, 97, 131])
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 4,
        base_width: int = 64,
        batch_norm: bool = True,
        upsampling: Upsampling = "transpose",
        dropout: float = 0.0,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        loss_reduction: str = "mean",
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        weight_map: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            num_classes, class_names, ignore_index, loss_reduction, optimizer, scheduler,
            scheduler_interval, weight_map,
        )
        self.save_hyperparameters(ignore=list(NOT_HPARAMS), logger=False)
        self.net = UNet(num_classes, in_channels, depth, base_width, batch_norm, upsampling, dropout)
