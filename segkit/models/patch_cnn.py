"""The sliding-window patch CNN (Ciresan et al. 2012) as a LightningModule.

Training classifies windows (their centre pixel's class); validation, test and prediction run
the exact dense form on whole images, so ``val/mIoU`` means what it means for FCN and U-Net.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from segkit.data.windows import Balance, WindowSampler
from segkit.models.base import (
    NOT_HPARAMS,
    OptimizerFactory,
    SchedulerFactory,
    SegmentationModule,
)
from segkit.nets.densify import Strategy, densify
from segkit.nets.patch_cnn import PatchCNN


class PatchCNNModule(SegmentationModule):
    """A window classifier trained on (window, centre label) pairs, evaluated densely.

    Training batches are either ``(windows (N, C, w, w), labels (N,))`` from
    :class:`segkit.data.PatchDataModule`, or whole ``(images, masks)`` from any data module,
    from which ``windows_per_image`` windows per image are drawn here (``balance``,
    ``dihedral``: see :class:`segkit.data.windows.WindowSampler`).

    Example:
        >>> module = PatchCNNModule(num_classes=3, in_channels=1, preset="n1")
        >>> module.window, module(torch.randn(2, 1, 40, 30)).shape
        (65, torch.Size([2, 3, 40, 30]))
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        preset: str = "n4",
        maps: int = 48,
        hidden: int = 200,
        activation: str = "tanh",
        dense_strategy: Strategy = "fragments",
        windows_per_image: int = 32,
        balance: Balance = "classes",
        dihedral: bool = True,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        loss_reduction: str = "mean",
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        weight_map: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes, class_names, ignore_index, loss_reduction, optimizer, scheduler, scheduler_interval,
                         weight_map)
        self.save_hyperparameters(ignore=list(NOT_HPARAMS), logger=False)
        self.net = PatchCNN(num_classes, in_channels, preset, maps, hidden, activation)
        self.window = self.net.window
        # Reads self.net's parameters (registers none of its own).
        self.dense = densify(self.net, strategy=dense_strategy)
        self.sampler = WindowSampler(windows_per_image, balance, dihedral, ignore_index)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel scores of whole images, by the dense form."""
        return self.dense(images)

    def training_logits(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch
        if targets.ndim == 3:  # whole images: draw the windows here
            inputs, targets = self.sampler(inputs, targets, self.window)
        # One "pixel" per window: (N, C, 1, 1) logits against (N, 1, 1) labels.
        return self.net(inputs)[:, :, None, None], targets[:, None, None]
