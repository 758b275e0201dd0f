"""The sliding-window patch CNN (Ciresan et al. 2012) as a LightningModule.

Training classifies windows (their centre pixel's class); validation, test and prediction run
the exact dense form on whole images, so ``val/mIoU`` means what it means for FCN and U-Net.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from segkit.data.windows import Balance, WindowSampler
from segkit.models.base import SegmentationModule
from segkit.nets.densify import Strategy, densify
from segkit.nets.patch_cnn import PatchCNN
from segkit.nets.traceable import DenseWindows, Exportable


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

    contract_size: ClassVar[dict[str, Any]] = {"preset": "n1", "maps": 4, "hidden": 8}
    training_step_host_read: ClassVar[str | None] = (
        "the class-balanced windows are drawn from each whole-image mask (data=patches draws them in the loader)")

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
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        self.net = PatchCNN(num_classes, in_channels, preset, maps, hidden, activation)
        self.window = self.net.window
        # Reads self.net's parameters (registers none of its own).
        self.dense = densify(self.net, strategy=dense_strategy)
        self.sampler = WindowSampler(windows_per_image, balance, dihedral, self.ignore_index)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel scores of whole images, by the dense form."""
        return self.dense(images)

    def exportable(self) -> Exportable:
        return Exportable(DenseWindows(self.net).eval(), self.window // 2 + 1, "dense (dilated) window classifier")

    def training_logits(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch
        if targets.ndim == 3:  # whole images: draw the windows here
            inputs, targets = self.sampler(inputs, targets, self.window)
        # One "pixel" per window: (N, C, 1, 1) logits against (N, 1, 1) labels.
        return self.net(inputs)[:, :, None, None], targets[:, None, None]
