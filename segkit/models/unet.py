"""U-Net as a LightningModule."""

from __future__ import annotations

from typing import Any, ClassVar

from segkit.models.base import SegmentationModule
from segkit.nets.traceable import Exportable, PadToMultiple
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

    contract_size: ClassVar[dict[str, Any]] = {"base_width": 4, "depth": 2}

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 4,
        base_width: int = 64,
        batch_norm: bool = True,
        upsampling: Upsampling = "transpose",
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        self.net = UNet(num_classes, in_channels, depth, base_width, batch_norm, upsampling, dropout)

    def exportable(self) -> Exportable:
        multiple = 2**self.net.depth
        # Reflection needs a pad smaller than the side; the module falls back to zeros below it.
        return Exportable(PadToMultiple(self.net, multiple).eval(), multiple, "U-Net padded to a multiple of 2**depth")
